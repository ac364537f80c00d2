//! The kernels' one matrix product (tensor kernels and the tape's `tape::matmul`): strided
//! views handed to the `gemm` crate (faer's).
//!
//! Why this crate rather than `matrixmultiply` (which `nalgebra`'s `gemm` and the solvers still
//! use): on the products a block of 32 samples makes in the wide models
//! (`benches/gemm_shapes.rs`, thread CPU time, `benches/wide_baseline.md`) it is 1.2–1.4×
//! faster on `K x` of both layers on AVX2, and no slower elsewhere; with its `x86-v4` feature
//! it has AVX-512 kernels, twice as fast again where the CPU has them (a 256 × 1024 × 1024
//! product: 42 → 82 GFLOP/s on one core of an AVX-512 Xeon).
//!
//! Exactness: each output is one chain of fused multiply-adds over the inner dimension (where
//! the CPU has FMA; the kernel is picked once per process), so a lane's result does not depend
//! on the other lanes, the lane range or its alignment, checked by
//! `a_lane_does_not_depend_on_its_neighbours` below; the thread-count and block-position tests
//! check it on whole models. For inner dimensions above the crate's cache block the chain is
//! split into blocks added in order, which is where its results differ from `matrixmultiply`'s
//! in the last bits (`2e-15` of the largest output for `K2 h` with `W = 1024`).
//!
//! One function over [`Real`] (the crate dispatches to its `f32` or `f64` kernels by type).
//! Public so that `benches/wide.rs`'s hand-written baseline multiplies
//! with the same GEMM as nodec.

use crate::real::Real;

/// A strided matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, R = f64> {
    /// The elements.
    pub data: &'a [R],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between rows.
    pub rs: usize,
    /// Distance between columns.
    pub cs: usize,
}

/// The index one past the last element a `rows × cols` view with these strides reads.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs + 1
}

/// `dst = a · b`, or with `accumulate` `dst += a · b`, where `dst` is `a.rows × b.cols` with
/// strides `(rs, cs)`.
///
/// # Panics
/// If the shapes disagree or a view reaches past its slice (a compiler bug, never input).
pub fn gemm<R: Real>(
    dst: &mut [R],
    (rs, cs): (usize, usize),
    a: View<'_, R>,
    b: View<'_, R>,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions of a product");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() >= extent(m, n, rs, cs),
        "product output out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * rs + j * cs] = R::zero();
                }
            }
        }
        return;
    }
    assert!(
        a.data.len() >= extent(m, k, a.rs, a.cs),
        "left operand out of bounds"
    );
    assert!(
        b.data.len() >= extent(k, n, b.rs, b.cs),
        "right operand out of bounds"
    );
    // The crate packs `b` for a whole `kc × nc` panel into a buffer it allocates per call, with
    // `nc` up to all of `n` and sized from the caches: with a thread per core those buffers
    // made wide_4096 `grad`'s peak memory 65 MiB at 2 threads, 46 MiB with panels. Columns are
    // therefore multiplied in panels of at most `MAX_PANEL`. The crate's inner blocking (`kc`)
    // depends on `k` alone for products with more than 64 columns, and every panel of a split
    // product has more than 64, so each output's chain of multiply-adds, and its bits, are
    // those of the unsplit product.
    let panels = n.div_ceil(MAX_PANEL);
    let mut j0 = 0;
    for p in 0..panels {
        let j1 = n * (p + 1) / panels;
        product_unchecked(
            &mut dst[j0 * cs..],
            (rs, cs),
            a,
            View {
                data: &b.data[j0 * b.cs..],
                cols: j1 - j0,
                ..b
            },
            accumulate,
        );
        j0 = j1;
    }
}

/// The widest panel of columns one call of the crate multiplies (see [`gemm`]).
const MAX_PANEL: usize = 512;

