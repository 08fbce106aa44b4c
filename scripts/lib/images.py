"""Building Portcullis' bare-metal images and reading what scripts need from device trees."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = "aarch64-unknown-none-softfloat"
OBJCOPY = "aarch64-linux-gnu-objcopy"


def _target_dir(features):
    """A separate target directory per feature set, so alternating builds do not rebuild."""
    if not features:
        return os.path.join(ROOT, "target")
    return os.path.join(ROOT, "target", "features-" + features.replace(",", "-"))


def _cargo_build(package, features="", binary=None):
    cmd = ["cargo", "build", "--quiet", "--release", "--target", TARGET, "-p", package]
    if binary:
        cmd += ["--bin", binary]
    if features:
        cmd += ["--features", features]
    env = dict(os.environ, CARGO_TARGET_DIR=_target_dir(features))
    subprocess.run(cmd, cwd=ROOT, check=True, env=env)


def _to_image(elf, out):
    """objcopy the ELF to a flat arm64 Image (the header is the first 64 bytes of .text)."""
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(elf):
        # A temporary name of this process's own: runs in parallel may convert the same image.
        tmp = f"{out}.{os.getpid()}.tmp"
        subprocess.run([OBJCOPY, "-O", "binary", elf, tmp], check=True)
        os.replace(tmp, out)
    return out


def out_dir():
    d = os.path.join(ROOT, "build", "images")
    os.makedirs(d, exist_ok=True)
    return d


def build_hyp(features=""):
    _cargo_build("portcullis", features=features, binary="portcullis")
    elf = os.path.join(_target_dir(features), TARGET, "release", "portcullis")
    suffix = ("-" + features.replace(",", "-")) if features else ""
    return _to_image(elf, os.path.join(out_dir(), f"portcullis{suffix}.bin"))


def build_guest(name):
    _cargo_build("portcullis-guest-tests", binary=name)
    elf = os.path.join(ROOT, "target", TARGET, "release", name)
    return _to_image(elf, os.path.join(out_dir(), f"guest-{name}.bin"))


def ram_base(dtb):
    """The base of the first memory bank in a device tree (via fdtget)."""
    for node in _fdt_nodes(dtb, "/"):
        if node.startswith("memory"):
            cells = subprocess.run(["fdtget", "-t", "x", dtb, "/" + node, "reg"], check=True,
                                   capture_output=True, text=True).stdout.split()
            return (int(cells[0], 16) << 32) | int(cells[1], 16)
    sys.exit(f"no memory node in {dtb}")


def _fdt_nodes(dtb, path):
    return subprocess.run(["fdtget", "-l", dtb, path], check=True, capture_output=True,
                          text=True).stdout.split()


def cells64(value):
    """A 64-bit value as two 32-bit cells, in fdtput's hex form."""
    return [f"{value >> 32:#x}", f"{value & 0xffffffff:#x}"]
