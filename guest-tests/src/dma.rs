//! What the DMA scenarios share: RAM buffers a device may write, recognisable byte patterns, PCI
//! discovery, and the checks that a transfer the SMMU should refuse was refused and recorded.
//!
//! The payload runs with its MMU off, so its memory is Device-nGnRnE to the CPU: uncached, nothing
//! to clean or invalidate around a DMA. Buffers a device writes are still read with volatile loads,
//! so the compiler cannot assume it knows their contents.

use crate::dt::{PciHost, Reg, Tree};
use crate::edu::{BUFFER_SIZE, Direction, Edu};
use crate::hooks::{self, Canary, F_TRANSLATION, Faults};
use crate::pci::{self, Topology};
use crate::rt::{Context, image_extent};
use crate::{Failure, check, println};
use core::cell::UnsafeCell;

/// A page-aligned RAM buffer for DMA.
#[repr(C, align(4096))]
pub struct DmaBuffer<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the buffers are only touched by the boot CPU (and devices); every access is volatile.
unsafe impl<const N: usize> Sync for DmaBuffer<N> {}

impl<const N: usize> core::fmt::Debug for DmaBuffer<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(f, "DmaBuffer({:#x}, {N:#x})", self.addr())
    }
}

impl<const N: usize> Default for DmaBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> DmaBuffer<N> {
    pub const fn new() -> Self {
        DmaBuffer(UnsafeCell::new([0; N]))
    }

    /// Its physical address (= its address: the MMU is off) and so its bus address for a device
    /// whose DMA is translated by stage 2 only.
    pub fn addr(&self) -> u64 {
        self.0.get() as u64
    }

    pub fn get(&self, i: usize) -> u8 {
        assert!(i < N, "DmaBuffer index {i} out of {N}");
        // SAFETY: in bounds; the buffer is plain memory that only this CPU and devices touch.
        unsafe { (self.0.get() as *const u8).add(i).read_volatile() }
    }

    pub fn set(&self, i: usize, v: u8) {
        assert!(i < N, "DmaBuffer index {i} out of {N}");
        // SAFETY: as in `get`.
        unsafe { (self.0.get() as *mut u8).add(i).write_volatile(v) }
    }

    pub fn fill(&self, f: impl Fn(usize) -> u8) {
        (0..N).for_each(|i| self.set(i, f(i)));
    }

    /// The first index in `range` whose byte is not `want(i)`: (index, got, want).
    pub fn mismatch(
        &self,
        range: core::ops::Range<usize>,
        want: impl Fn(usize) -> u8,
    ) -> Option<(usize, u8, u8)> {
        range
            .map(|i| (i, self.get(i), want(i)))
            .find(|&(_, got, want)| got != want)
    }
}

/// A byte pattern for data a device carries: `seed` tells transfers apart, every byte is in
/// 0x01..=0x7f (never zero, never what [`memory_pattern`] writes).
pub fn device_pattern(seed: u8, i: usize) -> u8 {
    1 + ((i.wrapping_mul(7) + usize::from(seed).wrapping_mul(29) + (i >> 7)) % 0x7f) as u8
}

/// A byte pattern for memory the CPU fills and a device must not touch, from the byte's address:
/// every byte is in 0x80..=0xff, so it never matches [`device_pattern`] or zero.
pub fn memory_pattern(addr: u64) -> u8 {
    0x80 | ((addr ^ (addr >> 7) ^ (addr >> 13) ^ 0x35) & 0x7f) as u8
}

/// Fills `[base, base + len)` with [`memory_pattern`] through the CPU.
///
/// # Safety
/// The range must be host RAM the payload may write and that nothing else uses.
pub unsafe fn fill_memory(base: u64, len: u64) {
    for a in base..base + len {
        // SAFETY: per the caller's contract.
        unsafe { (a as *mut u8).write_volatile(memory_pattern(a)) };
    }
}

