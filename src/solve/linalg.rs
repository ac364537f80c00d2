//! Dense LU with partial pivoting for the stiff solvers, in storage allocated once.
//!
//! `nalgebra::LU::new` takes its matrix by value and allocates a permutation on every call;
//! the stiff solvers refactor every step, so the factorization here runs in place in a
//! preallocated nalgebra matrix (the same row-pivoted Gaussian elimination as nalgebra's), and
//! the triangular solves are nalgebra's.

use nalgebra::{DMatrix, DVectorViewMut};

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
        let n = b.len();
        let mut v = DVectorViewMut::from_slice(b, n);
        // The diagonal of U is nonzero (checked in `factor`), so neither solve can fail.
        let _ = self.m.solve_lower_triangular_with_diag_mut(&mut v, 1.0);
        let _ = self.m.solve_upper_triangular_mut(&mut v);
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
