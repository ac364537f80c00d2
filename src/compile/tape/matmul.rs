//! Matrix products hidden in the tape, run as GEMMs.
//!
//! Two instruction shapes are matrix products over the block:
//! - a group of linear combinations (`Lin`) whose terms are all `c·a` (plus at most one
//!   uniform bias) over sources that are evenly spaced rows of one bank: the rows of `K x`,
//!   `Wᵀ w` in a VJP. For lanes `s`, `out[r][s] = Σ_i K[r][i] · x_i[s] (+ b_r)`.
//! - a grid of parameter-gradient reductions `Σ_s a_i[s] · b_j[s]` over evenly spaced rows
//!   `a_i`, `b_j`: the gradient of a weight matrix, `Σ_s g[s] x[s]ᵀ`.
//!
//! Both go to the tensor kernels' GEMM ([`crate::compile::gemm`], the `gemm` crate: `sgemm`
//! or `dgemm` by the kernel's precision, AVX2 or AVX-512 micro-kernels with FMA chosen at run
//! time). That measured 2–4× faster than the lane loops on 64×32 products of a 32-sample
//! block (then through `nalgebra` and `matrixmultiply`, which has no AVX-512 kernels: the
//! switch made P4 D = 32's training step 20 % faster on an AVX-512 Xeon, 42 → 33.6 ms, with
//! the same bits, each output being one chain of fused multiply-adds in both crates).
//! A product with one side as short as two (a width-2 state through a 64-wide layer: `K x`,
//! `Kᵀ w` and the weight gradient `Σ_s g[s] x[s]ᵀ`) runs as a GEMM too, when its long side has
//! at least [`MIN_SIDE`]: the micro-kernels keep several independent sums in flight where the
//! lane loops' reductions wait on one chain, and P4 D = 2's training step went from 17.2 to
//! 13.1 ms on an AVX-512 Xeon (circles_anode's training 2.8 → 2.15 s). Smaller products keep
//! the lane loops. A short lane range of a product run as a GEMM is padded (see [`run_lin`]); a
//! short reduction, whose sum depends on its lane range anyway, uses the lane loops.
//!
//! Exactness: a GEMM sums in its own order, with fused multiply-adds where the CPU has them,
//! so its results differ from the lane loops' in the last bits (a few ulps per term). They are
//! deterministic: the micro-kernel is picked once per machine and sums every output in the same
//! order whatever the block's position, so results do not depend on the thread count. They can
//! differ between CPUs with different vector units (SSE2, AVX2 + FMA, AVX-512).

use crate::compile::gemm::{gemm, View};

use super::{Ctx, Kind, Reduce, ReducePlan, Shape, Src};
use crate::real::Real;

/// The long side of a product run as a GEMM (the larger of rows and terms, or of a reduction
/// grid's two sides) and its lanes are at least this; below it the lane loops are as fast.
pub(super) const MIN_SIDE: usize = 8;
/// The short side of a product run as a GEMM is at least this.
const MIN_SHORT_SIDE: usize = 2;

/// Whether a product with sides `a` and `b` runs as a GEMM.
fn gemm_sized(a: usize, b: usize) -> bool {
    a.min(b) >= MIN_SHORT_SIDE && a.max(b) >= MIN_SIDE
}

/// A group of linear combinations as `out = X · A (+ bias)`: see the module docs.
#[derive(Clone, Debug)]
pub(super) struct LinGemm {
    /// The source of term 0 in ascending row order, and the row step between sources.
    src: Src,
    step: u32,
    /// Number of `c·a` terms per row.
    terms: u32,
    /// `u[table + r * terms + i]` is row `r`'s coefficient of the `i`-th source.
    pub(super) table: u32,
    /// `u[bias + r]` is row `r`'s uniform term.
    pub(super) bias: Option<u32>,
}