/// The first byte of `[base, base + len)` that no longer holds [`memory_pattern`]: (address, got).
///
/// # Safety
/// The range must be host RAM the payload may read.
pub unsafe fn memory_changed(base: u64, len: u64) -> Option<(u64, u8)> {
    (base..base + len).find_map(|a| {
        // SAFETY: per the caller's contract.
        let got = unsafe { (a as *const u8).read_volatile() };
        (got != memory_pattern(a)).then_some((a, got))
    })
}

/// The PCI host from the tree and its enumeration, printed.
pub fn discover(tree: &Tree) -> Result<(PciHost, Topology), Failure> {
    let host = tree
        .pci_host()
        .map_err(|e| Failure::new(format_args!("PCI host: {e}")))?;
    println!(
        "PCI host: ECAM {:#x}+{:#x}, buses {:#x}..={:#x}",
        host.ecam.base, host.ecam.size, host.bus_start, host.bus_end
    );
    for (name, w) in [("mem32", host.mem32), ("mem64", host.mem64)] {
        if let Some(w) = w {
            println!(
                "  {name} window: PCI {:#x}+{:#x} at CPU {:#x}",
                w.pci_base, w.size, w.cpu_base
            );
        }
    }
    for e in host.iommu_map() {
        println!(
            "  iommu-map: RID {:#x}+{:#x} -> IOMMU phandle {:#x} SID {:#x}",
            e.rid_base, e.length, e.iommu, e.sid_base
        );
    }
    let topology = pci::scan(&host).map_err(|e| Failure::new(format_args!("PCI scan: {e}")))?;
    for f in topology.functions() {
        let kind = if f.is_bridge() { "bridge" } else { "endpoint" };
        print_function(f, kind);
    }
    Ok((host, topology))
}

fn print_function(f: &pci::Function, kind: &str) {
    match f.parent {
        Some(p) => println!("  {f} class {:06x} {kind}, behind {p}", f.class),
        None => println!("  {f} class {:06x} {kind}", f.class),
    }
    for (i, b) in f.bars.iter().enumerate() {
        if let Some(b) = b {
            println!(
                "    BAR{i}: {:#x}+{:#x}{}",
                b.cpu_addr,
                b.size,
                if b.is_64bit { " (64-bit)" } else { "" }
            );
        }
    }
}

/// The StreamID of `edu`, which the confinement checks need: from the PCI host's `iommu-map`, whose
/// entry must name the `arm,smmu-v3` node.
///
/// While Portcullis hides the SMMU from the host it removes `iommu-map` (and disables the SMMU
/// node), so the host's tree no longer says. Then the StreamID is taken to be the RID, which is how
/// QEMU's virt machine maps them (`iommu-map = <0 &smmu 0 0x10000>`), and the assumption is printed.
/// A wrong assumption cannot make a check pass: the fault records of a StreamID that is not the
/// device's would not grow.
pub fn stream_id_of(edu: &Edu, host: &PciHost, tree: &Tree) -> Result<u32, Failure> {
    let f = &edu.function;
    if host.iommu_map().is_empty() {
        println!(
            "edu {}: the host tree has no iommu-map (SMMU hidden from the host): assuming StreamID = RID {:#x}",
            f.bdf, f.rid
        );
        return Ok(u32::from(f.rid));
    }
    let mapped = host.stream_id(f.rid);
    check!(
        mapped.is_some(),
        "edu {} (RID {:#06x}) is not covered by the PCI host's iommu-map",
        f.bdf,
        f.rid
    );
    let (iommu, sid) = mapped.unwrap_or((0, 0));
    let smmu = tree.smmu_phandle();
    check!(
        smmu == Some(iommu),
        "edu {}'s iommu-map entry names phandle {iommu:#x}, the arm,smmu-v3 node's is {smmu:?}",
        f.bdf
    );
    Ok(sid)
}

/// Fails with `what` and the driver's error.
pub fn dma_failed(what: core::fmt::Arguments, e: crate::edu::EduError) -> Failure {
    Failure::new(format_args!("{what}: {e}"))
}

