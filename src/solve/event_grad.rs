//! Backprop and the continuous adjoint through events, one sample at a time (as events are
//! solved, `events.rs`).
//!
//! The forward pass is the plain event solve (the bits `nodec run` reports) with a recorder of
//! its accepted steps: start time, size, stage times, start state, and for the step in which
//! an event was located its index and `θ`. The backward pass crosses each event `τ` by the
//! transpose of the saltation rule of `tangent.rs`. There `s⁺ = M s⁻ + N u` with
//! `M = h_y − v g_yᵀ/ġ`, `N = h_p − v g_pᵀ/ġ`, `v = h_y f⁻ − f⁺ + h_t`, `ġ = g_y f⁻ + g_t`;
//! the costate satisfies `λ⁻·s⁻ + (∂loss/∂θ)·u = λ⁺·s⁺` for all `s⁻, u`, so with
//! `c = λ⁺·v / ġ`: `λ⁻ = h_yᵀ λ⁺ − g_yᵀ c` and the gradient gains `h_pᵀ λ⁺ − g_pᵀ c`.
//! `terminate` is `h = identity`, `f⁺ = 0`; its `λ⁺` is the sum of the cotangents of the
//! held state at the later save times. A grazing crossing (`ġ ≈ 0`) is refused as forward
//! sensitivities refuse it.
//!
//! - **Backprop** is the exact transpose of what forward sensitivities compute: the accepted
//!   Runge–Kutta steps (step sizes, event times and `θ` held constant), the state before the
//!   event read from the method's dense output at that `θ` (the pairs' own interpolant; the
//!   fixed-step schedules' cubic Hermite interpolant with `f` at the step's end), saves
//!   interpolated as the solvers interpolate them, and the event time's dependence on the
//!   parameters through the implicit function theorem (the saltation rule above), not through
//!   the root finder's iterations. For fixed steps it matches forward sensitivities to
//!   rounding; for the adaptive pairs to their tolerance (forward sensitivities integrate the
//!   tangents with error control, so their steps differ).
//! - **The adjoint** solves `dλ/dt = −f_yᵀ λ`, `dg/dt = −f_pᵀ λ` backward over each
//!   inter-event segment as `adjoint.rs` does without events: the adaptive pairs with their
//!   controller at the schedule's tolerances, cost jumps at the save times; the fixed-step
//!   schedules with their own method over the recorded steps backward, cost jumps split
//!   between a step's ends as the linear interpolation of the save split them. The forward
//!   state is the recorded steps' dense output (the pairs' own, cubic Hermite for fixed
//!   steps); the transposed saltation rule crosses the events.
//!
//! The event partial derivatives come from the `EventJvp` kernel evaluated on basis
//! directions (`dim + n_params` evaluations per event): exact, and cheap for the small models
//! events are written for; a transposed kernel would make the parameter part one evaluation.
//!
//! Backprop is the default for event models, as for others: it was the cheapest method on
//! every event model measured (callgrind, whole `nodec grad` process, release build; forward /
//! backprop / adjoint, millions of instructions): `models/bouncing_ball.node` 10.3 / 8.4 / 9.2;
//! the ball in `h0`, `e`, `g` with dopri5 11.3 / 9.0 / 10.5, with 400 rk4 steps 15.9 / 13.4 /
//! 14.8; clock doses with a terminate in `k`, `D` 13.9 / 11.0 / 12.7 (the models of
//! `tests/it/events.rs`' dot-product test).

use super::adaptive::{self, Accepted, Recorder};
use super::adjoint::{AdjointField, DenseStep, HermitePiece, HermiteTrack, PairDense, Trajectory};
use super::backprop::{BackpropOptions, BlockGradient};
use super::events;
use super::sample::lane_costs;
use super::tableau::{self, EmbeddedRk, ExplicitRk};
use super::tangent::GRAZING;
use super::timeline::Timeline;
use super::{
    renumber, Method, Objective, OptionsError, Sensitivity, SolveError, SolverOptions, Stats,
    System,
};
use std::ops::Range;

/// An event located in a recorded step.
#[derive(Clone, Copy, Debug)]
struct Hit {
    e: usize,
    theta: f64,
    te: f64,
}

/// One accepted step of an event solve.
#[derive(Clone, Debug)]
struct TapeStep {
    t: f64,
    h: f64,
    t_end: f64,
    times: Vec<f64>,
    y: Vec<f64>,
    event: Option<Hit>,
}

/// The recorder of a sample's accepted steps.
#[derive(Default)]
struct Tape {
    steps: Vec<TapeStep>,
}

impl Tape {
    fn push(&mut self, a: &Accepted, event: Option<Hit>) {
        let dim = a.y.len() / a.width.max(1);
        self.steps.push(TapeStep {
            t: a.t,
            h: a.h,
            t_end: a.t_new,
            times: a.times.to_vec(),
            y: (0..dim).map(|i| a.y[i * a.width + a.lane]).collect(),
            event,
        });
    }
}

impl Recorder for Tape {
    fn accepted(&mut self, step: &Accepted) {
        self.push(step, None);
    }

    fn event(&mut self, step: &Accepted, e: usize, theta: f64, te: f64) {
        self.push(step, Some(Hit { e, theta, te }));
    }
}

