"""The Linux kdump end-to-end run, shared by scripts/linux/kdump (the test) and scripts/linux/demo.

One run: build the two initramfs images (capture kernel: /init + busybox + makedumpfile; first kernel:
the same /init plus the kernel to load and the capture image), make two small disks whose every
sector is stamped "PCDISK <disk> lba=N" (so device data is recognisable in a dump), boot the first
kernel under Portcullis with scripts/run with both disks throttled by QEMU, and follow the console:
first kernel, crash, capture kernel, verdict. Everything the init prints starts with `LINUX-KDUMP:`.
"""
import os
import re
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LINUX = os.path.join(ROOT, "scripts", "linux")
INIT = os.path.join(LINUX, "init-kdump.sh")
LOGS = os.path.join(ROOT, "build", "linux-logs")
sys.path.insert(0, HERE)
import debarchive  # noqa: E402
import nicflood  # noqa: E402

MARKER = "LINUX-KDUMP:"
DISK_MB = 32
# QEMU throttling per disk: the readers' requests queue in the device for about a second each, so
# reads are in flight whenever the crash comes, and the queue still drains for a while after it.
BPS = 256 << 10
FIRST_APPEND = "console=ttyAMA0 earlycon panic=-1"
CRASHKERNEL = "256M"

# Console milestones, in order: (key, pattern).
MILESTONES = [
    ("portcullis", re.compile(r"Portcullis \S+ at EL2")),
    ("linux", re.compile(r"Booting Linux on physical CPU")),
    ("userspace", re.compile(r"LINUX-KDUMP: first kernel .* up at")),
    ("loaded", re.compile(r"LINUX-KDUMP: kexec -p loaded")),
    ("crash", re.compile(r"LINUX-KDUMP: crashing at")),
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("capture", re.compile(r"LINUX-KDUMP: capture kernel .* up at")),
    ("verdict", re.compile(r"LINUX-KDUMP: (PASS|FAIL)")),
]


# Known ways a run goes wrong, recognised in the console log: (patterns that must all match, hint).
HINTS = [
    ((r"host store at Ipa\(0x[0-9a-f]+\).*Permission", r"its_init"),
     "the capture kernel reuses the dead kernel's GICv3 LPI tables (GICR_PROPBASER/GICR_PENDBASER: "
     "EnableLPIs cannot be cleared, Linux logs 'Using preallocated redistributor tables') and resets the "
     "property table; crash mode maps the dead kernel's memory read-only, so that store is refused. "
     "Portcullis must keep those ranges writable in crash mode (read every redistributor's PROPBASER and "
     "PENDBASER at the kexec trap)"),
    ((r"fault report: could not read it \(devmem .*SIGBUS",),
     "the fault report region is not readable by the capture kernel: Portcullis did not switch to crash "
     "mode (no fence yet?) or crash mode does not map the report read-only"),
    ((r"Some ROM regions are overlapping",),
     "scripts/run placed the initrd over the device tree QEMU loads at RAM + 128 MiB (kernel + initrd too "
     "big for the space below it)"),
]


def hints(lines):
    text = "\n".join(line for _, line in lines)
    out = []
    for pats, hint in HINTS:
        if hint and all(re.search(p, text, re.M) for p in pats):
            out.append(hint)
    return out


def diagnosis(run, limit=16):
    """The interesting console lines of a failed run after the crash (from the kexec trap or Linux's
    `Starting crashdump kernel` on): Portcullis' warnings and errors, the capture kernel's oops or panic
    and the first frames of its call trace, without the register dump."""
    out, frames, started = [], 0, False
    for _, line in run.lines:
        if not started:
            started = bool(re.search(r"Starting crashdump kernel|kexec trap", line))
            if not started:
                continue
        if re.search(r"^\[\s*[\d.]+\]\s+[\w.]+\+0x", line):
            frames += 1
            if frames <= 6:
                out.append(line)
        elif re.search(r"portcullis\[\d\] (WARN|ERROR)|Internal error|Unable to handle|Kernel panic|"
                       r"Call trace|LINUX-KDUMP: check failed", line):
            out.append(line)
    return out[:limit]


def run_script():
    """scripts/run of this checkout, or another one (PORTCULLIS_RUN), e.g. a clean export of a commit
    while this work tree does not build."""
    return os.environ.get("PORTCULLIS_RUN") or os.path.join(ROOT, "scripts", "run")


