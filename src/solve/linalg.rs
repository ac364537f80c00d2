//! The stiff solvers' linear algebra: the Jacobian `J` and the LU of `a I − J`, dense or banded,
//! in storage allocated once ([`IterationMatrix`]).
//!
//! Dense: `nalgebra::LU::new` takes its matrix by value and allocates a permutation on every
//! call; the stiff solvers refactor often, so the factorization runs in place in a preallocated
//! nalgebra matrix (the same row-pivoted Gaussian elimination as nalgebra's), and the
//! triangular solves are plain loops.
//!
//! Banded: when the system reports its Jacobian's structural nonzeros
//! ([`super::System::jacobian_pattern`]), the states are renumbered by reverse Cuthill–McKee
//! (a method-of-lines model that declares `u[N]` then `v[N]` couples `u_j` with `v_j`, a band
//! of width N in declaration order, 2 or 3 after renumbering), and if the band is narrow the
//! LU is LAPACK's `dgbtf2`: partial pivoting within the band, whose upper part grows to
//! `kl + ku`. The Jacobian is then evaluated by compressed JVPs: columns that share no row get
//! one tangent lane together (greedy colouring, Curtis–Powell–Reid), so a tridiagonal-like
//! Jacobian costs a handful of lanes, not `dim`, and only its nonzeros are stored.

#![expect(
    clippy::needless_range_loop,
    reason = "index loops mirror the substitutions over rows and columns"
)]

use nalgebra::DMatrix;

use super::System;

/// How the stiff solvers factor `a I − J` (the schedule's `linear =`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinearSolver {
    /// Banded when the Jacobian's pattern allows it ([`choose_band`]), else dense.
    #[default]
    Auto,
    /// Dense LU whatever the structure.
    Dense,
    /// Banded LU on the renumbered states, whatever the band's width (dense storage when the
    /// system reports no pattern: a full band).
    Banded,
}

impl LinearSolver {
    /// The schedule spelling.
    pub fn name(self) -> &'static str {
        match self {
            LinearSolver::Auto => "auto",
            LinearSolver::Dense => "dense",
            LinearSolver::Banded => "banded",
        }
    }
}

/// An LU factorization `P A = L U` of a `dim × dim` matrix, reusable across steps.
pub(crate) struct DenseLu {
    m: DMatrix<f64>,
    piv: Vec<usize>,
}

impl DenseLu {
    pub fn new(dim: usize) -> Self {
        DenseLu {
            m: DMatrix::zeros(dim, dim),
            piv: vec![0; dim],
        }
    }

    /// Factors `a I − jac` (`jac` row-major `dim × dim`); the matrix every stiff method here
    /// needs, up to scaling. Returns false when it is singular or not finite.
    pub fn factor_shifted(&mut self, a: f64, jac: &[f64]) -> bool {
        let n = self.piv.len();
        for i in 0..n {
            for j in 0..n {
                self.m[(i, j)] = -jac[i * n + j];
            }
            self.m[(i, i)] += a;
        }
        self.factor()
    }

    fn factor(&mut self) -> bool {
        let n = self.piv.len();
        for i in 0..n {
            let p = self.m.view_range(i.., i).icamax() + i;
            let diag = self.m[(p, i)];
            if diag == 0.0 || !diag.is_finite() {
                return false;
            }
            self.piv[i] = p;
            if p != i {
                self.m.swap_rows(i, p);
            }
            let inv = 1.0 / diag;
            for r in i + 1..n {
                self.m[(r, i)] *= inv;
            }
            for c in i + 1..n {
                let u = self.m[(i, c)];
                if u != 0.0 {
                    for r in i + 1..n {
                        let l = self.m[(r, i)];
                        self.m[(r, c)] -= l * u;
                    }
                }
            }
        }
        true
    }

