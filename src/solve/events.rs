//! Events: zero crossings of a scalar condition `g(t, y)` that stop a sample or make its state
//! jump, located inside the step where `g` changes sign.
//!
//! A system with events is solved one sample at a time (width 1), so that every sample stops
//! at its own events; a system without events never reaches this module. After each accepted
//! step the conditions are evaluated at the step's end and compared with their values at its
//! start; a sign change in the event's direction is located on the method's dense output
//! (the adaptive pairs' own interpolant; for the fixed-step schedules the cubic Hermite
//! interpolant of the end values and derivatives) by the Illinois variant of regula falsi
//! (Dowell & Jarratt 1971), to a few ulps of the event time. The earliest event of a step wins.
//! A `terminate` event fills the sample's later save times with the state at the event; a jump
//! assigns the new values (all computed from the state before the jump) and the integration
//! restarts at the event time: the adaptive pairs with a fresh `f` and no controller memory,
//! the fixed-step schedules with a partial step to the next grid point.

use super::adaptive::{Accepted, Recorder};
use super::tableau::{self, ExplicitRk};
use super::timeline::Timeline;
use super::{adaptive, EventHit, EventSpec, Method, SolveError, SolverOptions, Stats, System};

/// Whether events can be located with `method`: the explicit Runge–Kutta methods.
pub(crate) fn method_supported(method: &Method) -> bool {
    matches!(
        method,
        Method::Euler
            | Method::Midpoint
            | Method::Heun
            | Method::Rk4
            | Method::Bosh3
            | Method::Dopri5
            | Method::Tsit5
    )
}

/// Rows of [`System::event_jumps`]: every event's assigned elements.
pub(crate) fn jumps_len(specs: &[EventSpec]) -> usize {
    specs
        .iter()
        .map(|s| s.jump_offset + s.targets.iter().map(|t| t.1).sum::<usize>())
        .max()
        .unwrap_or(0)
}

/// Whether `g` goes from `a` to `b` across 0 in the event's direction.
fn crosses(direction: i8, a: f64, b: f64) -> bool {
    let up = a < 0.0 && b >= 0.0;
    let down = a > 0.0 && b <= 0.0;
    match direction {
        1 => up,
        -1 => down,
        _ => up || down,
    }
}

/// The earliest event in a step: `g_a`, `g_b` are the conditions at its ends, `g_at(θ, e)`
/// evaluates condition `e` on the dense output at `t + θ h`. Returns the event and the `θ` of
/// its crossing, taken on the far side (`g` has crossed there).
pub(crate) fn locate(
    specs: &[EventSpec],
    g_a: &[f64],
    g_b: &[f64],
    tol: f64,
    mut g_at: impl FnMut(f64, usize) -> f64,
) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for (e, spec) in specs.iter().enumerate() {
        let (a, b) = (g_a[e], g_b[e]);
        if !crosses(spec.direction, a, b) {
            continue;
        }
        let theta = illinois(a, b, tol, |th| g_at(th, e));
        if best.is_none_or(|(_, th)| theta < th) {
            best = Some((e, theta));
        }
    }
    best
}

/// The root of `f` on `[0, 1]` given `f(0) = fa` and `f(1) = fb` of opposite signs (or
/// `fb = 0`): Illinois regula falsi, falling back to bisection if it stalls. Returns the right
/// end of the final bracket, where `f` has crossed.
fn illinois(fa: f64, fb: f64, tol: f64, mut f: impl FnMut(f64) -> f64) -> f64 {
    let (mut a, mut b) = (0.0f64, 1.0f64);
    let (mut fa, mut fb) = (fa, fb);
    if fb == 0.0 {
        // The end itself may be the root, but an earlier crossing would have shown in `fa`.
        return 1.0;
    }
    let sign = fa.signum();
    let mut side = 0i8;
    for iter in 0..200 {
        if b - a <= tol {
            break;
        }
        let mut c = if iter < 60 {
            b - fb * (b - a) / (fb - fa)
        } else {
            0.5 * (a + b)
        };
        if !(c > a && c < b) {
            c = 0.5 * (a + b);
            if !(c > a && c < b) {
                break;
            }
        }
        let fc = f(c);
        if fc * sign > 0.0 {
            a = c;
            fa = fc;
            if side == -1 {
                fb *= 0.5;
            }
            side = -1;
        } else {
            b = c;
            fb = fc;
            if side == 1 {
                fa *= 0.5;
            }
            side = 1;
            if fc == 0.0 {
                break;
            }
        }
    }
    b
}

