//! One sample of a small system (at most [`SMALL`] components), with no recorder and no
//! events: P1 Lorenz, each member of an ensemble. It is [`super::solve_lanes`] at a width of
//! one with the dimension `D` known at compile time, so that every per-lane quantity is a
//! scalar in a register, every state and stage an array on the stack, and every sum over the
//! components unrolled. The block driver spent most of such a step on its own bookkeeping
//! (lane arrays, bounds checks, loop control), three times the field's cost.
//!
//! It makes the same floating-point operations in the same order as the block driver, so a
//! sample gets the same bits whichever of the two solves it (`tests/it/adaptive_one.rs` holds
//! them to that on every adaptive model, with save points, landings, restarts, rejections and
//! failures). A change to the method changes both.

use super::{
    dense, embedded, hinit_finish, hinit_guess, nan_unless_finite, small_sums, BETA, FACOLD_MIN,
    FAC_MAX, FAC_MIN, MAX_STAGES, SAFE, SMALL,
};
use crate::solve::timeline::Timeline;
use crate::solve::{SolveError, SolverOptions, Stats, System};

/// Solves sample `samples` (one) of dimension `sys.dim()` if it is at most [`SMALL`]; false
/// (nothing done) otherwise.
#[allow(clippy::too_many_arguments)]
pub(super) fn solve<S: System>(
    sys: &S,
    options: &SolverOptions,
    tl: &Timeline,
    y0: &[f64],
    samples: std::ops::Range<usize>,
    out: &mut [f64],
    stats: &mut Stats,
    failure: &mut Option<SolveError>,
) -> bool {
    macro_rules! dims {
        ($($d:literal)*) => {
            match sys.dim() {
                $($d => solve_dim::<S, $d>(sys, options, tl, y0, samples, out, stats, failure),)*
                _ => return false,
            }
        };
    }
    const _: () = assert!(SMALL == 8, "one.rs monomorphizes dimensions 1..=SMALL");
    dims!(1 2 3 4 5 6 7 8);
    true
}

/// Writes `value` as the sample's state at save index `k` (output `[save][dim]`).
#[inline(always)]
fn write_save<const D: usize>(out: &mut [f64], k: usize, value: &[f64; D]) {
    if let Some(row) = out.get_mut(k * D..(k + 1) * D) {
        row.copy_from_slice(value);
    }
}

/// The first non-finite component of `v`.
#[inline(always)]
fn non_finite<const D: usize>(v: &[f64; D]) -> Option<usize> {
    v.iter().position(|x| !x.is_finite())
}

