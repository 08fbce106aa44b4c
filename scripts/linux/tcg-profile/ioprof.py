#!/usr/bin/env python3
"""Experiment (issue #12, lazy-mode I/O gap): one boot per side (native, Portcullis image), and inside
each chosen read phase: QEMU's per-thread CPU time and context switches (/proc), QEMU's `info jit`
(monitor socket) at the phase's start and end, and optionally `perf record` of the QEMU process.
usage: ioprof.py ROOT KERNEL IMAGE OUTDIR [--perf] [--phase 'lazy nvme 4096'] [--sides native,pc]
        [--qemu-extra 'args for both sides'] [--native-extra 'args'] [--pc-extra 'args']"""
import argparse, os, re, select, shlex, signal, socket, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("root"); ap.add_argument("kernel"); ap.add_argument("image"); ap.add_argument("out")
ap.add_argument("--perf", action="store_true")
ap.add_argument("--perf-events", default="", help="events for --perf (default: cpu-clock at 4000 Hz)")
ap.add_argument("--perfall", action="store_true", help="perf record the whole QEMU run on CLOCK_MONOTONIC; phases in OUT/SIDE-windows.txt")
ap.add_argument("--probes", default="", help="comma-separated perf events counted inside the phase (perf stat)")
ap.add_argument("--trace", default="", help="comma-separated trace events, on inside the phase")
ap.add_argument("--phase", default="lazy nvme 4096", help="comma-separated")
ap.add_argument("--sides", default="native,pc")
ap.add_argument("--qemu-extra", default="")
ap.add_argument("--native-extra", default="")
ap.add_argument("--pc-extra", default="")
a = ap.parse_args()
sys.path.insert(0, os.path.join(a.root, "scripts", "lib"))
import kdumprun, linuxbench
os.makedirs(a.out, exist_ok=True)
env = kdumprun.assets()
kernel = env[f"KERNEL_{a.kernel}"]
first, capture = linuxbench.initramfs(a.kernel)


def monitor(path, cmd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(5)
    data = b""
    def until_prompt():
        nonlocal data
        while not data.rstrip().endswith(b"(qemu)"):
            data += s.recv(65536)
    until_prompt(); data = b""
    s.sendall(cmd.encode() + b"\n")
    until_prompt()
    s.close()
    return data.decode(errors="replace")


def threads(pid):
    r = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            st = open(f"/proc/{pid}/task/{t}/stat").read()
            name = open(f"/proc/{pid}/task/{t}/comm").read().strip()
            f = st[st.rindex(")") + 2:].split()
            status = open(f"/proc/{pid}/task/{t}/status").read()
            vol = int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))
            nonvol = int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", status).group(1))
            r[(t, name)] = (int(f[11]) + int(f[12]), vol, nonvol)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return r


def jitnums(text):
    return {k.strip(): int(v) for k, v in re.findall(r"^([A-Za-z][A-Za-z /()-]*?)\s+(\d+)\s*$", text, re.M)}


with tempfile.TemporaryDirectory() as tmp:
    disks, tar = linuxbench.media(tmp, a.kernel, kernel, capture)
    for side in a.sides.split(","):
        cmd, rm = linuxbench.qemu_command("native" if side == "native" else "portcullis", kernel, first, disks, tar, count=False)
        if side != "native":
            cmd[cmd.index("-kernel") + 1] = a.image
        sock = os.path.join(tmp, f"m-{side}.sock")
        cmd += ["-name", "debug-threads=on", "-monitor", f"unix:{sock},server,nowait"] + shlex.split(a.qemu_extra) + \
            shlex.split(a.native_extra if side == "native" else a.pc_extra) + \
            (["-D", os.path.join(a.out, f"{side}-trace.log")] if a.trace else [])
        log = open(os.path.join(a.out, f"{side}.log"), "w")
        log.write("# " + shlex.join(cmd) + "\n")
        start = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        qpid = p.pid
        windows = open(os.path.join(a.out, f"{side}-windows.txt"), "w")
        pall = None
        def start_perfall():
            return subprocess.Popen(["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-F", "2000", "-p", str(p.pid),
                                     "-o", os.path.join(a.out, f"{side}-all.perf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the command may start with `timeout`: find the qemu child
        buf, text, perf, snap = b"", "", None, None
        while True:
            ready, _, _ = select.select([p.stdout], [], [], 1.0)
            if time.monotonic() - start > 300:
                p.kill()
            if not ready:
                continue
            chunk = os.read(p.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                if a.perfall and pall is None and "LINUX-BENCH: init" in line:
                    pall = start_perfall(); time.sleep(1.0)
                m = re.search(r"LINUX-BENCH: io (\S+) (\S+) (\d+) (start|end)", line)
                if m:
                    windows.write(f"{time.monotonic():.6f} {m.group(1)}-{m.group(2)}-{m.group(3)} {m.group(4)}\n"); windows.flush()
                log.write(f"[{time.monotonic()-start:8.2f}] {line}\n")
                phase = next((ph for ph in a.phase.split(",") if f"io {ph} start" in line or f"io {ph} end" in line), None)
                if phase and "start" in line:
                    out = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
                    qpid = int(out[0]) if out and os.path.basename(cmd[0]) == "timeout" else p.pid
                    for ev in filter(None, a.trace.split(",")):
                        monitor(sock, f"trace-event {ev} on")
                    snap = (threads(qpid), jitnums(monitor(sock, "info jit")), monitor(sock, "info jit"))
                    if a.probes:
                        statf = os.path.join(a.out, f"{side}-{phase.replace(' ', '-')}.stat")
                        perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", statf, "-e", a.probes, "-p", str(qpid)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(0.3)
                    elif a.perf:
                        perf = subprocess.Popen(["perf", "record", "-q"] + (["-e", a.perf_events, "--call-graph", "dwarf,8192"] if a.perf_events else ["-F", "4000"]) + ["-p", str(qpid), "-o", os.path.join(a.out, f"{side}-{phase.replace(' ', '-')}.perf")],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if phase and " end " in line and snap:
                    if perf:
                        perf.send_signal(signal.SIGINT); perf.wait()
                        if a.probes:
                            for l in open(statf):
                                f = l.split(",")
                                if len(f) > 2 and f[0].strip().isdigit():
                                    print(f"   probe {f[2]:55} {f[0]:>10}")
                    t1, j1 = threads(qpid), jitnums(monitor(sock, "info jit"))
                    for ev in filter(None, a.trace.split(",")):
                        monitor(sock, f"trace-event {ev} off")
                    j1raw = monitor(sock, "info jit")
                    print(f"== {side}: {line[line.index('LINUX-BENCH'):]}")
                    for k in sorted(t1):
                        if k in snap[0]:
                            d = [x - y for x, y in zip(t1[k], snap[0][k])]
                            if any(d):
                                print(f"   thread {k[1]:20} cpu_ticks {d[0]:5} vol_cs {d[1]:7} invol_cs {d[2]:6}")
                    for k in j1:
                        if k in snap[1] and j1[k] != snap[1][k]:
                            print(f"   jit {k:40} {j1[k] - snap[1][k]:10}")
                    open(os.path.join(a.out, f"{side}-{phase.replace(' ', '-')}-jit.txt"), "w").write(snap[2] + "\n=====\n" + j1raw)
                    sys.stdout.flush()
                    snap = None
        p.wait()
        if pall:
            pall.wait()
        windows.close()
        log.close()
        for f in rm:
            if os.path.exists(f): os.remove(f)