/// The Runge–Kutta method of an event solve.
#[derive(Clone, Copy)]
enum Scheme {
    Fixed(&'static ExplicitRk),
    Pair(&'static EmbeddedRk),
}

impl Scheme {
    fn of(method: &Method) -> Scheme {
        match method {
            Method::Euler => Scheme::Fixed(&tableau::EULER),
            Method::Midpoint => Scheme::Fixed(&tableau::MIDPOINT),
            Method::Heun => Scheme::Fixed(&tableau::HEUN),
            Method::Rk4 => Scheme::Fixed(&tableau::RK4),
            m => Scheme::Pair(adaptive::embedded(m)),
        }
    }

    fn stages(&self) -> usize {
        match self {
            Scheme::Fixed(rk) => rk.c.len(),
            Scheme::Pair(tab) => tab.c.len(),
        }
    }

    fn row(&self, i: usize) -> &'static [f64] {
        match self {
            Scheme::Fixed(rk) => rk.a[i],
            Scheme::Pair(tab) => tab.a[i],
        }
    }
}

/// A step's stages recomputed from its start: inputs `x[i]`, derivatives `k[i]`, the end
/// state, and (fixed steps with an event) `f` at the end.
struct Stages {
    x: Vec<Vec<f64>>,
    k: Vec<Vec<f64>>,
    end: Vec<f64>,
    f_end: Vec<f64>,
    acc: Vec<f64>,
}

impl Stages {
    fn new(ns: usize, dim: usize) -> Self {
        Stages {
            x: vec![vec![0.0; dim]; ns],
            k: vec![vec![0.0; dim]; ns],
            end: vec![0.0; dim],
            f_end: vec![0.0; dim],
            acc: vec![0.0; dim],
        }
    }

    /// The step's arithmetic as `events::rk_one` (fixed) and `adaptive::solve` (pairs) did it.
    fn compute<S: System>(
        &mut self,
        sys: &S,
        scheme: Scheme,
        st: &TapeStep,
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) {
        let (dim, h) = (st.y.len(), st.h);
        let ns = scheme.stages();
        self.x[0].copy_from_slice(&st.y);
        sys.rhs(&st.times[..1], &st.y, &mut self.k[0], ws);
        for i in 1..ns {
            let (done, rest) = self.k.split_at_mut(i);
            let x = &mut self.x[i];
            let row = scheme.row(i);
            match scheme {
                Scheme::Fixed(_) => {
                    x.copy_from_slice(&st.y);
                    for (j, &aij) in row.iter().enumerate() {
                        if aij != 0.0 {
                            let ha = h * aij;
                            for m in 0..dim {
                                x[m] += ha * done[j][m];
                            }
                        }
                    }
                }
                Scheme::Pair(_) => {
                    for m in 0..dim {
                        let mut acc = 0.0;
                        for (j, &aij) in row.iter().enumerate() {
                            acc += aij * done[j][m];
                        }
                        x[m] = st.y[m] + h * acc;
                    }
                }
            }
            sys.rhs(&st.times[i..i + 1], x, &mut rest[0], ws);
        }
        stats.rhs_evals += ns as u64;
        match scheme {
            Scheme::Fixed(rk) => {
                let mut first = true;
                for (j, &bj) in rk.b.iter().enumerate() {
                    if bj == 0.0 {
                        continue;
                    }
                    for m in 0..dim {
                        let term = bj * self.k[j][m];
                        self.acc[m] = if first { term } else { self.acc[m] + term };
                    }
                    first = false;
                }
                for m in 0..dim {
                    self.end[m] = st.y[m] + h * self.acc[m];
                }
            }
            Scheme::Pair(_) => self.end.copy_from_slice(&self.x[ns - 1]),
        }
    }
}

/// The weights of an interpolated state on a step's start, end, stage derivatives (the step
/// size included) and `f` at the end.
struct Weights {
    start: f64,
    end: f64,
    k: Vec<f64>,
    f_end: f64,
}

impl Weights {
    /// The state before event `hit` of a step: its dense output at `θ`, or the end (`θ ≥ 1`).
    fn pre_event(scheme: Scheme, hit: Hit, h: f64) -> Weights {
        let ns = scheme.stages();
        if hit.theta >= 1.0 {
            return Weights {
                start: 0.0,
                end: 1.0,
                k: vec![0.0; ns],
                f_end: 0.0,
            };
        }
        match scheme {
            Scheme::Fixed(_) => Weights::hermite(hit.theta, h, ns),
            Scheme::Pair(tab) => Weights::dense(tab, hit.theta, h),
        }
    }

    /// The cubic Hermite interpolant of `events::hermite` (`f_a` is `k[0]`).
    fn hermite(theta: f64, h: f64, ns: usize) -> Weights {
        let t1 = 1.0 - theta;
        let mut k = vec![0.0; ns];
        k[0] = theta * t1 * t1 * h;
        Weights {
            start: (1.0 + 2.0 * theta) * t1 * t1,
            end: theta * theta * (3.0 - 2.0 * theta),
            k,
            f_end: theta * theta * (theta - 1.0) * h,
        }
    }

