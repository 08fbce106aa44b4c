#!/bin/sh
echo "LINUX-BENCH: init"
# /init of `scripts/bench --linux` (busybox sh); scripts/lib/linuxbench.py builds the images, boots
# them natively and under Portcullis and reads the lines this prints. The marker above is the first
# thing /init does: the harness timestamps it on the host (QEMU start -> /init).
# One script, two roles:
#   - first kernel: loads the disk modules, times O_DIRECT reads (busybox dd iflag=direct) of the
#     virtio-blk and the NVMe disk at 1 MiB and 4 KiB, in the boot's mode (iommu.strict=1: strict) and
#     then lazy (the disks' IOMMU groups switched to DMA-FQ at run time, which is what iommu.strict=0
#     gives at boot: the same flush-queue domain), prints one line per read phase, loads the capture
#     kernel (kexec -p, from the "media" disk) and crashes (sysrq c), printing `crashing` first;
#   - capture kernel (kdump.role=capture): prints `capture init` and powers off.
# Command-line options (first kernel):
#   bench.n1m=N      1 MiB reads per disk and mode (default 128)
#   bench.n4k=N      4 KiB reads per disk and mode (default 2048)
#   bench.nocrash=1  power off after the reads (the counting runs)
#   bench.count=1    bracket every read phase with `count_mark MODE-DISK-BS-start|end`
#                    (scripts/linux/count-mark.sh: Portcullis, booted with counters=cpu-off, logs its counters line at the CPU_OFF
#                    it makes), after a `null` bracket; needs 2 CPUs (the counting runs)
# Lines: `LINUX-BENCH: io MODE DISK BS start`, then `LINUX-BENCH: io MODE DISK BS end ns=NS bytes=B
# n=N` (NS from the kernel's monotonic clock, /proc/timer_list, around the dd alone).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export LD_LIBRARY_PATH=
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /tmp /run

M="LINUX-BENCH:"
say() { echo "$M $*"; }
off() { sync; poweroff -f; sleep 5; say "poweroff did not power off"; while :; do sleep 60; done; }

if grep -q 'kdump.role=capture' /proc/cmdline; then
    say "capture init"
    off
fi

# now_ns: the kernel's monotonic clock in ns (/proc/timer_list's `now at`), else /proc/uptime.
now_ns() {
    if [ -r /proc/timer_list ]; then
        awk '/^now at/ { print $3; exit }' /proc/timer_list
    else
        awk '{ printf "%d\n", $1 * 1000000000 }' /proc/uptime
    fi
}

n1m=128
n4k=2048
nocrash=0
count=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bench.n1m=*) n1m=${arg#*=} ;;
        bench.n4k=*) n4k=${arg#*=} ;;
        bench.nocrash=1) nocrash=1 ;;
        bench.count=1) count=1 ;;
    esac
done

while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "/lib/modules/$(uname -r)/$ko" 2>/dev/null || say "insmod $(basename "$ko") failed"
done < /etc/modules-load

# The disks: vda (virtio-blk, 00:01.0), nvme0n1 (NVMe, 00:02.0) and the media disk (serial "media").
VD=""
NV=""
MEDIA=""
t=0
while [ $t -lt 600 ]; do
    for b in /sys/block/vd* /sys/block/nvme*n*; do
        [ -e "$b" ] || continue
        d=${b##*/}
        case "$d" in
            vd*) if [ "$(cat $b/serial 2>/dev/null)" = media ]; then MEDIA=${MEDIA:-$d}; else VD=${VD:-$d}; fi ;;
            nvme*c*) ;;
            nvme*) NV=${NV:-$d} ;;
        esac
    done
    [ -n "$VD" ] && [ -n "$NV" ] && [ -n "$MEDIA" ] && break
    usleep 50000
    t=$((t + 1))
done
say "disks: virtio-blk $VD, nvme $NV, media $MEDIA"
[ -n "$VD" ] && [ -n "$NV" ] || { say "FAIL no disks"; off; }

# group_of DISK: the IOMMU group directory of the disk's PCI function (up its sysfs device path).
# An NVMe namespace's block device is, with Debian's NVME_MULTIPATH, the subsystem's head disk:
# its `device` is /sys/devices/virtual/nvme-subsystem/nvme-subsysN, whose controllers (nvmeM
# links there) are under the PCI function. Without a group: nothing, status 1 (the callers must
# check: an empty result would make "$g/type" the initramfs' own /type).
group_of() {
    for p in "$(readlink -f /sys/block/$1/device)" "$(readlink -f /sys/block/$1/device)"/nvme[0-9]*; do
        [ -e "$p" ] || continue
        p=$(readlink -f "$p")
        while [ -n "$p" ] && [ "$p" != / ]; do
            [ -e "$p/iommu_group" ] && { readlink -f "$p/iommu_group"; return 0; }
            p=${p%/*}
        done
    done
    return 1
}

# mark NAME: Portcullis' counters at this point (bench.count=1), else nothing.
mark() { :; }
if [ "$count" = 1 ]; then
    . /lib/count-mark.sh
    mark() { count_mark "$1"; }
    mark null-start
    mark null-end
fi

reads() {
    mode=$1
    for d in $VD $NV; do
        case "$d" in vd*) name=virtio-blk ;; *) name=nvme ;; esac
        for spec in 1048576:$n1m 4096:$n4k; do
            bs=${spec%:*}
            n=${spec#*:}
            mark "$mode-$name-$bs-start"
            say "io $mode $name $bs start"
            t0=$(now_ns)
            dd if=/dev/$d of=/dev/null bs=$bs count=$n iflag=direct 2>/dev/null || say "dd $d bs=$bs failed"
            t1=$(now_ns)
            say "io $mode $name $bs end ns=$((t1 - t0)) bytes=$((bs * n)) n=$n"
            mark "$mode-$name-$bs-end"
        done
    done
}

# domains: each disk's IOMMU domain type (DMA: strict, DMA-FQ: lazy), `none` without a group.
domains() {
    types=""
    for d in $VD $NV; do
        g=$(group_of $d) && types="$types $(cat "$g/type" 2>/dev/null)" || types="$types none"
    done
    say "domains:$types"
}
domains
reads strict
for d in $VD $NV; do
    if g=$(group_of $d); then
        echo DMA-FQ > "$g/type" 2>/dev/null || say "could not switch $d's group to DMA-FQ (failed)"
    else
        say "no IOMMU group for $d (failed)"
    fi
done
domains
reads lazy

if [ "$nocrash" = 1 ]; then say "done"; off; fi
mkdir -p /run/media
tar -xf /dev/$MEDIA -C /run/media || { say "FAIL media unreadable"; off; }
ccmd="console=ttyAMA0 earlycon maxcpus=1 nr_cpus=1 reset_devices panic=-1 kdump.role=capture cma=0"
if ! out=$(kexec -p /run/media/vmlinuz --initrd=/run/media/capture.cpio.gz --append="$ccmd" -i 2>&1); then
    echo "$out"
    say "FAIL kexec -p"
    off
fi
say "crashing"
echo c > /proc/sysrq-trigger
sleep 10
say "FAIL still alive after sysrq c"
off
