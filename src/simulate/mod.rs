//! Simulation of a compiled model over its samples: initial states, one batched solve with the
//! running costs integrated alongside as quadrature components, then costs, metrics and outputs.
//!
//! This is what `nodec run` reports and what the gradient and training stages build on. It does
//! no IO: data sets arrive already generated or parsed, and errors are values.
//!
//! [`Bound`] is the seam between the compiled model and the solvers: a prepared model and its
//! [`Program`] bound to parameter values and a data set. `simulate` runs it here, `sens`
//! differentiates it and `train` binds new parameter values after every update. The adapters
//! that present a bound program to the solvers ([`ModelSystem`], [`WithQuadrature`]) live here
//! too, so that `compile` never names `solve`.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

mod system;

pub use system::ModelSystem;

use crate::compile::{ParamLayout, Params, Program, Workspace};
use crate::data::Dataset;
use crate::ir::{self, CostKind, Method as IrMethod, Save};
use crate::rng::{self, Rng};
use crate::solve::{
    self, LinearSolver, Method, Sensitivity, SolveError, SolverOptions, Stats, System,
};

/// Right-hand sides evaluated in this process (one per sample), for showing that a long solve
/// is moving. The solvers' exact counts are their `Stats`; this one is only a live reading.
/// Each pool thread counts in a slot of its own cache line, so that the count costs the hot
/// path an uncontended add rather than a line bouncing between cores.
static EVALUATIONS: [CountSlot; COUNT_SLOTS] =
    [const { CountSlot(AtomicU64::new(0)) }; COUNT_SLOTS];

const COUNT_SLOTS: usize = 64;

#[repr(align(128))]
struct CountSlot(AtomicU64);

fn count_evaluations(n: usize) {
    // Threads outside the pool share slot 0; a pool larger than the table shares slots.
    let slot = rayon::current_thread_index().map_or(0, |i| 1 + i % (COUNT_SLOTS - 1));
    EVALUATIONS[slot].0.fetch_add(n as u64, Ordering::Relaxed);
}

/// The right-hand sides evaluated so far in this process ([`EVALUATIONS`]).
pub fn evaluations() -> u64 {
    EVALUATIONS
        .iter()
        .map(|s| s.0.load(Ordering::Relaxed))
        .sum()
}

/// Initial parameter values: declared values as given, random initialisations drawn from the
/// seed. Each parameter draws from its own stream (`fork(index)`), so changing one parameter's
/// shape does not change another's values; copies (layers, knots) are drawn one after another.
pub fn initial_params(model: &ir::Model, layout: &ParamLayout, seed: u64) -> Params {
    let mut params = Params::initial(model, layout);
    let root = Rng::new(seed);
    for (index, (p, entry)) in model.params.iter().zip(&layout.entries).enumerate() {
        if matches!(p.init, ir::ParamInit::Values(_)) {
            continue;
        }
        let mut stream = root.fork(index as u64);
        let n = entry.len() * entry.copies;
        let values = rng::init_param(&p.init, n, &mut stream);
        params.values_mut()[entry.offset..entry.offset + n].copy_from_slice(&values);
    }
    params
}

/// The solver options a model's schedule asks for, saving at `save` (empty: the schedule's own).
pub fn solver_options(model: &ir::Model, schedule: &ir::Schedule) -> SolverOptions {
    let offsets = state_offsets(model);
    let range = |i: Option<usize>| i.map_or(0..0, |i| offsets[i]..offsets[i + 1]);
    let method = match schedule.method {
        IrMethod::Euler => Method::Euler,
        IrMethod::Midpoint => Method::Midpoint,
        IrMethod::Heun => Method::Heun,
        IrMethod::Rk4 => Method::Rk4,
        IrMethod::Ab2 => Method::Ab2,
        IrMethod::Lm => Method::Lm,
        IrMethod::Leapfrog => Method::Leapfrog {
            position: range(schedule.position),
            momentum: range(schedule.momentum),
        },
        IrMethod::ImplicitEuler => Method::ImplicitEuler,
        IrMethod::Bosh3 => Method::Bosh3,
        IrMethod::Dopri5 => Method::Dopri5,
        IrMethod::Tsit5 => Method::Tsit5,
        IrMethod::Rodas4 => Method::Rodas4,
        IrMethod::Bdf => Method::Bdf,
    };
    let mut options = SolverOptions::new(method, schedule.t0, schedule.t1);
    options.steps = schedule.steps;
    options.rtol = schedule.rtol;
    options.atol = schedule.atol;
    options.atol_components = schedule.atol_components.clone();
    options.max_steps = schedule.max_steps;
    options.linear = match schedule.linear {
        ir::LinearSolve::Auto => LinearSolver::Auto,
        ir::LinearSolve::Dense => LinearSolver::Dense,
        ir::LinearSolve::Banded => LinearSolver::Banded,
    };
    options.save = match &schedule.save {
        Save::Default => Vec::new(),
        Save::Times(times) => times.clone(),
        Save::Every(dt) => {
            // Every `dt` from `t0` in the direction of integration.
            let dir = schedule.direction();
            let n = ((schedule.t1 - schedule.t0).abs() / dt + 1e-9).floor() as usize;
            (0..=n)
                .map(|k| schedule.t0 + dir * (k as f64 * dt))
                .collect()
        }
    };
    options
}

