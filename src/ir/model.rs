//! The checked model as IR: every declaration resolved, every expression a tensor node and,
//! once [`super::expand_scalar`] has run, a scalar node per element.

use super::node::{ExprId, Var};
use super::pool::Pool;
use crate::diag::{Diagnostic, Span};

/// The shape of a value: scalar, vector `[n]` or matrix `[m, n]` (row-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A single number.
    Scalar,
    /// `[n]`
    Vector(usize),
    /// `[rows, cols]`
    Matrix(usize, usize),
}

impl Shape {
    /// Number of elements.
    pub fn len(self) -> usize {
        match self {
            Shape::Scalar => 1,
            Shape::Vector(n) => n,
            Shape::Matrix(m, n) => m * n,
        }
    }

    /// Whether the shape holds no elements (`[0]`).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The sizes of its axes, as numpy gives an array's shape: `[]` for a scalar.
    pub fn dims(self) -> Vec<usize> {
        match self {
            Shape::Scalar => Vec::new(),
            Shape::Vector(n) => vec![n],
            Shape::Matrix(m, n) => vec![m, n],
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Scalar => write!(f, "scalar"),
            Shape::Vector(n) => write!(f, "[{n}]"),
            Shape::Matrix(m, n) => write!(f, "[{m}, {n}]"),
        }
    }
}

/// The whole model after `sema::check`: names resolved, shapes known, calculus expanded.
///
/// Every list is in declaration order, and output follows that order. `sema` builds the
/// expressions as tensor nodes only ([`Model::tensor_roots`]); the scalar roots (states'
/// `init` and `rhs`, costs, metrics and outputs) are filled by [`super::expand_scalar`], which
/// [`super::prepare`] runs, and are placeholders until then ([`Model::has_scalar_ir`]).
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// The `model NAME` header, or the file stem when absent.
    pub name: String,
    /// All scalar expression nodes, one per element: the expansion of the tensor nodes that the
    /// model's roots use. Before [`super::expand_scalar`] it holds only the expressions that
    /// `sema` expands at once because they are small and read without `prepare`: LM-ResNet's
    /// `k` ([`Schedule::lm_k`]) and `uniform`'s label ([`DataSource::Uniform`]).
    pub pool: Pool,
    /// Whether the scalar roots hold the model's expressions or wait for
    /// [`super::expand_scalar`].
    pub scalar_ir: ScalarIr,
    /// The model's expressions as `sema` builds them: array-valued tensor nodes.
    pub tensors: super::tensor::TensorPool,
    /// The roots as tensor nodes, and their derivatives once [`super::prepare`] has run.
    pub tensor_roots: super::tensor::TensorRoots,
    /// Constants with their final values (after `--set`), for printing.
    pub consts: Vec<Const>,
    /// Trainable parameters.
    pub params: Vec<Param>,
    /// States, each with its initial value and equation.
    pub states: Vec<State>,
    /// Per-sample inputs bound by a data block.
    pub inputs: Vec<Input>,
    /// Per-sample targets.
    pub labels: Vec<Label>,
    /// Observed values of a `series` data block.
    pub observed: Vec<Input>,
    /// Costs in declaration order.
    pub costs: Vec<Cost>,
    /// Metrics, evaluated at the final time and averaged over samples.
    pub metrics: Vec<Output>,
    /// Outputs, evaluated at every saved time.
    pub outputs: Vec<Output>,
    /// Events (`event NAME when EXPR crosses 0 ...`), in declaration order.
    pub events: Vec<Event>,
    /// How time is discretized; `None` when the model declares no schedule.
    pub schedule: Option<Schedule>,
    /// Data blocks in declaration order.
    pub data: Vec<DataBlock>,
    /// The training set-up, if any.
    pub train: Option<Train>,
    /// Derivative IR of the state equations and costs; filled by [`super::prepare`].
    pub derivatives: Derivatives,
    /// Every `a / b` of the source as tensor nodes, so that a state that becomes NaN can be
    /// blamed on the division whose denominator is zero there (`cli::run::solve_error`).
    pub divisions: Vec<Division>,
}

/// A division written in the source: its operands in the tensor pool and where it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Division {
    /// The numerator.
    pub numerator: super::tensor::TId,
    /// The denominator.
    pub denominator: super::tensor::TId,
    /// The `a / b` expression.
    pub span: Span,
    /// The `b`.
    pub denominator_span: Span,
}

