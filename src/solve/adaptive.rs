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
//!
//! Cost per step: the controller's state is one array per quantity and its arithmetic runs as
//! straight loops over the lanes; the PI factor `err^α / facold^β` is `exp(α ln err − β ln
//! facold)` (one `ln` and one `exp`, where two `pow`s cost more than the rest of a Lorenz
//! step's controller). This rounds the factor differently from `pow`, so step sizes can differ
//! from Hairer's in the last bits, but not step counts: P1 Lorenz keeps its 832 accepted and 2
//! rejected steps (`benches/small_solves.md`). Dense output is evaluated only for a save time
//! inside the step. The stages are one buffer, and a small block (at most [`SMALL`] values: a
//! Lorenz-size sample) keeps them also transposed, so that each component's stage sum is one
//! short unrolled loop in a register, with no bounds checks.
//!
//! A single sample of at most [`SMALL`] components that no recorder and no event watches runs
//! [`one`], this driver with scalars for lanes (half the instructions of a P1 step); other
//! single samples run a monomorphization of the block driver with the lane count known
//! (`ONE`).

#![expect(
    clippy::needless_range_loop,
    reason = "index loops mirror the formulas over components and lanes"
)]

use super::events;
use super::tableau::{self, Dense, EmbeddedRk, DOPRI5_DENSE, TSIT5_INTERP};
use super::timeline::Timeline;
use super::EventHit;
use super::{Method, SolveError, SolverOptions, Stats, System};

mod one;

/// Safety factor of the step-size controller (Hairer's `SAFE`).
const SAFE: f64 = 0.9;
/// Smallest step-size ratio (Hairer's `FAC1`).
const FAC_MIN: f64 = 0.2;
/// Largest step-size ratio (Hairer's `FAC2`).
const FAC_MAX: f64 = 10.0;
/// Stabilization exponent of the PI controller (Hairer's `BETA` for DOPRI5).
const BETA: f64 = 0.04;
/// The PI controller's memory of the last error never falls below this (Hairer's `FACOLD`
/// floor and start value).
const FACOLD_MIN: f64 = 1e-4;

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

/// The per-sample integration state of a block, one array per quantity, so that the
/// controller's arithmetic runs as straight loops over the lanes.
struct Lanes {
    t: Vec<f64>,
    /// Proposed step (signed).
    h: Vec<f64>,
    /// Step taken in the current iteration (signed; 0 when inactive).
    hs: Vec<f64>,
    /// The current step was shortened to land on `landing`.
    clipped: Vec<bool>,
    /// `ln` of the error of the last accepted step (the PI controller's memory, Hairer's
    /// `FACOLD`), kept as a logarithm so that the controller needs one `exp` a step, not
    /// two `pow`s.
    ln_facold: Vec<f64>,
    reject: Vec<bool>,
    active: Vec<bool>,
    needs_k1: Vec<bool>,
    landing: Vec<usize>,
    attempts: Vec<usize>,
    next_save: Vec<usize>,
    /// The error norm of the current step, and `ln` of the controller's step-size divisor
    /// before safety and bounds (scratch of one iteration).
    err: Vec<f64>,
    ln_fac: Vec<f64>,
}

impl Lanes {
    fn new(width: usize, t0: f64, ln_facold: f64) -> Lanes {
        Lanes {
            t: vec![t0; width],
            h: vec![0.0; width],
            hs: vec![0.0; width],
            clipped: vec![false; width],
            ln_facold: vec![ln_facold; width],
            reject: vec![false; width],
            active: vec![true; width],
            needs_k1: vec![false; width],
            landing: vec![0; width],
            attempts: vec![0; width],
            next_save: vec![0; width],
            err: vec![0.0; width],
            ln_fac: vec![0.0; width],
        }
    }

    fn fail(&mut self, s: usize, failure: &mut Option<SolveError>, e: SolveError) {
        self.active[s] = false;
        *failure = Some(e);
    }
}

/// `0` for a finite `x`, NaN otherwise: a finiteness test that sums over a lane without
/// branches.
#[allow(clippy::eq_op, reason = "x − x is the test")]
#[inline(always)]
fn nan_unless_finite(x: f64) -> f64 {
    x - x
}

