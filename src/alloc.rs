//! The binary's allocator: the system's, except that a zeroed allocation is zeroed by writing.
//!
//! `vec![0.0; n]` asks for zeroed memory, which the system allocator takes from fresh pages
//! that the kernel maps lazily: a first read maps the shared zero page, and the first write
//! then faults again to copy it, and that copy flushes the page from the TLB of every core
//! running one of the process's threads (an interrupt to each). nodec reads many such buffers
//! before it writes them: block gradients that GEMMs and the fold add into, the gradient's
//! total, buffers cloned from a zeroed one. A cold `nodec grad` of `mnist_sized` (110 000
//! parameters, 2 threads) took 1 032 of these copy-on-write faults, each after a zero-page
//! read fault. Written at allocation, every page faults once, for writing.
//!
//! Only the binary installs it (`main.rs`): the library leaves the choice of allocator to
//! whoever links it.

use std::alloc::{GlobalAlloc, Layout, System};

/// Sets glibc's mmap threshold to 1 MiB for the rest of the process: buffers of 1 MiB and
/// more are mapped, and unmapped when freed. glibc otherwise raises the threshold to the size
/// of each mapped block freed, so that a wide model's 4 MB buffers (block gradients, VJP
/// registers, transposed weights) come, after the first is freed, from per-thread arenas,
/// where a freed one is kept and is not reused by the other thread: `train` of wide_4096 on
/// two threads peaked at 53–57.5 MiB from one run to the next, depending on which thread freed
/// what; with the threshold fixed, 52 MiB every run (gradient times unchanged within their
/// noise; `benches/wide_baseline.md`, session 18). Nothing to do off glibc.
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator tunable, at start-up before any thread is made.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// [`System`], with [`GlobalAlloc::alloc_zeroed`] writing its zeros (module docs).
pub struct EagerZeroed;

// SAFETY: every method forwards to `System` with the caller's arguments, so `System`'s
// guarantees hold; `alloc_zeroed` then writes `layout.size()` zero bytes into the block it
// was just given, which is valid for writes of that size when it is not null.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for EagerZeroed {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let block = unsafe { System.alloc(layout) };
        // Opaque to the optimizer: it would fold an allocation followed by zeroing back into
        // `calloc`, which is what this allocator is for avoiding.
        let block = std::hint::black_box(block);
        if !block.is_null() {
            // SAFETY: a non-null block from `System::alloc(layout)` is valid for
            // `layout.size()` bytes of writes.
            unsafe { block.write_bytes(0, layout.size()) };
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: `block` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`; the caller's contract for `new_size` is `System::realloc`'s.
        unsafe { System.realloc(block, layout, new_size) }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Minor page faults this thread has taken so far.
    fn minor_faults() -> i64 {
        // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is given.
        #[allow(unsafe_code)]
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
            usage
        };
        usage.ru_minflt
    }

    /// Allocates 40 MiB zeroed with `allocator`, then reads and writes a value in every page as
    /// `+=` does: the faults that took, and whether every value read was zero.
    fn faults_of_read_then_write(allocator: &dyn GlobalAlloc) -> (i64, bool) {
        const PAGE: usize = 4096;
        // Alignment 8: `System` takes such a block from `calloc`, and beyond glibc's largest
        // mmap threshold (32 MiB) always from fresh, lazily zeroed pages.
        let layout = Layout::from_size_align(40 << 20, 8).expect("a layout");
        // SAFETY: `layout` has a non-zero size; every access below lies inside the block,
        // which is freed with the same layout by the allocator that made it.
        #[allow(unsafe_code)]
        unsafe {
            let block = allocator.alloc_zeroed(layout);
            assert!(!block.is_null());
            let before = minor_faults();
            let mut zero = true;
            for at in (0..layout.size()).step_by(PAGE) {
                let value = block.add(at).read_volatile();
                zero &= value == 0;
                block.add(at).write_volatile(value + 1);
            }
            let faults = minor_faults() - before;
            allocator.dealloc(block, layout);
            (faults, zero)
        }
    }

    #[test]
    fn zeroed_blocks_take_no_fault_when_first_read_then_written() {
        let (lazy, _) = faults_of_read_then_write(&System);
        let (eager, zero) = faults_of_read_then_write(&EagerZeroed);
        assert!(zero, "alloc_zeroed gave a value that is not zero");
        // The system's pages fault on the read (the zero page) and again on the write (a copy);
        // with transparent huge pages fewer, but always some. Written at allocation: none.
        assert!(
            lazy >= 4,
            "the comparison needs lazily zeroed pages ({lazy} faults)"
        );
        assert!(
            eager * 4 <= lazy,
            "{eager} faults, against {lazy} for the system allocator"
        );
    }
}
