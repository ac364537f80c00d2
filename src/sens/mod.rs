//! `sens`: the gradient of a model's loss with respect to its parameters, through the solve.
//!
//! The loss is `mean over samples (terminal + ∫ running dt + Σ observed) + penalty`. Every
//! method computes the *sum* over samples first (so per-sample cotangents are the costates of
//! each sample's own loss), then divides by the number of samples and adds the penalty's
//! gradient. Blocks of samples are reduced in block order, so gradients are bit-identical for
//! any number of threads.
//!
//! Methods ([`GradientMethod`]):
//! - `backprop`: the exact gradient of the discrete schedule as computed
//!   ([`crate::solve::backprop_batch`], checkpointed). For the adaptive pairs (bosh3, dopri5,
//!   tsit5) the accepted step sizes are treated as constants: it is the derivative of the
//!   recorded sequence of Runge–Kutta steps, which is what finite differences see as long as a
//!   perturbation does not change the steps. Implicit Euler is differentiated through its step
//!   equation (implicit function theorem). RODAS4 and BDF are refused: an exact discrete
//!   gradient of a Rosenbrock step needs second derivatives of the field (its stages contain
//!   the Jacobian), so the error suggests `--method adjoint`.
//! - `adjoint`: the continuous adjoint ([`crate::solve::adjoint_batch`]) for every method: the
//!   costate and the parameter quadrature solved backward with the schedule's own method (the
//!   same grid, or the same tolerances), the forward trajectory recomputed from checkpoints.
//!   It is the gradient of the exact flow, within the solves' accuracy of the computed loss's
//!   gradient: use it where backprop is unavailable or its per-step storage too large, and
//!   backprop where the exact gradient of what was computed matters (training with few steps).
//! - `forward`: forward sensitivities, one tangent per parameter coordinate ([`forward`]).
//!
//! Conventions: `λ = ∂loss/∂y` is what backprop propagates; the costate of Pontryagin's
//! principle in nodec's sign convention (`H = p·f − L`, `p(T) = −∂Φ/∂x`) is `p = −λ`.

use std::ops::Range;

mod forward;

pub use forward::DEFAULT_FORWARD_LIMIT;

use crate::compile::{Params, Program};
use crate::data::Dataset;
use crate::dist::{Local, Ranks, Reader, Writer};
use crate::ir::{self, CostKind, GradientMethod};
use crate::simulate::{Bound, QuadratureWorkspace, Simulation, WithQuadrature};
use crate::solve::{self, BackpropOptions, Objective, SolveError, Stats, System};

/// How to compute a gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct GradientOptions {
    /// The method.
    pub method: GradientMethod,
    /// Backprop: steps per checkpoint segment (`None`: `⌈√steps⌉`).
    pub segment: Option<usize>,
    /// Also compute the costates at the schedule's save times.
    pub costates: bool,
    /// Forward: the most parameter coordinates it accepts (`None`: [`DEFAULT_FORWARD_LIMIT`]).
    pub forward_limit: Option<usize>,
}

impl GradientOptions {
    /// Options for `method` with default checkpointing and no costates.
    pub fn new(method: GradientMethod) -> Self {
        GradientOptions {
            method,
            segment: None,
            costates: false,
            forward_limit: None,
        }
    }
}

/// Costates at the save times.
#[derive(Clone, Debug, PartialEq)]
pub struct Costates {
    /// Save times.
    pub t: Vec<f64>,
    /// `p = −∂(sample's loss)/∂x`, `[save][sample][state component]` (quadrature removed).
    pub p: Vec<f64>,
    /// The Hamiltonian `H = p·f − L` at the save times, `[save][sample]`.
    pub hamiltonian: Vec<f64>,
}

/// A loss and its gradient.
#[derive(Clone, Debug)]
pub struct Gradient {
    /// The simulation the gradient was taken of (loss, costs, metrics as `nodec run` reports).
    pub simulation: Simulation,
    /// `∂loss/∂θ`, in the program's full parameter layout (every layer and knot copy).
    pub grad: Vec<f64>,
    /// `∂loss/∂x(t0)` of each sample's own loss term (not divided by the number of samples),
    /// sample-major over the state components. Empty for `forward`, whose tangents start from
    /// the parameters, not from the initial states.
    pub initial_cotangent: Vec<f64>,
    /// Costates, when asked for.
    pub costates: Option<Costates>,
    /// The work of the gradient computation (forward and reverse).
    pub stats: Stats,
}