    /// Solves `A x = b` in place.
    pub fn solve(&self, b: &mut [f64]) {
        for (i, &p) in self.piv.iter().enumerate() {
            if p != i {
                b.swap(i, p);
            }
        }
        // Plain substitutions: nalgebra's triangular solves cost ~240 instructions for a 3×3
        // (Robertson's 884 solves were 15% of its BDF solve under callgrind).
        let n = b.len();
        for j in 0..n {
            let bj = b[j];
            if bj != 0.0 {
                for i in j + 1..n {
                    b[i] -= self.m[(i, j)] * bj;
                }
            }
        }
        // The diagonal of U is nonzero (checked in `factor`).
        for j in (0..n).rev() {
            b[j] /= self.m[(j, j)];
            let bj = b[j];
            for i in 0..j {
                b[i] -= self.m[(i, j)] * bj;
            }
        }
    }
}

/// An LU factorization `P A = L U` of a `dim × dim` band matrix with `kl` sub- and `ku`
/// super-diagonals, LAPACK's band storage and algorithm (`dgbtf2`/`dgbtrs`): column `j` holds
/// rows `j − kl − ku ..= j + kl` at `ab[j * ldab ..]`, the top `kl` rows for the fill-in that
/// row interchanges bring into `U`.
pub(crate) struct BandedLu {
    n: usize,
    kl: usize,
    ku: usize,
    ab: Vec<f64>,
    piv: Vec<usize>,
}

impl BandedLu {
    pub fn new(n: usize, kl: usize, ku: usize) -> Self {
        BandedLu {
            n,
            kl,
            ku,
            ab: vec![0.0; n * (2 * kl + ku + 1)],
            piv: vec![0; n],
        }
    }

    fn ldab(&self) -> usize {
        2 * self.kl + self.ku + 1
    }

    /// The storage index of `A(i, j)`, for `j − kl − ku ≤ i ≤ j + kl`.
    fn at(&self, i: usize, j: usize) -> usize {
        j * self.ldab() + self.kl + self.ku + i - j
    }

    /// Zeroes the matrix, for [`BandedLu::add`] and [`BandedLu::factor`].
    pub fn clear(&mut self) {
        self.ab.fill(0.0);
    }

    /// `A(i, j) += v`; `(i, j)` must lie in the band.
    pub fn add(&mut self, i: usize, j: usize, v: f64) {
        debug_assert!(i <= j + self.kl && j <= i + self.ku);
        let k = self.at(i, j);
        self.ab[k] += v;
    }

    /// Factors in place; false when a pivot is zero or not finite.
    pub fn factor(&mut self) -> bool {
        let (n, kl, ku) = (self.n, self.kl, self.ku);
        let ldab = self.ldab();
        let kv = kl + ku;
        // The last column that row interchanges so far have reached.
        let mut ju = 0;
        for j in 0..n {
            let km = kl.min(n - 1 - j);
            let col = j * ldab + kv;
            let mut jp = 0;
            let mut best = self.ab[col].abs();
            for r in 1..=km {
                let v = self.ab[col + r].abs();
                if v > best || best.is_nan() {
                    (jp, best) = (r, v);
                }
            }
            self.piv[j] = j + jp;
            let pivot = self.ab[col + jp];
            if pivot == 0.0 || !pivot.is_finite() {
                return false;
            }
            ju = ju.max((j + ku + jp).min(n - 1));
            if jp != 0 {
                for c in j..=ju {
                    let (a, b) = (self.at(j, c), self.at(j + jp, c));
                    self.ab.swap(a, b);
                }
            }
            let inv = 1.0 / pivot;
            for r in 1..=km {
                self.ab[col + r] *= inv;
            }
            for c in j + 1..=ju {
                let u = self.ab[self.at(j, c)];
                if u != 0.0 {
                    let base = self.at(j, c);
                    for r in 1..=km {
                        self.ab[base + r] -= self.ab[col + r] * u;
                    }
                }
            }
        }
        true
    }