/// The tolerance in `θ` for a step from `t` of size `h`: a few ulps of the time.
pub(crate) fn theta_tol(t: f64, h: f64) -> f64 {
    let scale = t.abs().max((t + h).abs()).max(f64::MIN_POSITIVE);
    (4.0 * f64::EPSILON * scale / h.abs()).clamp(4.0 * f64::EPSILON, 1e-3)
}

/// Applies event `spec`'s assignments to `y` (width 1) from the values `jumps`.
pub(crate) fn apply_jump(spec: &EventSpec, jumps: &[f64], y: &mut [f64]) {
    let mut row = spec.jump_offset;
    for &(offset, len) in &spec.targets {
        for j in 0..len {
            if let (Some(dst), Some(&v)) = (y.get_mut(offset + j), jumps.get(row)) {
                *dst = v;
            }
            row += 1;
        }
    }
}

/// Solves one sample (`y0` of length `dim`, `out` `[save][dim]`) with events, recording them
/// in `hits` and, for the gradients, every accepted step in `recorder`. `failure` receives the
/// sample's error, numbered 0.
#[allow(clippy::too_many_arguments)]
pub(crate) fn solve_sample<S: System>(
    sys: &S,
    options: &SolverOptions,
    tl: &Timeline,
    y0: &[f64],
    sample: usize,
    out: &mut [f64],
    stats: &mut Stats,
    failure: &mut [Option<SolveError>; 1],
    hits: &mut Vec<EventHit>,
    recorder: Option<&mut dyn Recorder>,
) {
    let rk = match options.method {
        Method::Euler => &tableau::EULER,
        Method::Midpoint => &tableau::MIDPOINT,
        Method::Heun => &tableau::HEUN,
        Method::Rk4 => &tableau::RK4,
        _ => {
            adaptive::solve(
                sys,
                options,
                tl,
                y0,
                sample..sample + 1,
                out,
                stats,
                failure,
                recorder,
                Some(hits),
            );
            return;
        }
    };
    fixed(sys, rk, tl, y0, sample, out, stats, failure, hits, recorder);
}

/// Writes the save times in `(…, t_b]` (in the direction of integration) by linear
/// interpolation between `(t_a, y_a)` and `(t_b, y_b)`, as the fixed-step schedules save.
#[allow(clippy::too_many_arguments)]
fn save_linear(
    tl: &Timeline,
    next: &mut usize,
    t_a: f64,
    y_a: &[f64],
    t_b: f64,
    y_b: &[f64],
    out: &mut [f64],
) {
    let dim = y_a.len();
    while let Some(&ts) = tl.save.get(*next) {
        if (ts - t_b) * tl.dir > 0.0 {
            break;
        }
        let dst = &mut out[*next * dim..(*next + 1) * dim];
        if ts == t_b {
            dst.copy_from_slice(y_b);
        } else if ts == t_a || t_b == t_a {
            dst.copy_from_slice(y_a);
        } else {
            let theta = (ts - t_a) / (t_b - t_a);
            for i in 0..dim {
                dst[i] = y_a[i] + theta * (y_b[i] - y_a[i]);
            }
        }
        *next += 1;
    }
}

