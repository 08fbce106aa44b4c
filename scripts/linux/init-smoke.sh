#!/bin/sh
# /init of the Linux smoke test (busybox sh): user space comes up, the modules in /etc/modules-load
# are loaded, the SMMU's kernel messages are shown, kexec is checked to run, and every block device
# among /dev/vda and /dev/nvme0n1 gets a pattern written and read back with O_DIRECT. Ends with
# `LINUX-SMOKE: PASS` or `LINUX-SMOKE: FAIL <reasons>` and powers off.
#
# Kernel command-line options it reads:
#   smoke.expect=vda,nvme0n1   devices that must appear (else FAIL); default: test what exists
#   smoke.wait=SECONDS         how long to wait for the expected devices (default 120)
#   smoke.mb=N                 MiB written per device (default 4)
#   smoke.shell=1              drop to a shell at the end instead of powering off
#   smoke.count=1              after the test, O_DIRECT reads of 1024 x 4 KiB and 4 x 1 MiB per device,
#                              each bracketed by `COUNT-MARK: <dev>-<size>-start|end` lines and a CPU1
#                              offline/online (with counters=cpu-off, which smoke passes then, Portcullis logs its `counters:` line at each CPU_OFF:
#                              hyp/src/diag/counters.rs); `null-start|end` brackets no I/O (the cost of
#                              the bracket itself). Needs 2 CPUs.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export LD_LIBRARY_PATH=

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts /tmp /run

up=$(cut -d' ' -f1 /proc/uptime)
echo "LINUX-SMOKE: userspace up $(uname -r) at ${up}s"

fails=""
fail() { fails="$fails $1"; echo "LINUX-SMOKE: check failed: $1"; }

expect=""
wait_s=120
mb=4
shell=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        smoke.expect=*) expect=$(echo "${arg#smoke.expect=}" | tr ',' ' ') ;;
        smoke.wait=*) wait_s=${arg#smoke.wait=} ;;
        smoke.mb=*) mb=${arg#smoke.mb=} ;;
        smoke.shell=1) shell=1 ;;
        smoke.count=1) count=1 ;;
    esac
done

# Modules, dependencies first (mkinitramfs resolved and ordered them).
if [ -f /etc/modules-load ]; then
    while read -r ko; do
        [ -n "$ko" ] || continue
        name=$(basename "$ko" .ko)
        if grep -q "^$(echo "$name" | tr '-' '_') " /proc/modules; then continue; fi
        if out=$(insmod "/lib/modules/$(uname -r)/$ko" 2>&1); then
            echo "LINUX-SMOKE: insmod $name"
        else
            echo "LINUX-SMOKE: insmod $name failed: $out"
        fi
    done < /etc/modules-load
fi

echo "LINUX-SMOKE: --- SMMU/IOMMU kernel messages"
dmesg | grep -i -E 'smmu|iommu' | sed 's/^/LINUX-SMOKE: dmesg: /'
echo "LINUX-SMOKE: ---"
for n in /proc/device-tree/*smmu* /proc/device-tree/*iommu*; do
    [ -e "$n" ] && echo "LINUX-SMOKE: dt node ${n#/proc/device-tree/}: compatible $(tr '\0' ' ' < "$n/compatible" 2>/dev/null)$([ -e "$n/status" ] && echo " status $(tr -d '\0' < "$n/status")")"
done
for n in /proc/device-tree/pcie@*; do
    [ -e "$n" ] || continue
    echo "LINUX-SMOKE: dt node ${n#/proc/device-tree/}: $([ -e "$n/iommu-map" ] && echo "iommu-map present" || echo "no iommu-map")"
done
for g in /sys/kernel/iommu_groups/*; do
    [ -d "$g/devices" ] && echo "LINUX-SMOKE: iommu group ${g##*/}: $(ls "$g/devices" | tr '\n' ' ')"
done

if [ -x /sbin/kexec ]; then
    if v=$(kexec --version 2>&1); then
        echo "LINUX-SMOKE: $v runs"
    else
        fail "kexec-does-not-run"
        echo "$v"
    fi
