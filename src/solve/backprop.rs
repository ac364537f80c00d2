//! Backprop: the exact gradient of a fixed-step schedule as computed, by a reverse sweep over
//! its steps (the discrete adjoint), with memory bounded by checkpointing.
//!
//! The forward pass is the same [`Stepper`] that [`super::solve_batch`] runs, so the states
//! (and the loss) are the bits `nodec run` reports. It keeps the state and the carried history
//! of a two-step method at the start of every segment of `segment` steps. The reverse pass
//! walks the segments from the last: it re-runs one segment from its checkpoint recording
//! every right-hand-side evaluation (time and input state), then reverses the segment's steps
//! one by one. The last segment is recorded by the forward pass itself. Peak storage per block
//! is `⌈N / segment⌉` checkpoints plus `segment` recorded steps, which is `O(√N)` states with
//! the default `segment = ⌈√N⌉`, at the price of re-running all segments but the last; short
//! schedules whose record is small are one segment (no recomputation).
//! Blocks are independent, so peak memory is that of the blocks in flight (one per thread),
//! not of the batch. Recomputation is deterministic, so the gradient has the same bits for every
//! segment length (`segment = N` stores everything).
//!
//! The reverse of each step is written by hand from its forward formula (the cotangent of each
//! stage is pulled back through `f` by one VJP): Runge–Kutta tableaus, Adams–Bashforth 2 (whose
//! carried `f_{n−1}` gets a cotangent of its own), LM-ResNet (carried `x_{n−1}`, and the
//! coefficient `k_n`, whose gradient goes to the parameters it reads) and leapfrog (kick, drift,
//! kick undone in reverse order).
//!
//! Save times between grid points are linear interpolations of two grid states, so their
//! cotangents are split between those two states with the same weights.
//!
//! The continuous adjoint on a fixed grid (`adjoint.rs`) shares this file's forward pass,
//! checkpoints, cost seeds and segment replay; only the backward step differs. Implicit Euler
//! and the adaptive pairs, which step every sample on its own, are in `sample.rs`.

use std::cell::RefCell;

use super::fixed::{leapfrog_has_others, record_non_finite, SavePoint, Stepper, SLOTS};
use super::tableau::{self, ExplicitRk};
use super::timeline::Timeline;
use super::{
    renumber, to_soa, Method, Objective, OptionsError, Sensitivity, SolveError, SolverOptions,
    Stats,
};
use std::ops::Range;

/// How backprop stores the forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackpropOptions {
    /// Steps per checkpoint segment; `None` keeps every step when that takes at most 8 MiB per
    /// block and uses `⌈√steps⌉` otherwise; `Some(steps)` keeps every step.
    pub segment: Option<usize>,
    /// Also return the cotangent `∂loss/∂y` at every save time.
    pub costates: bool,
}

/// What one block contributes.
pub(crate) struct BlockGradient {
    pub loss: f64,
    pub grad: Vec<f64>,
    /// `∂loss/∂y(t0)`, component-major.
    pub lambda0: Vec<f64>,
    /// States at the save times, `[save][sample in block][component]`.
    pub out: Vec<f64>,
    /// Cotangents at the save times, same layout (empty unless asked for).
    pub costates: Vec<f64>,
    pub stats: Stats,
}

/// Whether backprop supports `method`; `Err` says why not.
pub(crate) fn check_method(method: &Method) -> Result<(), OptionsError> {
    if !matches!(method, Method::Rodas4 | Method::Bdf) {
        Ok(())
    } else {
        Err(OptionsError::NoBackprop {
            method: method.name(),
        })
    }
}

/// Bytes of recorded steps one block may keep before checkpointing pays for itself: below this
/// the extra forward pass costs more than the memory is worth (a 20-step RK4 neural ODE stores
/// everything; a 10 000-step one on 32 samples of 64 components does not).
const STORE_ALL_BYTES: usize = 8 << 20;

