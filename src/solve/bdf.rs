//! Variable-order (1–5), variable-step BDF, one sample at a time.
//!
//! The quasi-constant-step form of Byrne & Hindmarsh as implemented by SciPy's `BDF` and
//! diffsol's `Bdf` (after MATLAB's `ode15s`, Shampine & Reichelt 1997): the history is the
//! array `D` of backward differences of the interpolating polynomial at spacing `h`; a step
//! change rescales `D` with the `R·U` matrices, the predictor is `Σ D_j`, the corrector solves
//! `(1 − κ_k) γ_k d + Σ_{m=1..k} γ_m D_m − h f(t_{n+1}, y_pred + d) = 0` for
//! `d = y_{n+1} − y_pred` by Newton iterations, and the local error is `C_k d`. Order and step
//! change only after `k + 1` steps of equal size, choosing among `k − 1, k, k + 1` the order that
//! allows the largest step.
//!
//! Linear algebra is reused as in CVODE: the Jacobian is re-evaluated only when Newton fails
//! to converge with a stale one (or after a breakpoint), and `I − c J` (`c = h/α_k`) is refactored
//! only when `c` moved more than 30% from the factored value or Newton failed; in between, the
//! Newton correction is scaled by `2 / (1 + c/c_LU)` to compensate for the stale `c`.
//! Landings are stepped onto exactly; a breakpoint restarts at order 1. Dense output evaluates
//! the interpolating polynomial held in `D`.

#![expect(
    clippy::needless_range_loop,
    reason = "index loops mirror the formulas over components and lanes"
)]

use super::linalg::IterationMatrix;
use super::rosenbrock::initial_step_at;
use super::tableau::BDF_MAX_ORDER;
use super::timeline::Timeline;
use super::{first_non_finite, OnAccept, SolveError, SolverOptions, Stats, System};

const MAX_ORDER: usize = BDF_MAX_ORDER;
const ROWS: usize = MAX_ORDER + 3;
const NEWTON_MAX_ITER: usize = 4;
const MIN_FACTOR: f64 = 0.2;
const MAX_FACTOR: f64 = 10.0;
/// The formulas' modifiers `κ_k`: zero, the plain BDFs (as CVODE). [`super::tableau::NDF_KAPPA`]
/// gives the NDFs of `ode15s`/SciPy; on Robertson to 1e5 they took 327 steps against 328.
const KAPPA: [f64; MAX_ORDER + 1] = [0.0; MAX_ORDER + 1];
/// Refactor `I − c J` when `c` drifts this far from the factored value (CVODE's `DGMAX`).
const MAX_C_DRIFT: f64 = 0.3;

/// `R(order, factor)` of Shampine & Reichelt: `R[i][j] = Π_{r=1..i} (r − 1 − factor·j) / r`.
fn compute_r(order: usize, factor: f64) -> [[f64; MAX_ORDER + 1]; MAX_ORDER + 1] {
    let mut r = [[0.0; MAX_ORDER + 1]; MAX_ORDER + 1];
    for j in 0..=order {
        let mut p = 1.0;
        r[0][j] = 1.0;
        for i in 1..=order {
            p *= (i as f64 - 1.0 - factor * j as f64) / i as f64;
            r[i][j] = p;
        }
    }
    r
}

/// The method's history and constants for one sample.
struct History {
    dim: usize,
    /// `ROWS × dim`, row `j` is the `j`-th backward difference.
    d: Vec<f64>,
    tmp: Vec<f64>,
    order: usize,
    gamma: [f64; MAX_ORDER + 1],
    alpha: [f64; MAX_ORDER + 1],
    error_const: [f64; MAX_ORDER + 2],
}

