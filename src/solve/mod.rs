//! Numerical ODE solvers: fixed-step schedules (ResNet-style layers), adaptive explicit
//! Runge–Kutta pairs and stiff solvers, driven over a batch of samples.
//!
//! The solvers never see the IR. A problem is a [`System`]: a right-hand side evaluated on a
//! *block* of samples in structure-of-arrays layout, a one-sample Jacobian, and the times where
//! the field may jump. [`solve_batch`] splits a batch into fixed blocks of
//! [`block_width`] samples, integrates the blocks in parallel with rayon and assembles the result in block
//! order, so the output is bit-identical for any number of threads.
//!
//! Layouts:
//! - a block of `width` samples of a `dim`-dimensional state is `&[f64]` of length
//!   `dim * width`, component-major: `y[i * width + s]` is component `i` of sample `s`, so
//!   kernels run their inner loop over samples;
//! - the batch initial value `y0` passed to [`solve_batch`] is sample-major, one row per
//!   sample: `y0[s * dim + i]` (the layout of a CSV file of initial points);
//! - [`Solution::y`] is `[save time][sample][component]`: `y[(k * n_samples + s) * dim + i]`.
//!
//! Method families (see [`Method`]):
//! - fixed step (`steps = N` equal steps, all samples of a block share `t`): `fixed.rs`;
//! - adaptive explicit pairs with dense output, each sample stepping on its own in lockstep
//!   iterations of its block: `adaptive.rs`;
//! - stiff: Rosenbrock RODAS4 (`rosenbrock.rs`) and variable-order BDF (`bdf.rs`), and the
//!   fixed-step implicit Euler (`implicit.rs`), one sample at a time with dense LU (`linalg.rs`).
//!
//! Gradients through a solve ([`Sensitivity`], [`Objective`]): [`backprop_batch`] (the discrete
//! adjoint: `backprop.rs` for fixed-step explicit schedules, `sample.rs` for implicit Euler and
//! the adaptive pairs, which `replay.rs` records and replays exactly) and [`adjoint_batch`]
//! (the continuous adjoint, `adjoint.rs`, for every method); a system with events takes
//! both through `event_grad.rs`, sample by sample, with the transposed saltation rule.
//!
//! Coefficients are data in [`tableau`], each with its source. Failures are values
//! ([`SolveError`]); no input makes a solver panic or return NaN as a result.
//!
//! Decisions and their reasons:
//! - **Determinism.** Each sample's arithmetic depends only on that sample (lockstep lanes never
//!   mix), blocks are a fixed partition of the batch, and blocks are combined sequentially in
//!   order; so results are bit-identical for any thread count and even for any block
//!   composition. Errors report the lowest failing sample, also independent of scheduling.
//! - **Adaptive steps per sample.** Forcing a block onto one step size would make a sample's
//!   result depend on its neighbours and waste work on easy samples; lockstep lanes keep the
//!   vectorized block evaluation and give each sample Hairer's controller unchanged (Lorenz at
//!   `1e-8` takes DOPRI5's 834 steps / 5006 evaluations).
//! - **Jumps.** Breakpoints are landings: steps end exactly on them, end stages are evaluated
//!   on the step's own side ([`System::breakpoints`]), and methods restart (no FSAL, BDF back
//!   to order 1). Fixed-step grids are not moved; a stage within rounding of a breakpoint is
//!   assigned to its step's side, so an aligned grid sees one layer per step.
//! - **Output.** Save times are interpolated, never forced steps, so saving densely does not
//!   change the steps; only `t1` and `stops` are stepped onto.
//! - **Stiff methods run one sample at a time** (width 1): Newton and LU are per sample anyway,
//!   and per-sample step sizes matter most for stiff problems.

mod adaptive;
mod adjoint;
mod backprop;
mod bdf;
pub(crate) mod blocks;
mod event_grad;
mod events;
mod fixed;
mod implicit;
mod linalg;
mod replay;
mod rosenbrock;
mod sample;
pub mod tableau;
mod tangent;
mod timeline;

#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;

use crate::dist::{self, Ranks, Reader, Writer};
pub(crate) use events::jumps_len;
use timeline::Timeline;

/// A callback that sees every accepted step's end `(t, y)` of a one-sample stiff solve.
pub(crate) type OnAccept<'a> = Option<&'a mut dyn FnMut(f64, &[f64])>;

/// Samples per block for a batch of `n_samples`, for a system that keeps the default
/// [`System::block_width`]. The partition of a batch into blocks depends on the batch size
/// and the system only, never on the number of threads, which is what makes results
/// independent of it.
///
/// A compiled kernel pays a fixed cost per instruction and block (dispatch, lane look-ups),
/// so wider blocks cost less per sample: 64-sample blocks take `cnf_moons` (batch 256) from
/// 1 190 M to 827 M instructions. Below 256 samples they would leave too few blocks to share
/// between threads (a batch of 64 would be one block), so smaller batches keep 32.
pub const fn block_width(n_samples: usize) -> usize {
    if n_samples >= WIDE_BLOCKS_FROM {
        crate::compile::WIDE_LANES
    } else {
        NARROW_BLOCK
    }
}

/// The blocks of `n_samples` samples, `width` at a time (the last one shorter), in order.
pub fn block_ranges(n_samples: usize, width: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n_samples)
        .step_by(width)
        .map(move |start| start..(start + width).min(n_samples))
}

/// The block width of batches below [`WIDE_BLOCKS_FROM`] samples, and of systems whose
/// per-sample cost is in work that grows with the block (GEMMs) rather than in dispatch.
pub const NARROW_BLOCK: usize = crate::compile::NARROW_LANES;
/// The batch size from which [`block_width`] doubles.
const WIDE_BLOCKS_FROM: usize = 256;

/// An ODE right-hand side `dy/dt = f(t, y)` as the solvers see it.
///
/// Implementations evaluate a whole block of samples at once (structure of arrays, see the
/// module docs). They must treat samples independently: the value computed for sample `s`
/// may depend only on `t[s]` and sample `s`'s components, never on its neighbours or on the
/// width of the block. Parameters are shared by the block and live inside the implementation.
pub trait System: Sync {
    /// Scratch space for one block; created once per block (and thread), never inside a step.
    type Workspace: Send;

    /// Creates the workspace for the block of samples `samples` (its width is `samples.len()`),
    /// so that a system can bind per-sample data such as inputs and labels to the block.
    fn workspace(&self, samples: std::ops::Range<usize>) -> Self::Workspace;

    /// Number of state components of one sample.
    fn dim(&self) -> usize;

