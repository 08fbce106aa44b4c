//! `pcscan FILE PREFIX [MAXLEN]`: every occurrence of PREFIX in FILE, with the printable ASCII
//! bytes that follow it (at most MAXLEN in all, default 96), one per line on standard output.
//!
//! The kdump test's capture kernel looks for the NIC flood's frames (`PCNIC-PRE <token> seq=N`,
//! `PCNIC-POST ...`) in the whole of `/proc/vmcore` (hundreds of MiB). Busybox `strings | grep`
//! takes 50 s and more for that under QEMU TCG; reading the file takes 2.5 s. This does the search
//! at about the speed of reading: eight bytes at a time for the prefix's first byte.
//!
//! A static arm64 Linux program without libc: built for `aarch64-unknown-none` (what the project
//! already has), entered at `_start`, talking to the kernel with raw system calls. Exit status 0,
//! 1 for a usage error, 2 when FILE cannot be opened or read.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

const SYS_OPENAT: usize = 56;
const SYS_READ: usize = 63;
const SYS_WRITE: usize = 64;
const SYS_EXIT_GROUP: usize = 94;
const AT_FDCWD: isize = -100;

/// Bytes read per `read()`.
const CHUNK: usize = 1 << 20;
/// The longest match: what is kept from one chunk to the next so that none is cut in two.
const MAX_MATCH: usize = pcscan::MAX_MATCH;

static mut INPUT: [u8; CHUNK + MAX_MATCH] = [0; CHUNK + MAX_MATCH];
static mut OUTPUT: [u8; 1 << 16] = [0; 1 << 16];

global_asm!(
    ".globl _start",
    "_start:",
    "mov x0, sp",
    "bl pcscan_start",
    "brk #0",
);

/// # Safety
/// Raw system call with up to four arguments; the caller passes what the call expects.
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the Linux arm64 system call convention (number in x8, arguments in x0-x3, result
    // in x0); the kernel preserves every other register.
    unsafe {
        asm!("svc #0", in("x8") n, inlateout("x0") a => ret, in("x1") b, in("x2") c, in("x3") d,
             options(nostack));
    }
    ret
}

fn exit(code: usize) -> ! {
    // SAFETY: exit_group takes the status and does not return.
    unsafe { syscall4(SYS_EXIT_GROUP, code, 0, 0, 0) };
    loop {
        core::hint::spin_loop();
    }
}

fn write_all(fd: usize, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid buffer of that length for the duration of the call.
        let n = unsafe { syscall4(SYS_WRITE, fd, bytes.as_ptr() as usize, bytes.len(), 0) };
        if n <= 0 {
            exit(2);
        }
        bytes = &bytes[n as usize..];
    }
}

fn fail(code: usize, parts: &[&[u8]]) -> ! {
    for p in parts {
        write_all(2, p);
    }
    write_all(2, b"\n");
    exit(code)
}

/// A NUL-terminated C string as a byte slice (without the NUL).
///
/// # Safety
/// `p` points to a NUL-terminated string that stays valid and unchanged.
unsafe fn c_str<'a>(p: *const u8) -> &'a [u8] {
    let mut n = 0;
    // SAFETY: the caller's contract: every byte up to the NUL is readable.
    while unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    // SAFETY: the `n` bytes before the NUL are readable and not changed while in use.
    unsafe { core::slice::from_raw_parts(p, n) }
}

fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 6 {
        return None;
    }
    s.iter().try_fold(0usize, |v, &b| {
        b.is_ascii_digit().then(|| v * 10 + usize::from(b - b'0'))
    })
}

struct Out {
    buf: &'static mut [u8],
    len: usize,
}

impl pcscan::Sink for Out {
    fn found(&mut self, line: &[u8]) {
        if self.len + line.len() + 1 > self.buf.len() {
            self.flush();
        }
        self.buf[self.len..self.len + line.len()].copy_from_slice(line);
        self.buf[self.len + line.len()] = b'\n';
        self.len += line.len() + 1;
    }
}

impl Out {
    fn flush(&mut self) {
        write_all(1, &self.buf[..self.len]);
        self.len = 0;
    }
}

/// The entry from `_start`, with the initial stack pointer (argc, argv...).
///
/// # Safety
/// Called once, from `_start`, with the stack the kernel set up.
#[unsafe(no_mangle)]
unsafe extern "C" fn pcscan_start(sp: *const usize) -> ! {
    // SAFETY: the kernel's initial stack: argc, then argc pointers to NUL-terminated strings.
    let argc = unsafe { *sp };
    // SAFETY: as above; index < argc.
    let arg = |i: usize| unsafe { c_str(*sp.add(1 + i) as *const u8) };
    if !(3..=4).contains(&argc) {
        fail(1, &[b"usage: pcscan FILE PREFIX [MAXLEN]"]);
    }
    let path = arg(1);
    let prefix = arg(2);
    let max_len = if argc == 4 {
        parse_decimal(arg(3))
    } else {
        Some(96)
    };
    let max_len = match max_len {
        Some(n) if n >= prefix.len() && n <= MAX_MATCH && !prefix.is_empty() => n,
        _ => fail(
            1,
            &[b"pcscan: PREFIX must be 1 to MAXLEN (at most 256) bytes"],
        ),
    };
    // SAFETY: `path` came from argv: NUL-terminated right after its last byte.
    let fd = unsafe { syscall4(SYS_OPENAT, AT_FDCWD as usize, path.as_ptr() as usize, 0, 0) };
    if fd < 0 {
        fail(2, &[b"pcscan: cannot open ", path]);
    }
    // SAFETY: single-threaded program; these are the only references to the two buffers.
    let (input, output) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(INPUT),
            &mut *core::ptr::addr_of_mut!(OUTPUT),
        )
    };
    let mut out = Out {
        buf: output,
        len: 0,
    };
    let mut have = 0; // bytes in `input`
    loop {
        // SAFETY: reads into the free tail of `input`, which is valid for that length.
        let n = unsafe {
            syscall4(
                SYS_READ,
                fd as usize,
                input.as_mut_ptr() as usize + have,
                input.len() - have,
                0,
            )
        };
        if n < 0 {
            out.flush();
            fail(2, &[b"pcscan: read error on ", path]);
        }
        have += n as usize;
        let eof = n == 0;
        if eof || have == input.len() {
            // Matches starting in the last MAX_MATCH bytes wait for the next chunk (unless at EOF).
            let limit = if eof { have } else { have - MAX_MATCH };
            pcscan::scan(&input[..have], limit, prefix, max_len, &mut out);
            input.copy_within(limit..have, 0);
            have -= limit;
        }
        if eof {
            break;
        }
    }
    out.flush();
    exit(0)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    exit(3)
}
