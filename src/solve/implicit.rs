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
    let dim = y0.len();
    let h = tl.fixed_h();
    let mut y = y0.to_vec();
    let mut y_old = y0.to_vec();
    let mut z = vec![0.0; dim];
    let mut r = vec![0.0; dim];
    let mut jac = vec![0.0; dim * dim];
    let mut lu = DenseLu::new(dim);
    let mut saver = LinearSaver::new();
    saver.emit(tl, 0, tl.t0, y0, tl.t0, y0, 1, out);

    for n in 0..tl.steps {
        let t = tl.grid(n);
        let t_next = tl.grid(n + 1);
        let tau = tl.stage_time(t_next, t + 0.5 * h, h);
        let tau_s = [tau];
        y_old.copy_from_slice(&y);

        // Simplified Newton first; if it diverges or stalls, full Newton from the predictor.
        let converged = [false, true].into_iter().any(|full| {
            z.copy_from_slice(&y);
            let max_iter = if full {
                NEWTON_MAX_ITER_FULL
            } else {
                NEWTON_MAX_ITER
            };
            let mut norm_old = f64::NAN;
            for it in 0..max_iter {
                if it == 0 || full {
                    sys.jacobian(tau, &z, &mut jac, ws);
                    stats.jac_evals += 1;
                    stats.lu_decompositions += 1;
                    if !lu.factor_shifted(1.0 / h, &jac) {
                        return false;
                    }
                }
                // (I/h − J) δ = (y_n − z)/h + f(t_{n+1}, z)
                sys.rhs(&tau_s, &z, &mut r, ws);
                stats.rhs_evals += 1;
                for i in 0..dim {
                    r[i] += (y[i] - z[i]) / h;
                }
                if first_non_finite(&r).is_some() {
                    return false;
                }
                lu.solve(&mut r);
                let mut sum = 0.0;
                for i in 0..dim {
                    z[i] += r[i];
                    sum += (r[i] / (options.atol + options.rtol * z[i].abs())).powi(2);
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
        y.copy_from_slice(&z);
        stats.steps += 1;
        if let Some(i) = first_non_finite(&y) {
            return Err(SolveError::NonFinite {
                t: t_next,
                sample: 0,
                component: i,
            });
        }
        saver.emit(tl, n + 1, t, &y_old, t_next, &y, 1, out);
    }
    Ok(())
}
