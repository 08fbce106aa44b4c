"""Portcullis' own counters around COUNT-MARK brackets, from a console log.

The /init scripts bracket I/O with `count_mark NAME-start` / `count_mark NAME-end`
(scripts/linux/count-mark.sh): each prints `COUNT-MARK: NAME` and takes CPU1 offline and online, and
at that PSCI CPU_OFF Portcullis logs its `counters: at=cpu-off key=value ...` line (cumulative since
boot; keys in hyp/src/diag/counters.rs). A `null` bracket (nothing between its start and end)
measures the bracket itself. Used by scripts/linux/counters-per-io and scripts/lib/linuxbench.py.
"""
import re

MARK = re.compile(r"COUNT-MARK: (\S+)")
PAIR = re.compile(r" ([\w.]+)=(\d+)")


def marks(lines):
    """{mark name: {counter key: value}} for every COUNT-MARK followed by a CPU_OFF counters line."""
    out, pending = {}, None
    for line in lines:
        m = MARK.search(line)
        if m:
            pending = m.group(1)
            continue
        if pending and "counters: at=cpu-off" in line:
            out[pending] = {k: int(v) for k, v in PAIR.findall(line[line.index("counters: at=cpu-off"):])}
            pending = None
    return out


def brackets(m):
    """{bracket name: {key: end - start - the null bracket's}} for every complete bracket but `null`;
    None without a complete null bracket (no Portcullis, one CPU, or lines lost to the rate limit)."""
    if "null-start" not in m or "null-end" not in m:
        return None
    keys = set(m["null-start"]) | set(m["null-end"])

    def delta(name, k):
        return m[f"{name}-end"].get(k, 0) - m[f"{name}-start"].get(k, 0)

    null = {k: delta("null", k) for k in keys}
    out = {}
    for name in sorted({n.rsplit("-", 1)[0] for n in m} - {"null"}):
        if f"{name}-start" in m and f"{name}-end" in m:
            ks = keys | set(m[f"{name}-start"]) | set(m[f"{name}-end"])
            out[name] = {k: delta(name, k) - null.get(k, 0) for k in ks}
    return out