/// Why a gradient could not be computed.
#[derive(Clone, Debug, PartialEq)]
pub enum GradientError {
    /// The solve failed (or the method does not apply to the schedule).
    Solve(SolveError),
    /// The method is not implemented yet.
    Unavailable(&'static str),
    /// Forward sensitivities were asked for more parameter coordinates than the limit.
    ForwardLimit {
        /// Parameter coordinates of the model (every layer and knot copy).
        params: usize,
        /// The limit in force.
        limit: usize,
    },
}

impl std::fmt::Display for GradientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GradientError::Solve(e) => write!(f, "{e}"),
            GradientError::Unavailable(what) => write!(f, "{what}"),
            GradientError::ForwardLimit { params, limit } => write!(
                f,
                "forward sensitivities need one solve per parameter coordinate; this model has \
                 {params} (the limit is {limit}); use `--method backprop` or `--method adjoint`, \
                 or raise the limit with `--forward-limit {params}`"
            ),
        }
    }
}

impl From<SolveError> for GradientError {
    fn from(e: SolveError) -> Self {
        GradientError::Solve(e)
    }
}

/// The model's loss terms at the save times.
pub struct ModelObjective<'a> {
    system: WithQuadrature<'a>,
    program: &'a Program,
    params: &'a Params,
    data: &'a Dataset,
    t1: f64,
    running: bool,
    terminal: bool,
    observed: bool,
    /// Multiple shooting: `(W, s)` charges `W · |x(t1) − s|²` at the final time (one sample).
    continuity: Option<(f64, &'a [f64])>,
}

impl<'a> ModelObjective<'a> {
    /// The objective of a bound model, whose final time is its schedule's.
    pub fn new(bound: &Bound<'a>) -> Self {
        let kinds = bound.program.cost_kinds();
        ModelObjective {
            system: bound.system(),
            program: bound.program,
            params: bound.params,
            data: bound.data,
            t1: bound.schedule().t1,
            running: kinds.contains(&CostKind::Running),
            terminal: kinds.contains(&CostKind::Terminal),
            observed: kinds.contains(&CostKind::Observed),
            continuity: None,
        }
    }
}

impl Objective<WithQuadrature<'_>> for ModelObjective<'_> {
    fn at_save(
        &self,
        _k: usize,
        t: f64,
        y: &[f64],
        samples: Range<usize>,
        cot: &mut [f64],
        grad: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) -> f64 {
        let width = samples.len();
        let dim = self.program.dim();
        let n = dim * width;
        cot.fill(0.0);
        let mut total = 0.0;
        let times = vec![t; width];
        let mut values = vec![0.0; (1 + dim) * width];
        if t == self.t1 {
            if self.terminal {
                self.program.cost_grad(
                    CostKind::Terminal,
                    self.params,
                    &times,
                    &y[..n],
                    &mut values,
                    grad,
                    ws.program_workspace(),
                );
                total += values[..width].iter().sum::<f64>();
                cot[..n].copy_from_slice(&values[width..]);
            }
            if self.running {
                total += y[n..n + width].iter().sum::<f64>();
                cot[n..n + width].fill(1.0);
            }
            if let Some((weight, target)) = self.continuity {
                // One sample (a segment of multiple shooting): component-major is sample-major.
                for (i, &s) in target.iter().enumerate().take(dim.min(n)) {
                    let r = y[i * width] - s;
                    total += weight * r * r;
                    cot[i * width] += 2.0 * weight * r;
                }
            }
        }
        if self.observed && self.data.trajectories.is_some() {
            total += self.observed_by_trajectory(t, y, samples, cot, grad, ws);
        } else if self.observed {
            if let (Some(obs_times), Some(observed)) = (&self.data.times, &self.data.observed) {
                for (k, _) in obs_times.iter().enumerate().filter(|(_, &s)| s == t) {
                    let row = &observed[k * self.data.obs_dim..(k + 1) * self.data.obs_dim];
                    let rows: Vec<f64> = (0..width).flat_map(|_| row.iter().copied()).collect();
                    ws.program_workspace().bind_observed(&rows);
                    self.program.cost_grad(
                        CostKind::Observed,
                        self.params,
                        &times,
                        &y[..n],
                        &mut values,
                        grad,
                        ws.program_workspace(),
                    );
                    total += values[..width].iter().sum::<f64>();
                    for (c, v) in cot[..n].iter_mut().zip(&values[width..]) {
                        *c += v;
                    }
                }
            }
        }
        total
    }
}