def make_disk(path, name, size_mb=DISK_MB):
    """A raw image whose every 512-byte sector starts with `PCDISK <name> lba=<N>\\n`: device data
    is then recognisable wherever it lands in memory."""
    buf = bytearray(size_mb << 20)
    for lba in range(len(buf) // 512):
        tag = b"PCDISK %s lba=%010d\n" % (name.encode(), lba)
        buf[lba * 512:lba * 512 + len(tag)] = tag
    with open(path, "wb") as f:
        f.write(buf)


# The fault-report parser for kdump users; init-kdump.sh sources it.
PCREPORT = os.path.join(LINUX, "portcullis-report")


def mkinitramfs(kernel_tag, *extra):
    cmd = [os.path.join(LINUX, "mkinitramfs"), "--kernel", kernel_tag, "--init", INIT,
           "--add", PCREPORT + ":/usr/sbin/portcullis-report", *extra]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


FIRST_MODULES = "virtio_pci virtio_blk nvme e1000e igb"
# NIC models for the receive flood (QEMU device = Linux driver).
NICS = ("e1000e", "igb")


PCSCAN = os.path.join(ROOT, "tools", "pcscan")


def build_pcscan():
    """tools/pcscan (a static arm64 Linux program: finds the NIC flood's frames in /proc/vmcore at
    the speed of reading it; busybox strings | grep takes 20 times as long under TCG)."""
    target = os.path.join(ROOT, "target", "pcscan")
    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "aarch64-unknown-none"],
                   cwd=PCSCAN, check=True, env=dict(os.environ, CARGO_TARGET_DIR=target))
    return os.path.join(target, "aarch64-unknown-none", "release", "pcscan")


def images(kernel_tag):
    """(first kernel's initramfs, capture kernel's initramfs) for kernel 61 or 612."""
    capture = mkinitramfs(kernel_tag, "--modules", "", "--tools", "makedumpfile,vmcore-dmesg",
                          "--add", build_pcscan() + ":/usr/bin/pcscan")
    first = mkinitramfs(kernel_tag, "--modules", FIRST_MODULES, "--tools", "kexec")
    return first, capture


def make_media(path, kernel, capture):
    """The media disk: a tar with the kernel to load as the capture kernel and its initramfs.

    They ride on a disk rather than in the first initramfs because scripts/run places the initrd
    below the device tree QEMU puts at RAM + 128 MiB: Portcullis, a 44 MiB 6.12 Image and an initrd
    holding that Image again do not fit there. The disk is one more virtio-blk-pci function (00:04.0,
    serial "media", behind the SMMU like the others): Portcullis withholds virtio-mmio from the host,
    whose transports DMA without the SMMU. The first kernel tells it apart by its serial."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for src, name in ((kernel, "vmlinuz"), (capture, "capture.cpio.gz")):
            info = tar.gettarinfo(src, arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            with open(src, "rb") as f:
                tar.addfile(info, f)


def devices(disks, media, *, bps=BPS, nic=None, flood=None):
    """QEMU arguments for the test's devices: the two throttled disks (00:01.0 virtio-blk, 00:02.0
    NVMe), the NIC fed by `flood` (00:03.0), the media disk (a virtio-blk-pci function with serial
    "media", 00:04.0 with a NIC, else 00:03.0)."""
    vd, nvme = disks
    throttle = f"throttling.bps-total={bps}" if bps else ""

    def drive(path, ident):
        return ",".join(x for x in (f"file={path}", "if=none", f"id={ident}", "format=raw", throttle) if x)

    args = ["-drive", drive(vd, "d0"),
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on,iommu_platform=on",
            "-drive", drive(nvme, "d1"),
            "-device", "nvme,drive=d1,serial=pc1"]
    if nic:
        args += ["-netdev", flood.netdev("n0"), "-device", f"{nic},netdev=n0,mac=52:54:00:50:43:01,romfile="]
    args += ["-drive", f"file={media},if=none,id=m0,format=raw,readonly=on",
             "-device", "virtio-blk-pci,drive=m0,serial=media,disable-legacy=on,iommu_platform=on"]
    return args


def first_append(append, crashkernel, capture_append, flood):
    if flood:
        append += f" kdump.nic={flood.token}"
    if capture_append:
        append += " kdump.append=" + capture_append.strip().replace(" ", "+")
    return f"{FIRST_APPEND} crashkernel={crashkernel} {append}".strip()


def command(kernel, initrd, disks, media, *, append="", crashkernel=CRASHKERNEL, mem="1G", smp=2,
            timeout=300, hyp_args="", bps=BPS, capture_append="", nic=None, flood=None):
    """Boot under Portcullis (scripts/run)."""
    cmd = [run_script(), "--kernel", kernel, "--initrd", initrd,
           "--append", first_append(append, crashkernel, capture_append, flood),
           "--mem", mem, "--smp", str(smp), "--timeout", str(timeout)]
    if hyp_args:
        cmd += ["--hyp-args", hyp_args]
    return cmd + ["--"] + devices(disks, media, bps=bps, nic=nic, flood=flood)


def native_command(kernel, initrd, disks, media, *, append="", crashkernel=CRASHKERNEL, mem="1G", smp=2,
                   timeout=300, bps=BPS, capture_append="", nic=None, flood=None):
    """The same machine, kernel, devices and load without Portcullis: QEMU boots the kernel directly
    (at EL1, as under Portcullis), and Linux drives QEMU's SMMUv3 itself."""
    return ["timeout", "--foreground", "-k", "10", str(timeout),
            "qemu-system-aarch64", "-M", "virt,gic-version=3,iommu=smmuv3", "-cpu", "max,pauth-impdef=on",
            "-m", mem, "-smp", str(smp), "-nographic", "-no-reboot", "-nic", "none",
            "-kernel", kernel, "-initrd", initrd,
            "-append", first_append(append, crashkernel, capture_append, flood)] + \
        devices(disks, media, bps=bps, nic=nic, flood=flood)


