"""Debian arm64 packages under a private apt state, for the Linux end-to-end tests.

Nothing here touches the system's apt or dpkg database: the package lists, the downloaded .debs and
their unpacked trees live under the cache (`~/.cache/portcullis/linux` unless PORTCULLIS_CACHE says
otherwise). Packages are fetched with `apt-get download` and unpacked with `dpkg -x`; arm64 packages
are never installed.
"""
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

SOURCES = """\
deb [arch=arm64] http://deb.debian.org/debian bookworm main
deb [arch=arm64] http://deb.debian.org/debian bookworm-updates main
deb [arch=arm64] http://deb.debian.org/debian bookworm-backports main
deb [arch=arm64] http://deb.debian.org/debian-security bookworm-security main
"""


def cache_root():
    base = os.environ.get("PORTCULLIS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "portcullis")
    return os.path.join(base, "linux")


def assets(fetch=None):
    """The variables of assets.env, running scripts/linux/fetch first (a no-op once cached)."""
    import shlex
    fetch = fetch or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "linux", "fetch")
    out = subprocess.run([fetch], check=True, stdout=subprocess.PIPE, text=True).stdout
    env = {}
    for line in out.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = shlex.split(v)[0] if v.strip() else ""
    return env


def log(msg):
    print(f"[linux] {msg}", file=sys.stderr, flush=True)


def compare_versions(a, b):
    """Debian version comparison (dpkg's rules), as a cmp function."""
    if a == b:
        return 0
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
    return -1 if lt else 1


def newest(versions):
    return max(versions, key=functools.cmp_to_key(compare_versions))


def parse_depends(text):
    """'a (>= 1) | b, c:any' -> [['a', 'b'], ['c']] (names only)."""
    groups = []
    for group in (text or "").split(","):
        alts = []
        for alt in group.split("|"):
            name = re.split(r"[\s(\[]", alt.strip(), maxsplit=1)[0].split(":")[0]
            if name:
                alts.append(name)
        if alts:
            groups.append(alts)
    return groups


def parse_records(text):
    records, cur, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                records.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            cur[key] = value.strip()
    if cur:
        records.append(cur)
    return records


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PrivateApt:
    def __init__(self, root=None):
        self.root = root or os.path.join(cache_root(), "apt")
        self.debs = os.path.join(cache_root(), "debs")
        for d in ("lists/partial", "cache/archives/partial"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        os.makedirs(self.debs, exist_ok=True)
        sources = os.path.join(self.root, "sources.list")
        if not os.path.exists(sources) or open(sources).read() != SOURCES:
            with open(sources, "w") as f:
                f.write(SOURCES)
        status = os.path.join(self.root, "status")
        if not os.path.exists(status):
            open(status, "w").close()
        self.opts = [
            "-oAPT::Architecture=arm64", "-oAPT::Architectures=arm64",
            f"-oDir::State::Lists={self.root}/lists", f"-oDir::State::Status={status}",
            f"-oDir::Etc::SourceList={sources}", "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::Cache={self.root}/cache", "-oDir::Etc::Preferences=/dev/null",
            # Keep apt's binary caches (some images disable them: 1 s per apt-cache call instead
            # of 20 ms).
            "-oDir::Cache::pkgcache=pkgcache.bin", "-oDir::Cache::srcpkgcache=srcpkgcache.bin",
            "-oDir::Etc::PreferencesParts=/dev/null", "-oAPT::Sandbox::User=root",
            "-oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            "-oAcquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
            "-oAcquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
            "-oAcquire::IndexTargets::deb::CNF::DefaultEnabled=false",
            "-oAcquire::Languages=none", "-oAcquire::Retries=3",
        ]

    def have_lists(self):
        lists = os.path.join(self.root, "lists")
        return any("_Packages" in n for n in os.listdir(lists))

    def update(self):
        log("apt-get update (private arm64 state)")
        subprocess.run(["apt-get", *self.opts, "-q", "update"], check=True,
                       stdout=sys.stderr)

    def ensure_lists(self, refresh=False):
        if refresh or not self.have_lists():
            self.update()

    def _apt_cache(self, *args, check=True):
        return subprocess.run(["apt-cache", *self.opts, *args], capture_output=True, text=True,
                              check=check).stdout

    def madison(self, pkg):
        """[(version, suite)] for every version of pkg in the lists."""
        out = []
        for line in self._apt_cache("madison", pkg).splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3 and parts[0] == pkg:
                out.append((parts[1], parts[2].split()[1].split("/")[0]))
        return out

    def show(self, pkg, version=None):
        """The record of pkg at version, or of its candidate version."""
        if version:
            recs = [r for r in parse_records(self._apt_cache("show", f"{pkg}={version}"))
                    if r.get("Package") == pkg and r.get("Version") == version]
        else:
            recs = [r for r in parse_records(self._apt_cache("show", "--no-all-versions", pkg,
                                                             check=False))
                    if r.get("Package") == pkg]
        if not recs:
            raise LookupError(f"{pkg}{'=' + version if version else ''} not in the package lists")
        return recs[0]

    def download(self, rec):
        """The .deb of a record, from the cache or downloaded with `apt-get download`."""
        name = os.path.basename(rec["Filename"])
        path = os.path.join(self.debs, name)
        want_size, want_sha = int(rec["Size"]), rec.get("SHA256")
        if os.path.exists(path) and os.path.getsize(path) == want_size:
            return path
        log(f"downloading {rec['Package']} {rec['Version']} ({want_size / 1e6:.1f} MB)")
        with tempfile.TemporaryDirectory(dir=self.debs) as tmp:
            subprocess.run(["apt-get", *self.opts, "-q", "download",
                            f"{rec['Package']}={rec['Version']}"], cwd=tmp, check=True,
                           stdout=sys.stderr)
            got = [n for n in os.listdir(tmp) if n.endswith(".deb")]
            if len(got) != 1:
                raise RuntimeError(f"apt-get download {rec['Package']} produced {got}")
            tmp_path = os.path.join(tmp, got[0])
            if want_sha and sha256_file(tmp_path) != want_sha:
                raise RuntimeError(f"{got[0]}: SHA256 mismatch")
            os.replace(tmp_path, path)
        return path


def unpack(deb, dest):
    """dpkg -x deb into dest (once; a stamp file records it)."""
    stamp = os.path.join(dest, ".unpacked-" + os.path.basename(deb))
    if os.path.exists(stamp):
        return dest
    os.makedirs(dest, exist_ok=True)
    log(f"unpacking {os.path.basename(deb)}")
    subprocess.run(["dpkg", "-x", deb, dest], check=True)
    open(stamp, "w").close()
    return dest


def unpack_fresh(debs, dest):
    """Unpack a set of debs into one tree; redone from scratch when the set changes."""
    names = sorted(os.path.basename(d) for d in debs)
    manifest = os.path.join(dest, ".debs")
    if os.path.exists(manifest) and open(manifest).read().split() == names:
        return dest
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    for deb in sorted(debs):
        log(f"unpacking {os.path.basename(deb)}")
        subprocess.run(["dpkg", "-x", deb, dest], check=True)
    with open(manifest, "w") as f:
        f.write("\n".join(names) + "\n")
    return dest