/// Two RAM buffers to drive an edu's buffer with: a source for the patterns and a readback area.
#[derive(Debug)]
pub struct Staging<'a> {
    pub source: &'a DmaBuffer<BUFFER_SIZE>,
    pub readback: &'a DmaBuffer<BUFFER_SIZE>,
}

/// What the readback area holds before a device writes it: never a [`device_pattern`] byte, never 0.
pub const READBACK_FILL: u8 = 0xee;

impl Staging<'_> {
    /// Loads the whole of `edu`'s buffer with `device_pattern(seed)` from RAM and reads it back:
    /// the positive control that the device's DMA to and from ordinary host RAM works.
    pub fn load(&self, edu: &Edu, seed: u8) -> Result<(), Failure> {
        let bdf = edu.function.bdf;
        self.source.fill(|i| device_pattern(seed, i));
        edu.to_device(self.source.addr(), BUFFER_SIZE)
            .map_err(|e| dma_failed(format_args!("edu {bdf}: loading its buffer"), e))?;
        self.read(edu, BUFFER_SIZE)?;
        let bad = self
            .readback
            .mismatch(0..BUFFER_SIZE, |i| device_pattern(seed, i));
        check!(
            bad.is_none(),
            "edu {bdf}: DMA with ordinary RAM at {:#x}/{:#x} is broken: buffer byte {:#x} reads back {:#x}, want {:#x}",
            self.source.addr(),
            self.readback.addr(),
            bad.map_or(0, |b| b.0),
            bad.map_or(0, |b| b.1),
            bad.map_or(0, |b| b.2)
        );
        Ok(())
    }

    /// Copies the first `len` bytes of `edu`'s buffer to the readback area (pre-filled with
    /// [`READBACK_FILL`]).
    pub fn read(&self, edu: &Edu, len: usize) -> Result<(), Failure> {
        self.readback.fill(|_| READBACK_FILL);
        edu.from_device(self.readback.addr(), len).map_err(|e| {
            dma_failed(
                format_args!("edu {}: reading its buffer back", edu.function.bdf),
                e,
            )
        })
    }

    /// After a DMA read (RAM -> device) of `len` bytes that the SMMU should have refused, with the
    /// buffer loaded with `device_pattern(seed)` before: the device got no data. QEMU's edu still
    /// completes the transfer; its buffer range then holds either the old pattern (a device that
    /// drops the refused read) or zeros (what QEMU 10 stores: its unassigned-memory read returns 0).
    /// Anything else came from the target. `target_bytes`, when the target's contents are known,
    /// names a leak precisely. Returns "unchanged" or "zeroed".
    pub fn expect_no_data(
        &self,
        edu: &Edu,
        seed: u8,
        len: usize,
        what: core::fmt::Arguments,
        target_bytes: Option<&dyn Fn(usize) -> u8>,
    ) -> Result<&'static str, Failure> {
        self.read(edu, len)?;
        if self
            .readback
            .mismatch(0..len, |i| device_pattern(seed, i))
            .is_none()
        {
            return Ok("unchanged");
        }
        if self.readback.mismatch(0..len, |_| 0).is_none() {
            return Ok("zeroed");
        }
        let bdf = edu.function.bdf;
        if let Some(t) = target_bytes {
            let copied = self.readback.mismatch(0..len, t).is_none();
            check!(
                !copied,
                "a DMA read of {len:#x} bytes by edu {bdf} from {what} got through: its buffer holds the target's bytes"
            );
        }
        let (i, got, _) = self
            .readback
            .mismatch(0..len, |i| device_pattern(seed, i))
            .unwrap_or((0, 0, 0));
        Err(Failure::new(format_args!(
            "a DMA read of {len:#x} bytes by edu {bdf} from {what} brought data: buffer byte {i:#x} = {got:#x}, neither the old pattern {:#x} nor 0",
            device_pattern(seed, i)
        )))
    }
}

/// Portcullis' own memory (the `/reserved-memory` node with compatible "portcullis,hypervisor").
pub fn hypervisor_region(tree: &Tree) -> Result<Reg, Failure> {
    let hyp = tree.reserved_with_compatible("portcullis,hypervisor");
    hyp.filter(|r| r.size > 0).ok_or_else(|| {
        Failure::new(format_args!(
            "no /reserved-memory node with compatible portcullis,hypervisor: is this running under Portcullis?"
        ))
    })
}