/// Whether a model's scalar roots (states' `init` and `rhs`, costs, metrics, outputs) hold its
/// expressions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScalarIr {
    /// They do: [`super::expand_scalar`] has run, or the model was assembled from scalar nodes
    /// (as some tests do), which is why this is the default.
    #[default]
    Present,
    /// Only the tensor roots do, as `sema` leaves a model: the states' `init` and `rhs` and the
    /// metrics' and outputs' `value` are empty and each cost's `value` is
    /// [`ExprId::DEFERRED`] until [`super::expand_scalar`] fills them.
    Deferred,
}

impl Model {
    /// Whether the scalar roots hold the model's expressions (see [`ScalarIr`]); `compile`
    /// and the scalar derivative IR need them, `ir::prepare` provides them.
    pub fn has_scalar_ir(&self) -> bool {
        self.scalar_ir == ScalarIr::Present
    }

    /// Makes the params `params` per-sample values: each becomes an input, appended after the
    /// declared inputs in the order given, that every expression reads in its place. An
    /// ensemble solves its members side by side this way, one member per sample
    /// (`cli::ensemble`). The params stay declared, so the parameter layout does not change,
    /// but nothing reads them. Only for a model that `prepare` has not expanded yet: the
    /// scalar IR and the derivatives are built from the tensor roots afterwards.
    pub fn params_as_inputs(&mut self, params: &[u32]) {
        assert!(
            !self.has_scalar_ir(),
            "params become inputs before the scalar IR is expanded"
        );
        for &param in params {
            let declared = &self.params[param as usize];
            let input = u32::try_from(self.inputs.len()).expect("fewer than 2^32 inputs");
            self.inputs.push(Input {
                name: declared.name.clone(),
                shape: declared.shape,
                span: declared.span,
            });
            self.tensors.rebind_leaf(
                super::tensor::Leaf::Param(param),
                super::tensor::Leaf::Input(input),
            );
        }
    }

    /// The structural nonzeros of `∂f/∂y` from the scalar IR: row `i` lists, sorted, the state
    /// components that `f_i`'s expression reads (a superset of the nonzeros, exact for the
    /// expressions models write). `None` without the scalar IR, or when walking the expressions
    /// would cost more than `work_limit` node visits (then the Jacobian is treated as dense).
    pub fn jacobian_pattern(&self, work_limit: usize) -> Option<Vec<Vec<u32>>> {
        use super::node::Node;
        if !self.has_scalar_ir() {
            return None;
        }
        let mut offsets = Vec::with_capacity(self.states.len());
        let mut total = 0u32;
        for s in &self.states {
            offsets.push(total);
            total += s.shape.len() as u32;
        }
        // One depth-first walk per row; `seen[node] == row + 1` marks this row's visits.
        let mut seen = vec![0u32; self.pool.len()];
        let mut stack = Vec::new();
        let mut work = 0usize;
        let mut rows = Vec::with_capacity(total as usize);
        for (row, root) in self.rhs().into_iter().enumerate() {
            let stamp = row as u32 + 1;
            let mut cols = Vec::new();
            stack.push(root);
            while let Some(id) = stack.pop() {
                if seen[id.index()] == stamp {
                    continue;
                }
                seen[id.index()] = stamp;
                work += 1;
                if work > work_limit {
                    return None;
                }
                match self.pool.node(id) {
                    Node::Const(_) => {}
                    Node::Var(Var::State { state, elem }) => {
                        cols.push(offsets[*state as usize] + elem);
                    }
                    Node::Var(_) => {}
                    Node::Add(xs) | Node::Mul(xs) => stack.extend(xs.iter().copied()),
                    Node::Div(a, b)
                    | Node::Pow(a, b)
                    | Node::Min(a, b)
                    | Node::Max(a, b)
                    | Node::Cmp(_, a, b) => stack.extend([*a, *b]),
                    Node::Func(_, a) => stack.push(*a),
                }
            }
            cols.sort_unstable();
            rows.push(cols);
        }
        Some(rows)
    }

    /// Total number of state elements: the length of `x` and `f` in [`Derivatives`].
    pub fn state_len(&self) -> usize {
        self.states.iter().map(|s| s.shape.len()).sum()
    }

    /// Total number of elements of one copy of every parameter: the length of `θ`.
    pub fn param_len(&self) -> usize {
        self.params.iter().map(|p| p.shape.len()).sum()
    }

    /// Copies of a `per layer` parameter: the schedule's `layers`, else its `steps`, else 1.
    pub fn layer_count(&self) -> usize {
        self.schedule
            .as_ref()
            .and_then(|s| s.layers.or(s.steps))
            .unwrap_or(1)
            .max(1)
    }