/// Offsets of each state's first component in the flat state vector, plus the total.
pub fn state_offsets(model: &ir::Model) -> Vec<usize> {
    let mut offsets = vec![0];
    for s in &model.states {
        offsets.push(offsets.last().copied().unwrap_or(0) + s.shape.len());
    }
    offsets
}

/// The model's system with one extra component per sample that integrates the running costs,
/// `dq/dt = L(x, t)`, so that `∫ L dt` comes out of the same solve at the solver's accuracy.
///
/// The running cost is charged on elapsed time, `∫ L |dt|`: a schedule that integrates
/// backward (`t1 < t0`) integrates `dq/dt = −L`, so a nonnegative `L` (a regularizer) is a
/// nonnegative cost whichever the direction.
pub struct WithQuadrature<'a> {
    inner: ModelSystem<'a>,
    program: &'a Program,
    params: &'a Params,
    running: bool,
    /// The running costs are evaluated with the field by one kernel, and pulled back with it
    /// by one VJP ([`Program::has_fused_running_cost`]): `L` reads `der(x)` in most models,
    /// which separate kernels evaluate (and differentiate) a second time.
    fused: bool,
    /// The span runs backward: the quadrature's field is `−L`.
    backward: bool,
}

/// A block workspace of [`WithQuadrature`]: the program's workspace and buffers for `L`, its
/// gradient and the states' Jacobian, sized once so that no step allocates.
pub struct QuadratureWorkspace {
    inner: Workspace,
    /// A VJP's cotangent with the quadrature's row negated (backward spans, fused kernels).
    cotangent: Vec<f64>,
    cost: Vec<f64>,
    cost_grad: Vec<f64>,
    no_grad: Vec<f64>,
    state_jacobian: Vec<f64>,
    tangent: Vec<f64>,
    /// The block's first sample, to bind one lane's data to `lane`.
    first: usize,
    /// Width-1 workspace for per-lane parameter gradients of the running cost (on first use).
    lane: Option<Box<Workspace>>,
    lane_y: Vec<f64>,
    lane_out: Vec<f64>,
    /// `∂L/∂θ` of each lane, `[lane][parameter]` (full layout).
    lane_grads: Vec<f64>,
}

impl QuadratureWorkspace {
    /// The compiled program's workspace inside, bound to the same samples.
    pub fn program_workspace(&mut self) -> &mut Workspace {
        &mut self.inner
    }
}

impl<'a> WithQuadrature<'a> {
    /// Wraps a model system; without running costs it adds no component.
    pub fn new(program: &'a Program, params: &'a Params, data: &'a Dataset) -> Self {
        let labels: &[f64] = data.labels.as_deref().unwrap_or(&[]);
        WithQuadrature {
            inner: ModelSystem::new(program, params, &data.inputs, labels),
            program,
            params,
            running: program.cost_kinds().contains(&CostKind::Running),
            fused: program.has_fused_running_cost(),
            backward: {
                let (t0, t1) = program.span();
                t1 < t0
            },
        }
    }

    /// `L` (or a derivative of it) as the quadrature's field: negated on a backward span.
    fn orient(&self, values: &mut [f64]) {
        if self.backward {
            values.iter_mut().for_each(|v| *v = -*v);
        }
    }

    fn state_dim(&self) -> usize {
        self.program.dim()
    }

    /// `ws.lane_grads[s * n_params..]` = `∂L/∂θ` of the running cost at lane `s`. The kernels
    /// reduce parameter gradients over the lanes, so a lane's own comes from a width-1 run
    /// (with that sample's inputs and labels bound), except when the block is one lane.
    fn running_param_grads(&self, t: &[f64], y: &[f64], ws: &mut QuadratureWorkspace) {
        let width = t.len();
        let dim = self.state_dim();
        let np = self.program.layout().total;
        ws.lane_grads.resize(width * np, 0.0);
        ws.lane_grads.fill(0.0);
        ws.lane_out.resize(1 + dim, 0.0);
        ws.lane_y.resize(dim, 0.0);
        if width == 1 {
            self.program.cost_grad(
                CostKind::Running,
                self.params,
                t,
                &y[..dim],
                &mut ws.lane_out,
                &mut ws.lane_grads,
                &mut ws.inner,
            );
            self.orient(&mut ws.lane_grads);
            return;
        }
        let QuadratureWorkspace {
            lane,
            lane_y,
            lane_out,
            lane_grads,
            first,
            ..
        } = ws;
        let lane = lane.get_or_insert_with(|| Box::new(self.program.workspace(1)));
        let rows = |data: &[f64], len: usize, sample: usize| -> (usize, usize) {
            let start = (sample * len).min(data.len());
            (start, (start + len).min(data.len()))
        };
        for s in 0..width {
            let sample = *first + s;
            let (a, b) = rows(self.inner.inputs, self.program.input_len(), sample);
            lane.bind_inputs(&self.inner.inputs[a..b]);
            let (a, b) = rows(self.inner.labels, self.program.label_len(), sample);
            lane.bind_labels(&self.inner.labels[a..b]);
            for i in 0..dim {
                lane_y[i] = y[i * width + s];
            }
            self.program.cost_grad(
                CostKind::Running,
                self.params,
                &t[s..s + 1],
                lane_y,
                lane_out,
                &mut lane_grads[s * np..(s + 1) * np],
                lane,
            );
        }
        self.orient(lane_grads);
    }
}