/// The canary area `PORTCULLIS_TEST_CANARY` names, checked to lie inside Portcullis' memory.
pub fn canary(hyp: Reg) -> Result<Canary, Failure> {
    let c =
        hooks::canary().map_err(|e| Failure::new(format_args!("PORTCULLIS_TEST_CANARY: {e}")))?;
    let area = Reg {
        base: c.base,
        size: c.size,
    };
    check!(
        c.size > 0
            && c.base.checked_add(c.size).is_some()
            && hyp.base <= c.base
            && area.end() <= hyp.end(),
        "the canary {:#x}+{:#x} is not inside Portcullis' memory {:#x}..{:#x}",
        c.base,
        c.size,
        hyp.base,
        hyp.end()
    );
    Ok(c)
}

/// Up to `N` edu devices with their StreamIDs, and how many there are.
pub type Edus<const N: usize> = ([Option<(Edu, u32)>; N], usize);

/// The edu devices in scan order (at most `N`), enabled and checked alive, with their StreamIDs.
pub fn edus<const N: usize>(
    host: &PciHost,
    topology: &Topology,
    tree: &Tree,
) -> Result<Edus<N>, Failure> {
    let mut out = [const { None }; N];
    let mut n = 0;
    for f in topology
        .find(crate::edu::VENDOR_ID, crate::edu::DEVICE_ID)
        .take(N)
    {
        let edu = Edu::new(f).map_err(|e| dma_failed(format_args!("edu {}", f.bdf), e))?;
        let sid = stream_id_of(&edu, host, tree)?;
        println!(
            "edu {} (RID {:#06x}): StreamID {sid:#x}, identification {:#x}",
            f.bdf,
            f.rid,
            edu.identification()
        );
        out[n] = Some((edu, sid));
        n += 1;
    }
    Ok((out, n))
}

/// The one edu device the scenario was started with (`-device edu,...`), enabled and checked
/// alive, with its StreamID.
pub fn one_edu(host: &PciHost, topology: &Topology, tree: &Tree) -> Result<(Edu, u32), Failure> {
    let (edus, n) = edus::<1>(host, topology, tree)?;
    check!(
        n == 1,
        "no edu (1234:11e8) on the PCI bus: run with -device edu,dma_mask=0xffffffffffffffff"
    );
    let [Some(found)] = edus else {
        return Err(Failure::new(format_args!("edu list is inconsistent")));
    };
    Ok(found)
}

/// What Portcullis has recorded for the StreamID so far (taken before a transfer that should be
/// refused; the error is only reported once the transfer has been checked for landing).
pub fn faults_now(sid: u32) -> Result<Faults, Failure> {
    hooks::faults(sid)
        .map_err(|e| Failure::new(format_args!("PORTCULLIS_TEST_FAULTS({sid:#x}): {e}")))
}

