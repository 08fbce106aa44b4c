"""Pieces of a deterministic initramfs: kernel-module dependencies, busybox applets, ELF library
closures and a newc cpio writer. Pure Python plus the cross readelf and zstd; no kmod or cpio needed.
"""
import gzip
import hashlib
import lzma
import os
import struct
import subprocess

READELF = "aarch64-linux-gnu-readelf"
LIB_DIRS = ["lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib"]
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Kernel modules


def module_name(path):
    base = os.path.basename(path)
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def read_module(path):
    """The module's ELF bytes, decompressed (busybox insmod may not decompress)."""
    if path.endswith(".xz"):
        with lzma.open(path) as f:
            return f.read()
    if path.endswith(".gz"):
        with gzip.open(path) as f:
            return f.read()
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dcq", path], check=True, capture_output=True).stdout
    with open(path, "rb") as f:
        return f.read()


def elf_section(data, wanted):
    """Contents of a section of a little-endian ELF64 by name, or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def sh(i):
        name, _type, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, off, size

    _, str_off, _ = sh(shstrndx)
    for i in range(shnum):
        name, off, size = sh(i)
        end = data.index(b"\0", str_off + name)
        if data[str_off + name:end].decode() == wanted:
            return data[off:off + size]
    return None


def modinfo(data):
    """.modinfo key=value pairs (keys may repeat: a list per key)."""
    info = {}
    for item in (elf_section(data, ".modinfo") or b"").split(b"\0"):
        if b"=" in item:
            k, _, v = item.decode(errors="replace").partition("=")
            info.setdefault(k, []).append(v)
    return info


def ensure_modules_dep(moddir):
    """modules.dep for moddir (Debian's packages do not ship it: depmod makes it at install time).

    Built like depmod's, from each module's `depends=` (what modpost derived from its symbols); pre
    soft dependencies go to modules.softdep. Written once next to the modules (cache tree) with the
    paths of the modules as they are in the tree (compressed or not).
    """
    dep_path = os.path.join(moddir, "modules.dep")
    soft_path = os.path.join(moddir, "modules.softdep")
    alias_path = os.path.join(moddir, "modules.alias")
    if all(os.path.exists(p) for p in (dep_path, soft_path, alias_path)):
        return dep_path
    by_name, infos = {}, {}
    for d, _, files in os.walk(os.path.join(moddir, "kernel")):
        for f in files:
            if f.endswith(MODULE_SUFFIXES):
                rel = os.path.relpath(os.path.join(d, f), moddir)
                by_name[module_name(f)] = rel
    for name, rel in by_name.items():
        infos[name] = modinfo(read_module(os.path.join(moddir, rel)))
    dep_lines, soft_lines, alias_lines = [], [], []
    for name in sorted(by_name, key=lambda n: by_name[n]):
        info = infos[name]
        deps = [d.replace("-", "_") for v in info.get("depends", []) for d in v.split(",") if d]
        # depmod lists the full transitive closure, deepest last.
        closure, stack = [], list(deps)
        while stack:
            d = stack.pop(0)
            if d in closure or d not in by_name:
                continue
            closure.append(d)
            stack += [x.replace("-", "_") for v in infos[d].get("depends", []) for x in v.split(",") if x]
        dep_lines.append(f"{by_name[name]}: " + " ".join(by_name[d] for d in closure))
        for sd in info.get("softdep", []):
            soft_lines.append(f"softdep {name} {sd}")
        for alias in info.get("alias", []):
            alias_lines.append(f"alias {alias} {name}")
    for path, lines in ((dep_path, dep_lines), (soft_path, soft_lines), (alias_path, alias_lines)):
        with open(path + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)
    return dep_path


def read_modules_dep(moddir):
    ensure_modules_dep(moddir)
    deps = {}
    for line in open(os.path.join(moddir, "modules.dep")):
        if ":" in line:
            mod, _, rest = line.partition(":")
            deps[module_name(mod)] = (mod.strip(), [module_name(d) for d in rest.split()])
    softdeps = {}
    for line in open(os.path.join(moddir, "modules.softdep")):
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "softdep":
            pre, mode = [], None
            for p in parts[2:]:
                if p.endswith(":"):
                    mode = p[:-1]
                elif mode == "pre":
                    pre.append(p.replace("-", "_"))
            softdeps.setdefault(parts[1], []).extend(pre)
    aliases = {}
    for line in open(os.path.join(moddir, "modules.alias")):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias" and not any(c in parts[1] for c in "*?["):
            aliases.setdefault(parts[1].replace("-", "_"), []).append(parts[2])
    return deps, softdeps, aliases


def builtin_modules(moddir):
    path = os.path.join(moddir, "modules.builtin")
    if not os.path.exists(path):
        return set()
    return {module_name(line.strip()) for line in open(path) if line.strip()}


def resolve_modules(moddir, wanted):
    """Modules to load, dependencies first: [(name, path relative to moddir)]; and notes."""
    deps, softdeps, aliases = read_modules_dep(moddir)
    builtin = builtin_modules(moddir)
    order, notes, visiting = [], [], set()

    def visit(name, required):
        if any(n == name for n, _ in order):
            return
        if name not in deps and not required and name in aliases:
            # A soft dependency may name an alias (crc_t10dif: "pre: crct10dif"): take every
            # module that provides it, as modprobe would.
            for provider in sorted(set(aliases[name])):
                visit(provider, False)
            return
        if name not in deps:
            if name in builtin:
                notes.append(f"{name}: built in")
            elif required:
                raise SystemExit(f"mkinitramfs: module {name} is neither in modules.dep nor built in")
            else:
                notes.append(f"{name}: soft dependency not found, skipped")
            return
        if name in visiting:
            return
        visiting.add(name)
        for sd in softdeps.get(name, []):
            visit(sd, False)
        for d in deps[name][1]:
            visit(d, True)
        order.append((name, deps[name][0]))

    for w in wanted:
        visit(w.replace("-", "_"), True)
    return order, notes


# ---------------------------------------------------------------------------------------------
# busybox and ELF closures


def busybox_applets(path):
    """Applet names of a busybox binary, read from its sorted applet-name table."""
    data = open(path, "rb").read()
    start = data.find(b"[\0[[\0")
    if start < 0:
        raise SystemExit(f"mkinitramfs: no applet table in {path}")
    names, j = [], start
    while True:
        k = data.index(b"\0", j)
        s = data[j:k]
        if not s or not all(32 < c < 127 for c in s):
            break
        names.append(s.decode())
        j = k + 1
    if names != sorted(names) or not {"sh", "mount", "insmod", "poweroff"} <= set(names):
        raise SystemExit(f"mkinitramfs: the applet table of {path} does not look right")
    return names


def _readelf(args, path):
    return subprocess.run([READELF, *args, path], capture_output=True, text=True, check=True).stdout


def elf_needed(path):
    return [line.split("[", 1)[1].split("]", 1)[0]
            for line in _readelf(["-d"], path).splitlines() if "(NEEDED)" in line]


def elf_interp(path):
    for line in _readelf(["-l"], path).splitlines():
        if "Requesting program interpreter:" in line:
            return line.split(":", 1)[1].strip().rstrip("]").strip()
    return None


def elf_closure(sysroot, binaries):
    """{path in the image: file in sysroot, or ("link", target)} for the shared libraries and the
    loader that binaries need (libraries under their soname, the loader as Debian lays it out)."""
    out, todo = {}, list(binaries)
    while todo:
        path = os.path.realpath(todo.pop())
        interp = elf_interp(path)
        if interp:
            rel = interp.lstrip("/")
            src = os.path.join(sysroot, rel)
            if not os.path.exists(src):
                raise SystemExit(f"mkinitramfs: loader {interp} not in {sysroot}")
            real = os.path.realpath(src)
            if os.path.islink(src) and real.startswith(os.path.realpath(sysroot) + "/"):
                # /lib/ld-linux-aarch64.so.1 -> aarch64-linux-gnu/ld-linux-aarch64.so.1
                out[rel] = ("link", os.readlink(src))
                out[os.path.relpath(real, os.path.realpath(sysroot))] = real
            else:
                out[rel] = real
        for so in elf_needed(path):
            for d in LIB_DIRS:
                src = os.path.join(sysroot, d, so)
                if os.path.lexists(src):
                    rel = os.path.join(d, so)
                    if rel not in out:
                        out[rel] = os.path.realpath(src)
                        todo.append(src)
                    break
            else:
                raise SystemExit(f"mkinitramfs: {os.path.basename(path)} needs {so}, not in {sysroot}")
    return out


# ---------------------------------------------------------------------------------------------
# newc cpio


class Cpio:
    """A deterministic newc archive: entries sorted by path, owner root, mtime fixed."""

    def __init__(self, mtime=0):
        self.entries = {}
        self.mtime = mtime

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.entries[d] = ("dir", 0o755, b"", 0)

    def dir(self, path, mode=0o755):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("dir", mode, b"", 0)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("file", mode, data, 0)

    def symlink(self, path, target):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("link", 0o777, target.encode(), 0)

    def chardev(self, path, major, minor, mode=0o600):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("chr", mode, b"", (major << 8) | minor)

    def manifest(self):
        """A stable description of the contents (for cache keys)."""
        h = hashlib.sha256()
        for path in sorted(self.entries):
            kind, mode, data, dev = self.entries[path]
            h.update(f"{path}\0{kind}\0{mode:o}\0{dev}\0{len(data)}\0".encode())
            h.update(hashlib.sha256(data).digest())
        return h.hexdigest()

    def bytes(self):
        out = bytearray()
        types = {"dir": 0o040000, "file": 0o100000, "link": 0o120000, "chr": 0o020000}

        def entry(ino, name, mode, data, nlink=1, rdev=0):
            nameb = name.encode() + b"\0"
            hdr = "070701" + "".join(f"{v:08x}" for v in (
                ino, mode, 0, 0, nlink, self.mtime, len(data), 0, 0, rdev >> 8, rdev & 0xff,
                len(nameb), 0))
            out.extend(hdr.encode() + nameb)
            out.extend(b"\0" * (-len(out) % 4))
            out.extend(data)
            out.extend(b"\0" * (-len(out) % 4))

        for ino, path in enumerate(sorted(self.entries), start=1):
            kind, mode, data, dev = self.entries[path]
            entry(ino, path, types[kind] | mode, data, nlink=2 if kind == "dir" else 1, rdev=dev)
        entry(0, "TRAILER!!!", 0, b"")
        return bytes(out)

    def gzip(self):
        return gzip.compress(self.bytes(), compresslevel=9, mtime=0)
