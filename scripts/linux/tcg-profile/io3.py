#!/usr/bin/env python3
"""Experiment: native vs Portcullis image A vs image B, I/O throughputs, interleaved rounds.
usage: io3.py ROOT KERNEL ROUNDS IMAGE_A IMAGE_B [machine-suffix] [extra QEMU args for both sides]
(this copy: logs in /tmp/cps-io3/; the extra arguments come last, so `-cpu max,pauth=off` replaces the
commands' own -cpu on both sides)"""
import os, sys, statistics, tempfile
root, k, rounds, ia, ib = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
msuf = sys.argv[6] if len(sys.argv) > 6 else ""
extra = sys.argv[7].split() if len(sys.argv) > 7 else []
sys.path.insert(0, os.path.join(root, "scripts", "lib"))
import kdumprun, linuxbench
if msuf:
    _dev = kdumprun.devices
    kdumprun.devices = lambda *a, **kw: _dev(*a, **kw) + ["-machine", msuf]
env = kdumprun.assets()
kernel = env.get(f"KERNEL_{k}")
first, capture = linuxbench.initramfs(k)
res = {s: [] for s in ("native", "A", "B")}
with tempfile.TemporaryDirectory() as tmp:
    disks, tar = linuxbench.media(tmp, k, kernel, capture)
    for i in range(rounds):
        for side in (("native", "A", "B") if i % 2 == 0 else ("B", "A", "native")):
            cmd, rm = linuxbench.qemu_command("native" if side == "native" else "portcullis", kernel, first, disks, tar, count=False)
            if side != "native":
                cmd[cmd.index("-kernel") + 1] = ia if side == "A" else ib
            cmd = cmd + extra
            b = linuxbench.Boot(side, k, cmd, os.path.join(os.environ.get("IO3_LOGS", "/tmp/cps-io3"), f"{side}-{i}.log"), 300).go()
            for f in rm:
                if os.path.exists(f): os.remove(f)
            res[side].append(b)
            print(f"{i} {side:6} {linuxbench.summary(b)} {b.fails}", flush=True)
for ph in linuxbench.PHASES:
    med = {s: statistics.median([b.mbps(ph) or 0 for b in res[s]]) for s in res}
    print(ph, {s: round(v, 2) for s, v in med.items()}, "A/N %.2f B/N %.2f" % (med["A"] / med["native"], med["B"] / med["native"]))
for s in res:
    print(s, "init", statistics.median([b.boot_s() or 0 for b in res[s]]))