/// After a refused transfer of `len` bytes at `target` by the device with StreamID `sid`: a new
/// F_TRANSLATION event for that StreamID, naming an address inside the target range (exactly
/// `target` when `exact`: a transfer small enough to be a single transaction) and the right
/// direction. `before` is what [`faults_now`] said before the transfer.
///
/// A refused transfer may be recorded more than once: QEMU's memory core retries an access the
/// IOMMU refused in steps of at most 4 bytes, each translated (and refused, and recorded) anew, so
/// the count may grow by up to `len / 4` and the latest event names the last step, not `target`.
pub fn expect_fault(
    sid: u32,
    before: Result<Faults, Failure>,
    target: u64,
    len: usize,
    direction: Direction,
    exact: bool,
    what: core::fmt::Arguments,
) -> Result<Faults, Failure> {
    let before = before?;
    let after = faults_now(sid)?;
    let end = target + len as u64;
    check!(
        after.count > before.count,
        "no fault event for SID {sid:#x} after its {direction} DMA of {len:#x} bytes at {target:#x} ({what}) was refused: count stays {}",
        after.count
    );
    check!(
        after.last_addr >= target && after.last_addr < end,
        "the latest fault for SID {sid:#x} names address {:#x}, not inside the refused {direction} DMA at {target:#x}..{end:#x} ({what})",
        after.last_addr
    );
    check!(
        !exact || after.last_addr == target,
        "the fault for SID {sid:#x}'s single {len}-byte {direction} DMA names {:#x}, want exactly {target:#x} ({what})",
        after.last_addr
    );
    check!(
        after.last_type == F_TRANSLATION,
        "the fault for SID {sid:#x}'s {direction} DMA at {target:#x} ({what}) is event {:#x} ({}), want F_TRANSLATION (0x10)",
        after.last_type,
        hooks::event_name(after.last_type)
    );
    let write = direction == Direction::FromDevice;
    check!(
        after.last_was_write == write,
        "the fault for SID {sid:#x}'s {direction} DMA at {target:#x} ({what}) is recorded as a {}, want a {}",
        if after.last_was_write {
            "write"
        } else {
            "read"
        },
        if write { "write" } else { "read" }
    );
    Ok(after)
}

/// A crash-region target is filled with [`memory_pattern`] this far on each side too.
const GUARD: u64 = 64;

/// A transfer this small is a single transaction: its fault must name the target exactly.
pub const PROBE: usize = 4;

/// The crash region `crashkernel=SIZE@BASE` names, checked to be host RAM the payload may fill: it
/// holds neither Portcullis, nor the payload, nor the payload's device tree.
pub fn crash_region(ctx: &Context, hyp: Reg) -> Result<Reg, Failure> {
    placed_crash_region(ctx, hyp, CrashUse::DmaTarget)
}

/// What a scenario does with the crash region, and so what [`placed_crash_region`] checks beyond
/// its being inside a memory node and clear of Portcullis and the device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashUse {
    /// Filled with patterns as a DMA target: room for the tests, and clear of the payload.
    DmaTarget,
    /// Where a payload copies itself and runs (the fence scenarios' B).
    PayloadHome,
}

/// The crash region `crashkernel=SIZE@BASE` names, inside a memory node, clear of Portcullis
/// (`hyp`) and the device tree, and as `usage` needs.
pub fn placed_crash_region(ctx: &Context, hyp: Reg, usage: CrashUse) -> Result<Reg, Failure> {
    let crash = match ctx.dtb.crash_region() {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(Failure::new(format_args!(
                "no crashkernel= in bootargs: run with --append crashkernel=32M"
            )));
        }
        Err(ck) => {
            return Err(Failure::new(format_args!(
                "crashkernel={ck} is not SIZE@BASE (Portcullis places it)"
            )));
        }
    };
    if usage == CrashUse::DmaTarget {
        check!(
            crash.size >= 4 * BUFFER_SIZE as u64,
            "the crash region {:#x}+{:#x} is too small to test (run with crashkernel=32M)",
            crash.base,
            crash.size
        );
    }
    check!(
        ctx.dtb
            .memory()
            .any(|m| m.base <= crash.base && crash.end() <= m.end()),
        "the crash region {:#x}..{:#x} is not inside a memory node",
        crash.base,
        crash.end()
    );
    check!(
        !crash.overlaps(&hyp),
        "the crash region overlaps Portcullis' memory"
    );
    if usage == CrashUse::DmaTarget {
        let (start, end) = image_extent();
        let image = Reg {
            base: start,
            size: end - start,
        };
        check!(
            !crash.overlaps(&image),
            "the crash region overlaps the payload at {start:#x}..{end:#x}"
        );
    }
    let dtb = Reg {
        base: ctx.dtb_addr,
        size: ctx.dtb.total_size(),
    };
    check!(
        !crash.overlaps(&dtb),
        "the crash region overlaps the device tree at {:#x}",
        ctx.dtb_addr
    );
    Ok(crash)
}

