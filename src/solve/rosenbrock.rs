//! RODAS4, a Rosenbrock method of order 4(3), one sample at a time.
//!
//! Per step: one Jacobian (reused after a rejection, since the point has not moved), one LU of
//! `I/(hγ) − J` shared by all six stages, `∂f/∂t` by a forward difference unless the system is
//! autonomous, the embedded error estimate `U6`, and the 3rd-order dense output of
//! [`tableau::RODAS4`]. Step-size control follows Hairer's `rodas.f`: `hnew/h` in `[0.2, 6]`,
//! safety 0.9, exponent 1/4, and Gustafsson's predictive controller after the first accepted
//! step. Landings are stepped onto exactly; breakpoints reset the controller memory.
//! Called by [`super::solve_block`] with a width-1 workspace.

#![expect(
    clippy::needless_range_loop,
    reason = "index loops mirror the formulas over components and lanes"
)]

use super::adaptive::{hinit_finish, hinit_guess};
use super::linalg::IterationMatrix;
use super::tableau::{self, Rosenbrock};
use super::timeline::Timeline;
use super::{first_non_finite, OnAccept, SolveError, SolverOptions, Stats, System};

const SAFE: f64 = 0.9;
/// Bounds of `h / hnew` (Hairer's `FAC1 = 5`, `FAC2 = 1/6`).
const FAC_LO: f64 = 1.0 / 6.0;
const FAC_HI: f64 = 5.0;

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
    let tab: &Rosenbrock = &tableau::RODAS4;
    let dim = y0.len();
    let (rtol, dir) = (options.rtol, tl.dir);
    let atol = &options.atol_vec(dim)[..];
    let hmax = (tl.t1 - tl.t0).abs();
    let autonomous = sys.is_autonomous();

    let mut t = tl.t0;
    let mut y = y0.to_vec();
    let mut ynew = vec![0.0; dim];
    let mut dy1 = vec![0.0; dim];
    let mut fx = vec![0.0; dim];
    let mut stage = vec![0.0; dim];
    let mut f = vec![0.0; dim];
    let mut u = vec![vec![0.0; dim]; 6];
    let mut matrix = IterationMatrix::new(sys, tl.t0, y0, options.linear, stats, ws);

    // f(t0, y0), the save times at t0 and the initial step (HINIT with the 3rd-order
    // embedded error, O(h^4)).
    sys.rhs(&[t], &y, &mut dy1, ws);
    stats.rhs_evals += 1;
    if let Some(i) = first_non_finite(&y).or_else(|| first_non_finite(&dy1)) {
        return Err(SolveError::NonFinite {
            t,
            sample: 0,
            component: i,
        });
    }
    let mut next_save = 0;
    while tl.save.get(next_save) == Some(&t) {
        out[next_save * dim..(next_save + 1) * dim].copy_from_slice(&y);
        next_save += 1;
    }
    let mut h = initial_step(
        sys, tl, &y, &dy1, &mut stage, &mut f, rtol, atol, 4, stats, ws,
    );

    let mut landing = 0;
    let mut fresh = false; // dy1, jac and fx belong to the current (t, y)
    let mut reject = false;
    let mut attempts = 0;
    // Gustafsson's predictive controller: last accepted step and its error.
    let mut memory: Option<(f64, f64)> = None;

    loop {
        if attempts >= options.max_steps {
            return Err(SolveError::MaxStepsExceeded {
                t,
                sample: 0,
                max_steps: options.max_steps,
            });
        }
        if 0.1 * h.abs() <= t.abs() * f64::EPSILON || h == 0.0 {
            return Err(SolveError::StepSizeTooSmall { t, sample: 0 });
        }
        let target = tl.landings[landing];
        let clipped = (t + 1.0001 * h - target.t) * dir >= 0.0;
        let hs = if clipped { target.t - t } else { h };
        let mid = t + 0.5 * hs;
        let t_end = if clipped { target.t } else { t + hs };
        let at = |c: f64| tl.stage_time(if c == 1.0 { t_end } else { t + c * hs }, mid, hs);
        attempts += 1;

        if !fresh {
            let t_eval = at(0.0);
            sys.rhs(&[t_eval], &y, &mut dy1, ws);
            let bad_row = matrix.evaluate(sys, t_eval, &y, ws);
            stats.rhs_evals += 1;
            stats.jac_evals += 1;
            if let Some(i) = first_non_finite(&dy1).or(bad_row) {
                return Err(SolveError::NonFinite {
                    t,
                    sample: 0,
                    component: i,
                });
            }
            fx.fill(0.0);
            if !autonomous {
                // Forward difference inside the step (Hairer's DELT = sqrt(uround max(1e-5, |t|))).
                let delta = (f64::EPSILON * t.abs().max(1e-5))
                    .sqrt()
                    .min(0.5 * hs.abs());
                let t_fd = tl.stage_time(t + dir * delta, mid, hs);
                if t_fd != t_eval {
                    sys.rhs(&[t_fd], &y, &mut f, ws);
                    stats.rhs_evals += 1;
                    for i in 0..dim {
                        fx[i] = (f[i] - dy1[i]) / (t_fd - t_eval);
                    }
                }
            }
            fresh = true;
        }

        stats.lu_decompositions += 1;
        if !matrix.factor_shifted(1.0 / (hs * tab.gamma)) {
            // Singular W: a smaller step moves the shift away from J's spectrum.
            h = 0.5 * hs;
            reject = true;
            stats.rejected += 1;
            continue;
        }

        // The six stages (see `tableau::Rosenbrock` for the form).
        for i in 0..6 {
            let (t_i, src) = match i {
                0 => (at(0.0), None),
                1..=4 => {
                    stage.copy_from_slice(&y);
                    for (j, &a) in tab.a[i - 1].iter().enumerate().take(i) {
                        for m in 0..dim {
                            stage[m] += a * u[j][m];
                        }
                    }
                    (at(if i < 4 { tab.c[i] } else { 1.0 }), Some(()))
                }
                _ => {
                    // Stage 6 is evaluated at the embedded solution y5 + U5.
                    for m in 0..dim {
                        stage[m] += u[4][m];
                    }
                    (at(1.0), Some(()))
                }
            };
            if src.is_some() {
                sys.rhs(&[t_i], &stage, &mut f, ws);
                stats.rhs_evals += 1;
            } else {
                f.copy_from_slice(&dy1);
            }
            let (done, rest) = u.split_at_mut(i);
            let ui = &mut rest[0];
            for m in 0..dim {
                let mut v = f[m];
                if i > 0 {
                    let mut acc = 0.0;
                    for (j, uj) in done.iter().enumerate() {
                        acc += tab.cc[i - 1][j] * uj[m];
                    }
                    v += acc / hs;
                }
                if i < 4 {
                    v += hs * tab.d[i] * fx[m];
                }
                ui[m] = v;
            }
            matrix.solve(ui);
        }
        for m in 0..dim {
            ynew[m] = stage[m] + u[5][m];
        }

        let err = if first_non_finite(&ynew).is_some() {
            f64::INFINITY
        } else {
            let sum: f64 = (0..dim)
                .map(|m| (u[5][m] / (atol[m] + rtol * y[m].abs().max(ynew[m].abs()))).powi(2))
                .sum();
            (sum / dim.max(1) as f64).sqrt()
        };
        if !err.is_finite() {
            h = hs / FAC_HI;
            reject = true;
            stats.rejected += 1;
            continue;
        }
        let mut fac = (err.powf(0.25) / SAFE).clamp(FAC_LO, FAC_HI);
        if err > 1.0 {
            h = hs / fac;
            reject = true;
            stats.rejected += 1;
            continue;
        }

        // Accepted.
        stats.steps += 1;
        if let Some((hacc, erracc)) = memory {
            let facgus =
                ((hacc / hs) * (err * err / erracc).powf(0.25) / SAFE).clamp(FAC_LO, FAC_HI);
            fac = fac.max(facgus);
        }
        memory = Some((hs, err.max(1e-2)));
        let mut hnew = hs / fac;

        let t_new = t_end;
        while let Some(&ts) = tl.save.get(next_save) {
            if (ts - t_new) * dir > 0.0 {
                break;
            }
            let dst = &mut out[next_save * dim..(next_save + 1) * dim];
            if ts == t_new {
                dst.copy_from_slice(&ynew);
            } else {
                let theta = (ts - t) / hs;
                let t1 = 1.0 - theta;
                for m in 0..dim {
                    let (mut c2, mut c3) = (0.0, 0.0);
                    for j in 0..5 {
                        c2 += tab.h[0][j] * u[j][m];
                        c3 += tab.h[1][j] * u[j][m];
                    }
                    dst[m] = t1 * y[m] + theta * (ynew[m] + t1 * (c2 + theta * c3));
                }
            }
            next_save += 1;
        }
        y.copy_from_slice(&ynew);
        t = t_new;
        fresh = false;
        if let Some(record) = on_accept.as_deref_mut() {
            record(t, &y);
        }

        if hnew.abs() > hmax {
            hnew = dir * hmax;
        }
        if reject {
            hnew = dir * hnew.abs().min(hs.abs());
        }
        reject = false;
        if clipped {
            hnew = dir * hnew.abs().max(h.abs());
            landing += 1;
            if landing == tl.landings.len() {
                return Ok(());
            }
            if target.restart {
                memory = None;
            }
        }
        h = hnew;
    }
}