    /// Samples per block of a batch of `n_samples`: [`block_width`] unless the system knows
    /// better. A wrapper must give its inner system's width, so that every pass over a batch
    /// (solve, gradient, costs) cuts it the same way.
    fn block_width(&self, n_samples: usize) -> usize {
        block_width(n_samples)
    }

    /// The unit roundoff of the system's evaluations: `f64`'s unless its kernels compute in a
    /// lower precision. Newton iterations stop asking for corrections below it.
    fn unit_roundoff(&self) -> f64 {
        <f64 as crate::real::Real>::UNIT_ROUNDOFF
    }

    /// The blocks of a batch of `n_samples`, in order: the partition every pass over the
    /// batch uses (see [`System::block_width`]).
    fn blocks(&self, n_samples: usize) -> impl Iterator<Item = Range<usize>> {
        block_ranges(n_samples, self.block_width(n_samples))
    }

    /// Writes `dy = f(t, y)` for a block: `y` and `dy` have length `dim * width`
    /// (component-major) and `t[s]` is sample `s`'s own time (adaptive methods step each sample
    /// independently; fixed-step methods pass equal times).
    fn rhs(&self, t: &[f64], y: &[f64], dy: &mut [f64], ws: &mut Self::Workspace);

    /// [`System::rhs`] of one sample (a width-one `ws`) as a direct call of compiled code,
    /// when the system has one ready for `ws` now; `None` otherwise, and callers go on with
    /// `rhs`. Small adaptive solves take it (`adaptive/one.rs`).
    fn field_call<'w>(&self, ws: &'w mut Self::Workspace) -> Option<crate::compile::FieldCall<'w>> {
        let _ = ws;
        None
    }

    /// Values per sample that [`System::rhs_saving`] keeps for [`Sensitivity::vjp_saved`] (the
    /// hidden activations of a neural field); 0 when there is nothing worth keeping.
    fn saved_len(&self) -> usize {
        0
    }

    /// [`System::rhs`], also writing into `saved` (`saved_len() * width`, component-major)
    /// values that spare a VJP at the same point their recomputation. Backprop calls it for
    /// the evaluations it records.
    fn rhs_saving(
        &self,
        t: &[f64],
        y: &[f64],
        dy: &mut [f64],
        saved: &mut [f64],
        ws: &mut Self::Workspace,
    ) {
        let _ = saved;
        self.rhs(t, y, dy, ws);
    }

    /// Writes the dense Jacobian `∂f/∂y` of one sample (`y` of length `dim`, workspace of
    /// width 1) into `jac`, row-major `dim × dim`: `jac[i * dim + j] = ∂f_i/∂y_j`.
    fn jacobian(&self, t: f64, y: &[f64], jac: &mut [f64], ws: &mut Self::Workspace);

    /// The structural nonzeros of `∂f/∂y`: row `i` lists, sorted, every `j` for which
    /// `∂f_i/∂y_j` may be nonzero. `None` (the default) means dense. The stiff solvers choose a
    /// banded LU and evaluate the Jacobian by compressed JVPs from it.
    fn jacobian_pattern(&self) -> Option<&[Vec<u32>]> {
        None
    }

    /// `J V` at `(t, y)` for `lanes` tangent directions (`seeds[j * lanes + s]`), written to
    /// `out[i * lanes + s]`. The default multiplies the dense [`System::jacobian`]; systems
    /// with a pattern override it with a JVP of `lanes` lanes.
    #[allow(clippy::too_many_arguments)]
    fn jacobian_seeded(
        &self,
        t: f64,
        y: &[f64],
        seeds: &[f64],
        lanes: usize,
        out: &mut [f64],
        ws: &mut Self::Workspace,
    ) {
        let n = y.len();
        let mut jac = vec![0.0; n * n];
        self.jacobian(t, y, &mut jac, ws);
        for i in 0..n {
            for s in 0..lanes {
                out[i * lanes + s] = (0..n).map(|j| jac[i * n + j] * seeds[j * lanes + s]).sum();
            }
        }
    }

    /// Times strictly inside the span where `f` may jump (boundaries of per-layer weights).
    ///
    /// Contract: the pieces are `[b_k, b_{k+1})`, so `f(b_k)` is the piece to the right of
    /// `b_k`. Pick the piece by comparing `t` with these exact values (for example
    /// `breakpoints.partition_point(|&b| b <= t)`), not by rounding `(t - t0) / dt`.
    /// Solvers step exactly onto each breakpoint and restart there; a step that lies left of
    /// `b` evaluates its end stages at `b.next_down()`, never at `b`. Values outside the span
    /// are ignored.
    fn breakpoints(&self) -> Vec<f64> {
        Vec::new()
    }

    /// LM-ResNet coefficient `k_n` at the start time `t_n` of a step (may be per layer).
    /// Only [`Method::Lm`] calls it.
    fn lm_coefficient(&self, t: f64) -> f64 {
        let _ = t;
        0.0
    }

    /// True when `f` does not depend on `t` except through the jumps at [`breakpoints`]
    /// (piecewise-constant weights count as autonomous). Rosenbrock methods then skip the
    /// finite-difference estimate of `∂f/∂t`, one right-hand side per step.
    ///
    /// [`breakpoints`]: System::breakpoints
    fn is_autonomous(&self) -> bool {
        false
    }

    /// The system's events (see [`EventSpec`]); empty, the default, for a system without any,
    /// and then no solver does any event work.
    fn events(&self) -> &[EventSpec] {
        &[]
    }

    /// Writes every event's condition `g_e(t, y)` for a block, one row of `width` per event.
    fn event_conditions(&self, t: &[f64], y: &[f64], g: &mut [f64], ws: &mut Self::Workspace) {
        let _ = (t, y, g, ws);
    }

    /// Writes every event's assigned values at `(t, y)` for a block, one row of `width` per
    /// value ([`EventSpec::jump_offset`]).
    fn event_jumps(&self, t: &[f64], y: &[f64], values: &mut [f64], ws: &mut Self::Workspace) {
        let _ = (t, y, values, ws);
    }

    /// Applies jump event `e` at `t` to one sample's state `y` (a workspace of width 1);
    /// `scratch` holds [`System::event_jumps`]' rows. The default assigns the event's values
    /// (all computed from the state before the jump); a system that carries more than the
    /// state (forward tangents) overrides it, and may refuse the event.
    fn event_jump(
        &self,
        e: usize,
        t: f64,
        y: &mut [f64],
        scratch: &mut [f64],
        ws: &mut Self::Workspace,
    ) -> Result<(), SolveError> {
        self.event_jumps(&[t], y, scratch, ws);
        events::apply_jump(&self.events()[e], scratch, y);
        Ok(())
    }

    /// Called when `terminate` event `e` stops one sample at `t` in state `y` (a workspace of
    /// width 1), before the later save times are filled with `y`. The default keeps `y`.
    fn event_stop(
        &self,
        e: usize,
        t: f64,
        y: &mut [f64],
        ws: &mut Self::Workspace,
    ) -> Result<(), SolveError> {
        let _ = (e, t, y, ws);
        Ok(())
    }
}

