"""`scripts/bench --linux`: Debian Linux natively and under Portcullis, side by side.

One boot per run (scripts/linux/init-bench.sh is its /init): QEMU start -> `/init`, O_DIRECT reads of
the virtio-blk and the NVMe disk (1 MiB and 4 KiB, strict then lazy), then kexec -p and a crash:
crash -> the capture kernel's `/init`. Both sides boot the same kernel, initramfs, disks and command
line; QEMU is started by this module on both sides (Portcullis' command line is what `scripts/run
--dry-run` prints, so the build and the device-tree dump are not in the boot time), and natively it
is what `scripts/linux/kdump --native` runs (kdumprun.native_command: Linux at EL1 drives QEMU's SMMU
itself).

Times:
- QEMU start -> /init and crash -> capture /init: on the host, from the console lines' arrival (the
  init's first command prints the marker). The guest's own clock cannot give these: Linux's clock
  starts with Linux (not with QEMU, and not before Portcullis), and the capture kernel's clock starts
  again. The console is a PL011 written synchronously by QEMU's vCPU thread: its latency is far below
  the figures' run-to-run noise.
- I/O: in the guest, the kernel's monotonic clock around the dd alone (no console latency, no shell
  start-up in the window).

Counts (one extra boot per side and kernel, not timed, with `bench.count=1`: init-bench.sh brackets
every read phase with scripts/linux/count-mark.sh, a CPU1 offline/online after a `COUNT-MARK:` line):
- under Portcullis, Portcullis' own counters (hyp/src/diag/counters.rs), which it logs at each PSCI
  CPU_OFF: traps per I/O by cause (`trap.*`) and its accesses to the physical SMMU's registers per
  I/O (`phys`), the phase's bracket minus the `null` bracket (the offline/online itself; parsed by
  scripts/lib/counters.py, as scripts/linux/counters-per-io does for the smoke test);
- natively, QEMU's logs (the logging slows QEMU down): exceptions taken from EL1 to EL2 (`-d int`;
  none without a hypervisor) between the phase's start and end lines, by cause, and QEMU's
  smmuv3_read_mmio / smmuv3_write_mmio trace events in the same window (Linux's own accesses).

Load: every run records the machine's busy CPU time (/proc/stat) and its own QEMU's (rusage) and
flags runs where other processes used more than LOAD_FLAG of the machine.
"""
import os
import re
import resource
import select
import shlex
import statistics
import subprocess
import time

import counters
import kdumprun

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LINUX = os.path.join(ROOT, "scripts", "linux")
INIT = os.path.join(LINUX, "init-bench.sh")
LOGS = os.path.join(ROOT, "build", "linux-logs")
MARK = "LINUX-BENCH:"
DISK_MB = 256                 # sparse
# Reads per disk, mode and size: windows of a second or more, so that the shared machine's
# scheduling noise averages out within each.
N1M, N4K = 128, 2048
COUNT_N1M, COUNT_N4K = N1M, N4K  # in the counting runs
LOAD_FLAG = 0.10               # other processes' share of the machine that flags a run
PHASES = [(mode, disk, bs) for mode in ("strict", "lazy") for disk in ("virtio-blk", "nvme")
          for bs in (1048576, 4096)]

INIT_MARK = re.compile(r"LINUX-BENCH: init(?![a-z])")
CRASH = re.compile(r"sysrq: Trigger a crash")
IO_START = re.compile(r"LINUX-BENCH: io (\S+) (\S+) (\d+) start")
IO_END = re.compile(r"LINUX-BENCH: io (\S+) (\S+) (\d+) end ns=(\d+) bytes=(\d+) n=(\d+)")
EXC = re.compile(r"^Taking exception (\d+) \[([^\]]+)\]")
EXC_FROM = re.compile(r"^\.\.\.from EL(\d) to EL(\d)")
SMMU_MMIO = re.compile(r"smmuv3_(read|write)_mmio")
# QEMU's log lines in a counting boot: -d int (exception entry and return) and trace events (log
# backend, with or without a pid@time: prefix).
LOG_LINE = re.compile(rb"(?:Taking exception |\.\.\.[a-z]|Exception return from |"
                      rb"(?:\d+@[\d.]+:)?smmuv3_\w+ )[^\n]*\n")