#[allow(clippy::too_many_arguments)]
fn solve_dim<S: System, const D: usize>(
    sys: &S,
    options: &SolverOptions,
    tl: &Timeline,
    y0: &[f64],
    samples: std::ops::Range<usize>,
    out: &mut [f64],
    stats: &mut Stats,
    failure: &mut Option<SolveError>,
) {
    let Ok(&y0) = <&[f64; D]>::try_from(y0) else {
        return;
    };
    let tab = embedded(&options.method);
    let ns = tab.c.len();
    let (rtol, dir) = (options.rtol, tl.dir);
    let atol_vec = options.atol_vec(D);
    let Ok(atol) = <&[f64; D]>::try_from(&atol_vec[..]) else {
        return;
    };
    let hmax = (tl.t1 - tl.t0).abs();
    let expo1 = 1.0 / (tab.q as f64 + 1.0) - BETA * 0.75;
    let ln_facold_min = FACOLD_MIN.ln();
    let mut ws = sys.workspace(samples);
    let mut fail = |e: SolveError| *failure = Some(e);

    let mut y = y0;
    let mut stage = [0.0; D];
    let mut acc = [0.0; D];
    // The derivative just evaluated, and the stages transposed: `kt[m][j] = k_j[m]`.
    let mut f = [0.0; D];
    let mut kt = [[0.0; MAX_STAGES]; D];

    // f(t0, y0) and the save times at t0.
    sys.rhs(&[tl.t0], &y, &mut f, &mut ws);
    stats.rhs_evals += 1;
    if let Some(i) = (0..D).find(|&i| !y[i].is_finite() || !f[i].is_finite()) {
        return fail(SolveError::NonFinite {
            t: tl.t0,
            sample: 0,
            component: i,
        });
    }
    let mut next_save = 0;
    while tl.save.get(next_save) == Some(&tl.t0) {
        write_save(out, next_save, &y);
        next_save += 1;
    }
    for m in 0..D {
        kt[m][0] = f[m];
    }

    // The initial step size (HINIT), one explicit Euler probe.
    let first_landing = (tl.landings[0].t - tl.t0).abs();
    let guess = hinit_guess(&y, &f, 1, 0, rtol, atol, hmax.min(first_landing));
    let h0 = dir * guess.0;
    let tp = tl.stage_time(tl.t0 + h0, tl.t0 + 0.5 * h0, h0);
    for m in 0..D {
        stage[m] = y[m] + h0 * f[m];
    }
    let mut f1 = [0.0; D];
    sys.rhs(&[tp], &stage, &mut f1, &mut ws);
    stats.rhs_evals += 1;
    let mut h = dir * hinit_finish(&y, &f, &f1, 1, 0, guess, tab.q + 1, rtol, atol, hmax);

    let mut t = tl.t0;
    let mut ln_facold = ln_facold_min;
    let (mut reject, mut needs_k1) = (false, false);
    let (mut landing, mut attempts) = (0, 0);
    loop {
        // Restarts after a breakpoint need f at the new piece.
        if needs_k1 {
            sys.rhs(&[tl.start_time(t)], &y, &mut f, &mut ws);
            stats.rhs_evals += 1;
            needs_k1 = false;
            for m in 0..D {
                kt[m][0] = f[m];
            }
            if let Some(i) = non_finite(&f) {
                return fail(SolveError::NonFinite {
                    t,
                    sample: 0,
                    component: i,
                });
            }
        }

        // The step: limits first, then clipped to the next landing.
        if attempts >= options.max_steps {
            return fail(SolveError::MaxStepsExceeded {
                t,
                sample: 0,
                max_steps: options.max_steps,
            });
        }
        if 0.1 * h.abs() <= t.abs() * f64::EPSILON || h == 0.0 {
            return fail(SolveError::StepSizeTooSmall { t, sample: 0 });
        }
        let target = tl.landings[landing].t;
        // Hairer's rule: stretch a step by up to 1% to land rather than leave a sliver.
        let clipped = (t + 1.01 * h - target) * dir > 0.0;
        let hs = if clipped { target - t } else { h };
        attempts += 1;

        // Stages 2..s; the last one is evaluated at y_new (FSAL).
        for i in 1..ns {
            small_sums(&mut stage, Some(&y), Some(hs), tab.a[i], &kt);
            let c = tab.c[i];
            let ts = if hs != 0.0 {
                let tau = if c == 1.0 && clipped {
                    tl.landings[landing].t
                } else {
                    t + c * hs
                };
                tl.stage_time(tau, t + 0.5 * hs, hs)
            } else {
                t
            };
            sys.rhs(&[ts], &stage, &mut f, &mut ws);
            for m in 0..D {
                kt[m][i] = f[m];
            }
        }
        let ynew = stage;
        stats.rhs_evals += ns as u64 - 1;

        // Hairer's mixed error norm, and whether y_new is finite.
        small_sums(&mut acc, None, None, tab.e, &kt);
        let (mut err_sq, mut poison) = (0.0, 0.0);
        for m in 0..D {
            let e = acc[m] * hs;
            let sk = atol[m] + rtol * y[m].abs().max(ynew[m].abs());
            err_sq += (e / sk).powi(2);
            poison += nan_unless_finite(ynew[m]);
        }
        let err = if poison == 0.0 {
            (err_sq / D as f64).sqrt()
        } else {
            f64::INFINITY
        };
        // The PI controller's divisor as a logarithm (see `solve_lanes`).
        let ln_err = err.ln();
        let accepted = err <= 1.0 && hs != 0.0;
        let ln_fac = expo1 * ln_err - if accepted { BETA * ln_facold } else { 0.0 };
        if accepted {
            ln_facold = ln_err.max(ln_facold_min);
        }

        if hs == 0.0 {
            continue;
        }
        if !err.is_finite() {
            // A stage left the region where f is finite: shrink as much as allowed.
            h = hs * FAC_MIN;
            reject = true;
            stats.rejected += 1;
            continue;
        }
        let fac = ln_fac.exp() / SAFE;
        if err > 1.0 {
            h = hs / (1.0 / FAC_MIN).min(fac);
            reject = true;
            stats.rejected += 1;
            continue;
        }
        let mut hnew = hs / fac.clamp(1.0 / FAC_MAX, 1.0 / FAC_MIN);

        // Accepted.
        stats.steps += 1;
        let land = tl.landings[landing];
        let t_new = if clipped { land.t } else { t + hs };
        // Dense output only when a save time falls in the step.
        while let Some(&ts) = tl.save.get(next_save) {
            if (ts - t_new) * dir > 0.0 {
                break;
            }
            if ts == t_new {
                write_save(out, next_save, &ynew);
            } else {
                let theta = (ts - t) / hs;
                let ks: [[f64; D]; MAX_STAGES] =
                    std::array::from_fn(|j| std::array::from_fn(|m| kt[m][j]));
                let value: [f64; D] =
                    std::array::from_fn(|m| dense(tab, theta, hs, &y, &ynew, &ks, m));
                write_save(out, next_save, &value);
            }
            next_save += 1;
        }
        y = ynew;
        for m in 0..D {
            kt[m][0] = kt[m][ns - 1];
        }
        t = t_new;
        if let Some(i) = (0..D).find(|&m| !kt[m][0].is_finite()) {
            return fail(SolveError::NonFinite {
                t: t_new,
                sample: 0,
                component: i,
            });
        }
        if hnew.abs() > hmax {
            hnew = dir * hmax;
        }
        if reject {
            hnew = dir * hnew.abs().min(hs.abs());
        }
        reject = false;
        if clipped {
            // Landing shortened the step, not the error: keep the step that was planned.
            hnew = dir * hnew.abs().max(h.abs());
            landing += 1;
            if land.restart {
                needs_k1 = true;
                ln_facold = ln_facold_min;
            }
            if landing == tl.landings.len() {
                return;
            }
        }
        h = hnew;
    }
}
