# Sourced by the /init scripts (mkinitramfs puts it at /lib/count-mark.sh): the bracket around I/O
# that Portcullis' counters are read with (hyp/src/diag/counters.rs; parsed by scripts/lib/counters.py).
#
# count_mark NAME prints `COUNT-MARK: NAME`, then takes CPU1 offline and online again: at the PSCI
# CPU_OFF Portcullis (booted with `--hyp-args counters=cpu-off`) logs its `counters: at=cpu-off ...` line, cumulative since boot, which follows
# the mark on the console. Bracket I/O with NAME-start and NAME-end; a `null` bracket (null-start,
# then null-end, nothing between) measures the bracket itself, to subtract. Needs 2 CPUs. Natively (no Portcullis) nothing logs a line: harmless.
count_mark() {
    echo "COUNT-MARK: $1"
    echo 0 > /sys/devices/system/cpu/cpu1/online
    echo 1 > /sys/devices/system/cpu/cpu1/online
}
