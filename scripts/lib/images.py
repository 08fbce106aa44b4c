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


def dtree(*args):
    """Runs tools/dtree (built for the host on first use), the one device-tree reader and writer of
    the scripts: it reads a tree with Portcullis' own parser. Returns its output."""
    env = dict(os.environ, CARGO_TARGET_DIR=_target_dir(""))
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "portcullis-dtree"], cwd=ROOT,
                   check=True, env=env)
    tool = os.path.join(_target_dir(""), "release", "dtree")
    return subprocess.run([tool, *map(str, args)], check=True, capture_output=True,
                          text=True).stdout.strip()


def ram_base(dtb):
    """The base of RAM in a device tree (in the root's #address-cells, as Portcullis reads it)."""
    return int(dtree("ram-base", dtb), 16)


def set_chosen(dtb, kernel=None, initrd=None, bootargs=None, hyp_args=None):
    """Sets the /chosen properties Portcullis and the host read, in place: kernel and initrd are
    (address, size) and (start, end); portcullis,kernel is written in the root's cells."""
    args = []
    if kernel is not None:
        args += ["--kernel", hex(kernel[0]), hex(kernel[1])]
    if initrd is not None:
        args += ["--initrd", hex(initrd[0]), hex(initrd[1])]
    if bootargs is not None:
        args += ["--bootargs", bootargs]
    if hyp_args is not None:
        args += ["--hyp-args", hyp_args]
    dtree("set-chosen", dtb, *args)