/// A device whose transfers into forbidden memory are tried, and a bystander device (if any) whose
/// fault record must not move while they are refused.
#[derive(Debug)]
pub struct Subject<'a> {
    pub edu: &'a Edu,
    pub sid: u32,
    pub staging: &'a Staging<'a>,
    pub bystander: Option<(&'a Edu, u32)>,
}

impl Subject<'_> {
    fn bdf(&self) -> pci::Bdf {
        self.edu.function.bdf
    }

    fn bystander_count(&self) -> Result<u64, Failure> {
        match self.bystander {
            Some((_, sid)) => faults_now(sid).map(|f| f.count),
            None => Ok(0),
        }
    }

    /// Runs a transfer that must be refused: loads the device's buffer with `seed`'s pattern,
    /// notes the fault counts, then starts the DMA (`what` names it if the engine fails). The
    /// counts are kept unchecked until [`Self::expect_recorded`], which reports a hook failure.
    fn attempt_refused(
        &self,
        direction: Direction,
        target: u64,
        len: usize,
        seed: u8,
        what: core::fmt::Arguments,
    ) -> Result<FaultsBefore, Failure> {
        self.staging.load(self.edu, seed)?;
        let before = FaultsBefore {
            subject: faults_now(self.sid),
            bystander: self.bystander_count(),
        };
        match direction {
            Direction::FromDevice => self.edu.from_device(target, len),
            Direction::ToDevice => self.edu.to_device(target, len),
        }
        .map_err(|e| dma_failed(what, e))?;
        Ok(before)
    }

    /// The refused transfer was recorded for this device's StreamID, and not for the bystander's.
    fn expect_recorded(
        &self,
        before: FaultsBefore,
        target: u64,
        len: usize,
        direction: Direction,
        what: core::fmt::Arguments,
    ) -> Result<(), Failure> {
        expect_fault(
            self.sid,
            before.subject,
            target,
            len,
            direction,
            len == PROBE,
            what,
        )?;
        if let Some((other, sid)) = self.bystander {
            let (was, now) = (before.bystander?, self.bystander_count()?);
            check!(
                was == now,
                "edu {}'s refused {direction} DMA at {target:#x} ({what}) was also recorded against edu {}'s SID {sid:#x} (count {was} -> {now})",
                self.bdf(),
                other.function.bdf
            );
        }
        Ok(())
    }

    /// A device -> RAM transfer into the crash region: the bytes the CPU put there (and around
    /// there) stay, and the refusal is recorded.
    pub fn refused_write_to_crash(
        &self,
        crash: Reg,
        target: u64,
        len: usize,
        seed: u8,
    ) -> Result<(), Failure> {
        let (start, size) = guarded(crash, target, len);
        // SAFETY: inside the crash region, which `crash_region` checked is host RAM holding neither
        // Portcullis, nor the payload, nor its tree; nothing else runs.
        unsafe { fill_memory(start, size) };
        let before = self.attempt_refused(
            Direction::FromDevice,
            target,
            len,
            seed,
            format_args!("device->RAM DMA to the crash region at {target:#x}"),
        )?;
        // SAFETY: as above.
        if let Some((addr, got)) = unsafe { memory_changed(start, size) } {
            return Err(Failure::new(format_args!(
                "a device->RAM DMA of {len:#x} bytes by edu {} (SID {:#x}) to the crash region at {target:#x} landed: byte {addr:#x} is now {got:#x}, was {:#x}",
                self.bdf(),
                self.sid,
                memory_pattern(addr)
            )));
        }
        self.expect_recorded(
            before,
            target,
            len,
            Direction::FromDevice,
            format_args!("crash region"),
        )
    }

    /// A RAM -> device transfer from the crash region: none of what the CPU put there reaches the
    /// device, and the refusal is recorded.
    pub fn refused_read_from_crash(
        &self,
        crash: Reg,
        target: u64,
        len: usize,
        seed: u8,
    ) -> Result<(), Failure> {
        let (start, size) = guarded(crash, target, len);
        // SAFETY: as in `refused_write_to_crash`.
        unsafe { fill_memory(start, size) };
        let before = self.attempt_refused(
            Direction::ToDevice,
            target,
            len,
            seed,
            format_args!("RAM->device DMA from the crash region at {target:#x}"),
        )?;
        let leaked = |i: usize| memory_pattern(target + i as u64);
        let what = format_args!("the crash region at {target:#x}");
        let how = self
            .staging
            .expect_no_data(self.edu, seed, len, what, Some(&leaked))?;
        // SAFETY: as above.
        let changed = unsafe { memory_changed(start, size) };
        check!(
            changed.is_none(),
            "a refused DMA read from the crash region changed it at {:#x}",
            changed.map_or(0, |c| c.0)
        );
        self.expect_recorded(
            before,
            target,
            len,
            Direction::ToDevice,
            format_args!("crash region"),
        )?;
        println!(
            "  edu {}: read of {len:#x} bytes from {target:#x} refused, device buffer {how}",
            self.bdf()
        );
        Ok(())
    }

    /// A device -> RAM transfer into Portcullis' canary: its checksum does not move, and the
    /// refusal is recorded.
    pub fn refused_write_to_canary(
        &self,
        canary: &Canary,
        target: u64,
        len: usize,
        seed: u8,
    ) -> Result<(), Failure> {
        let before = self.attempt_refused(
            Direction::FromDevice,
            target,
            len,
            seed,
            format_args!("device->RAM DMA to Portcullis' canary at {target:#x}"),
        )?;
        let now = canary_checksum()?;
        check!(
            now == canary.checksum,
            "a device->RAM DMA of {len:#x} bytes by edu {} (SID {:#x}) to Portcullis' memory at {target:#x} landed: the canary's checksum went from {:#x} to {now:#x}",
            self.bdf(),
            self.sid,
            canary.checksum
        );
        self.expect_recorded(
            before,
            target,
            len,
            Direction::FromDevice,
            format_args!("Portcullis' canary"),
        )
    }

    /// A RAM -> device transfer from Portcullis' canary: the device gets none of it (the payload
    /// cannot know the canary's bytes, so the buffer must be unchanged or zeroed), and the refusal
    /// is recorded.
    pub fn refused_read_from_canary(
        &self,
        canary: &Canary,
        target: u64,
        len: usize,
        seed: u8,
    ) -> Result<(), Failure> {
        let before = self.attempt_refused(
            Direction::ToDevice,
            target,
            len,
            seed,
            format_args!("RAM->device DMA from Portcullis' canary at {target:#x}"),
        )?;
        let what = format_args!("Portcullis' memory at {target:#x}");
        let how = self
            .staging
            .expect_no_data(self.edu, seed, len, what, None)?;
        let now = canary_checksum()?;
        check!(
            now == canary.checksum,
            "the canary's checksum changed after a DMA read from it: {:#x} -> {now:#x}",
            canary.checksum
        );
        self.expect_recorded(
            before,
            target,
            len,
            Direction::ToDevice,
            format_args!("Portcullis' canary"),
        )?;
        println!(
            "  edu {}: read of {len:#x} bytes from the canary refused, device buffer {how}",
            self.bdf()
        );
        Ok(())
    }
}

/// The fault counts taken just before a transfer that must be refused: the subject's, and the
/// bystander's (0 without one). A hook failure here is reported when the counts are compared.
#[derive(Debug)]
struct FaultsBefore {
    subject: Result<Faults, Failure>,
    bystander: Result<u64, Failure>,
}

/// `[target - GUARD, target + len + GUARD)`, clipped to the crash region: (start, size).
fn guarded(crash: Reg, target: u64, len: usize) -> (u64, u64) {
    let start = target.saturating_sub(GUARD).max(crash.base);
    let end = (target + len as u64 + GUARD).min(crash.end());
    (start, end - start)
}

fn canary_checksum() -> Result<u64, Failure> {
    hooks::canary()
        .map(|c| c.checksum)
        .map_err(|e| Failure::new(format_args!("PORTCULLIS_TEST_CANARY: {e}")))
}