/// An event as the solvers see it: a zero crossing of a scalar condition `g(t, y)` in a given
/// direction, located in the step where `g` changes sign, that stops the sample or assigns new
/// values to parts of the state (and the integration restarts there).
#[derive(Clone, Debug, PartialEq)]
pub struct EventSpec {
    /// `1`: only crossings from negative to positive; `-1`: from positive to negative; `0`:
    /// both.
    pub direction: i8,
    /// Whether the event stops the sample (its later save times hold the state at the event).
    pub terminate: bool,
    /// The jump's targets: (offset in the state, elements), in the order of its values.
    pub targets: Vec<(usize, usize)>,
    /// The row of this event's first value in [`System::event_jumps`].
    pub jump_offset: usize,
}

/// One event that happened: which (index into [`System::events`]) and when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventHit {
    /// The event's index.
    pub event: usize,
    /// Its time.
    pub t: f64,
}

/// A [`System`] whose right-hand side can also be differentiated with respect to the state and
/// the parameters it closes over: what the gradient methods need on top of solving.
///
/// Parameter gradients are flat vectors of [`Sensitivity::n_params`] entries (for a compiled
/// model, the full parameter layout with every layer and knot copy) and are *summed* over the
/// samples of a block in lane order, so a block's contribution does not depend on threads.
pub trait Sensitivity: System {
    /// Length of the parameter gradient.
    fn n_params(&self) -> usize;

    /// `out = wᵀ ∂f/∂y` for a block (`w`, `out` like `y`) and `grad += Σ_s w_sᵀ ∂f/∂θ`.
    ///
    /// Contract for implementations with quadrature components: the cotangent rows of those
    /// components may be assumed equal across the block (they are whenever the loss weighs the
    /// samples equally, which every caller in this crate does).
    #[allow(clippy::too_many_arguments)]
    fn vjp(
        &self,
        t: &[f64],
        y: &[f64],
        w: &[f64],
        out: &mut [f64],
        grad: &mut [f64],
        ws: &mut Self::Workspace,
    );

    /// [`Sensitivity::vjp`] at a point whose [`System::rhs_saving`] filled `saved`; the same
    /// values (to the bit), faster. An empty `saved` (nothing was saved) must be accepted.
    #[allow(clippy::too_many_arguments)]
    fn vjp_saved(
        &self,
        t: &[f64],
        y: &[f64],
        saved: &[f64],
        w: &[f64],
        out: &mut [f64],
        grad: &mut [f64],
        ws: &mut Self::Workspace,
    ) {
        let _ = saved;
        self.vjp(t, y, w, out, grad, ws);
    }

    /// `out = ∂f/∂y · v + ∂f/∂θ · u` for a block (`u` a parameter direction, shared by the block).
    #[allow(clippy::too_many_arguments)]
    fn jvp(
        &self,
        t: &[f64],
        y: &[f64],
        v: &[f64],
        u: &[f64],
        out: &mut [f64],
        ws: &mut Self::Workspace,
    );

    /// [`Sensitivity::jvp`] for `m` directions at one point: `v` and `out` hold one block per
    /// direction (`m` blocks like `y`, one after another) and `u` one parameter direction per
    /// block (`m` rows of [`Sensitivity::n_params`] entries). Implementations may share the
    /// work that does not depend on the direction; the default calls `jvp` for each.
    #[allow(clippy::too_many_arguments)]
    fn jvp_many(
        &self,
        t: &[f64],
        y: &[f64],
        v: &[f64],
        u: &[f64],
        out: &mut [f64],
        ws: &mut Self::Workspace,
    ) {
        let (len, np) = (y.len(), self.n_params());
        if len == 0 {
            return;
        }
        for (d, (vd, od)) in v
            .chunks_exact(len)
            .zip(out.chunks_exact_mut(len))
            .enumerate()
        {
            self.jvp(t, y, vd, &u[d * np..(d + 1) * np], od, ws);
        }
    }

    /// Event `e`'s forward derivatives at one point of one sample (`y`, `v`, `dh`, `dh_t` of
    /// length [`System::dim`], a workspace of width 1). With `ĥ` the state just after the event
    /// as a function of the state just before it (the identity on what the event does not
    /// assign, and for `terminate`): writes `dh = ∂ĥ/∂y · v + ∂ĥ/∂θ · u`, `dh_t = ∂ĥ/∂t`, and
    /// returns `(∂g/∂y · v + ∂g/∂θ · u, ∂g/∂t)` for its condition `g`. `None`, the default:
    /// the system cannot differentiate its events.
    #[allow(clippy::too_many_arguments)]
    fn event_jvp(
        &self,
        e: usize,
        t: f64,
        y: &[f64],
        v: &[f64],
        u: &[f64],
        dh: &mut [f64],
        dh_t: &mut [f64],
        ws: &mut Self::Workspace,
    ) -> Option<(f64, f64)> {
        let _ = (e, t, y, v, u, dh, dh_t, ws);
        None
    }

    /// `grad += w · ∂k/∂θ` for the LM-ResNet coefficient `k` in force at `t`.
    fn lm_coefficient_vjp(&self, t: f64, w: f64, grad: &mut [f64], ws: &mut Self::Workspace) {
        let _ = (t, w, grad, ws);
    }

    /// `∂k/∂θ · u` for the LM-ResNet coefficient `k` in force at `t`.
    fn lm_coefficient_jvp(&self, t: f64, u: &[f64], ws: &mut Self::Workspace) -> f64 {
        let _ = (t, u, ws);
        0.0
    }
}

/// The loss as a function of the states at the save times, as backprop sees it: each save time
/// may carry a cost (a terminal cost at `t1`, observed costs at observation times).
pub trait Objective<S: System>: Sync {
    /// For save time number `k` at `t`, with the block's states `y` there (component-major,
    /// `dim × width`, samples `samples` of the batch): returns the block's summed loss terms,
    /// writes their gradient with respect to `y` into `cot` (same layout; zero where the loss
    /// does not depend on a component) and adds their direct parameter gradient into `grad`.
    #[allow(clippy::too_many_arguments)]
    fn at_save(
        &self,
        k: usize,
        t: f64,
        y: &[f64],
        samples: Range<usize>,
        cot: &mut [f64],
        grad: &mut [f64],
        ws: &mut S::Workspace,
    ) -> f64;
}