/// Most stages a pair has (DOPRI5 and Tsit5: 7).
const MAX_STAGES: usize = 8;
const _: () = {
    let pairs = [&tableau::BOSH3, &tableau::DOPRI5, &tableau::TSIT5];
    let mut p = 0;
    while p < pairs.len() {
        assert!(pairs[p].c.len() <= MAX_STAGES && pairs[p].e.len() <= MAX_STAGES);
        p += 1;
    }
};

/// Blocks of at most this many values (a small system, one sample) keep their stages also
/// transposed, so that each sum of [`combine`] is one short loop in a register.
const SMALL: usize = 8;

/// The stages of a small block transposed, `kt[m][j] = k_j[m]`; empty for larger blocks.
type Transposed = Vec<[f64; MAX_STAGES]>;

/// Copies stage `j` (`kj`) into the transposed stages, if the block keeps them.
fn transpose_stage(kt: &mut Transposed, j: usize, kj: &[f64]) {
    for (row, &v) in kt.iter_mut().zip(kj) {
        row[j] = v;
    }
}

/// `acc = Σ_j coef[j] · k_j` elementwise, `j` ascending from `0.0` (the same order, so the
/// same bits, whichever loop is outer); `k` holds the stages `k_j` one after another, each of
/// `acc.len()` values, and `kt` the same transposed for a small block. The loops index no
/// stage and no lane, so nothing is bounds-checked: on a Lorenz-size system these sums are
/// most of a step.
fn combine(acc: &mut [f64], coef: &[f64], k: &[f64], kt: &Transposed) {
    let n = acc.len();
    if !kt.is_empty() {
        for (a, row) in acc.iter_mut().zip(kt) {
            *a = dot(coef, row);
        }
        return;
    }
    if n == 0 {
        return;
    }
    acc.fill(0.0);
    for (kj, &c) in k.chunks_exact(n).zip(coef) {
        for (a, &v) in acc.iter_mut().zip(kj) {
            *a += c * v;
        }
    }
}

/// `Σ_j coef[j] · row[j]` from `0.0`, `j` ascending.
#[inline(always)]
fn dot(coef: &[f64], row: &[f64; MAX_STAGES]) -> f64 {
    let mut sum = 0.0;
    for (&c, &v) in coef.iter().zip(row) {
        sum += c * v;
    }
    sum
}

/// A stage's state `out = y + h ⊙ Σ_j coef[j] · k_j`, lane `s` with its own step `h[s]`
/// (the sum as [`combine`] forms it).
#[inline(always)]
fn stage_into(out: &mut [f64], y: &[f64], h: &[f64], coef: &[f64], k: &[f64], kt: &Transposed) {
    if let ([h], false) = (h, kt.is_empty()) {
        // One sample of a small system: each component's sum and step in a register.
        for ((a, row), &v) in out.iter_mut().zip(kt).zip(y) {
            *a = v + h * dot(coef, row);
        }
        return;
    }
    combine(out, coef, k, kt);
    if let [h] = h {
        for (a, &v) in out.iter_mut().zip(y) {
            *a = v + h * *a;
        }
        return;
    }
    for (row, y_row) in out.chunks_exact_mut(h.len()).zip(y.chunks_exact(h.len())) {
        for ((a, &v), &hs) in row.iter_mut().zip(y_row).zip(h) {
            *a = v + hs * *a;
        }
    }
}

/// The step a sample takes from `t` with proposed step `h`, and whether it was shortened to
/// land on `target` (Hairer's rule: stretch a step by up to 1% to land rather than leave a
/// sliver). `Err` when the sample must stop: too many attempts, or a step below rounding.
#[inline(always)]
fn step_to_take(
    t: f64,
    h: f64,
    target: f64,
    dir: f64,
    attempts: usize,
    max_steps: usize,
    sample: usize,
) -> Result<(f64, bool), SolveError> {
    if attempts >= max_steps {
        return Err(SolveError::MaxStepsExceeded {
            t,
            sample,
            max_steps,
        });
    }
    if 0.1 * h.abs() <= t.abs() * f64::EPSILON || h == 0.0 {
        return Err(SolveError::StepSizeTooSmall { t, sample });
    }
    let clipped = (t + 1.01 * h - target) * dir > 0.0;
    Ok((if clipped { target - t } else { h }, clipped))
}