impl WithQuadrature<'_> {
    /// A width-1 program workspace bound to lane `lane` of `ws`'s block (that sample's inputs
    /// and labels), for a cost that only some lanes carry.
    pub fn lane_workspace<'w>(
        &self,
        ws: &'w mut QuadratureWorkspace,
        lane: usize,
    ) -> &'w mut Workspace {
        let sample = ws.first + lane;
        let rows = |data: &[f64], len: usize| -> (usize, usize) {
            let start = (sample * len).min(data.len());
            (start, (start + len).min(data.len()))
        };
        let w = ws
            .lane
            .get_or_insert_with(|| Box::new(self.program.workspace(1)));
        let (a, b) = rows(self.inner.inputs, self.program.input_len());
        w.bind_inputs(&self.inner.inputs[a..b]);
        let (a, b) = rows(self.inner.labels, self.program.label_len());
        w.bind_labels(&self.inner.labels[a..b]);
        w
    }

    /// `dy` with its quadrature row from the fused kernel (the `fused` case), saving for the
    /// VJP when `saved` is not empty.
    #[inline(never)]
    fn fused_rhs(
        &self,
        t: &[f64],
        y: &[f64],
        dy: &mut [f64],
        saved: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) {
        self.program
            .rhs_quad_saving(self.params, t, y, dy, saved, &mut ws.inner);
        self.orient(&mut dy[y.len()..]);
    }

    /// The quadrature component of `dy`: the running cost, when there is one.
    #[inline(never)]
    fn add_running_cost(&self, t: &[f64], y: &[f64], dy: &mut [f64], ws: &mut QuadratureWorkspace) {
        if !self.running {
            return;
        }
        let n = self.state_dim() * t.len();
        self.program.cost(
            CostKind::Running,
            self.params,
            t,
            &y[..n],
            &mut ws.cost,
            &mut ws.inner,
        );
        self.orient(&mut ws.cost);
        dy[n..].copy_from_slice(&ws.cost[..t.len()]);
    }

    /// The running cost's value and state gradient per lane into `ws.cost_grad`, and its
    /// parameter gradient summed over the block into `ws.no_grad` (zeroed first).
    fn running_cost_grad(&self, t: &[f64], y: &[f64], ws: &mut QuadratureWorkspace) {
        let n = self.state_dim() * t.len();
        zeroed(&mut ws.no_grad, self.program.layout().total);
        self.program.cost_grad(
            CostKind::Running,
            self.params,
            t,
            &y[..n],
            &mut ws.cost_grad,
            &mut ws.no_grad,
            &mut ws.inner,
        );
        self.orient(&mut ws.cost_grad);
        self.orient(&mut ws.no_grad);
    }

    /// The quadrature component's part of a VJP, when there is a running cost: its cotangent
    /// (the last row of `w`) pulled back into `out` and `grad`.
    #[allow(clippy::too_many_arguments)]
    fn running_cost_vjp(
        &self,
        t: &[f64],
        y: &[f64],
        w: &[f64],
        out: &mut [f64],
        grad: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) {
        if !self.running {
            return;
        }
        let width = t.len();
        let n = self.state_dim() * width;
        // q' = L(x, t): its cotangent pulls back through ∂L/∂x and ∂L/∂θ. The kernel reduces
        // ∂L/∂θ over the lanes unweighted, which is right because the quadrature's cotangent
        // is the same for every sample of a block (see the trait's contract).
        let w_q = &w[n..n + width];
        self.running_cost_grad(t, y, ws);
        let rows = ws.cost_grad[width..(1 + self.state_dim()) * width].chunks_exact(width);
        for (row, dl) in out[..n].chunks_exact_mut(width).zip(rows) {
            for ((o, d), w) in row.iter_mut().zip(dl).zip(w_q) {
                *o += w * d;
            }
        }
        for (g, d) in grad.iter_mut().zip(&ws.no_grad) {
            *g += w_q[0] * d;
        }
        out[n..n + width].fill(0.0);
    }
}