fi
[ -r /sys/kernel/kexec_crash_size ] && echo "LINUX-SMOKE: crash kernel region: $(cat /sys/kernel/kexec_crash_size) bytes"
# Where memory went: the tree's reserved-memory nodes, /proc/iomem's reservations, and (when the
# crash region could not be reserved) memblock's reserved ranges, to see what was in the way.
for n in /proc/device-tree/reserved-memory/*/; do
    [ -d "$n" ] || continue
    reg=$(hexdump -v -e '4/1 "%02x" " "' "$n/reg" 2>/dev/null)
    echo "LINUX-SMOKE: dt reserved-memory $(basename "$n"): reg <$reg>$([ -e "$n/no-map" ] && echo ' no-map')"
done
grep -i -E 'crash|reserved' /proc/iomem | sed 's/^/LINUX-SMOKE: iomem: /'
if [ "$(cat /sys/kernel/kexec_crash_size 2>/dev/null)" = 0 ]; then
    mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
    [ -r /sys/kernel/debug/memblock/reserved ] &&
        sed 's/^/LINUX-SMOKE: memblock reserved: /' /sys/kernel/debug/memblock/reserved
fi

# Wait for the expected devices (drivers probe asynchronously).
t=0
for d in $expect; do
    while [ ! -b "/dev/$d" ] && [ "$t" -lt "$wait_s" ]; do
        sleep 1
        t=$((t + 1))
    done
    if [ -b "/dev/$d" ]; then
        echo "LINUX-SMOKE: /dev/$d present at $(cut -d' ' -f1 /proc/uptime)s"
    else
        fail "no-/dev/$d"
    fi
done

# Did the virtio devices negotiate VIRTIO_F_ACCESS_PLATFORM (bit 33: DMA through the platform's
# IOMMU / DMA API), as iommu_platform=on asks?
for v in /sys/bus/virtio/devices/virtio*; do
    [ -r "$v/features" ] || continue
    bit=$(cut -c34 "$v/features")
    echo "LINUX-SMOKE: ${v##*/} ($(basename "$(readlink "$v/driver")" 2>/dev/null)): VIRTIO_F_ACCESS_PLATFORM $([ "$bit" = 1 ] && echo negotiated || echo off)"
done

# pattern DEV: write mb MiB of random data 1 MiB into DEV with O_DIRECT, read back with O_DIRECT.
pattern() {
    dev=$1
    name=${dev#/dev/}
    dd if=/dev/urandom of=/tmp/pat.$name bs=1M count="$mb" 2>/dev/null
    want=$(md5sum < /tmp/pat.$name | cut -d' ' -f1)
    if ! dd if=/tmp/pat.$name of="$dev" bs=64k seek=16 oflag=direct conv=fsync 2>/tmp/dd.err; then
        fail "write-$name"; cat /tmp/dd.err; return
    fi
    # Read back through a fresh O_DIRECT read (no page cache), twice as large a block size.
    if ! dd if="$dev" of=/tmp/back.$name bs=128k skip=8 count=$((mb * 8)) iflag=direct 2>/tmp/dd.err; then
        fail "read-$name"; cat /tmp/dd.err; return
    fi
    got=$(md5sum < /tmp/back.$name | cut -d' ' -f1)
    if [ "$want" = "$got" ]; then
        echo "LINUX-SMOKE: $dev: ${mb} MiB written and read back with O_DIRECT, md5 $got"
    else
        fail "mismatch-$name"
        echo "LINUX-SMOKE: $dev: wrote md5 $want, read back md5 $got"
    fi
    rm -f /tmp/pat.$name /tmp/back.$name
}

tested=0
for d in /dev/vda /dev/nvme0n1; do
    if [ -b "$d" ]; then
        pattern "$d"
        tested=$((tested + 1))
    fi
done
echo "LINUX-SMOKE: $tested block device(s) tested"

# Portcullis' counters around known I/O (smoke.count=1).
if [ "$count" = 1 ]; then
    . /lib/count-mark.sh
    count_mark null-start
    count_mark null-end
    for d in /dev/vda /dev/nvme0n1; do
        [ -b "$d" ] || continue
        n=$(basename "$d")
        count_mark "$n-4k-start"
        dd if="$d" of=/dev/null bs=4k count=1024 iflag=direct 2>/dev/null
        count_mark "$n-4k-end"
        count_mark "$n-1m-start"
        dd if="$d" of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null
        count_mark "$n-1m-end"
    done
fi

if [ -z "$fails" ]; then
    echo "LINUX-SMOKE: PASS"
else
    echo "LINUX-SMOKE: FAIL$fails"
fi
echo "LINUX-SMOKE: done at $(cut -d' ' -f1 /proc/uptime)s"
if [ "$shell" = 1 ]; then
    setsid cttyhack sh
fi
sync
poweroff -f
sleep 5
echo "LINUX-SMOKE: poweroff did not power off"
while :; do sleep 60; done
