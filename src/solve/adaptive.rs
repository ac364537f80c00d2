//! Adaptive explicit embedded pairs (`bosh3`, `dopri5`, `tsit5`) on one block, each sample
//! with its own steps.
//!
//! The samples of a block advance in lockstep *iterations* (one block right-hand side per
//! stage), but each sample has its own time, step size, accept/reject decision, controller
//! memory and done flag, as in torchode: no sample is forced onto another's step sizes, and a
//! sample's result does not depend on which other samples share its block. Finished samples
//! ride along with a zero step and are not counted in [`Stats`].
//!
//! Per sample this is Hairer's DOPRI5 driver (`dopri5.f`, Hairer–Nørsett–Wanner I, §II.4):
//! the mixed error norm `sqrt(mean_i (e_i / (atol + rtol max(|y_i|, |ŷ_i|)))²)`, the PI
//! ("Lund-stabilized") controller with safety 0.9, factor bounds [0.2, 10] and β = 0.04,
//! no step growth right after a rejection, the automatic initial step `HINIT`, and FSAL.
//! Save times are interpolated with the pair's dense output; landings (stops, breakpoints,
//! `t1`) are stepped onto exactly, and breakpoints restart the method (no FSAL across a jump).

#![expect(
    clippy::needless_range_loop,
    reason = "index loops mirror the formulas over components and lanes"
)]

use super::events;
use super::tableau::{self, Dense, EmbeddedRk, DOPRI5_DENSE, TSIT5_INTERP};
use super::timeline::Timeline;
use super::EventHit;
use super::{Method, SolveError, SolverOptions, Stats, System};

/// Safety factor of the step-size controller (Hairer's `SAFE`).
const SAFE: f64 = 0.9;
/// Smallest step-size ratio (Hairer's `FAC1`).
const FAC_MIN: f64 = 0.2;
/// Largest step-size ratio (Hairer's `FAC2`).
const FAC_MAX: f64 = 10.0;
/// Stabilization exponent of the PI controller (Hairer's `BETA` for DOPRI5).
const BETA: f64 = 0.04;

/// Norm sums over one sample: `dim` components at stride `width`, lane `s`.
fn lane_sum(dim: usize, width: usize, s: usize, mut term: impl FnMut(usize) -> f64) -> f64 {
    (0..dim).map(|i| term(i * width + s)).sum()
}

/// First half of Hairer's `HINIT` for one sample: the guess `h0 = 0.01 ‖y‖/‖f‖` (norms
/// weighted by `atol + rtol |y|`, summed, not averaged, as in `dopri5.f`), and `‖f0‖²`.
pub(crate) fn hinit_guess(
    y: &[f64],
    f0: &[f64],
    width: usize,
    s: usize,
    rtol: f64,
    atol: &[f64],
    hmax: f64,
) -> (f64, f64) {
    let dim = y.len() / width;
    let sk = |m: usize| atol[m / width] + rtol * y[m].abs();
    let dnf = lane_sum(dim, width, s, |m| (f0[m] / sk(m)).powi(2));
    let dny = lane_sum(dim, width, s, |m| (y[m] / sk(m)).powi(2));
    let h = if dnf <= 1e-10 || dny <= 1e-10 {
        1e-6
    } else {
        (dny / dnf).sqrt() * 0.01
    };
    (h.min(hmax), dnf)
}

/// Second half of `HINIT`: from the explicit Euler probe `f1 = f(t + h0, y + h0 f0)`, the
/// step with `h^iord max(‖f0‖, ‖f'‖) = 0.01`, at most `100 h0` and `hmax`. Returns `|h|`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn hinit_finish(
    y: &[f64],
    f0: &[f64],
    f1: &[f64],
    width: usize,
    s: usize,
    (h0, dnf): (f64, f64),
    iord: u32,
    rtol: f64,
    atol: &[f64],
    hmax: f64,
) -> f64 {
    let dim = y.len() / width;
    let der2 = lane_sum(dim, width, s, |m| {
        ((f1[m] - f0[m]) / (atol[m / width] + rtol * y[m].abs())).powi(2)
    })
    .sqrt()
        / h0;
    if !der2.is_finite() {
        // The probe left the region where f is finite: start well below it.
        return 0.01 * h0;
    }
    let der12 = der2.abs().max(dnf.sqrt());
    let h1 = if der12 <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / der12).powf(1.0 / iord as f64)
    };
    (100.0 * h0).min(h1).min(hmax)
}

