//! Gradients of the schedules that step every sample on its own: the adaptive explicit pairs
//! (backprop by exact replay of the accepted steps, or the continuous adjoint), implicit Euler
//! (backprop by the implicit function theorem, or the continuous adjoint) and the stiff
//! adaptive methods (continuous adjoint only).
//!
//! Every sample is handled at width 1 and the block's parameter gradient is the sum of its
//! samples' in sample order, so results do not depend on threads or on the block's other
//! samples. The forward pass is the plain solve (the adaptive pairs keep their lockstep block
//! and only add a recorder), so states and loss are the bits `nodec run` reports.
//!
//! Backprop through an adaptive pair is the exact gradient of the discrete schedule as
//! computed, with the accepted step sizes (and the step-size controller's decisions) held
//! constant: the step sizes are piecewise-constant functions of the parameters, so this is the
//! derivative almost everywhere, and the one finite differences see wherever a perturbation
//! does not change the accepted steps. Implicit Euler's step is differentiated through its
//! equation (`(I − hJ)ᵀ μ = λ` at the new state), as if Newton had converged exactly. Rosenbrock
//! and BDF refuse backprop: RODAS4's stages contain the Jacobian, so their exact derivative
//! needs second derivatives of `f` (and BDF's history and order changes are no better); the
//! continuous adjoint serves them.

use super::adaptive::{self, embedded};
use super::adjoint::{AdjointField, DenseStep, HermitePiece, HermiteTrack, PairDense, Trajectory};
use super::backprop::{split, BackpropOptions, BlockGradient, Reverse, StepRecord};
use super::fixed::{step_times, LinearSaver};
use super::implicit::ImplicitEuler;
use super::linalg::DenseLu;
use super::replay::{propagating, BlockLog, Checkpoints, Log, Replay};
use super::timeline::Timeline;
use super::{
    bdf, renumber, rosenbrock, to_soa, Method, Objective, Sensitivity, SolveError, SolverOptions,
    Stats, System,
};
use std::ops::Range;

/// What one sample contributes to its block.
struct LaneResult {
    loss: f64,
    lambda0: Vec<f64>,
    /// `λ` at every save time (empty unless asked for).
    costates: Vec<Vec<f64>>,
}

/// Collects the samples of a block.
struct BlockAcc {
    width: usize,
    dim: usize,
    g: BlockGradient,
}

impl BlockAcc {
    fn new(
        width: usize,
        dim: usize,
        n_save: usize,
        np: usize,
        out: Vec<f64>,
        bp: &BackpropOptions,
    ) -> Self {
        BlockAcc {
            width,
            dim,
            g: BlockGradient {
                loss: 0.0,
                grad: vec![0.0; np],
                lambda0: vec![0.0; dim * width],
                out,
                costates: if bp.costates {
                    vec![0.0; n_save * dim * width]
                } else {
                    Vec::new()
                },
                stats: Stats::default(),
            },
        }
    }

    fn add(&mut self, s: usize, r: LaneResult) {
        let (w, dim) = (self.width, self.dim);
        self.g.loss += r.loss;
        for i in 0..dim {
            self.g.lambda0[i * w + s] = r.lambda0[i];
        }
        for (k, l) in r.costates.iter().enumerate() {
            self.g.costates[(k * w + s) * dim..(k * w + s + 1) * dim].copy_from_slice(l);
        }
    }
}

/// The loss terms of sample `s` of a block at the save times, and the nonzero cotangents by
/// save index. `out` is the block's `[save][sample][component]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn lane_costs<S: System, O: Objective<S>>(
    objective: &O,
    tl: &Timeline,
    out: &[f64],
    s: usize,
    width: usize,
    dim: usize,
    sample: usize,
    grad: &mut [f64],
    ws: &mut S::Workspace,
) -> (f64, Vec<(usize, Vec<f64>)>) {
    let mut loss = 0.0;
    let mut costs = Vec::new();
    for (k, &ts) in tl.save.iter().enumerate() {
        let y = &out[(k * width + s) * dim..(k * width + s + 1) * dim];
        let mut cot = vec![0.0; dim];
        loss += objective.at_save(k, ts, y, sample..sample + 1, &mut cot, grad, ws);
        if cot.iter().any(|&c| c != 0.0) {
            costs.push((k, cot));
        }
    }
    (loss, costs)
}