impl ModelObjective<'_> {
    /// The observed costs at `t` of a series of trajectories, each sample charged only if its
    /// own trajectory is observed at `t`: the whole block at once when every lane is, else lane
    /// by lane at width 1 (so a lane without an observation adds nothing to the parameter
    /// gradient, which the kernels reduce over the lanes). Adds to `cot` and `grad`.
    fn observed_by_trajectory(
        &self,
        t: f64,
        y: &[f64],
        samples: Range<usize>,
        cot: &mut [f64],
        grad: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) -> f64 {
        let Some(observed) = &self.data.observed else {
            return 0.0;
        };
        let d = self.data.obs_dim;
        let width = samples.len();
        let dim = self.program.dim();
        let n = dim * width;
        let rows: Vec<Option<usize>> = samples.map(|s| self.data.observation_at(s, t)).collect();
        if rows.iter().all(Option::is_none) {
            return 0.0;
        }
        if rows.iter().all(Option::is_some) {
            let bound: Vec<f64> = rows
                .iter()
                .flatten()
                .flat_map(|&k| observed[k * d..(k + 1) * d].iter().copied())
                .collect();
            let mut values = vec![0.0; (1 + dim) * width];
            ws.program_workspace().bind_observed(&bound);
            self.program.cost_grad(
                CostKind::Observed,
                self.params,
                &vec![t; width],
                &y[..n],
                &mut values,
                grad,
                ws.program_workspace(),
            );
            for (c, v) in cot[..n].iter_mut().zip(&values[width..]) {
                *c += v;
            }
            return values[..width].iter().sum();
        }
        let mut total = 0.0;
        let mut lane_y = vec![0.0; dim];
        let mut values = vec![0.0; 1 + dim];
        for (lane, row) in rows.iter().enumerate() {
            let Some(k) = *row else { continue };
            for (i, v) in lane_y.iter_mut().enumerate() {
                *v = y[i * width + lane];
            }
            let lw = self.system.lane_workspace(ws, lane);
            lw.bind_observed(&observed[k * d..(k + 1) * d]);
            self.program.cost_grad(
                CostKind::Observed,
                self.params,
                &[t],
                &lane_y,
                &mut values,
                grad,
                lw,
            );
            total += values[0];
            for i in 0..dim {
                cot[i * width + lane] += values[1 + i];
            }
        }
        total
    }
}

/// The method used when neither the command line nor the model names one: the model's
/// `gradient =`, else backprop, except for the stiff methods, whose exact discrete gradient
/// would need second derivatives of the field (so backprop refuses them).
pub fn default_method(model: &ir::Model) -> GradientMethod {
    if let Some(m) = model.train.as_ref().and_then(|t| t.gradient) {
        return m;
    }
    // Models with events follow the same rule: backprop crosses them too, and was the
    // cheapest of the three on the event models measured (module docs of `solve::event_grad`).
    match model.schedule.as_ref().map(|s| s.method) {
        Some(ir::Method::Rodas4 | ir::Method::Bdf) => GradientMethod::Adjoint,
        _ => GradientMethod::Backprop,
    }
}

/// The method that computes a model's costates: its default method, except that forward
/// sensitivities (when a model asks for them) carry no costate, so the adjoint (which gives it for every schedule) stands in.
pub fn costate_method(model: &ir::Model) -> GradientMethod {
    match default_method(model) {
        GradientMethod::Forward => GradientMethod::Adjoint,
        m => m,
    }
}

/// The gradient of a bound model's loss on its data with respect to every parameter copy.
pub fn gradient(bound: &Bound<'_>, options: &GradientOptions) -> Result<Gradient, GradientError> {
    one_rank(gradient_of(bound, options, Segment::default(), &Local))
}

fn one_rank(g: Result<Option<Gradient>, GradientError>) -> Result<Gradient, GradientError> {
    g.map(|g| g.expect("one rank is rank 0"))
}