    /// Solves `A x = b` in place.
    pub fn solve(&self, b: &mut [f64]) {
        let (n, kl) = (self.n, self.kl);
        let ldab = self.ldab();
        let kv = kl + self.ku;
        for j in 0..n {
            let p = self.piv[j];
            if p != j {
                b.swap(j, p);
            }
            let bj = b[j];
            if bj != 0.0 {
                let col = j * ldab + kv;
                for r in 1..=kl.min(n - 1 - j) {
                    b[j + r] -= self.ab[col + r] * bj;
                }
            }
        }
        for j in (0..n).rev() {
            let col = j * ldab + kv;
            b[j] /= self.ab[col];
            let bj = b[j];
            for i in j.saturating_sub(kv)..j {
                b[i] -= self.ab[col + i - j] * bj;
            }
        }
    }
}

/// A renumbering of the states that makes a sparse Jacobian banded, with the band it gives.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Band {
    /// `order[new] = old`.
    pub order: Vec<usize>,
    pub kl: usize,
    pub ku: usize,
}

/// The band of `pattern` under `order` (`order[new] = old`).
fn band_under(pattern: &[Vec<u32>], order: Vec<usize>) -> Band {
    let mut new_of = vec![0; order.len()];
    for (new, &old) in order.iter().enumerate() {
        new_of[old] = new;
    }
    let (mut kl, mut ku) = (0, 0);
    for (i, row) in pattern.iter().enumerate() {
        let ni = new_of[i];
        for &j in row {
            let nj = new_of[j as usize];
            kl = kl.max(ni.saturating_sub(nj));
            ku = ku.max(nj.saturating_sub(ni));
        }
    }
    Band { order, kl, ku }
}

/// Reverse Cuthill–McKee on the symmetrised pattern: breadth-first from a vertex of least
/// degree in each component, neighbours by increasing degree, the whole order reversed.
fn reverse_cuthill_mckee(pattern: &[Vec<u32>]) -> Vec<usize> {
    let n = pattern.len();
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, row) in pattern.iter().enumerate() {
        for &j in row {
            let j = j as usize;
            if i != j {
                adj[i].push(j);
                adj[j].push(i);
            }
        }
    }
    for a in &mut adj {
        a.sort_unstable();
        a.dedup();
    }
    let mut by_degree: Vec<usize> = (0..n).collect();
    by_degree.sort_by_key(|&v| (adj[v].len(), v));
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    for &start in &by_degree {
        if placed[start] {
            continue;
        }
        placed[start] = true;
        let mut head = order.len();
        order.push(start);
        while head < order.len() {
            let v = order[head];
            head += 1;
            let mut next: Vec<usize> = adj[v].iter().copied().filter(|&w| !placed[w]).collect();
            next.sort_by_key(|&w| (adj[w].len(), w));
            for w in next {
                placed[w] = true;
                order.push(w);
            }
        }
    }
    order.reverse();
    order
}

/// The narrower of the declaration order's band and reverse Cuthill–McKee's.
pub(crate) fn best_band(pattern: &[Vec<u32>]) -> Band {
    let natural = band_under(pattern, (0..pattern.len()).collect());
    let rcm = band_under(pattern, reverse_cuthill_mckee(pattern));
    if rcm.kl + rcm.ku < natural.kl + natural.ku {
        rcm
    } else {
        natural
    }
}

/// The automatic choice: a band when it beats the dense LU by a wide margin. The banded LU
/// costs about `n · kl · (kl + ku)` and the dense one `n³ / 3`; below 16 states the dense
/// code's simplicity wins anyway.
pub(crate) fn choose_band(pattern: Option<&[Vec<u32>]>) -> Option<Band> {
    let pattern = pattern?;
    let n = pattern.len();
    if n < 16 {
        return None;
    }
    let band = best_band(pattern);
    let width = 2 * band.kl + band.ku + 1;
    (4 * width <= n).then_some(band)
}

