//! nodec's GEMMs on the wide models' exact shapes and layouts: `matrixmultiply` (through
//! `nalgebra`, as `compile::tensor::exec::gemm` and its gradient reductions call it) against
//! the `gemm` crate (faer's; run-time AVX2/AVX-512/FMA dispatch, `Parallelism::None`), for a
//! block of 32 lanes (`solve::block_width` below 256 samples) and for wider blocks (64–256 lanes).
//!
//! Every product is timed as the work of one batch of 256 samples (`256 / lanes` calls per
//! right-hand side or stage) over the 16 right-hand sides of RK4 × 4, in *thread CPU time*
//! (`CLOCK_THREAD_CPUTIME_ID`): the development machine is shared, so wall time measures the
//! other users. Fastest of `REPEAT` (default 7) interleaved rounds. Pin it to one core:
//! `taskset -c 1 cargo bench --bench gemm_shapes`.
//!
//! Shapes (`lanes × k · k × n`, component-major lanes as nodec lays out a block: lane `s` of
//! row `i` at `x[i * lanes + s]`, a column-major `lanes × k` matrix; weights row-major):
//! - `K1 x` (`k = 64, n = W`) and `K2 tanh(..)` (`k = W, n = 64`): the right-hand side;
//! - `K2ᵀ g` and `K1ᵀ g` (the same weights read transposed): the VJP;
//! - `Σ_s g xᵀ` (`W × lanes · lanes × 64`, added into the gradient): the weight gradient, whose
//!   inner dimension is the lanes.
//!
//! Both libraries' results are compared; `same bits` says whether they are equal to the bit
//! (a switch that keeps them would change no model's results).

use std::io::Write;

use nalgebra::{DMatrixView, DMatrixViewMut, Dyn};