/// [`gemm`] for operands whose bounds it has checked, in one call of the crate.
fn product_unchecked<R: Real>(
    dst: &mut [R],
    (rs, cs): (usize, usize),
    a: View<'_, R>,
    b: View<'_, R>,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: the asserts of [`gemm`] keep every element the crate reads or writes, `(rows - 1)·rs +
    // (cols - 1)·cs` at most, inside its slice; `dst` is borrowed mutably, so it aliases neither
    // operand; `Parallelism::None` runs on this thread only, so a `dst` whose strides map two
    // elements to one place (never made here) is a wrong result, not a data race.
    #[allow(unsafe_code)]
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            cs as isize,
            rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            R::one(),
            R::one(),
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, salt: usize) -> Vec<f64> {
        (0..len)
            .map(|i| ((i * 7919 + salt * 104_729) % 1000) as f64 * 1e-3 - 0.5)
            .collect()
    }

    /// The textbook sum, left to right.
    fn reference(a: View<'_>, b: View<'_>, i: usize, j: usize) -> f64 {
        (0..a.cols)
            .map(|p| a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs])
            .sum()
    }

    #[test]
    fn products_match_the_textbook_sum_in_every_layout() {
        let (m, k, n) = (13, 300, 9);
        let x = values(m * k, 1);
        let y = values(k * n, 2);
        for (a_strides, b_strides) in [((k, 1), (n, 1)), ((1, m), (1, k)), ((k, 1), (1, k))] {
            let a = View {
                data: &x,
                rows: m,
                cols: k,
                rs: a_strides.0,
                cs: a_strides.1,
            };
            let b = View {
                data: &y,
                rows: k,
                cols: n,
                rs: b_strides.0,
                cs: b_strides.1,
            };
            let mut c = vec![1.0; m * n];
            gemm(&mut c, (1, m), a, b, true);
            for i in 0..m {
                for j in 0..n {
                    let want = 1.0 + reference(a, b, i, j);
                    // Each term's rounding differs by at most an ulp of the running sum.
                    assert!((c[i + j * m] - want).abs() < 1e-13, "({i}, {j})");
                }
            }
            gemm(&mut c, (1, m), a, b, false);
            assert!((c[0] - reference(a, b, 0, 0)).abs() < 1e-13);
        }
    }

    /// A block's lanes are the rows of `X · Aᵀ` (component-major, rows `lo .. lo + rows` of a
    /// 32-lane block): every sub-range must give each lane the bits it has in the whole block.
    #[test]
    fn a_lane_does_not_depend_on_its_neighbours() {
        let step = 32;
        for (k, n) in [(64, 1024), (1024, 64), (784, 64), (10, 64)] {
            let x = values(step * k, 3);
            let w = values(n * k, 4);
            let weight = View {
                data: &w,
                rows: k,
                cols: n,
                rs: 1,
                cs: k,
            };
            let lanes = |lo: usize, rows: usize| View {
                data: &x[lo..],
                rows,
                cols: k,
                rs: 1,
                cs: step,
            };
            let mut whole = vec![0.0; step * n];
            gemm(&mut whole, (1, step), lanes(0, step), weight, false);
            for (lo, rows) in [(0, 8), (3, 8), (5, 27), (17, 15), (24, 8), (1, 30)] {
                let mut part = vec![f64::NAN; step * n];
                gemm(&mut part[lo..], (1, step), lanes(lo, rows), weight, false);
                for j in 0..n {
                    for s in lo..lo + rows {
                        assert_eq!(
                            part[j * step + s].to_bits(),
                            whole[j * step + s].to_bits(),
                            "k {k}, lane {s} of {lo}..{}",
                            lo + rows
                        );
                    }
                }
            }
        }
    }

    /// Panels of columns give each output the bits of one call over all columns, also when the
    /// inner dimension is longer than the crate's inner block.
    #[test]
    fn panels_give_the_bits_of_one_product() {
        let (m, k) = (32, 1500);
        for n in [MAX_PANEL + 1, 1100, 4 * MAX_PANEL] {
            let x = values(m * k, 5);
            let w = values(k * n, 6);
            let a = View {
                data: &x,
                rows: m,
                cols: k,
                rs: 1,
                cs: m,
            };
            let b = View {
                data: &w,
                rows: k,
                cols: n,
                rs: 1,
                cs: k,
            };
            let mut split = vec![0.0; m * n];
            let mut whole = vec![0.0; m * n];
            gemm(&mut split, (1, m), a, b, false);
            product_unchecked(&mut whole, (1, m), a, b, false);
            assert!(
                split
                    .iter()
                    .zip(&whole)
                    .all(|(s, w)| s.to_bits() == w.to_bits()),
                "n {n}"
            );
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let mut c = vec![5.0; 4];
        let a = View {
            data: &[],
            rows: 2,
            cols: 0,
            rs: 0,
            cs: 0,
        };
        let b = View {
            data: &[],
            rows: 0,
            cols: 2,
            rs: 0,
            cs: 0,
        };
        gemm(&mut c, (2, 1), a, b, true);
        assert_eq!(c, [5.0; 4]);
        gemm(&mut c, (2, 1), a, b, false);
        assert_eq!(c, [0.0; 4]);
    }
}