    /// The pair's dense output, linear in its inputs: its weights are its values on unit
    /// inputs.
    fn dense(tab: &EmbeddedRk, theta: f64, h: f64) -> Weights {
        let ns = tab.c.len();
        let mut ks = vec![vec![0.0]; ns];
        let at = |y: f64, ynew: f64, ks: &[Vec<f64>]| {
            adaptive::dense(tab, theta, h, &[y], &[ynew], ks, 0)
        };
        let start = at(1.0, 0.0, &ks);
        let end = at(0.0, 1.0, &ks);
        let mut k = vec![0.0; ns];
        for j in 0..ns {
            ks[j][0] = 1.0;
            k[j] = at(0.0, 0.0, &ks);
            ks[j][0] = 0.0;
        }
        Weights {
            start,
            end,
            k,
            f_end: 0.0,
        }
    }

    /// The state these weights interpolate.
    fn value(&self, stg: &Stages, y: &[f64], out: &mut [f64]) {
        for m in 0..out.len() {
            let mut v = self.start * y[m] + self.end * stg.end[m] + self.f_end * stg.f_end[m];
            for (j, &w) in self.k.iter().enumerate() {
                v += w * stg.k[j][m];
            }
            out[m] = v;
        }
    }

    /// Adds `cot` pulled back onto the step's pieces.
    fn pull(&self, cot: &[f64], c: &mut Cotangents) {
        for (m, &cm) in cot.iter().enumerate() {
            c.start[m] += self.start * cm;
            c.end[m] += self.end * cm;
            c.f_end[m] += self.f_end * cm;
            for (j, &w) in self.k.iter().enumerate() {
                if w != 0.0 {
                    c.k[j][m] += w * cm;
                }
            }
        }
    }
}

/// Cotangents of a step's pieces.
struct Cotangents {
    start: Vec<f64>,
    end: Vec<f64>,
    f_end: Vec<f64>,
    k: Vec<Vec<f64>>,
    x: Vec<Vec<f64>>,
}

impl Cotangents {
    fn new(ns: usize, dim: usize) -> Self {
        Cotangents {
            start: vec![0.0; dim],
            end: vec![0.0; dim],
            f_end: vec![0.0; dim],
            k: vec![vec![0.0; dim]; ns],
            x: vec![vec![0.0; dim]; ns],
        }
    }