impl History {
    fn new(dim: usize) -> Self {
        let mut gamma = [0.0; MAX_ORDER + 1];
        let mut alpha = [0.0; MAX_ORDER + 1];
        let mut error_const = [0.0; MAX_ORDER + 2];
        for k in 1..=MAX_ORDER {
            gamma[k] = gamma[k - 1] + 1.0 / k as f64;
        }
        for k in 0..=MAX_ORDER {
            alpha[k] = (1.0 - KAPPA[k]) * gamma[k];
            error_const[k] = KAPPA[k] * gamma[k] + 1.0 / (k as f64 + 1.0);
        }
        error_const[MAX_ORDER + 1] = 1.0 / (MAX_ORDER as f64 + 2.0);
        History {
            dim,
            d: vec![0.0; ROWS * dim],
            tmp: vec![0.0; (MAX_ORDER + 1) * dim],
            order: 1,
            gamma,
            alpha,
            error_const,
        }
    }

    fn row(&self, j: usize) -> &[f64] {
        &self.d[j * self.dim..(j + 1) * self.dim]
    }

    /// Order 1 from `(y, f)` with step `h`: `D0 = y`, `D1 = h f`.
    fn restart(&mut self, y: &[f64], f: &[f64], h: f64) {
        let n = self.dim;
        self.d.fill(0.0);
        self.d[..n].copy_from_slice(y);
        for i in 0..n {
            self.d[n + i] = h * f[i];
        }
        self.order = 1;
    }

    /// Rescales the differences for a step `factor` times the current one:
    /// `D[0..=k] ← (R(k, factor) U(k))ᵀ D[0..=k]` with `U = R(k, 1)`.
    fn change_step(&mut self, factor: f64) {
        let k = self.order;
        let n = self.dim;
        let r = compute_r(k, factor);
        let u = compute_r(k, 1.0);
        let mut ru = [[0.0; MAX_ORDER + 1]; MAX_ORDER + 1];
        for i in 0..=k {
            for j in 0..=k {
                ru[i][j] = (0..=k).map(|m| r[i][m] * u[m][j]).sum();
            }
        }
        for j in 0..=k {
            for c in 0..n {
                self.tmp[j * n + c] = (0..=k).map(|i| ru[i][j] * self.d[i * n + c]).sum();
            }
        }
        self.d[..(k + 1) * n].copy_from_slice(&self.tmp[..(k + 1) * n]);
    }

    /// After an accepted step with correction `dd`: `D_{k+2} = dd − D_{k+1}`, `D_{k+1} = dd`,
    /// then `D_i += D_{i+1}` downwards, so that `D0 = y_{n+1}`.
    fn update(&mut self, dd: &[f64]) {
        let (k, n) = (self.order, self.dim);
        for c in 0..n {
            self.d[(k + 2) * n + c] = dd[c] - self.d[(k + 1) * n + c];
            self.d[(k + 1) * n + c] = dd[c];
        }
        for i in (0..=k).rev() {
            for c in 0..n {
                self.d[i * n + c] += self.d[(i + 1) * n + c];
            }
        }
    }

    /// The interpolating polynomial at `ts`, for a history ending at `t` with spacing `h`.
    fn interpolate(&self, t: f64, h: f64, ts: f64, out: &mut [f64]) {
        out.copy_from_slice(self.row(0));
        let mut p = 1.0;
        for j in 1..=self.order {
            p *= (ts - (t - (j - 1) as f64 * h)) / (j as f64 * h);
            for (o, &dj) in out.iter_mut().zip(self.row(j)) {
                *o += dj * p;
            }
        }
    }
}

/// Scaled RMS norm `sqrt(mean (c v_i / scale_i)²)`.
fn norm(c: f64, v: &[f64], scale: &[f64]) -> f64 {
    let sum: f64 = v.iter().zip(scale).map(|(x, s)| (c * x / s).powi(2)).sum();
    (sum / v.len().max(1) as f64).sqrt()
}