/// Adds the work of a backward solve of an [`AdjointField`]: its right-hand sides are VJPs.
fn add_backward(stats: &mut Stats, b: &Stats, vjps: u64) {
    stats.steps += b.steps;
    stats.rejected += b.rejected;
    stats.jac_evals += b.jac_evals;
    stats.lu_decompositions += b.lu_decompositions;
    stats.vjp_evals += vjps;
}

/// Backprop (or, with `continuous`, the continuous adjoint) through an adaptive explicit pair
/// for one block.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adaptive_block<S: Sensitivity, O: Objective<S>>(
    sys: &S,
    objective: &O,
    options: &SolverOptions,
    tl: &Timeline,
    y0_rows: &[f64],
    samples: Range<usize>,
    bp: &BackpropOptions,
    continuous: bool,
) -> Result<BlockGradient, SolveError> {
    let width = samples.len();
    let first = samples.start;
    let dim = sys.dim();
    let n_save = tl.save.len();
    let mut out = vec![0.0; n_save * dim * width];
    let mut stats = Stats::default();
    let mut log = BlockLog::new(width, dim, bp.segment);
    if tl.t0 == tl.t1 {
        for k in 0..n_save {
            out[k * width * dim..(k + 1) * width * dim].copy_from_slice(y0_rows);
        }
    } else {
        let mut failures = vec![None; width];
        adaptive::solve(
            sys,
            options,
            tl,
            &to_soa(y0_rows, dim, width),
            samples.clone(),
            &mut out,
            &mut stats,
            &mut failures,
            Some(&mut log),
            None,
        );
        if let Some(e) = failures.into_iter().flatten().next() {
            return Err(renumber(e, first));
        }
    }
    let mut acc = BlockAcc::new(width, dim, n_save, sys.n_params(), out, bp);
    for s in 0..width {
        let sample = first + s;
        let lane = Lane {
            sys,
            options,
            tl,
            log: &log.lanes[s],
            out: &acc.g.out,
            s,
            width,
            sample,
            bp,
        };
        let r = if continuous {
            lane.adjoint(objective, &mut acc.g.grad, &mut stats)?
        } else {
            lane.backprop(objective, &mut acc.g.grad, &mut stats)
        };
        acc.add(s, r);
    }
    acc.g.stats = stats;
    Ok(acc.g)
}

/// One sample of an adaptive block and its recorded steps.
struct Lane<'a, S> {
    sys: &'a S,
    options: &'a SolverOptions,
    tl: &'a Timeline,
    log: &'a Log,
    out: &'a [f64],
    s: usize,
    width: usize,
    sample: usize,
    bp: &'a BackpropOptions,
}