/// An integration method, as named by a schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// Forward Euler (a ResNet): order 1.
    Euler,
    /// Explicit midpoint rule: order 2.
    Midpoint,
    /// Heun's method (explicit trapezoid): order 2.
    Heun,
    /// Classic fourth-order Runge–Kutta.
    Rk4,
    /// Two-step Adams–Bashforth, started with one Heun step: order 2.
    Ab2,
    /// LM-ResNet two-step scheme `x_{n+1} = (1 − k_n) x_n + k_n x_{n−1} + h f(t_n, x_n)`,
    /// first step Euler, `k_n` from [`System::lm_coefficient`].
    Lm,
    /// Kick–drift–kick leapfrog (velocity Verlet) for `dq/dt = F(p, t)`, `dp/dt = G(q, t)`:
    /// order 2, symmetric, reversible. Components in neither range (quadrature states) are
    /// advanced with the trapezoidal rule.
    Leapfrog {
        /// Components of the position `q`.
        position: Range<usize>,
        /// Components of the momentum `p`.
        momentum: Range<usize>,
    },
    /// Backward Euler with Newton iterations: order 1, L-stable.
    ImplicitEuler,
    /// Bogacki–Shampine 3(2) pair with Hermite dense output.
    Bosh3,
    /// Dormand–Prince 5(4) pair with Shampine's 4th-order dense output, as Hairer's DOPRI5.
    Dopri5,
    /// Tsitouras 5(4) pair with its own 4th-order interpolant.
    Tsit5,
    /// RODAS4 Rosenbrock method, order 4(3), L-stable, with 3rd-order dense output.
    Rodas4,
    /// Variable-order (1–5), variable-step BDF in quasi-constant-step (Nordsieck-like
    /// difference) form, with Newton iterations that reuse the Jacobian and LU.
    Bdf,
}

impl Method {
    /// The schedule name of the method (`dopri5`, `rk4`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Euler => "euler",
            Method::Midpoint => "midpoint",
            Method::Heun => "heun",
            Method::Rk4 => "rk4",
            Method::Ab2 => "ab2",
            Method::Lm => "lm",
            Method::Leapfrog { .. } => "leapfrog",
            Method::ImplicitEuler => "implicit_euler",
            Method::Bosh3 => "bosh3",
            Method::Dopri5 => "dopri5",
            Method::Tsit5 => "tsit5",
            Method::Rodas4 => "rodas4",
            Method::Bdf => "bdf",
        }
    }

    /// True for the methods that take `steps = N` equal steps.
    pub fn is_fixed_step(&self) -> bool {
        matches!(
            self,
            Method::Euler
                | Method::Midpoint
                | Method::Heun
                | Method::Rk4
                | Method::Ab2
                | Method::Lm
                | Method::Leapfrog { .. }
                | Method::ImplicitEuler
        )
    }
}

/// What to solve and how. Build with [`SolverOptions::new`] and set fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SolverOptions {
    /// The integration method.
    pub method: Method,
    /// Start time.
    pub t0: f64,
    /// End time; `t1 < t0` integrates backward.
    pub t1: f64,
    /// Number of equal steps; required by fixed-step methods, ignored by the others.
    pub steps: Option<usize>,
    /// Relative tolerance (adaptive and stiff methods; Newton iterations of implicit Euler).
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Absolute tolerances per component of the system (the schedule's `atol = [...]`);
    /// components past its end, and every component when it is empty, use `atol`.
    pub atol_components: Vec<f64>,
    /// Most steps (accepted plus rejected) one sample may attempt.
    pub max_steps: usize,
    /// Times at which the solution is reported, sorted in the direction of integration and
    /// within `[t0, t1]`. Empty means the spec's default: every step for fixed-step methods,
    /// `[t0, t1]` otherwise. `t1` is appended when the list does not end there, so the last
    /// saved state is always the final one. Save times between steps are interpolated: linearly
    /// for fixed-step methods, by each method's dense output otherwise. Pass `vec![t1]` when
    /// only the final state is needed: the default stores `steps + 1` states per sample.
    pub save: Vec<f64>,
    /// Times that adaptive and stiff methods must step onto exactly (observation times).
    /// Times outside `(t0, t1)` are ignored. Fixed-step methods keep their equal steps.
    pub stops: Vec<f64>,
    /// How `bdf` and `rodas4` factor their iteration matrix (the schedule's `linear =`).
    pub linear: LinearSolver,
}

impl SolverOptions {
    /// Options with the defaults `rtol = 1e-6`, `atol = 1e-9`, `max_steps = 100_000`, no
    /// `steps`, default save times and no stops.
    pub fn new(method: Method, t0: f64, t1: f64) -> Self {
        SolverOptions {
            method,
            t0,
            t1,
            steps: None,
            rtol: 1e-6,
            atol: 1e-9,
            atol_components: Vec::new(),
            max_steps: 100_000,
            save: Vec::new(),
            stops: Vec::new(),
            linear: LinearSolver::Auto,
        }
    }
}

impl SolverOptions {
    /// The absolute tolerance of each of `dim` components.
    pub fn atol_vec(&self, dim: usize) -> Vec<f64> {
        (0..dim)
            .map(|c| self.atol_components.get(c).copied().unwrap_or(self.atol))
            .collect()
    }
}

/// Work counts, summed over samples, with the spec's JSON names.
///
/// Counts are exact and per sample: a block evaluation of `width` samples counts as `width`
/// right-hand-side evaluations, except in adaptive lockstep iterations, where samples that have
/// already finished ride along and are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Accepted steps.
    pub steps: u64,
    /// Rejected step attempts (error test or Newton failure).
    pub rejected: u64,
    /// Right-hand-side evaluations (one sample each).
    pub rhs_evals: u64,
    /// Jacobian evaluations.
    pub jac_evals: u64,
    /// LU decompositions.
    pub lu_decompositions: u64,
    /// Vector–Jacobian products (one sample each), by the gradient methods.
    pub vjp_evals: u64,
    /// Jacobian–vector products (one sample and one direction each), by the gradient methods.
    pub jvp_evals: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.steps += o.steps;
        self.rejected += o.rejected;
        self.rhs_evals += o.rhs_evals;
        self.jac_evals += o.jac_evals;
        self.lu_decompositions += o.lu_decompositions;
        self.vjp_evals += o.vjp_evals;
        self.jvp_evals += o.jvp_evals;
    }
}

/// The solution of a batch at the save times.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    /// Save times; the last is always `t1`.
    pub t: Vec<f64>,
    /// States, `[save time][sample][component]`: `y[(k * n_samples + s) * dim + i]`.
    pub y: Vec<f64>,
    /// Components per sample.
    pub dim: usize,
    /// Samples in the batch.
    pub n_samples: usize,
    /// Work counts summed over all samples.
    pub stats: Stats,
    /// Each sample's events in time order; empty (no rows at all) for a system without events.
    pub events: Vec<Vec<EventHit>>,
}