    /// Copies of each parameter: 1, [`Model::layer_count`] for `per layer`, one per knot.
    pub fn param_copies(&self) -> Vec<usize> {
        self.params
            .iter()
            .map(|p| match &p.time {
                ParamTime::Constant => 1,
                ParamTime::PerLayer => self.layer_count(),
                ParamTime::Knots(knots) => knots.len().max(1),
            })
            .collect()
    }

    /// Every state element as a variable, states in declaration order, elements row-major.
    pub fn state_vars(&self) -> Vec<Var> {
        flat_vars(self.states.iter().map(|s| s.shape), |state, elem| {
            Var::State { state, elem }
        })
    }

    /// Every parameter element as a variable, in declaration order, elements row-major.
    pub fn param_vars(&self) -> Vec<Var> {
        flat_vars(self.params.iter().map(|p| p.shape), |param, elem| {
            Var::Param { param, elem }
        })
    }

    /// The state equations' right-hand sides concatenated: `f` in [`Derivatives`].
    pub fn rhs(&self) -> Vec<ExprId> {
        self.states
            .iter()
            .flat_map(|s| s.rhs.iter().copied())
            .collect()
    }

    /// Every root expression of the model in a fixed order: each state's `init` then `rhs`,
    /// costs, metrics, outputs, the schedule's `lm_k`, `uniform` data labels, then the
    /// derivative roots ([`Derivatives::roots`]). [`Model::map_roots`] visits the same order.
    pub fn roots(&self) -> Vec<ExprId> {
        let mut roots = self.primal_roots();
        roots.extend(self.derivatives.roots());
        roots
    }

    /// The roots without the derivative IR. Before [`super::expand_scalar`], only the roots
    /// `sema` expands at once (`lm_k`, labels): the others are placeholders.
    pub fn primal_roots(&self) -> Vec<ExprId> {
        let mut roots = Vec::new();
        if self.has_scalar_ir() {
            for s in &self.states {
                roots.extend_from_slice(&s.init);
                roots.extend_from_slice(&s.rhs);
            }
            roots.extend(self.costs.iter().map(|c| c.value));
            for o in self.metrics.iter().chain(&self.outputs) {
                roots.extend_from_slice(&o.value);
            }
            for e in &self.events {
                roots.push(e.cond);
                roots.extend_from_slice(&e.jumps);
            }
        }
        roots.extend(self.schedule.as_ref().and_then(|s| s.lm_k));
        for d in &self.data {
            if let DataSource::Uniform { label: Some(l), .. } = &d.source {
                roots.push(*l);
            }
        }
        roots
    }

    /// Replaces every root `r` (in the order of [`Model::roots`]) by `f(r)`.
    pub fn map_roots(&mut self, mut f: impl FnMut(ExprId) -> ExprId) {
        if self.has_scalar_ir() {
            for s in &mut self.states {
                s.init
                    .iter_mut()
                    .chain(s.rhs.iter_mut())
                    .for_each(|r| *r = f(*r));
            }
            self.costs.iter_mut().for_each(|c| c.value = f(c.value));
            for o in self.metrics.iter_mut().chain(self.outputs.iter_mut()) {
                o.value.iter_mut().for_each(|r| *r = f(*r));
            }
            for e in &mut self.events {
                e.cond = f(e.cond);
                e.jumps.iter_mut().for_each(|r| *r = f(*r));
            }
        }
        if let Some(k) = self.schedule.as_mut().and_then(|s| s.lm_k.as_mut()) {
            *k = f(*k);
        }
        for d in &mut self.data {
            if let DataSource::Uniform { label: Some(l), .. } = &mut d.source {
                *l = f(*l);
            }
        }
        self.derivatives.map_roots(&mut f);
    }
}

fn flat_vars(shapes: impl Iterator<Item = Shape>, var: impl Fn(u32, u32) -> Var) -> Vec<Var> {
    let mut vars = Vec::new();
    for (i, shape) in shapes.enumerate() {
        vars.extend((0..shape.len()).map(|e| var(i as u32, e as u32)));
    }
    vars
}