impl<S: Sensitivity> Lane<'_, S> {
    /// Where save time `ts` lies: nodes `a`, `b` and the fraction `θ` between them (`a == b`
    /// when a step starts or ends exactly there).
    fn place(&self, ts: f64) -> (usize, usize, f64) {
        let (log, tl) = (self.log, self.tl);
        if let Some(n) = log.node_at(tl.t0, ts, tl.dir) {
            return (n, n, 0.0);
        }
        let i = log
            .steps
            .partition_point(|s| (s.t_new - ts) * tl.dir < 0.0)
            .min(log.steps.len().saturating_sub(1));
        let st = &log.steps[i];
        (i, i + 1, (ts - st.t) / st.h)
    }

    /// A replayer of this lane's method, and the objective at the save points: the loss and
    /// each save point's cotangent (its parameter part added into `grad`).
    #[allow(clippy::type_complexity)]
    fn replay_with_costs<O: Objective<S>>(
        &self,
        objective: &O,
        grad: &mut [f64],
    ) -> (Replay<S::Workspace>, f64, Vec<(usize, Vec<f64>)>) {
        let mut rep = Replay::new(self.sys, embedded(&self.options.method), self.sample);
        let (loss, costs) = lane_costs(
            objective,
            self.tl,
            self.out,
            self.s,
            self.width,
            self.sys.dim(),
            self.sample,
            grad,
            &mut rep.ws,
        );
        (rep, loss, costs)
    }

    /// The exact gradient of the recorded schedule, one segment at a time from the last.
    fn backprop<O: Objective<S>>(
        &self,
        objective: &O,
        grad: &mut [f64],
        stats: &mut Stats,
    ) -> LaneResult {
        let (sys, tl, log) = (self.sys, self.tl, self.log);
        let dim = sys.dim();
        let (mut rep, loss, costs) = self.replay_with_costs(objective, grad);
        let tab = embedded(&self.options.method);
        let n_steps = log.steps.len();
        let seeds: Vec<(usize, Vec<f64>)> = costs
            .into_iter()
            .map(|(k, cot)| {
                let node = log
                    .node_at(tl.t0, tl.save[k], tl.dir)
                    .expect("adaptive backprop: costs lie at t0, t1 or stops, which steps land on");
                (node, cot)
            })
            .collect();
        let places: Vec<(usize, usize, f64)> = if self.bp.costates {
            tl.save.iter().map(|&ts| self.place(ts)).collect()
        } else {
            Vec::new()
        };
        let mut store: Vec<Option<Vec<f64>>> =
            vec![None; if self.bp.costates { n_steps + 1 } else { 0 }];
        let inject = |n: usize, lambda: &mut [f64], store: &mut Vec<Option<Vec<f64>>>| {
            for (_, cot) in seeds.iter().filter(|s| s.0 == n) {
                for (l, c) in lambda.iter_mut().zip(cot) {
                    *l += c;
                }
            }
            if places.iter().any(|p| p.0 == n || p.1 == n) {
                store[n] = Some(lambda.to_vec());
            }
        };

        let prop = propagating(tab);
        let slots = prop.c.len();
        let mut rev = Reverse::new(dim, 1, slots);
        let mut lambda = vec![0.0; dim];
        inject(n_steps, &mut lambda, &mut store);
        let segments = log.checkpoints.segments(n_steps);
        let mut records: Vec<StepRecord> = Vec::new();
        let mut y = vec![0.0; dim];
        for (j, &(lo, hi)) in segments.iter().enumerate().rev() {
            y.copy_from_slice(&log.checkpoints.points[j].1);
            rep.restart();
            for (r, n) in (lo..hi).enumerate() {
                if records.len() <= r {
                    records.push(StepRecord::new(dim, slots, 0));
                }
                let step = &log.steps[n];
                rep.step(sys, step, &mut y, stats);
                let rec = &mut records[r];
                rec.t.copy_from_slice(&step.times[..slots]);
                for (dst, src) in rec.y.iter_mut().zip(&rep.stage) {
                    dst.copy_from_slice(src);
                }
            }
            for n in (lo..hi).rev() {
                let rec = &records[n - lo];
                let h = log.steps[n].h;
                rev.rk(
                    sys,
                    &prop,
                    h,
                    rec,
                    &mut lambda,
                    None,
                    grad,
                    &mut rep.ws,
                    stats,
                );
                inject(n, &mut lambda, &mut store);
            }
        }
        let costates = places
            .iter()
            .map(|&(a, b, theta)| {
                let la = store[a].as_deref().unwrap_or(&[]);
                let lb = store[b].as_deref().unwrap_or(la);
                // Between two steps' ends the costate is interpolated linearly: the saved
                // state there is an output of the dense formula, not a node of the schedule.
                (0..dim)
                    .map(|i| {
                        if a == b {
                            la[i]
                        } else {
                            (1.0 - theta) * la[i] + theta * lb[i]
                        }
                    })
                    .collect()
            })
            .collect();
        LaneResult {
            loss,
            lambda0: lambda,
            costates,
        }
    }

    /// The continuous adjoint with the trajectory replayed segment by segment.
    fn adjoint<O: Objective<S>>(
        &self,
        objective: &O,
        grad: &mut [f64],
        stats: &mut Stats,
    ) -> Result<LaneResult, SolveError> {
        let (sys, tl, log) = (self.sys, self.tl, self.log);
        let (mut rep, loss, costs) = self.replay_with_costs(objective, grad);
        let tab = embedded(&self.options.method);
        let n_steps = log.steps.len();
        let segments = log.checkpoints.segments(n_steps);
        let bounds: Vec<f64> = segments
            .iter()
            .map(|&(lo, _)| log.node_time(tl.t0, lo))
            .chain(std::iter::once(tl.t1))
            .collect();
        let load = |j: usize, stats: &mut Stats| -> Box<dyn Trajectory> {
            let (lo, hi) = segments[j];
            let mut y = log.checkpoints.points[j].1.clone();
            rep.restart();
            let mut steps = Vec::with_capacity(hi - lo);
            for step in &log.steps[lo..hi] {
                let start = y.clone();
                rep.step(sys, step, &mut y, stats);
                steps.push(DenseStep {
                    t: step.t,
                    h: step.h,
                    t_new: step.t_new,
                    y: start,
                    y_new: y.clone(),
                    k: rep.k.clone(),
                });
            }
            Box::new(PairDense {
                tab,
                steps,
                dir: tl.dir,
            })
        };
        continuous_lane(
            sys,
            self.options,
            tl,
            self.sample,
            &bounds,
            &costs,
            self.bp.costates,
            load,
            grad,
            stats,
        )
        .map(|(lambda0, costates)| LaneResult {
            loss,
            lambda0,
            costates,
        })
    }
}