impl Solution {
    /// The state of `sample` at save time number `k`.
    pub fn state(&self, k: usize, sample: usize) -> &[f64] {
        let start = (k * self.n_samples + sample) * self.dim;
        &self.y[start..start + self.dim]
    }

    /// The state of `sample` at `t1`.
    pub fn final_state(&self, sample: usize) -> &[f64] {
        self.state(self.t.len() - 1, sample)
    }

    /// The first `dim` components of the final states of `samples`, component-major as a
    /// block's kernels read them.
    pub fn final_block(&self, samples: Range<usize>, dim: usize) -> Vec<f64> {
        let w = samples.len();
        let mut block = vec![0.0; dim * w];
        for (s, sample) in samples.enumerate() {
            let y = self.final_state(sample);
            for i in 0..dim {
                block[i * w + s] = y[i];
            }
        }
        block
    }
}

/// Why a solve failed. Samples are numbered from 0 in the batch; when several samples fail,
/// the one with the smallest index is reported.
#[derive(Clone, Debug, PartialEq)]
pub enum SolveError {
    /// The step size fell below what the time's precision can represent.
    StepSizeTooSmall {
        /// Time reached by the sample.
        t: f64,
        /// The failing sample.
        sample: usize,
    },
    /// A sample needed more than `max_steps` steps.
    MaxStepsExceeded {
        /// Time reached by the sample.
        t: f64,
        /// The failing sample.
        sample: usize,
        /// The limit that was hit.
        max_steps: usize,
    },
    /// Newton iterations of an implicit method did not converge even with a fresh Jacobian.
    NewtonFailed {
        /// Time of the step that failed.
        t: f64,
        /// The failing sample.
        sample: usize,
    },
    /// A state or derivative became infinite or NaN.
    NonFinite {
        /// Time at which the value appeared.
        t: f64,
        /// The failing sample.
        sample: usize,
        /// The first non-finite component.
        component: usize,
    },
    /// An event was hit tangentially (`dg/dt = g_y · f + g_t` vanishes at its time), so the
    /// event time does not depend smoothly on the parameters and no gradient exists there.
    GrazingEvent {
        /// The event's index in [`System::events`].
        event: usize,
        /// Its time.
        t: f64,
        /// The failing sample.
        sample: usize,
    },
    /// The options or inputs are inconsistent; nothing was integrated.
    InvalidOptions(OptionsError),
}

/// Inconsistent options, found before any integration.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionsError {
    /// `t0` or `t1` is not finite.
    NonFiniteSpan,
    /// A fixed-step method has no `steps`, or `steps = 0`.
    MissingSteps,
    /// `rtol` or `atol` is negative or not finite, or both are zero.
    BadTolerance,
    /// A save time lies outside `[t0, t1]` or is not finite.
    SaveOutOfRange {
        /// The offending time.
        time: f64,
    },
    /// Save times are not sorted in the direction of integration.
    SaveNotSorted {
        /// Index of the first time that comes before its predecessor.
        index: usize,
    },
    /// `y0.len()` is not `dim * n_samples`.
    InitialLength {
        /// `dim * n_samples`.
        expected: usize,
        /// `y0.len()`.
        found: usize,
    },
    /// Leapfrog position and momentum ranges are empty, overlap or exceed the state.
    LeapfrogRanges,
    /// The system has events and the method cannot locate them yet.
    EventsMethod {
        /// The method's name.
        method: &'static str,
    },
    /// The system cannot differentiate its events ([`Sensitivity::event_jvp`] is not
    /// implemented), so no gradient crosses them.
    EventGradients,
    /// Backprop (the discrete adjoint) is not available for this method (RODAS4 and BDF, whose
    /// exact discrete gradient needs second derivatives of the field).
    NoBackprop {
        /// The method's name.
        method: &'static str,
    },
}

impl fmt::Display for SolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SolveError::StepSizeTooSmall { t, sample } => {
                write!(f, "step size too small at t = {t} (sample {sample})")
            }
            SolveError::MaxStepsExceeded {
                t,
                sample,
                max_steps,
            } => {
                write!(
                    f,
                    "more than {max_steps} steps needed; stopped at t = {t} (sample {sample})"
                )
            }
            SolveError::NewtonFailed { t, sample } => {
                write!(
                    f,
                    "newton iterations failed to converge at t = {t} (sample {sample})"
                )
            }
            SolveError::NonFinite {
                t,
                sample,
                component,
            } => write!(
                f,
                "state component {component} became non-finite at t = {t} (sample {sample})"
            ),
            SolveError::GrazingEvent { event, t, sample } => write!(
                f,
                "event {event} grazes its condition at t = {t} (sample {sample}): the gradient through it is singular"
            ),
            SolveError::InvalidOptions(e) => write!(f, "invalid solver options: {e}"),
        }
    }
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionsError::NonFiniteSpan => write!(f, "the time span is not finite"),
            OptionsError::MissingSteps => write!(f, "a fixed-step method needs steps >= 1"),
            OptionsError::BadTolerance => {
                write!(
                    f,
                    "tolerances must be finite, non-negative and not both zero"
                )
            }
            OptionsError::SaveOutOfRange { time } => {
                write!(f, "save time {time} lies outside the time span")
            }
            OptionsError::SaveNotSorted { index } => {
                write!(f, "save time number {index} is out of order")
            }
            OptionsError::InitialLength { expected, found } => {
                write!(f, "expected {expected} initial values, found {found}")
            }
            OptionsError::LeapfrogRanges => {
                write!(
                    f,
                    "leapfrog position and momentum ranges must be disjoint and in range"
                )
            }
            OptionsError::EventsMethod { method } => write!(
                f,
                "events need an explicit Runge–Kutta method for now (`euler`, `midpoint`, `heun`, `rk4`, `bosh3`, `dopri5` or `tsit5`), not `{method}`"
            ),
            OptionsError::EventGradients => write!(
                f,
                "the system cannot differentiate its events"
            ),
            OptionsError::NoBackprop { method } => write!(
                f,
                "backprop through `{method}` is not supported (its exact discrete gradient needs second derivatives of the field); use `--method adjoint`"
            ),
        }
    }
}

impl std::error::Error for SolveError {}
impl std::error::Error for OptionsError {}

/// What one block produced: states at the save times (`[save][sample in block][component]`),
/// its work counts and the failure of its lowest failing sample, if any.
struct BlockResult {
    out: Vec<f64>,
    stats: Stats,
    error: Option<SolveError>,
    /// Each sample's events (empty without events).
    events: Vec<Vec<EventHit>>,
}

