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


def mkinitramfs(kernel_tag, *extra):
    cmd = [os.path.join(LINUX, "mkinitramfs"), "--kernel", kernel_tag, "--init", INIT, *extra]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


FIRST_MODULES = "virtio_pci virtio_blk nvme"


def images(kernel_tag):
    """(first kernel's initramfs, capture kernel's initramfs) for kernel 61 or 612."""
    capture = mkinitramfs(kernel_tag, "--modules", "", "--tools", "makedumpfile")
    first = mkinitramfs(kernel_tag, "--modules", FIRST_MODULES, "--tools", "kexec")
    return first, capture


def make_media(path, kernel, capture):
    """The media disk: a tar with the kernel to load as the capture kernel and its initramfs.

    They ride on a disk rather than in the first initramfs because scripts/run places the initrd
    below the device tree QEMU puts at RAM + 128 MiB: Portcullis, a 44 MiB 6.12 Image and an initrd
    holding that Image again do not fit there. The disk is a third virtio-blk-pci function (00:03.0,
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


def command(kernel, initrd, disks, media, *, append="", crashkernel=CRASHKERNEL, mem="1G", smp=2,
            timeout=300, hyp_args="", bps=BPS, capture_append=""):
    vd, nvme = disks
    throttle = f"throttling.bps-total={bps}" if bps else ""

    def drive(path, ident):
        return ",".join(x for x in (f"file={path}", "if=none", f"id={ident}", "format=raw", throttle) if x)

    if capture_append:
        append += " kdump.append=" + capture_append.strip().replace(" ", "+")
    full_append = f"{FIRST_APPEND} crashkernel={crashkernel} {append}".strip()
    cmd = [run_script(), "--kernel", kernel, "--initrd", initrd, "--append", full_append,
           "--mem", mem, "--smp", str(smp), "--timeout", str(timeout)]
    if hyp_args:
        cmd += ["--hyp-args", hyp_args]
    cmd += ["--",
            "-drive", drive(vd, "d0"),
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on,iommu_platform=on",
            "-drive", drive(nvme, "d1"),
            "-device", "nvme,drive=d1,serial=pc1",
            "-drive", f"file={media},if=none,id=m0,format=raw,readonly=on",
            "-device", "virtio-blk-pci,drive=m0,serial=media,disable-legacy=on,iommu_platform=on"]
    return cmd


class Run:
    """One boot, followed line by line: the log (with host-side timestamps), milestones, the
    verdict, the `check failed:` reasons."""

    def __init__(self, cmd, log_path, echo=None):
        self.cmd, self.log_path, self.echo = cmd, log_path, echo
        self.times, self.verdict, self.checks, self.notes, self.lines = {}, None, [], [], []
        self.rc = None

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
            log.write(f"# exit {self.rc} after {self.times['exit']:.1f} s\n")
        return self

    def _line(self, line, now, log):
        log.write(f"[{now:8.2f}] {line}\n")
        log.flush()
        self.lines.append((now, line))
        for key, rx in MILESTONES:
            if key not in self.times and rx.search(line):
                self.times[key] = now
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


def assets():
    return debarchive.assets()