/// The derivative IR that `compile` turns into Jacobian-vector and vector-Jacobian kernels.
///
/// `f` is the concatenation of every state's `rhs` in declaration order, `x` the matching
/// concatenation of state elements ([`Model::state_vars`]) and `θ` of one copy of every
/// parameter's elements ([`Model::param_vars`]). Directions are leaves: `v` is
/// [`Var::StateTangent`], `u` is [`Var::ParamTangent`] and `w` is [`Var::Cotangent`]
/// (indexed like `f`). Every list is empty until [`super::prepare`] fills it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Derivatives {
    /// `jvp_state[k] = Σ_j ∂f_k/∂x_j · v_j`, one per element of `f`.
    pub jvp_state: Vec<ExprId>,
    /// `jvp_param[k] = Σ_j ∂f_k/∂θ_j · u_j`, one per element of `f`.
    pub jvp_param: Vec<ExprId>,
    /// `vjp_state[j] = Σ_k w_k · ∂f_k/∂x_j`, one per element of `x`.
    pub vjp_state: Vec<ExprId>,
    /// `vjp_param[j] = Σ_k w_k · ∂f_k/∂θ_j`, one per element of `θ`.
    pub vjp_param: Vec<ExprId>,
    /// `rhs_time[k] = ∂f_k/∂t`, the explicit time dependence (Rosenbrock methods need it).
    pub rhs_time: Vec<ExprId>,
    /// `init_jvp_param[k] = Σ_j ∂x0_k/∂θ_j · u_j`: forward sensitivity of the initial state.
    pub init_jvp_param: Vec<ExprId>,
    /// `init_vjp_param[j] = Σ_k w_k · ∂x0_k/∂θ_j`: the initial state's pull-back to `θ`.
    pub init_vjp_param: Vec<ExprId>,
    /// `∂k/∂θ_j` for LM-ResNet's coefficient `k`; empty without one.
    pub lm_k_param: Vec<ExprId>,
    /// `msa_mixed_param[j] = ∂/∂θ_j Σ_k w_k Σ_i ∂f_k/∂x_i · v_i`, the parameter gradient of
    /// `wᵀ (∂f/∂x) v` (a mixed second derivative) that the `msa` optimizer's costate
    /// consistency term needs; built only for models trained by `msa`, empty otherwise.
    pub msa_mixed_param: Vec<ExprId>,
    /// The events' forward derivatives, for gradients through events: with `c` every event's
    /// condition then every assigned value (the rows of the `EventConds` and `EventJumps`
    /// kernels), `Σ_j ∂c_k/∂x_j · v_j + Σ_j ∂c_k/∂θ_j · u_j` for every `k`, then `∂c_k/∂t`
    /// for every `k`. Empty for a model without events.
    pub event_jvp: Vec<ExprId>,
    /// One entry per cost kind the model declares, in the order terminal, running, penalty,
    /// observed: the sum of that kind's costs and its gradients.
    pub costs: Vec<CostGradient>,
    /// With running costs `L`: the VJP of the field augmented by their quadrature `q' = L`,
    /// `Σ_k w_k ∂f_k/∂x_j + w_q ∂L/∂x_j` with `w_q` the [`Var::RunningCotangent`] leaf, one per
    /// element of `x`; empty without running costs. One reverse sweep through `f` and `L`
    /// together, so the field's pull-back is shared where `L` reads it (`sumsq(der(x))`).
    pub quad_vjp_state: Vec<ExprId>,
    /// The same for `θ`: `Σ_k w_k ∂f_k/∂θ_j + w_q ∂L/∂θ_j`.
    pub quad_vjp_param: Vec<ExprId>,
}

/// The sum of one kind of cost and its gradient with respect to the states and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct CostGradient {
    /// Which costs were summed.
    pub kind: CostKind,
    /// The sum of every cost of this kind.
    pub value: ExprId,
    /// `∂value/∂x_j`, one per element of `x`.
    pub state: Vec<ExprId>,
    /// `∂value/∂θ_j`, one per element of `θ`.
    pub param: Vec<ExprId>,
    /// How many copies of the time-varying parameters the value is summed over: 1 for every
    /// cost except penalty terms that read `per layer` or `on knots` params, which are
    /// evaluated once per copy (layer or knot) and summed, so that `sumsq(K)` of a per-layer
    /// `K` penalises every layer.
    pub copies: usize,
}

impl Derivatives {
    /// The gradient of the costs of `kind`, if the model declares any.
    pub fn cost(&self, kind: CostKind) -> Option<&CostGradient> {
        self.costs.iter().find(|c| c.kind == kind)
    }

    /// Every derivative root in a fixed order (fields in declaration order; per cost, its value,
    /// then state then param gradients).
    pub fn roots(&self) -> Vec<ExprId> {
        let mut roots = Vec::new();
        for list in [
            &self.jvp_state,
            &self.jvp_param,
            &self.vjp_state,
            &self.vjp_param,
            &self.rhs_time,
            &self.init_jvp_param,
            &self.init_vjp_param,
            &self.lm_k_param,
            &self.msa_mixed_param,
            &self.event_jvp,
            &self.quad_vjp_state,
            &self.quad_vjp_param,
        ] {
            roots.extend_from_slice(list);
        }
        for c in &self.costs {
            roots.push(c.value);
            roots.extend_from_slice(&c.state);
            roots.extend_from_slice(&c.param);
        }
        roots
    }