/// Integrates `n_samples` samples from the sample-major initial values `y0`
/// (`y0[s * dim + i]`). See the module docs for the layouts and [`SolverOptions`] for times.
///
/// Blocks of [`block_width`] samples run in parallel on the current rayon pool; the result is
/// bit-identical for any number of threads. On failure the error of the lowest-numbered
/// failing sample is returned.
pub fn solve_batch<S: System>(
    system: &S,
    options: &SolverOptions,
    y0: &[f64],
    n_samples: usize,
) -> Result<Solution, SolveError> {
    let dim = system.dim();
    let timeline = Timeline::new(system, options).map_err(SolveError::InvalidOptions)?;
    if y0.len() != dim * n_samples {
        return Err(SolveError::InvalidOptions(OptionsError::InitialLength {
            expected: dim * n_samples,
            found: y0.len(),
        }));
    }
    if let Method::Leapfrog { position, momentum } = &options.method {
        let disjoint = position.end <= momentum.start || momentum.end <= position.start;
        if position.is_empty()
            || momentum.is_empty()
            || !disjoint
            || position.end > dim
            || momentum.end > dim
        {
            return Err(SolveError::InvalidOptions(OptionsError::LeapfrogRanges));
        }
    }

    let has_events = !system.events().is_empty();
    if has_events && !events::method_supported(&options.method) {
        return Err(SolveError::InvalidOptions(OptionsError::EventsMethod {
            method: options.method.name(),
        }));
    }
    // Blocks are copied into place in block order as they finish: the only place they meet.
    let n_save = timeline.save.len();
    let mut y = vec![0.0; n_save * n_samples * dim];
    let mut hits: Vec<Vec<EventHit>> = Vec::new();
    let mut stats = Stats::default();
    let mut error: Option<SolveError> = None;
    blocks::in_order(
        n_samples,
        system.block_width(n_samples),
        |samples| {
            let rows = &y0[samples.start * dim..samples.end * dim];
            solve_block(
                system,
                options,
                &timeline,
                rows,
                samples.start,
                samples.len(),
            )
        },
        |samples, r| {
            let (first, width) = (samples.start, samples.len());
            stats += r.stats;
            if error.is_none() {
                error = r.error;
            }
            hits.extend(r.events);
            for k in 0..n_save {
                let dst = (k * n_samples + first) * dim;
                let src = k * width * dim;
                y[dst..dst + width * dim].copy_from_slice(&r.out[src..src + width * dim]);
            }
            true
        },
    );
    match error {
        Some(e) => Err(e),
        None => Ok(Solution {
            t: timeline.save.clone(),
            y,
            dim,
            n_samples,
            stats,
            events: hits,
        }),
    }
}

pub use backprop::BackpropOptions;
pub use linalg::LinearSolver;
pub use tangent::{forward_batch, Forward};

/// The gradient of a loss through a solve, as [`backprop_batch`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Backprop {
    /// The objective's terms summed over all samples (blocks added in order).
    pub loss: f64,
    /// `∂loss/∂θ` through the solve and the objective (not through `y0`), blocks added in order.
    pub grad: Vec<f64>,
    /// `∂loss/∂y0`, sample-major (`lambda0[s * dim + i]`).
    pub lambda0: Vec<f64>,
    /// The states at the save times, as [`solve_batch`] would return them.
    pub solution: Solution,
    /// `∂loss/∂y` at the save times, `[save][sample][component]`, when asked for.
    pub costates: Option<Vec<f64>>,
}

/// The exact gradient of `objective` through a solve of `system` (the discrete adjoint, with
/// checkpointing): fixed-step explicit schedules (`backprop.rs`), implicit Euler and the
/// adaptive explicit pairs, whose accepted step sizes are held constant (`sample.rs`).
/// RODAS4 and BDF are refused with [`OptionsError::NoBackprop`]. The forward states are the
/// bits of [`solve_batch`]; blocks run in parallel and their gradients are added in block
/// order, so the result is bit-identical for any number of threads and any checkpoint segment.
pub fn backprop_batch<S: Sensitivity, O: Objective<S>>(
    system: &S,
    objective: &O,
    options: &SolverOptions,
    y0: &[f64],
    n_samples: usize,
    bp: &BackpropOptions,
) -> Result<Backprop, SolveError> {
    backprop::check_method(&options.method).map_err(SolveError::InvalidOptions)?;
    gradient_batch(system, objective, options, y0, n_samples, bp, false)
}

/// The continuous adjoint of `objective` through a solve of `system`, for every method: the
/// costate and the parameter quadrature solved backward with the same method (fixed-step
/// schedules on the same grid; adaptive and stiff methods with the same tolerances), the
/// forward trajectory recomputed from checkpoints (see `adjoint.rs`). The result has the same
/// form as [`backprop_batch`]'s and is also bit-identical for any number of threads; it
/// approximates the gradient of the computed loss to the accuracy of the two solves.
pub fn adjoint_batch<S: Sensitivity, O: Objective<S>>(
    system: &S,
    objective: &O,
    options: &SolverOptions,
    y0: &[f64],
    n_samples: usize,
    bp: &BackpropOptions,
) -> Result<Backprop, SolveError> {
    gradient_batch(system, objective, options, y0, n_samples, bp, true)
}