/// Greedy colouring of the columns so that no two columns of one colour share a row; returns
/// each column's colour and the number of colours.
fn colour_columns(pattern: &[Vec<u32>]) -> (Vec<usize>, usize) {
    let n = pattern.len();
    let mut rows_of: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, row) in pattern.iter().enumerate() {
        for &j in row {
            rows_of[j as usize].push(i);
        }
    }
    let mut colour = vec![usize::MAX; n];
    let mut taken_by = Vec::<usize>::new();
    let mut colours = 0;
    for j in 0..n {
        // Colours used by any column sharing a row with j are marked with stamp j.
        for &i in &rows_of[j] {
            for &c in &pattern[i] {
                let cc = colour[c as usize];
                if cc != usize::MAX {
                    taken_by[cc] = j;
                }
            }
        }
        let free = (0..colours).find(|&c| taken_by[c] != j).unwrap_or_else(|| {
            colours += 1;
            taken_by.push(usize::MAX);
            colours - 1
        });
        colour[j] = free;
    }
    (colour, colours)
}

/// The nonzeros of one dense Jacobian at `y` moved by up to 1% (a fixed sequence), row by row:
/// moved, so that a state starting at zero (whose product terms vanish there) does not hide an
/// entry. Not a proof of structure: an entry that vanishes at that point by coincidence (a
/// `relu` switched off) is missed, and the Newton iterations then converge more slowly (as with
/// a stale Jacobian, which the solvers handle); RODAS4 loses accuracy order with a wrong `J`,
/// which its error control sees as smaller steps.
fn probe_pattern<S: System>(
    sys: &S,
    t: f64,
    y: &[f64],
    stats: &mut super::Stats,
    ws: &mut S::Workspace,
) -> Vec<Vec<u32>> {
    let n = y.len();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let moved: Vec<f64> = y
        .iter()
        .map(|&v| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0;
            v + 1e-2 * r * (1.0 + v.abs())
        })
        .collect();
    let mut jac = vec![0.0; n * n];
    sys.jacobian(t, &moved, &mut jac, ws);
    stats.jac_evals += 1;
    // NaN counts as nonzero: it must not hide an entry.
    (0..n)
        .map(|i| {
            (0..n as u32)
                .filter(|&j| jac[i * n + j as usize] != 0.0)
                .collect()
        })
        .collect()
}

/// The matrix `J` and the LU of `a I − J`, dense or banded; see the module docs.
#[expect(
    clippy::large_enum_variant,
    reason = "one per solve; boxing would only add an indirection"
)]
pub(crate) enum IterationMatrix {
    Dense {
        jac: Vec<f64>,
        lu: DenseLu,
    },
    Banded {
        /// Rows of the pattern, `values[k]` the entry `(i, cols[k])`, `k` in `row_ptr[i]..`.
        row_ptr: Vec<usize>,
        cols: Vec<u32>,
        values: Vec<f64>,
        colour: Vec<usize>,
        colours: usize,
        seeds: Vec<f64>,
        compressed: Vec<f64>,
        /// `new_of[old]`, the renumbering, and scratch for a permuted right-hand side.
        new_of: Vec<usize>,
        order: Vec<usize>,
        permuted: Vec<f64>,
        lu: BandedLu,
    },
}