/// [`gradient`] across the ranks of an MPI run, called by every rank together: each rank
/// solves its share of the blocks, rank 0 adds the blocks' gradients in block order (the bits
/// of one process) and broadcasts the loss, costs, metrics, work counts and gradient, so every
/// rank takes the same optimizer step. Forward sensitivities and costates are computed whole
/// on every rank (they are not split). The other ranks' [`Gradient`] has no solution, initial
/// cotangent or costates, and a failure there is only its kind (rank 0 reports it).
pub fn gradient_across(
    bound: &Bound<'_>,
    options: &GradientOptions,
    ranks: &dyn Ranks,
) -> Result<Gradient, GradientError> {
    if ranks.size() == 1 || options.method == GradientMethod::Forward || options.costates {
        return gradient(bound, options);
    }
    let mine = gradient_of(bound, options, Segment::default(), ranks);
    let mut wire = Writer::default();
    if ranks.is_root() {
        match &mine {
            Ok(Some(g)) => {
                wire.u64(WIRE_OK);
                wire.f64(g.simulation.loss);
                wire.f64s(&g.simulation.costs.iter().map(|c| c.1).collect::<Vec<_>>());
                wire.f64s(&g.simulation.metrics);
                solve::encode_stats(&mut wire, &g.simulation.stats);
                solve::encode_stats(&mut wire, &g.stats);
                wire.f64s(&g.grad);
            }
            Err(GradientError::Solve(e)) if !matches!(e, SolveError::InvalidOptions(_)) => {
                wire.u64(WIRE_SOLVE_FAILED)
            }
            _ => wire.u64(WIRE_FAILED),
        }
    }
    ranks.broadcast(&mut wire.0);
    if ranks.is_root() {
        return mine.and_then(|g| g.ok_or(GradientError::Unavailable(RANK0_FAILED)));
    }
    let mut r = Reader(&wire.0);
    match r.u64() {
        WIRE_OK => {
            let loss = r.f64();
            let costs = bound
                .program
                .cost_kinds()
                .into_iter()
                .zip(r.f64s())
                .collect();
            let metrics = r.f64s();
            let sim_stats = solve::decode_stats(&mut r);
            let stats = solve::decode_stats(&mut r);
            let grad = r.f64s();
            let solution = solve::Solution {
                t: Vec::new(),
                y: Vec::new(),
                dim: bound.program.dim(),
                n_samples: 0,
                stats: sim_stats,
                events: Vec::new(),
            };
            Ok(Gradient {
                simulation: Simulation {
                    solution,
                    costs,
                    loss,
                    metrics,
                    stats: sim_stats,
                },
                grad,
                initial_cotangent: Vec::new(),
                costates: None,
                stats,
            })
        }
        // What `train` needs to stay in step with rank 0: a failed solve (a skipped
        // mini-batch), or a failure that ends the run.
        WIRE_SOLVE_FAILED => Err(GradientError::Solve(SolveError::StepSizeTooSmall {
            t: f64::NAN,
            sample: 0,
        })),
        _ => Err(GradientError::Unavailable(RANK0_FAILED)),
    }
}

const WIRE_OK: u64 = 0;
const WIRE_SOLVE_FAILED: u64 = 1;
const WIRE_FAILED: u64 = 2;
const RANK0_FAILED: &str = "the gradient failed on rank 0";

/// A segment of multiple shooting (`train ...(shooting = N)`): how its gradient differs from
/// the whole model's. The default is the whole model.
#[derive(Clone, Copy, Debug, Default)]
pub struct Segment<'a> {
    /// The initial states, sample-major over the model's state components, in place of the
    /// model's: then they are free variables (nothing flows into the parameters through
    /// `init`; their gradient is [`Gradient::initial_cotangent`]).
    pub start: Option<&'a [f64]>,
    /// `(W, s)`: adds `W · |x(t1) − s|²` to the (one) sample's loss and its cotangent at `t1`.
    /// [`Gradient::simulation`] does not include it; the caller evaluates it from the final state.
    pub continuity: Option<(f64, &'a [f64])>,
    /// Leaves the penalty out of [`Gradient::grad`] (the caller adds it once for all segments).
    pub no_penalty: bool,
}

/// [`gradient`] of one segment of multiple shooting; [`Segment::default`] is [`gradient`].
pub fn segment_gradient(
    bound: &Bound<'_>,
    options: &GradientOptions,
    segment: Segment<'_>,
) -> Result<Gradient, GradientError> {
    if segment.start.is_some() || segment.continuity.is_some() {
        if options.method == GradientMethod::Forward {
            return Err(GradientError::Unavailable(
                "multiple shooting needs the gradient of the segment starts: use `gradient = backprop` or `gradient = adjoint`",
            ));
        }
        if options.costates {
            return Err(GradientError::Unavailable(
                "costates are not reported for multiple shooting",
            ));
        }
    }
    one_rank(gradient_of(bound, options, segment, &Local))
}