/// The backward solve of one sample's costate and parameter quadrature with the schedule's own
/// adaptive or stiff method: over each interval between segment bounds and cost or save times,
/// from `t1` down to `t0`, with cost jumps between intervals. `load(j)` recomputes segment `j`
/// (`bounds[j]..bounds[j + 1]`) of the forward trajectory. Returns `λ(t0)` and, when asked
/// for, `λ` at every save time.
#[allow(clippy::too_many_arguments)]
fn continuous_lane<S: Sensitivity>(
    sys: &S,
    options: &SolverOptions,
    tl: &Timeline,
    sample: usize,
    bounds: &[f64],
    costs: &[(usize, Vec<f64>)],
    want_costates: bool,
    mut load: impl FnMut(usize, &mut Stats) -> Box<dyn Trajectory>,
    grad: &mut [f64],
    stats: &mut Stats,
) -> Result<(Vec<f64>, Vec<Vec<f64>>), SolveError> {
    let dim = sys.dim();
    let dir = tl.dir;
    let mut z = vec![0.0; dim + sys.n_params()];
    let mut costates = if want_costates {
        vec![vec![0.0; dim]; tl.save.len()]
    } else {
        Vec::new()
    };
    // Every time the backward solve must stop at, in the direction of the forward solve.
    let mut stops: Vec<f64> = bounds.to_vec();
    stops.extend(costs.iter().map(|(k, _)| tl.save[*k]));
    if want_costates {
        stops.extend(tl.save.iter().copied());
    }
    stops.sort_by(|a, b| (a * dir).total_cmp(&(b * dir)));
    stops.dedup();
    let jump = |t: f64, z: &mut [f64], costates: &mut Vec<Vec<f64>>| {
        for (k, cot) in costs {
            if tl.save[*k] == t {
                for (l, c) in z.iter_mut().zip(cot) {
                    *l += c;
                }
            }
        }
        for (k, &ts) in tl.save.iter().enumerate() {
            if want_costates && ts == t {
                costates[k].copy_from_slice(&z[..dim]);
            }
        }
    };
    jump(tl.t1, &mut z, &mut costates);
    let mut loaded: Option<(usize, Box<dyn Trajectory>)> = None;
    let mut zout = vec![0.0; z.len()];
    for w in (1..stops.len()).rev() {
        let (a, b) = (stops[w - 1], stops[w]);
        // The segment that holds [a, b]: the last one starting at or before a.
        let j = bounds[..bounds.len() - 1]
            .partition_point(|&s| (s - a) * dir <= 0.0)
            .max(1)
            - 1;
        if loaded.as_ref().map(|l| l.0) != Some(j) {
            drop(loaded.take());
            loaded = Some((j, load(j, stats)));
        }
        let traj = &*loaded.as_ref().expect("loaded above").1;
        let field = AdjointField::new(sys, traj, sample);
        let mut opts = options.clone();
        opts.t0 = b;
        opts.t1 = a;
        opts.save = vec![a];
        opts.stops = Vec::new();
        let btl = Timeline::new(&field, &opts).map_err(SolveError::InvalidOptions)?;
        let mut bstats = Stats::default();
        let result = match options.method {
            Method::Rodas4 | Method::Bdf => {
                let mut fws = field.workspace(0..1);
                if options.method == Method::Rodas4 {
                    rosenbrock::solve(
                        &field,
                        &opts,
                        &btl,
                        &z,
                        &mut zout,
                        &mut bstats,
                        &mut fws,
                        None,
                    )
                } else {
                    bdf::solve(
                        &field,
                        &opts,
                        &btl,
                        &z,
                        &mut zout,
                        &mut bstats,
                        &mut fws,
                        None,
                    )
                }
            }
            _ => {
                let mut failures = vec![None];
                adaptive::solve(
                    &field,
                    &opts,
                    &btl,
                    &z,
                    0..1,
                    &mut zout,
                    &mut bstats,
                    &mut failures,
                    None,
                    None,
                );
                failures[0].take().map_or(Ok(()), Err)
            }
        };
        result.map_err(|e| renumber(e, sample))?;
        add_backward(stats, &bstats, field.vjp_count());
        z.copy_from_slice(&zout);
        jump(a, &mut z, &mut costates);
    }
    for (g, d) in grad.iter_mut().zip(&z[dim..]) {
        *g += d;
    }
    z.truncate(dim);
    Ok((z, costates))
}