/// [`backprop_batch`] (`continuous = false`) or [`adjoint_batch`] across `ranks`: each rank
/// computes its contiguous share of the blocks and sends their results, unfolded, to rank 0,
/// which adds them in block order as one process does, so rank 0's result has the bits of
/// one process for any number of ranks and threads. The other ranks get `Ok(None)`. A block
/// that failed on another rank is computed again on rank 0 for its error (failures are rare;
/// the error then needs no wire format). Every rank must call this together.
#[allow(clippy::too_many_arguments)]
pub fn gradient_batch_across<S: Sensitivity, O: Objective<S>>(
    system: &S,
    objective: &O,
    options: &SolverOptions,
    y0: &[f64],
    n_samples: usize,
    bp: &BackpropOptions,
    continuous: bool,
    ranks: &dyn Ranks,
) -> Result<Option<Backprop>, SolveError> {
    let has_events = !system.events().is_empty();
    if has_events && !events::method_supported(&options.method) {
        return Err(SolveError::InvalidOptions(OptionsError::EventsMethod {
            method: options.method.name(),
        }));
    }
    if !continuous {
        backprop::check_method(&options.method).map_err(SolveError::InvalidOptions)?;
    }
    let dim = system.dim();
    let timeline = Timeline::new(system, options).map_err(SolveError::InvalidOptions)?;
    if y0.len() != dim * n_samples {
        return Err(SolveError::InvalidOptions(OptionsError::InitialLength {
            expected: dim * n_samples,
            found: y0.len(),
        }));
    }
    // Only the fixed-step blocks take their gradient buffer from the spares (see below).
    let recycles = !matches!(
        options.method,
        Method::Bosh3
            | Method::Dopri5
            | Method::Tsit5
            | Method::ImplicitEuler
            | Method::Rodas4
            | Method::Bdf
    );
    let spare: std::sync::Mutex<Vec<Vec<f64>>> = std::sync::Mutex::new(Vec::new());
    let zeroed = || {
        let recycled = spare.lock().ok().and_then(|mut s| s.pop());
        match recycled {
            Some(mut g) => {
                g.fill(0.0);
                g
            }
            None => vec![0.0; system.n_params()],
        }
    };
    let work = |samples: Range<usize>| {
        let rows = &y0[samples.start * dim..samples.end * dim];
        let tl = &timeline;
        if has_events {
            return event_grad::block(
                system, objective, options, tl, rows, samples, bp, continuous,
            );
        }
        match options.method {
            Method::Bosh3 | Method::Dopri5 | Method::Tsit5 => sample::adaptive_block(
                system, objective, options, tl, rows, samples, bp, continuous,
            ),
            Method::ImplicitEuler => sample::implicit_block(
                system, objective, options, tl, rows, samples, bp, continuous,
            ),
            Method::Rodas4 | Method::Bdf => {
                sample::stiff_block(system, objective, options, tl, rows, samples, bp)
            }
            _ => backprop::block(
                system,
                objective,
                options,
                tl,
                rows,
                samples,
                bp,
                continuous,
                zeroed(),
            ),
        }
    };
    let mut fold = GradientFold::new(&timeline, n_samples, dim, system.n_params(), bp.costates);
    // Block gradients are added in block order as they finish, so at most a few of them (each
    // as long as the parameters) are alive at once. Their buffers are recycled: a wide model's
    // 4 MB gradients freed and allocated again block after block leave glibc's per-thread
    // arenas holding freed pieces that the resident set never gives back.
    let recycling = recycles.then_some(&spare);
    let width = system.block_width(n_samples);
    if ranks.size() == 1 {
        blocks::in_order(n_samples, width, work, |samples, r| {
            fold.add(samples, r, recycling)
        });
        return fold.finish(&timeline).map(Some);
    }
    let mine = dist::share(n_samples.div_ceil(width), ranks.rank(), ranks.size());
    let first = (mine.start * width).min(n_samples);
    let last = (mine.end * width).min(n_samples);
    let mut wire = Writer::default();
    blocks::in_order(
        last - first,
        width,
        |local| work(first + local.start..first + local.end),
        |local, r| {
            let ok = r.is_ok();
            encode_block(&mut wire, first + local.start..first + local.end, r.ok());
            ok
        },
    );
    let shares = ranks.gather(&wire.0);
    if !ranks.is_root() {
        return Ok(None);
    }
    'ranks: for bytes in &shares {
        let mut reader = Reader(bytes);
        while !reader.is_empty() {
            let (samples, block) = decode_block(&mut reader);
            let r = match block {
                Some(b) => Ok(b),
                None => work(samples.clone()),
            };
            if !fold.add(samples, r, None) {
                break 'ranks;
            }
        }
    }
    fold.finish(&timeline).map(Some)
}

fn gradient_batch<S: Sensitivity, O: Objective<S>>(
    system: &S,
    objective: &O,
    options: &SolverOptions,
    y0: &[f64],
    n_samples: usize,
    bp: &BackpropOptions,
    continuous: bool,
) -> Result<Backprop, SolveError> {
    let r = gradient_batch_across(
        system,
        objective,
        options,
        y0,
        n_samples,
        bp,
        continuous,
        &dist::Local,
    )?;
    Ok(r.expect("one rank is rank 0"))
}

/// The blocks' gradients added up in block order: the one place they meet.
struct GradientFold {
    n_samples: usize,
    dim: usize,
    n_save: usize,
    y: Vec<f64>,
    costates: Option<Vec<f64>>,
    lambda0: Vec<f64>,
    grad: Vec<f64>,
    loss: f64,
    stats: Stats,
    error: Option<SolveError>,
}

impl GradientFold {
    fn new(
        timeline: &Timeline,
        n_samples: usize,
        dim: usize,
        n_params: usize,
        costates: bool,
    ) -> Self {
        let n_save = timeline.save.len();
        GradientFold {
            n_samples,
            dim,
            n_save,
            y: vec![0.0; n_save * n_samples * dim],
            costates: costates.then(|| vec![0.0; n_save * n_samples * dim]),
            lambda0: vec![0.0; n_samples * dim],
            grad: vec![0.0; n_params],
            loss: 0.0,
            stats: Stats::default(),
            error: None,
        }
    }

    /// Adds the next block, handing its gradient buffer to `spare` for the next block to
    /// reuse; `false` (after an error) ends the batch.
    fn add(
        &mut self,
        samples: Range<usize>,
        r: Result<backprop::BlockGradient, SolveError>,
        spare: Option<&std::sync::Mutex<Vec<Vec<f64>>>>,
    ) -> bool {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                self.error = Some(e);
                return false;
            }
        };
        let (first, width, dim) = (samples.start, samples.len(), self.dim);
        self.loss += r.loss;
        for (g, x) in self.grad.iter_mut().zip(&r.grad) {
            *g += x;
        }
        self.stats += r.stats;
        for s in 0..width {
            for i in 0..dim {
                self.lambda0[(first + s) * dim + i] = r.lambda0[i * width + s];
            }
        }
        for k in 0..self.n_save {
            let dst = (k * self.n_samples + first) * dim;
            let src = k * width * dim;
            self.y[dst..dst + width * dim].copy_from_slice(&r.out[src..src + width * dim]);
            if let Some(c) = self.costates.as_mut() {
                c[dst..dst + width * dim].copy_from_slice(&r.costates[src..src + width * dim]);
            }
        }
        if let Some(mut spare) = spare.and_then(|s| s.lock().ok()) {
            spare.push(r.grad);
        }
        true
    }

    fn finish(self, timeline: &Timeline) -> Result<Backprop, SolveError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(Backprop {
            loss: self.loss,
            grad: self.grad,
            lambda0: self.lambda0,
            solution: Solution {
                t: timeline.save.clone(),
                y: self.y,
                dim: self.dim,
                n_samples: self.n_samples,
                stats: self.stats,
                events: Vec::new(),
            },
            costates: self.costates,
        })
    }
}