/// Steps per segment and the values saved per evaluation when the caller does not choose:
/// every step with what the system saves for its VJP (`saved` values per evaluation) when the
/// block's record fits in [`STORE_ALL_BYTES`]; else every step without the saved values when
/// that fits; else `⌈√N⌉` steps with them, which minimises checkpoints plus records.
///
/// Dropping the saved values (a wide layer's activations, 1 MB per evaluation of a 4096-wide
/// layer on 32 samples) before checkpointing: the VJP then recomputes them, which costs at
/// most the part of one right-hand side that computes them, per evaluation; checkpointing
/// recomputes whole right-hand sides of all but the last segment. Either way the gradient's
/// bits are the same (the saved values are the recomputation's bits).
fn default_record(n_steps: usize, len: usize, saved: usize) -> (usize, usize) {
    // A record keeps the stage inputs and what the system saved of each evaluation, plus the
    // step's start, history and end.
    let bytes = |saved: usize| {
        let per_step = ((SLOTS + 3) * len + SLOTS * saved) * std::mem::size_of::<f64>();
        n_steps.saturating_mul(per_step)
    };
    if bytes(saved) <= STORE_ALL_BYTES {
        (n_steps, saved)
    } else if bytes(0) <= STORE_ALL_BYTES {
        (n_steps, 0)
    } else {
        ((n_steps as f64).sqrt().ceil() as usize, saved)
    }
}

/// The recorded evaluations of one step and the point it started from (and, for the
/// continuous adjoint, the point it ended at).
pub(super) struct StepRecord {
    pub t: Vec<f64>,
    pub y: Vec<Vec<f64>>,
    /// What the system saved of each evaluation for its VJP ([`System::rhs_saving`]).
    pub saved: Vec<Vec<f64>>,
    pub start: Vec<f64>,
    pub prev: Vec<f64>,
    pub end: Vec<f64>,
}

thread_local! {
    /// The step records of this thread's last block, for the next block to reuse: allocating
    /// and zeroing them afresh for every block took 8 % of a small model's training
    /// (cnf_moons, callgrind).
    static SPARE_RECORDS: RefCell<Vec<StepRecord>> = const { RefCell::new(Vec::new()) };
}

impl StepRecord {
    /// A record of the given sizes, reusing a spare one of this thread's last block if there
    /// is one. Its contents are stale: [`record_step`] overwrites every value the reverse
    /// sweep reads.
    pub fn take(len: usize, slots: usize, saved: usize) -> Self {
        let Some(mut rec) = SPARE_RECORDS.with(|spare| spare.borrow_mut().pop()) else {
            return Self::new(len, slots, saved);
        };
        let fit = |v: &mut Vec<f64>, n: usize| v.resize(n, 0.0);
        fit(&mut rec.t, slots);
        rec.y.resize_with(slots, Vec::new);
        rec.y.iter_mut().for_each(|v| fit(v, len));
        rec.saved.resize_with(slots, Vec::new);
        rec.saved.iter_mut().for_each(|v| fit(v, saved));
        fit(&mut rec.start, len);
        fit(&mut rec.prev, len);
        fit(&mut rec.end, len);
        rec
    }

    /// Keeps a block's records for this thread's next block, in place of the spare ones
    /// (so the spares never hold more than one block's records).
    pub fn give_back(records: Vec<StepRecord>) {
        SPARE_RECORDS.with(|spare| *spare.borrow_mut() = records);
    }

    /// Buffers for `slots` evaluations of `len` values, each keeping `saved` values for its VJP.
    pub fn new(len: usize, slots: usize, saved: usize) -> Self {
        StepRecord {
            t: vec![0.0; slots],
            y: vec![vec![0.0; len]; slots],
            saved: vec![vec![0.0; saved]; slots],
            start: vec![0.0; len],
            prev: vec![0.0; len],
            end: vec![0.0; len],
        }
    }
}