def initramfs(kernel_tag):
    """(first kernel's initramfs, capture kernel's), both with init-bench.sh."""
    def mk(*extra):
        cmd = [os.path.join(LINUX, "mkinitramfs"), "--kernel", kernel_tag, "--init", INIT, *extra]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    return mk("--modules", "virtio_pci virtio_blk nvme", "--tools", "kexec"), mk("--modules", "", "--tools", "")


def media(tmp, kernel_tag, kernel, capture):
    """The two disks to read (sparse) and the media disk (capture kernel and its initramfs)."""
    disks = tuple(os.path.join(tmp, f"{kernel_tag}-{d}.img") for d in ("vd", "nvme"))
    for d in disks:
        with open(d, "wb") as f:
            f.truncate(DISK_MB << 20)
    tar = os.path.join(tmp, f"{kernel_tag}-media.tar")
    kdumprun.make_media(tar, kernel, capture)
    return disks, tar


def append(count):
    n1m, n4k = (COUNT_N1M, COUNT_N4K) if count else (N1M, N4K)
    extra = f"iommu.strict=1 bench.n1m={n1m} bench.n4k={n4k}" + (" bench.nocrash=1 bench.count=1" if count else "")
    return extra


# `scripts/bench --cpu MODEL`: a -cpu for both sides' QEMU, after the commands' own (QEMU takes the last).
# `max,pauth=off` takes out a TCG artefact that taxes two-stage translation (see
# docs/tcg-two-stage-refills.md): QEMU flushes a vCPU's whole TLB at every SCTLR_EL1 change, which
# Linux makes at context switches when pointer authentication is on.
CPU = None


def qemu_command(side, kernel, initrd, disks, tar, count):
    """(QEMU argv, files to delete afterwards) for one boot. side: "native" or "portcullis"."""
    common = dict(append=append(count), bps=0)
    cpu = ["-cpu", CPU] if CPU else []
    if side == "native":
        # Under Portcullis its own counters count (bench.count=1); natively QEMU's logs.
        trace = ["-d", "int", "-trace", "smmuv3_read_mmio", "-trace", "smmuv3_write_mmio"] if count else []
        cmd = kdumprun.native_command(kernel, initrd, disks, tar, **common)
        return cmd[cmd.index("qemu-system-aarch64"):] + trace + cpu, []
    # Counting boots bracket each phase with a CPU offline/online: Portcullis' counters line at
    # each CPU_OFF is opt-in (counters=cpu-off; off by default, it would stretch a fence window).
    run = kdumprun.command(kernel, initrd, disks, tar, **common, hyp_args="counters=cpu-off" if count else "")
    sep = run.index("--")
    out = subprocess.run(run[:sep] + ["--dry-run"] + run[sep:], check=True, capture_output=True, text=True)
    cmd = shlex.split(out.stdout.strip().splitlines()[-1])
    dtbs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-dtb"]
    return cmd + cpu, dtbs


