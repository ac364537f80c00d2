//! The one seeded, portable random generator: every random number nodec draws comes from an
//! [`Rng`].
//!
//! Parameter initialisation ([`init_param`]), the toy data generators and CSV shuffling in
//! `data`, and mini-batch shuffling in `train` all draw from it, so that the same seed gives the
//! same bits on every machine, thread count and run (architecture guide §4).
//!
//! # Why these numbers are the same everywhere
//!
//! - The bit stream is ChaCha with 8 rounds (`rand_chacha::ChaCha8Rng`), a keyed function of
//!   integer arithmetic only. [`Rng::new`] expands the `u64` seed into the 32-byte key with
//!   `rand_core`'s `seed_from_u64` (PCG32), which `rand` documents as portable. The stream id
//!   is always 0. `rand` treats a change of these value streams as a breaking change, so
//!   `Cargo.toml` takes `rand_chacha` 0.9 (`rand_core` 0.9) and `Cargo.lock` pins the exact
//!   version; `tests/it/data.rs` checks the first outputs against an independent
//!   reimplementation of ChaCha8 and PCG32 (the script is in `docs/data.md`).
//! - Floats are built here from `u64` words with exactly rounded operations
//!   ([`Rng::unit`]: the top 53 bits times 2⁻⁵³), not through a library distribution whose
//!   algorithm could change between versions.
//! - [`Rng::normal`] is Box–Muller, and its logarithm and cosine come from the `libm` crate, a
//!   pure-Rust port of musl's libm, not the platform's C library (whose last bits may differ
//!   between glibc, musl, macOS and Windows). `sqrt` is exactly rounded by IEEE 754 everywhere.
//!   `rand_distr`'s ziggurat is deterministic for one version too, but calls the platform's
//!   `exp` and `ln` in its rare slow paths, so it is not used.
//!
//! # State and streams
//!
//! [`Rng::state`] captures the generator exactly (key and word position) so that a training
//! checkpoint can save it and [`Rng::from_state`] can continue the same stream.
//! [`Rng::fork`] derives independent generators for separate purposes without touching the
//! parent's position.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};

use crate::ir::ParamInit;

/// The seeded, portable random generator (ChaCha8, see the module docs).
///
/// It only ever draws whole `u64` words, so its position is always a multiple of two 32-bit
/// words.
#[derive(Clone, Debug)]
pub struct Rng {
    inner: ChaCha8Rng,
}

/// A generator's exact position: what a checkpoint saves to restore an [`Rng`] bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RngState {
    /// The 32-byte ChaCha key.
    pub key: [u8; 32],
    /// How many 32-bit words of the stream have been used.
    pub word_pos: u128,
}

