//! The inner loop of the extended method of successive approximations (E-MSA; Li, Chen, Tai &
//! E, "Maximum Principle Based Algorithms for Deep Learning", JMLR 18, 2018, arXiv:1710.09513):
//! a few L-BFGS iterations on one layer's negated augmented Hamiltonian. The Hamiltonian
//! itself, built from compiled kernels, and the loop over mini-batches and layers live in
//! `train::msa`; this module sees only a closure over a flat vector, like [`Lbfgs`].

use serde::{Deserialize, Serialize};

use super::{Hyper, Lbfgs, LineSearchError, Objective};

/// The settings of `msa(rho, reg, maxiter, ...)`. Stateless between mini-batches: every layer
/// of every mini-batch starts a fresh L-BFGS, because the function it maximises (built on
/// that mini-batch's frozen states and costates) is new each time. A checkpoint therefore
/// only needs these numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Msa {
    /// Weight ρ of the two consistency penalties.
    pub rho: f64,
    /// Weight of the `½‖θ‖²` regulariser of each layer.
    pub reg: f64,
    /// L-BFGS iterations per layer and mini-batch.
    pub maxiter: usize,
    /// L-BFGS curvature pairs.
    pub history: usize,
}

/// What the maximisation of one layer did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MsaLayerReport {
    /// Accepted L-BFGS iterations.
    pub iterations: usize,
    /// Objective evaluations.
    pub evals: usize,
    /// The minimised objective (−H̃) at the start.
    pub start: f64,
    /// The minimised objective at the point returned.
    pub end: f64,
}

impl Msa {
    /// The settings from a `train msa(...)` declaration.
    pub fn new(hyper: &Hyper) -> Msa {
        Msa {
            rho: hyper.rho,
            reg: hyper.reg,
            maxiter: hyper.maxiter,
            history: hyper.history,
        }
    }

    /// At most `maxiter` L-BFGS iterations minimising `objective` from `x`; `x` ends at the
    /// best point found. A line search that finds no Wolfe point, a stationary start or a
    /// non-finite start are not failures here: L-BFGS leaves `x` at its last accepted
    /// point, which (every accepted step decreasing the objective) is the best one seen, and
    /// the layer simply stops early. Only the objective's own error is passed on.
    pub fn minimise<E>(
        &self,
        x: &mut [f64],
        objective: &mut Objective<'_, E>,
    ) -> Result<MsaLayerReport, E> {
        let mut lbfgs = Lbfgs::new(self.history);
        let mut report = MsaLayerReport {
            iterations: 0,
            evals: 0,
            start: f64::NAN,
            end: f64::NAN,
        };
        for _ in 0..self.maxiter {
            match lbfgs.step(x, objective) {
                Ok(step) => {
                    report.evals += step.evals;
                    if report.start.is_nan() {
                        report.start = step.previous_loss;
                    }
                    report.end = step.loss;
                    if step.converged {
                        break;
                    }
                    report.iterations += 1;
                }
                Err(LineSearchError::Objective(e)) => return Err(e),
                Err(
                    LineSearchError::NoWolfePoint { evals } | LineSearchError::NotDescent { evals },
                ) => {
                    report.evals += evals;
                    break;
                }
                Err(LineSearchError::NonFiniteStart) => {
                    report.evals += 1;
                    break;
                }
            }
        }
        if let Some(loss) = lbfgs.loss() {
            if report.start.is_nan() {
                report.start = loss;
            }
            report.end = loss;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn settings(maxiter: usize) -> Msa {
        Msa {
            rho: 1.0,
            reg: 0.0,
            maxiter,
            history: 10,
        }
    }

    #[test]
    fn stops_after_maxiter_iterations_at_a_lower_value() {
        // Rosenbrock from (−1.2, 1): three iterations decrease it but do not converge.
        let mut calls = 0;
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), Infallible> {
            calls += 1;
            let (a, b) = (x[0], x[1]);
            let f = (1.0 - a) * (1.0 - a) + 100.0 * (b - a * a) * (b - a * a);
            let g = vec![
                -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                200.0 * (b - a * a),
            ];
            Ok((f, g))
        };
        let mut x = vec![-1.2, 1.0];
        let report = settings(3).minimise(&mut x, &mut objective).unwrap();
        assert_eq!(report.iterations, 3);
        assert_eq!(report.evals, calls);
        assert!((report.start - 24.2).abs() < 1e-12, "{report:?}");
        assert!(report.end < report.start, "{report:?}");
    }

    #[test]
    fn a_failed_line_search_keeps_the_best_point() {
        // An objective unbounded below along −x: the first search extrapolates until its
        // budget is spent and fails; the point stays where it was and the layer stops.
        let mut objective =
            |x: &[f64]| -> Result<(f64, Vec<f64>), Infallible> { Ok((-x[0], vec![-1.0])) };
        let mut x = vec![0.5];
        let report = settings(5).minimise(&mut x, &mut objective).unwrap();
        assert_eq!(x, [0.5]);
        assert_eq!(report.iterations, 0);
        assert_eq!((report.start, report.end), (-0.5, -0.5));
    }

    #[test]
    fn a_non_finite_start_leaves_the_point() {
        let mut objective =
            |_: &[f64]| -> Result<(f64, Vec<f64>), Infallible> { Ok((f64::NAN, vec![0.0])) };
        let mut x = vec![2.0];
        let report = settings(5).minimise(&mut x, &mut objective).unwrap();
        assert_eq!(x, [2.0]);
        assert_eq!(report.iterations, 0);
    }

    #[test]
    fn errors_of_the_objective_are_passed_on() {
        let mut objective =
            |_: &[f64]| -> Result<(f64, Vec<f64>), String> { Err("solve failed".into()) };
        let mut x = vec![2.0];
        let err = settings(5).minimise(&mut x, &mut objective).unwrap_err();
        assert_eq!(err, "solve failed");
    }
}
