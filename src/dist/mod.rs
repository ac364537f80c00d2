//! `dist`: the ranks of a run launched by `mpirun` (cargo feature `mpi`), and the one process
//! otherwise ([`Local`]). Work is split into contiguous shares of block (or member) indices
//! ([`share`]); each rank sends its blocks' results, unfolded, to rank 0, which folds them in
//! block order exactly as one process folds them, so results do not depend on the number of
//! ranks. What goes over the wire is plain bytes ([`Writer`], [`Reader`]); the collectives are
//! the two of [`Ranks`].
//!
//! **Invariant:** every rank calls the same collectives in the same order; a rank whose share
//! is empty still takes part.

#[cfg(feature = "mpi")]
pub mod mpi;

use std::ops::Range;

/// The processes of a run and the two collectives nodec needs.
pub trait Ranks {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Every rank's `local` bytes, in rank order, on rank 0; an empty list on the others.
    fn gather(&self, local: &[u8]) -> Vec<Vec<u8>>;
    /// Rank 0's `bytes`, on every rank (the others' `bytes` are resized and replaced).
    #[allow(clippy::ptr_arg)]
    fn broadcast(&self, bytes: &mut Vec<u8>);
    /// Whether this is rank 0, the one that writes files and prints.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process: the run as the default build does it.
pub struct Local;

impl Ranks for Local {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn gather(&self, local: &[u8]) -> Vec<Vec<u8>> {
        vec![local.to_vec()]
    }
    fn broadcast(&self, _bytes: &mut Vec<u8>) {}
}

/// The contiguous share of `0..n` that `rank` of `size` ranks takes: the first `n % size`
/// ranks take one more, so shares differ by at most one and follow each other in rank order.
pub fn share(n: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// Little-endian bytes of numbers, in the order they are written.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// Appends a count or a tag.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a float, bit for bit (NaN payloads included).
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    /// Appends a length and the floats.
    pub fn f64s(&mut self, v: &[f64]) {
        self.u64(v.len() as u64);
        for x in v {
            self.f64(*x);
        }
    }
    /// Appends a length and the text's bytes.
    pub fn text(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Reads what a [`Writer`] wrote; a short or malformed buffer reads as zeros and empties,
/// which only a peer built from different code could send.
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Reads a count or a tag.
    pub fn u64(&mut self) -> u64 {
        let Some((head, rest)) = self.0.split_first_chunk::<8>() else {
            self.0 = &[];
            return 0;
        };
        self.0 = rest;
        u64::from_le_bytes(*head)
    }
    /// Reads a count as `usize`.
    pub fn usize(&mut self) -> usize {
        usize::try_from(self.u64()).unwrap_or(usize::MAX)
    }
    /// Reads a float.
    pub fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }
    /// Reads a length and that many floats.
    pub fn f64s(&mut self) -> Vec<f64> {
        let n = self.usize().min(self.0.len() / 8);
        (0..n).map(|_| self.f64()).collect()
    }
    /// Reads a length and that many bytes of text.
    pub fn text(&mut self) -> String {
        let n = self.usize().min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(head).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shares cover `0..n` once, in rank order, and differ in length by at most one.
    #[test]
    fn shares_tile_the_range_in_rank_order() {
        for n in [0, 1, 2, 5, 7, 64, 65] {
            for size in 1..=5 {
                let shares: Vec<_> = (0..size).map(|r| share(n, r, size)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[size - 1].end, n);
                for w in shares.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<_> = shares.iter().map(|s| s.len()).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1, "{n} over {size}: {lens:?}");
            }
        }
    }

    /// Floats come back bit for bit, NaN payloads and signed zeros included.
    #[test]
    fn wire_round_trips_bits() {
        let odd_nan = f64::from_bits(0x7ff8_0000_0000_1234);
        let values = [
            0.0,
            -0.0,
            1.5e-310,
            f64::INFINITY,
            odd_nan,
            std::f64::consts::PI,
        ];
        let mut w = Writer::default();
        w.u64(7);
        w.f64s(&values);
        w.text("member 3 failed");
        let mut r = Reader(&w.0);
        assert_eq!(r.u64(), 7);
        let back = r.f64s();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(r.text(), "member 3 failed");
        assert!(r.is_empty());
        // A truncated buffer reads as zeros, not a panic.
        let mut short = Reader(&w.0[..5]);
        assert_eq!(short.u64(), 0);
        assert!(short.f64s().is_empty());
    }
}