/// How a group of linear combinations with term shapes `shape` maps to a GEMM: the
/// plan, the term indices in ascending source order (whose coefficients fill the table) and the
/// index of the bias term. The caller places the table and bias in the uniform file.
pub(super) fn lin_gemm(
    shape: &[Shape],
    rows: usize,
) -> Option<(LinGemm, Vec<usize>, Option<usize>)> {
    if rows < MIN_SHORT_SIDE {
        return None;
    }
    let mut scaled: Vec<usize> = Vec::with_capacity(shape.len());
    let mut bias = None;
    for (t, sh) in shape.iter().enumerate() {
        match sh.kind {
            Kind::Scaled => scaled.push(t),
            Kind::Uni if bias.is_none() => bias = Some(t),
            _ => return None,
        }
    }
    if !gemm_sized(scaled.len(), rows) {
        return None;
    }
    scaled.sort_by_key(|&t| shape[t].a.row);
    let rows_of: Vec<Src> = scaled.iter().map(|&t| shape[t].a).collect();
    let step = even_step(&rows_of)?;
    let plan = LinGemm {
        src: rows_of[0],
        step,
        terms: scaled.len() as u32,
        table: 0,
        bias: None,
    };
    Some((plan, scaled, bias))
}

/// The row step of sources in one bank at evenly spaced, ascending rows.
fn even_step(srcs: &[Src]) -> Option<u32> {
    let first = srcs.first()?;
    let step = srcs.get(1)?.row.checked_sub(first.row)?;
    let even = srcs
        .iter()
        .enumerate()
        .all(|(i, s)| s.bank == first.bank && s.row == first.row + i as u32 * step);
    (step > 0 && even).then_some(step)
}

impl LinGemm {
    /// Scratch needed to pad a short lane range: the sources and the results of
    /// [`MIN_SIDE`] lanes.
    pub(super) fn padded(&self, rows: usize) -> usize {
        MIN_SIDE * (self.terms as usize + rows)
    }
}

/// Runs a [`LinGemm`] over the lanes of `c` into `rows` destination rows of `dst` (rows of the
/// block width). A range of fewer than [`MIN_SIDE`] lanes is copied into `scratch` and padded
/// with zeros, so that every lane goes through the same GEMM: a sample's result does not depend
/// on how many samples share its block or its piece of time.
pub(super) fn run_lin<R: Real>(
    c: &Ctx<'_, '_, R>,
    u: &[R],
    g: &LinGemm,
    rows: usize,
    dst: &mut [R],
    scratch: &mut [R],
) {
    let (w, lo, n) = (c.l.width, c.l.lo, c.l.hi - c.l.lo);
    let terms = g.terms as usize;
    // The coefficients: `terms × rows`, row `r`'s in one run.
    let a = View {
        data: &u[g.table as usize..][..rows * terms],
        rows: terms,
        cols: rows,
        rs: 1,
        cs: terms,
    };
    let bias = |d: &mut [R], stride: usize, n: usize| match g.bias {
        Some(b) => {
            for r in 0..rows {
                d[r * stride..r * stride + n].fill(u[b as usize + r]);
            }
            true
        }
        None => false,
    };
    let bank = &c.bank(g.src.bank)[g.src.row as usize * w + lo..];
    let step = g.step as usize * w;
    if n >= MIN_SIDE {
        let x = View {
            data: bank,
            rows: n,
            cols: terms,
            rs: 1,
            cs: step,
        };
        let d = &mut dst[lo..];
        let accumulate = bias(d, w, n);
        gemm(d, (1, w), x, a, accumulate);
        return;
    }
    let (x, rest) = scratch.split_at_mut(MIN_SIDE * terms);
    let out = &mut rest[..MIN_SIDE * rows];
    for (i, col) in x.chunks_exact_mut(MIN_SIDE).enumerate() {
        col[..n].copy_from_slice(&bank[i * step..i * step + n]);
        col[n..].fill(R::zero());
    }
    let accumulate = bias(out, MIN_SIDE, MIN_SIDE);
    let x = View {
        data: x,
        rows: MIN_SIDE,
        cols: terms,
        rs: 1,
        cs: MIN_SIDE,
    };
    gemm(out, (1, MIN_SIDE), x, a, accumulate);
    for (r, col) in out.chunks_exact(MIN_SIDE).enumerate() {
        dst[r * w + lo..r * w + lo + n].copy_from_slice(&col[..n]);
    }
}

/// A grid of reductions `reduced[index[i + j m]] += Σ_s a_i[s] b_j[s]` as one GEMM, with the
/// lane-loop plan of the same reductions for short lane ranges.
#[derive(Clone, Debug)]
pub(super) struct ReduceGemm {
    a: Src,
    a_step: u32,
    m: u32,
    b: Src,
    b_step: u32,
    n: u32,
    /// The reduced index of each cell, column-major (`i + j * m`).
    index: Box<[u32]>,
    pub(super) fallback: Vec<ReducePlan>,
}