/// One block's samples and gradient (`None`: it failed) on the wire.
fn encode_block(w: &mut Writer, samples: Range<usize>, block: Option<backprop::BlockGradient>) {
    w.u64(samples.start as u64);
    w.u64(samples.end as u64);
    let Some(b) = block else {
        w.u64(0);
        return;
    };
    w.u64(1);
    w.f64(b.loss);
    encode_stats(w, &b.stats);
    w.f64s(&b.grad);
    w.f64s(&b.lambda0);
    w.f64s(&b.out);
    w.f64s(&b.costates);
}

fn decode_block(r: &mut Reader<'_>) -> (Range<usize>, Option<backprop::BlockGradient>) {
    let samples = r.usize()..r.usize();
    if r.u64() == 0 {
        return (samples, None);
    }
    let loss = r.f64();
    let stats = decode_stats(r);
    let block = backprop::BlockGradient {
        loss,
        stats,
        grad: r.f64s(),
        lambda0: r.f64s(),
        out: r.f64s(),
        costates: r.f64s(),
    };
    (samples, Some(block))
}

/// [`Stats`] on the wire.
pub(crate) fn encode_stats(w: &mut Writer, s: &Stats) {
    for v in [
        s.steps,
        s.rejected,
        s.rhs_evals,
        s.jac_evals,
        s.lu_decompositions,
        s.vjp_evals,
        s.jvp_evals,
    ] {
        w.u64(v);
    }
}

/// What [`encode_stats`] wrote.
pub(crate) fn decode_stats(r: &mut Reader<'_>) -> Stats {
    Stats {
        steps: r.u64(),
        rejected: r.u64(),
        rhs_evals: r.u64(),
        jac_evals: r.u64(),
        lu_decompositions: r.u64(),
        vjp_evals: r.u64(),
        jvp_evals: r.u64(),
    }
}

/// Integrates one block: `y0` is sample-major for the `width` samples starting at `first`.
fn solve_block<S: System>(
    system: &S,
    options: &SolverOptions,
    timeline: &Timeline,
    y0: &[f64],
    first: usize,
    width: usize,
) -> BlockResult {
    let dim = system.dim();
    let mut out = vec![0.0; timeline.save.len() * width * dim];
    let mut stats = Stats::default();
    // Per-sample failures, indexed within the block; the lowest one is reported.
    let mut failures: Vec<Option<SolveError>> = vec![None; width];

    let mut hits = Vec::new();
    if !system.events().is_empty() {
        hits = vec![Vec::new(); width];
    }
    if timeline.t0 == timeline.t1 {
        for k in 0..timeline.save.len() {
            out[k * width * dim..(k + 1) * width * dim].copy_from_slice(y0);
        }
    } else if !hits.is_empty() {
        // Events: each sample on its own (width 1), so that its steps stop at its events.
        let mut one = vec![0.0; timeline.save.len() * dim];
        for s in 0..width {
            let y0s = &y0[s * dim..(s + 1) * dim];
            let mut failure = [None];
            events::solve_sample(
                system,
                options,
                timeline,
                y0s,
                first + s,
                &mut one,
                &mut stats,
                &mut failure,
                &mut hits[s],
                None,
            );
            failures[s] = failure[0].take().map(|e| renumber(e, s));
            for k in 0..timeline.save.len() {
                let dst = (k * width + s) * dim;
                out[dst..dst + dim].copy_from_slice(&one[k * dim..(k + 1) * dim]);
            }
        }
    } else {
        match &options.method {
            Method::Bosh3 | Method::Dopri5 | Method::Tsit5 => {
                let soa = to_soa(y0, dim, width);
                adaptive::solve(
                    system,
                    options,
                    timeline,
                    &soa,
                    first..first + width,
                    &mut out,
                    &mut stats,
                    &mut failures,
                    None,
                    None,
                );
            }
            Method::ImplicitEuler | Method::Rodas4 | Method::Bdf => {
                let mut one = vec![0.0; timeline.save.len() * dim];
                for s in 0..width {
                    let mut ws = system.workspace(first + s..first + s + 1);
                    let y0s = &y0[s * dim..(s + 1) * dim];
                    let result = match options.method {
                        Method::ImplicitEuler => implicit::solve(
                            system, options, timeline, y0s, &mut one, &mut stats, &mut ws,
                        ),
                        Method::Rodas4 => rosenbrock::solve(
                            system, options, timeline, y0s, &mut one, &mut stats, &mut ws, None,
                        ),
                        _ => bdf::solve(
                            system, options, timeline, y0s, &mut one, &mut stats, &mut ws, None,
                        ),
                    };
                    failures[s] = result.err().map(|e| renumber(e, s));
                    for k in 0..timeline.save.len() {
                        let dst = (k * width + s) * dim;
                        out[dst..dst + dim].copy_from_slice(&one[k * dim..(k + 1) * dim]);
                    }
                }
            }
            _ => {
                let soa = to_soa(y0, dim, width);
                fixed::solve(
                    system,
                    options,
                    timeline,
                    &soa,
                    first..first + width,
                    &mut out,
                    &mut stats,
                    &mut failures,
                );
            }
        }
    }

    let error = failures
        .into_iter()
        .flatten()
        .next()
        .map(|e| renumber(e, first));
    BlockResult {
        out,
        stats,
        error,
        events: hits,
    }
}

/// Sample-major rows to a component-major block.
fn to_soa(rows: &[f64], dim: usize, width: usize) -> Vec<f64> {
    let mut soa = vec![0.0; dim * width];
    for s in 0..width {
        for i in 0..dim {
            soa[i * width + s] = rows[s * dim + i];
        }
    }
    soa
}

/// Turns a block-local sample index into the batch index.
fn renumber(e: SolveError, first: usize) -> SolveError {
    match e {
        SolveError::StepSizeTooSmall { t, sample } => SolveError::StepSizeTooSmall {
            t,
            sample: sample + first,
        },
        SolveError::MaxStepsExceeded {
            t,
            sample,
            max_steps,
        } => SolveError::MaxStepsExceeded {
            t,
            sample: sample + first,
            max_steps,
        },
        SolveError::NewtonFailed { t, sample } => SolveError::NewtonFailed {
            t,
            sample: sample + first,
        },
        SolveError::NonFinite {
            t,
            sample,
            component,
        } => SolveError::NonFinite {
            t,
            sample: sample + first,
            component,
        },
        SolveError::GrazingEvent { event, t, sample } => SolveError::GrazingEvent {
            event,
            t,
            sample: sample + first,
        },
        other => other,
    }
}

/// The first non-finite component of a contiguous state, if any.
fn first_non_finite(y: &[f64]) -> Option<usize> {
    y.iter().position(|v| !v.is_finite())
}
