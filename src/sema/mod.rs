//! Semantic analysis: names, constants and `--set` overrides, `fn` inlining, shapes, calculus;
//! lowers an [`ast::Model`] to an [`ir::Model`].
//!
//! Lowering *is* shape checking: every expression is evaluated symbolically to a [`Value`] (one
//! node of the model's tensor pool, with its shape), so an operator's shape rule and its IR are
//! written in one place. The roots the later stages read (equations, costs, outputs) are
//! recorded as tensor nodes ([`ir::Model::tensor_roots`]); `ir::prepare` expands them into the
//! scalar IR, so checking a wide model costs what its text costs. Lets, equations and constants
//! are lowered on first use and memoized; re-entering one that is still being lowered is a
//! definition cycle. Analysis never fails: errors become diagnostics and `Value::Error`, which
//! silences follow-on errors.

mod builtins;
mod config;
mod expr;
mod index;
mod value;

use std::collections::{HashMap, HashSet};

use crate::diag::{suggest, Diagnostic, Diagnostics, Span};
use crate::ir::tensor::expand::Expander;
use crate::ir::tensor::{Leaf, TId, TNode};
use crate::ir::{self, CostKind, ExprId, Shape};
use crate::syntax::ast::{self, DeclKind};
use value::Value;

/// `--set NAME=VALUE` overrides, applied before shapes are checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Name and value pairs in command-line order; a later one wins.
    pub values: Vec<(String, f64)>,
    /// `--precision`: the kernels' precision, in place of the schedule's.
    pub precision: Option<crate::ir::Precision>,
}

impl Overrides {
    /// Parses `NAME=VALUE`, as given to `--set`.
    pub fn parse_one(text: &str) -> Result<(String, f64), String> {
        let Some((name, value)) = text.split_once('=') else {
            return Err(format!(
                "`--set {text}` should be NAME=VALUE, e.g. `--set d=3`"
            ));
        };
        let name = name.trim();
        let value_text = value.trim();
        let value: f64 = value_text
            .parse()
            .map_err(|_| format!("`--set {text}`: `{value_text}` is not a number"))?;
        if name.is_empty() {
            return Err(format!("`--set {text}` names nothing before `=`"));
        }
        if !value.is_finite() {
            return Err(format!("`--set {text}`: the value must be finite"));
        }
        Ok((name.to_string(), value))
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// Largest number of elements of one array value (32 MiB of `f64`): a model that wide runs on
/// tensor kernels, which hold each array once per block rather than one node per element.
pub(crate) const MAX_ELEMENTS: usize = 1 << 22;
/// Largest index range of `sum(i in a..b, E)` and `[E for i in a..b]`, which lower `E` once per
/// index.
pub(crate) const MAX_INDEX_RANGE: usize = 1 << 17;
/// Largest tensor IR before the model is rejected as too large to compile.
pub(crate) const MAX_NODES: usize = 4_000_000;
/// The number of elements of an array with dimensions `sizes`, exact even where `usize` would
/// overflow (`x[4294967296, 4294967296]`), for the size checks.
pub(crate) fn element_count(sizes: &[usize]) -> u128 {
    sizes.iter().map(|&n| n as u128).product()
}

/// Deepest chain of `fn` calls and let/equation references being lowered at once.
pub(crate) const MAX_DEPTH: usize = 64;

/// Checks a parsed model and lowers it to IR. Never fails: the model is complete only when the
/// diagnostics hold no error. `default_name` names the model when it has no `model` header.
pub fn check(
    model: &ast::Model,
    overrides: &Overrides,
    default_name: &str,
) -> (ir::Model, Diagnostics) {
    let mut checker = Checker::new(model, overrides);
    checker.model.name = default_name.to_string();
    checker.run();
    let Checker { model, diags, .. } = checker;
    (model, diags)
}

/// What a declared name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Symbol {
    Const(usize),
    Param(usize),
    State(usize),
    Input(usize),
    Label(usize),
    Observed(usize),
    Let(usize),
    Fn(usize),
    /// Declared by a declaration that failed to parse: uses are silently `Value::Error`.
    Broken,
}

impl Symbol {
    pub(crate) fn kind_name(self) -> &'static str {
        match self {
            Symbol::Const(_) => "const",
            Symbol::Param(_) => "param",
            Symbol::State(_) => "state",
            Symbol::Input(_) => "input",
            Symbol::Label(_) => "label",
            Symbol::Observed(_) => "observed value",
            Symbol::Let(_) => "let",
            Symbol::Fn(_) => "fn",
            Symbol::Broken => "declaration that failed to parse",
        }
    }
}

/// A lazily lowered definition.
#[derive(Clone, Debug)]
pub(crate) enum Lazy {
    NotStarted,
    InProgress,
    Done(Value),
}

/// Something whose lowering is in progress, for cycle reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    Const(usize),
    Let(usize),
    Equation(usize),
    Fn(usize),
}

pub(crate) struct ConstSlot<'a> {
    pub(crate) name: &'a ast::Ident,
    pub(crate) expr: &'a ast::Expr,
    pub(crate) span: Span,
    pub(crate) value: Lazy,
}

pub(crate) struct LetSlot<'a> {
    pub(crate) name: &'a ast::Ident,
    pub(crate) expr: &'a ast::Expr,
    pub(crate) value: Lazy,
}

pub(crate) struct FnSlot<'a> {
    pub(crate) name: &'a ast::Ident,
    pub(crate) params: &'a [ast::Ident],
    pub(crate) body: &'a ast::Expr,
}

pub(crate) struct StateSlot<'a> {
    pub(crate) name: &'a ast::Ident,
    pub(crate) dims: Option<&'a ast::Dims>,
    pub(crate) init: &'a ast::Expr,
    pub(crate) span: Span,
    pub(crate) shape: Option<Shape>,
    pub(crate) equation: Option<(&'a ast::Ident, &'a ast::Expr, Span)>,
    /// The state's equation exists but failed to parse (already reported).
    pub(crate) broken_equation: bool,
    pub(crate) rhs: Lazy,
}

pub(crate) struct ParamSlot<'a> {
    pub(crate) name: &'a ast::Ident,
    pub(crate) dims: Option<&'a ast::Dims>,
    pub(crate) time: &'a ast::ParamTime,
    pub(crate) init: &'a ast::ParamInit,
    pub(crate) span: Span,
    pub(crate) shape: Option<Shape>,
}

pub(crate) struct ShapedSlot<'a> {
    pub(crate) name: &'a ast::Ident,
    pub(crate) dims: Option<&'a ast::Dims>,
    pub(crate) span: Span,
    pub(crate) shape: Option<Shape>,
}

/// A `fn` call by function index, argument nodes and argument shapes.
pub(crate) type FnCallKey = (usize, Vec<Option<TId>>, Vec<Option<Shape>>);

/// The state of one analysis.
pub(crate) struct Checker<'a> {
    pub(crate) ast: &'a ast::Model,
    pub(crate) overrides: &'a Overrides,
    pub(crate) diags: Diagnostics,
    pub(crate) model: ir::Model,
    pub(crate) symbols: HashMap<String, Symbol>,
    /// Declared value names in declaration order, for suggestions.
    pub(crate) symbol_order: Vec<String>,
    pub(crate) consts: Vec<ConstSlot<'a>>,
    pub(crate) params: Vec<ParamSlot<'a>>,
    pub(crate) states: Vec<StateSlot<'a>>,
    pub(crate) inputs: Vec<ShapedSlot<'a>>,
    pub(crate) labels: Vec<&'a ast::Ident>,
    pub(crate) observed: Vec<ShapedSlot<'a>>,
    pub(crate) lets: Vec<LetSlot<'a>>,
    pub(crate) fns: Vec<FnSlot<'a>>,
    pub(crate) in_progress: Vec<Item>,
    pub(crate) used: HashSet<Symbol>,
    /// Set once the IR outgrows [`MAX_NODES`], so the error is reported once.
    pub(crate) too_large: bool,
    /// Results of `fn` calls by function and argument nodes.
    pub(crate) fn_memo: HashMap<FnCallKey, Value>,
    /// The scalar elements of the few tensor nodes expanded here ([`Checker::elements`]).
    pub(crate) expander: Expander,
}