/// One accepted step of one sample, as [`Recorder`]s see it.
pub(crate) struct Accepted<'a> {
    /// The sample's lane in the block.
    pub lane: usize,
    /// Start time and the signed step taken.
    pub t: f64,
    pub h: f64,
    /// End time (the landing itself when the step was shortened to land).
    pub t_new: f64,
    /// The time at which each stage's `f` was evaluated: `times[0]` for `k_0` (which may be a
    /// reuse, FSAL), then stages `1..s`, as `Timeline::stage_time` placed them.
    pub times: &'a [f64],
    /// The block's states at the step's start (component-major).
    pub y: &'a [f64],
    pub width: usize,
}

/// Observes the accepted steps of [`solve`] (the gradient methods record the schedule to
/// replay it). Recording reads the solver's values and never changes them.
pub(crate) trait Recorder {
    fn accepted(&mut self, step: &Accepted);

    /// An accepted step in which event `e` was located at `te = t + θ h` (`θ ≥ 1`: at its
    /// end); the step's end state is discarded for the event's. Only event solves call it.
    fn event(&mut self, step: &Accepted, e: usize, theta: f64, te: f64) {
        let _ = (step, e, theta, te);
    }
}

/// Per-sample integration state.
#[derive(Clone, Copy)]
struct Lane {
    t: f64,
    /// Proposed step (signed).
    h: f64,
    /// Step taken in the current iteration (signed; 0 when inactive).
    hs: f64,
    /// The current step was shortened to land on `landing`.
    clipped: bool,
    /// Error of the last accepted step (the PI controller's memory), Hairer's `FACOLD`.
    facold: f64,
    reject: bool,
    active: bool,
    needs_k1: bool,
    landing: usize,
    attempts: usize,
    next_save: usize,
}

