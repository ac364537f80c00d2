//! Running the blocks of a batch in parallel and combining their results in block order.
//!
//! Collecting every block's result before combining them holds all of them at once: for a
//! gradient that is one vector as long as the parameters per block (eight copies of 533 120
//! weights for `wide_4096` at batch 256). Here workers take blocks in ascending order from a
//! shared counter and hand each result to `fold` as soon as every earlier block has been
//! folded, so only the blocks in flight and the few finished out of order are alive. The
//! results, and the order they are folded in, do not depend on the number of threads: only
//! the memory and the schedule do.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// Runs `work` on every block of `n` samples (blocks of `width`) on the current rayon pool
/// and calls `fold` with each block's samples and result, in block order. When `fold`
/// returns `false` the blocks not yet started are skipped (an error that ends the batch).
pub(crate) fn in_order<R: Send>(
    n: usize,
    width: usize,
    work: impl Fn(Range<usize>) -> R + Sync,
    fold: impl FnMut(Range<usize>, R) -> bool + Send,
) {
    let n_blocks = n.div_ceil(width);
    let block = |b: usize| b * width..((b + 1) * width).min(n);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    struct Folding<R, F> {
        next: usize,
        pending: BTreeMap<usize, R>,
        fold: F,
        stopped: bool,
    }
    let folding = Mutex::new(Folding {
        next: 0,
        pending: BTreeMap::new(),
        fold,
        stopped: false,
    });
    let workers = rayon::current_num_threads().clamp(1, n_blocks.max(1));
    // A block starts only within this distance of the next one to fold, so a slow block
    // cannot let the others pile up results behind it.
    let window = 2 * workers;
    let folded = Condvar::new();
    let worker = || loop {
        let b = next.fetch_add(1, Ordering::Relaxed);
        if b >= n_blocks || stop.load(Ordering::Relaxed) {
            break;
        }
        {
            // A panic in `fold` poisons the lock; the scope re-raises the panic itself.
            let Ok(f) = folding.lock() else { break };
            let Ok(f) = folded.wait_while(f, |f| b >= f.next + window && !f.stopped) else {
                break;
            };
            if f.stopped {
                break;
            }
        }
        let result = {
            // If `work` panics, the workers waiting for this block must not wait forever: the
            // batch stops and the scope re-raises the panic.
            let on_panic = OnPanic(|| {
                if let Ok(mut f) = folding.lock() {
                    f.stopped = true;
                }
                stop.store(true, Ordering::Relaxed);
                folded.notify_all();
            });
            let result = work(block(b));
            std::mem::forget(on_panic);
            result
        };
        let Ok(mut f) = folding.lock() else { break };
        if f.stopped {
            break;
        }
        f.pending.insert(b, result);
        loop {
            let at = f.next;
            let Some(r) = f.pending.remove(&at) else {
                break;
            };
            f.next += 1;
            if !(f.fold)(block(at), r) {
                f.stopped = true;
                f.pending.clear();
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        folded.notify_all();
    };
    if workers == 1 {
        worker();
    } else {
        rayon::scope(|s| {
            for _ in 0..workers {
                s.spawn(|_| worker());
            }
        });
    }
}

/// Runs its closure when dropped during a panic's unwinding.
struct OnPanic<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnPanic<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folds in block order and covers every sample once, whatever the pool's size.
    #[test]
    fn folds_every_block_once_in_order() {
        for threads in [1, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (n, width) in [(0, 4), (1, 4), (7, 4), (8, 4), (100, 32), (33, 32)] {
                let mut seen = Vec::new();
                pool.install(|| {
                    in_order(
                        n,
                        width,
                        |r| {
                            // Later blocks finish first, to exercise the pending set.
                            std::thread::sleep(std::time::Duration::from_micros(
                                (50 * (n / width + 1 - r.start / width)) as u64,
                            ));
                            r.clone()
                        },
                        |r, result| {
                            assert_eq!(r, result);
                            seen.push(r);
                            true
                        },
                    )
                });
                let expected: Vec<_> = (0..n.div_ceil(width))
                    .map(|b| b * width..((b + 1) * width).min(n))
                    .collect();
                assert_eq!(seen, expected, "n {n} width {width} threads {threads}");
            }
        }
    }

    /// Results alive at once stay near the number of threads, however many blocks there are:
    /// what keeps a batch's gradient from holding one parameter-sized vector per block.
    #[test]
    fn few_results_are_alive_at_once() {
        struct Alive<'a>(&'a AtomicUsize);
        impl Drop for Alive<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let alive = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(|| {
                in_order(
                    200,
                    1,
                    |r| {
                        // Now and then a slow block, which the others must not run far ahead of.
                        let micros = if r.start % 50 == 0 { 5_000 } else { 10 };
                        std::thread::sleep(std::time::Duration::from_micros(micros));
                        let now = alive.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        Alive(&alive)
                    },
                    |_, result| {
                        drop(result);
                        true
                    },
                )
            });
        let most = most.load(Ordering::SeqCst);
        assert!(
            most <= 4,
            "{most} results alive at once (window 2 × 2 threads)"
        );
    }

    /// A panicking block stops the batch and the panic reaches the caller; nobody waits forever.
    #[test]
    fn a_panicking_block_does_not_hang_the_others() {
        let caught = std::panic::catch_unwind(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap()
                .install(|| {
                    in_order(
                        100,
                        1,
                        |r| {
                            if r.start == 0 {
                                std::thread::sleep(std::time::Duration::from_millis(5));
                                panic!("block 0 fails");
                            }
                        },
                        |_, ()| true,
                    )
                })
        });
        assert!(caught.is_err());
    }

    /// A fold that asks to stop sees no later block than those already running.
    #[test]
    fn a_failed_block_stops_the_rest() {
        let started = AtomicUsize::new(0);
        let mut folded = 0;
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(|| {
                in_order(
                    1000,
                    1,
                    |_| {
                        started.fetch_add(1, Ordering::Relaxed);
                    },
                    |r, ()| {
                        folded += 1;
                        r.start < 3
                    },
                )
            });
        assert_eq!(folded, 4, "blocks 0..=3 folded, then the batch stops");
        // Blocks start at most a window (2 × 2 threads) beyond the last one folded.
        assert!(started.load(Ordering::Relaxed) <= 8);
    }
}