/// Integrates one sample (`y0` of length `dim`); `out` is `[save][dim]`. Errors name sample 0.
/// `on_accept` sees every accepted step's end `(t, y)` (the continuous adjoint's checkpoints).
#[allow(clippy::too_many_arguments)]
pub(crate) fn solve<S: System>(
    sys: &S,
    options: &SolverOptions,
    tl: &Timeline,
    y0: &[f64],
    out: &mut [f64],
    stats: &mut Stats,
    ws: &mut S::Workspace,
    mut on_accept: OnAccept,
) -> Result<(), SolveError> {
    let dim = y0.len();
    let (rtol, dir) = (options.rtol, tl.dir);
    let atol = &options.atol_vec(dim)[..];
    let hmax = (tl.t1 - tl.t0).abs();
    // SciPy's bound, with the machine epsilon of the evaluations (f32 kernels make Newton
    // corrections below their roundoff noise).
    let eps = 2.0 * sys.unit_roundoff();
    let newton_tol = if rtol > 0.0 {
        (10.0 * eps / rtol).max(0.03f64.min(rtol.sqrt()))
    } else {
        0.03
    };

    let mut hist = History::new(dim);
    let mut t = tl.t0;
    let mut y = y0.to_vec();
    let mut f = vec![0.0; dim];
    let mut y_pred = vec![0.0; dim];
    let mut y_new = vec![0.0; dim];
    let mut psi = vec![0.0; dim];
    let mut dd = vec![0.0; dim];
    let mut dy = vec![0.0; dim];
    let mut scale = vec![0.0; dim];
    let mut probe = vec![0.0; dim];
    let mut matrix = IterationMatrix::new(sys, tl.t0, y0, options.linear, stats, ws);
    let mut c_lu: Option<f64> = None;

    let mut next_save = 0;
    while tl.save.get(next_save) == Some(&t) {
        out[next_save * dim..(next_save + 1) * dim].copy_from_slice(&y);
        next_save += 1;
    }

    let mut landing = 0;
    let mut attempts = 0;
    let mut h_abs = 0.0;
    let mut n_equal_steps = 0;
    let mut needs_start = true;

    loop {
        if needs_start {
            // (Re)start at order 1: f and J at the new piece, HINIT for an O(h²) error.
            let t_eval = tl.start_time(t);
            sys.rhs(&[t_eval], &y, &mut f, ws);
            stats.rhs_evals += 1;
            if let Some(i) = first_non_finite(&y).or_else(|| first_non_finite(&f)) {
                return Err(SolveError::NonFinite {
                    t,
                    sample: 0,
                    component: i,
                });
            }
            let next = tl.landings[landing].t;
            let h = initial_step_at(
                sys, tl, t, &y, &f, &mut probe, &mut y_new, rtol, atol, 2, stats, ws, next,
            );
            h_abs = h.abs();
            hist.restart(&y, &f, h);
            // A non-finite entry fails the factorization, which halves the step.
            let _ = matrix.evaluate(sys, t_eval, &y, ws);
            stats.jac_evals += 1;
            c_lu = None;
            n_equal_steps = 0;
            needs_start = false;
        }

        // Keep h within [min_step, hmax].
        let min_step = 10.0 * (t.next_up() - t).abs().max((t.next_down() - t).abs());
        if h_abs > hmax {
            hist.change_step(hmax / h_abs);
            h_abs = hmax;
            n_equal_steps = 0;
        }
        let h_planned = h_abs;
        let target = tl.landings[landing];
        let mut jac_current = false;
        let mut clipped;
        let n_iter: usize;

        // Attempt steps until one is accepted.
        loop {
            if attempts >= options.max_steps {
                return Err(SolveError::MaxStepsExceeded {
                    t,
                    sample: 0,
                    max_steps: options.max_steps,
                });
            }
            if h_abs < min_step || !h_abs.is_finite() {
                return Err(SolveError::StepSizeTooSmall { t, sample: 0 });
            }
            attempts += 1;
            let mut h = dir * h_abs;
            clipped = (t + h - target.t) * dir >= 0.0;
            if clipped {
                let factor = (target.t - t).abs() / h_abs;
                hist.change_step(factor);
                n_equal_steps = 0;
                h = target.t - t;
                h_abs = h.abs();
            }
            let t_new = if clipped { target.t } else { t + h };
            let t_eval = tl.stage_time(t_new, t + 0.5 * h, h);
            let k = hist.order;

            // Predictor and the history term of the corrector.
            for c in 0..dim {
                y_pred[c] = (0..=k).map(|j| hist.d[j * dim + c]).sum();
                psi[c] = (1..=k)
                    .map(|j| hist.gamma[j] * hist.d[j * dim + c])
                    .sum::<f64>()
                    / hist.alpha[k];
                scale[c] = atol[c] + rtol * y_pred[c].abs();
            }
            let cc = h / hist.alpha[k];

            // Newton on d = y − y_pred: (I − c J) Δ = c f(y) − ψ − d.
            let mut converged = false;
            let mut iters = 0;
            loop {
                let stale = match c_lu {
                    Some(c0) => (cc / c0 - 1.0).abs() > MAX_C_DRIFT,
                    None => true,
                };
                if stale {
                    stats.lu_decompositions += 1;
                    c_lu = if matrix.factor_shifted(1.0 / cc) {
                        Some(cc)
                    } else {
                        None
                    };
                }
                if let Some(c0) = c_lu {
                    let (ok, it) = newton(
                        sys,
                        ws,
                        stats,
                        t_eval,
                        cc,
                        c0,
                        &mut matrix,
                        &y_pred,
                        &psi,
                        &scale,
                        newton_tol,
                        &mut y_new,
                        &mut dd,
                        &mut dy,
                        &mut f,
                    );
                    converged = ok;
                    iters = it;
                }
                if converged || jac_current {
                    break;
                }
                let _ = matrix.evaluate(sys, t_eval, &y_pred, ws);
                stats.jac_evals += 1;
                jac_current = true;
                c_lu = None;
            }
            if !converged {
                // Halve the step; the LU is refactored for the new c.
                h_abs *= 0.5;
                hist.change_step(0.5);
                n_equal_steps = 0;
                c_lu = None;
                stats.rejected += 1;
                continue;
            }

            for c in 0..dim {
                scale[c] = atol[c] + rtol * y_new[c].abs();
            }
            let safety =
                0.9 * (2 * NEWTON_MAX_ITER + 1) as f64 / (2 * NEWTON_MAX_ITER + iters) as f64;
            let error_norm = norm(hist.error_const[k], &dd, &scale);
            if error_norm > 1.0 || !error_norm.is_finite() {
                let factor = if error_norm.is_finite() {
                    MIN_FACTOR.max(safety * error_norm.powf(-1.0 / (k as f64 + 1.0)))
                } else {
                    MIN_FACTOR
                };
                h_abs *= factor;
                hist.change_step(factor);
                n_equal_steps = 0;
                stats.rejected += 1;
                continue;
            }

            // Accepted.
            n_iter = iters;
            stats.steps += 1;
            n_equal_steps += 1;
            hist.update(&dd);
            while let Some(&ts) = tl.save.get(next_save) {
                if (ts - t_new) * dir > 0.0 {
                    break;
                }
                let dst = &mut out[next_save * dim..(next_save + 1) * dim];
                if ts == t_new {
                    dst.copy_from_slice(&y_new);
                } else {
                    hist.interpolate(t_new, h, ts, dst);
                }
                next_save += 1;
            }
            t = t_new;
            y.copy_from_slice(&y_new);
            if let Some(record) = on_accept.as_deref_mut() {
                record(t, &y);
            }
            break;
        }

        if clipped {
            landing += 1;
            if landing == tl.landings.len() {
                return Ok(());
            }
            if target.restart {
                needs_start = true;
                continue;
            }
            // A stop shortened the step, not the error: return to the planned step size.
            if h_planned > h_abs {
                let factor = (h_planned / h_abs).min(MAX_FACTOR);
                hist.change_step(factor);
                h_abs *= factor;
                n_equal_steps = 0;
            }
            continue;
        }

        if n_equal_steps < hist.order + 1 {
            continue;
        }
        // Order and step selection among k − 1, k, k + 1.
        let k = hist.order;
        let safety = 0.9 * (2 * NEWTON_MAX_ITER + 1) as f64 / (2 * NEWTON_MAX_ITER + n_iter) as f64;
        let error_m = if k > 1 {
            norm(hist.error_const[k - 1], hist.row(k), &scale)
        } else {
            f64::INFINITY
        };
        let error_k = norm(hist.error_const[k], &dd, &scale);
        let error_p = if k < MAX_ORDER {
            norm(hist.error_const[k + 1], hist.row(k + 2), &scale)
        } else {
            f64::INFINITY
        };
        let factors = [
            error_m.powf(-1.0 / k as f64),
            error_k.powf(-1.0 / (k as f64 + 1.0)),
            error_p.powf(-1.0 / (k as f64 + 2.0)),
        ];
        let mut best = 0;
        for i in 1..3 {
            if factors[i] > factors[best] {
                best = i;
            }
        }
        hist.order = k + best - 1;
        let factor = MAX_FACTOR.min(safety * factors[best]);
        h_abs *= factor;
        hist.change_step(factor);
        n_equal_steps = 0;
    }
}