/// Integrates one block of `width` samples (`y0` component-major).
#[allow(clippy::too_many_arguments)]
pub(crate) fn solve<S: System>(
    sys: &S,
    options: &SolverOptions,
    tl: &Timeline,
    y0: &[f64],
    samples: std::ops::Range<usize>,
    out: &mut [f64],
    stats: &mut Stats,
    failures: &mut [Option<SolveError>],
    mut recorder: Option<&mut dyn Recorder>,
    mut hits: Option<&mut Vec<EventHit>>,
) {
    let width = samples.len();
    let tab = embedded(&options.method);
    let ns = tab.c.len();
    let dim = sys.dim();
    let len = dim * width;
    let (rtol, dir) = (options.rtol, tl.dir);
    let atol = &options.atol_vec(dim)[..];
    let hmax = (tl.t1 - tl.t0).abs();
    let expo1 = 1.0 / (tab.q as f64 + 1.0) - BETA * 0.75;

    let mut ws = sys.workspace(samples);
    let mut y = y0.to_vec();
    let mut ynew = vec![0.0; len];
    let mut stage = vec![0.0; len];
    let mut k = vec![vec![0.0; len]; ns];
    let mut tstage = vec![tl.t0; width];
    // The evaluation time of every stage of the current step, `[stage][lane]` (for recorders).
    let mut times = vec![tl.t0; ns * width];
    let mut lane_times = vec![0.0; ns];

    let mut lanes = vec![
        Lane {
            t: tl.t0,
            h: 0.0,
            hs: 0.0,
            clipped: false,
            facold: 1e-4,
            reject: false,
            active: true,
            needs_k1: false,
            landing: 0,
            attempts: 0,
            next_save: 0,
        };
        width
    ];
    let fail = |lane: &mut Lane, failure: &mut Option<SolveError>, e: SolveError| {
        lane.active = false;
        *failure = Some(e);
    };

    // Events (one sample at a time, see `events.rs`): the conditions at each step's ends.
    let specs = if hits.is_some() { sys.events() } else { &[] };
    debug_assert!(specs.is_empty() || width == 1);
    let ne = specs.len();
    let (mut g_old, mut g_new, mut g_tmp) = (vec![0.0; ne], vec![0.0; ne], vec![0.0; ne]);
    let mut ev_y = vec![0.0; if ne > 0 { dim } else { 0 }];
    let mut jumps = vec![0.0; events::jumps_len(specs)];
    if ne > 0 {
        sys.event_conditions(&[tl.t0], &y, &mut g_old, &mut ws);
    }

    // f(t0, y0) and the save times at t0.
    sys.rhs(&tstage, &y, &mut k[0], &mut ws);
    stats.rhs_evals += width as u64;
    for s in 0..width {
        let lane = &mut lanes[s];
        if let Some(i) =
            (0..dim).find(|&i| !y[i * width + s].is_finite() || !k[0][i * width + s].is_finite())
        {
            fail(
                lane,
                &mut failures[s],
                SolveError::NonFinite {
                    t: tl.t0,
                    sample: s,
                    component: i,
                },
            );
            continue;
        }
        while tl.save.get(lane.next_save) == Some(&tl.t0) {
            write_lane(out, lane.next_save, s, width, dim, |m| y[m]);
            lane.next_save += 1;
        }
    }

    // Initial step sizes (HINIT), one explicit Euler probe per sample.
    let mut guess = vec![(0.0, 0.0); width];
    for s in 0..width {
        let first_landing = (tl.landings[0].t - tl.t0).abs();
        guess[s] = hinit_guess(&y, &k[0], width, s, rtol, atol, hmax.min(first_landing));
        let h0 = dir * guess[s].0;
        tstage[s] = tl.stage_time(tl.t0 + h0, tl.t0 + 0.5 * h0, h0);
        for i in 0..dim {
            let m = i * width + s;
            stage[m] = y[m] + h0 * k[0][m];
        }
    }
    sys.rhs(&tstage, &stage, &mut k[1], &mut ws);
    for s in 0..width {
        if lanes[s].active {
            stats.rhs_evals += 1;
            lanes[s].h = dir
                * hinit_finish(
                    &y,
                    &k[0],
                    &k[1],
                    width,
                    s,
                    guess[s],
                    tab.q + 1,
                    rtol,
                    atol,
                    hmax,
                );
        }
    }

    loop {
        // Restarts after a breakpoint need f at the new piece.
        if lanes.iter().any(|l| l.active && l.needs_k1) {
            for (s, lane) in lanes.iter().enumerate() {
                tstage[s] = tl.start_time(lane.t);
            }
            sys.rhs(&tstage, &y, &mut stage, &mut ws);
            for s in 0..width {
                let lane = &mut lanes[s];
                if !(lane.active && lane.needs_k1) {
                    continue;
                }
                stats.rhs_evals += 1;
                lane.needs_k1 = false;
                times[s] = tstage[s];
                for i in 0..dim {
                    k[0][i * width + s] = stage[i * width + s];
                }
                if let Some(i) = (0..dim).find(|&i| !stage[i * width + s].is_finite()) {
                    fail(
                        lane,
                        &mut failures[s],
                        SolveError::NonFinite {
                            t: lane.t,
                            sample: s,
                            component: i,
                        },
                    );
                }
            }
        }

        // Choose each sample's step: limits first, then clip to the next landing.
        let mut n_active = 0u64;
        for s in 0..width {
            let lane = &mut lanes[s];
            lane.hs = 0.0;
            if !lane.active {
                continue;
            }
            if lane.attempts >= options.max_steps {
                let e = SolveError::MaxStepsExceeded {
                    t: lane.t,
                    sample: s,
                    max_steps: options.max_steps,
                };
                fail(lane, &mut failures[s], e);
                continue;
            }
            if 0.1 * lane.h.abs() <= lane.t.abs() * f64::EPSILON || lane.h == 0.0 {
                fail(
                    lane,
                    &mut failures[s],
                    SolveError::StepSizeTooSmall {
                        t: lane.t,
                        sample: s,
                    },
                );
                continue;
            }
            let target = tl.landings[lane.landing].t;
            // Hairer's rule: stretch a step by up to 1% to land rather than leave a sliver.
            lane.clipped = (lane.t + 1.01 * lane.h - target) * dir > 0.0;
            lane.hs = if lane.clipped {
                target - lane.t
            } else {
                lane.h
            };
            lane.attempts += 1;
            n_active += 1;
        }
        if n_active == 0 {
            break;
        }

        // Stages 2..s; the last one is evaluated at y_new (FSAL).
        for i in 1..ns {
            let row = tab.a[i];
            for ic in 0..dim {
                for s in 0..width {
                    let m = ic * width + s;
                    let mut acc = 0.0;
                    for (j, &aij) in row.iter().enumerate() {
                        acc += aij * k[j][m];
                    }
                    stage[m] = y[m] + lanes[s].hs * acc;
                }
            }
            for (s, lane) in lanes.iter().enumerate() {
                tstage[s] = if lane.hs != 0.0 {
                    let tau = match (tab.c[i] == 1.0, lane.clipped) {
                        (true, true) => tl.landings[lane.landing].t,
                        _ => lane.t + tab.c[i] * lane.hs,
                    };
                    tl.stage_time(tau, lane.t + 0.5 * lane.hs, lane.hs)
                } else {
                    lane.t
                };
            }
            if i == ns - 1 {
                ynew.copy_from_slice(&stage);
            }
            times[i * width..(i + 1) * width].copy_from_slice(&tstage);
            sys.rhs(&tstage, &stage, &mut k[i], &mut ws);
        }
        stats.rhs_evals += (ns as u64 - 1) * n_active;

        // Error test and step-size control, sample by sample.
        for s in 0..width {
            let lane = &mut lanes[s];
            if lane.hs == 0.0 {
                continue;
            }
            let hs = lane.hs;
            let finite = (0..dim).all(|i| ynew[i * width + s].is_finite());
            let err_sq = lane_sum(dim, width, s, |m| {
                let e: f64 = tab
                    .e
                    .iter()
                    .enumerate()
                    .map(|(j, &ej)| ej * k[j][m])
                    .sum::<f64>()
                    * hs;
                let sk = atol[m / width] + rtol * y[m].abs().max(ynew[m].abs());
                (e / sk).powi(2)
            });
            let err = if finite {
                (err_sq / dim.max(1) as f64).sqrt()
            } else {
                f64::INFINITY
            };
            if !err.is_finite() {
                // A stage left the region where f is finite: shrink as much as allowed.
                lane.h = hs * FAC_MIN;
                lane.reject = true;
                stats.rejected += 1;
                continue;
            }
            let fac11 = err.powf(expo1);
            // Lund stabilization: the PI controller of Hairer's DOPRI5.
            let fac = (fac11 / lane.facold.powf(BETA) / SAFE).clamp(1.0 / FAC_MAX, 1.0 / FAC_MIN);
            let mut hnew = hs / fac;
            if err > 1.0 {
                lane.h = hs / (1.0 / FAC_MIN).min(fac11 / SAFE);
                lane.reject = true;
                stats.rejected += 1;
                continue;
            }

            // Accepted.
            lane.facold = err.max(1e-4);
            stats.steps += 1;
            let landing = tl.landings[lane.landing];
            let t_new = if lane.clipped { landing.t } else { lane.t + hs };
            if ne > 0 {
                sys.event_conditions(&[t_new], &ynew, &mut g_new, &mut ws);
                let t_start = lane.t;
                let found = events::locate(
                    specs,
                    &g_old,
                    &g_new,
                    events::theta_tol(t_start, hs),
                    |theta, e| {
                        for (i, v) in ev_y.iter_mut().enumerate() {
                            *v = dense(tab, theta, hs, &y, &ynew, &k, i);
                        }
                        sys.event_conditions(&[t_start + theta * hs], &ev_y, &mut g_tmp, &mut ws);
                        g_tmp[e]
                    },
                );
                if let Some((e, theta)) = found {
                    let te = if theta >= 1.0 {
                        t_new
                    } else {
                        t_start + theta * hs
                    };
                    if let Some(r) = recorder.as_deref_mut() {
                        for (j, lt) in lane_times.iter_mut().enumerate() {
                            *lt = times[j * width + s];
                        }
                        let step = Accepted {
                            lane: s,
                            t: t_start,
                            h: hs,
                            t_new,
                            times: &lane_times,
                            y: &y,
                            width,
                        };
                        r.event(&step, e, theta, te);
                    }
                    for (i, v) in ev_y.iter_mut().enumerate() {
                        *v = if theta >= 1.0 {
                            ynew[i]
                        } else {
                            dense(tab, theta, hs, &y, &ynew, &k, i)
                        };
                    }
                    while let Some(&ts) = tl.save.get(lane.next_save) {
                        if (ts - te) * dir > 0.0 {
                            break;
                        }
                        if ts == te {
                            write_lane(out, lane.next_save, s, width, dim, |m| ev_y[m]);
                        } else {
                            let th = (ts - t_start) / hs;
                            write_lane(out, lane.next_save, s, width, dim, |m| {
                                dense(tab, th, hs, &y, &ynew, &k, m)
                            });
                        }
                        lane.next_save += 1;
                    }
                    if let Some(h) = hits.as_deref_mut() {
                        h.push(EventHit { event: e, t: te });
                    }
                    if specs[e].terminate {
                        if let Err(err) = sys.event_stop(e, te, &mut ev_y, &mut ws) {
                            fail(lane, &mut failures[s], err);
                            continue;
                        }
                        while lane.next_save < tl.save.len() {
                            write_lane(out, lane.next_save, s, width, dim, |m| ev_y[m]);
                            lane.next_save += 1;
                        }
                        lane.active = false;
                        continue;
                    }
                    y.copy_from_slice(&ev_y);
                    if let Err(err) = sys.event_jump(e, te, &mut y, &mut jumps, &mut ws) {
                        fail(lane, &mut failures[s], err);
                        continue;
                    }
                    // A save time at the event holds the state after the jump.
                    if lane.next_save > 0 && tl.save[lane.next_save - 1] == te {
                        write_lane(out, lane.next_save - 1, s, width, dim, |m| y[m]);
                    }
                    lane.t = te;
                    if let Some(i) = (0..dim).find(|&i| !y[i].is_finite()) {
                        fail(
                            lane,
                            &mut failures[s],
                            SolveError::NonFinite {
                                t: te,
                                sample: s,
                                component: i,
                            },
                        );
                        continue;
                    }
                    lane.facold = 1e-4;
                    lane.reject = false;
                    if lane.clipped && te == landing.t {
                        lane.landing += 1;
                        if lane.landing == tl.landings.len() {
                            lane.active = false;
                            continue;
                        }
                    }
                    // Restart with a fresh step (Hairer's HINIT at the new state), so that
                    // the first step cannot leap over a return of the condition to zero.
                    let tf = tl.start_time(te);
                    sys.rhs(&[tf], &y, &mut k[0], &mut ws);
                    stats.rhs_evals += 1;
                    times[s] = tf;
                    lane.needs_k1 = false;
                    if let Some(i) = (0..dim).find(|&i| !k[0][i].is_finite()) {
                        let e = SolveError::NonFinite {
                            t: te,
                            sample: s,
                            component: i,
                        };
                        fail(lane, &mut failures[s], e);
                        continue;
                    }
                    let remaining = (tl.landings[lane.landing].t - te).abs();
                    let guess = hinit_guess(&y, &k[0], width, s, rtol, atol, hmax.min(remaining));
                    let h0 = dir * guess.0;
                    for i in 0..dim {
                        stage[i] = y[i] + h0 * k[0][i];
                    }
                    let tp = tl.stage_time(te + h0, te + 0.5 * h0, h0);
                    sys.rhs(&[tp], &stage, &mut k[1], &mut ws);
                    stats.rhs_evals += 1;
                    lane.h = dir
                        * hinit_finish(
                            &y,
                            &k[0],
                            &k[1],
                            width,
                            s,
                            guess,
                            tab.q + 1,
                            rtol,
                            atol,
                            hmax,
                        );
                    sys.event_conditions(&[te], &y, &mut g_old, &mut ws);
                    continue;
                }
                g_old.copy_from_slice(&g_new);
            }
            while let Some(&ts) = tl.save.get(lane.next_save) {
                if (ts - t_new) * dir > 0.0 {
                    break;
                }
                if ts == t_new {
                    write_lane(out, lane.next_save, s, width, dim, |m| ynew[m]);
                } else {
                    let theta = (ts - lane.t) / hs;
                    write_lane(out, lane.next_save, s, width, dim, |m| {
                        dense(tab, theta, hs, &y, &ynew, &k, m)
                    });
                }
                lane.next_save += 1;
            }
            if let Some(r) = recorder.as_deref_mut() {
                for (j, lt) in lane_times.iter_mut().enumerate() {
                    *lt = times[j * width + s];
                }
                r.accepted(&Accepted {
                    lane: s,
                    t: lane.t,
                    h: hs,
                    t_new,
                    times: &lane_times,
                    y: &y,
                    width,
                });
            }
            for i in 0..dim {
                let m = i * width + s;
                y[m] = ynew[m];
                k[0][m] = k[ns - 1][m];
            }
            times[s] = times[(ns - 1) * width + s];
            lane.t = t_new;
            if let Some(i) = (0..dim).find(|&i| !k[0][i * width + s].is_finite()) {
                fail(
                    lane,
                    &mut failures[s],
                    SolveError::NonFinite {
                        t: t_new,
                        sample: s,
                        component: i,
                    },
                );
                continue;
            }
            if hnew.abs() > hmax {
                hnew = dir * hmax;
            }
            if lane.reject {
                hnew = dir * hnew.abs().min(hs.abs());
            }
            lane.reject = false;
            if lane.clipped {
                // Landing shortened the step, not the error: keep the step that was planned.
                hnew = dir * hnew.abs().max(lane.h.abs());
                lane.landing += 1;
                if landing.restart {
                    lane.needs_k1 = true;
                    lane.facold = 1e-4;
                }
                if lane.landing == tl.landings.len() {
                    lane.active = false;
                }
            }
            lane.h = hnew;
        }
    }
}