    /// Replaces every root `r` (in the order of [`Derivatives::roots`]) by `f(r)`.
    pub fn map_roots(&mut self, mut f: impl FnMut(ExprId) -> ExprId) {
        for list in [
            &mut self.jvp_state,
            &mut self.jvp_param,
            &mut self.vjp_state,
            &mut self.vjp_param,
            &mut self.rhs_time,
            &mut self.init_jvp_param,
            &mut self.init_vjp_param,
            &mut self.lm_k_param,
            &mut self.msa_mixed_param,
            &mut self.event_jvp,
            &mut self.quad_vjp_state,
            &mut self.quad_vjp_param,
        ] {
            list.iter_mut().for_each(|r| *r = f(*r));
        }
        for c in &mut self.costs {
            c.value = f(c.value);
            c.state.iter_mut().for_each(|r| *r = f(*r));
            c.param.iter_mut().for_each(|r| *r = f(*r));
        }
    }
}

/// A `const` with its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// Row-major values.
    pub values: Vec<f64>,
    /// The declaration.
    pub span: Span,
}

/// A trainable parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// The shape of one copy.
    pub shape: Shape,
    /// Constant, per layer, or on knots.
    pub time: ParamTime,
    /// How it is initialised.
    pub init: ParamInit,
    /// The declaration.
    pub span: Span,
}

/// How a parameter varies in time.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamTime {
    /// One copy for all time.
    Constant,
    /// One copy per layer of the schedule.
    PerLayer,
    /// One copy per knot, linearly interpolated in time.
    Knots(Vec<f64>),
}

/// A parameter's initial value.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamInit {
    /// Given values, row-major, one copy (repeated for every layer or knot).
    Values(Vec<f64>),
    /// Independent draws from a normal distribution.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Independent draws from a uniform distribution on `[lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
}

/// A state with its initial value and equation, one node per element (empty until the scalar
/// IR is expanded, [`Model::has_scalar_ir`]).
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// Initial value per element; may read params and inputs.
    pub init: Vec<ExprId>,
    /// Right-hand side `dNAME/dt` per element.
    pub rhs: Vec<ExprId>,
    /// The `state` declaration.
    pub span: Span,
    /// The equation, so that run-time errors can point at it.
    pub equation_span: Span,
}

/// An input or observed quantity: per-sample values from a data block.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// The declaration.
    pub span: Span,
}

/// A per-sample target.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    /// Its name.
    pub name: String,
    /// The declaration.
    pub span: Span,
    /// The number of classes when `cross_entropy(logits, LABEL)` reads it as a class index
    /// (the fewest, if several calls do): every value bound to it must then be an integer in
    /// `0..classes`, which the data is checked against before anything is solved.
    pub classes: Option<usize>,
}

/// Whether `value` is a class index of `classes` classes: an integer in `0..classes` (so not
/// NaN, −1, 2.5 or 1e300), which `cross_entropy` needs of its class argument.
pub fn is_class(value: f64, classes: usize) -> bool {
    value >= 0.0 && value < classes as f64 && value.fract() == 0.0
}

/// The class indices of `classes` classes as messages list them: `0, 1 or 2`, or
/// `from 0 to 9` when there are many.
pub fn classes_text(classes: usize) -> String {
    match classes {
        0 => "(none)".into(),
        1 => "0".into(),
        2..=5 => {
            let first: Vec<String> = (0..classes - 1).map(|k| k.to_string()).collect();
            format!("{} or {}", first.join(", "), classes - 1)
        }
        _ => format!("from 0 to {}", classes - 1),
    }
}

/// Which part of the loss a cost is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CostKind {
    /// Evaluated at the final time.
    Terminal,
    /// Integrated along the trajectory.
    Running,
    /// Depends on params only; added once.
    Penalty,
    /// Summed over the observation times of a series.
    Observed,
}

impl CostKind {
    /// The keyword.
    pub fn name(self) -> &'static str {
        match self {
            CostKind::Terminal => "terminal",
            CostKind::Running => "running",
            CostKind::Penalty => "penalty",
            CostKind::Observed => "observed",
        }
    }
}

/// One `cost` declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    /// Which part of the loss.
    pub kind: CostKind,
    /// The scalar value; [`ExprId::DEFERRED`] until the scalar IR is expanded.
    pub value: ExprId,
    /// The declaration.
    pub span: Span,
}