/// Newton iterations for the BDF corrector (SciPy's `solve_bdf_system`): at most
/// `NEWTON_MAX_ITER`, stopped early when the convergence rate predicts failure. Writes the
/// solution to `y` and `d = y − y_pred` to `dd`; returns (converged, iterations).
#[allow(clippy::too_many_arguments)]
fn newton<S: System>(
    sys: &S,
    ws: &mut S::Workspace,
    stats: &mut Stats,
    t_eval: f64,
    c: f64,
    c_lu: f64,
    lu: &mut IterationMatrix,
    y_pred: &[f64],
    psi: &[f64],
    scale: &[f64],
    tol: f64,
    y: &mut [f64],
    dd: &mut [f64],
    dy: &mut [f64],
    f: &mut [f64],
) -> (bool, usize) {
    y.copy_from_slice(y_pred);
    dd.fill(0.0);
    let mut norm_old: Option<f64> = None;
    // The LU holds I/c_lu − J; CVODE's correction for a stale c (gamrat = c / c_lu).
    let correction = if c == c_lu {
        1.0
    } else {
        2.0 / (1.0 + c / c_lu)
    };
    for k in 0..NEWTON_MAX_ITER {
        sys.rhs(&[t_eval], y, f, ws);
        stats.rhs_evals += 1;
        if first_non_finite(f).is_some() {
            return (false, k + 1);
        }
        for i in 0..y.len() {
            dy[i] = (c * f[i] - psi[i] - dd[i]) / c_lu;
        }
        lu.solve(dy);
        if correction != 1.0 {
            dy.iter_mut().for_each(|v| *v *= correction);
        }
        let dy_norm = norm(1.0, dy, scale);
        let rate = norm_old.map(|old| dy_norm / old);
        if let Some(rate) = rate {
            if rate >= 1.0 || rate.powi((NEWTON_MAX_ITER - k) as i32) / (1.0 - rate) * dy_norm > tol
            {
                return (false, k + 1);
            }
        }
        for i in 0..y.len() {
            y[i] += dy[i];
            dd[i] += dy[i];
        }
        if !dy_norm.is_finite() {
            return (false, k + 1);
        }
        if dy_norm == 0.0 || rate.is_some_and(|r| r / (1.0 - r) * dy_norm < tol) {
            return (true, k + 1);
        }
        norm_old = Some(dy_norm);
    }
    (false, NEWTON_MAX_ITER)
}