/// The time of stage `c` of a step `hs` from `t` (the landing itself for `c = 1` of a step
/// shortened to land on `landing`), placed on the right side of a breakpoint.
#[inline(always)]
fn stage_at(tl: &Timeline, t: f64, hs: f64, c: f64, clipped: bool, landing: f64) -> f64 {
    if hs == 0.0 {
        return t;
    }
    let tau = if c == 1.0 && clipped {
        landing
    } else {
        t + c * hs
    };
    tl.stage_time(tau, t + 0.5 * hs, hs)
}

/// One component's term of Hairer's mixed error norm, `(e / (atol + rtol max(|y|, |ŷ|)))²`.
#[inline(always)]
fn error_term(e: f64, atol: f64, rtol: f64, y: f64, ynew: f64) -> f64 {
    let sk = atol + rtol * y.abs().max(ynew.abs());
    (e / sk).powi(2)
}

/// The PI controller for a step with error norm `err` (`∞` for a non-finite `ŷ`): `ln` of the
/// step-size divisor `err^expo1 / facold^β` on acceptance, `err^expo1` on rejection, as
/// logarithms (one `ln` here and one `exp` in [`next_step`]); an accepted step updates the
/// memory `ln_facold`. A lane without a step (`hs = 0`) keeps its memory.
#[inline(always)]
fn controller(err: f64, hs: f64, expo1: f64, ln_facold: &mut f64, ln_facold_min: f64) -> f64 {
    let ln_err = err.ln();
    let accepted = err <= 1.0 && hs != 0.0;
    let ln_fac = expo1 * ln_err - if accepted { BETA * *ln_facold } else { 0.0 };
    if accepted {
        *ln_facold = ln_err.max(ln_facold_min);
    }
    ln_fac
}

/// The step after one of size `hs` with error norm `err` and controller divisor `ln_fac`:
/// `Err(h)` to retry a rejected step with `h`, `Ok(h)` for an accepted one's successor before
/// [`limit_next`] bounds it.
#[inline(always)]
fn next_step(err: f64, hs: f64, ln_fac: f64) -> Result<f64, f64> {
    if !err.is_finite() {
        // A stage left the region where f is finite: shrink as much as allowed.
        return Err(hs * FAC_MIN);
    }
    let fac = ln_fac.exp() / SAFE;
    if err > 1.0 {
        return Err(hs / (1.0 / FAC_MIN).min(fac));
    }
    // Lund stabilization: the PI controller of Hairer's DOPRI5.
    Ok(hs / fac.clamp(1.0 / FAC_MAX, 1.0 / FAC_MIN))
}

/// Bounds the step after an accepted one: at most `hmax`, no growth right after a rejection,
/// and after a step shortened to land, at least the step that was planned (`h`): landing
/// shortened it, not the error.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn limit_next(
    mut hnew: f64,
    hs: f64,
    h: f64,
    hmax: f64,
    dir: f64,
    rejected_before: bool,
    clipped: bool,
) -> f64 {
    if hnew.abs() > hmax {
        hnew = dir * hmax;
    }
    if rejected_before {
        hnew = dir * hnew.abs().min(hs.abs());
    }
    if clipped {
        hnew = dir * hnew.abs().max(h.abs());
    }
    hnew
}