/// A `metric` or `output`: a named expression, one node per element (empty until the scalar
/// IR is expanded).
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// Value per element.
    pub value: Vec<ExprId>,
    /// The declaration.
    pub span: Span,
}

/// An `event`: a scalar condition whose zero crossings (in `direction`) stop the sample or
/// make the state jump. The expressions are [`ExprId::DEFERRED`] / empty until the scalar IR
/// is expanded; their tensor roots are [`super::tensor::TensorRoots::event_conds`] and
/// `event_jumps`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Its name.
    pub name: String,
    /// `1` rising, `-1` falling, `0` both.
    pub direction: i8,
    /// `-> terminate`; otherwise a jump.
    pub terminate: bool,
    /// Each assignment's target as (offset in the state vector, elements), in source order.
    pub targets: Vec<(usize, usize)>,
    /// The condition (one scalar).
    pub cond: ExprId,
    /// The assigned values, the targets' elements concatenated.
    pub jumps: Vec<ExprId>,
    /// The declaration.
    pub span: Span,
}

/// Integration methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Forward Euler (a ResNet).
    Euler,
    /// Explicit midpoint.
    Midpoint,
    /// Heun's method.
    Heun,
    /// Classic fourth-order Runge–Kutta.
    Rk4,
    /// Two-step Adams–Bashforth.
    Ab2,
    /// LM-ResNet linear two-step scheme.
    Lm,
    /// Kick–drift–kick leapfrog.
    Leapfrog,
    /// Backward Euler with Newton.
    ImplicitEuler,
    /// Bogacki–Shampine 3(2).
    Bosh3,
    /// Dormand–Prince 5(4).
    Dopri5,
    /// Tsitouras 5(4).
    Tsit5,
    /// Rosenbrock RODAS4.
    Rodas4,
    /// Variable-order BDF.
    Bdf,
}

/// Method families; they take different arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodFamily {
    /// `steps = N` equal steps.
    Fixed,
    /// Error-controlled explicit methods.
    Adaptive,
    /// Error-controlled implicit methods.
    Stiff,
}

impl Method {
    /// Every method with its name.
    pub const ALL: [(Method, &'static str); 13] = [
        (Method::Euler, "euler"),
        (Method::Midpoint, "midpoint"),
        (Method::Heun, "heun"),
        (Method::Rk4, "rk4"),
        (Method::Ab2, "ab2"),
        (Method::Lm, "lm"),
        (Method::Leapfrog, "leapfrog"),
        (Method::ImplicitEuler, "implicit_euler"),
        (Method::Bosh3, "bosh3"),
        (Method::Dopri5, "dopri5"),
        (Method::Tsit5, "tsit5"),
        (Method::Rodas4, "rodas4"),
        (Method::Bdf, "bdf"),
    ];

    /// The method's name as written.
    pub fn name(self) -> &'static str {
        Method::ALL
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("?", |(_, n)| n)
    }

    /// The method's family.
    pub fn family(self) -> MethodFamily {
        match self {
            Method::Bosh3 | Method::Dopri5 | Method::Tsit5 => MethodFamily::Adaptive,
            Method::Rodas4 | Method::Bdf => MethodFamily::Stiff,
            _ => MethodFamily::Fixed,
        }
    }
}

/// When trajectories are reported.
#[derive(Clone, Debug, PartialEq)]
pub enum Save {
    /// Every step for fixed-step methods, start and end otherwise.
    Default,
    /// Every `dt` from the start, plus the end.
    Every(f64),
    /// These times.
    Times(Vec<f64>),
}

/// The schedule's `linear =`: how the stiff methods factor `a I − J`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinearSolve {
    /// Banded when the Jacobian's structure has a narrow band (after renumbering), else dense.
    #[default]
    Auto,
    /// Dense LU.
    Dense,
    /// Banded LU.
    Banded,
}

/// The floating-point precision the model's kernels run in: `schedule ...(precision = f32)` or
/// `--precision`. Whatever it is, states between steps, parameters, times and gradients
/// summed over blocks stay `f64` (see [`crate::real`] and ARCHITECTURE.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Double precision, the default and the reference.
    #[default]
    F64,
    /// Single precision: kernels on twice as many lanes per vector, GEMMs in `f32`.
    F32,
}

impl Precision {
    /// `"f64"` or `"f32"`, as the model file and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F64 => "f64",
            Precision::F32 => "f32",
        }
    }

    /// The unit roundoff of evaluations in this precision.
    pub fn unit_roundoff(self) -> f64 {
        use crate::real::Real;
        match self {
            Precision::F64 => <f64 as Real>::UNIT_ROUNDOFF,
            Precision::F32 => <f32 as Real>::UNIT_ROUNDOFF,
        }
    }
}