/// The embedded pair of an adaptive method.
pub(crate) fn embedded(method: &Method) -> &'static EmbeddedRk {
    match method {
        Method::Bosh3 => &tableau::BOSH3,
        Method::Tsit5 => &tableau::TSIT5,
        _ => &tableau::DOPRI5,
    }
}

/// Writes one sample's state at save index `k` into the block output `[save][sample][dim]`.
fn write_lane(
    out: &mut [f64],
    k: usize,
    s: usize,
    width: usize,
    dim: usize,
    value: impl Fn(usize) -> f64,
) {
    let base = (k * width + s) * dim;
    for i in 0..dim {
        out[base + i] = value(i * width + s);
    }
}

/// The pair's dense output at `t + θ h` for block element `m`.
pub(crate) fn dense(
    tab: &EmbeddedRk,
    theta: f64,
    h: f64,
    y: &[f64],
    ynew: &[f64],
    k: &[Vec<f64>],
    m: usize,
) -> f64 {
    let (y0, y1) = (y[m], ynew[m]);
    let last = tab.c.len() - 1;
    match tab.dense {
        Dense::Hermite => {
            let t1 = 1.0 - theta;
            let h00 = (1.0 + 2.0 * theta) * t1 * t1;
            let h10 = theta * t1 * t1;
            let h01 = theta * theta * (3.0 - 2.0 * theta);
            let h11 = theta * theta * (theta - 1.0);
            h00 * y0 + h10 * h * k[0][m] + h01 * y1 + h11 * h * k[last][m]
        }
        Dense::Dopri5 => {
            // Hairer's CONTD5: y0 + θ(Δ + (1−θ)(B + θ(C + (1−θ) D))).
            let ydiff = y1 - y0;
            let bspl = h * k[0][m] - ydiff;
            let c4 = ydiff - h * k[last][m] - bspl;
            let c5 = h * DOPRI5_DENSE
                .iter()
                .enumerate()
                .map(|(j, &d)| d * k[j][m])
                .sum::<f64>();
            let t1 = 1.0 - theta;
            y0 + theta * (ydiff + t1 * (bspl + theta * (c4 + t1 * c5)))
        }
        Dense::Tsit5 => {
            let mut acc = 0.0;
            for (j, r) in TSIT5_INTERP.iter().enumerate() {
                let b = theta * (r[0] + theta * (r[1] + theta * (r[2] + theta * r[3])));
                acc += b * k[j][m];
            }
            y0 + h * acc
        }
    }
}