/// Hairer's `HINIT` for one sample at `(t0, y)` with `f0 = f(t0, y)`: one explicit Euler probe,
/// kept inside the first landing. Returns the signed step.
#[allow(clippy::too_many_arguments)]
pub(crate) fn initial_step<S: System>(
    sys: &S,
    tl: &Timeline,
    y: &[f64],
    f0: &[f64],
    probe: &mut [f64],
    f1: &mut [f64],
    rtol: f64,
    atol: &[f64],
    iord: u32,
    stats: &mut Stats,
    ws: &mut S::Workspace,
) -> f64 {
    initial_step_at(
        sys,
        tl,
        tl.t0,
        y,
        f0,
        probe,
        f1,
        rtol,
        atol,
        iord,
        stats,
        ws,
        tl.landings[0].t,
    )
}

/// [`initial_step`] from any time `t` whose next landing is `next`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn initial_step_at<S: System>(
    sys: &S,
    tl: &Timeline,
    t: f64,
    y: &[f64],
    f0: &[f64],
    probe: &mut [f64],
    f1: &mut [f64],
    rtol: f64,
    atol: &[f64],
    iord: u32,
    stats: &mut Stats,
    ws: &mut S::Workspace,
    next: f64,
) -> f64 {
    let hmax = (tl.t1 - tl.t0).abs();
    let guess = hinit_guess(y, f0, 1, 0, rtol, atol, hmax.min((next - t).abs()));
    let h0 = tl.dir * guess.0;
    for m in 0..y.len() {
        probe[m] = y[m] + h0 * f0[m];
    }
    sys.rhs(&[tl.stage_time(t + h0, t + 0.5 * h0, h0)], probe, f1, ws);
    stats.rhs_evals += 1;
    tl.dir * hinit_finish(y, f0, f1, 1, 0, guess, iord, rtol, atol, hmax)
}
