//! Fixed-step implicit Euler, one sample at a time: `y_{n+1} = y_n + h f(t_{n+1}, y_{n+1})`
//! solved by simplified Newton iterations with the Jacobian and LU of `I/h − J` formed once
//! per step at the predictor `y_n`; if they diverge or stall (large `h` on a nonlinear field),
//! full Newton from `y_n` with a fresh Jacobian every iteration, and `NewtonFailed` if that
//! fails too. Save times between steps are interpolated linearly, as for the other
//! fixed-step schedules. Called by [`super::solve_block`] with a width-1 workspace.

use super::fixed::LinearSaver;
use super::linalg::DenseLu;
use super::timeline::Timeline;
use super::{first_non_finite, SolveError, SolverOptions, Stats, System};

/// Newton stops when its estimated remaining error is this fraction of the tolerances, so the
/// implicit equation's error stays well below the method's own (SciPy's BDF uses 0.03).
const NEWTON_TOL: f64 = 1e-3;
/// Simplified-Newton iterations (one Jacobian and LU per step) before falling back.
const NEWTON_MAX_ITER: usize = 10;
/// Full-Newton iterations (Jacobian and LU every iteration) before the step fails.
const NEWTON_MAX_ITER_FULL: usize = 30;

/// The buffers of implicit Euler steps on one sample, allocated once.
pub(crate) struct ImplicitEuler {
    z: Vec<f64>,
    r: Vec<f64>,
    jac: Vec<f64>,
    lu: DenseLu,
}

impl ImplicitEuler {
    pub fn new(dim: usize) -> Self {
        ImplicitEuler {
            z: vec![0.0; dim],
            r: vec![0.0; dim],
            jac: vec![0.0; dim * dim],
            lu: DenseLu::new(dim),
        }
    }

    /// The time at which step `n` evaluates `f`: its end, on its own side of a breakpoint.
    pub fn eval_time(tl: &Timeline, n: usize) -> f64 {
        let h = tl.fixed_h();
        tl.stage_time(tl.grid(n + 1), tl.grid(n) + 0.5 * h, h)
    }

    /// Advances `y` by step `n` of the grid (the same bits whether called by the solve or by
    /// a gradient method replaying a segment from a checkpoint).
    #[allow(clippy::too_many_arguments)]
    pub fn step<S: System>(
        &mut self,
        sys: &S,
        options: &SolverOptions,
        tl: &Timeline,
        n: usize,
        y: &mut [f64],
        stats: &mut Stats,
        ws: &mut S::Workspace,
    ) -> Result<(), SolveError> {
        let dim = y.len();
        let h = tl.fixed_h();
        let t_next = tl.grid(n + 1);
        let tau = Self::eval_time(tl, n);
        let tau_s = [tau];
        let ImplicitEuler { z, r, jac, lu } = self;
        let atol = |i: usize| {
            options
                .atol_components
                .get(i)
                .copied()
                .unwrap_or(options.atol)
        };

        // Simplified Newton first; if it diverges or stalls, full Newton from the predictor.
        let converged = [false, true].into_iter().any(|full| {
            z.copy_from_slice(y);
            let max_iter = if full {
                NEWTON_MAX_ITER_FULL
            } else {
                NEWTON_MAX_ITER
            };
            let mut norm_old = f64::NAN;
            for it in 0..max_iter {
                if it == 0 || full {
                    sys.jacobian(tau, z, jac, ws);
                    stats.jac_evals += 1;
                    stats.lu_decompositions += 1;
                    if !lu.factor_shifted(1.0 / h, jac) {
                        return false;
                    }
                }
                // (I/h − J) δ = (y_n − z)/h + f(t_{n+1}, z)
                sys.rhs(&tau_s, z, r, ws);
                stats.rhs_evals += 1;
                for i in 0..dim {
                    r[i] += (y[i] - z[i]) / h;
                }
                if first_non_finite(r).is_some() {
                    return false;
                }
                lu.solve(r);
                let mut sum = 0.0;
                for i in 0..dim {
                    z[i] += r[i];
                    sum += (r[i] / (atol(i) + options.rtol * z[i].abs())).powi(2);
                }
                let norm = (sum / dim.max(1) as f64).sqrt();
                // With a convergence rate, the remaining error is about rate/(1 − rate) ‖δ‖;
                // the first iteration has none and must be a thousand times smaller.
                let rate = norm / norm_old;
                let done = if it == 0 {
                    norm * 1e3 <= NEWTON_TOL
                } else {
                    rate < 1.0 && norm * rate / (1.0 - rate) <= NEWTON_TOL
                };
                if norm == 0.0 || done {
                    return true;
                }
                // Simplified Newton converges linearly or not at all; full Newton may wander
                // before it converges quadratically, so only non-finite values stop it early.
                if !norm.is_finite() || (!full && it > 0 && rate >= 1.0) {
                    return false;
                }
                norm_old = norm;
            }
            false
        });
        if !converged {
            return Err(SolveError::NewtonFailed {
                t: t_next,
                sample: 0,
            });
        }
        y.copy_from_slice(z);
        stats.steps += 1;
        if let Some(i) = first_non_finite(y) {
            return Err(SolveError::NonFinite {
                t: t_next,
                sample: 0,
                component: i,
            });
        }
        Ok(())
    }
}

/// Integrates one sample (`y0` of length `dim`); `out` is `[save][dim]`. Errors name sample 0.
pub(crate) fn solve<S: System>(
    sys: &S,
    options: &SolverOptions,
    tl: &Timeline,
    y0: &[f64],
    out: &mut [f64],
    stats: &mut Stats,
    ws: &mut S::Workspace,
) -> Result<(), SolveError> {
    let mut y = y0.to_vec();
    let mut y_old = y0.to_vec();
    let mut stepper = ImplicitEuler::new(y0.len());
    let mut saver = LinearSaver::new();
    saver.emit(tl, 0, tl.t0, y0, tl.t0, y0, 1, out);
    for n in 0..tl.steps {
        y_old.copy_from_slice(&y);
        stepper.step(sys, options, tl, n, &mut y, stats, ws)?;
        saver.emit(tl, n + 1, tl.grid(n), &y_old, tl.grid(n + 1), &y, 1, out);
    }
    Ok(())
}