/// The evaluation times of the stages of a fixed step of size `h` from `t`.
pub(crate) fn stage_times(rk: &ExplicitRk, tl: &Timeline, t: f64, h: f64) -> Vec<f64> {
    let mid = t + 0.5 * h;
    rk.c.iter()
        .map(|&c| tl.stage_time(t + c * h, mid, h))
        .collect()
}

/// One explicit Runge–Kutta step of size `h` from `(t, y)` (width 1), `k[0] = f(t, y)`;
/// the arithmetic of `fixed::rk_step`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rk_one<S: System>(
    sys: &S,
    rk: &ExplicitRk,
    tl: &Timeline,
    t: f64,
    h: f64,
    y: &mut [f64],
    k: &mut [Vec<f64>],
    stage: &mut [f64],
    acc: &mut [f64],
    stats: &mut Stats,
    ws: &mut S::Workspace,
) {
    let len = y.len();
    let mid = t + 0.5 * h;
    for (i, row) in rk.a.iter().enumerate() {
        let ts = [tl.stage_time(t + rk.c[i] * h, mid, h)];
        if i == 0 {
            sys.rhs(&ts, y, &mut k[0], ws);
            stats.rhs_evals += 1;
            continue;
        }
        stage.copy_from_slice(y);
        for (j, &aij) in row.iter().enumerate() {
            if aij != 0.0 {
                let ha = h * aij;
                for m in 0..len {
                    stage[m] += ha * k[j][m];
                }
            }
        }
        sys.rhs(&ts, stage, &mut k[i], ws);
        stats.rhs_evals += 1;
    }
    let mut first = true;
    for (j, &bj) in rk.b.iter().enumerate() {
        if bj == 0.0 {
            continue;
        }
        for m in 0..len {
            let term = bj * k[j][m];
            acc[m] = if first { term } else { acc[m] + term };
        }
        first = false;
    }
    for m in 0..len {
        y[m] += h * acc[m];
    }
}

/// The cubic Hermite interpolant at `θ` of a step of size `h` from `(y_a, f_a)` to `(y_b, f_b)`.
pub(crate) fn hermite(
    theta: f64,
    h: f64,
    ya: &[f64],
    fa: &[f64],
    yb: &[f64],
    fb: &[f64],
    out: &mut [f64],
) {
    let t1 = 1.0 - theta;
    let h00 = (1.0 + 2.0 * theta) * t1 * t1;
    let h10 = theta * t1 * t1;
    let h01 = theta * theta * (3.0 - 2.0 * theta);
    let h11 = theta * theta * (theta - 1.0);
    for i in 0..out.len() {
        out[i] = h00 * ya[i] + h10 * h * fa[i] + h01 * yb[i] + h11 * h * fb[i];
    }
}