# The NIC flood starts when the first kernel's link is up, and switches to post-fence frames at the
# fence (under Portcullis) or, natively, at the panic line (the first sign of the crash on the console).
NIC_UP = re.compile(r"LINUX-KDUMP: nic \S+: .* link up")
SWITCH_FENCE = re.compile(r"fence raised")
SWITCH_PANIC = re.compile(r"Kernel panic - not syncing")
NIC_FOUND = re.compile(r"LINUX-KDUMP: nic frames in the dump: pre=(\d+) post=(\d+)")


class Run:
    """One boot, followed line by line: the log (with host-side timestamps), milestones, the
    verdict, the `check failed:` reasons. With a `flood` (nicflood.Flood), starts it when the guest's
    link is up and switches it to post-fence frames at the first line matching `switch`."""

    def __init__(self, cmd, log_path, echo=None, flood=None, switch=SWITCH_FENCE):
        self.cmd, self.log_path, self.echo = cmd, log_path, echo
        self.times, self.verdict, self.checks, self.notes, self.lines = {}, None, [], [], []
        self.rc = None
        self.flood, self.switch = flood, switch
        self.nic_found = None  # (pre, post) frames the capture kernel found in the dump

    def go(self):
        start = time.monotonic()
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "w") as log:
            log.write("# " + " ".join(self.cmd) + "\n")
            proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, bufsize=0)
            buf = b""
            while True:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    self._line(raw.decode(errors="replace").rstrip("\r"), time.monotonic() - start, log)
            if buf:
                self._line(buf.decode(errors="replace"), time.monotonic() - start, log)
            self.rc = proc.wait()
            self.times["exit"] = time.monotonic() - start
            if self.flood:
                self.flood.stop()
                log.write(f"# nic flood: {self.flood.summary()}\n")
            log.write(f"# exit {self.rc} after {self.times['exit']:.1f} s\n")
        return self

    def _line(self, line, now, log):
        log.write(f"[{now:8.2f}] {line}\n")
        log.flush()
        self.lines.append((now, line))
        for key, rx in MILESTONES:
            if key not in self.times and rx.search(line):
                self.times[key] = now
        if self.flood:
            if "nic" not in self.times and NIC_UP.search(line):
                self.times["nic"] = now
                self.flood.start()
            if "switch" not in self.times and self.switch.search(line):
                self.times["switch"] = now
                self.flood.switch()
                log.write(f"# nic flood: switched to post-fence frames here ({self.flood.summary()})\n")
            m = NIC_FOUND.search(line)
            if m:
                self.nic_found = (int(m.group(1)), int(m.group(2)))
        if MARKER in line:
            text = line[line.index(MARKER):]
            m = re.match(r"LINUX-KDUMP: (PASS|FAIL.*)$", text)
            if m:
                self.verdict = m.group(1)
            m = re.match(r"LINUX-KDUMP: check failed: (.*)$", text)
            if m:
                self.checks.append(m.group(1))
            m = re.match(r"LINUX-KDUMP: note: (.*)$", text)
            if m:
                self.notes.append(m.group(1))
        if self.echo:
            self.echo(now, line)

    @property
    def passed(self):
        return self.rc == 0 and self.verdict == "PASS" and "capture" in self.times

    def timing(self):
        keys = ("linux", "userspace", "loaded", "crash", "capture", "verdict", "exit")
        return " ".join(f"{k}={self.times[k]:.1f}s" for k in keys if k in self.times)

    def marker_lines(self, pattern=None):
        rx = re.compile(pattern) if pattern else None
        out = []
        for _, line in self.lines:
            if MARKER in line:
                text = line[line.index(MARKER) + len(MARKER):].strip()
                if rx is None or rx.search(text):
                    out.append(text)
        return out


# The checks a native run (no Portcullis) fails by design: the NIC's receive DMA after the crash lands
# in the dump, and there is no fault report. Anything else failing makes the comparison worthless.
NATIVE_EXPECTED = ("nic-post-fence-frames-in-dump", "no-fault-report-node")


def judge_native(run):
    """(ok, why) for a run without Portcullis: it must reach the capture kernel's verdict, the scan must
    find the pre-crash frames (positive control), and post-crash frames must be in the dump."""
    if "verdict" not in run.times or run.nic_found is None:
        return False, "no capture-kernel verdict or no NIC scan"
    pre, post = run.nic_found
    other = [c for c in run.checks if c.split()[0] not in NATIVE_EXPECTED]
    if other:
        return False, "unexpected failed checks: " + ", ".join(c.split()[0] for c in other)
    if pre == 0:
        return False, "no pre-crash frame found: the scan proves nothing"
    if post == 0:
        return False, "no post-crash frame in the dump: this run cannot show what Portcullis prevents"
    return True, f"post-crash frames in the dump: {post} (pre-crash {pre}), as expected without Portcullis"


def assets():
    return debarchive.assets()