impl ReduceGemm {
    /// Scratch needed for the cells.
    pub(super) fn cells(&self) -> usize {
        (self.m * self.n) as usize
    }
}

/// Finds grids of plain products among `reduces`: for every pair of banks, the `a` rows that
/// pair with the same evenly spaced `b` rows, themselves evenly spaced. Returns the grids and
/// which reductions they cover.
pub(super) fn reduce_grids(reduces: &[Reduce]) -> (Vec<(ReduceGemm, Vec<usize>)>, Vec<bool>) {
    use std::collections::BTreeMap;
    let mut covered = vec![false; reduces.len()];
    /// a row → [(b row, index into `reduces`)]
    type Pairs = BTreeMap<u32, Vec<(u32, usize)>>;
    let mut by_banks: BTreeMap<(u8, u8), Pairs> = BTreeMap::new();
    for (k, r) in reduces.iter().enumerate() {
        if r.shape.kind == Kind::Prod && r.second.is_none() {
            by_banks
                .entry((r.shape.a.bank, r.shape.b.bank))
                .or_default()
                .entry(r.shape.a.row)
                .or_default()
                .push((r.shape.b.row, k));
        }
    }
    let mut grids = Vec::new();
    for ((a_bank, b_bank), rows) in by_banks {
        // a rows with the same list of b rows, in ascending a order.
        let mut by_b: BTreeMap<Vec<u32>, Vec<u32>> = BTreeMap::new();
        for (a_row, mut pairs) in rows.clone() {
            pairs.sort_unstable();
            by_b.entry(pairs.iter().map(|p| p.0).collect())
                .or_default()
                .push(a_row);
        }
        for (b_rows, a_rows) in by_b {
            if !gemm_sized(a_rows.len(), b_rows.len()) {
                continue;
            }
            let src = |bank, rows: &[u32]| -> Vec<Src> {
                rows.iter().map(|&row| Src { bank, row }).collect()
            };
            let (Some(a_step), Some(b_step)) = (
                even_step(&src(a_bank, &a_rows)),
                even_step(&src(b_bank, &b_rows)),
            ) else {
                continue;
            };
            let m = a_rows.len();
            let mut index = vec![0u32; m * b_rows.len()];
            let mut members = Vec::with_capacity(index.len());
            for (i, a_row) in a_rows.iter().enumerate() {
                let mut pairs = rows[a_row].clone();
                pairs.sort_unstable();
                for (j, &(_, k)) in pairs.iter().enumerate() {
                    index[i + j * m] = reduces[k].index;
                    members.push(k);
                    covered[k] = true;
                }
            }
            members.sort_unstable();
            let grid = ReduceGemm {
                a: Src {
                    bank: a_bank,
                    row: a_rows[0],
                },
                a_step,
                m: m as u32,
                b: Src {
                    bank: b_bank,
                    row: b_rows[0],
                },
                b_step,
                n: b_rows.len() as u32,
                index: index.into(),
                fallback: Vec::new(),
            };
            grids.push((grid, members));
        }
    }
    (grids, covered)
}

/// Adds a grid's sums into `reduced`, using `scratch` for the cells. Returns false, computing
/// nothing, when the lane range is too short.
pub(super) fn run_reduce<R: Real>(
    c: &Ctx<'_, '_, R>,
    g: &ReduceGemm,
    scratch: &mut [R],
    reduced: &mut [R],
) -> bool {
    let (w, lo, lanes) = (c.l.width, c.l.lo, c.l.hi - c.l.lo);
    if lanes < MIN_SIDE {
        return false;
    }
    let (m, n) = (g.m as usize, g.n as usize);
    // aᵀ: m × lanes, b: lanes × n.
    let a = View {
        data: &c.bank(g.a.bank)[g.a.row as usize * w + lo..],
        rows: m,
        cols: lanes,
        rs: g.a_step as usize * w,
        cs: 1,
    };
    let b = View {
        data: &c.bank(g.b.bank)[g.b.row as usize * w + lo..],
        rows: lanes,
        cols: n,
        rs: 1,
        cs: g.b_step as usize * w,
    };
    let cells = &mut scratch[..m * n];
    gemm(cells, (1, m), a, b, false);
    for (&index, &sum) in g.index.iter().zip(cells.iter()) {
        reduced[index as usize] += sum;
    }
    true
}
