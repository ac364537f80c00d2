//! One sample of a small system (at most [`SMALL`] components), with no recorder and no
//! events: P1 Lorenz, each member of an ensemble. It is [`super::solve_lanes`] at a width of
//! one with the dimension `D` known at compile time: every per-lane quantity is a scalar in a
//! register, the state and the stages are arrays on the stack (the field writes each stage in
//! place, and with `D` a constant the sums over stages need no transposed copy), and every loop
//! over the components is unrolled. The block driver spent most of such a step on its own
//! bookkeeping (lane arrays, bounds checks, loop control), three times the field's cost.
//!
//! The step choice, stage times, error terms, controller and step-size limits are the block
//! driver's own functions, and the stage sums make the same operations in the same order, so a
//! sample gets the same bits whichever driver solves it:
//! `solve::tests::one_sample_driver_gives_the_block_drivers_bits` holds the two to that, with
//! save times, stops, a breakpoint's restart, rejections, backward time and each failure.
//!
//! After its first evaluation the solve asks the system for a direct call of the field's
//! compiled code ([`System::field_call`]): with the checks `Program::rhs` makes on every call
//! made once, P1's instructions drop by 12 %. Without one (no native code yet, parameters
//! varying in time, a running cost) every evaluation is `System::rhs`. The integration test
//! `compile::a_sample_alone_calls_the_fields_code_directly_with_the_blocks_bits` holds the
//! direct calls to the block's bits.