/// The continuous adjoint through RODAS4 or BDF for one block, sample by sample. The forward
/// solve keeps thinned checkpoints at accepted steps; each segment is solved again from its
/// checkpoint with the same method and tolerances (its steps may differ from the first solve's
/// by the controller's restart, within the tolerance) and read by cubic Hermite interpolation.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stiff_block<S: Sensitivity, O: Objective<S>>(
    sys: &S,
    objective: &O,
    options: &SolverOptions,
    tl: &Timeline,
    y0_rows: &[f64],
    samples: Range<usize>,
    bp: &BackpropOptions,
) -> Result<BlockGradient, SolveError> {
    let width = samples.len();
    let first = samples.start;
    let dim = sys.dim();
    let n_save = tl.save.len();
    let mut stats = Stats::default();
    let mut out = vec![0.0; n_save * dim * width];
    let mut logs = Vec::with_capacity(width);
    let mut one = vec![0.0; n_save * dim];
    for s in 0..width {
        let sample = first + s;
        let mut ws = sys.workspace(sample..sample + 1);
        let y0 = &y0_rows[s * dim..(s + 1) * dim];
        // Checkpoints carry their time as an extra last entry.
        let mut cps = Checkpoints::new(bp.segment);
        let mut count = 0;
        cps.offer(0, || y0.iter().copied().chain([tl.t0]).collect());
        if tl.t0 == tl.t1 {
            for k in 0..n_save {
                one[k * dim..(k + 1) * dim].copy_from_slice(y0);
            }
        } else {
            let mut record = |t: f64, y: &[f64]| {
                count += 1;
                cps.offer(count, || y.iter().copied().chain([t]).collect());
            };
            let r = if options.method == Method::Rodas4 {
                rosenbrock::solve(
                    sys,
                    options,
                    tl,
                    y0,
                    &mut one,
                    &mut stats,
                    &mut ws,
                    Some(&mut record),
                )
            } else {
                bdf::solve(
                    sys,
                    options,
                    tl,
                    y0,
                    &mut one,
                    &mut stats,
                    &mut ws,
                    Some(&mut record),
                )
            };
            r.map_err(|e| renumber(e, sample))?;
        }
        for k in 0..n_save {
            let dst = (k * width + s) * dim;
            out[dst..dst + dim].copy_from_slice(&one[k * dim..(k + 1) * dim]);
        }
        logs.push(cps);
    }
    let mut acc = BlockAcc::new(width, dim, n_save, sys.n_params(), out, bp);
    for (s, cps) in logs.iter().enumerate() {
        let sample = first + s;
        let mut ws = sys.workspace(sample..sample + 1);
        let (loss, costs) = lane_costs(
            objective,
            tl,
            &acc.g.out,
            s,
            width,
            dim,
            sample,
            &mut acc.g.grad,
            &mut ws,
        );
        let mut bounds: Vec<f64> = cps.points.iter().map(|p| p.1[dim]).collect();
        if bounds.last() != Some(&tl.t1) {
            bounds.push(tl.t1);
        }
        let load = |j: usize, stats: &mut Stats| -> Box<dyn Trajectory> {
            let (ta, tb) = (bounds[j], bounds[j + 1]);
            let start = &cps.points[j].1[..dim];
            let mut opts = options.clone();
            opts.t0 = ta;
            opts.t1 = tb;
            opts.save = vec![tb];
            opts.stops = Vec::new();
            let stl = Timeline::new(sys, &opts).expect("a piece of a valid span is valid");
            let mut points: Vec<(f64, Vec<f64>)> = vec![(ta, start.to_vec())];
            let mut end = vec![0.0; dim];
            let mut record = |t: f64, y: &[f64]| points.push((t, y.to_vec()));
            // The first solve succeeded from here; a failure now would only lose accuracy.
            let _ = if options.method == Method::Rodas4 {
                rosenbrock::solve(
                    sys,
                    &opts,
                    &stl,
                    start,
                    &mut end,
                    stats,
                    &mut ws,
                    Some(&mut record),
                )
            } else {
                bdf::solve(
                    sys,
                    &opts,
                    &stl,
                    start,
                    &mut end,
                    stats,
                    &mut ws,
                    Some(&mut record),
                )
            };
            let mut pieces = Vec::with_capacity(points.len());
            let mut f_a = vec![0.0; dim];
            let mut f_b = vec![0.0; dim];
            for w in points.windows(2) {
                let ((t_a, y_a), (t_b, y_b)) = (&w[0], &w[1]);
                let h = t_b - t_a;
                let mid = t_a + 0.5 * h;
                sys.rhs(&[stl.stage_time(*t_a, mid, h)], y_a, &mut f_a, &mut ws);
                sys.rhs(&[stl.stage_time(*t_b, mid, h)], y_b, &mut f_b, &mut ws);
                stats.rhs_evals += 2;
                pieces.push(HermitePiece {
                    ta: *t_a,
                    tb: *t_b,
                    ya: y_a.clone(),
                    fa: f_a.clone(),
                    yb: y_b.clone(),
                    fb: f_b.clone(),
                });
            }
            Box::new(HermiteTrack {
                pieces,
                dir: tl.dir,
            })
        };
        let (lambda0, costates) = continuous_lane(
            sys,
            options,
            tl,
            sample,
            &bounds,
            &costs,
            bp.costates,
            load,
            &mut acc.g.grad,
            &mut stats,
        )?;
        acc.add(
            s,
            LaneResult {
                loss,
                lambda0,
                costates,
            },
        );
    }
    acc.g.stats = stats;
    Ok(acc.g)
}