impl System for WithQuadrature<'_> {
    type Workspace = QuadratureWorkspace;

    fn workspace(&self, samples: Range<usize>) -> QuadratureWorkspace {
        let width = samples.len();
        let dim = self.state_dim();
        QuadratureWorkspace {
            first: samples.start,
            lane: None,
            lane_y: Vec::new(),
            lane_out: Vec::new(),
            lane_grads: Vec::new(),
            inner: self.inner.workspace(samples),
            cotangent: Vec::new(),
            cost: vec![0.0; width],
            cost_grad: vec![0.0; (1 + dim) * width],
            no_grad: Vec::new(),
            tangent: vec![0.0; dim * width],
            state_jacobian: if self.running {
                vec![0.0; dim * dim]
            } else {
                Vec::new()
            },
        }
    }

    fn dim(&self) -> usize {
        self.state_dim() + usize::from(self.running)
    }

    fn block_width(&self, n_samples: usize) -> usize {
        self.inner.block_width(n_samples)
    }

    fn unit_roundoff(&self) -> f64 {
        self.inner.unit_roundoff()
    }

    #[inline(always)]
    fn rhs(&self, t: &[f64], y: &[f64], dy: &mut [f64], ws: &mut QuadratureWorkspace) {
        count_evaluations(t.len());
        let n = self.state_dim() * t.len();
        if self.fused {
            self.fused_rhs(t, &y[..n], dy, &mut [], ws);
            return;
        }
        self.inner.rhs(t, &y[..n], &mut dy[..n], &mut ws.inner);
        // Checked here, not only inside: most models have no running cost, and a small
        // field's evaluation costs little more than a call.
        if self.running {
            self.add_running_cost(t, y, dy, ws);
        }
    }

    fn field_call<'w>(
        &self,
        ws: &'w mut QuadratureWorkspace,
    ) -> Option<crate::compile::FieldCall<'w>> {
        if self.fused || self.running {
            return None;
        }
        let call = self.inner.field_call(&mut ws.inner)?;
        Some(call.counting(count_evaluations))
    }

    fn saved_len(&self) -> usize {
        if self.fused {
            self.program.quad_saved_len()
        } else {
            self.inner.saved_len()
        }
    }

    fn rhs_saving(
        &self,
        t: &[f64],
        y: &[f64],
        dy: &mut [f64],
        saved: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) {
        count_evaluations(t.len());
        let n = self.state_dim() * t.len();
        if self.fused {
            self.fused_rhs(t, &y[..n], dy, saved, ws);
            return;
        }
        // The state's registers are copied before the running cost's kernel reuses them.
        self.inner
            .rhs_saving(t, &y[..n], &mut dy[..n], saved, &mut ws.inner);
        self.add_running_cost(t, y, dy, ws);
    }

    fn jacobian(&self, t: f64, y: &[f64], jac: &mut [f64], ws: &mut QuadratureWorkspace) {
        let dim = self.state_dim();
        if !self.running {
            self.inner.jacobian(t, y, jac, &mut ws.inner);
            return;
        }
        // The quadrature component depends on nothing's value but feeds nothing back: its row
        // is ∂L/∂x and its column is zero.
        let full = dim + 1;
        let inner = &mut ws.state_jacobian;
        self.inner.jacobian(t, &y[..dim], inner, &mut ws.inner);
        for i in 0..dim {
            jac[i * full..i * full + dim].copy_from_slice(&inner[i * dim..(i + 1) * dim]);
            jac[i * full + dim] = 0.0;
        }
        zeroed(&mut ws.no_grad, self.program.layout().total);
        self.program.cost_grad(
            CostKind::Running,
            self.params,
            &[t],
            &y[..dim],
            &mut ws.cost_grad[..1 + dim],
            &mut ws.no_grad,
            &mut ws.inner,
        );
        self.orient(&mut ws.cost_grad[1..1 + dim]);
        jac[dim * full..dim * full + dim].copy_from_slice(&ws.cost_grad[1..1 + dim]);
        jac[dim * full + dim] = 0.0;
    }

    fn breakpoints(&self) -> Vec<f64> {
        self.inner.breakpoints()
    }

    fn lm_coefficient(&self, t: f64) -> f64 {
        self.inner.lm_coefficient(t)
    }

    fn is_autonomous(&self) -> bool {
        self.inner.is_autonomous()
    }

    fn events(&self) -> &[crate::solve::EventSpec] {
        self.inner.events()
    }

    fn event_conditions(&self, t: &[f64], y: &[f64], g: &mut [f64], ws: &mut QuadratureWorkspace) {
        let n = self.state_dim() * t.len();
        self.inner.event_conditions(t, &y[..n], g, &mut ws.inner);
    }

    fn event_jumps(&self, t: &[f64], y: &[f64], v: &mut [f64], ws: &mut QuadratureWorkspace) {
        let n = self.state_dim() * t.len();
        self.inner.event_jumps(t, &y[..n], v, &mut ws.inner);
    }
}