/// A fixed-step explicit schedule on one sample with events: the grid of the schedule, with a
/// partial step from an event's time to the next grid point after a jump.
#[allow(clippy::too_many_arguments)]
fn fixed<S: System>(
    sys: &S,
    rk: &ExplicitRk,
    tl: &Timeline,
    y0: &[f64],
    sample: usize,
    out: &mut [f64],
    stats: &mut Stats,
    failure: &mut [Option<SolveError>; 1],
    hits: &mut Vec<EventHit>,
    mut recorder: Option<&mut dyn Recorder>,
) {
    let specs = sys.events();
    let dim = y0.len();
    let ne = specs.len();
    let mut ws = sys.workspace(sample..sample + 1);
    let mut y = y0.to_vec();
    let mut ya = vec![0.0; dim];
    let mut k = vec![vec![0.0; dim]; rk.c.len()];
    let mut stage = vec![0.0; dim];
    let mut acc = vec![0.0; dim];
    let mut fb = vec![0.0; dim];
    let mut ye = vec![0.0; dim];
    let mut ytmp = vec![0.0; dim];
    let (mut g_a, mut g_b, mut g_tmp) = (vec![0.0; ne], vec![0.0; ne], vec![0.0; ne]);
    let mut jumps = vec![0.0; jumps_len(specs)];
    let mut next_save = 0;
    let mut t = tl.t0;
    save_linear(tl, &mut next_save, t, &y, t, &y, out);
    sys.event_conditions(&[t], &y, &mut g_a, &mut ws);
    for n in 0..tl.steps {
        let t_b = tl.grid(n + 1);
        loop {
            let h = t_b - t;
            ya.copy_from_slice(&y);
            rk_one(
                sys, rk, tl, t, h, &mut y, &mut k, &mut stage, &mut acc, stats, &mut ws,
            );
            stats.steps += 1;
            if let Some(i) = (0..dim).find(|&i| !y[i].is_finite()) {
                failure[0] = Some(SolveError::NonFinite {
                    t: t_b,
                    sample: 0,
                    component: i,
                });
                return;
            }
            sys.event_conditions(&[t_b], &y, &mut g_b, &mut ws);
            let any = specs
                .iter()
                .enumerate()
                .any(|(e, s)| crosses(s.direction, g_a[e], g_b[e]));
            let found = if any {
                let mid = t + 0.5 * h;
                sys.rhs(&[tl.stage_time(t_b, mid, h)], &y, &mut fb, &mut ws);
                stats.rhs_evals += 1;
                let fa = &k[0];
                locate(specs, &g_a, &g_b, theta_tol(t, h), |theta, e| {
                    hermite(theta, h, &ya, fa, &y, &fb, &mut ytmp);
                    sys.event_conditions(&[t + theta * h], &ytmp, &mut g_tmp, &mut ws);
                    g_tmp[e]
                })
            } else {
                None
            };
            if let Some(r) = recorder.as_deref_mut() {
                let step = Accepted {
                    lane: 0,
                    t,
                    h,
                    t_new: t_b,
                    times: &stage_times(rk, tl, t, h),
                    y: &ya,
                    width: 1,
                };
                match found {
                    Some((e, theta)) => {
                        let te = if theta >= 1.0 { t_b } else { t + theta * h };
                        r.event(&step, e, theta, te);
                    }
                    None => r.accepted(&step),
                }
            }
            let Some((e, theta)) = found else {
                save_linear(tl, &mut next_save, t, &ya, t_b, &y, out);
                std::mem::swap(&mut g_a, &mut g_b);
                t = t_b;
                break;
            };
            let te = if theta >= 1.0 { t_b } else { t + theta * h };
            if theta >= 1.0 {
                ye.copy_from_slice(&y);
            } else {
                hermite(theta, h, &ya, &k[0], &y, &fb, &mut ye);
            }
            save_linear(tl, &mut next_save, t, &ya, te, &ye, out);
            hits.push(EventHit { event: e, t: te });
            if specs[e].terminate {
                if let Err(err) = sys.event_stop(e, te, &mut ye, &mut ws) {
                    failure[0] = Some(err);
                    return;
                }
                while next_save < tl.save.len() {
                    out[next_save * dim..(next_save + 1) * dim].copy_from_slice(&ye);
                    next_save += 1;
                }
                return;
            }
            y.copy_from_slice(&ye);
            if let Err(err) = sys.event_jump(e, te, &mut y, &mut jumps, &mut ws) {
                failure[0] = Some(err);
                return;
            }
            if let Some(i) = (0..dim).find(|&i| !y[i].is_finite()) {
                failure[0] = Some(SolveError::NonFinite {
                    t: te,
                    sample: 0,
                    component: i,
                });
                return;
            }
            // A save time at the event holds the state after the jump.
            if next_save > 0 && tl.save[next_save - 1] == te {
                out[(next_save - 1) * dim..next_save * dim].copy_from_slice(&y);
            }
            t = te;
            sys.event_conditions(&[t], &y, &mut g_a, &mut ws);
            if te == t_b {
                break;
            }
        }
    }
}