use super::{
    controller, dense, embedded, error_term, hinit_finish, hinit_guess, limit_next,
    nan_unless_finite, next_step, stage_at, step_to_take, BETA, FACOLD_MIN, MAX_STAGES, SMALL,
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

/// `Σ_j coef[j] · k_j` per component from `0.0`, `j` ascending: the block driver's sums (the
/// same operations in the same order), with the number of coefficients matched once so that
/// each sum is straight-line code.
#[inline(always)]
fn stage_sums<const D: usize>(coef: &[f64], k: &[[f64; D]; MAX_STAGES]) -> [f64; D] {
    #[inline(always)]
    fn sums<const N: usize, const D: usize>(coef: &[f64], k: &[[f64; D]; MAX_STAGES]) -> [f64; D] {
        let Ok(coef) = <&[f64; N]>::try_from(coef) else {
            return [f64::NAN; D];
        };
        // Plain loops over arrays of constant length: `array::from_fn`'s closure was not
        // unrolled (65 instructions a step).
        let mut sums = [0.0; D];
        for (m, sum) in sums.iter_mut().enumerate() {
            for j in 0..N {
                *sum += coef[j] * k[j][m];
            }
        }
        sums
    }
    match coef.len() {
        1 => sums::<1, D>(coef, k),
        2 => sums::<2, D>(coef, k),
        3 => sums::<3, D>(coef, k),
        4 => sums::<4, D>(coef, k),
        5 => sums::<5, D>(coef, k),
        6 => sums::<6, D>(coef, k),
        7 => sums::<7, D>(coef, k),
        // Every pair has at most `MAX_STAGES` stages (a compile-time check in `adaptive.rs`).
        _ => sums::<MAX_STAGES, D>(coef, k),
    }
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
    let atol_vec = options.atol_vec(D);
    let Ok(&atol) = <&[f64; D]>::try_from(&atol_vec[..]) else {
        return;
    };
    let mut ws = sys.workspace(samples);

    // f(t0, y0) and the save times at t0. This first call also fits the uniforms that a
    // direct call of the field reads.
    let mut f0 = [0.0; D];
    sys.rhs(&[tl.t0], &y0, &mut f0, &mut ws);
    stats.rhs_evals += 1;
    if let Some(i) = (0..D).find(|&i| !y0[i].is_finite() || !f0[i].is_finite()) {
        *failure = Some(SolveError::NonFinite {
            t: tl.t0,
            sample: 0,
            component: i,
        });
        return;
    }
    let mut next_save = 0;
    while tl.save.get(next_save) == Some(&tl.t0) {
        write_save(out, next_save, &y0);
        next_save += 1;
    }
    let start = Start {
        y0,
        f0,
        atol,
        next_save,
    };
    match sys.field_call(&mut ws) {
        Some(mut call) => {
            integrate(options, tl, start, out, stats, failure, |t, y, dy| {
                // Never short: `y` and `dy` have the system's dimension, which the call was
                // made for. Should that change, NaN stops the solve rather than leaving `dy`
                // stale.
                if !call.call(t, y, dy) {
                    dy.fill(f64::NAN);
                }
            });
            call.flush();
        }
        None => integrate(options, tl, start, out, stats, failure, |t, y, dy| {
            sys.rhs(&[t], y, dy, &mut ws)
        }),
    }
}

/// The solve's state after its first evaluation: the start, its slope, the absolute
/// tolerances and the first save index not yet written.
struct Start<const D: usize> {
    y0: [f64; D],
    f0: [f64; D],
    atol: [f64; D],
    next_save: usize,
}

/// The steps from `start` to the end, the field evaluated by `field(t, y, dy)`: a direct call
/// of its compiled code when the system has one ready, else [`System::rhs`].
fn integrate<const D: usize>(
    options: &SolverOptions,
    tl: &Timeline,
    start: Start<D>,
    out: &mut [f64],
    stats: &mut Stats,
    failure: &mut Option<SolveError>,
    mut field: impl FnMut(f64, &[f64; D], &mut [f64; D]),
) {
    let Start {
        y0: mut y,
        f0: f,
        atol,
        mut next_save,
    } = start;
    let atol = &atol;
    let tab = embedded(&options.method);
    let ns = tab.c.len();
    let (rtol, dir) = (options.rtol, tl.dir);
    let hmax = (tl.t1 - tl.t0).abs();
    let expo1 = 1.0 / (tab.q as f64 + 1.0) - BETA * 0.75;
    let ln_facold_min = FACOLD_MIN.ln();
    let mut fail = |e: SolveError| *failure = Some(e);

    let mut stage = [0.0; D];
    // The stages `k[j]`, written by the field in place: with the dimension a constant, the
    // sums over `j` at a fixed component are as direct as over a transposed copy.
    let mut k = [[0.0; D]; MAX_STAGES];
    k[0] = f;

    // The initial step size (HINIT), one explicit Euler probe.
    let first_landing = (tl.landings[0].t - tl.t0).abs();
    let guess = hinit_guess(&y, &f, 1, 0, rtol, atol, hmax.min(first_landing));
    let h0 = dir * guess.0;
    let tp = tl.stage_time(tl.t0 + h0, tl.t0 + 0.5 * h0, h0);
    for m in 0..D {
        stage[m] = y[m] + h0 * f[m];
    }
    let mut f1 = [0.0; D];
    field(tp, &stage, &mut f1);
    stats.rhs_evals += 1;
    let mut h = dir * hinit_finish(&y, &f, &f1, 1, 0, guess, tab.q + 1, rtol, atol, hmax);

    let mut t = tl.t0;
    let mut ln_facold = ln_facold_min;
    let (mut reject, mut needs_k1) = (false, false);
    let (mut landing, mut attempts) = (0, 0);
    loop {
        // Restarts after a breakpoint need f at the new piece.
        if needs_k1 {
            field(tl.start_time(t), &y, &mut k[0]);
            stats.rhs_evals += 1;
            needs_k1 = false;
            if let Some(i) = non_finite(&k[0]) {
                return fail(SolveError::NonFinite {
                    t,
                    sample: 0,
                    component: i,
                });
            }
        }

        // The step: limits first, then clipped to the next landing.
        let target = tl.landings[landing].t;
        let (hs, clipped) = match step_to_take(t, h, target, dir, attempts, options.max_steps, 0) {
            Ok(step) => step,
            Err(e) => return fail(e),
        };
        attempts += 1;

        // Stages 2..s; the last one is evaluated at y_new (FSAL).
        for i in 1..ns {
            let sum = stage_sums(tab.a[i], &k);
            for m in 0..D {
                stage[m] = y[m] + hs * sum[m];
            }
            let ts = stage_at(tl, t, hs, tab.c[i], clipped, target);
            field(ts, &stage, &mut k[i]);
        }
        let ynew = stage;
        stats.rhs_evals += ns as u64 - 1;

        // Hairer's mixed error norm, and whether y_new is finite.
        let acc = stage_sums(tab.e, &k);
        let (mut err_sq, mut poison) = (0.0, 0.0);
        for m in 0..D {
            err_sq += error_term(acc[m] * hs, atol[m], rtol, y[m], ynew[m]);
            poison += nan_unless_finite(ynew[m]);
        }
        let err = if poison == 0.0 {
            (err_sq / D as f64).sqrt()
        } else {
            f64::INFINITY
        };
        let ln_fac = controller(err, hs, expo1, &mut ln_facold, ln_facold_min);
        if hs == 0.0 {
            continue;
        }
        let hnew = match next_step(err, hs, ln_fac) {
            Ok(h) => h,
            Err(retry) => {
                h = retry;
                reject = true;
                stats.rejected += 1;
                continue;
            }
        };

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
                let value: [f64; D] =
                    std::array::from_fn(|m| dense(tab, theta, hs, &y, &ynew, &k, m));
                write_save(out, next_save, &value);
            }
            next_save += 1;
        }
        y = ynew;
        k[0] = k[ns - 1];
        t = t_new;
        if let Some(i) = non_finite(&k[0]) {
            return fail(SolveError::NonFinite {
                t: t_new,
                sample: 0,
                component: i,
            });
        }
        let hnew = limit_next(hnew, hs, h, hmax, dir, reject, clipped);
        reject = false;
        if clipped {
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