impl Sensitivity for WithQuadrature<'_> {
    fn n_params(&self) -> usize {
        self.program.layout().total
    }

    /// The running cost's quadrature is never assigned: its row of `ĥ` is the identity.
    fn event_jvp(
        &self,
        e: usize,
        t: f64,
        y: &[f64],
        v: &[f64],
        u: &[f64],
        dh: &mut [f64],
        dh_t: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) -> Option<(f64, f64)> {
        let n = self.state_dim();
        let g = self.inner.event_jvp(
            e,
            t,
            &y[..n],
            &v[..n],
            u,
            &mut dh[..n],
            &mut dh_t[..n],
            &mut ws.inner,
        );
        dh[n..].copy_from_slice(&v[n..]);
        dh_t[n..].fill(0.0);
        Some(g)
    }

    fn vjp(
        &self,
        t: &[f64],
        y: &[f64],
        w: &[f64],
        out: &mut [f64],
        grad: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) {
        self.vjp_saved(t, y, &[], w, out, grad, ws);
    }

    fn vjp_saved(
        &self,
        t: &[f64],
        y: &[f64],
        saved: &[f64],
        w: &[f64],
        out: &mut [f64],
        grad: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) {
        let n = self.state_dim() * t.len();
        if self.fused {
            let width = t.len();
            let w = if self.backward {
                ws.cotangent.clear();
                ws.cotangent.extend_from_slice(&w[..n + width]);
                self.orient(&mut ws.cotangent[n..]);
                &ws.cotangent[..]
            } else {
                &w[..n + width]
            };
            self.program.vjp_quad_saved(
                self.params,
                t,
                &y[..n],
                saved,
                w,
                &mut out[..n],
                grad,
                &mut ws.inner,
            );
            out[n..n + width].fill(0.0);
            return;
        }
        self.program.vjp_saved(
            self.params,
            t,
            &y[..n],
            saved,
            &w[..n],
            &mut out[..n],
            grad,
            &mut ws.inner,
        );
        self.running_cost_vjp(t, y, w, out, grad, ws);
    }

    fn jvp(
        &self,
        t: &[f64],
        y: &[f64],
        v: &[f64],
        u: &[f64],
        out: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) {
        self.jvp_many(t, y, v, u, out, ws);
    }

    /// Shares `∂L/∂y` and the per-lane `∂L/∂θ` of the running cost between the directions.
    fn jvp_many(
        &self,
        t: &[f64],
        y: &[f64],
        v: &[f64],
        u: &[f64],
        out: &mut [f64],
        ws: &mut QuadratureWorkspace,
    ) {
        let width = t.len();
        let dim = self.state_dim();
        let n = dim * width;
        let full = self.dim() * width;
        let np = self.program.layout().total;
        if full == 0 {
            return;
        }
        let m = v.len() / full;
        for d in 0..m {
            let vd = &v[d * full..d * full + n];
            let od = &mut out[d * full..d * full + n];
            self.program
                .jvp_state(self.params, t, &y[..n], vd, od, &mut ws.inner);
            let scratch = &mut ws.tangent[..n];
            let ud = &u[d * np..(d + 1) * np];
            self.program
                .jvp_param(self.params, t, &y[..n], ud, scratch, &mut ws.inner);
            for (o, x) in od.iter_mut().zip(scratch.iter()) {
                *o += x;
            }
        }
        if !self.running {
            return;
        }
        // q' = L(x, t): ∂L/∂x · v per lane from the block, ∂L/∂θ · u per lane from each lane's
        // own parameter gradient.
        self.running_cost_grad(t, y, ws);
        self.running_param_grads(t, y, ws);
        for d in 0..m {
            let vd = &v[d * full..(d + 1) * full];
            let ud = &u[d * np..(d + 1) * np];
            for s in 0..width {
                let mut acc = 0.0;
                for i in 0..dim {
                    acc += ws.cost_grad[(1 + i) * width + s] * vd[i * width + s];
                }
                let g = &ws.lane_grads[s * np..(s + 1) * np];
                for (gj, uj) in g.iter().zip(ud).filter(|(_, uj)| **uj != 0.0) {
                    acc += gj * uj;
                }
                out[d * full + n + s] = acc;
            }
        }
    }

    fn lm_coefficient_vjp(&self, t: f64, w: f64, grad: &mut [f64], ws: &mut QuadratureWorkspace) {
        zeroed(&mut ws.no_grad, self.program.layout().total);
        self.program
            .lm_k_grad_accumulate(self.params, t, &mut ws.no_grad, &mut ws.inner);
        for (g, d) in grad.iter_mut().zip(&ws.no_grad) {
            *g += w * d;
        }
    }

    fn lm_coefficient_jvp(&self, t: f64, u: &[f64], ws: &mut QuadratureWorkspace) -> f64 {
        zeroed(&mut ws.no_grad, self.program.layout().total);
        self.program
            .lm_k_grad_accumulate(self.params, t, &mut ws.no_grad, &mut ws.inner);
        ws.no_grad.iter().zip(u).map(|(d, x)| d * x).sum()
    }
}

/// A compiled model bound to parameter values and a data set: everything a solve, a gradient
/// or a training step needs. It only borrows, so it is cheap to copy, and training binds each
/// mini-batch and each new parameter vector with [`Bound::with_params`] and
/// [`Bound::with_data`] instead of threading four values through every call.
#[derive(Clone, Copy, Debug)]
pub struct Bound<'a> {
    /// The prepared model: its schedule gives the solver options and the final time.
    pub model: &'a ir::Model,
    /// The model compiled from it.
    pub program: &'a Program,
    /// Parameter values in the program's layout.
    pub params: &'a Params,
    /// The samples (or the observed series).
    pub data: &'a Dataset,
}