/// Which gradient method `grad` and `train` use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradientMethod {
    /// Exact gradient of the discrete schedule.
    Backprop,
    /// Continuous adjoint solved backward with checkpoints.
    Adjoint,
    /// Forward sensitivities.
    Forward,
}

/// The `schedule` declaration, with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// The method.
    pub method: Method,
    /// Start time: where the initial state is.
    pub t0: f64,
    /// End time; never equal to `t0`, and before it when the schedule integrates backward.
    pub t1: f64,
    /// Number of steps of a fixed-step method.
    pub steps: Option<usize>,
    /// Relative tolerance of adaptive and stiff methods.
    pub rtol: f64,
    /// Absolute tolerance of adaptive and stiff methods (with `atol_components`: their
    /// smallest, for components past the states).
    pub atol: f64,
    /// `atol = [...]`: one absolute tolerance per state component; empty for one `atol`.
    pub atol_components: Vec<f64>,
    /// Step limit of adaptive and stiff methods.
    pub max_steps: usize,
    /// Save times.
    pub save: Save,
    /// Number of pieces of `per layer` params under an adaptive method.
    pub layers: Option<usize>,
    /// LM-ResNet's coefficient `k` as a scalar expression (may read a `per layer` param).
    pub lm_k: Option<ExprId>,
    /// Leapfrog's position state index.
    pub position: Option<usize>,
    /// Leapfrog's momentum state index.
    pub momentum: Option<usize>,
    /// `linear = dense|banded` of `bdf` and `rodas4`: how their Newton/stage matrix is
    /// factored; `Auto` chooses from the Jacobian's structure.
    pub linear: LinearSolve,
    /// `precision = f32|f64`: what the kernels compute in.
    pub precision: Precision,
    /// Whether `t = [T0, T1]` reads a const set with `--set`: observations the span then
    /// leaves out were asked for, so dropping them is a warning rather than an error.
    pub span_set: bool,
    /// The declaration.
    pub span: Span,
}

impl Schedule {
    /// `+1.0` when the schedule integrates forward in time (`t1 > t0`), `-1.0` backward.
    pub fn direction(&self) -> f64 {
        if self.t1 >= self.t0 {
            1.0
        } else {
            -1.0
        }
    }

    /// Whether `t` lies in the span, whichever its direction.
    pub fn contains(&self, t: f64) -> bool {
        t >= self.t0.min(self.t1) && t <= self.t0.max(self.t1)
    }
}

/// A column of a CSV file, by index or header name.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    /// 0-based index.
    Index(usize),
    /// Header name.
    Name(String),
}

impl std::fmt::Display for Column {
    /// As the model writes it: `3` or `"prey"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Column::Index(i) => write!(f, "{i}"),
            Column::Name(n) => write!(f, "\"{n}\""),
        }
    }
}

/// What the column range of a `csv` block (its inputs) or a `series` block (its observed
/// values) binds. `sema` checks a range of two indices; a range with a name is checked when
/// `cli` has read the file's header, before anything is solved.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnBinding {
    /// The range `A..B` as written.
    pub span: Span,
    /// How many columns the range must select: the elements of what it binds.
    pub elements: usize,
    /// What it binds and how large that is, as a message ends: "`uobs` has 2 elements".
    pub target: String,
}

impl ColumnBinding {
    /// The error when `range` selects `selected` columns instead of [`Self::elements`];
    /// `fix` is the help line, when there is a range to propose.
    pub fn mismatch(
        &self,
        range: &(Column, Column),
        selected: usize,
        fix: Option<String>,
    ) -> Option<Diagnostic> {
        if selected == self.elements {
            return None;
        }
        let d = Diagnostic::error(
            self.span,
            format!(
                "`{}..{}` selects {selected} column{} (ranges exclude their end) but {}",
                range.0,
                range.1,
                if selected == 1 { "" } else { "s" },
                self.target
            ),
        );
        Some(match fix {
            Some(fix) => d.with_help(fix),
            None => d,
        })
    }
}

/// Toy data generators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToyKind {
    /// scikit-learn's `make_circles`.
    Circles,
    /// scikit-learn's `make_moons`.
    Moons,
    /// FFJORD's two spirals.
    Spirals,
    /// Eight gaussians on a ring.
    Gaussians,
    /// Checkerboard.
    Checkerboard,
    /// Disc inside a ring.
    Annulus,
}