impl<'a> Checker<'a> {
    fn new(ast: &'a ast::Model, overrides: &'a Overrides) -> Checker<'a> {
        Checker {
            ast,
            overrides,
            diags: Diagnostics::new(),
            model: ir::Model {
                scalar_ir: ir::ScalarIr::Deferred,
                ..ir::Model::default()
            },
            symbols: HashMap::new(),
            symbol_order: Vec::new(),
            consts: Vec::new(),
            params: Vec::new(),
            states: Vec::new(),
            inputs: Vec::new(),
            labels: Vec::new(),
            observed: Vec::new(),
            lets: Vec::new(),
            fns: Vec::new(),
            in_progress: Vec::new(),
            used: HashSet::new(),
            too_large: false,
            fn_memo: HashMap::new(),
            expander: Expander::new(),
        }
    }

    fn run(&mut self) {
        if self.ast.decls.is_empty() && self.ast.broken.is_empty() {
            self.diags.push(Diagnostic::error(
                Span::new(0, 0),
                "the file declares nothing: a model needs at least a `state`, its equation and a `schedule`",
            ));
            return;
        }
        self.collect();
        self.check_overrides();
        self.resolve_shapes();
        self.lower_params();
        self.lower_states();
        self.lower_rest();
        self.check_equations_present();
        self.check_data_binding();
        self.warn_unused();
        // Consts are recorded as they are first evaluated; reports list them as declared.
        self.model.consts.sort_by_key(|c| c.span);
    }

    /// Registers every declared name, reporting duplicates, and files declarations by kind.
    fn collect(&mut self) {
        let ast = self.ast;
        for decl in &ast.decls {
            match &decl.kind {
                DeclKind::Model { name } => self.model.name = name.name.clone(),
                DeclKind::Const { name, value } => {
                    let index = self.consts.len();
                    if self.declare(name, Symbol::Const(index)) {
                        self.consts.push(ConstSlot {
                            name,
                            expr: value,
                            span: decl.span,
                            value: Lazy::NotStarted,
                        });
                    }
                }
                DeclKind::Param {
                    name,
                    dims,
                    time,
                    init,
                } => {
                    let index = self.params.len();
                    if self.declare(name, Symbol::Param(index)) {
                        self.params.push(ParamSlot {
                            name,
                            dims: dims.as_ref(),
                            time,
                            init,
                            span: decl.span,
                            shape: None,
                        });
                    }
                }
                DeclKind::State { name, dims, init } => {
                    let index = self.states.len();
                    if self.declare(name, Symbol::State(index)) {
                        self.states.push(StateSlot {
                            name,
                            dims: dims.as_ref(),
                            init,
                            span: decl.span,
                            shape: None,
                            equation: None,
                            broken_equation: false,
                            rhs: Lazy::NotStarted,
                        });
                    }
                }
                DeclKind::Input { name, dims } => {
                    let index = self.inputs.len();
                    if self.declare(name, Symbol::Input(index)) {
                        self.inputs.push(ShapedSlot {
                            name,
                            dims: dims.as_ref(),
                            span: decl.span,
                            shape: None,
                        });
                    }
                }
                DeclKind::Label { name } => {
                    let index = self.labels.len();
                    if self.declare(name, Symbol::Label(index)) {
                        self.labels.push(name);
                    }
                }
                DeclKind::Observed { name, dims } => {
                    let index = self.observed.len();
                    if self.declare(name, Symbol::Observed(index)) {
                        self.observed.push(ShapedSlot {
                            name,
                            dims: dims.as_ref(),
                            span: decl.span,
                            shape: None,
                        });
                    }
                }
                DeclKind::Let { name, value } => {
                    let index = self.lets.len();
                    if self.declare(name, Symbol::Let(index)) {
                        self.lets.push(LetSlot {
                            name,
                            expr: value,
                            value: Lazy::NotStarted,
                        });
                    }
                }
                DeclKind::Fn { name, params, body } => {
                    if builtins::is_builtin(&name.name) {
                        self.diags.error(
                            name.span,
                            format!(
                                "`{}` is a built-in function; choose another name",
                                name.name
                            ),
                        );
                        continue;
                    }
                    let mut seen = HashSet::new();
                    for p in params {
                        if !seen.insert(p.name.as_str()) {
                            self.diags.error(
                                p.span,
                                format!(
                                    "`{}` appears twice among the arguments of `{}`",
                                    p.name, name.name
                                ),
                            );
                        }
                    }
                    let index = self.fns.len();
                    if self.declare(name, Symbol::Fn(index)) {
                        self.fns.push(FnSlot { name, params, body });
                    }
                }
                _ => {}
            }
        }
        for broken in &ast.broken {
            let Some(name) = &broken.name else { continue };
            if broken.keyword == "equation" {
                if let Some(Symbol::State(i)) = self.symbols.get(&name.name) {
                    self.states[*i].broken_equation = true;
                }
            } else if !self.symbols.contains_key(&name.name) {
                self.symbols.insert(name.name.clone(), Symbol::Broken);
            }
        }
        // Equations are attached after all states are known, so order does not matter.
        for decl in &ast.decls {
            if let DeclKind::Equation { state, rhs } = &decl.kind {
                match self.symbols.get(&state.name) {
                    Some(Symbol::State(i)) => {
                        let slot = &mut self.states[*i];
                        if slot.equation.is_some() {
                            self.diags.push(
                                Diagnostic::error(
                                    decl.span,
                                    format!("state `{}` has a second equation", state.name),
                                )
                                .with_help("each state has exactly one equation; remove or merge one of them"),
                            );
                        } else {
                            slot.equation = Some((state, rhs, decl.span));
                        }
                    }
                    Some(Symbol::Broken) => {}
                    Some(other) => {
                        self.diags.error(
                            state.span,
                            format!(
                                "`d{}/dt` gives an equation for `{}`, which is a {}, not a state",
                                state.name,
                                state.name,
                                other.kind_name()
                            ),
                        );
                    }
                    None => {
                        let states: Vec<&str> =
                            self.states.iter().map(|s| s.name.name.as_str()).collect();
                        let mut d = Diagnostic::error(
                            state.span,
                            format!(
                                "`d{}/dt` gives an equation for `{}`, which is not declared",
                                state.name, state.name
                            ),
                        );
                        if let Some(s) = suggest(&state.name, states.iter().copied()) {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        } else {
                            d = d.with_help(format!(
                                "declare it first: `state {} = ...`",
                                state.name
                            ));
                        }
                        self.diags.push(d);
                    }
                }
            }
        }
    }

    /// Adds a name to the symbol table; reports and returns false on a clash.
    fn declare(&mut self, name: &ast::Ident, symbol: Symbol) -> bool {
        if name.name == "t" || name.name == "pi" {
            self.diags.error(
                name.span,
                format!(
                    "`{}` is reserved (the {}); choose another name",
                    name.name,
                    if name.name == "t" {
                        "time variable"
                    } else {
                        "constant π"
                    }
                ),
            );
            return false;
        }
        if let Some(previous) = self.symbols.get(&name.name) {
            self.diags.error(
                name.span,
                format!(
                    "`{}` is declared twice (first as a {})",
                    name.name,
                    previous.kind_name()
                ),
            );
            return false;
        }
        self.symbols.insert(name.name.clone(), symbol);
        self.symbol_order.push(name.name.clone());
        true
    }

    /// `--set` must name a const or a param.
    fn check_overrides(&mut self) {
        for (name, value) in &self.overrides.values {
            match self.symbols.get(name) {
                Some(Symbol::Const(_)) | Some(Symbol::Param(_)) => {}
                Some(other) => self.diags.push(Diagnostic::global_error(format!(
                    "`--set {name}={value}`: `{name}` is a {}; only a const or a param can be set",
                    other.kind_name()
                ))),
                None => {
                    let candidates: Vec<&str> = self
                        .symbol_order
                        .iter()
                        .filter(|n| matches!(self.symbols[*n], Symbol::Const(_) | Symbol::Param(_)))
                        .map(String::as_str)
                        .collect();
                    let mut d = Diagnostic::global_error(format!(
                        "`--set {name}={value}`: the model has no const or param named `{name}`"
                    ));
                    if let Some(s) = suggest(name, candidates.iter().copied()) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    self.diags.push(d);
                }
            }
        }
    }

    /// Evaluates the dimensions of every declared array.
    fn resolve_shapes(&mut self) {
        for i in 0..self.params.len() {
            let shape = self.dims_shape(self.params[i].dims);
            self.params[i].shape = shape;
        }
        for i in 0..self.states.len() {
            let shape = self.dims_shape(self.states[i].dims);
            self.states[i].shape = shape;
        }
        for i in 0..self.inputs.len() {
            let shape = self.dims_shape(self.inputs[i].dims);
            self.inputs[i].shape = shape;
        }
        for i in 0..self.observed.len() {
            let shape = self.dims_shape(self.observed[i].dims);
            self.observed[i].shape = shape;
        }
        let entry = |slot: &ShapedSlot| ir::Input {
            name: slot.name.name.clone(),
            shape: slot.shape.unwrap_or(Shape::Scalar),
            span: slot.span,
        };
        self.model.inputs = self.inputs.iter().map(entry).collect();
        self.model.observed = self.observed.iter().map(entry).collect();
        self.model.labels = self
            .labels
            .iter()
            .map(|name| ir::Label {
                name: name.name.clone(),
                span: name.span,
                classes: None,
            })
            .collect();
    }

    fn dims_shape(&mut self, dims: Option<&'a ast::Dims>) -> Option<Shape> {
        let Some(dims) = dims else {
            return Some(Shape::Scalar);
        };
        let mut sizes = Vec::new();
        for d in &dims.dims {
            sizes.push(self.const_usize(d, "a dimension")?);
        }
        let shape = match sizes.as_slice() {
            [n] => Shape::Vector(*n),
            [m, n] => Shape::Matrix(*m, *n),
            _ => {
                self.diags.error(
                    dims.span,
                    format!("an array has one or two dimensions, found {}", sizes.len()),
                );
                return None;
            }
        };
        let elements = element_count(&sizes);
        if elements > MAX_ELEMENTS as u128 {
            self.diags.error(
                dims.span,
                format!(
                    "an array of {elements} elements is larger than the limit of {MAX_ELEMENTS}"
                ),
            );
            return None;
        }
        Some(shape)
    }

    /// Builds the IR parameter list: shapes, time dependence and initial values.
    fn lower_params(&mut self) {
        for i in 0..self.params.len() {
            let slot = &self.params[i];
            let (name, time, init, span) = (slot.name, slot.time, slot.init, slot.span);
            let shape = slot.shape.unwrap_or(Shape::Scalar);
            let time = match time {
                ast::ParamTime::Constant => ir::ParamTime::Constant,
                ast::ParamTime::PerLayer(_) => ir::ParamTime::PerLayer,
                ast::ParamTime::Knots { times, span } => {
                    let mut values = Vec::new();
                    for t in times {
                        if let Some(v) = self.const_number(t, "a knot time") {
                            values.push(v);
                        }
                    }
                    if values.len() < 2 {
                        self.diags
                            .error(*span, "`on knots(...)` needs at least two knot times");
                    } else if values.windows(2).any(|w| w[0] >= w[1]) {
                        self.diags.error(*span, "knot times must increase strictly");
                    }
                    ir::ParamTime::Knots(values)
                }
            };
            let init = match self.overrides.get(&name.name) {
                Some(v) => ir::ParamInit::Values(vec![v; shape.len()]),
                None => self.param_init(init, shape, &name.name),
            };
            self.model.params.push(ir::Param {
                name: name.name.clone(),
                shape,
                time,
                init,
                span,
            });
        }
    }

    fn param_init(&mut self, init: &'a ast::ParamInit, shape: Shape, name: &str) -> ir::ParamInit {
        match init {
            ast::ParamInit::Default => ir::ParamInit::Values(vec![0.0; shape.len()]),
            ast::ParamInit::Value(expr) => {
                let value = self.lower_const_value(expr, "the initial value of a param");
                match value {
                    Some((s, values)) if s == shape => ir::ParamInit::Values(values),
                    Some((Shape::Scalar, values)) => {
                        ir::ParamInit::Values(vec![values[0]; shape.len()])
                    }
                    Some((s, _)) => {
                        self.diags.error(
                            expr.span,
                            format!("param `{name}` is {} but its initial value is {}", shape, s),
                        );
                        ir::ParamInit::Values(vec![0.0; shape.len()])
                    }
                    None => ir::ParamInit::Values(vec![0.0; shape.len()]),
                }
            }
            ast::ParamInit::Dist(call) => config::distribution(self, call),
        }
    }

    /// Lowers initial values and right-hand sides of all states.
    fn lower_states(&mut self) {
        for i in 0..self.states.len() {
            let slot = &self.states[i];
            let (name, init_expr, span) = (slot.name, slot.init, slot.span);
            let shape = slot.shape;
            let init = self.lower_top(init_expr);
            let init = self.conform(
                init,
                shape,
                init_expr.span,
                &format!("the initial value of state `{}`", name.name),
            );
            if let Some(id) = init {
                self.require_leaves(&[id], init_expr.span, "a state's initial value", |l| {
                    matches!(l, Leaf::Param(_) | Leaf::Input(_))
                });
            }
            let rhs = match self.equation_value(i, None) {
                Value::Error => None,
                v => {
                    let eq = self.states[i]
                        .equation
                        .map(|(_, e, _)| e.span)
                        .unwrap_or(span);
                    self.conform(
                        v,
                        shape,
                        eq,
                        &format!("the equation of state `{}`", name.name),
                    )
                }
            };
            let equation_span = self.states[i].equation.map_or(span, |(_, _, s)| s);
            if let Some(id) = rhs {
                self.require_leaves(&[id], equation_span, "an equation", |l| {
                    !matches!(l, Leaf::Observed(_) | Leaf::Label(_))
                });
            }
            let shape = shape.unwrap_or(Shape::Scalar);
            let init = init.unwrap_or_else(|| self.model.tensors.zeros(shape));
            let rhs = rhs.unwrap_or_else(|| self.model.tensors.zeros(shape));
            self.model.tensor_roots.init.push(init);
            self.model.tensor_roots.rhs.push(rhs);
            self.model.states.push(ir::State {
                name: name.name.clone(),
                shape,
                init: Vec::new(),
                rhs: Vec::new(),
                span,
                equation_span,
            });
        }
    }

    /// `event NAME when COND crosses 0 [rising|falling] -> ACTION`: the condition is a scalar of
    /// states, parameters, inputs and time; each jump target is a state (whole or one element)
    /// assigned a value of its shape (a scalar broadcasts over a whole state).
    fn lower_event(
        &mut self,
        name: &ast::Ident,
        cond: &'a ast::Expr,
        level: (f64, Span),
        direction: ast::Direction,
        action: &'a ast::EventAction,
        span: Span,
    ) {
        let mut ok = true;
        if level.0 != 0.0 {
            self.diags.push(
                Diagnostic::error(level.1, "an event's condition crosses 0")
                    .with_help("move the level into the condition: `when EXPR - LEVEL crosses 0`"),
            );
            ok = false;
        }
        let cond_id = match self.lower_top(cond) {
            Value::Tensor {
                shape: Shape::Scalar,
                id,
            } => {
                ok &= self.require_leaves(&[id], cond.span, "an event's condition", |l| {
                    !matches!(l, Leaf::Observed(_) | Leaf::Label(_))
                });
                Some(id)
            }
            Value::Tensor { shape, .. } => {
                self.diags.error(
                    cond.span,
                    format!("an event's condition must be a scalar, found {shape}"),
                );
                None
            }
            Value::Error => None,
        };
        let mut targets = Vec::new();
        let mut jumps = Vec::new();
        let mut seen: Vec<(usize, usize, Span)> = Vec::new();
        let terminate = matches!(action, ast::EventAction::Terminate);
        if let ast::EventAction::Jump(assigns) = action {
            for a in assigns {
                let i = match self.symbols.get(&a.target.name) {
                    Some(Symbol::State(i)) => *i,
                    Some(Symbol::Broken) => {
                        ok = false;
                        continue;
                    }
                    Some(other) => {
                        self.diags.error(
                            a.target.span,
                            format!(
                                "an event assigns states; `{}` is a {}",
                                a.target.name,
                                other.kind_name()
                            ),
                        );
                        ok = false;
                        continue;
                    }
                    None => {
                        let states: Vec<&str> =
                            self.model.states.iter().map(|s| s.name.as_str()).collect();
                        let mut d = Diagnostic::error(
                            a.target.span,
                            format!("unknown state `{}` in event `{}`", a.target.name, name.name),
                        );
                        if let Some(g) = crate::diag::suggest(&a.target.name, states) {
                            d = d.with_help(format!("did you mean `{g}`?"));
                        }
                        self.diags.push(d);
                        ok = false;
                        continue;
                    }
                };
                let Some(state) = self.model.states.get(i) else {
                    ok = false;
                    continue;
                };
                let state_shape = state.shape;
                let base: usize = self.model.states[..i].iter().map(|s| s.shape.len()).sum();
                let (offset, len, shape) = match &a.index {
                    None => (base, state_shape.len(), state_shape),
                    Some((idx, ispan)) => {
                        let dims = state_shape.dims();
                        if idx.len() != dims.len() {
                            let message = if dims.is_empty() {
                                format!(
                                    "state `{}` is a scalar: assign it whole, without an index",
                                    a.target.name
                                )
                            } else {
                                format!(
                                    "state `{}` is {state_shape}: an element needs {} {}",
                                    a.target.name,
                                    dims.len(),
                                    if dims.len() == 1 { "index" } else { "indices" }
                                )
                            };
                            self.diags.error(*ispan, message);
                            ok = false;
                            continue;
                        }
                        let mut flat = 0;
                        let mut good = true;
                        for (e, &d) in idx.iter().zip(&dims) {
                            match self.const_index(e) {
                                Some(v) if v < d => flat = flat * d + v,
                                Some(v) => {
                                    self.diags.error(
                                        e.span,
                                        format!("index {v} is out of range for a dimension of {d}"),
                                    );
                                    good = false;
                                }
                                None => good = false,
                            }
                        }
                        if !good {
                            ok = false;
                            continue;
                        }
                        (base + flat, 1, Shape::Scalar)
                    }
                };
                if let Some(&(_, _, first)) = seen
                    .iter()
                    .find(|&&(o, l, _)| o < offset + len && offset < o + l)
                {
                    let _ = first;
                    self.diags.error(
                        a.span,
                        format!("event `{}` assigns `{}` twice", name.name, a.target.name),
                    );
                    ok = false;
                    continue;
                }
                seen.push((offset, len, a.span));
                let v = self.lower_top(&a.value);
                let what = format!("the value assigned to `{}`", a.target.name);
                let Some(id) = self.conform(v, Some(shape), a.value.span, &what) else {
                    ok = false;
                    continue;
                };
                ok &= self.require_leaves(&[id], a.value.span, "an event's assignment", |l| {
                    !matches!(l, Leaf::Observed(_) | Leaf::Label(_))
                });
                targets.push((offset, len));
                jumps.push(id);
            }
        }
        let Some(cond_id) = cond_id else { return };
        if !ok {
            return;
        }
        self.model.tensor_roots.event_conds.push(cond_id);
        self.model.tensor_roots.event_jumps.extend(jumps);
        self.model.events.push(ir::Event {
            name: name.name.clone(),
            direction: match direction {
                ast::Direction::Both => 0,
                ast::Direction::Rising => 1,
                ast::Direction::Falling => -1,
            },
            terminate,
            targets,
            cond: ExprId::DEFERRED,
            jumps: Vec::new(),
            span,
        });
    }

    /// A value made to fit a declared shape: equal shapes pass, a scalar broadcasts.
    fn conform(
        &mut self,
        value: Value,
        shape: Option<Shape>,
        span: Span,
        what: &str,
    ) -> Option<TId> {
        let shape = shape?;
        match value {
            Value::Error => None,
            Value::Tensor { shape: s, id } if s == shape => Some(id),
            Value::Tensor {
                shape: Shape::Scalar,
                id,
            } => Some(self.model.tensors.fill(id, shape)),
            Value::Tensor { shape: s, .. } => {
                self.diags
                    .error(span, format!("{what} is {s} but the state is {shape}"));
                None
            }
        }
    }

    /// Costs, metrics, outputs, lets, schedule, data and training.
    fn lower_rest(&mut self) {
        let ast = self.ast;
        let mut schedule_seen = false;
        let mut train_seen = false;
        let mut output_names: HashSet<&str> = HashSet::new();
        let mut metric_names: HashSet<&str> = HashSet::new();
        let mut event_names: HashSet<&str> = HashSet::new();
        for decl in &ast.decls {
            match &decl.kind {
                DeclKind::Cost { kind, value } => self.lower_cost(kind, value, decl.span),
                DeclKind::Event {
                    name,
                    cond,
                    level,
                    direction,
                    action,
                } => {
                    if !event_names.insert(&name.name) {
                        self.diags.error(
                            name.span,
                            format!("event `{}` is declared twice", name.name),
                        );
                        continue;
                    }
                    self.lower_event(name, cond, *level, *direction, action, decl.span);
                }
                DeclKind::Metric { name, value } | DeclKind::Output { name, value } => {
                    let is_metric = matches!(decl.kind, DeclKind::Metric { .. });
                    let names = if is_metric {
                        &mut metric_names
                    } else {
                        &mut output_names
                    };
                    if !names.insert(&name.name) {
                        self.diags.error(
                            name.span,
                            format!(
                                "{} `{}` is declared twice",
                                if is_metric { "metric" } else { "output" },
                                name.name
                            ),
                        );
                        continue;
                    }
                    let v = self.lower_top(value);
                    let Value::Tensor { shape, id } = v else {
                        continue;
                    };
                    if is_metric && shape != Shape::Scalar {
                        self.diags.error(
                            value.span,
                            format!("a metric is averaged over samples and must be a scalar, found {shape}"),
                        );
                        continue;
                    }
                    self.require_leaves(
                        &[id],
                        value.span,
                        if is_metric { "a metric" } else { "an output" },
                        |l| !matches!(l, Leaf::Observed(_)),
                    );
                    let out = ir::Output {
                        name: name.name.clone(),
                        shape,
                        value: Vec::new(),
                        span: decl.span,
                    };
                    if is_metric {
                        self.model.metrics.push(out);
                        self.model.tensor_roots.metrics.push(id);
                    } else {
                        self.model.outputs.push(out);
                        self.model.tensor_roots.outputs.push(id);
                    }
                }
                DeclKind::Schedule { call } => {
                    if schedule_seen {
                        self.diags
                            .error(decl.span, "a model has one schedule; this is the second");
                        continue;
                    }
                    schedule_seen = true;
                    self.model.schedule = config::schedule(self, call, decl.span);
                }
                DeclKind::Train { optimizer } => {
                    if train_seen {
                        self.diags.error(
                            decl.span,
                            "a model has one `train` declaration; this is the second",
                        );
                        continue;
                    }
                    train_seen = true;
                    self.model.train = config::train(self, optimizer, decl.span);
                }
                DeclKind::Data { name, source } => {
                    if self.model.data.iter().any(|d| d.name == name.name) {
                        self.diags.error(
                            name.span,
                            format!("data block `{}` is declared twice", name.name),
                        );
                        continue;
                    }
                    if let Some((source, columns, input_columns)) =
                        config::data_source(self, source)
                    {
                        self.model.data.push(ir::DataBlock {
                            name: name.name.clone(),
                            source,
                            columns,
                            input_columns,
                            span: decl.span,
                        });
                    }
                }
                _ => {}
            }
        }
        // Lets nobody used are still checked, so their errors are not hidden.
        for i in 0..self.lets.len() {
            if matches!(self.lets[i].value, Lazy::NotStarted) {
                let _ = self.let_value(i, self.lets[i].name.span);
            }
        }
        if !schedule_seen && !self.states.is_empty() && !self.broken("schedule") {
            let span = self.states[0].span;
            self.diags.push(
                Diagnostic::error(span, "the model has states but no schedule")
                    .with_help("add one, e.g. `schedule rk4(t = [0, 1], steps = 10)`"),
            );
        }
        if let (true, false, Some(first)) = (
            self.states.is_empty(),
            self.broken("state"),
            self.ast.decls.first(),
        ) {
            let span = first.span;
            self.diags.push(
                Diagnostic::error(span, "the model declares no state").with_help(
                    "declare one with its equation, e.g. `state x = 1` and `dx/dt = -x`",
                ),
            );
        }
    }

    fn lower_cost(&mut self, kind: &ast::Ident, value: &'a ast::Expr, span: Span) {
        let kinds = [
            ("terminal", CostKind::Terminal),
            ("running", CostKind::Running),
            ("penalty", CostKind::Penalty),
            ("observed", CostKind::Observed),
        ];
        let Some(&(_, cost_kind)) = kinds.iter().find(|(n, _)| *n == kind.name) else {
            let mut d = Diagnostic::error(
                kind.span,
                format!(
                    "unknown cost kind `{}`; a cost is terminal, running, penalty or observed",
                    kind.name
                ),
            );
            if let Some(s) = suggest(&kind.name, kinds.iter().map(|(n, _)| *n)) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            self.diags.push(d);
            return;
        };
        let v = self.lower_top(value);
        let Value::Tensor { shape, id } = v else {
            return;
        };
        if shape != Shape::Scalar {
            self.diags.push(
                Diagnostic::error(
                    value.span,
                    format!("a cost must be a scalar, found {shape}"),
                )
                .with_help("reduce it, e.g. with sum(...), sumsq(...) or mean(...)"),
            );
            return;
        }
        let allowed: fn(&Leaf) -> bool = match cost_kind {
            CostKind::Penalty => |l| matches!(l, Leaf::Param(_)),
            CostKind::Observed => |_| true,
            CostKind::Terminal | CostKind::Running => |l| !matches!(l, Leaf::Observed(_)),
        };
        let what = match cost_kind {
            CostKind::Penalty => "a penalty cost (params only)",
            CostKind::Observed => "an observed cost",
            CostKind::Terminal => "a terminal cost",
            CostKind::Running => "a running cost",
        };
        self.require_leaves(&[id], value.span, what, allowed);
        if cost_kind == CostKind::Observed && self.observed.is_empty() {
            self.diags.error(
                span,
                "an observed cost needs `observed NAME[DIMS]` and a `series` data block",
            );
        }
        self.model.tensor_roots.costs.push(id);
        self.model.costs.push(ir::Cost {
            kind: cost_kind,
            value: ExprId::DEFERRED,
            span,
        });
    }

    /// The scalar elements of a tensor node, expanding it into the scalar pool on first use.
    /// Only for the small expressions that must be scalar IR straight after `check` (LM's `k`,
    /// `uniform`'s label, which data generation evaluates); the model's roots wait for
    /// `ir::prepare`, which rebuilds the pool with these in their place.
    pub(crate) fn elements(&mut self, id: TId) -> Vec<ExprId> {
        self.expander
            .expand(&self.model.tensors, &mut self.model.pool, id)
    }

    /// Reports the first leaf reachable from `roots` that `allowed` rejects.
    pub(crate) fn require_leaves(
        &mut self,
        roots: &[TId],
        span: Span,
        what: &str,
        allowed: impl Fn(&Leaf) -> bool,
    ) -> bool {
        if let Some(leaf) = self.find_leaf(roots, |l| !allowed(l)) {
            let name = self.leaf_name(leaf);
            self.diags
                .error(span, format!("{what} cannot depend on {name}"));
            return false;
        }
        true
    }

    /// The first leaf reachable from `roots` (in leaf order) that `pred` accepts.
    pub(crate) fn find_leaf(&self, roots: &[TId], pred: impl Fn(&Leaf) -> bool) -> Option<Leaf> {
        let pool = &self.model.tensors;
        let mut seen = HashSet::new();
        let mut stack: Vec<TId> = roots.to_vec();
        let mut found: Option<Leaf> = None;
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            match pool.node(id) {
                TNode::Leaf(l) if pred(l) => {
                    if found.is_none_or(|f| *l < f) {
                        found = Some(*l);
                    }
                }
                node => node.for_each_operand(|c| stack.push(c)),
            }
        }
        found
    }

    /// How a leaf reads in a message: "state `x`", "the time `t`".
    pub(crate) fn leaf_name(&self, leaf: Leaf) -> String {
        match leaf {
            Leaf::Time => "the time `t`".to_string(),
            Leaf::State(i) => format!("state `{}`", self.states[i as usize].name.name),
            Leaf::Param(i) => format!("param `{}`", self.params[i as usize].name.name),
            Leaf::Input(i) => format!("input `{}`", self.inputs[i as usize].name.name),
            Leaf::Label(i) => format!("label `{}`", self.labels[i as usize].name),
            Leaf::Observed(i) => {
                format!("observed value `{}`", self.observed[i as usize].name.name)
            }
            Leaf::StateTangent(_) | Leaf::ParamTangent(_) | Leaf::Cotangent(_) => {
                "a derivative direction".to_string()
            }
        }
    }

    fn check_equations_present(&mut self) {
        for i in 0..self.states.len() {
            if self.states[i].equation.is_none() && !self.states[i].broken_equation {
                let name = &self.states[i].name.name;
                self.diags.push(
                    Diagnostic::error(
                        self.states[i].name.span,
                        format!("state `{name}` has no equation"),
                    )
                    .with_help(format!("add one, e.g. `d{name}/dt = ...`")),
                );
            }
        }
    }

    /// Inputs and observed values need a data block that provides them: inputs come from a
    /// generator or a `csv` block, observed values from a `series` block. Without one they
    /// would read zeros, so the loss would be computed against nothing.
    fn check_data_binding(&mut self) {
        // A data block that failed to lower was reported; what it would bind is unknown.
        let declared = self
            .ast
            .decls
            .iter()
            .filter(|d| matches!(d.kind, DeclKind::Data { .. }))
            .count();
        let all_lowered = declared == self.model.data.len() && !self.broken("data");
        let is_series = |b: &ir::DataBlock| matches!(b.source, ir::DataSource::Series { .. });
        let gives_inputs = self
            .model
            .data
            .iter()
            .any(|b| !matches!(b.source, ir::DataSource::Series { input: None, .. }));
        let gives_observed = self.model.data.iter().any(is_series);
        if let (Some(first), true, false) = (self.inputs.first(), all_lowered, gives_inputs) {
            let mut d = Diagnostic::error(
                first.span,
                format!("input `{}` is not bound to any data", first.name.name),
            );
            d = if gives_observed {
                d.with_help("a `series` binds observed values, and inputs only with `input = A..B` columns: add them, or a `csv` or generated data block for the inputs")
            } else {
                d.with_help(
                    "add a data block, e.g. `data train = moons(n = 512, noise = 0.1, seed = 1)`",
                )
            };
            self.diags.push(d);
        }
        if let (Some(first), true, false) = (self.observed.first(), all_lowered, gives_observed) {
            self.diags.push(
                Diagnostic::error(
                    first.span,
                    format!(
                        "observed value `{}` is not bound to any data",
                        first.name.name
                    ),
                )
                .with_help("observed values come from a series, e.g. `data obs = series(\"obs.csv\", t = 0, values = 1..3)`"),
            );
        }
        config::check_data_shapes(self);
    }

    /// Warns of params and lets nothing reads. A name written in a declaration that failed to
    /// parse, or suggested for an unknown name, may well be used once that error is fixed: the
    /// error already points there, so a warning would only add noise.
    fn warn_unused(&mut self) {
        let mentioned = |name: &str| {
            self.ast
                .broken
                .iter()
                .any(|b| b.mentions.iter().any(|m| m == name))
        };
        for (i, p) in self.params.iter().enumerate() {
            if !self.used.contains(&Symbol::Param(i)) && !mentioned(&p.name.name) {
                self.diags.warning(
                    p.name.span,
                    format!("param `{}` is never used", p.name.name),
                );
            }
        }
        for (i, l) in self.lets.iter().enumerate() {
            if !self.used.contains(&Symbol::Let(i)) && !mentioned(&l.name.name) {
                self.diags
                    .warning(l.name.span, format!("let `{}` is never used", l.name.name));
            }
        }
    }

    /// Whether `expr` reads, directly or through consts, lets and `fn` bodies, a const that
    /// `--set` overrides. A `fn` parameter that shadows such a const counts too: the answer
    /// only softens an error into a warning, so it may err on that side.
    pub(crate) fn reads_override(&self, expr: &ast::Expr) -> bool {
        fn walk(checker: &Checker, e: &ast::Expr, seen: &mut HashSet<Symbol>) -> bool {
            use ast::ExprKind as E;
            let mut go = |e: &ast::Expr| walk(checker, e, seen);
            match &e.kind {
                E::Number(_) | E::Str(_) => false,
                E::Name(name) => {
                    let Some(&symbol) = checker.symbols.get(name) else {
                        return false;
                    };
                    // A definition cycle is reported elsewhere; the walk must only end.
                    if !seen.insert(symbol) {
                        return false;
                    }
                    match symbol {
                        Symbol::Const(i) => {
                            checker.overrides.get(name).is_some()
                                || walk(checker, checker.consts[i].expr, seen)
                        }
                        Symbol::Let(i) => walk(checker, checker.lets[i].expr, seen),
                        _ => false,
                    }
                }
                E::Binary { lhs, rhs, .. } => go(lhs) || go(rhs),
                E::Neg(x) | E::Transpose(x) => go(x),
                E::Call(call) => {
                    let body = match checker.symbols.get(&call.name.name) {
                        Some(&Symbol::Fn(i)) if seen.insert(Symbol::Fn(i)) => {
                            Some(checker.fns[i].body)
                        }
                        _ => None,
                    };
                    call.args.iter().any(|a| walk(checker, &a.value, seen))
                        || body.is_some_and(|b| walk(checker, b, seen))
                }
                E::Index { base, items } => {
                    go(base)
                        || items.iter().any(|item| match item {
                            ast::IndexItem::Single(x) => walk(checker, x, seen),
                            ast::IndexItem::Slice { start, end, .. } => {
                                start.iter().chain(end).any(|x| walk(checker, x, seen))
                            }
                        })
                }
                E::List(items) => items.iter().any(go),
                E::IndexSum { binder, body } | E::Comprehension { binder, body } => {
                    go(&binder.start) || go(&binder.end) || go(body)
                }
                E::Range { start, end } => go(start) || go(end),
            }
        }
        !self.overrides.values.is_empty() && walk(self, expr, &mut HashSet::new())
    }

    /// Whether a declaration with this keyword failed to parse.
    fn broken(&self, keyword: &str) -> bool {
        self.ast.broken.iter().any(|b| b.keyword == keyword)
    }

    /// Reports (once) and returns true when the IR has outgrown what can be compiled.
    pub(crate) fn check_size(&mut self, span: Span) -> bool {
        if self.model.pool.len().max(self.model.tensors.len()) > MAX_NODES {
            if !self.too_large {
                self.too_large = true;
                self.diags.error(
                    span,
                    format!("the model is too large: its IR exceeds {MAX_NODES} nodes"),
                );
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_parse_or_explain() {
        assert_eq!(Overrides::parse_one("d=3"), Ok(("d".to_string(), 3.0)));
        assert_eq!(
            Overrides::parse_one(" k = -0.5 "),
            Ok(("k".to_string(), -0.5))
        );
        assert!(Overrides::parse_one("d")
            .unwrap_err()
            .contains("NAME=VALUE"));
        assert!(Overrides::parse_one("d=x")
            .unwrap_err()
            .contains("not a number"));
        assert!(Overrides::parse_one("=2").is_err());
        assert!(Overrides::parse_one("d=inf").is_err());
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;
    use crate::diag::{Severity, SourceFile};

    fn check_text(text: &str, set: &[(&str, f64)]) -> (ir::Model, Diagnostics) {
        let file = SourceFile::new("t.node", text);
        let overrides = Overrides {
            values: set.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            ..Overrides::default()
        };
        crate::check_source(&file, &overrides, "t")
    }

    fn errors(text: &str) -> Vec<String> {
        let (_, diags) = check_text(text, &[]);
        diags
            .sorted()
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.message)
            .collect()
    }

    const HEAD: &str = "schedule rk4(t = [0, 1], steps = 4)\n";

    #[test]
    fn dimensions_are_const_expressions_and_set_applies_first() {
        let text = format!("const d = 1 + 2\nstate x[d] = zeros(d)\ndx/dt = -x\n{HEAD}");
        let (model, diags) = check_text(&text, &[]);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(model.states[0].shape, Shape::Vector(3));
        let (model, diags) = check_text(&text, &[("d", 5.0)]);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(model.states[0].shape, Shape::Vector(5));
    }

    #[test]
    fn shapes_follow_the_spec_table() {
        let text = format!(
            "param A[2, 3] = 1\nparam v[3] = 1\nstate x[2] = [0, 0]\n\
             let row = v' * v\nlet m = A * A'\nlet s = A[:, 1:3]\nlet c = A[1]\n\
             dx/dt = m * x + s * [row, 1] + [c[0], trace(m)] + diag(m)\n{HEAD}"
        );
        let (_, diags) = check_text(&text, &[]);
        assert!(!diags.has_errors(), "{:?}", diags.sorted());
    }

    #[test]
    fn functions_are_shape_polymorphic() {
        let text = format!("fn sq(a) = a .* a\nstate x[2] = [1, 2]\nstate y = 1\ndx/dt = -sq(x)\ndy/dt = -sq(y)\n{HEAD}");
        assert_eq!(errors(&text), Vec::<String>::new());
    }

    #[test]
    fn independent_semantic_errors_are_all_reported() {
        let text =
            format!("state x = 1\nstate y[2] = [1, 2]\ndx/dt = -x + nope\ndy/dt = y * y\n{HEAD}");
        let errs = errors(&text);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("unknown name `nope`"));
        assert!(errs[1].contains("cannot multiply [2] by [2]"));
    }

    #[test]
    fn an_error_value_silences_follow_on_errors() {
        let text = format!("state x[2] = [1, 2]\ndx/dt = tanh(nope) * x + x\n{HEAD}");
        assert_eq!(errors(&text).len(), 1);
    }

    #[test]
    fn unused_params_and_lets_warn_without_failing() {
        let text = format!("param k = 1\nlet unused = 2\nstate x = 1\ndx/dt = -x\n{HEAD}");
        let (_, diags) = check_text(&text, &[]);
        assert!(!diags.has_errors());
        let warnings: Vec<String> = diags.sorted().into_iter().map(|d| d.message).collect();
        assert_eq!(
            warnings,
            ["param `k` is never used", "let `unused` is never used"]
        );
    }

    #[test]
    fn a_typo_in_the_only_use_of_a_name_is_one_error_and_no_warning() {
        // `rate` is read only through the typo `rtae`: the error suggests it, and no "never
        // used" warning follows for the name the typo hid.
        let text = format!(
            "param rate = 1\nlet half = rate / 2\nstate x = 1\ndx/dt = -rtae * x - hlaf\n{HEAD}"
        );
        let (_, diags) = check_text(&text, &[]);
        let messages: Vec<String> = diags.sorted().into_iter().map(|d| d.message).collect();
        assert_eq!(messages, ["unknown name `rtae`", "unknown name `hlaf`"]);
        // A use on a line that fails to parse hides the name too.
        let text = format!("param k = 1\nstate x = 1\ndx/dt = -k * * x\n{HEAD}");
        let (_, diags) = check_text(&text, &[]);
        let sorted = diags.sorted();
        assert_eq!(
            sorted.len(),
            1,
            "{:?}",
            sorted.iter().map(|d| &d.message).collect::<Vec<_>>()
        );
        assert!(diags.has_errors());
        // A name that nothing mentions still warns next to an unrelated error.
        let text = format!("param k = 1\nstate x = 1\ndx/dt = -nope * x\n{HEAD}");
        let (_, diags) = check_text(&text, &[]);
        let messages: Vec<String> = diags.sorted().into_iter().map(|d| d.message).collect();
        assert_eq!(messages, ["param `k` is never used", "unknown name `nope`"]);
    }

    #[test]
    fn calculus_checks_what_it_differentiates_by() {
        let base = "param w[2] = 1\nstate z[2] = [1, 2]\n";
        let ok = format!("{base}dz/dt = -grad(sumsq(w .* z), z) + jacobian(w .* z, z) * z + div(z, z) + grad(t * sum(z), t)\n{HEAD}");
        assert_eq!(errors(&ok), Vec::<String>::new());
        let bad = format!("{base}dz/dt = grad(sum(z), 2 * z)\n{HEAD}");
        assert!(errors(&bad)[0].contains("differentiates with respect to"));
    }

    /// `argmax` is the index of the first maximum, and `cross_entropy` is `logsumexp(z) − z[y]`
    /// for an integer label `y`: the two a classifier's metric and loss need.
    #[test]
    fn argmax_and_cross_entropy_read_the_class() {
        let text = format!(
            "input z[4]\nlabel y\nstate x = 0\ndx/dt = -x\n{HEAD}\
             metric i = argmax(z)\nmetric hit = argmax(z) == y\nmetric ce = cross_entropy(z, y)\n\
             metric one = argmax([x])\ndata train = csv(\"d.csv\", input = 0..4, label = 4)\n"
        );
        let (mut model, diags) = check_text(&text, &[]);
        assert!(!diags.has_errors(), "{:?}", diags.sorted());
        ir::expand_scalar(&mut model);
        let roots: Vec<ExprId> = model.metrics.iter().map(|m| m.value[0]).collect();
        let at = |z: [f64; 4], y: f64| {
            let point = ir::eval::Point {
                states: vec![vec![0.5]],
                inputs: vec![z.to_vec()],
                labels: vec![y],
                ..Default::default()
            };
            point.eval(&model.pool, &roots)
        };
        let lse = |z: [f64; 4]| z.iter().map(|v| v.exp()).sum::<f64>().ln();
        for (z, i) in [
            ([3.0, 1.0, 2.0, 0.0], 0.0),
            ([-1.0, 1.0, 2.0, 0.5], 2.0),
            ([0.0, 0.0, 0.0, 4.0], 3.0),
            ([1.0, 5.0, 5.0, -2.0], 1.0), // ties: the first maximum
            ([2.0, 2.0, 2.0, 2.0], 0.0),
        ] {
            for y in 0..4 {
                let v = at(z, y as f64);
                assert_eq!(v[0], i, "argmax of {z:?}");
                assert_eq!(v[1], f64::from(u8::from(i == y as f64)));
                assert!(
                    (v[2] - (lse(z) - z[y])).abs() < 1e-12,
                    "{z:?} {y}: {}",
                    v[2]
                );
                assert_eq!(v[3], 0.0, "a one-element vector's argmax is 0");
            }
        }
        // A comparison only: no derivative flows through it.
        let mut pool = model.pool.clone();
        let d = ir::diff::partial(&mut pool, roots[0], ir::Var::Input { input: 0, elem: 1 });
        assert_eq!(pool.const_value(d), Some(0.0));
        let bad =
            format!("state x[2] = [1, 2]\ndx/dt = -x\n{HEAD}metric m = argmax(outer(x, x))\n");
        let errs = errors(&bad);
        assert!(
            errs[0].contains("`argmax` needs a non-empty vector, found [2, 2]"),
            "{errs:?}"
        );
    }

    /// The elements of every output, evaluated with state `x = [1, 2, 3, 4]`.
    fn outputs(decls: &str) -> Vec<Vec<f64>> {
        let text = format!("state x[4] = [1, 2, 3, 4]\ndx/dt = -x\n{HEAD}{decls}");
        let (mut model, diags) = check_text(&text, &[]);
        assert!(!diags.has_errors(), "{:?}", diags.sorted());
        ir::expand_scalar(&mut model);
        let point = ir::eval::Point {
            states: vec![vec![1.0, 2.0, 3.0, 4.0]],
            ..Default::default()
        };
        model
            .outputs
            .iter()
            .map(|o| point.eval(&model.pool, &o.value))
            .collect()
    }

    /// `linspace` includes both ends like numpy's; `range` counts from 0.
    #[test]
    fn linspace_and_range_are_grids() {
        let out = outputs(
            "output a = linspace(0, 1, 5)\noutput b = linspace(2, -1, 4)\n\
             output c = linspace(3, 7, 1)\noutput d = range(4)\noutput e = sum(range(0))\n\
             output f = linspace(0.1, 0.7, 7)\n",
        );
        assert_eq!(out[0], [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(out[1], [2.0, 1.0, 0.0, -1.0]);
        assert_eq!(out[2], [3.0]);
        assert_eq!(out[3], [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(out[4], [0.0]);
        // The last point is the end exactly, not 0.1 + 6 · 0.1 rounded.
        assert_eq!(out[5][6], 0.7);
        for (k, v) in out[5].iter().enumerate() {
            assert!((v - 0.1 * (k + 1) as f64).abs() < 1e-15, "{k}: {v}");
        }
    }

    /// `diag(v, k)` puts `v` on diagonal `k` of a `(len(v) + |k|)`-square matrix; `diag(A, k)`
    /// reads it back. Checked element by element against the definition `A[i, i + k] = v[i]`.
    #[test]
    fn diag_with_an_offset_builds_and_reads_diagonals() {
        let out = outputs(
            "output up = diag(x[0:3], 1)\noutput down = diag(x[0:2], -2)\n\
             output main = diag(x, 0)\noutput read = diag(diag(x[0:3], 1), 1)\n\
             output read_low = diag(outer(x, [1, 10]), -1)\n\
             output lap = (diag(ones(2), -1) + diag(-2 * ones(3)) + diag(ones(2), 1)) * x[1:4]\n",
        );
        let x = [1.0, 2.0, 3.0, 4.0];
        let dense = |n: usize, k: i64, v: &[f64]| {
            let mut a = vec![0.0; n * n];
            for (i, vi) in v.iter().enumerate() {
                let (r, c) = if k >= 0 {
                    (i, i + k as usize)
                } else {
                    (i + (-k) as usize, i)
                };
                a[r * n + c] = *vi;
            }
            a
        };
        assert_eq!(out[0], dense(4, 1, &x[0..3]));
        assert_eq!(out[1], dense(4, -2, &x[0..2]));
        assert_eq!(out[2], dense(4, 0, &x));
        assert_eq!(out[3], [1.0, 2.0, 3.0]);
        // outer(x, [1, 10]) is [4, 2]; its diagonal -1 is (1, 0), (2, 1).
        assert_eq!(out[4], [2.0, 30.0]);
        // The second difference of [2, 3, 4] with zero ends.
        assert_eq!(out[5], [-2.0 * 2.0 + 3.0, 2.0 - 6.0 + 4.0, 3.0 - 8.0]);
        let errs = errors(&format!(
            "state x[2] = [1, 2]\ndx/dt = -x\n{HEAD}output o = diag(x, 0.5)\noutput p = diag(1, 1)\n"
        ));
        assert!(
            errs[0].contains("must be an integer, found 0.5"),
            "{errs:?}"
        );
        assert!(errs[1].contains("`diag` needs a vector"), "{errs:?}");
    }

    /// The grid built by `linspace`, `range` and `diag(v, k)` is a few tensor nodes whatever its
    /// size: the pool does not grow with `N`.
    #[test]
    fn structured_arrays_are_single_tensor_nodes() {
        let text = |n: usize| {
            format!(
                "const N = {n}\nstate u[N] = sin(pi * linspace(0, 1, N)) + range(N)\n\
                 du/dt = (diag(ones(N - 1), -1) + diag(-2 * ones(N)) + diag(ones(N - 1), 1)) * u\n{HEAD}"
            )
        };
        // Past the folding of small constant arrays (4096 elements), which makes a small
        // grid's matrix one dense literal.
        assert_eq!(tensor_pool_size(&text(100)), tensor_pool_size(&text(300)));
    }

    /// The number of tensor nodes `sema` builds for a model that must check clean.
    fn tensor_pool_size(text: &str) -> usize {
        let (model, diags) = check_text(text, &[]);
        assert!(!diags.has_errors(), "{:?}", diags.sorted());
        model.tensors.len()
    }

    /// Index forms against the sums and lists they stand for, with `x = [1, 2, 3, 4]`.
    #[test]
    fn index_forms_are_the_sums_and_vectors_they_denote() {
        let out = outputs(
            "output a = sum(i in 0..4, x[i] * i)\noutput b = [x[i + 1] - 2 * x[i] for i in 0..3]\n\
             output c = sum(i in 0..3, x[i] * x[i + 1])\noutput d = [sin(i) + min(x[i], 2) for i in 1..4]\n\
             output e = sum(i in 0..2, x[2 * i + 1] ^ 2)\noutput f = [7 for i in 0..2]\n\
             output g = sum(i in 2..2, x[i])\noutput h = [-x[i]' / 2 for i in 0..4]\n\
             output k = sum(i in 0..2, outer(x, x)[i, i + 2] + outer(x, x)[1, i])\n\
             output m = sum(i in 0..3, 5)\n",
        );
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(out[0], [(0..4).map(|i| x[i] * i as f64).sum::<f64>()]);
        assert_eq!(out[1], [0.0, -1.0, -2.0]);
        assert_eq!(out[2], [1.0 * 2.0 + 2.0 * 3.0 + 3.0 * 4.0]);
        let d: Vec<f64> = (1..4).map(|i| (i as f64).sin() + x[i].min(2.0)).collect();
        assert_eq!(out[3], d);
        assert_eq!(out[4], [2.0 * 2.0 + 4.0 * 4.0]);
        assert_eq!(out[5], [7.0, 7.0]);
        assert_eq!(out[6], [0.0]);
        assert_eq!(out[7], [-0.5, -1.0, -1.5, -2.0]);
        // A[i, i + 2] of outer(x, x) is x_i x_{i+2}; A[1, i] is x_1 x_i.
        assert_eq!(out[8], [1.0 * 3.0 + 2.0 * 4.0 + 2.0 * 1.0 + 2.0 * 2.0]);
        assert_eq!(out[9], [15.0]);
    }

    /// An index form is a few tensor nodes whatever its range: no copy per value of `i`.
    #[test]
    fn index_forms_do_not_grow_with_their_range() {
        let text = |n: usize| {
            format!(
                "const N = {n}\nstate u[N] = linspace(0, 1, N)\n\
                 du/dt = [0, [u[i - 1] - 2 * u[i] + u[i + 1] for i in 1..N - 1], 0]\n{HEAD}\
                 output e = sum(i in 0..N - 1, (u[i + 1] - u[i]) ^ 2)\n"
            )
        };
        assert_eq!(tensor_pool_size(&text(10)), tensor_pool_size(&text(100)));
    }

    /// Each bad use of the index is a located error that says what is wrong.
    #[test]
    fn index_forms_report_bad_indices() {
        let bad = |body: &str| {
            let text = format!(
                "param A[3, 3] = 1\nstate x[4] = [1, 2, 3, 4]\ndx/dt = -x\n{HEAD}output o = {body}\n"
            );
            errors(&text).join("\n")
        };
        for (body, message) in [
            (
                "sum(i in 0..4, x[i * i])",
                "not affine in `i`: for `i` in 0..4 it takes 0, 1, 4, 9",
            ),
            (
                "[x[i + 1] for i in 0..4]",
                "this index is 4 when `i` = 3, out of range for [4]",
            ),
            ("sum(i in 0..4, x[i / 2])", "this index is 0.5 when `i` = 1"),
            ("sum(i in 0..4, x[3 - i])", "decreases as `i` grows"),
            (
                "sum(i in 0..4, sum(x[i]))",
                "depends on the index `i` and cannot be used here",
            ),
            (
                "sum(i in 0..4, [i, 1])",
                "depends on the index `i` and cannot be used here",
            ),
            (
                "[x for i in 0..2]",
                "must be a number for each `i`, found [4]",
            ),
            (
                "sum(i in 0..3, x[i] + x)",
                "is a number for each `i`, but this is [4]",
            ),
            ("sum(i in 0..3, A[i, :])", "index every dimension of [3, 3]"),
            (
                "sum(i in 0..3, sum(j in 0..3, A[i, j]))",
                "cannot be nested",
            ),
            ("sum(i in 3..1, x[i])", "runs backwards"),
            ("sum(i in 0..n, x[i])", "unknown name `n`"),
            (
                "sum(i in 0..4, x[i + x[0]])",
                "constant integer for each `i`",
            ),
        ] {
            let errs = bad(body);
            assert!(errs.contains(message), "{body}: {errs}");
        }
    }

    #[test]
    fn data_and_training_arguments_are_checked() {
        let text = format!(
            "input u[2]\nlabel y\nparam w[2] = 0\nstate x[2] = u\ndx/dt = -x\n{HEAD}\
             cost terminal = bce(sigmoid(dot(w, x)), y)\n\
             data train = csv(\"d.csv\", input = 0..2, label = 2, shuffle = 1, rows = 0..10)\n\
             data test = csv(\"d.csv\", input = 0..2, label = 2, shuffle = 1, rows = 10..20)\n\
             train sgd(lr = 0.1, momentum = 0.9, epochs = 3, batch = 4, nesterov = true, gradient = adjoint)\n"
        );
        let (model, diags) = check_text(&text, &[]);
        assert!(diags.is_empty(), "{:?}", diags.sorted());
        let train = model.train.expect("train parsed");
        assert_eq!(train.optimizer, ir::Optimizer::Sgd);
        assert!(train.nesterov);
        assert_eq!(train.gradient, Some(ir::GradientMethod::Adjoint));
        assert_eq!(model.data.len(), 2);
    }

    /// Leapfrog's split is judged on the scalar IR the solver runs: a position term that
    /// cancels does not count, one that remains does.
    #[test]
    fn leapfrog_split_ignores_terms_that_cancel() {
        let text = |dq: &str| {
            format!(
                "state q[2] = [1, 2]\nstate p[2] = 0\ndq/dt = {dq}\ndp/dt = -q\n\
                 schedule leapfrog(t = [0, 1], steps = 10, position = q, momentum = p)\n"
            )
        };
        for cancels in ["p + q - q", "p + [0, 0] .* q", "p + sum(q) - q[0] - q[1]"] {
            assert_eq!(errors(&text(cancels)), Vec::<String>::new(), "{cancels}");
        }
        let errs = errors(&text("p + [0, 1] .* q"));
        assert!(
            errs.len() == 1 && errs[0].contains("dq/dt depends on the position `q` itself"),
            "{errs:?}"
        );
    }

    /// `check` builds no scalar IR, and a model whose expansion would be eight million scalar
    /// products (which is why the test takes no time) is accepted: it runs on tensor kernels,
    /// `ir::prepare_to_run` leaving the scalar IR unbuilt. Only an array past the element
    /// limit is refused.
    #[test]
    fn check_defers_the_scalar_ir_and_wide_models_run_on_tensors() {
        let (model, diags) = check_text(&format!("state x[3] = 1\ndx/dt = -x\n{HEAD}"), &[]);
        assert!(diags.is_empty(), "{:?}", diags.sorted());
        assert!(!model.has_scalar_ir());
        assert!(model.pool.is_empty() && model.states[0].rhs.is_empty());
        let big = format!(
            "param A[200, 200] = 0.001\nstate X[200, 200] = 1\ndX/dt = A * X\n{HEAD}\
             output trace = sum(diag(X))\n"
        );
        let (mut model, diags) = check_text(&big, &[]);
        assert!(!diags.has_errors(), "{:?}", diags.sorted());
        assert!(crate::ir::scalar_ir_estimate(&model) > crate::ir::SCALAR_IR_LIMIT);
        crate::ir::prepare_to_run(&mut model);
        assert!(!model.has_scalar_ir() && model.pool.is_empty());
        let too_wide = format!("state x[{}] = 1\ndx/dt = -x\n{HEAD}", MAX_ELEMENTS + 1);
        let errs: Vec<String> = check_text(&too_wide, &[])
            .1
            .iter()
            .map(|d| d.message.clone())
            .collect();
        assert_eq!(
            errs,
            [format!(
                "an array of {} elements is larger than the limit of {MAX_ELEMENTS}",
                MAX_ELEMENTS + 1
            )]
        );
    }

    #[test]
    fn the_span_is_set_when_it_reads_an_overridden_const() {
        let text = "const T = 4\nconst half = T / 2\nfn twice(a) = 2 * a\nconst k = 1\n\
                    state x = 1\ndx/dt = -k * x\nschedule rk4(t = [0, twice(half)], steps = 4)\n";
        let set = |set: &[(&str, f64)]| {
            let (model, diags) = check_text(text, set);
            assert!(!diags.has_errors(), "{:?}", diags.sorted());
            model.schedule.expect("a schedule").span_set
        };
        assert!(!set(&[]));
        assert!(set(&[("T", 2.0)]), "through a const and a fn call");
        assert!(!set(&[("k", 2.0)]), "`k` is not read by the span");
    }

    #[test]
    fn inputs_and_observed_values_need_data_that_binds_them() {
        let model = "input u\nobserved xobs\nstate x = u\ndx/dt = -x\n\
                     schedule rk4(t = [0, 1], steps = 4)\ncost observed = (x - xobs)^2\n";
        assert_eq!(
            errors(model),
            [
                "input `u` is not bound to any data",
                "observed value `xobs` is not bound to any data"
            ]
        );
        let series = "data obs = series(\"f.csv\", t = 0, values = 1..2)\n";
        assert_eq!(
            errors(&format!("{model}{series}")),
            ["input `u` is not bound to any data"]
        );
        let moons = "data train = csv(\"f.csv\", input = 0..1)\n";
        assert_eq!(
            errors(&format!("{model}{moons}")),
            ["observed value `xobs` is not bound to any data"]
        );
        assert_eq!(
            errors(&format!("{model}{series}{moons}")),
            Vec::<String>::new()
        );
        // A data block in error binds nothing known: no follow-on error.
        let broken = "data train = moon(n = 4)\n";
        assert_eq!(
            errors(&format!("{model}{series}{broken}")),
            ["unknown data source `moon`"]
        );
    }

    #[test]
    fn an_index_range_selects_as_many_columns_as_it_binds() {
        let model = "input u[2]\ninput v\nstate x[2] = u * v\ndx/dt = -x\n\
                     schedule rk4(t = [0, 1], steps = 4)\n";
        assert_eq!(
            errors(&format!("{model}data d = csv(\"f.csv\", input = 1..3)\n")),
            ["`1..3` selects 2 columns (ranges exclude their end) but the inputs `u`, `v` have 3 elements in all"]
        );
        assert_eq!(
            errors(&format!("{model}data d = csv(\"f.csv\", input = 1..4)\n")),
            Vec::<String>::new()
        );
        let (model, diags) = check_text(
            &format!("{model}data d = csv(\"f.csv\", input = \"a\"..\"b\")\n"),
            &[],
        );
        assert!(!diags.has_errors(), "a named range waits for the header");
        let binding = model.data[0]
            .columns
            .as_ref()
            .expect("csv binds the inputs");
        assert_eq!(binding.elements, 3);
    }
}