    fn clear(&mut self) {
        for v in [&mut self.start, &mut self.end, &mut self.f_end] {
            v.fill(0.0);
        }
        for v in self.k.iter_mut().chain(self.x.iter_mut()) {
            v.fill(0.0);
        }
    }
}

/// Pulls the cotangents of a step's pieces back to its start (`c.start` on return) and adds
/// the parameter gradient into `grad`: the transpose of [`Stages::compute`].
#[allow(clippy::too_many_arguments)]
fn reverse_step<S: Sensitivity>(
    sys: &S,
    scheme: Scheme,
    st: &TapeStep,
    t_f_end: f64,
    stg: &Stages,
    c: &mut Cotangents,
    grad: &mut [f64],
    ws: &mut S::Workspace,
    stats: &mut Stats,
) {
    let (dim, h) = (st.y.len(), st.h);
    let ns = scheme.stages();
    let mut out = vec![0.0; dim];
    if c.f_end.iter().any(|&v| v != 0.0) {
        sys.vjp(&[t_f_end], &stg.end, &c.f_end, &mut out, grad, ws);
        stats.vjp_evals += 1;
        add(&mut c.end, &out);
    }
    match scheme {
        Scheme::Fixed(rk) => {
            for (j, &bj) in rk.b.iter().enumerate() {
                if bj != 0.0 {
                    for m in 0..dim {
                        c.k[j][m] += h * bj * c.end[m];
                    }
                }
            }
            let end = std::mem::take(&mut c.end);
            add(&mut c.start, &end);
            c.end = end;
        }
        Scheme::Pair(_) => {
            let end = std::mem::take(&mut c.end);
            add(&mut c.x[ns - 1], &end);
            c.end = end;
        }
    }
    for i in (0..ns).rev() {
        let mut cs = std::mem::take(&mut c.x[i]);
        if c.k[i].iter().any(|&v| v != 0.0) {
            sys.vjp(&st.times[i..i + 1], &stg.x[i], &c.k[i], &mut out, grad, ws);
            stats.vjp_evals += 1;
            add(&mut cs, &out);
        }
        add(&mut c.start, &cs);
        for (j, &aij) in scheme.row(i).iter().enumerate() {
            if aij != 0.0 {
                for (kj, &cm) in c.k[j].iter_mut().zip(&cs) {
                    *kj += h * aij * cm;
                }
            }
        }
        c.x[i] = cs;
    }
}

/// `λ⁻` from `λ⁺` across event `e` at `te` with the state `x_minus` before it, adding the
/// event's parameter terms into `grad` (the module docs' transposed saltation rule). Refuses a
/// grazing crossing with the test `tangent.rs` applies.
#[allow(clippy::too_many_arguments)]
fn saltation_transposed<S: Sensitivity>(
    sys: &S,
    e: usize,
    te: f64,
    x_minus: &[f64],
    lambda_plus: &[f64],
    lambda_minus: &mut [f64],
    grad: &mut [f64],
    ws: &mut S::Workspace,
    stats: &mut Stats,
) -> Result<(), SolveError> {
    let (dim, np) = (sys.dim(), sys.n_params());
    let refused = || SolveError::InvalidOptions(OptionsError::EventGradients);
    let mut f_minus = vec![0.0; dim];
    sys.rhs(&[te], x_minus, &mut f_minus, ws);
    let mut f_plus = vec![0.0; dim];
    if !sys.events()[e].terminate {
        let mut x_plus = x_minus.to_vec();
        let mut scratch = vec![0.0; events::jumps_len(sys.events())];
        sys.event_jump(e, te, &mut x_plus, &mut scratch, ws)?;
        sys.rhs(&[te], &x_plus, &mut f_plus, ws);
    }
    stats.rhs_evals += 2;
    let zero_u = vec![0.0; np];
    let (mut h_f, mut h_t, mut col, mut unused) = (
        vec![0.0; dim],
        vec![0.0; dim],
        vec![0.0; dim],
        vec![0.0; dim],
    );
    let (g_f, g_t) = sys
        .event_jvp(e, te, x_minus, &f_minus, &zero_u, &mut h_f, &mut h_t, ws)
        .ok_or_else(refused)?;
    let g_dot = g_f + g_t;
    // λ⁻ = h_yᵀ λ⁺ − g_yᵀ c, column by column; the grazing test of `tangent.rs` on the way.
    let v: Vec<f64> = (0..dim).map(|i| h_f[i] - f_plus[i] + h_t[i]).collect();
    let c = dot(lambda_plus, &v) / g_dot;
    let mut unit = vec![0.0; dim];
    let (mut normal, mut direction) = (g_t * g_t, 1.0);
    for j in 0..dim {
        unit[j] = 1.0;
        let (g_j, _) = sys
            .event_jvp(e, te, x_minus, &unit, &zero_u, &mut col, &mut unused, ws)
            .ok_or_else(refused)?;
        unit[j] = 0.0;
        normal += g_j * g_j;
        direction += f_minus[j] * f_minus[j];
        lambda_minus[j] = dot(lambda_plus, &col) - c * g_j;
    }
    let scale = (normal * direction).sqrt();
    if !g_dot.is_finite() || !scale.is_finite() || g_dot.abs() <= GRAZING * scale {
        return Err(SolveError::GrazingEvent {
            event: e,
            t: te,
            sample: 0,
        });
    }
    if c == 0.0 && lambda_plus.iter().all(|&l| l == 0.0) {
        return Ok(());
    }
    let zero_v = vec![0.0; dim];
    let mut u = vec![0.0; np];
    for p in 0..np {
        u[p] = 1.0;
        let (g_p, _) = sys
            .event_jvp(e, te, x_minus, &zero_v, &u, &mut col, &mut unused, ws)
            .ok_or_else(refused)?;
        u[p] = 0.0;
        grad[p] += dot(lambda_plus, &col) - c * g_p;
    }
    stats.jvp_evals += (1 + dim + np) as u64;
    Ok(())
}

/// Where a save time's state came from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum At {
    /// The initial state.
    Initial,
    /// Step `i`'s start.
    Start(usize),
    /// Step `i`'s end.
    End(usize),
    /// The state just before step `i`'s event.
    Pre(usize),
    /// The state just after step `i`'s event (for `terminate`, the held state).
    Post(usize),
    /// Linear interpolation between step `i`'s start and its end (or its pre-event state).
    Lin(usize, f64),
    /// Step `i`'s dense output at `θ`.
    Dense(usize, f64),
}

impl At {
    fn step(&self) -> Option<usize> {
        match *self {
            At::Initial => None,
            At::Start(i) | At::End(i) | At::Pre(i) | At::Post(i) => Some(i),
            At::Lin(i, _) | At::Dense(i, _) => Some(i),
        }
    }
}

/// Each save time's source, by the rules the event solvers write them with.
fn place_saves<S: System>(sys: &S, scheme: Scheme, tl: &Timeline, steps: &[TapeStep]) -> Vec<At> {
    let (n, dir) = (tl.save.len(), tl.dir);
    let mut at = Vec::with_capacity(n);
    while at.len() < n && tl.save[at.len()] == tl.t0 {
        at.push(At::Initial);
    }
    for (i, st) in steps.iter().enumerate() {
        let far = st.event.map_or(st.t_end, |hit| hit.te);
        while let Some(&ts) = tl.save.get(at.len()) {
            if (ts - far) * dir > 0.0 {
                break;
            }
            at.push(if ts == far {
                if st.event.is_some() {
                    At::Pre(i)
                } else {
                    At::End(i)
                }
            } else {
                match scheme {
                    Scheme::Fixed(_) if ts == st.t || far == st.t => At::Start(i),
                    Scheme::Fixed(_) => At::Lin(i, (ts - st.t) / (far - st.t)),
                    Scheme::Pair(_) => At::Dense(i, (ts - st.t) / st.h),
                }
            });
        }
        if let Some(hit) = st.event {
            if sys.events()[hit.e].terminate {
                at.resize(n, At::Post(i));
            } else if let Some(last) = at.len().checked_sub(1) {
                if tl.save[last] == hit.te {
                    at[last] = At::Post(i);
                }
            }
        }
    }
    // Only a solve that ended early leaves save times unwritten, and it returned an error.
    at.resize(n, At::Initial);
    at
}