impl IterationMatrix {
    /// Picks dense or banded for `sys` by `choice`, at the start `(t, y)` of a solve. A system
    /// without a symbolic pattern (tensor kernels) of 16 states or more has its pattern probed:
    /// the nonzeros of one dense Jacobian near `y` ([`probe_pattern`], counted in
    /// `stats.jac_evals`).
    pub fn new<S: System>(
        sys: &S,
        t: f64,
        y: &[f64],
        choice: LinearSolver,
        stats: &mut super::Stats,
        ws: &mut S::Workspace,
    ) -> Self {
        let dim = y.len();
        let probed: Vec<Vec<u32>>;
        let pattern = match sys.jacobian_pattern().filter(|p| p.len() == dim) {
            Some(p) => Some(p),
            None if choice != LinearSolver::Dense && dim >= 16 => {
                probed = probe_pattern(sys, t, y, stats, ws);
                Some(&probed[..])
            }
            None => None,
        };
        let band = match choice {
            LinearSolver::Dense => None,
            LinearSolver::Auto => choose_band(pattern),
            LinearSolver::Banded => Some(match pattern {
                Some(p) => best_band(p),
                None => Band {
                    order: (0..dim).collect(),
                    kl: dim.saturating_sub(1),
                    ku: dim.saturating_sub(1),
                },
            }),
        };
        let Some(band) = band else {
            return IterationMatrix::Dense {
                jac: vec![0.0; dim * dim],
                lu: DenseLu::new(dim),
            };
        };
        let full: Vec<Vec<u32>>;
        let pattern = match pattern {
            Some(p) => p,
            None => {
                full = (0..dim).map(|_| (0..dim as u32).collect()).collect();
                &full
            }
        };
        let mut row_ptr = vec![0];
        let mut cols = Vec::new();
        for row in pattern {
            cols.extend_from_slice(row);
            row_ptr.push(cols.len());
        }
        let (colour, colours) = colour_columns(pattern);
        let mut seeds = vec![0.0; dim * colours];
        for (j, &c) in colour.iter().enumerate() {
            seeds[j * colours + c] = 1.0;
        }
        let mut new_of = vec![0; dim];
        for (new, &old) in band.order.iter().enumerate() {
            new_of[old] = new;
        }
        IterationMatrix::Banded {
            values: vec![0.0; cols.len()],
            row_ptr,
            cols,
            colour,
            colours,
            compressed: vec![0.0; dim * colours],
            seeds,
            new_of,
            order: band.order,
            permuted: vec![0.0; dim],
            lu: BandedLu::new(dim, band.kl, band.ku),
        }
    }