/// Backprop over one block of `samples` starting from `y0` (sample-major rows); with
/// `continuous`, the continuous adjoint on the same grid instead (`super::adjoint`), which
/// shares the forward pass, the checkpoints and the cost seeds. `grad` is the zeroed buffer
/// (as long as the parameters) the block's gradient is summed into, passed in so the caller
/// can recycle the buffers of folded blocks.
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
    mut grad: Vec<f64>,
) -> Result<BlockGradient, SolveError> {
    debug_assert!(grad.len() == sys.n_params() && grad.iter().all(|&g| g == 0.0));
    let width = samples.len();
    let first = samples.start;
    let dim = sys.dim();
    let len = dim * width;
    let n_steps = tl.steps;
    let n_save = tl.save.len();
    let method = &options.method;
    // The continuous adjoint needs the grid states only: no stage inputs, nothing saved.
    let (slots, saved) = if continuous {
        (0, 0)
    } else {
        (SLOTS, sys.saved_len() * width)
    };
    let (segment, saved) = match bp.segment {
        Some(segment) => (segment, saved),
        None => default_record(n_steps, len, saved),
    };
    let segment = segment.clamp(1, n_steps.max(1));
    let mut stats = Stats::default();
    let y0 = to_soa(y0_rows, dim, width);

    // Forward: checkpoints at segment starts, save times as the plain solve writes them.
    let mut stepper = Stepper::new(sys, samples.clone(), &y0);
    stepper.rec_saved = vec![vec![0.0; saved]; SLOTS];
    let mut out = vec![0.0; n_save * len];
    let mut saver = super::fixed::LinearSaver::new();
    saver.emit(tl, 0, tl.t0, &y0, tl.t0, &y0, width, &mut out);
    let mut checkpoints: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    let mut failures: Vec<Option<SolveError>> = vec![None; width];
    let mut y_old = y0.clone();
    // The last segment is recorded as the forward pass runs it, so the reverse pass replays
    // only the others (and nothing when one segment holds every step).
    let last_lo = n_steps.saturating_sub(1) / segment * segment;
    let mut records: Vec<StepRecord> = Vec::new();
    for n in 0..n_steps {
        if n % segment == 0 {
            checkpoints.push((stepper.y.clone(), stepper.prev.clone()));
        }
        let t_next = tl.grid(n + 1);
        let emits = saver.emits_by(tl, t_next);
        if emits {
            y_old.copy_from_slice(&stepper.y);
        }
        if n >= last_lo {
            records.push(StepRecord::take(len, slots, saved));
            let rec = records.last_mut().expect("just pushed");
            record_step(
                sys,
                method,
                tl,
                n,
                &mut stepper,
                rec,
                continuous,
                &mut stats,
            );
        } else {
            stepper.step(sys, method, tl, n, &mut stats);
        }
        record_non_finite(&stepper.y, width, t_next, &mut failures);
        if let Some(e) = failures.iter().flatten().next() {
            return Err(renumber(e.clone(), first));
        }
        if emits {
            saver.emit(
                tl,
                n + 1,
                tl.grid(n),
                &y_old,
                t_next,
                &stepper.y,
                width,
                &mut out,
            );
        }
    }
    let points = saver.points;
    // Recomputation below is work, but not more steps of the schedule.
    let forward_steps = stats.steps;

    // The loss at the save times and its cotangents, sent to the grid states they came from.
    let mut loss = 0.0;
    let mut save_block = vec![0.0; len];
    // Cotangents by grid node, so the reverse sweep picks up a node's seeds without a search.
    let mut seeds: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n_steps + 1];
    let mut cots: Vec<Vec<f64>> = Vec::new();
    for (k, point) in points.iter().enumerate() {
        for s in 0..width {
            for i in 0..dim {
                save_block[i * width + s] = out[(k * width + s) * dim + i];
            }
        }
        let mut cot = vec![0.0; len];
        loss += objective.at_save(
            k,
            tl.save[k],
            &save_block,
            samples.clone(),
            &mut cot,
            &mut grad,
            &mut stepper.ws,
        );
        if cot.iter().all(|&c| c == 0.0) {
            continue;
        }
        for (node, weight) in split(point) {
            seeds[node].push((weight, cots.len()));
        }
        cots.push(cot);
    }

    // Reverse, segment by segment.
    let mut rev = Reverse::new(len, width, SLOTS);
    let mut lambda = vec![0.0; len];
    let mut prev_bar = vec![0.0; len];
    let mut grid_costate: Vec<Option<Vec<f64>>> = vec![None; n_steps + 1];
    let mut wanted = vec![false; n_steps + 1];
    if bp.costates {
        for (node, _) in points.iter().flat_map(split) {
            wanted[node] = true;
        }
    }
    let inject = |node: usize, lambda: &mut [f64], store: &mut Vec<Option<Vec<f64>>>| {
        for &(weight, c) in &seeds[node] {
            for (l, c) in lambda.iter_mut().zip(&cots[c]) {
                *l += weight * c;
            }
        }
        if wanted[node] {
            store[node] = Some(lambda.to_vec());
        }
    };
    inject(n_steps, &mut lambda, &mut grid_costate);
    let mut backward =
        continuous.then(|| super::adjoint::FixedBackward::new(len, width, sys.n_params()));
    let n_segments = checkpoints.len();
    for seg in (0..n_segments).rev() {
        let lo = seg * segment;
        let hi = ((seg + 1) * segment).min(n_steps);
        if lo != last_lo {
            let (y, prev) = &checkpoints[seg];
            stepper.restore(y, prev);
            for (r, n) in (lo..hi).enumerate() {
                if records.len() <= r {
                    records.push(StepRecord::take(len, slots, saved));
                }
                record_step(
                    sys,
                    method,
                    tl,
                    n,
                    &mut stepper,
                    &mut records[r],
                    continuous,
                    &mut stats,
                );
            }
        }
        for n in (lo..hi).rev() {
            let rec = &records[n - lo];
            let ws = &mut stepper.ws;
            match backward.as_mut() {
                Some(b) => b.step(
                    sys,
                    method,
                    tl,
                    n,
                    rec,
                    &mut lambda,
                    &mut grad,
                    ws,
                    &mut stats,
                ),
                None => rev.step(
                    sys,
                    method,
                    tl,
                    n,
                    rec,
                    &mut lambda,
                    &mut prev_bar,
                    &mut grad,
                    ws,
                    &mut stats,
                ),
            }
            inject(n, &mut lambda, &mut grid_costate);
        }
    }

    StepRecord::give_back(records);
    stats.steps = forward_steps;
    let mut costates = Vec::new();
    if bp.costates {
        costates = vec![0.0; n_save * len];
        for (k, point) in points.iter().enumerate() {
            let mut value = vec![0.0; len];
            for (node, weight) in split(point) {
                if let Some(l) = &grid_costate[node] {
                    for (v, x) in value.iter_mut().zip(l) {
                        *v += weight * x;
                    }
                }
            }
            for s in 0..width {
                for i in 0..dim {
                    costates[(k * width + s) * dim + i] = value[i * width + s];
                }
            }
        }
    }
    Ok(BlockGradient {
        loss,
        grad,
        lambda0: lambda,
        out,
        costates,
        stats,
    })
}