/// The stages of `k` (one after another, `len` values each) as slices, for [`dense`].
fn stages(k: &[f64], len: usize) -> [&[f64]; MAX_STAGES] {
    std::array::from_fn(|j| k.get(j * len..(j + 1) * len).unwrap_or(&[]))
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
    recorder: Option<&mut dyn Recorder>,
    hits: Option<&mut Vec<EventHit>>,
) {
    // A single small sample with nothing watching its steps (a small solve, an ensemble
    // member) runs the block driver's arithmetic with scalars for lanes (`one.rs`).
    if samples.len() == 1
        && recorder.is_none()
        && hits.is_none()
        && one::solve(
            sys,
            options,
            tl,
            y0,
            samples.clone(),
            out,
            stats,
            &mut failures[0],
        )
    {
        return;
    }
    // Otherwise one code path; a single sample (events, a recorded solve) gets its
    // monomorphization with the lane count known, so that its lane loops disappear.
    if samples.len() == 1 {
        solve_lanes::<S, true>(
            sys, options, tl, y0, samples, out, stats, failures, recorder, hits,
        );
    } else {
        solve_lanes::<S, false>(
            sys, options, tl, y0, samples, out, stats, failures, recorder, hits,
        );
    }
}

/// [`solve`] for `ONE` sample or any number of them.
#[allow(clippy::too_many_arguments)]
fn solve_lanes<S: System, const ONE: bool>(
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
    let width = if ONE { 1 } else { samples.len() };
    if width == 0 {
        return;
    }
    let tab = embedded(&options.method);
    let ns = tab.c.len();
    let dim = sys.dim();
    let len = dim * width;
    let (rtol, dir) = (options.rtol, tl.dir);
    let atol = &options.atol_vec(dim)[..];
    let hmax = (tl.t1 - tl.t0).abs();
    let expo1 = 1.0 / (tab.q as f64 + 1.0) - BETA * 0.75;
    // Hairer's FACOLD starts at, and never falls below, 1e-4.
    let ln_facold_min = FACOLD_MIN.ln();

    let mut ws = sys.workspace(samples);
    let mut y = y0.to_vec();
    let mut ynew = vec![0.0; len];
    let mut stage = vec![0.0; len];
    let mut acc = vec![0.0; len];
    // The stages k_0..k_{s−1}, one after another.
    let mut k = vec![0.0; ns * len];
    let mut kt: Transposed = vec![[0.0; MAX_STAGES]; if len <= SMALL { len } else { 0 }];
    debug_assert!(ns <= MAX_STAGES);
    let mut tstage = vec![tl.t0; width];
    // The evaluation time of every stage of the current step, `[stage][lane]` (for recorders).
    let mut times = vec![tl.t0; ns * width];
    let mut lane_times = vec![0.0; ns];
    // Only recorders read `times`.
    let recording = recorder.is_some();
    // Per lane: Σ_i (e_i / sk_i)², and Σ_i (ŷ_i − ŷ_i), which is 0 exactly when ŷ is finite.
    let mut err_sq = vec![0.0; width];
    let mut poison = vec![0.0; width];

    let mut st = Lanes::new(width, tl.t0, ln_facold_min);

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
    sys.rhs(&tstage, &y, &mut k[..len], &mut ws);
    stats.rhs_evals += width as u64;
    for s in 0..width {
        if let Some(i) =
            (0..dim).find(|&i| !y[i * width + s].is_finite() || !k[i * width + s].is_finite())
        {
            let e = SolveError::NonFinite {
                t: tl.t0,
                sample: s,
                component: i,
            };
            st.fail(s, &mut failures[s], e);
            continue;
        }
        while tl.save.get(st.next_save[s]) == Some(&tl.t0) {
            write_lane(out, st.next_save[s], s, width, dim, |m| y[m]);
            st.next_save[s] += 1;
        }
    }

    // Initial step sizes (HINIT), one explicit Euler probe per sample.
    let mut guess = vec![(0.0, 0.0); width];
    for s in 0..width {
        let first_landing = (tl.landings[0].t - tl.t0).abs();
        guess[s] = hinit_guess(&y, &k[..len], width, s, rtol, atol, hmax.min(first_landing));
        let h0 = dir * guess[s].0;
        tstage[s] = tl.stage_time(tl.t0 + h0, tl.t0 + 0.5 * h0, h0);
        for i in 0..dim {
            let m = i * width + s;
            stage[m] = y[m] + h0 * k[m];
        }
    }
    sys.rhs(&tstage, &stage, &mut k[len..2 * len], &mut ws);
    for s in 0..width {
        if st.active[s] {
            stats.rhs_evals += 1;
            st.h[s] = dir
                * hinit_finish(
                    &y,
                    &k[..len],
                    &k[len..2 * len],
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
        if (0..width).any(|s| st.active[s] && st.needs_k1[s]) {
            for s in 0..width {
                tstage[s] = tl.start_time(st.t[s]);
            }
            sys.rhs(&tstage, &y, &mut stage, &mut ws);
            for s in 0..width {
                if !(st.active[s] && st.needs_k1[s]) {
                    continue;
                }
                stats.rhs_evals += 1;
                st.needs_k1[s] = false;
                times[s] = tstage[s];
                for i in 0..dim {
                    k[i * width + s] = stage[i * width + s];
                }
                if let Some(i) = (0..dim).find(|&i| !stage[i * width + s].is_finite()) {
                    let e = SolveError::NonFinite {
                        t: st.t[s],
                        sample: s,
                        component: i,
                    };
                    st.fail(s, &mut failures[s], e);
                }
            }
        }

        // Choose each sample's step: limits first, then clip to the next landing.
        let mut n_active = 0u64;
        for s in 0..width {
            st.hs[s] = 0.0;
            if !st.active[s] {
                continue;
            }
            let target = tl.landings[st.landing[s]].t;
            let step = step_to_take(
                st.t[s],
                st.h[s],
                target,
                dir,
                st.attempts[s],
                options.max_steps,
                s,
            );
            match step {
                Ok((hs, clipped)) => (st.hs[s], st.clipped[s]) = (hs, clipped),
                Err(e) => {
                    st.fail(s, &mut failures[s], e);
                    continue;
                }
            }
            st.attempts[s] += 1;
            n_active += 1;
        }
        if n_active == 0 {
            break;
        }

        // Stages 2..s; the last one is evaluated at y_new (FSAL).
        transpose_stage(&mut kt, 0, &k[..len]);
        for i in 1..ns {
            stage_into(&mut stage, &y, &st.hs, tab.a[i], &k, &kt);
            let c = tab.c[i];
            for s in 0..width {
                // A finished lane's landing index is past the end; it has no step.
                let landing = tl.landings.get(st.landing[s]).map_or(0.0, |l| l.t);
                tstage[s] = stage_at(tl, st.t[s], st.hs[s], c, st.clipped[s], landing);
            }
            if i == ns - 1 {
                std::mem::swap(&mut ynew, &mut stage);
            }
            if recording {
                times[i * width..(i + 1) * width].copy_from_slice(&tstage);
            }
            let at = if i == ns - 1 { &ynew } else { &stage };
            let ki = &mut k[i * len..(i + 1) * len];
            sys.rhs(&tstage, at, ki, &mut ws);
            transpose_stage(&mut kt, i, ki);
        }
        stats.rhs_evals += (ns as u64 - 1) * n_active;

        // Error norms of every lane: Hairer's mixed norm, and whether y_new is finite.
        combine(&mut acc, tab.e, &k, &kt);
        err_sq.fill(0.0);
        poison.fill(0.0);
        for i in 0..dim {
            let row = i * width..(i + 1) * width;
            let (e_row, y_row, yn_row) = (&acc[row.clone()], &y[row.clone()], &ynew[row]);
            for s in 0..width {
                err_sq[s] += error_term(e_row[s] * st.hs[s], atol[i], rtol, y_row[s], yn_row[s]);
                poison[s] += nan_unless_finite(yn_row[s]);
            }
        }
        // The PI controller's divisor `err^expo1 / facold^β` on acceptance, `err^expo1` on
        // rejection, as logarithms: one `ln` and one `exp` per lane and step.
        // Lanes without a step (hs = 0) keep their memory.
        for s in 0..width {
            let err = if poison[s] == 0.0 {
                (err_sq[s] / dim.max(1) as f64).sqrt()
            } else {
                f64::INFINITY
            };
            st.err[s] = err;
            st.ln_fac[s] = controller(err, st.hs[s], expo1, &mut st.ln_facold[s], ln_facold_min);
        }

        // Accept or reject, sample by sample.
        for s in 0..width {
            let hs = st.hs[s];
            if hs == 0.0 {
                continue;
            }
            let hnew = match next_step(st.err[s], hs, st.ln_fac[s]) {
                Ok(h) => h,
                Err(retry) => {
                    st.h[s] = retry;
                    st.reject[s] = true;
                    stats.rejected += 1;
                    continue;
                }
            };

            // Accepted.
            stats.steps += 1;
            let landing = tl.landings[st.landing[s]];
            let t_new = if st.clipped[s] {
                landing.t
            } else {
                st.t[s] + hs
            };
            if ne > 0 {
                sys.event_conditions(&[t_new], &ynew, &mut g_new, &mut ws);
                let t_start = st.t[s];
                let found = events::locate(
                    specs,
                    &g_old,
                    &g_new,
                    events::theta_tol(t_start, hs),
                    |theta, e| {
                        for (i, v) in ev_y.iter_mut().enumerate() {
                            *v = dense(tab, theta, hs, &y, &ynew, &stages(&k, len), i);
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
                            dense(tab, theta, hs, &y, &ynew, &stages(&k, len), i)
                        };
                    }
                    while let Some(&ts) = tl.save.get(st.next_save[s]) {
                        if (ts - te) * dir > 0.0 {
                            break;
                        }
                        if ts == te {
                            write_lane(out, st.next_save[s], s, width, dim, |m| ev_y[m]);
                        } else {
                            let th = (ts - t_start) / hs;
                            write_lane(out, st.next_save[s], s, width, dim, |m| {
                                dense(tab, th, hs, &y, &ynew, &stages(&k, len), m)
                            });
                        }
                        st.next_save[s] += 1;
                    }
                    if let Some(h) = hits.as_deref_mut() {
                        h.push(EventHit { event: e, t: te });
                    }
                    if specs[e].terminate {
                        if let Err(err) = sys.event_stop(e, te, &mut ev_y, &mut ws) {
                            st.fail(s, &mut failures[s], err);
                            continue;
                        }
                        while st.next_save[s] < tl.save.len() {
                            write_lane(out, st.next_save[s], s, width, dim, |m| ev_y[m]);
                            st.next_save[s] += 1;
                        }
                        st.active[s] = false;
                        continue;
                    }
                    y.copy_from_slice(&ev_y);
                    if let Err(err) = sys.event_jump(e, te, &mut y, &mut jumps, &mut ws) {
                        st.fail(s, &mut failures[s], err);
                        continue;
                    }
                    // A save time at the event holds the state after the jump.
                    if st.next_save[s] > 0 && tl.save[st.next_save[s] - 1] == te {
                        write_lane(out, st.next_save[s] - 1, s, width, dim, |m| y[m]);
                    }
                    st.t[s] = te;
                    if let Some(i) = (0..dim).find(|&i| !y[i].is_finite()) {
                        let e = SolveError::NonFinite {
                            t: te,
                            sample: s,
                            component: i,
                        };
                        st.fail(s, &mut failures[s], e);
                        continue;
                    }
                    st.ln_facold[s] = ln_facold_min;
                    st.reject[s] = false;
                    if st.clipped[s] && te == landing.t {
                        st.landing[s] += 1;
                        if st.landing[s] == tl.landings.len() {
                            st.active[s] = false;
                            continue;
                        }
                    }
                    // Restart with a fresh step (Hairer's HINIT at the new state), so that
                    // the first step cannot leap over a return of the condition to zero.
                    let tf = tl.start_time(te);
                    sys.rhs(&[tf], &y, &mut k[..len], &mut ws);
                    stats.rhs_evals += 1;
                    times[s] = tf;
                    st.needs_k1[s] = false;
                    if let Some(i) = (0..dim).find(|&i| !k[i].is_finite()) {
                        let e = SolveError::NonFinite {
                            t: te,
                            sample: s,
                            component: i,
                        };
                        st.fail(s, &mut failures[s], e);
                        continue;
                    }
                    let remaining = (tl.landings[st.landing[s]].t - te).abs();
                    let guess =
                        hinit_guess(&y, &k[..len], width, s, rtol, atol, hmax.min(remaining));
                    let h0 = dir * guess.0;
                    for i in 0..dim {
                        stage[i] = y[i] + h0 * k[i];
                    }
                    let tp = tl.stage_time(te + h0, te + 0.5 * h0, h0);
                    sys.rhs(&[tp], &stage, &mut k[len..2 * len], &mut ws);
                    stats.rhs_evals += 1;
                    st.h[s] = dir
                        * hinit_finish(
                            &y,
                            &k[..len],
                            &k[len..2 * len],
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
            // Dense output only when a save time falls in the step.
            while let Some(&ts) = tl.save.get(st.next_save[s]) {
                if (ts - t_new) * dir > 0.0 {
                    break;
                }
                if ts == t_new {
                    write_lane(out, st.next_save[s], s, width, dim, |m| ynew[m]);
                } else {
                    let theta = (ts - st.t[s]) / hs;
                    let ks = stages(&k, len);
                    write_lane(out, st.next_save[s], s, width, dim, |m| {
                        dense(tab, theta, hs, &y, &ynew, &ks, m)
                    });
                }
                st.next_save[s] += 1;
            }
            if let Some(r) = recorder.as_deref_mut() {
                for (j, lt) in lane_times.iter_mut().enumerate() {
                    *lt = times[j * width + s];
                }
                r.accepted(&Accepted {
                    lane: s,
                    t: st.t[s],
                    h: hs,
                    t_new,
                    times: &lane_times,
                    y: &y,
                    width,
                });
            }
            let mut non_finite = None;
            for i in 0..dim {
                let m = i * width + s;
                y[m] = ynew[m];
                k[m] = k[(ns - 1) * len + m];
                if non_finite.is_none() && !k[m].is_finite() {
                    non_finite = Some(i);
                }
            }
            if recording {
                times[s] = times[(ns - 1) * width + s];
            }
            st.t[s] = t_new;
            if let Some(i) = non_finite {
                let e = SolveError::NonFinite {
                    t: t_new,
                    sample: s,
                    component: i,
                };
                st.fail(s, &mut failures[s], e);
                continue;
            }
            let hnew = limit_next(hnew, hs, st.h[s], hmax, dir, st.reject[s], st.clipped[s]);
            st.reject[s] = false;
            if st.clipped[s] {
                st.landing[s] += 1;
                if landing.restart {
                    st.needs_k1[s] = true;
                    st.ln_facold[s] = ln_facold_min;
                }
                if st.landing[s] == tl.landings.len() {
                    st.active[s] = false;
                }
            }
            st.h[s] = hnew;
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
    k: &[impl AsRef<[f64]>],
    m: usize,
) -> f64 {
    let k = |j: usize| k[j].as_ref();
    let (y0, y1) = (y[m], ynew[m]);
    let last = tab.c.len() - 1;
    match tab.dense {
        Dense::Hermite => {
            let t1 = 1.0 - theta;
            let h00 = (1.0 + 2.0 * theta) * t1 * t1;
            let h10 = theta * t1 * t1;
            let h01 = theta * theta * (3.0 - 2.0 * theta);
            let h11 = theta * theta * (theta - 1.0);
            h00 * y0 + h10 * h * k(0)[m] + h01 * y1 + h11 * h * k(last)[m]
        }
        Dense::Dopri5 => {
            // Hairer's CONTD5: y0 + θ(Δ + (1−θ)(B + θ(C + (1−θ) D))).
            let ydiff = y1 - y0;
            let bspl = h * k(0)[m] - ydiff;
            let c4 = ydiff - h * k(last)[m] - bspl;
            let c5 = h * DOPRI5_DENSE
                .iter()
                .enumerate()
                .map(|(j, &d)| d * k(j)[m])
                .sum::<f64>();
            let t1 = 1.0 - theta;
            y0 + theta * (ydiff + t1 * (bspl + theta * (c4 + t1 * c5)))
        }
        Dense::Tsit5 => {
            let mut acc = 0.0;
            for (j, r) in TSIT5_INTERP.iter().enumerate() {
                let b = theta * (r[0] + theta * (r[1] + theta * (r[2] + theta * r[3])));
                acc += b * k(j)[m];
            }
            y0 + h * acc
        }
    }
}