impl<'a> Bound<'a> {
    /// Binds `program` (compiled from `model`) to `params` and `data`.
    pub fn new(
        model: &'a ir::Model,
        program: &'a Program,
        params: &'a Params,
        data: &'a Dataset,
    ) -> Self {
        Bound {
            model,
            program,
            params,
            data,
        }
    }

    /// The same model and data at other parameter values.
    pub fn with_params<'b>(&self, params: &'b Params) -> Bound<'b>
    where
        'a: 'b,
    {
        Bound { params, ..*self }
    }

    /// The same model and parameters on another data set (a mini-batch, one sample).
    pub fn with_data<'b>(&self, data: &'b Dataset) -> Bound<'b>
    where
        'a: 'b,
    {
        Bound { data, ..*self }
    }

    /// The model's schedule.
    pub fn schedule(&self) -> &'a ir::Schedule {
        self.model
            .schedule
            .as_ref()
            .expect("sema guarantees a schedule for a model with states")
    }

    /// The system the solvers integrate: the model's states and the running-cost quadrature.
    pub fn system(&self) -> WithQuadrature<'a> {
        WithQuadrature::new(self.program, self.params, self.data)
    }
}

/// What a simulation of one data set gives.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// The solution of the states (quadrature components removed), `[save][sample][component]`.
    pub solution: solve::Solution,
    /// Mean of each declared cost kind over the samples (penalty added once), in the order the
    /// program lists them.
    pub costs: Vec<(CostKind, f64)>,
    /// `mean(terminal + running) + penalty`.
    pub loss: f64,
    /// Mean of each metric over the samples, in declaration order.
    pub metrics: Vec<f64>,
    /// Solver work.
    pub stats: Stats,
}

/// What a solve of a data set needs besides the system: the options (observation times
/// added as stops and save times) and the initial states, sample-major with the quadrature
/// component.
pub struct Setup {
    /// Solver options.
    pub options: SolverOptions,
    /// Initial states, `y0[s * full_dim + i]`.
    pub y0: Vec<f64>,
    /// Samples.
    pub n: usize,
}