impl Rng {
    /// A generator seeded from `seed` (the `--seed` of a run, a data block's `seed = ...`).
    pub fn new(seed: u64) -> Rng {
        Rng {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next 64 random bits: two consecutive 32-bit ChaCha words, the first the low half.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform draw from `[0, 1)`: the top 53 bits of [`Rng::next_u64`] times 2⁻⁵³, so every
    /// multiple of 2⁻⁵³ in `[0, 1)` is equally likely. One word per draw.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform draw from `[lo, hi)`: `lo + (hi - lo) * unit()`. One word per draw.
    ///
    /// Rounding can give `hi` itself when `hi - lo` is much larger than `lo`'s spacing; callers
    /// that need a strict bound should not rely on it.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// A normal draw with the given mean and standard deviation: `mean + std * z`.
    ///
    /// `z` is Box–Muller's cosine branch, `sqrt(-2 ln(1 - u1)) * cos(2π u2)` with `u1` then `u2`
    /// from [`Rng::unit`] (`1 - u1` lies in `(0, 1]`, so the logarithm is finite). The sine
    /// branch is not kept, so the generator has no hidden spare value and its whole state is
    /// [`RngState`]. Two words per draw.
    pub fn normal(&mut self, mean: f64, std: f64) -> f64 {
        let u1 = self.unit();
        let u2 = self.unit();
        let radius = (-2.0 * libm::log(1.0 - u1)).sqrt();
        let z = radius * libm::cos(2.0 * std::f64::consts::PI * u2);
        mean + std * z
    }

    /// A uniform integer in `0..n`, without bias (Lemire's multiply-and-reject method: the
    /// high word of `next_u64() * n`, redrawing while the low word falls in the biased zone).
    /// Returns 0 when `n` is 0 or 1; draws at least one word otherwise.
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let n = n as u64;
        // The low words below `2^64 mod n` would make some results more likely than others.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// Shuffles `items` in place with Fisher–Yates: for `i` from `len - 1` down to 1, swap
    /// item `i` with item [`Rng::below`]`(i + 1)`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// A random permutation of `0..n`: [`Rng::shuffle`] applied to `[0, 1, ..., n - 1]`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        self.shuffle(&mut order);
        order
    }

    /// The generator's exact position, to save in a checkpoint.
    pub fn state(&self) -> RngState {
        RngState {
            key: self.inner.get_seed(),
            word_pos: self.inner.get_word_pos(),
        }
    }

    /// A generator that continues exactly where the one that gave `state` was.
    pub fn from_state(state: &RngState) -> Rng {
        let mut inner = ChaCha8Rng::from_seed(state.key);
        inner.set_word_pos(state.word_pos);
        Rng { inner }
    }

    /// An independent generator for purpose number `stream` (for instance one per data set or
    /// one for mini-batches), derived from this generator's key only: it neither depends on nor
    /// moves this generator's position, so `Rng::new(s).fork(k)` is always the same stream.
    ///
    /// The child key is the first 32 bytes of ChaCha20 keyed by this generator's key, on stream
    /// id `stream`: a different cipher (20 rounds) from the parent's own output, so the child
    /// key never reappears among the parent's draws, and different `stream`s give unrelated keys.
    pub fn fork(&self, stream: u64) -> Rng {
        let mut keyer = ChaCha20Rng::from_seed(self.inner.get_seed());
        keyer.set_stream(stream);
        let mut key = [0u8; 32];
        keyer.fill_bytes(&mut key);
        Rng {
            inner: ChaCha8Rng::from_seed(key),
        }
    }
}

/// A parameter's initial values: `len` numbers drawn or copied according to `init`.
///
/// - `Values(v)`: `v` repeated cyclically (`out[i] = v[i % v.len()]`), so one copy fills every
///   layer or knot of a time-varying parameter; an empty `v` gives zeros. Draws nothing.
/// - `Normal { mean, std }`: `len` draws of [`Rng::normal`], in order.
/// - `Uniform { lo, hi }`: `len` draws of [`Rng::uniform`], in order.
///
/// The caller decides the order in which parameters draw (declaration order) and which
/// generator they share.
pub fn init_param(init: &ParamInit, len: usize, rng: &mut Rng) -> Vec<f64> {
    match init {
        ParamInit::Values(values) if values.is_empty() => vec![0.0; len],
        ParamInit::Values(values) => (0..len).map(|i| values[i % values.len()]).collect(),
        ParamInit::Normal { mean, std } => draws(rng, len, 4, |r| r.normal(*mean, *std)),
        ParamInit::Uniform { lo, hi } => draws(rng, len, 2, |r| r.uniform(*lo, *hi)),
    }
}

/// Draws per parallel piece of a long [`draws`].
const DRAWS_PER_PIECE: usize = 1 << 14;

/// `len` draws of `draw`, each using exactly `words` 32-bit words of the stream, in order, and
/// `rng` moved past them all. A wide layer has hundreds of thousands of weights: the pieces are
/// drawn in parallel, each from a copy of the generator set to the word where its first draw
/// starts, so the values are those of drawing one after another.
fn draws(
    rng: &mut Rng,
    len: usize,
    words: u128,
    draw: impl Fn(&mut Rng) -> f64 + Sync,
) -> Vec<f64> {
    use rayon::prelude::*;
    let start = rng.inner.get_word_pos();
    let mut out = vec![0.0; len];
    out.par_chunks_mut(DRAWS_PER_PIECE)
        .enumerate()
        .for_each(|(piece, values)| {
            let mut r = rng.clone();
            r.inner
                .set_word_pos(start + (piece * DRAWS_PER_PIECE) as u128 * words);
            for v in values {
                *v = draw(&mut r);
            }
        });
    rng.inner.set_word_pos(start + len as u128 * words);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bits_different_seed_different_bits() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..8).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn restored_state_continues_identically() {
        let mut r = Rng::new(42);
        // An odd number of words into a buffer and across block boundaries.
        for _ in 0..37 {
            r.next_u64();
        }
        r.normal(0.0, 1.0);
        let saved = r.state();
        let mut restored = Rng::from_state(&saved);
        assert_eq!(restored.state(), saved);
        for _ in 0..200 {
            // Bit identity is the claim here.
            assert_eq!(r.next_u64(), restored.next_u64());
        }
        // A fresh generator's state restores too.
        let fresh = Rng::new(3);
        let mut a = fresh.clone();
        let mut b = Rng::from_state(&fresh.state());
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut r = Rng::new(1);
        r.below(1000);
        let json = serde_json::to_string(&r.state()).unwrap();
        let back: RngState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r.state());
    }

    #[test]
    fn unit_and_uniform_stay_in_range() {
        let mut r = Rng::new(5);
        for _ in 0..10_000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            let x = r.uniform(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&x));
        }
    }

    #[test]
    fn below_is_in_range_and_hits_every_value() {
        let mut r = Rng::new(9);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[r.below(7)] += 1;
        }
        // Each of 7 values expects 1000 hits; 6 standard deviations is about ±180.
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = Rng::new(11);
        let p = r.permutation(1000);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(p, sorted, "a shuffle of 1000 items left them in order");
        let mut empty: [u8; 0] = [];
        r.shuffle(&mut empty);
    }

    #[test]
    fn normal_has_the_right_mean_and_variance() {
        let mut r = Rng::new(2024);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal(1.5, 2.0)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        // Standard errors: mean 2/√n ≈ 0.0063, variance 4·√(2/n) ≈ 0.018; allow about 5σ.
        assert!((mean - 1.5).abs() < 0.032, "mean {mean}");
        assert!((var - 4.0).abs() < 0.09, "variance {var}");
        // Fourth standardized moment of a normal is 3 (standard error ≈ √(24/n) ≈ 0.015).
        let kurt = xs
            .iter()
            .map(|x| ((x - mean) / var.sqrt()).powi(4))
            .sum::<f64>()
            / n as f64;
        assert!((kurt - 3.0).abs() < 0.08, "kurtosis {kurt}");
    }

    #[test]
    fn forks_are_independent_of_position_and_of_each_other() {
        let a = Rng::new(1);
        let mut moved = Rng::new(1);
        moved.next_u64();
        let first = |mut r: Rng| r.next_u64();
        assert_eq!(first(a.fork(3)), first(moved.fork(3)));
        assert_ne!(first(a.fork(3)), first(a.fork(4)));
        assert_ne!(first(a.fork(0)), first(a.clone()));
        assert_ne!(first(Rng::new(2).fork(3)), first(a.fork(3)));
    }

    /// Drawn in parallel pieces, the values and the generator's end position are those of
    /// drawing one after another.
    #[test]
    fn long_draws_are_the_sequential_draws() {
        let len = 3 * DRAWS_PER_PIECE + 17;
        for init in [
            ParamInit::Normal {
                mean: 0.5,
                std: 2.0,
            },
            ParamInit::Uniform { lo: -1.0, hi: 3.0 },
        ] {
            let mut parallel = Rng::new(9);
            parallel.next_u64();
            let mut sequential = parallel.clone();
            let got = init_param(&init, len, &mut parallel);
            let expected: Vec<f64> = (0..len)
                .map(|_| match init {
                    ParamInit::Normal { mean, std } => sequential.normal(mean, std),
                    ParamInit::Uniform { lo, hi } => sequential.uniform(lo, hi),
                    ParamInit::Values(_) => unreachable!(),
                })
                .collect();
            assert!(got
                .iter()
                .zip(&expected)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            assert_eq!(parallel.next_u64(), sequential.next_u64());
        }
    }

    #[test]
    fn init_param_copies_and_draws() {
        let mut r = Rng::new(0);
        assert_eq!(
            init_param(&ParamInit::Values(vec![1.0, 2.0]), 5, &mut r),
            [1.0, 2.0, 1.0, 2.0, 1.0]
        );
        assert_eq!(init_param(&ParamInit::Values(vec![]), 2, &mut r), [0.0; 2]);
        let u = init_param(&ParamInit::Uniform { lo: 2.0, hi: 3.0 }, 100, &mut r);
        assert!(u.iter().all(|x| (2.0..3.0).contains(x)));
        let mut r1 = Rng::new(4);
        let mut r2 = Rng::new(4);
        let n = init_param(
            &ParamInit::Normal {
                mean: 1.0,
                std: 0.0,
            },
            3,
            &mut r1,
        );
        assert_eq!(n, [1.0; 3]);
        let a = init_param(
            &ParamInit::Normal {
                mean: 0.0,
                std: 1.0,
            },
            4,
            &mut r1,
        );
        let b = {
            init_param(
                &ParamInit::Normal {
                    mean: 1.0,
                    std: 0.0,
                },
                3,
                &mut r2,
            );
            init_param(
                &ParamInit::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                4,
                &mut r2,
            )
        };
        assert_eq!(a, b);
    }
}
