//! A read-only view of a file another party owns and may truncate at any
//! time (a VP's framebuffer): mapped shared, never handed out as a slice,
//! read only by copying out of it.
//!
//! A shared mapping of a file reads the file's pages in place (a frame
//! copied out of it costs one `memcpy`; `pread(2)` costs about four times
//! that, page by page through the page cache). Its one danger is the owner
//! truncating the file: an access past the new end raises SIGBUS. As the
//! Wayland compositors do with their clients' shared memory (libwayland's
//! `wl_shm_buffer_begin_access`), a SIGBUS handler catches a fault inside a
//! guarded mapping, maps anonymous zero pages over the whole mapping
//! (`MAP_FIXED`) and returns: the interrupted copy goes on and reads zeros
//! (black), and the mapping is marked poisoned. Its reader then reads the
//! file with `pread` until it is a whole frame again and maps it anew.
//! A fault anywhere else restores the default action and faults again (the
//! process dies as it would have).
//!
//! The handler only loads atomics and calls mmap(2): async-signal-safe.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// How many mappings can be guarded at once (one per running VP); past
/// that, readers fall back to `pread`.
const SLOTS: usize = 4096;

struct Slot {
    /// Taken by a [`SharedMap`].
    taken: AtomicBool,
    /// The guarded range (start 0: none; set last, cleared first).
    start: AtomicUsize,
    len: AtomicUsize,
    poisoned: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    taken: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    poisoned: AtomicBool::new(false),
};

static GUARDS: [Slot; SLOTS] = [FREE; SLOTS];
static HANDLER: Once = Once::new();

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in GUARDS.iter() {
        let start = s.start.load(Ordering::Acquire);
        let len = s.len.load(Ordering::Acquire);
        if start != 0 && addr.wrapping_sub(start) < len {
            // SAFETY: replaces exactly the guarded mapping (its owner keeps
            // the address range reserved until it unregisters the slot)
            // with private zero pages; mmap is async-signal-safe.
            unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                );
            }
            s.poisoned.store(true, Ordering::Release);
            return;
        }
    }
    // Not ours: the default action, which the faulting access meets again.
    // SAFETY: resetting a disposition is async-signal-safe.
    unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
}

fn install_handler() {
    HANDLER.call_once(|| {
        // SAFETY: a zeroed sigaction with our handler, SA_SIGINFO; the old
        // disposition is not kept (nothing else in cellsd handles SIGBUS).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

/// A guarded, read-only, shared mapping of the first `len` bytes of a file.
pub struct SharedMap {
    ptr: *mut u8,
    len: usize,
    slot: usize,
}

// SAFETY: the mapping is only read through `copy_out` (copies, never
// references), from any thread; the slot is owned by this value alone.
unsafe impl Send for SharedMap {}
// SAFETY: as above: `copy_out` takes &self and only reads.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Map `len` bytes of `fd` (None if no guard slot is free: read the
    /// file with pread instead).
    pub fn map(fd: &OwnedFd, len: usize) -> io::Result<Option<Self>> {
        install_handler();
        let Some(slot) = GUARDS.iter().position(|s| {
            s.taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        }) else {
            return Ok(None);
        };
        // SAFETY: a fresh mapping chosen by the kernel; nothing accesses
        // it before it is guarded below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            GUARDS[slot].taken.store(false, Ordering::Release);
            return Err(e);
        }
        let g = &GUARDS[slot];
        g.poisoned.store(false, Ordering::Release);
        g.len.store(len, Ordering::Release);
        g.start.store(ptr as usize, Ordering::Release);
        Ok(Some(Self {
            ptr: ptr.cast(),
            len,
            slot,
        }))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the file was cut short under the mapping (since it was made
    /// or last [`SharedMap::remap`]ped): the mapping reads zeros now.
    pub fn poisoned(&self) -> bool {
        GUARDS[self.slot].poisoned.load(Ordering::Acquire)
    }

    /// Copy `out.len()` bytes from `offset` (within the mapping) into
    /// `out`. The other party may write meanwhile (the copy then holds a
    /// mix, as a framebuffer without page flipping shows); if it cut the
    /// file short, the rest reads zeros and [`SharedMap::poisoned`] says so.
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) {
        let n = out.len().min(self.len.saturating_sub(offset));
        // SAFETY: offset + n is within the mapping, which stays mapped (a
        // file mapping, or zero pages after a fault) while self lives; the
        // bytes are copied, never referenced, so their changing under us
        // is no aliasing violation of ours.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), out.as_mut_ptr(), n) };
        out[n..].fill(0);
    }

    /// Map the file again at the same address (its size is a whole frame
    /// again): the guard is cleared.
    pub fn remap(&self, fd: &OwnedFd) -> io::Result<()> {
        // SAFETY: replaces our own mapping in place (MAP_FIXED at its own
        // address and length).
        let p = unsafe {
            libc::mmap(
                self.ptr.cast(),
                self.len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        GUARDS[self.slot].poisoned.store(false, Ordering::Release);
        Ok(())
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        let g = &GUARDS[self.slot];
        // Unguard first: from here a fault in this range is not ours.
        g.start.store(0, Ordering::Release);
        // SAFETY: our own mapping, not used after this.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
        g.poisoned.store(false, Ordering::Release);
        g.len.store(0, Ordering::Release);
        g.taken.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: u64, byte: u8) -> (std::path::PathBuf, OwnedFd) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "shm-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, vec![byte; len as usize]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        (p, OwnedFd::from(f))
    }

    #[test]
    fn a_truncated_file_reads_zeros_instead_of_killing_the_reader() {
        let (p, fd) = file(64 << 10, 7);
        let m = SharedMap::map(&fd, 64 << 10).unwrap().unwrap();
        let mut out = vec![0u8; 64 << 10];
        m.copy_out(0, &mut out);
        assert!(out.iter().all(|b| *b == 7));
        assert!(!m.poisoned());
        // The owner cuts the file in half while we read it.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(32 << 10).unwrap();
        out.fill(9);
        m.copy_out(0, &mut out);
        assert!(m.poisoned(), "the fault past the end was caught");
        assert!(
            out[40 << 10..].iter().all(|b| *b == 0),
            "zeros past the end"
        );
        // Whole again: mapped anew, the file's bytes again.
        f.set_len(64 << 10).unwrap();
        m.remap(&fd).unwrap();
        assert!(!m.poisoned());
        m.copy_out(0, &mut out);
        assert!(out[..32 << 10].iter().all(|b| *b == 7));
        assert!(out[32 << 10..].iter().all(|b| *b == 0));
        drop(m);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn slots_are_reused() {
        let (p, fd) = file(4096, 1);
        for _ in 0..SLOTS + 10 {
            let m = SharedMap::map(&fd, 4096).unwrap().unwrap();
            let mut b = [0u8; 4];
            m.copy_out(0, &mut b);
            assert_eq!(b, [1; 4]);
        }
        std::fs::remove_file(&p).unwrap();
    }
}