impl Bound<'_> {
    /// The solver options and initial states for the data, saving at `save` (`None`: the
    /// schedule's).
    pub fn setup(&self, save: Option<Vec<f64>>) -> Setup {
        let Bound {
            model,
            program,
            params,
            data,
        } = *self;
        let schedule = self.schedule();
        let mut options = solver_options(model, schedule);
        if let Some(save) = save {
            options.save = save;
        }
        // A series is observed at its times: the solver steps onto them exactly and saves there,
        // in the order of integration (a backward span visits them from the last).
        let mut observation_times: Vec<f64> = data
            .times
            .iter()
            .flatten()
            .copied()
            .filter(|t| schedule.contains(*t))
            .collect();
        if data.trajectories.is_some() {
            // Every sample is solved to the union of the trajectories' times; each is charged
            // only at its own (see `observed_cost`).
            observation_times.sort_by(f64::total_cmp);
            observation_times.dedup();
        }
        if !observation_times.is_empty() {
            options.stops = observation_times.clone();
            let mut save = if options.save.is_empty() {
                vec![schedule.t0, schedule.t1]
            } else {
                options.save.clone()
            };
            save.extend_from_slice(&observation_times);
            let dir = schedule.direction();
            if dir > 0.0 {
                save.sort_by(f64::total_cmp);
            } else {
                save.sort_by(|a, b| b.total_cmp(a));
            }
            save.dedup();
            options.save = save;
        }
        let n = data.n.max(1);
        let dim = program.dim();
        let system = self.system();
        let full = system.dim();
        // Initial states block by block, so per-sample inputs are bound as the solver binds them.
        let mut y0 = vec![0.0; n * full];
        for Range { start, end } in system.blocks(n) {
            let mut ws = system.workspace(start..end);
            let w = end - start;
            let mut block = vec![0.0; dim * w];
            program.init(params, &mut block, &mut ws.inner);
            for s in 0..w {
                for i in 0..dim {
                    y0[(start + s) * full + i] = block[i * w + s];
                }
            }
        }
        Setup { options, y0, n }
    }

    /// The source division whose denominator is zero (somewhere) at `sample`'s initial state,
    /// at the start time: what a state that is NaN or infinite at `t0` is blamed on. `None`
    /// when no division is, or the initial state itself is not finite.
    pub fn zero_division_at_start(&self, sample: usize) -> Option<ir::Division> {
        use ir::tensor::{Leaf, TId, TNode};
        let Bound {
            model,
            program,
            params,
            data,
        } = *self;
        let schedule = self.schedule();
        let setup = self.setup(Some(vec![schedule.t1]));
        let full = setup.y0.len() / setup.n.max(1);
        let y0 = setup.y0.get(sample * full..(sample + 1) * full)?;
        if y0.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let layout = program.layout();
        let mut theta = vec![0.0; model.param_len()];
        layout.resolve(params.values(), layout.piece(schedule.t0), &mut theta);
        let states = state_offsets(model);
        let mut input_offsets = vec![0];
        for input in &model.inputs {
            input_offsets.push(input_offsets.last().copied().unwrap_or(0) + input.shape.len());
        }
        let inputs = data
            .inputs
            .get(sample * data.input_dim..(sample + 1) * data.input_dim)
            .unwrap_or(&[]);
        let slice = |values: &[f64], offsets: &[usize], i: u32| {
            let i = i as usize;
            values
                .get(offsets[i]..offsets[i + 1])
                .map_or_else(Vec::new, <[f64]>::to_vec)
        };
        let leaf = |leaf: Leaf| -> Vec<f64> {
            match leaf {
                Leaf::Time => vec![schedule.t0],
                Leaf::State(i) => slice(y0, &states, i),
                Leaf::Input(i) => slice(inputs, &input_offsets, i),
                Leaf::Param(i) => layout.entries.get(i as usize).map_or_else(Vec::new, |e| {
                    theta[e.view_offset..e.view_offset + e.len()].to_vec()
                }),
                _ => Vec::new(),
            }
        };
        // Only divisions of what the state equations read: time, states, inputs, params.
        let evaluable = |root: TId| {
            let mut stack = vec![root];
            let mut seen = std::collections::HashSet::new();
            while let Some(id) = stack.pop() {
                if !seen.insert(id) {
                    continue;
                }
                let node = model.tensors.node(id);
                if let TNode::Leaf(l) = node {
                    if !matches!(
                        l,
                        Leaf::Time | Leaf::State(_) | Leaf::Input(_) | Leaf::Param(_)
                    ) {
                        return false;
                    }
                }
                node.for_each_operand(|c| stack.push(c));
            }
            true
        };
        model.divisions.iter().copied().find(|d| {
            if !evaluable(d.numerator) || !evaluable(d.denominator) {
                return false;
            }
            let values =
                ir::tensor::eval::eval(&model.tensors, &[d.numerator, d.denominator], &leaf);
            values[1].contains(&0.0) && values[0].iter().all(|v| v.is_finite())
        })
    }

    /// Solves every sample of the data (or the model's single trajectory when it has no
    /// inputs) and evaluates costs and metrics at the final time, saving at `save` (`None`: the
    /// schedule's save times).
    pub fn simulate(&self, save: Option<Vec<f64>>) -> Result<Simulation, SolveError> {
        let setup = self.setup(save);
        let system = self.system();
        let solution = solve::solve_batch(&system, &setup.options, &setup.y0, setup.n)?;
        Ok(self.summarize(solution))
    }

    /// Costs, loss and metrics of a solution (states with the quadrature component), averaged
    /// over the samples in a fixed order.
    pub fn summarize(&self, solution: solve::Solution) -> Simulation {
        let Bound {
            program,
            params,
            data,
            ..
        } = *self;
        let schedule = self.schedule();
        let system = self.system();
        let n = solution.n_samples;
        let dim = program.dim();
        let stats = solution.stats;
        // Costs and metrics at the final time, block-wise over the samples.
        let kinds = program.cost_kinds();
        let mut sums: Vec<f64> = vec![0.0; kinds.len()];
        let mut metric_sums = vec![0.0; program.metrics_len()];
        let t1 = schedule.t1;
        for Range { start, end } in system.blocks(n) {
            let w = end - start;
            let mut ws = system.workspace(start..end);
            let block = solution.final_block(start..end, dim);
            let times = vec![t1; w];
            let mut out = vec![0.0; w];
            for (k, kind) in kinds.iter().enumerate() {
                match kind {
                    CostKind::Running => {
                        for s in 0..w {
                            sums[k] += solution.final_state(start + s)[dim];
                        }
                    }
                    CostKind::Terminal => {
                        program.cost(*kind, params, &times, &block, &mut out, &mut ws.inner);
                        sums[k] += out.iter().sum::<f64>();
                    }
                    CostKind::Observed => {
                        sums[k] +=
                            observed_cost(program, params, data, &solution, &system, start..end);
                    }
                    CostKind::Penalty => {}
                }
            }
            let mut metrics = vec![0.0; program.metrics_len() * w];
            program.metrics(params, &times, &block, &mut metrics, &mut ws.inner);
            for (m, sum) in metric_sums.iter_mut().enumerate() {
                *sum += metrics[m * w..(m + 1) * w].iter().sum::<f64>();
            }
        }
        let mut costs = Vec::new();
        let mut loss = 0.0;
        for (k, kind) in kinds.iter().enumerate() {
            let value = match kind {
                CostKind::Penalty => {
                    let mut ws = program.workspace(1);
                    program.penalty(params, None, &mut ws)
                }
                _ => sums[k] / n as f64,
            };
            loss += value;
            costs.push((*kind, value));
        }
        let metrics = metric_sums.iter().map(|s| s / n as f64).collect();
        Simulation {
            solution,
            costs,
            loss,
            metrics,
            stats,
        }
    }
}