def cpu_busy():
    """Busy jiffies of the whole machine (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Boot:
    """One boot: console lines with host timestamps, the figures in them, and in a counting boot the
    traps and physical SMMU accesses inside each I/O phase (from QEMU's logs where the command has
    them) and the COUNT-MARK and Portcullis `counters:` lines."""

    def __init__(self, side, kernel_tag, cmd, log_path, timeout, counting=False):
        self.side, self.kernel_tag, self.cmd, self.log_path, self.timeout = side, kernel_tag, cmd, log_path, timeout
        self.t = {}           # marker -> seconds since QEMU start
        self.io = {}          # (mode, disk, bs) -> (ns, bytes, n)
        self.traps = {}       # phase -> {cause: count}
        self.smmu = {}        # phase -> physical SMMU register accesses
        self.domains = []
        self.fails = []
        self.rc = None
        self.other_load = None
        self._phase = None
        self._cause = "?"     # the name in QEMU's last `Taking exception` line
        self._text = b""      # console text after the last newline
        self.counting = counting
        self.count_lines = []  # COUNT-MARK and Portcullis' `counters: at=` lines, in order

    def go(self):
        os.makedirs(LOGS, exist_ok=True)
        hz = os.sysconf("SC_CLK_TCK")
        busy0, mine0, wall0 = cpu_busy(), children_cpu(), time.monotonic()
        with open(self.log_path, "w") as log:
            log.write("# " + shlex.join(self.cmd) + "\n")
            start = time.monotonic()
            proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, bufsize=0)
            buf = b""
            deadline = start + self.timeout
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], 1.0)
                if time.monotonic() > deadline and proc.poll() is None:
                    proc.kill()
                    self.fails.append(f"timed out after {self.timeout:g} s")
                if not ready:
                    continue
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    break
                now = time.monotonic() - start
                buf += chunk
                # Only up to the last newline: every QEMU log line ends with one.
                cut = buf.rfind(b"\n") + 1
                self._split(buf[:cut], now, log)
                buf = buf[cut:]
            self._split(buf + b"\n", time.monotonic() - start, log)
            self.rc = proc.wait()
            log.write(f"# exit {self.rc} after {time.monotonic() - start:.1f} s\n")
        wall = time.monotonic() - wall0
        other = (cpu_busy() - busy0) / hz - (children_cpu() - mine0)
        self.other_load = max(other, 0.0) / (wall * os.cpu_count())
        if "init" not in self.t:
            self.fails.append("no /init marker")
        # init-bench.sh prints each disk's domain type before the strict and the lazy reads.
        if len(self.domains) >= 2 and any(t != "DMA-FQ" for t in self.domains[1].split()):
            self.fails.append(f"the lazy reads ran on domains {self.domains[1]!r}, not all DMA-FQ")
        if not self.counting and self.crash_s() is None:
            self.fails.append("no crash -> capture /init")
        return self

    def _split(self, data, now, log):
        """Console text and, in a counting boot, QEMU's log lines. QEMU's vCPU threads write the
        console a character at a time and each log line at once, so log lines land in the middle of
        console lines: they are cut out in stream order (which is the order of events) and counted,
        the console text around them joined again."""
        pos = 0
        if self.counting:
            for m in LOG_LINE.finditer(data):
                self._console(data[pos:m.start()], now, log)
                self._count_line(m.group().decode(errors="replace").rstrip())
                pos = m.end()
        self._console(data[pos:], now, log)

    def _console(self, data, now, log):
        *lines, self._text = (self._text + data).split(b"\n")
        for raw in lines:
            self._line(raw.decode(errors="replace").rstrip("\r"), now, log)

    def _line(self, line, now, log):
        log.write(f"[{now:8.2f}] {line}\n")
        if self.counting and ("COUNT-MARK:" in line or "counters: at=" in line):
            self.count_lines.append(line)
        if "init" in self.t and CRASH.search(line):
            # The kernel prints this at the crash itself; the init's own `crashing` line may still be
            # in the tty buffer then, and lost.
            self.t.setdefault("crashing", now)
        if MARK in line:
            log.flush()
        else:
            return
        text = line[line.index(MARK):]
        if INIT_MARK.match(text):
            # The first kernel's /init, or after the crash the capture kernel's.
            self.t.setdefault("capture" if "crashing" in self.t else "init", now)
        elif text.startswith(f"{MARK} crashing"):
            self.t.setdefault("crashing", now)
        elif text.startswith(f"{MARK} domains:"):
            self.domains.append(text.split(":", 2)[2].strip())
        elif text.startswith(f"{MARK} FAIL") or "failed" in text:
            self.fails.append(text[len(MARK):].strip())
        m = IO_START.search(text)
        if m:
            self._phase = (m.group(1), m.group(2), int(m.group(3)))
        m = IO_END.search(text)
        if m:
            key = (m.group(1), m.group(2), int(m.group(3)))
            self.io[key] = (int(m.group(4)), int(m.group(5)), int(m.group(6)))
            self._phase = None

    def _count_line(self, line):
        """Counts one of QEMU's exception-log and SMMU-trace lines inside an I/O phase. Each log line
        is written whole, but the two vCPU threads' lines interleave: every `...from EL1 to EL2`
        line is one trap (exact), its cause the name in the last `Taking exception` line (the
        other vCPU's, now and then)."""
        if not self._phase:
            return
        if SMMU_MMIO.search(line):
            self.smmu[self._phase] = self.smmu.get(self._phase, 0) + 1
            return
        m = EXC.match(line)
        if m:
            self._cause = m.group(2)
            return
        m = EXC_FROM.match(line)
        if m and (m.group(1), m.group(2)) == ("1", "2"):
            per = self.traps.setdefault(self._phase, {})
            per[self._cause] = per.get(self._cause, 0) + 1

    # Figures of a finished boot.
    def boot_s(self):
        return self.t.get("init")

    def crash_s(self):
        if "crashing" in self.t and "capture" in self.t:
            return self.t["capture"] - self.t["crashing"]
        return None

    def mbps(self, phase):
        if phase not in self.io:
            return None
        ns, nbytes, _ = self.io[phase]
        return nbytes / (ns / 1e9) / (1 << 20) if ns > 0 else None


def portcullis_trap_counters(boot):
    """Portcullis' own counters in a counting boot, per I/O phase: ({phase: {trap cause: count}},
    {phase: physical SMMU register accesses}), like Boot.traps and Boot.smmu, each phase's
    COUNT-MARK bracket minus the null bracket; None without them (no complete null bracket)."""
    per_bracket = counters.brackets(counters.marks(boot.count_lines))
    if per_bracket is None:
        return None
    traps, smmu = {}, {}
    for name, delta in per_bracket.items():
        # init-bench.sh names the brackets MODE-DISK-BS (the disk's name has a dash).
        mode, _, rest = name.partition("-")
        disk, _, bs = rest.rpartition("-")
        if not bs.isdigit():
            continue
        phase = (mode, disk, int(bs))
        traps[phase] = {k[len("trap."):]: v for k, v in delta.items() if k.startswith("trap.") and v}
        smmu[phase] = delta.get("phys", 0)
    return traps, smmu


def summary(b):
    """One line for a boot: its times, throughputs (s = strict, l = lazy; vd = virtio-blk, nv = NVMe)
    and the machine's other load."""
    io = " ".join(f"{mode[0]}-{'vd' if disk == 'virtio-blk' else 'nv'}-{'1M' if bs == 1 << 20 else '4K'} "
                  f"{fmt(b.mbps((mode, disk, bs)), 1)}" for mode, disk, bs in PHASES)
    flag = " LOADED" if b.other_load > LOAD_FLAG else ""
    return (f"init {fmt(b.boot_s())} s, crash->capture {fmt(b.crash_s())} s, MiB/s: {io}; "
            f"other load {b.other_load:.0%}{flag}")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def bs_name(bs):
    return "1 MiB" if bs == 1 << 20 else f"{bs // 1024} KiB"


def run(kernels, runs, timeout, tmp, say):
    """The whole comparison; `say` prints a line. Returns the figure table (list of rows)."""
    env = kdumprun.assets()
    rows = []
    for k in kernels:
        kernel, kver = env.get(f"KERNEL_{k}"), env.get(f"KVER_{k}")
        if not kernel:
            raise SystemExit(f"bench: unknown kernel {k!r} (61, 612; scripts/linux/fetch)")
        first, capture = initramfs(k)
        disks, tar = media(tmp, k, kernel, capture)
        say(f"== linux {kver}: {runs} interleaved pairs (native, Portcullis), then one counting boot per side")
        pairs = []
        for i in range(runs):
            order = ("native", "portcullis") if i % 2 == 0 else ("portcullis", "native")
            pair = {}
            for side in order:
                cmd, rm = qemu_command(side, kernel, first, disks, tar, count=False)
                log = os.path.join(LOGS, f"bench-{kver}-{side}-{i}.log")
                try:
                    b = Boot(side, k, cmd, log, timeout).go()
                finally:
                    for f in rm:
                        if os.path.exists(f):
                            os.remove(f)
                pair[side] = b
                say(f"  run {i + 1} {side:10} {summary(b)}" +
                    (f"; FAILED: {'; '.join(b.fails)} (log {log})" if b.fails else ""))
            pairs.append(pair)
        counts = {}
        for side in ("native", "portcullis"):
            cmd, rm = qemu_command(side, kernel, first, disks, tar, count=True)
            log = os.path.join(LOGS, f"bench-{kver}-{side}-count.log")
            try:
                counts[side] = Boot(side, k, cmd, log, timeout * 3, counting=True).go()
            finally:
                for f in rm:
                    if os.path.exists(f):
                        os.remove(f)
            if side == "portcullis" and portcullis_trap_counters(counts[side]) is None:
                counts[side].fails.append("no COUNT-MARK brackets with Portcullis' counters lines")
            if counts[side].fails:
                say(f"  counting boot {side} FAILED: {'; '.join(counts[side].fails)} (log {log})")
        rows += table(kver, pairs, counts, say)
        loaded = sum(1 for p in pairs for b in p.values() if b.other_load > LOAD_FLAG)
        say(f"  {loaded} of {2 * len(pairs)} timed runs overlapped other load (> {LOAD_FLAG:.0%} of the machine "
            f"used by other processes; median {median([b.other_load for p in pairs for b in p.values()]):.0%})")
    return rows


def table(kver, pairs, counts, say):
    """Medians per side, the median of the paired ratios, and the counts, as printed rows."""
    rows = []

    def row(name, get, ratio_of):
        nat = [get(p["native"]) for p in pairs]
        pc = [get(p["portcullis"]) for p in pairs]
        ratios = [ratio_of(a, b) for a, b in zip(pc, nat) if a and b]
        rows.append((kver, name, median(nat), median(pc), median(ratios),
                     (min(ratios), max(ratios)) if ratios else None))

    row("QEMU start -> /init (s)", Boot.boot_s, lambda p, n: p / n)
    for phase in PHASES:
        mode, disk, bs = phase
        row(f"{disk} {mode} {bs_name(bs)} (MiB/s)", lambda b, ph=phase: b.mbps(ph), lambda p, n: p / n)
    row("crash -> capture /init (s)", Boot.crash_s, lambda p, n: p / n)
    say(f"  {'figure':34} {'native':>9} {'Portcullis':>10} {'P/N paired':>10}  (min-max)")
    for _, name, nat, pc, ratio, rng in rows:
        spread = f"({rng[0]:.2f}-{rng[1]:.2f})" if rng else ""
        say(f"  {name:34} {fmt(nat):>9} {fmt(pc):>10} {fmt(ratio):>10}  {spread}")
    say("  per I/O (counting boots; natively QEMU -d int, EL1->EL2 exceptions by cause, and smmuv3_*_mmio trace "
        "events; under Portcullis its own counters, trap.* and phys, each phase's bracket minus the null one):")
    pc_counts = counts.get("portcullis")
    hooked = portcullis_trap_counters(pc_counts) if pc_counts else None
    for phase in PHASES:
        mode, disk, bs = phase
        parts = []
        for side in ("native", "portcullis"):
            b = counts.get(side)
            n = b.io.get(phase, (0, 0, 0))[2] if b else 0
            if not b or not n:
                parts.append(f"{side} -")
                continue
            if side == "portcullis" and hooked:
                traps, smmu = hooked[0].get(phase, {}), hooked[1].get(phase, 0)
            else:
                traps, smmu = b.traps.get(phase, {}), b.smmu.get(phase, 0)
            total = sum(traps.values())
            # Portcullis' counts are differences of brackets: a cause the phase did not use shows as
            # the bracket's own jitter (a trap or so over the phase), left out.
            causes = ", ".join(f"{c} {v / n:.2f}" for c, v in sorted(traps.items(), key=lambda x: -x[1])
                               if abs(v / n) >= 0.005)
            parts.append(f"{side}: traps {total / n:.2f}{' (' + causes + ')' if causes else ''}, "
                         f"SMMU regs {smmu / n:.2f}")
            rows.append((kver, f"{disk} {mode} {bs_name(bs)} {side} traps/IO", total / n, None, None, None))
            rows.append((kver, f"{disk} {mode} {bs_name(bs)} {side} SMMU regs/IO", smmu / n,
                         None, None, None))
        say(f"    {disk} {mode} {bs_name(bs)}: " + "; ".join(parts))
    return rows