/// Takes step `n` recording into `rec` its start, carried history and end, and (for backprop)
/// every right-hand-side evaluation.
#[allow(clippy::too_many_arguments)]
fn record_step<S: Sensitivity>(
    sys: &S,
    method: &Method,
    tl: &Timeline,
    n: usize,
    stepper: &mut Stepper<S::Workspace>,
    rec: &mut StepRecord,
    continuous: bool,
    stats: &mut Stats,
) {
    // Besides the stages, LM's reverse step reads the step's start and carried state, the
    // continuous adjoint its two ends; copying all three for every method was 1.7 % of P4's
    // training.
    let lm = matches!(method, Method::Lm);
    if lm || continuous {
        rec.start.copy_from_slice(&stepper.y);
    }
    if lm {
        rec.prev.copy_from_slice(&stepper.prev);
    }
    stepper.recording = !continuous;
    stepper.step(sys, method, tl, n, stats);
    stepper.recording = false;
    if continuous {
        rec.end.copy_from_slice(&stepper.y);
    }
    if !continuous {
        rec.t.copy_from_slice(&stepper.rec_t);
        // Swapping buffers keeps the recording without copying it again.
        std::mem::swap(&mut rec.y, &mut stepper.rec_y);
        std::mem::swap(&mut rec.saved, &mut stepper.rec_saved);
    }
}

/// The grid states a save time is made of, with their weights.
pub(super) fn split(p: &SavePoint) -> Vec<(usize, f64)> {
    if p.theta == 1.0 {
        vec![(p.upper, 1.0)]
    } else if p.theta == 0.0 || p.upper == 0 {
        vec![(p.upper.saturating_sub(1), 1.0)]
    } else {
        vec![(p.upper - 1, 1.0 - p.theta), (p.upper, p.theta)]
    }
}

/// Buffers of the reverse sweep.
pub(super) struct Reverse {
    width: usize,
    times: Vec<f64>,
    k_bar: Vec<Vec<f64>>,
    pulled: Vec<f64>,
}

impl Reverse {
    pub fn new(len: usize, width: usize, slots: usize) -> Self {
        Reverse {
            width,
            times: vec![0.0; width],
            k_bar: vec![vec![0.0; len]; slots],
            pulled: vec![0.0; len],
        }
    }