/// One sample's forward solve and what its backward passes need.
struct Forward {
    out: Vec<f64>,
    steps: Vec<TapeStep>,
    places: Vec<At>,
}

fn forward<S: System>(
    sys: &S,
    options: &SolverOptions,
    tl: &Timeline,
    scheme: Scheme,
    y0: &[f64],
    sample: usize,
    stats: &mut Stats,
) -> Result<Forward, SolveError> {
    let dim = y0.len();
    let mut out = vec![0.0; tl.save.len() * dim];
    let mut tape = Tape::default();
    if tl.t0 == tl.t1 {
        for row in out.chunks_exact_mut(dim.max(1)) {
            row.copy_from_slice(y0);
        }
    } else {
        let mut failure = [None];
        let mut hits = Vec::new();
        events::solve_sample(
            sys,
            options,
            tl,
            y0,
            sample,
            &mut out,
            stats,
            &mut failure,
            &mut hits,
            Some(&mut tape),
        );
        if let Some(e) = failure[0].take() {
            return Err(renumber(e, sample));
        }
    }
    let places = place_saves(sys, scheme, tl, &tape.steps);
    Ok(Forward {
        out,
        steps: tape.steps,
        places,
    })
}

/// Gradients of one block of an event system by backprop or (`continuous`) the adjoint.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block<S: Sensitivity, O: Objective<S>>(
    sys: &S,
    objective: &O,
    options: &SolverOptions,
    tl: &Timeline,
    y0_rows: &[f64],
    samples: Range<usize>,
    bp: &BackpropOptions,
    continuous: bool,
) -> Result<BlockGradient, SolveError> {
    let (width, dim, n_save) = (samples.len(), sys.dim(), tl.save.len());
    let scheme = Scheme::of(&options.method);
    let mut g = BlockGradient {
        loss: 0.0,
        grad: vec![0.0; sys.n_params()],
        lambda0: vec![0.0; dim * width],
        out: vec![0.0; n_save * dim * width],
        costates: if bp.costates {
            vec![0.0; n_save * dim * width]
        } else {
            Vec::new()
        },
        stats: Stats::default(),
    };
    for (s, sample) in samples.enumerate() {
        let y0 = &y0_rows[s * dim..(s + 1) * dim];
        let fw = forward(sys, options, tl, scheme, y0, sample, &mut g.stats)?;
        let mut ws = sys.workspace(sample..sample + 1);
        let (loss, costs) = lane_costs(
            objective,
            tl,
            &fw.out,
            0,
            1,
            dim,
            sample,
            &mut g.grad,
            &mut ws,
        );
        g.loss += loss;
        let mut cot = vec![None; n_save];
        for (k, c) in costs {
            cot[k] = Some(c);
        }
        let lane = Lane {
            sys,
            scheme,
            tl,
            fw: &fw,
            cot: &cot,
            sample,
        };
        let mut costates = bp.costates.then(|| vec![vec![0.0; dim]; n_save]);
        let lambda0 = if continuous {
            lane.adjoint(options, &mut costates, &mut g.grad, &mut ws, &mut g.stats)
        } else {
            lane.backprop(&mut costates, &mut g.grad, &mut ws, &mut g.stats)
        }
        .map_err(|e| renumber(e, sample))?;
        for (i, &l) in lambda0.iter().enumerate() {
            g.lambda0[i * width + s] = l;
        }
        for k in 0..n_save {
            let dst = (k * width + s) * dim;
            g.out[dst..dst + dim].copy_from_slice(&fw.out[k * dim..(k + 1) * dim]);
            if let Some(c) = &costates {
                g.costates[dst..dst + dim].copy_from_slice(&c[k]);
            }
        }
    }
    Ok(g)
}

/// One sample's backward passes.
struct Lane<'a, S> {
    sys: &'a S,
    scheme: Scheme,
    tl: &'a Timeline,
    fw: &'a Forward,
    /// The objective's cotangent at each save time (`None`: zero).
    cot: &'a [Option<Vec<f64>>],
    sample: usize,
}