/// Thread CPU time in seconds.
fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; the clock id is a constant Linux knows.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// `C (m × n) = A (m × k) · B (k × n)` (`beta = 0`) or `C += A B` (`beta = 1`), every operand
/// given by its element strides `(row, column)`.
#[derive(Clone, Copy)]
struct Product<'a> {
    m: usize,
    k: usize,
    n: usize,
    a: (&'a [f64], usize, usize),
    b: (&'a [f64], usize, usize),
    c_strides: (usize, usize),
    beta: f64,
}

fn with_matrixmultiply(p: &Product<'_>, c: &mut [f64]) {
    let a = DMatrixView::from_slice_with_strides_generic(
        p.a.0,
        Dyn(p.m),
        Dyn(p.k),
        Dyn(p.a.1),
        Dyn(p.a.2),
    );
    let b = DMatrixView::from_slice_with_strides_generic(
        p.b.0,
        Dyn(p.k),
        Dyn(p.n),
        Dyn(p.b.1),
        Dyn(p.b.2),
    );
    let mut out = DMatrixViewMut::from_slice_with_strides_generic(
        c,
        Dyn(p.m),
        Dyn(p.n),
        Dyn(p.c_strides.0),
        Dyn(p.c_strides.1),
    );
    out.gemm(1.0, &a, &b, p.beta);
}

fn with_gemm_crate(p: &Product<'_>, c: &mut [f64]) {
    let extent =
        |rows: usize, cols: usize, (rs, cs): (usize, usize)| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(c.len() >= extent(p.m, p.n, p.c_strides));
    assert!(p.a.0.len() >= extent(p.m, p.k, (p.a.1, p.a.2)));
    assert!(p.b.0.len() >= extent(p.k, p.n, (p.b.1, p.b.2)));
    // SAFETY: the asserts above keep every strided access inside its slice; `c` does not
    // alias `a` or `b` (it is borrowed mutably).
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            p.m,
            p.n,
            p.k,
            c.as_mut_ptr(),
            p.c_strides.1 as isize,
            p.c_strides.0 as isize,
            p.beta != 0.0,
            p.a.0.as_ptr(),
            p.a.2 as isize,
            p.a.1 as isize,
            p.b.0.as_ptr(),
            p.b.2 as isize,
            p.b.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Deterministic values in [-0.5, 0.5).
fn values(len: usize, salt: usize) -> Vec<f64> {
    (0..len)
        .map(|i| ((i * 7919 + salt * 104_729) % 1000) as f64 * 1e-3 - 0.5)
        .collect()
}

fn main() {
    let repeat: usize = std::env::args()
        .find_map(|a| {
            a.strip_prefix("--repeat=")
                .map(|r| r.parse().expect("--repeat=N"))
        })
        .unwrap_or(7);
    let test_only = std::env::args().any(|a| a == "--test");
    let (d, rounds_per_batch) = (64, 16);
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{:<24} {:>5} {:>14} {:>14} {:>7}  same bits",
        "product", "lanes", "matrixmultiply", "gemm crate", "ratio"
    );
    for w in [1024usize, 512] {
        let k1 = values(w * d, 1); // row-major W × D
        let k2 = values(d * w, 2); // row-major D × W
        for lanes in [32usize, 64, 128, 256] {
            let x = values(d * lanes, 3);
            let h = values(w * lanes, 4);
            // (name, product) in nodec's layouts.
            let products: [(&str, Product<'_>); 5] = [
                (
                    "K1 x",
                    Product {
                        m: lanes,
                        k: d,
                        n: w,
                        a: (&x, 1, lanes),
                        b: (&k1, 1, d),
                        c_strides: (1, lanes),
                        beta: 0.0,
                    },
                ),
                (
                    "K2 h",
                    Product {
                        m: lanes,
                        k: w,
                        n: d,
                        a: (&h, 1, lanes),
                        b: (&k2, 1, w),
                        c_strides: (1, lanes),
                        beta: 0.0,
                    },
                ),
                (
                    "K2ᵀ g",
                    Product {
                        m: lanes,
                        k: d,
                        n: w,
                        a: (&x, 1, lanes),
                        b: (&k2, w, 1),
                        c_strides: (1, lanes),
                        beta: 0.0,
                    },
                ),
                (
                    "K1ᵀ g",
                    Product {
                        m: lanes,
                        k: w,
                        n: d,
                        a: (&h, 1, lanes),
                        b: (&k1, d, 1),
                        c_strides: (1, lanes),
                        beta: 0.0,
                    },
                ),
                (
                    "Σ_s g xᵀ (+=)",
                    // reduced[i·D + j] += Σ_s g_i[s] x_j[s]: column-major D × W = Xᵀ G.
                    Product {
                        m: d,
                        k: lanes,
                        n: w,
                        a: (&x, lanes, 1),
                        b: (&h, 1, lanes),
                        c_strides: (1, d),
                        beta: 1.0,
                    },
                ),
            ];
            for (name, p) in &products {
                let calls = 256 / lanes * rounds_per_batch;
                let len = p.m * p.n;
                let (mut c_mm, mut c_g) = (vec![0.0; len], vec![0.0; len]);
                let mut best = [f64::INFINITY; 2];
                for round in 0..if test_only { 1 } else { repeat } {
                    // Alternate which goes first, so neither always runs on a warmer cache.
                    for turn in 0..2 {
                        let which = (turn + round) % 2;
                        let c = if which == 0 { &mut c_mm } else { &mut c_g };
                        c.fill(0.0);
                        let start = cpu_seconds();
                        for _ in 0..calls {
                            if which == 0 {
                                with_matrixmultiply(p, c);
                            } else {
                                with_gemm_crate(p, c);
                            }
                        }
                        best[which] = best[which].min(cpu_seconds() - start);
                    }
                }
                let scale = c_mm.iter().fold(0.0f64, |s, v| s.max(v.abs()));
                let diff = c_mm
                    .iter()
                    .zip(&c_g)
                    .fold(0.0f64, |s, (a, b)| s.max((a - b).abs()));
                assert!(diff <= 1e-12 * scale, "{name}: the libraries disagree");
                let same = c_mm
                    .iter()
                    .zip(&c_g)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                let _ = writeln!(
                    out,
                    "{:<24} {lanes:>5} {:>11.2} ms {:>11.2} ms {:>7.2}  {}",
                    format!("{name} (W = {w})"),
                    best[0] * 1e3,
                    best[1] * 1e3,
                    best[0] / best[1],
                    if same {
                        "yes".to_string()
                    } else {
                        format!("no ({:.0e} of the largest)", diff / scale)
                    }
                );
            }
        }
    }
}