/// Where a data block's samples come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// A seeded toy generator.
    Toy {
        /// Which generator.
        kind: ToyKind,
        /// Number of samples.
        n: usize,
        /// Noise level.
        noise: f64,
        /// Seed.
        seed: u64,
        /// `make_circles`' inner-circle factor.
        factor: f64,
    },
    /// Normal samples.
    Normal {
        /// Number of samples.
        n: usize,
        /// Dimension.
        dim: usize,
        /// Seed.
        seed: u64,
        /// Mean per dimension.
        mean: Vec<f64>,
        /// Standard deviation.
        std: f64,
    },
    /// Uniform samples with an optional regression target.
    Uniform {
        /// Number of samples.
        n: usize,
        /// Dimension.
        dim: usize,
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
        /// Seed.
        seed: u64,
        /// Target as an expression of the model's input (`Var::Input`).
        label: Option<ExprId>,
    },
    /// Rows of a CSV file.
    Csv {
        /// Path relative to the model file.
        path: String,
        /// Input columns `start..end`.
        input: (Column, Column),
        /// Label column.
        label: Option<Column>,
        /// Seed of a row permutation applied before `rows`.
        shuffle: Option<u64>,
        /// Row range kept (end exclusive), after shuffling.
        rows: Option<(usize, usize)>,
    },
    /// Observations at times, for `observed` costs.
    Series {
        /// Path relative to the model file.
        path: String,
        /// Time column.
        t: Column,
        /// Value columns `start..end`.
        values: (Column, Column),
        /// Keep only observation rows `start..end` (a window of the series), if given.
        rows: Option<(usize, usize)>,
        /// The trajectory column: each distinct value is one trajectory (a sample), in order
        /// of first appearance.
        traj: Option<Column>,
        /// Input columns `start..end`: each trajectory's inputs, from its first row (or from
        /// its row of `input_file`).
        input: Option<(Column, Column)>,
        /// `input_file = "ic.csv"`: the `input` columns are this file's, one row per
        /// trajectory, found by the trajectory column's value (path relative to the model).
        input_file: Option<String>,
    },
}

/// A `data` declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct DataBlock {
    /// `train`, `test`, ...
    pub name: String,
    /// Where samples come from.
    pub source: DataSource,
    /// What a `csv` or `series` block's column range binds (`None` for generators, and when
    /// the model declares nothing it could bind or a declaration's shape is in error).
    pub columns: Option<ColumnBinding>,
    /// What a `series` block's `input` range binds: the model's inputs.
    pub input_columns: Option<ColumnBinding>,
    /// The declaration.
    pub span: Span,
}

/// Optimizers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Optimizer {
    /// Adam with bias correction.
    Adam,
    /// Stochastic gradient descent with momentum.
    Sgd,
    /// L-BFGS with a Wolfe line search.
    Lbfgs,
    /// Extended method of successive approximations.
    Msa,
}

/// The `train` declaration, with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Train {
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Learning rate.
    pub lr: f64,
    /// Passes over the training data.
    pub epochs: usize,
    /// Mini-batch size; `None` is the full batch.
    pub batch: Option<usize>,
    /// Seed of initialisation-independent draws (mini-batch shuffling).
    pub seed: u64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// L-BFGS iterations.
    pub iters: usize,
    /// L-BFGS history length.
    pub history: usize,
    /// MSA penalty ρ.
    pub rho: f64,
    /// MSA regularisation.
    pub reg: f64,
    /// MSA inner iterations per layer.
    pub maxiter: usize,
    /// Learning-rate factor applied every `decay_every` epochs.
    pub lr_decay: f64,
    /// Epochs between learning-rate decays; 0 never decays.
    pub decay_every: usize,
    /// Consecutive mini-batches (or L-BFGS trial points) whose solve may fail before training
    /// stops: a failed solve skips its mini-batch (L-BFGS: shortens the step).
    pub max_failures: usize,
    /// Gradient method, if the model names one.
    pub gradient: Option<GradientMethod>,
    /// Multiple shooting (`shooting = N`, `continuity = W`), if asked for.
    pub shooting: Option<Shooting>,
    /// The declaration.
    pub span: Span,
}

/// `train ...(shooting = N, continuity = W)`: each trajectory of a series is split into `N`
/// segments with trainable starts, and `W · Σ |x_k(end) − s_{k+1}|²` joins the loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Shooting {
    /// Segments per trajectory (≥ 1; 1 is single shooting).
    pub segments: usize,
    /// The continuity penalty's weight `W` (default 1).
    pub continuity: f64,
    /// Epochs (L-BFGS: iterations) of single shooting after the shooting ones (default 0).
    pub polish: usize,
    /// The `shooting` argument, where data-dependent errors point.
    pub span: Span,
}