    /// `pulled = k_bar[slot]ᵀ ∂f/∂y` at the recorded evaluation `slot`, parameters into `grad`.
    #[allow(clippy::too_many_arguments)]
    fn pull<S: Sensitivity>(
        &mut self,
        sys: &S,
        rec: &StepRecord,
        slot: usize,
        grad: &mut [f64],
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) {
        self.times.fill(rec.t[slot]);
        // Records of the adaptive replays (`sample.rs`) keep no saved values (empty).
        sys.vjp_saved(
            &self.times,
            &rec.y[slot],
            &rec.saved[slot],
            &self.k_bar[slot],
            &mut self.pulled,
            grad,
            ws,
        );
        stats.vjp_evals += self.width as u64;
    }

    /// Reverses step `n`: on entry `lambda` is `∂loss/∂y_{n+1}` and `prev_bar` the cotangent
    /// of the history carried out of the step; on exit both refer to the step's start.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn step<S: Sensitivity>(
        &mut self,
        sys: &S,
        method: &Method,
        tl: &Timeline,
        n: usize,
        rec: &StepRecord,
        lambda: &mut [f64],
        prev_bar: &mut [f64],
        grad: &mut [f64],
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) {
        let h = tl.fixed_h();
        let width = self.width;
        let len = lambda.len();
        let dim = len / width.max(1);
        match method {
            Method::Euler => self.rk(sys, &tableau::EULER, h, rec, lambda, None, grad, ws, stats),
            Method::Midpoint => self.rk(
                sys,
                &tableau::MIDPOINT,
                h,
                rec,
                lambda,
                None,
                grad,
                ws,
                stats,
            ),
            Method::Heun => self.rk(sys, &tableau::HEUN, h, rec, lambda, None, grad, ws, stats),
            Method::Rk4 => self.rk(sys, &tableau::RK4, h, rec, lambda, None, grad, ws, stats),
            Method::Ab2 if n == 0 => {
                // The Heun start step also hands f_0 on as the carried history.
                self.rk(
                    sys,
                    &tableau::HEUN,
                    h,
                    rec,
                    lambda,
                    Some(prev_bar),
                    grad,
                    ws,
                    stats,
                );
                prev_bar.fill(0.0);
            }
            Method::Ab2 => {
                // y' = y + h (3/2 f(y) − 1/2 P), P' = f(y).
                for j in 0..len {
                    self.k_bar[0][j] = 1.5 * h * lambda[j] + prev_bar[j];
                    prev_bar[j] = -0.5 * h * lambda[j];
                }
                self.pull(sys, rec, 0, grad, ws, stats);
                for j in 0..len {
                    lambda[j] += self.pulled[j];
                }
            }
            Method::Lm => {
                for j in 0..len {
                    self.k_bar[0][j] = h * lambda[j];
                }
                self.pull(sys, rec, 0, grad, ws, stats);
                if n == 0 {
                    // y' = x + h f(x), P' = x.
                    for j in 0..len {
                        lambda[j] += self.pulled[j] + prev_bar[j];
                        prev_bar[j] = 0.0;
                    }
                } else {
                    // y' = (1 − k) x + k P + h f(x), P' = x.
                    let t = rec.t[0];
                    let k = sys.lm_coefficient(t);
                    let mut k_bar = 0.0;
                    for j in 0..len {
                        k_bar += (rec.prev[j] - rec.start[j]) * lambda[j];
                    }
                    sys.lm_coefficient_vjp(t, k_bar, grad, ws);
                    for j in 0..len {
                        let l = lambda[j];
                        lambda[j] = (1.0 - k) * l + prev_bar[j] + self.pulled[j];
                        prev_bar[j] = k * l;
                    }
                }
            }
            Method::Leapfrog { position, momentum } => {
                let q = position.start * width..position.end * width;
                let p = momentum.start * width..momentum.end * width;
                let others: Vec<Range<usize>> = if leapfrog_has_others(position, momentum, dim) {
                    (0..dim)
                        .filter(|i| !position.contains(i) && !momentum.contains(i))
                        .map(|i| i * width..(i + 1) * width)
                        .collect()
                } else {
                    Vec::new()
                };
                // The quadrature update o += h/2 (f_0 + f_3) at the end of the step.
                self.k_bar[0].fill(0.0);
                if !others.is_empty() {
                    self.k_bar[3].fill(0.0);
                    for r in &others {
                        for j in r.clone() {
                            self.k_bar[3][j] = 0.5 * h * lambda[j];
                            self.k_bar[0][j] = 0.5 * h * lambda[j];
                        }
                    }
                    self.pull(sys, rec, 3, grad, ws, stats);
                    add(lambda, &self.pulled);
                }
                // Second kick: p += h/2 f_2[p].
                self.k_bar[2].fill(0.0);
                for j in p.clone() {
                    self.k_bar[2][j] = 0.5 * h * lambda[j];
                }
                self.pull(sys, rec, 2, grad, ws, stats);
                add(lambda, &self.pulled);
                // Drift: q += h f_1[q].
                self.k_bar[1].fill(0.0);
                for j in q {
                    self.k_bar[1][j] = h * lambda[j];
                }
                self.pull(sys, rec, 1, grad, ws, stats);
                add(lambda, &self.pulled);
                // First kick: p += h/2 f_0[p].
                for j in p {
                    self.k_bar[0][j] = 0.5 * h * lambda[j];
                }
                self.pull(sys, rec, 0, grad, ws, stats);
                add(lambda, &self.pulled);
            }
            _ => unreachable!("backprop::check_method admits fixed-step explicit methods only"),
        }
    }

    /// Reverse of `y' = y + h Σ b_j k_j`, `k_i = f(Y_i)`, `Y_i = y + h Σ_{j<i} a_ij k_j`, with an
    /// extra cotangent on `k_0` when the step also hands `k_0` on (ab2's start).
    #[allow(clippy::too_many_arguments)]
    pub fn rk<S: Sensitivity>(
        &mut self,
        sys: &S,
        rk: &ExplicitRk,
        h: f64,
        rec: &StepRecord,
        lambda: &mut [f64],
        extra_k0: Option<&[f64]>,
        grad: &mut [f64],
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) {
        let stages = rk.b.len();
        // The same operations per element as a pass per stage, fewer passes over the block:
        // RK4's four seeds in one, and a stage's pull-back added to λ and to its one
        // predecessor's seed in one.
        match (&mut self.k_bar[..], rk.b) {
            ([k0, k1, k2, k3, ..], &[b0, b1, b2, b3]) => {
                let (hb0, hb1, hb2, hb3) = (h * b0, h * b1, h * b2, h * b3);
                let ks = k0.iter_mut().zip(k1.iter_mut()).zip(k2.iter_mut()).zip(k3);
                for ((((k0, k1), k2), k3), &l) in ks.zip(lambda.iter()) {
                    (*k0, *k1, *k2, *k3) = (hb0 * l, hb1 * l, hb2 * l, hb3 * l);
                }
            }
            _ => {
                for (j, &bj) in rk.b.iter().enumerate() {
                    let hb = h * bj;
                    for (kb, l) in self.k_bar[j].iter_mut().zip(lambda.iter()) {
                        *kb = hb * l;
                    }
                }
            }
        }
        if let Some(extra) = extra_k0 {
            add(&mut self.k_bar[0], extra);
        }
        for i in (0..stages).rev() {
            self.pull(sys, rec, i, grad, ws, stats);
            let mut terms = rk.a[i].iter().enumerate().filter(|&(_, &aij)| aij != 0.0);
            match (terms.next(), terms.next()) {
                (Some((j, &aij)), None) => {
                    let ha = h * aij;
                    let pairs = lambda.iter_mut().zip(self.k_bar[j].iter_mut());
                    for ((l, kb), &p) in pairs.zip(&self.pulled) {
                        *l += p;
                        *kb += ha * p;
                    }
                }
                _ => {
                    add(lambda, &self.pulled);
                    for (j, &aij) in rk.a[i].iter().enumerate() {
                        if aij != 0.0 {
                            let ha = h * aij;
                            for (kb, p) in self.k_bar[j].iter_mut().zip(&self.pulled) {
                                *kb += ha * p;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn add(dst: &mut [f64], src: &[f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three regimes of [`default_record`], from the bytes a record takes.
    #[test]
    fn record_keeps_saved_values_only_while_everything_fits() {
        // A small neural field: 20 steps of 32 samples × 8 components, 64 saved values each.
        assert_eq!(default_record(20, 8 * 32, 64 * 32), (20, 64 * 32));
        // wide_4096 on a block: 4 steps, 64 components, 4096 saved activations per sample
        // (4 MB a step with them, 56 KB without).
        assert_eq!(default_record(4, 64 * 32, 4096 * 32), (4, 0));
        // Ten thousand steps do not fit even without them: ⌈√N⌉ steps per segment.
        assert_eq!(default_record(10_000, 64 * 32, 4096 * 32), (100, 4096 * 32));
    }
}