/// The gradient on rank 0 (`None` on the other ranks, which only solve their blocks).
fn gradient_of(
    bound: &Bound<'_>,
    options: &GradientOptions,
    segment: Segment<'_>,
    ranks: &dyn Ranks,
) -> Result<Option<Gradient>, GradientError> {
    let (program, params) = (bound.program, bound.params);
    let schedule = bound.schedule();
    // Only the times that carry costs are needed, unless costates are reported.
    let save = if options.costates {
        None
    } else {
        Some(vec![schedule.t1])
    };
    let mut setup = bound.setup(save);
    let system = bound.system();
    let mut objective = ModelObjective::new(bound);
    objective.continuity = segment.continuity;
    let full = system.dim();
    let dim = program.dim();
    let n = setup.n;
    if let Some(start) = segment.start {
        for s in 0..n {
            for i in 0..dim {
                setup.y0[s * full + i] = start.get(s * dim + i).copied().unwrap_or(0.0);
            }
        }
    }

    let (mut grad, lambda0, solution, costates) = match options.method {
        GradientMethod::Backprop | GradientMethod::Adjoint => {
            let bp = BackpropOptions {
                segment: options.segment,
                costates: options.costates,
            };
            let continuous = options.method == GradientMethod::Adjoint;
            let (system, objective, y0) = (&system, &objective, &setup.y0);
            let r = solve::gradient_batch_across(
                system,
                objective,
                &setup.options,
                y0,
                n,
                &bp,
                continuous,
                ranks,
            )?;
            let Some(r) = r else {
                return Ok(None);
            };
            (r.grad, r.lambda0, r.solution, r.costates)
        }
        GradientMethod::Forward => {
            return forward::gradient(bound, options).map(Some);
        }
    };
    let mut stats = solution.stats;

    // Through the initial states, block by block in order (free starts, or starts that no
    // parameter moves: not at all).
    let through_starts = segment.start.is_none() && program.init_reads_params();
    for Range { start, end } in system.blocks(n).filter(|_| through_starts) {
        let w = end - start;
        let mut ws = system.workspace(start..end);
        let mut block = vec![0.0; dim * w];
        for s in 0..w {
            for i in 0..dim {
                block[i * w + s] = lambda0[(start + s) * full + i];
            }
        }
        program.init_vjp_param_accumulate(params, &block, &mut grad, ws.program_workspace());
        stats.vjp_evals += w as u64;
    }
    let scale = 1.0 / n as f64;
    for g in grad.iter_mut() {
        *g *= scale;
    }
    if !segment.no_penalty {
        let mut ws = program.workspace(1);
        program.penalty(params, Some(&mut grad), &mut ws);
    }

    let initial_cotangent = (0..n)
        .flat_map(|s| lambda0[s * full..s * full + dim].iter().copied())
        .collect();
    let costates = costates.map(|lambda| costates_of(bound, &solution, &lambda));
    let simulation = bound.summarize(solution);
    Ok(Some(Gradient {
        simulation,
        grad,
        initial_cotangent,
        costates,
        stats,
    }))
}

/// `p = −λ` without the quadrature component, and `H = p·f − L` at each save time.
fn costates_of(bound: &Bound<'_>, solution: &solve::Solution, lambda: &[f64]) -> Costates {
    let full = solution.dim;
    let dim = bound.program.dim();
    let n = solution.n_samples;
    let n_save = solution.t.len();
    let system = bound.system();
    let mut p = vec![0.0; n_save * n * dim];
    let mut hamiltonian = vec![0.0; n_save * n];
    let mut f = vec![0.0; full];
    for s in 0..n {
        let mut ws = system.workspace(s..s + 1);
        for k in 0..n_save {
            let y = solution.state(k, s);
            let l = &lambda[(k * n + s) * full..(k * n + s + 1) * full];
            system.rhs(&[solution.t[k]], y, &mut f, &mut ws);
            // With λ over the state and the quadrature (λ_q = 1 for the running cost),
            // λ·(f, L) = −H, so H = −λ·F over all components.
            let h: f64 = -l.iter().zip(&f).map(|(a, b)| a * b).sum::<f64>();
            hamiltonian[k * n + s] = h;
            for i in 0..dim {
                p[(k * n + s) * dim + i] = -l[i];
            }
        }
    }
    Costates {
        t: solution.t.clone(),
        p,
        hamiltonian,
    }
}