impl<S: Sensitivity> Lane<'_, S> {
    /// Adds the cotangents of the save times placed by `which` into `lambda`, then records
    /// `lambda` as their costate.
    fn inject(
        &self,
        which: impl Fn(At) -> bool,
        lambda: &mut [f64],
        costates: &mut Option<Vec<Vec<f64>>>,
    ) {
        let chosen = || (0..self.fw.places.len()).filter(|&k| which(self.fw.places[k]));
        for k in chosen() {
            if let Some(c) = &self.cot[k] {
                add(lambda, c);
            }
        }
        if let Some(cs) = costates.as_mut() {
            for k in chosen() {
                cs[k].copy_from_slice(lambda);
            }
        }
    }

    /// `f` at a fixed step's end, when the Hermite interpolant of an event needs it: its
    /// evaluation time as `events::fixed` took it.
    fn f_end_time(&self, st: &TapeStep) -> f64 {
        self.tl.stage_time(st.t_end, st.t + 0.5 * st.h, st.h)
    }

    /// The stages of step `i`, with `f` at its end when its event reads it.
    fn stages(&self, i: usize, stg: &mut Stages, ws: &mut S::Workspace, stats: &mut Stats) {
        let st = &self.fw.steps[i];
        stg.compute(self.sys, self.scheme, st, ws, stats);
        if matches!(self.scheme, Scheme::Fixed(_)) && st.event.is_some_and(|h| h.theta < 1.0) {
            self.sys
                .rhs(&[self.f_end_time(st)], &stg.end, &mut stg.f_end, ws);
            stats.rhs_evals += 1;
        }
    }

    /// `λ⁻` across step `i`'s event from `λ⁺ = lambda` (with the post-event save costs),
    /// then the pre-event save costs: the cotangent of the state before the event.
    #[allow(clippy::too_many_arguments)]
    fn cross(
        &self,
        i: usize,
        x_minus: &[f64],
        lambda: &mut [f64],
        costates: &mut Option<Vec<Vec<f64>>>,
        grad: &mut [f64],
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) -> Result<(), SolveError> {
        let hit = self.fw.steps[i].event.expect("a step with an event");
        self.inject(|a| a == At::Post(i), lambda, costates);
        let plus = lambda.to_vec();
        saltation_transposed(
            self.sys, hit.e, hit.te, x_minus, &plus, lambda, grad, ws, stats,
        )?;
        self.inject(|a| a == At::Pre(i), lambda, costates);
        Ok(())
    }

    /// The exact transpose of the recorded schedule (see the module docs).
    fn backprop(
        &self,
        costates: &mut Option<Vec<Vec<f64>>>,
        grad: &mut [f64],
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) -> Result<Vec<f64>, SolveError> {
        let dim = self.sys.dim();
        let ns = self.scheme.stages();
        let mut stg = Stages::new(ns, dim);
        let mut c = Cotangents::new(ns, dim);
        let mut lambda = vec![0.0; dim];
        let mut x_minus = vec![0.0; dim];
        // Interior saves' costates: (k, θ, λ at the far end), finished once λ at the start is.
        let mut interior: Vec<(usize, f64, Vec<f64>)> = Vec::new();
        for (i, st) in self.fw.steps.iter().enumerate().rev() {
            self.stages(i, &mut stg, ws, stats);
            c.clear();
            interior.clear();
            let in_step = |k: usize| self.fw.places[k].step() == Some(i);
            let saves: Vec<usize> = (0..self.fw.places.len()).filter(|&k| in_step(k)).collect();
            // The cotangent of the step's far end: its end, or the state before its event.
            let far = match st.event {
                Some(hit) => {
                    let w = Weights::pre_event(self.scheme, hit, st.h);
                    w.value(&stg, &st.y, &mut x_minus);
                    self.cross(i, &x_minus, &mut lambda, costates, grad, ws, stats)?;
                    Some(w)
                }
                None => {
                    self.inject(|a| a == At::End(i), &mut lambda, costates);
                    None
                }
            };
            for &k in &saves {
                let Some(cot) = &self.cot[k] else {
                    if let At::Lin(_, th) | At::Dense(_, th) = self.fw.places[k] {
                        interior.push((k, th, lambda.clone()));
                    }
                    continue;
                };
                match self.fw.places[k] {
                    At::Lin(_, th) => {
                        for m in 0..dim {
                            c.start[m] += (1.0 - th) * cot[m];
                            lambda[m] += th * cot[m];
                        }
                        interior.push((k, th, lambda.clone()));
                    }
                    At::Dense(_, th) => {
                        let w = match self.scheme {
                            Scheme::Pair(tab) => Weights::dense(tab, th, st.h),
                            Scheme::Fixed(_) => unreachable!("fixed steps save linearly"),
                        };
                        w.pull(cot, &mut c);
                        interior.push((k, th, lambda.clone()));
                    }
                    At::Start(_) => add(&mut c.start, cot),
                    _ => {}
                }
            }
            match far {
                Some(w) => w.pull(&lambda, &mut c),
                None => add(&mut c.end, &lambda),
            }
            reverse_step(
                self.sys,
                self.scheme,
                st,
                self.f_end_time(st),
                &stg,
                &mut c,
                grad,
                ws,
                stats,
            );
            lambda.copy_from_slice(&c.start);
            if let Some(cs) = costates.as_mut() {
                // Between a step's ends the costate is interpolated linearly, as `sample.rs`
                // does: the saved state there is an output of the interpolant, not a node.
                for (k, th, far) in &interior {
                    for m in 0..dim {
                        cs[*k][m] = (1.0 - th) * c.start[m] + th * far[m];
                    }
                }
                for &k in &saves {
                    if self.fw.places[k] == At::Start(i) {
                        cs[k].copy_from_slice(&c.start);
                    }
                }
            }
        }
        self.inject(|a| a == At::Initial, &mut lambda, costates);
        Ok(lambda)
    }

    /// The continuous adjoint over the inter-event segments (see the module docs).
    fn adjoint(
        &self,
        options: &SolverOptions,
        costates: &mut Option<Vec<Vec<f64>>>,
        grad: &mut [f64],
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) -> Result<Vec<f64>, SolveError> {
        let (sys, tl, steps) = (self.sys, self.tl, &self.fw.steps);
        let dim = sys.dim();
        let ns = self.scheme.stages();
        let mut stg = Stages::new(ns, dim);
        let mut z = vec![0.0; dim + sys.n_params()];
        let mut x_minus = vec![0.0; dim];
        // Segments end after each event step.
        let mut segments: Vec<Range<usize>> = Vec::new();
        let mut lo = 0;
        for (i, st) in steps.iter().enumerate() {
            if st.event.is_some() || i + 1 == steps.len() {
                segments.push(lo..i + 1);
                lo = i + 1;
            }
        }
        for seg in segments.into_iter().rev() {
            let last = &steps[seg.end - 1];
            // The segment's trajectory, recomputed from its recorded steps.
            let (mut dense, mut pieces) = (Vec::new(), Vec::new());
            for i in seg.clone() {
                let st = &steps[i];
                self.stages(i, &mut stg, ws, stats);
                match self.scheme {
                    Scheme::Pair(_) => dense.push(DenseStep {
                        t: st.t,
                        h: st.h,
                        t_new: st.t_end,
                        y: st.y.clone(),
                        y_new: stg.end.clone(),
                        k: stg.k.clone(),
                    }),
                    Scheme::Fixed(_) => {
                        if st.event.is_none_or(|h| h.theta >= 1.0) {
                            sys.rhs(&[self.f_end_time(st)], &stg.end, &mut stg.f_end, ws);
                            stats.rhs_evals += 1;
                        }
                        pieces.push(HermitePiece {
                            ta: st.t,
                            tb: st.t_end,
                            ya: st.y.clone(),
                            fa: stg.k[0].clone(),
                            yb: stg.end.clone(),
                            fb: stg.f_end.clone(),
                        })
                    }
                }
                if i + 1 == seg.end {
                    if let Some(hit) = st.event {
                        Weights::pre_event(self.scheme, hit, st.h).value(&stg, &st.y, &mut x_minus);
                    }
                }
            }
            let traj: Box<dyn Trajectory> = match self.scheme {
                Scheme::Pair(tab) => Box::new(PairDense {
                    tab,
                    steps: dense,
                    dir: tl.dir,
                }),
                Scheme::Fixed(_) => Box::new(HermiteTrack {
                    pieces,
                    dir: tl.dir,
                }),
            };
            let (a, mut b) = (steps[seg.start].t, last.t_end);
            if let Some(hit) = last.event {
                b = hit.te;
                let mut lambda = z[..dim].to_vec();
                self.cross(
                    seg.end - 1,
                    &x_minus,
                    &mut lambda,
                    costates,
                    grad,
                    ws,
                    stats,
                )?;
                z[..dim].copy_from_slice(&lambda);
            }
            match self.scheme {
                Scheme::Fixed(rk) => {
                    self.fixed_segment(rk, &*traj, seg, options, &mut z, costates, stats)?
                }
                Scheme::Pair(_) => {
                    self.pair_segment(&*traj, seg, a, b, options, &mut z, costates, stats)?
                }
            }
        }
        for (g, d) in grad.iter_mut().zip(&z[dim..]) {
            *g += d;
        }
        let mut lambda = z[..dim].to_vec();
        self.inject(|a| a == At::Initial, &mut lambda, costates);
        Ok(lambda)
    }

    /// The adaptive pairs: `z` from the segment's end `b` back to its start `a`, with the cost
    /// jumps at the save times inside it.
    #[allow(clippy::too_many_arguments)]
    fn pair_segment(
        &self,
        traj: &dyn Trajectory,
        seg: Range<usize>,
        a: f64,
        b: f64,
        options: &SolverOptions,
        z: &mut [f64],
        costates: &mut Option<Vec<Vec<f64>>>,
        stats: &mut Stats,
    ) -> Result<(), SolveError> {
        let (tl, dim) = (self.tl, self.sys.dim());
        let inside: Vec<usize> = (0..tl.save.len())
            .filter(|&k| {
                let place = self.fw.places[k];
                place.step().is_some_and(|i| seg.contains(&i))
                    && !matches!(place, At::Pre(_) | At::Post(_))
            })
            .collect();
        let mut stops: Vec<f64> = inside.iter().map(|&k| tl.save[k]).collect();
        stops.push(a);
        stops.push(b);
        stops.sort_by(|x, y| (x * tl.dir).total_cmp(&(y * tl.dir)));
        stops.dedup();
        let mut zout = vec![0.0; z.len()];
        for w in (0..stops.len()).rev() {
            if w + 1 < stops.len() {
                self.backward(traj, options, stops[w + 1], stops[w], z, &mut zout, stats)?;
                z.copy_from_slice(&zout);
            }
            let at = stops[w];
            let here = || inside.iter().copied().filter(move |&k| tl.save[k] == at);
            for k in here() {
                if let Some(c) = &self.cot[k] {
                    add(&mut z[..dim], c);
                }
            }
            if let Some(cs) = costates.as_mut() {
                for k in here() {
                    cs[k].copy_from_slice(&z[..dim]);
                }
            }
        }
        Ok(())
    }

    /// The fixed-step schedules: their own method backward over the recorded steps (the
    /// partial steps after events included), each save's cost split between the ends of its
    /// step with the weights of the linear interpolation that produced it, as `adjoint.rs`
    /// does on a grid without events.
    #[allow(clippy::too_many_arguments)]
    fn fixed_segment(
        &self,
        rk: &'static ExplicitRk,
        traj: &dyn Trajectory,
        seg: Range<usize>,
        options: &SolverOptions,
        z: &mut [f64],
        costates: &mut Option<Vec<Vec<f64>>>,
        stats: &mut Stats,
    ) -> Result<(), SolveError> {
        let (tl, dim) = (self.tl, self.sys.dim());
        let field = AdjointField::new(self.sys, traj, self.sample);
        let mut opts = options.clone();
        opts.t0 = tl.t1;
        opts.t1 = tl.t0;
        opts.save = vec![tl.t0];
        opts.stops = Vec::new();
        let btl = Timeline::new(&field, &opts).map_err(SolveError::InvalidOptions)?;
        let len = z.len();
        let mut fws = field.workspace(self.sample..self.sample + 1);
        let mut k = vec![vec![0.0; len]; rk.c.len()];
        let (mut stage, mut acc) = (vec![0.0; len], vec![0.0; len]);
        for i in seg.rev() {
            let st = &self.fw.steps[i];
            let far = st.event.map_or(st.t_end, |hit| hit.te);
            let mine = |k: usize| self.fw.places[k].step() == Some(i);
            let mut interior = Vec::new();
            for k in (0..tl.save.len()).filter(|&k| mine(k)) {
                let (place, cot) = (self.fw.places[k], self.cot[k].as_deref());
                match place {
                    At::End(_) => {
                        if let Some(c) = cot {
                            add(&mut z[..dim], c);
                        }
                    }
                    At::Lin(_, th) => {
                        if let Some(c) = cot {
                            for m in 0..dim {
                                z[m] += th * c[m];
                            }
                        }
                        interior.push((k, th));
                    }
                    _ => {}
                }
            }
            if let Some(cs) = costates.as_mut() {
                for k in (0..tl.save.len()).filter(|&k| self.fw.places[k] == At::End(i)) {
                    cs[k].copy_from_slice(&z[..dim]);
                }
            }
            let z_far = z[..dim].to_vec();
            let mut bstats = Stats::default();
            events::rk_one(
                &field,
                rk,
                &btl,
                far,
                st.t - far,
                z,
                &mut k,
                &mut stage,
                &mut acc,
                &mut bstats,
                &mut fws,
            );
            stats.steps += 1;
            if let Some(m) = (0..len).find(|&m| !z[m].is_finite()) {
                return Err(SolveError::NonFinite {
                    t: st.t,
                    sample: 0,
                    component: m.min(dim),
                });
            }
            for k in (0..tl.save.len()).filter(|&k| mine(k)) {
                let (place, cot) = (self.fw.places[k], self.cot[k].as_deref());
                match (place, cot) {
                    (At::Lin(_, th), Some(c)) => {
                        for m in 0..dim {
                            z[m] += (1.0 - th) * c[m];
                        }
                    }
                    (At::Start(_), Some(c)) => add(&mut z[..dim], c),
                    _ => {}
                }
            }
            if let Some(cs) = costates.as_mut() {
                for &(k, th) in &interior {
                    for m in 0..dim {
                        cs[k][m] = (1.0 - th) * z[m] + th * z_far[m];
                    }
                }
                for k in (0..tl.save.len()).filter(|&k| self.fw.places[k] == At::Start(i)) {
                    cs[k].copy_from_slice(&z[..dim]);
                }
            }
        }
        stats.vjp_evals += field.vjp_count();
        Ok(())
    }

    /// `z = (λ, g)` carried from `b` back to `a` by the schedule's pair at its tolerances.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        traj: &dyn Trajectory,
        options: &SolverOptions,
        b: f64,
        a: f64,
        z: &[f64],
        zout: &mut [f64],
        stats: &mut Stats,
    ) -> Result<(), SolveError> {
        if a == b {
            zout.copy_from_slice(z);
            return Ok(());
        }
        let field = AdjointField::new(self.sys, traj, self.sample);
        let mut opts = options.clone();
        opts.t0 = b;
        opts.t1 = a;
        opts.save = vec![a];
        opts.stops = Vec::new();
        let btl = Timeline::new(&field, &opts).map_err(SolveError::InvalidOptions)?;
        let mut bstats = Stats::default();
        let mut failures = vec![None];
        adaptive::solve(
            &field,
            &opts,
            &btl,
            z,
            0..1,
            zout,
            &mut bstats,
            &mut failures,
            None,
            None,
        );
        if let Some(e) = failures[0].take() {
            return Err(e);
        }
        stats.steps += bstats.steps;
        stats.rejected += bstats.rejected;
        stats.vjp_evals += field.vjp_count();
        Ok(())
    }
}

fn add(dst: &mut [f64], src: &[f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