    /// `"dense"` or `"banded"`.
    #[cfg(test)]
    pub fn kind(&self) -> &'static str {
        match self {
            IterationMatrix::Dense { .. } => "dense",
            IterationMatrix::Banded { .. } => "banded",
        }
    }

    /// Evaluates `J` at `(t, y)`; returns the index of a component whose row holds a value
    /// that is not finite, if any.
    pub fn evaluate<S: System>(
        &mut self,
        sys: &S,
        t: f64,
        y: &[f64],
        ws: &mut S::Workspace,
    ) -> Option<usize> {
        let dim = y.len();
        match self {
            IterationMatrix::Dense { jac, .. } => {
                sys.jacobian(t, y, jac, ws);
                super::first_non_finite(jac).map(|m| m / dim.max(1))
            }
            IterationMatrix::Banded {
                row_ptr,
                cols,
                values,
                colour,
                colours,
                seeds,
                compressed,
                ..
            } => {
                sys.jacobian_seeded(t, y, seeds, *colours, compressed, ws);
                let mut bad = None;
                for i in 0..dim {
                    for k in row_ptr[i]..row_ptr[i + 1] {
                        let v = compressed[i * *colours + colour[cols[k] as usize]];
                        if !v.is_finite() && bad.is_none() {
                            bad = Some(i);
                        }
                        values[k] = v;
                    }
                }
                bad
            }
        }
    }

    /// Factors `a I − J`; false when it is singular or not finite.
    pub fn factor_shifted(&mut self, a: f64) -> bool {
        match self {
            IterationMatrix::Dense { jac, lu } => lu.factor_shifted(a, jac),
            IterationMatrix::Banded {
                row_ptr,
                cols,
                values,
                new_of,
                lu,
                ..
            } => {
                lu.clear();
                for i in 0..new_of.len() {
                    let ni = new_of[i];
                    lu.add(ni, ni, a);
                    for k in row_ptr[i]..row_ptr[i + 1] {
                        lu.add(ni, new_of[cols[k] as usize], -values[k]);
                    }
                }
                lu.factor()
            }
        }
    }

    /// Solves `(a I − J) x = b` in place with the last factorization.
    pub fn solve(&mut self, b: &mut [f64]) {
        match self {
            IterationMatrix::Dense { lu, .. } => lu.solve(b),
            IterationMatrix::Banded {
                order,
                permuted,
                lu,
                ..
            } => {
                for (p, &old) in permuted.iter_mut().zip(order.iter()) {
                    *p = b[old];
                }
                lu.solve(permuted);
                for (p, &old) in permuted.iter().zip(order.iter()) {
                    b[old] = *p;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_pivoting_system() {
        // A = 2 I − J with J chosen so that A needs a row swap: A = [[0, 1, 2], [1, 0, 3], [4, -3, 8]].
        let a = [[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [4.0, -3.0, 8.0]];
        let mut jac = [0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                jac[i * 3 + j] = if i == j { 2.0 } else { 0.0 } - a[i][j];
            }
        }
        let mut lu = DenseLu::new(3);
        assert!(lu.factor_shifted(2.0, &jac));
        let x = [1.0, -2.0, 0.5];
        let mut b: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| a[i][j] * x[j]).sum())
            .collect();
        lu.solve(&mut b);
        for i in 0..3 {
            // Well-conditioned 3×3: a few ulps.
            assert!((b[i] - x[i]).abs() < 1e-14, "{b:?}");
        }
        assert!(!lu.factor_shifted(0.0, &[0.0; 9]));
    }
}

#[cfg(test)]
mod banded_tests {
    use super::*;

    /// A deterministic pseudo-random number in [-1, 1) (an LCG; no seed to forget).
    fn lcg(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// The 1-D Brusselator's pattern in declaration order `[u_1..u_N, v_1..v_N]`: tridiagonal
    /// blocks on the diagonal and `u_j ↔ v_j` coupling, a band of `N` before renumbering.
    fn brusselator_pattern(n: usize) -> Vec<Vec<u32>> {
        (0..2 * n)
            .map(|i| {
                let (block, j) = (i / n, i % n);
                let mut row: Vec<u32> = (j.saturating_sub(1)..(j + 2).min(n))
                    .map(|k| (block * n + k) as u32)
                    .collect();
                row.push(((1 - block) * n + j) as u32);
                row.sort_unstable();
                row
            })
            .collect()
    }

    #[test]
    fn banded_lu_matches_a_dense_solve_where_pivoting_crosses_rows() {
        // Sub-diagonals larger than the diagonal force row interchanges in every column, which
        // is what pushes U's band from ku to kl + ku.
        let (n, kl, ku) = (9, 2, 1);
        let mut seed = 7;
        let mut a = vec![0.0; n * n];
        let mut band = BandedLu::new(n, kl, ku);
        for i in 0..n {
            for j in i.saturating_sub(kl)..(i + ku + 1).min(n) {
                let v = lcg(&mut seed) + if i > j { 3.0 } else { 0.0 };
                a[i * n + j] = v;
                band.add(i, j, v);
            }
        }
        assert!(band.factor());
        assert!(band.piv.iter().enumerate().any(|(i, &p)| p != i));
        let x: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 * 0.25).collect();
        let mut b: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| a[i * n + j] * x[j]).sum())
            .collect();
        band.solve(&mut b);
        for i in 0..n {
            assert!((b[i] - x[i]).abs() < 1e-12, "{b:?} vs {x:?}");
        }
        let mut singular = BandedLu::new(3, 1, 1);
        assert!(!singular.factor());
    }

    #[test]
    fn renumbering_makes_the_brusselator_narrow() {
        let p = brusselator_pattern(50);
        let natural = band_under(&p, (0..100).collect());
        assert_eq!((natural.kl, natural.ku), (50, 50));
        let band = best_band(&p);
        // Interleaving u_j and v_j gives kl = ku = 2; RCM finds a band at least that narrow.
        assert!(band.kl <= 2 && band.ku <= 2, "{:?}", (band.kl, band.ku));
        let mut sorted = band.order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert!(choose_band(Some(&p)).is_some());
        assert!(choose_band(Some(&brusselator_pattern(4))).is_none());
        let dense: Vec<Vec<u32>> = (0..40).map(|_| (0..40).collect()).collect();
        assert!(choose_band(Some(&dense)).is_none());
    }

    #[test]
    fn colouring_never_puts_two_columns_of_one_row_together() {
        let p = brusselator_pattern(30);
        let (colour, colours) = colour_columns(&p);
        for row in &p {
            let mut seen: Vec<usize> = row.iter().map(|&j| colour[j as usize]).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), row.len());
        }
        // Each row has 4 entries; a greedy colouring of this structure needs few more.
        assert!((4..=6).contains(&colours), "{colours}");
    }

    /// A sparse nonlinear field whose dense Jacobian is known, to compare the two paths.
    struct Sparse {
        pattern: Vec<Vec<u32>>,
        /// Whether the pattern is reported (as the scalar IR does) or must be probed.
        symbolic: bool,
    }

    impl System for Sparse {
        type Workspace = ();
        fn workspace(&self, _: std::ops::Range<usize>) {}
        fn dim(&self) -> usize {
            self.pattern.len()
        }
        fn rhs(&self, _: &[f64], _: &[f64], _: &mut [f64], _: &mut ()) {
            unreachable!("the iteration matrix only needs the Jacobian")
        }
        fn jacobian(&self, _: f64, y: &[f64], jac: &mut [f64], _: &mut ()) {
            let n = y.len();
            jac.fill(0.0);
            for (i, row) in self.pattern.iter().enumerate() {
                for &j in row {
                    let j = j as usize;
                    jac[i * n + j] =
                        (1.0 + i as f64) * y[j].sin() - if i == j { 40.0 } else { 0.0 };
                }
            }
        }
        fn jacobian_pattern(&self) -> Option<&[Vec<u32>]> {
            self.symbolic.then_some(&self.pattern[..])
        }
    }

    #[test]
    fn banded_iteration_matrix_solves_what_the_dense_one_solves() {
        let sys = Sparse {
            pattern: brusselator_pattern(20),
            symbolic: true,
        };
        let n = 40;
        let y: Vec<f64> = (0..n).map(|i| 0.3 * i as f64).collect();
        let mut stats = crate::solve::Stats::default();
        let mut banded =
            IterationMatrix::new(&sys, 0.0, &y, LinearSolver::Auto, &mut stats, &mut ());
        let mut dense =
            IterationMatrix::new(&sys, 0.0, &y, LinearSolver::Dense, &mut stats, &mut ());
        assert_eq!(stats.jac_evals, 0, "a symbolic pattern needs no probe");
        assert_eq!((banded.kind(), dense.kind()), ("banded", "dense"));
        for m in [&mut banded, &mut dense] {
            assert_eq!(m.evaluate(&sys, 0.0, &y, &mut ()), None);
            assert!(m.factor_shifted(3.0));
        }
        let b: Vec<f64> = (0..n).map(|i| (i as f64).cos()).collect();
        let (mut xb, mut xd) = (b.clone(), b.clone());
        banded.solve(&mut xb);
        dense.solve(&mut xd);
        for i in 0..n {
            assert!((xb[i] - xd[i]).abs() < 1e-12 * xd[i].abs().max(1.0), "{i}");
        }
        // Residual of the banded solution against the dense matrix 3 I − J.
        let mut jac = vec![0.0; n * n];
        sys.jacobian(0.0, &y, &mut jac, &mut ());
        for i in 0..n {
            let r: f64 = (0..n)
                .map(|j| (if i == j { 3.0 } else { 0.0 } - jac[i * n + j]) * xb[j])
                .sum::<f64>()
                - b[i];
            assert!(r.abs() < 1e-12, "row {i}: {r}");
        }
    }

    #[test]
    fn a_probed_pattern_finds_the_band_without_the_ir() {
        let sys = Sparse {
            pattern: brusselator_pattern(20),
            symbolic: false,
        };
        let y: Vec<f64> = (0..40).map(|i| 0.1 + 0.2 * i as f64).collect();
        let mut stats = crate::solve::Stats::default();
        let m = IterationMatrix::new(&sys, 0.0, &y, LinearSolver::Auto, &mut stats, &mut ());
        assert_eq!((m.kind(), stats.jac_evals), ("banded", 1));
        assert_eq!(
            probe_pattern(&sys, 0.0, &y, &mut stats, &mut ()),
            sys.pattern
        );
        let m = IterationMatrix::new(&sys, 0.0, &y, LinearSolver::Dense, &mut stats, &mut ());
        assert_eq!((m.kind(), stats.jac_evals), ("dense", 2));
    }
}
