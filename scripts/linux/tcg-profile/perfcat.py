#!/usr/bin/env python3
"""Experiment: vCPU-thread perf samples of ioprof.py runs, by category, native vs Portcullis.
usage: perfcat.py DIR [DIR...]  (each holding native-PHASE.perf and pc-PHASE.perf, or
native-all.perf + native-windows.txt and the pc ones from ioprof.py --perfall)"""
import bisect, collections, glob, os, subprocess, sys
Q = subprocess.run(["which", "qemu-system-aarch64"], capture_output=True, text=True).stdout.strip()
syms = []
for l in subprocess.run(["nm", "-D", "--defined-only", Q], capture_output=True, text=True).stdout.splitlines():
    a, t, n = l.split()[:3]
    if t in "Tt":
        syms.append((int(a, 16), n))
syms.sort(); addrs = [s[0] for s in syms]
# Page-table walk and TLB fill: named functions, and the unnamed static functions of target/arm/ptw.c
# (after v8m_security_lookup in the binary) and of accel/tcg/cputlb.c after tlb_set_page_full.
WALK = {"arm_cpu_tlb_fill_align", "get_phys_addr", "tlb_set_page_full", "probe_access_full_mmu",
        "aa64_va_parameters", "arm_hcr_el2_eff", "arm_hcr_el2_eff_secstate", "arm_security_space_below_el3",
        "arm_mmu_idx_el", "address_space_translate_for_iotlb", "qemu_ram_block_from_host",
        "get_phys_addr_with_space_nogpc", "el_is_in_host", "arm_mmu_idx_to_el", "regime_translation_disabled",
        "memory_region_get_ram_ptr", "qemu_ram_addr_from_host_nofail", "arm_is_secure_below_el3", "qemu_map_ram_ptr",
        "flatview_translate", "get_ptr_rcu_reader"}
def cat(dso, sym):
    if dso.startswith("[kernel"): return "host kernel"
    if "qemu-system" not in dso: return "JIT/other" if dso in ("[unknown]", "[JIT] tid", "") or dso.startswith("[JIT") or dso.startswith("perf-") else "libs"
    if sym.startswith("0x"):
        a = int(sym, 16)
        i = bisect.bisect_right(addrs, a) - 1
        base = syms[i][1] if i >= 0 else "?"
        if base == "v8m_security_lookup" or (base == "tlb_set_page_full" and a - syms[i][0] < 0x1000): return "walk/fill"
        return "qemu other (unnamed)"
    if sym in WALK: return "walk/fill"
    if sym in ("helper_lookup_tb_ptr", "qht_lookup_custom", "tcg_flush_jmp_cache", "cpu_get_tb_cpu_state", "tb_lookup"): return "tb lookup"
    return "qemu other (named)"
def report(path, window=None):
    cmd = ["perf", "report", "-i", path, "--stdio", "-n", "--comm", "CPU 0/TCG,CPU 1/TCG", "--sort", "dso,sym"]
    if window:
        cmd += ["--time", f"{window[0]:.6f},{window[1]:.6f}"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    c = collections.Counter()
    for l in out.splitlines():
        p = l.split()
        if not p or p[0].startswith("#") or not p[0].endswith("%"): continue
        n, dso, sym = int(p[1]), p[2], p[4] if len(p) > 4 else ""
        c[cat(dso, sym)] += n
    return c
def windows(path):
    w = {}
    for l in open(path):
        t, ph, what = l.split()
        w.setdefault(ph, [0, 0])[0 if what == "start" else 1] = float(t)
    return w
def show(title, row):
    tot = {s: sum(row[s].values()) for s in row}
    print(f"{title}: vCPU samples (2000 Hz) native {tot['native']} pc {tot['pc']} ratio {tot['pc']/max(tot['native'],1):.2f}")
    for k in sorted(set(row["native"]) | set(row["pc"]), key=lambda k: -(row["pc"][k] - row["native"][k])):
        print(f"   {k:24} {row['native'][k]:6} {row['pc'][k]:6} {row['pc'][k]-row['native'][k]:+6}"
              f"   share {row['native'][k]/max(tot['native'],1):5.1%} {row['pc'][k]/max(tot['pc'],1):5.1%}")
for d in sys.argv[1:]:
    if os.path.exists(os.path.join(d, "native-all.perf")):
        w = {s: windows(os.path.join(d, f"{s}-windows.txt")) for s in ("native", "pc")}
        for ph in w["native"]:
            show(f"{d} {ph}", {s: report(os.path.join(d, f"{s}-all.perf"), w[s][ph]) for s in ("native", "pc")})
        continue
    for f in sorted(glob.glob(os.path.join(d, "native-*.perf"))):
        ph = os.path.basename(f)[len("native-"):-len(".perf")]
        show(f"{d} {ph}", {side: report(os.path.join(d, f"{side}-{ph}.perf")) for side in ("native", "pc")})