/// Each sample's share of a [`Simulation`]'s results at the final time, for reporting every
/// sample (`nodec run --all-samples`).
#[derive(Clone, Debug, PartialEq)]
pub struct PerSample {
    /// Each cost kind but the penalty (which belongs to no sample), in the order the program
    /// lists them, with one value per sample: the terms whose mean [`Simulation::costs`] holds.
    pub costs: Vec<(CostKind, Vec<f64>)>,
    /// `metrics[m][s]`: metric `m` of sample `s`, metrics in declaration order.
    pub metrics: Vec<Vec<f64>>,
    /// Every output at the final time, sample-major: sample `s`'s outputs, concatenated in
    /// declaration order, are `outputs[s * outputs_len..][..outputs_len]`.
    pub outputs: Vec<f64>,
}

impl Bound<'_> {
    /// The per-sample costs, metrics and final outputs of `solution` (a solve of this data,
    /// states with the quadrature component), evaluated block by block in sample order like
    /// [`Bound::summarize`].
    pub fn per_sample(&self, solution: &solve::Solution) -> PerSample {
        let Bound {
            program,
            params,
            data,
            ..
        } = *self;
        let t1 = self.schedule().t1;
        let system = self.system();
        let n = solution.n_samples;
        let dim = program.dim();
        let kinds: Vec<CostKind> = program
            .cost_kinds()
            .iter()
            .copied()
            .filter(|k| *k != CostKind::Penalty)
            .collect();
        let mut costs: Vec<(CostKind, Vec<f64>)> =
            kinds.iter().map(|k| (*k, Vec::with_capacity(n))).collect();
        let mut metrics = vec![Vec::with_capacity(n); program.metrics_len()];
        let outputs_len = program.outputs_len();
        let mut outputs = vec![0.0; n * outputs_len];
        for Range { start, end } in system.blocks(n) {
            let w = end - start;
            let mut ws = system.workspace(start..end);
            let block = solution.final_block(start..end, dim);
            let times = vec![t1; w];
            let mut out = vec![0.0; w];
            for (kind, values) in costs.iter_mut() {
                match kind {
                    CostKind::Running => {
                        values.extend((start..end).map(|s| solution.final_state(s)[dim]));
                    }
                    CostKind::Terminal => {
                        program.cost(*kind, params, &times, &block, &mut out, &mut ws.inner);
                        values.extend_from_slice(&out);
                    }
                    CostKind::Observed => {
                        for s in start..end {
                            let v =
                                observed_cost(program, params, data, solution, &system, s..s + 1);
                            values.push(v);
                        }
                    }
                    CostKind::Penalty => {}
                }
            }
            let mut m = vec![0.0; program.metrics_len() * w];
            program.metrics(params, &times, &block, &mut m, &mut ws.inner);
            for (k, values) in metrics.iter_mut().enumerate() {
                values.extend_from_slice(&m[k * w..(k + 1) * w]);
            }
            if outputs_len > 0 {
                let mut o = vec![0.0; outputs_len * w];
                program.outputs(params, &times, &block, &mut o, &mut ws.inner);
                for s in 0..w {
                    for j in 0..outputs_len {
                        outputs[(start + s) * outputs_len + j] = o[j * w + s];
                    }
                }
            }
        }
        PerSample {
            costs,
            metrics,
            outputs,
        }
    }
}

/// The observed cost summed over a series' observation times (for the samples `samples`, which
/// for a series is the one trajectory, or some of its trajectories): each sample is charged
/// at its own observation times ([`Dataset::observation_rows`]) that the solution holds, on a
/// width-1 workspace bound to that sample.
fn observed_cost(
    program: &Program,
    params: &Params,
    data: &Dataset,
    solution: &solve::Solution,
    system: &WithQuadrature<'_>,
    samples: Range<usize>,
) -> f64 {
    let (Some(times), Some(observed)) = (&data.times, &data.observed) else {
        return 0.0;
    };
    let dim = program.dim();
    let mut total = 0.0;
    let mut out = [0.0];
    for sample in samples {
        let mut ws = system.workspace(sample..sample + 1);
        for k in data.observation_rows(sample) {
            let t = times[k];
            let Some(index) = solution.t.iter().position(|s| *s == t) else {
                continue;
            };
            let y = &solution.state(index, sample)[..dim];
            ws.inner
                .bind_observed(&observed[k * data.obs_dim..(k + 1) * data.obs_dim]);
            program.cost(CostKind::Observed, params, &[t], y, &mut out, &mut ws.inner);
            total += out[0];
        }
    }
    total
}

impl Bound<'_> {
    /// Evaluates every output at one time for one sample (`y` its state, the workspace one of
    /// [`Bound::system`]'s bound to that sample).
    pub fn outputs(&self, t: f64, y: &[f64], out: &mut [f64], ws: &mut QuadratureWorkspace) {
        self.program
            .outputs(self.params, &[t], y, out, &mut ws.inner);
    }
}

/// `buf` as `len` zeros. A gradient-sized buffer that only running costs and LM's `k` use is
/// allocated on their first call, not with every block's workspace.
fn zeroed(buf: &mut Vec<f64>, len: usize) {
    buf.clear();
    buf.resize(len, 0.0);
}