/// Backprop (or, with `continuous`, the continuous adjoint on the same grid) through implicit
/// Euler for one block, sample by sample.
#[allow(clippy::too_many_arguments)]
pub(crate) fn implicit_block<S: Sensitivity, O: Objective<S>>(
    sys: &S,
    objective: &O,
    options: &SolverOptions,
    tl: &Timeline,
    y0_rows: &[f64],
    samples: Range<usize>,
    bp: &BackpropOptions,
    continuous: bool,
) -> Result<BlockGradient, SolveError> {
    let width = samples.len();
    let first = samples.start;
    let dim = sys.dim();
    let n_save = tl.save.len();
    let n_steps = tl.steps;
    let h = tl.fixed_h();
    let segment = bp
        .segment
        .unwrap_or_else(|| (n_steps as f64).sqrt().ceil() as usize)
        .clamp(1, n_steps.max(1));
    let mut stats = Stats::default();
    let mut acc = BlockAcc::new(
        width,
        dim,
        n_save,
        sys.n_params(),
        vec![0.0; n_save * dim * width],
        bp,
    );
    let mut one = vec![0.0; n_save * dim];
    let mut ie = ImplicitEuler::new(dim);
    let mut lu = DenseLu::new(dim);
    let mut jac = vec![0.0; dim * dim];
    let mut jt = vec![0.0; dim * dim];
    let mut out = vec![0.0; dim];
    for s in 0..width {
        let sample = first + s;
        let mut ws = sys.workspace(sample..sample + 1);
        let y0 = &y0_rows[s * dim..(s + 1) * dim];
        // Forward: checkpoints at segment starts, save times as the plain solve writes them.
        let mut y = y0.to_vec();
        let mut y_old = y.clone();
        let mut saver = LinearSaver::new();
        saver.emit(tl, 0, tl.t0, y0, tl.t0, y0, 1, &mut one);
        let mut checkpoints = Vec::new();
        for n in 0..n_steps {
            if n % segment == 0 {
                checkpoints.push(y.clone());
            }
            y_old.copy_from_slice(&y);
            ie.step(sys, options, tl, n, &mut y, &mut stats, &mut ws)
                .map_err(|e| renumber(e, sample))?;
            saver.emit(
                tl,
                n + 1,
                tl.grid(n),
                &y_old,
                tl.grid(n + 1),
                &y,
                1,
                &mut one,
            );
        }
        for k in 0..n_save {
            let dst = (k * width + s) * dim;
            acc.g.out[dst..dst + dim].copy_from_slice(&one[k * dim..(k + 1) * dim]);
        }
        let (loss, costs) = lane_costs(
            objective,
            tl,
            &acc.g.out,
            s,
            width,
            dim,
            sample,
            &mut acc.g.grad,
            &mut ws,
        );
        let mut seeds: Vec<(usize, f64, &[f64])> = Vec::new();
        for (k, cot) in &costs {
            for (node, weight) in split(&saver.points[*k]) {
                seeds.push((node, weight, cot));
            }
        }
        let mut store: Vec<Option<Vec<f64>>> = vec![None; n_steps + 1];
        let wanted: Vec<usize> = if bp.costates {
            saver
                .points
                .iter()
                .flat_map(|p| split(p).into_iter().map(|(node, _)| node))
                .collect()
        } else {
            Vec::new()
        };
        let inject = |n: usize, lambda: &mut [f64], store: &mut Vec<Option<Vec<f64>>>| {
            for (_, weight, cot) in seeds.iter().filter(|s| s.0 == n) {
                for (l, c) in lambda.iter_mut().zip(cot.iter()) {
                    *l += weight * c;
                }
            }
            if wanted.contains(&n) {
                store[n] = Some(lambda.to_vec());
            }
        };

        // Reverse, segment by segment: node states recomputed from the checkpoint.
        let mut lambda = vec![0.0; dim];
        inject(n_steps, &mut lambda, &mut store);
        let mut nodes: Vec<Vec<f64>> = Vec::new();
        for seg in (0..checkpoints.len()).rev() {
            let lo = seg * segment;
            let hi = ((seg + 1) * segment).min(n_steps);
            let mut y = checkpoints[seg].clone();
            nodes.resize(hi - lo + 1, Vec::new());
            nodes[0] = y.clone();
            for n in lo..hi {
                ie.step(sys, options, tl, n, &mut y, &mut stats, &mut ws)
                    .map_err(|e| renumber(e, sample))?;
                nodes[n - lo + 1] = y.clone();
            }
            for n in (lo..hi).rev() {
                // Discrete: (I − hJ(y_{n+1}))ᵀ μ = λ_{n+1}, the step's equation differentiated.
                // Continuous: implicit Euler backward, (I − hJ(y_n))ᵀ λ_n = λ_{n+1}.
                let (tau, at) = if continuous {
                    (step_times(tl, n)(0.0), &nodes[n - lo])
                } else {
                    (ImplicitEuler::eval_time(tl, n), &nodes[n - lo + 1])
                };
                sys.jacobian(tau, at, &mut jac, &mut ws);
                stats.jac_evals += 1;
                stats.lu_decompositions += 1;
                for i in 0..dim {
                    for j in 0..dim {
                        jt[i * dim + j] = jac[j * dim + i];
                    }
                }
                if !lu.factor_shifted(1.0 / h, &jt) {
                    return Err(SolveError::NewtonFailed {
                        t: tl.grid(n + 1),
                        sample,
                    });
                }
                for l in lambda.iter_mut() {
                    *l /= h;
                }
                lu.solve(&mut lambda);
                // grad += h μᵀ ∂f/∂θ.
                let w: Vec<f64> = lambda.iter().map(|l| h * l).collect();
                sys.vjp(&[tau], at, &w, &mut out, &mut acc.g.grad, &mut ws);
                stats.vjp_evals += 1;
                inject(n, &mut lambda, &mut store);
            }
        }
        let costates = if bp.costates {
            saver
                .points
                .iter()
                .map(|p| {
                    let mut v = vec![0.0; dim];
                    for (node, weight) in split(p) {
                        if let Some(l) = &store[node] {
                            for (x, y) in v.iter_mut().zip(l) {
                                *x += weight * y;
                            }
                        }
                    }
                    v
                })
                .collect()
        } else {
            Vec::new()
        };
        acc.add(
            s,
            LaneResult {
                loss,
                lambda0: lambda,
                costates,
            },
        );
    }
    acc.g.stats = stats;
    Ok(acc.g)
}
