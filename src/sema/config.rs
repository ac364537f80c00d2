//! Schedules, data sources, optimizers and initial distributions: argument tables, defaults and
//! the checks that tie them to the rest of the model.

use super::builtins::bind_args;
use super::value::Value;
use super::Checker;
use crate::diag::{suggest, Diagnostic, Span};
use crate::ir::tensor::expand::Expander;
use crate::ir::tensor::{Leaf, TId};
use crate::ir::{
    self, Column, ColumnBinding, DataSource, GradientMethod, Method, MethodFamily, Optimizer,
    ParamTime, Save, Shape, ToyKind, Var,
};
use crate::syntax::ast::{self, ExprKind};

/// Reports an unknown callee with a suggestion from `known`.
fn unknown(checker: &mut Checker, name: &ast::Ident, what: &str, known: &[&str]) {
    let mut d = Diagnostic::error(name.span, format!("unknown {what} `{}`", name.name));
    match suggest(&name.name, known.iter().copied()) {
        Some(s) => d = d.with_help(format!("did you mean `{s}`?")),
        None => d = d.with_help(format!("known: {}", known.join(", "))),
    }
    checker.diags.push(d);
}

/// A bare name used as an argument value (`gradient = adjoint`, `position = q`).
fn name_value(expr: &ast::Expr) -> Option<&str> {
    match &expr.kind {
        ExprKind::Name(n) => Some(n),
        _ => None,
    }
}

fn positive_usize<'a>(checker: &mut Checker<'a>, e: &'a ast::Expr, what: &str) -> Option<usize> {
    let n = checker.const_usize(e, what)?;
    if n == 0 {
        checker
            .diags
            .error(e.span, format!("{what} must be positive"));
        return None;
    }
    Some(n)
}

/// A generated data set of `n` samples of `dim` values must fit in the data limit; checked
/// before anything of that size (a per-component mean) is built.
fn generated_size(checker: &mut Checker<'_>, span: Span, n: usize, dim: usize) -> Option<()> {
    let limit = crate::data::MAX_VALUES;
    match n.checked_mul(dim) {
        Some(v) if v <= limit => Some(()),
        _ => {
            checker.diags.push(
                Diagnostic::error(
                    span,
                    format!(
                        "{n} samples of {dim} values make {} numbers, more than the data limit of {limit}",
                        n as u128 * dim as u128
                    ),
                )
                .with_help("generate fewer samples or fewer values per sample"),
            );
            None
        }
    }
}

fn positive_number<'a>(checker: &mut Checker<'a>, e: &'a ast::Expr, what: &str) -> Option<f64> {
    let v = checker.const_number(e, what)?;
    if v <= 0.0 {
        checker
            .diags
            .error(e.span, format!("{what} must be positive, found {v}"));
        return None;
    }
    Some(v)
}

/// `atol = A` or `atol = [a0, a1, ...]`: one positive tolerance, or one per state component
/// (states in declaration order, elements row-major), whose length must be the state length.
/// With a vector, the scalar (for components past the states, such as a running cost's
/// quadrature) is its smallest entry.
fn atol_arg<'a>(checker: &mut Checker<'a>, e: &'a ast::Expr) -> (f64, Vec<f64>) {
    let fallback = (1e-9, Vec::new());
    let Some((shape, values)) = checker.lower_const_value(e, "`atol`") else {
        return fallback;
    };
    match shape {
        Shape::Scalar => match positive_number_value(checker, e, "`atol`", values[0]) {
            Some(v) => (v, Vec::new()),
            None => fallback,
        },
        Shape::Vector(n) => {
            let states: Option<usize> = checker
                .states
                .iter()
                .map(|s| s.shape.map(|s| s.len()))
                .sum();
            let Some(total) = states else {
                return fallback;
            };
            if n != total {
                checker.diags.push(
                    Diagnostic::error(
                        e.span,
                        format!("`atol` has {n} tolerances but the states have {total} components"),
                    )
                    .with_help("give one absolute tolerance per state element, in declaration order, or one number for all"),
                );
                return fallback;
            }
            if let Some(bad) = values.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                checker.diags.error(
                    e.span,
                    format!("every `atol` must be positive and finite, found {bad}"),
                );
                return fallback;
            }
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            (if n == 0 { 1e-9 } else { min }, values)
        }
        Shape::Matrix(..) => {
            checker.diags.error(
                e.span,
                format!("`atol` is a number or a vector, found {shape}"),
            );
            fallback
        }
    }
}

fn positive_number_value(checker: &mut Checker, e: &ast::Expr, what: &str, v: f64) -> Option<f64> {
    if !(v.is_finite() && v > 0.0) {
        checker
            .diags
            .error(e.span, format!("{what} must be positive, found {v}"));
        return None;
    }
    Some(v)
}

fn seed<'a>(checker: &mut Checker<'a>, e: Option<&'a ast::Expr>) -> u64 {
    e.and_then(|e| checker.const_usize(e, "a seed"))
        .unwrap_or(0) as u64
}

/// `~ normal(mean, std)` or `~ uniform(lo, hi)`.
pub(crate) fn distribution<'a>(checker: &mut Checker<'a>, call: &'a ast::Call) -> ir::ParamInit {
    let fallback = ir::ParamInit::Values(Vec::new());
    match call.name.name.as_str() {
        "normal" => {
            let Some(args) = bind_args(checker, call, "`normal`", &["mean", "std"], 2) else {
                return fallback;
            };
            let mean = args[0].and_then(|e| checker.const_number(e, "the mean"));
            let std = args[1].and_then(|e| checker.const_number(e, "the standard deviation"));
            match (mean, std) {
                (Some(mean), Some(std)) if std >= 0.0 => ir::ParamInit::Normal { mean, std },
                (Some(_), Some(std)) => {
                    checker.diags.error(
                        call.span,
                        format!("the standard deviation must not be negative, found {std}"),
                    );
                    fallback
                }
                _ => fallback,
            }
        }
        "uniform" => {
            let Some(args) = bind_args(checker, call, "`uniform`", &["lo", "hi"], 2) else {
                return fallback;
            };
            let lo = args[0].and_then(|e| checker.const_number(e, "the lower bound"));
            let hi = args[1].and_then(|e| checker.const_number(e, "the upper bound"));
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo < hi => ir::ParamInit::Uniform { lo, hi },
                (Some(lo), Some(hi)) => {
                    checker.diags.error(
                        call.span,
                        format!("`uniform` needs lo < hi, found {lo} and {hi}"),
                    );
                    fallback
                }
                _ => fallback,
            }
        }
        _ => {
            unknown(checker, &call.name, "distribution", &["normal", "uniform"]);
            fallback
        }
    }
}

/// The smallest relative tolerance an adaptive or stiff schedule is asked for in f32 without
/// a warning: a few units of f32's roundoff (`2^-24 ≈ 6e-8`), where the error estimates and
/// Newton corrections of f32 evaluations stop being noise.
const F32_RTOL_FLOOR: f64 = 1e-6;

/// The arguments each schedule family accepts, in positional order.
fn schedule_params(method: Method) -> &'static [&'static str] {
    match method {
        Method::Lm => &["t", "steps", "k", "save", "layers", "precision"],
        Method::Leapfrog => &[
            "t",
            "steps",
            "position",
            "momentum",
            "save",
            "layers",
            "precision",
        ],
        _ => match method.family() {
            MethodFamily::Fixed => &["t", "steps", "save", "layers", "precision"],
            MethodFamily::Adaptive => &[
                "t",
                "rtol",
                "atol",
                "max_steps",
                "save",
                "layers",
                "precision",
            ],
            MethodFamily::Stiff => &[
                "t",
                "rtol",
                "atol",
                "max_steps",
                "save",
                "layers",
                "linear",
                "precision",
            ],
        },
    }
}

/// `schedule METHOD(ARGS)`
pub(crate) fn schedule<'a>(
    checker: &mut Checker<'a>,
    call: &'a ast::Call,
    span: Span,
) -> Option<ir::Schedule> {
    let names: Vec<&str> = Method::ALL.iter().map(|(_, n)| *n).collect();
    let Some(&(method, _)) = Method::ALL.iter().find(|(_, n)| *n == call.name.name) else {
        unknown(checker, &call.name, "schedule method", &names);
        return None;
    };
    let params = schedule_params(method);
    let required = match method {
        Method::Lm => 3,
        Method::Leapfrog => 4,
        _ if method.family() == MethodFamily::Fixed => 2,
        _ => 1,
    };
    let what = format!("`{}`", method.name());
    let args = bind_args(checker, call, &what, params, required)?;
    let arg = |name: &str| params.iter().position(|p| *p == name).and_then(|i| args[i]);
    let span_set = checker.reads_override(arg("t").expect("required"));
    let (t0, t1) = {
        let e = arg("t").expect("required");
        match checker.lower_const_value(e, "the time span `t`") {
            // `t = [T1, T0]` with `T1 > T0` integrates backward in time.
            Some((Shape::Vector(2), v)) if v[1] != v[0] && v.iter().all(|x| x.is_finite()) => {
                (v[0], v[1])
            }
            Some((Shape::Vector(2), v)) if v[0] == v[1] && v[0].is_finite() => {
                checker.diags.push(
                    Diagnostic::error(
                        e.span,
                        format!("the time span [{}, {}] has zero length", v[0], v[1]),
                    )
                    .with_help(
                        "give two different times: `t = [T0, T1]` runs forward, `t = [T1, T0]` with T1 > T0 backward",
                    ),
                );
                return None;
            }
            Some((Shape::Vector(2), v)) => {
                checker.diags.error(
                    e.span,
                    format!("the time span must be finite, found [{}, {}]", v[0], v[1]),
                );
                return None;
            }
            Some((shape, _)) => {
                checker
                    .diags
                    .error(e.span, format!("`t` must be [T0, T1], found {shape}"));
                return None;
            }
            None => return None,
        }
    };
    let steps = arg("steps").and_then(|e| positive_usize(checker, e, "`steps`"));
    let rtol = arg("rtol")
        .and_then(|e| positive_number(checker, e, "`rtol`"))
        .unwrap_or(1e-6);
    let (atol, atol_components) = match arg("atol") {
        None => (1e-9, Vec::new()),
        Some(e) => atol_arg(checker, e),
    };
    let max_steps = arg("max_steps")
        .and_then(|e| positive_usize(checker, e, "`max_steps`"))
        .unwrap_or(100_000);
    let linear = match arg("linear") {
        None => ir::LinearSolve::Auto,
        Some(e) => match name_value(e) {
            Some("auto") => ir::LinearSolve::Auto,
            Some("dense") => ir::LinearSolve::Dense,
            Some("banded") => ir::LinearSolve::Banded,
            _ => {
                let mut d = Diagnostic::error(e.span, "`linear` is one of auto, dense, banded");
                if let Some(s) = name_value(e).and_then(|n| suggest(n, ["auto", "dense", "banded"]))
                {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                checker.diags.push(d);
                ir::LinearSolve::Auto
            }
        },
    };
    let precision = match arg("precision") {
        None => ir::Precision::F64,
        Some(e) => match name_value(e) {
            Some("f64") => ir::Precision::F64,
            Some("f32") => ir::Precision::F32,
            _ => {
                let mut d = Diagnostic::error(e.span, "`precision` is f64 or f32");
                if let Some(s) = name_value(e).and_then(|n| suggest(n, ["f64", "f32"])) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                checker.diags.push(d);
                ir::Precision::F64
            }
        },
    };
    // `--precision` wins over the file, as `--set` does.
    let precision = checker.overrides.precision.unwrap_or(precision);
    // Evaluations rounded to f32 carry relative errors of about 1e-7 (more where a field
    // subtracts large terms, as a fine grid's Laplacian does): an error test or a Newton
    // iteration asked for less than that can only be met by ever smaller steps.
    if precision == ir::Precision::F32
        && method.family() != MethodFamily::Fixed
        && rtol < F32_RTOL_FLOOR
    {
        let at = arg("rtol").map_or(span, |e| e.span);
        checker.diags.push(
            Diagnostic::warning(
                at,
                format!(
                    "rtol = {rtol:e} is below what f32 evaluations resolve (about {F32_RTOL_FLOOR:e}): steps will shrink to meet it"
                ),
            )
            .with_help(format!(
                "use rtol = {F32_RTOL_FLOOR:e} or more with f32, or keep f64 for this tolerance"
            )),
        );
    }
    let layers = arg("layers").and_then(|e| positive_usize(checker, e, "`layers`"));
    if let (Some(steps), Some(layers), Some(e)) = (steps, layers, arg("layers")) {
        if steps % layers != 0 {
            checker.diags.error(
                e.span,
                format!("{layers} layers do not divide {steps} steps evenly"),
            );
        }
    }
    let save = match arg("save") {
        // A fixed-step schedule saves every step by default: that many points per sample must
        // fit, or the solve would abort on allocation long after the check passed.
        None if steps.is_some_and(|n| n >= super::MAX_ELEMENTS) => {
            let (n, e) = (steps.unwrap_or(0), arg("steps"));
            if let Some(e) = e {
                checker.diags.push(
                    Diagnostic::error(
                        e.span,
                        format!(
                            "{n} steps saved at every step make {} save points per sample, more than the limit of {}",
                            n as u128 + 1,
                            super::MAX_ELEMENTS
                        ),
                    )
                    .with_help("save fewer points: add `save = DT` (a time interval) or `save = [t, ...]`"),
                );
            }
            Save::Default
        }
        None => Save::Default,
        Some(e) => match checker.lower_const_value(e, "`save`") {
            Some((Shape::Scalar, v)) if v[0] > 0.0 => {
                let (dt, length) = (v[0], (t1 - t0).abs());
                // The points `t0 + k·dt` that `simulate` lays out, counted before any allocation.
                let count = (length / dt + 1e-9).floor() + 1.0;
                if count > super::MAX_ELEMENTS as f64 {
                    let count = if count < 1e15 {
                        format!("{count}")
                    } else {
                        // Past `f64`'s range (`save = 1e-320`), the order of magnitude.
                        format!("about 1e{:.0}", length.log10() - dt.log10())
                    };
                    checker.diags.push(
                        Diagnostic::error(
                            e.span,
                            format!(
                                "the save interval {dt:e} makes {count} save points over [{t0}, {t1}], more than the limit of {}",
                                super::MAX_ELEMENTS
                            ),
                        )
                        .with_help(format!(
                            "save less often: an interval of {:.2e} or more stays within the limit",
                            1.01 * length / (super::MAX_ELEMENTS - 1) as f64
                        )),
                    );
                    Save::Default
                } else {
                    Save::Every(dt)
                }
            }
            Some((Shape::Scalar, v)) => {
                checker.diags.error(
                    e.span,
                    format!("the save interval must be positive, found {}", v[0]),
                );
                Save::Default
            }
            Some((Shape::Vector(_), v)) => {
                let (lo, hi) = (t0.min(t1), t0.max(t1));
                // Save times follow the direction of integration.
                let dir = if t1 > t0 { 1.0 } else { -1.0 };
                if v.iter().any(|x| *x < lo || *x > hi) {
                    checker.diags.error(
                        e.span,
                        format!("save times must lie in the time span [{t0}, {t1}]"),
                    );
                } else if v.windows(2).any(|w| (w[1] - w[0]) * dir <= 0.0) {
                    let msg = if dir > 0.0 {
                        "save times must increase strictly"
                    } else {
                        "save times must decrease strictly: the span runs backward"
                    };
                    checker.diags.error(e.span, msg);
                }
                Save::Times(v)
            }
            Some((shape, _)) => {
                checker.diags.error(
                    e.span,
                    format!("`save` is an interval or a list of times, found {shape}"),
                );
                Save::Default
            }
            None => Save::Default,
        },
    };
    let lm_k = match arg("k") {
        Some(e) => match checker.lower_top(e) {
            Value::Tensor {
                shape: Shape::Scalar,
                id,
            } => checker
                .require_leaves(&[id], e.span, "the LM coefficient `k`", |l| {
                    matches!(l, Leaf::Param(_))
                })
                .then(|| {
                    checker.model.tensor_roots.lm_k = Some(id);
                    checker.elements(id)[0]
                }),
            Value::Tensor { shape, .. } => {
                checker
                    .diags
                    .error(e.span, format!("`k` must be a scalar, found {shape}"));
                None
            }
            Value::Error => None,
        },
        None => None,
    };
    let mut state_arg = |name: &str| -> Option<usize> {
        let e = arg(name)?;
        let found =
            name_value(e).and_then(|n| checker.states.iter().position(|s| s.name.name == n));
        if found.is_none() {
            let states: Vec<String> = checker.states.iter().map(|s| s.name.name.clone()).collect();
            checker.diags.error(
                e.span,
                format!("`{name}` must name a state (one of: {})", states.join(", ")),
            );
        } else if let Some(i) = found {
            checker.used.insert(super::Symbol::State(i));
        }
        found
    };
    let position = state_arg("position");
    let momentum = state_arg("momentum");
    if let (Some(q), Some(p)) = (position, momentum) {
        check_leapfrog_split(checker, q, p, span);
    }
    // Every layer's copy of a per-layer parameter is stored: the copies must fit the element
    // limit, checked here rather than when the values are allocated.
    if let Some(copies) = layers.or(steps) {
        for p in &checker.model.params {
            let total = copies as u128 * p.shape.len() as u128;
            if p.time == ParamTime::PerLayer && total > super::MAX_ELEMENTS as u128 {
                checker.diags.push(
                    Diagnostic::error(
                        p.span,
                        format!(
                            "per-layer param `{}` has {copies} copies of {} values ({total} in all), more than the limit of {}",
                            p.name,
                            p.shape.len(),
                            super::MAX_ELEMENTS
                        ),
                    )
                    .with_help(format!(
                        "use fewer layers: `layers = N` on the {} schedule shares each copy among steps / N steps",
                        method.name()
                    )),
                );
            }
        }
    }
    // Per-layer parameters need a number of layers.
    if layers.is_none() && steps.is_none() {
        for p in &checker.model.params {
            if p.time == ParamTime::PerLayer {
                checker.diags.push(
                    Diagnostic::error(
                        p.span,
                        format!("per-layer param `{}` needs a number of layers", p.name),
                    )
                    .with_help(format!(
                        "add `layers = N` to the {} schedule",
                        method.name()
                    )),
                );
            }
        }
    }
    Some(ir::Schedule {
        method,
        t0,
        t1,
        steps,
        rtol,
        atol,
        atol_components,
        max_steps,
        save,
        layers,
        lm_k,
        position,
        momentum,
        linear,
        precision,
        span_set,
        span,
    })
}

/// Leapfrog needs `dq/dt = F(p, t)` and `dp/dt = G(q, t)` and no other state.
fn check_leapfrog_split(checker: &mut Checker, q: usize, p: usize, span: Span) {
    if q == p {
        checker.diags.error(
            span,
            "leapfrog needs two different states for position and momentum",
        );
        return;
    }
    for (i, s) in checker.states.iter().enumerate() {
        if i != q && i != p {
            checker.diags.error(
                s.name.span,
                format!(
                    "leapfrog integrates a position and a momentum only; state `{}` is neither",
                    s.name.name
                ),
            );
            return;
        }
    }
    let checks = [(q, q, "position"), (p, p, "momentum")];
    for (eq, bad, role) in checks {
        let (Some(state), Some(&rhs)) = (
            checker.model.states.get(eq),
            checker.model.tensor_roots.rhs.get(eq),
        ) else {
            continue;
        };
        let eq_span = state.equation_span;
        let name = state.name.clone();
        let reads_itself = checker
            .find_leaf(&[rhs], |l| *l == Leaf::State(bad as u32))
            .is_some()
            && scalar_rhs_reads_state(checker, rhs, bad);
        if reads_itself {
            checker.diags.push(
                Diagnostic::error(
                    eq_span,
                    format!("d{name}/dt depends on the {role} `{name}` itself, so leapfrog cannot split the field"),
                )
                .with_help("leapfrog needs dq/dt = F(p, t) and dp/dt = G(q, t)"),
            );
        }
    }
}

/// Whether the scalar expansion of `rhs` reads an element of state `state`. A tensor
/// expression may read a state whose elements the scalar constructors then cancel
/// (`p + sum(q) - q[0] - q[1]`), and the split is judged on the scalar IR, which the solver
/// runs. The expansion goes into a pool of its own, thrown away afterwards, and happens only
/// once the tensor expression reads the state, so a field that splits costs nothing here.
fn scalar_rhs_reads_state(checker: &Checker, rhs: TId, state: usize) -> bool {
    let mut pool = crate::ir::Pool::new();
    let elements = Expander::new().expand(&checker.model.tensors, &mut pool, rhs);
    crate::ir::diff::reachable(&pool, &elements)
        .into_iter()
        .any(|id| {
            matches!(pool.node(id), crate::ir::Node::Var(Var::State { state: s, .. }) if *s as usize == state)
        })
}

/// `train OPTIMIZER(ARGS)`
pub(crate) fn train<'a>(
    checker: &mut Checker<'a>,
    call: &'a ast::Call,
    span: Span,
) -> Option<ir::Train> {
    const COMMON: [&str; 8] = [
        "gradient",
        "lr_decay",
        "decay_every",
        "weight_decay",
        "max_failures",
        "shooting",
        "continuity",
        "polish",
    ];
    let (optimizer, positional): (Optimizer, &[&str]) = match call.name.name.as_str() {
        "adam" => (Optimizer::Adam, &["lr", "epochs", "batch", "seed"]),
        "sgd" => (
            Optimizer::Sgd,
            &["lr", "momentum", "epochs", "batch", "seed", "nesterov"],
        ),
        "lbfgs" => (
            Optimizer::Lbfgs,
            &["iters", "history", "lr", "seed", "epochs", "batch"],
        ),
        "msa" => (
            Optimizer::Msa,
            &["rho", "reg", "maxiter", "epochs", "batch", "seed"],
        ),
        _ => {
            unknown(
                checker,
                &call.name,
                "optimizer",
                &["adam", "sgd", "lbfgs", "msa"],
            );
            return None;
        }
    };
    let params: Vec<&str> = positional.iter().copied().chain(COMMON).collect();
    let what = format!("`{}`", call.name.name);
    let args = bind_args(checker, call, &what, &params, 0)?;
    let arg = |name: &str| params.iter().position(|p| *p == name).and_then(|i| args[i]);
    let number = |checker: &mut Checker<'a>, name: &str, default: f64| {
        arg(name)
            .and_then(|e| checker.const_number(e, &format!("`{name}`")))
            .unwrap_or(default)
    };
    let count = |checker: &mut Checker<'a>, name: &str, default: usize| {
        arg(name)
            .and_then(|e| positive_usize(checker, e, &format!("`{name}`")))
            .unwrap_or(default)
    };
    let default_lr = match optimizer {
        Optimizer::Adam => 1e-3,
        Optimizer::Sgd => 1e-2,
        Optimizer::Lbfgs | Optimizer::Msa => 1.0,
    };
    let lr = arg("lr")
        .and_then(|e| positive_number(checker, e, "`lr`"))
        .unwrap_or(default_lr);
    let gradient = match arg("gradient") {
        None => None,
        Some(e) => match name_value(e) {
            Some("backprop") => Some(GradientMethod::Backprop),
            Some("adjoint") => Some(GradientMethod::Adjoint),
            Some("forward") => Some(GradientMethod::Forward),
            _ => {
                let mut d =
                    Diagnostic::error(e.span, "`gradient` is one of backprop, adjoint, forward");
                if let Some(s) =
                    name_value(e).and_then(|n| suggest(n, ["backprop", "adjoint", "forward"]))
                {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                checker.diags.push(d);
                None
            }
        },
    };
    let nesterov = match arg("nesterov") {
        None => false,
        Some(e) => match name_value(e) {
            Some("true") => true,
            Some("false") => false,
            _ => checker
                .const_number(e, "`nesterov`")
                .is_some_and(|v| v != 0.0),
        },
    };
    let shooting = match arg("shooting") {
        None => {
            for name in ["continuity", "polish"] {
                if let Some(e) = arg(name) {
                    checker.diags.error(
                        e.span,
                        format!(
                            "`{name}` is an argument of multiple shooting: it needs `shooting = N`"
                        ),
                    );
                }
            }
            None
        }
        Some(e) if optimizer == Optimizer::Msa => {
            checker.diags.error(
                e.span,
                "`msa` cannot do multiple shooting; use `adam`, `sgd` or `lbfgs`",
            );
            None
        }
        Some(e) => positive_usize(checker, e, "`shooting`").map(|segments| ir::Shooting {
            segments,
            continuity: arg("continuity")
                .and_then(|c| positive_number(checker, c, "`continuity`"))
                .unwrap_or(1.0),
            polish: arg("polish")
                .and_then(|p| checker.const_usize(p, "`polish`"))
                .unwrap_or(0),
            span: e.span,
        }),
    };
    let train = ir::Train {
        optimizer,
        lr,
        epochs: count(checker, "epochs", 100),
        batch: arg("batch").and_then(|e| positive_usize(checker, e, "`batch`")),
        seed: seed(checker, arg("seed")),
        momentum: number(checker, "momentum", 0.0),
        nesterov,
        weight_decay: number(checker, "weight_decay", 0.0),
        iters: count(checker, "iters", 100),
        history: count(checker, "history", 10),
        rho: number(checker, "rho", 1.0),
        reg: number(checker, "reg", 0.0),
        maxiter: count(checker, "maxiter", 5),
        lr_decay: arg("lr_decay")
            .and_then(|e| positive_number(checker, e, "`lr_decay`"))
            .unwrap_or(1.0),
        decay_every: arg("decay_every")
            .and_then(|e| checker.const_usize(e, "`decay_every`"))
            .unwrap_or(0),
        max_failures: arg("max_failures")
            .and_then(|e| positive_usize(checker, e, "`max_failures`"))
            .unwrap_or(10),
        gradient,
        shooting,
        span,
    };
    if !(0.0..1.0).contains(&train.momentum) {
        if let Some(e) = arg("momentum") {
            checker.diags.error(
                e.span,
                format!("`momentum` must be in [0, 1), found {}", train.momentum),
            );
        }
    }
    Some(train)
}

const TOYS: [(&str, ToyKind); 6] = [
    ("circles", ToyKind::Circles),
    ("moons", ToyKind::Moons),
    ("spirals", ToyKind::Spirals),
    ("gaussians", ToyKind::Gaussians),
    ("checkerboard", ToyKind::Checkerboard),
    ("annulus", ToyKind::Annulus),
];

fn column<'a>(checker: &mut Checker<'a>, e: &'a ast::Expr, what: &str) -> Option<Column> {
    match &e.kind {
        ExprKind::Str(s) => Some(Column::Name(s.clone())),
        _ => checker.const_usize(e, what).map(Column::Index),
    }
}

fn column_range<'a>(
    checker: &mut Checker<'a>,
    e: &'a ast::Expr,
    what: &str,
) -> Option<(Column, Column)> {
    match &e.kind {
        ExprKind::Range { start, end } => {
            let a = column(checker, start, what)?;
            let b = column(checker, end, what)?;
            if let (Column::Index(x), Column::Index(y)) = (&a, &b) {
                if x >= y {
                    checker
                        .diags
                        .error(e.span, format!("the column range {x}..{y} is empty"));
                    return None;
                }
            }
            Some((a, b))
        }
        // A single column `c` is the range `c..c+1`.
        _ => match column(checker, e, what)? {
            Column::Index(i) => Some((Column::Index(i), Column::Index(i + 1))),
            Column::Name(n) => {
                checker.diags.error(
                    e.span,
                    format!("a single named column `{n}` needs a range: \"{n}\"..\"...\""),
                );
                None
            }
        },
    }
}

fn path<'a>(checker: &mut Checker<'a>, e: &'a ast::Expr) -> Option<String> {
    match &e.kind {
        ExprKind::Str(s) => Some(s.clone()),
        _ => {
            checker.diags.error(
                e.span,
                "expected a file path in double quotes, such as \"data.csv\"",
            );
            None
        }
    }
}

/// What a file block's column range at `span` binds: the inputs for `csv`, the observed values
/// for `series` (see [`ColumnBinding`]).
fn column_binding(checker: &Checker, span: Span, observed: bool) -> Option<ColumnBinding> {
    let slots = if observed {
        &checker.observed
    } else {
        &checker.inputs
    };
    if slots.is_empty() {
        // A series always binds observed values; a csv without inputs may be read for labels.
        return observed.then(|| ColumnBinding {
            span,
            elements: 0,
            target: "the model declares no `observed` value to bind them to".to_string(),
        });
    }
    // A declaration whose shape is in error has been reported; a width would be a follow-on.
    let shapes: Option<Vec<Shape>> = slots.iter().map(|s| s.shape).collect();
    let elements: usize = shapes?.iter().map(|s| s.len()).sum();
    let count = format!("{elements} element{}", if elements == 1 { "" } else { "s" });
    let target = match slots.as_slice() {
        [one] => format!("`{}` has {count}", one.name.name),
        _ => {
            let names: Vec<String> = slots.iter().map(|s| format!("`{}`", s.name.name)).collect();
            format!(
                "the {} {} have {count} in all",
                if observed {
                    "observed values"
                } else {
                    "inputs"
                },
                names.join(", ")
            )
        }
    };
    Some(ColumnBinding {
        span,
        elements,
        target,
    })
}

/// `data NAME = SOURCE(ARGS)`, with what its column range binds for a file source.
pub(crate) fn data_source<'a>(
    checker: &mut Checker<'a>,
    call: &'a ast::Call,
) -> Option<(DataSource, Option<ColumnBinding>, Option<ColumnBinding>)> {
    let name = call.name.name.as_str();
    let what = format!("`{name}`");
    if let Some(&(_, kind)) = TOYS.iter().find(|(n, _)| *n == name) {
        let params: &[&str] = if kind == ToyKind::Circles {
            &["n", "noise", "seed", "factor"]
        } else {
            &["n", "noise", "seed"]
        };
        let args = bind_args(checker, call, &what, params, 1)?;
        let n = positive_usize(checker, args[0]?, "`n`")?;
        let noise = match args[1] {
            Some(e) => checker.const_number(e, "`noise`")?,
            None => 0.0,
        };
        if noise < 0.0 {
            checker
                .diags
                .error(args[1]?.span, "`noise` must not be negative");
        }
        let seed = seed(checker, args[2]);
        let factor = match args.get(3).copied().flatten() {
            Some(e) => checker.const_number(e, "`factor`")?,
            None => 0.5,
        };
        return Some((
            DataSource::Toy {
                kind,
                n,
                noise,
                seed,
                factor,
            },
            None,
            None,
        ));
    }
    match name {
        "normal" => {
            let args = bind_args(
                checker,
                call,
                &what,
                &["n", "dim", "seed", "mean", "std"],
                2,
            )?;
            let n = positive_usize(checker, args[0]?, "`n`")?;
            let dim = positive_usize(checker, args[1]?, "`dim`")?;
            generated_size(checker, call.span, n, dim)?;
            generated_size(checker, call.span, n, dim)?;
            let seed = seed(checker, args[2]);
            let mean = match args[3] {
                None => vec![0.0; dim],
                Some(e) => match checker.lower_const_value(e, "`mean`")? {
                    (Shape::Scalar, v) => vec![v[0]; dim],
                    (Shape::Vector(k), v) if k == dim => v,
                    (shape, _) => {
                        checker.diags.error(
                            e.span,
                            format!("`mean` must be a scalar or [{dim}], found {shape}"),
                        );
                        return None;
                    }
                },
            };
            let std = match args[4] {
                None => 1.0,
                Some(e) => positive_number(checker, e, "`std`")?,
            };
            Some((
                DataSource::Normal {
                    n,
                    dim,
                    seed,
                    mean,
                    std,
                },
                None,
                None,
            ))
        }
        "uniform" => {
            let args = bind_args(
                checker,
                call,
                &what,
                &["n", "dim", "lo", "hi", "seed", "label"],
                2,
            )?;
            let n = positive_usize(checker, args[0]?, "`n`")?;
            let dim = positive_usize(checker, args[1]?, "`dim`")?;
            let lo = match args[2] {
                Some(e) => checker.const_number(e, "`lo`")?,
                None => 0.0,
            };
            let hi = match args[3] {
                Some(e) => checker.const_number(e, "`hi`")?,
                None => 1.0,
            };
            if lo >= hi {
                checker.diags.error(
                    call.span,
                    format!("`uniform` needs lo < hi, found {lo} and {hi}"),
                );
                return None;
            }
            let seed = seed(checker, args[4]);
            let label = match args[5] {
                None => None,
                Some(e) => match checker.lower_top(e) {
                    Value::Tensor {
                        shape: Shape::Scalar,
                        id,
                    } => checker
                        .require_leaves(&[id], e.span, "a generated label", |l| {
                            matches!(l, Leaf::Input(_))
                        })
                        .then(|| {
                            // The block this source describes is the next one pushed.
                            let block = checker.model.data.len();
                            checker.model.tensor_roots.data_labels.push((block, id));
                            checker.elements(id)[0]
                        }),
                    Value::Tensor { shape, .. } => {
                        checker
                            .diags
                            .error(e.span, format!("a label must be a scalar, found {shape}"));
                        None
                    }
                    Value::Error => None,
                },
            };
            Some((
                DataSource::Uniform {
                    n,
                    dim,
                    lo,
                    hi,
                    seed,
                    label,
                },
                None,
                None,
            ))
        }
        "csv" => {
            let args = bind_args(
                checker,
                call,
                &what,
                &["path", "input", "label", "shuffle", "rows"],
                2,
            )?;
            let path = path(checker, args[0]?)?;
            let input = column_range(checker, args[1]?, "an input column")?;
            let label = match args[2] {
                Some(e) => Some(column(checker, e, "the label column")?),
                None => None,
            };
            let shuffle = args[3].map(|e| seed(checker, Some(e)));
            let rows = row_range(checker, args[4])?;
            let columns = column_binding(checker, args[1]?.span, false);
            Some((
                DataSource::Csv {
                    path,
                    input,
                    label,
                    shuffle,
                    rows,
                },
                columns,
                None,
            ))
        }
        "series" => {
            let args = bind_args(
                checker,
                call,
                &what,
                &["path", "t", "values", "rows", "traj", "input", "input_file"],
                3,
            )?;
            let path = path(checker, args[0]?)?;
            let t = column(checker, args[1]?, "the time column")?;
            let values = column_range(checker, args[2]?, "a value column")?;
            let rows = row_range(checker, args[3])?;
            let traj = match args[4] {
                Some(e) => Some(column(checker, e, "the trajectory column")?),
                None => None,
            };
            let (input, input_columns) = match args[5] {
                Some(e) if checker.inputs.is_empty() => {
                    checker.diags.push(
                        Diagnostic::error(
                            e.span,
                            "`input` columns need an `input` declaration to bind them to",
                        )
                        .with_help("declare one, e.g. `input x0[2]`, and read it in the model"),
                    );
                    return None;
                }
                Some(e) => (
                    Some(column_range(checker, e, "an input column")?),
                    column_binding(checker, e.span, false),
                ),
                None => (None, None),
            };
            let input_file = match args[6] {
                Some(e) => {
                    let file = self::path(checker, e)?;
                    if traj.is_none() || input.is_none() {
                        checker.diags.push(
                            Diagnostic::error(
                                e.span,
                                "`input_file` gives each trajectory's inputs, so it needs `traj = COL` and `input = A..B`",
                            )
                            .with_help("name the trajectory column (its name in both files) and the input columns of the input file, e.g. `traj = \"exp\", input = \"x0\"..\"y0\", input_file = \"ic.csv\"`"),
                        );
                        return None;
                    }
                    Some(file)
                }
                None => None,
            };
            let columns = column_binding(checker, args[2]?.span, true);
            Some((
                DataSource::Series {
                    path,
                    t,
                    values,
                    rows,
                    traj,
                    input,
                    input_file,
                },
                columns,
                input_columns,
            ))
        }
        _ => {
            let mut known: Vec<&str> = TOYS.iter().map(|(n, _)| *n).collect();
            known.extend(["normal", "uniform", "csv", "series"]);
            unknown(checker, &call.name, "data source", &known);
            None
        }
    }
}

/// A `rows = A..B` argument: `Some(None)` without one, `None` after an error.
fn row_range<'a>(
    checker: &mut Checker<'a>,
    arg: Option<&'a ast::Expr>,
) -> Option<Option<(usize, usize)>> {
    let Some(e) = arg else {
        return Some(None);
    };
    match column_range(checker, e, "a row")? {
        (Column::Index(a), Column::Index(b)) => Some(Some((a, b))),
        _ => {
            checker
                .diags
                .error(e.span, "`rows` is a range of row numbers, such as 0..1400");
            None
        }
    }
}

/// The width check of a column range whose ends are both indices; a range with a name waits
/// for the file's header (`data::check_columns`).
fn check_index_range(
    binding: Option<&ColumnBinding>,
    range: &(Column, Column),
) -> Option<Diagnostic> {
    let (Column::Index(a), Column::Index(b)) = range else {
        return None;
    };
    let binding = binding?;
    let fix = if binding.elements == 0 {
        format!("declare them with `observed NAME[{}]`", b - a)
    } else {
        format!("write `{a}..{}`", a + binding.elements)
    };
    binding.mismatch(range, b - a, Some(fix))
}

/// Data blocks must provide what the model reads per sample: input width, labels, observations.
pub(crate) fn check_data_shapes(checker: &mut Checker) {
    let input_width: usize = checker
        .inputs
        .iter()
        .filter_map(|i| i.shape)
        .map(Shape::len)
        .sum();
    let input_names: Vec<String> = checker
        .inputs
        .iter()
        .map(|i| {
            format!(
                "{}{}",
                i.name.name,
                i.shape.map_or(String::new(), |s| if s == Shape::Scalar {
                    String::new()
                } else {
                    s.to_string()
                })
            )
        })
        .collect();
    let has_label = !checker.labels.is_empty();
    let mut problems = Vec::new();
    for block in &checker.model.data {
        let (width, gives_label, what): (Option<usize>, Option<bool>, &str) = match &block.source {
            DataSource::Toy { kind, .. } => (
                Some(2),
                Some(!matches!(kind, ToyKind::Gaussians | ToyKind::Checkerboard)),
                "a toy data set",
            ),
            DataSource::Normal { dim, .. } => (Some(*dim), Some(false), "`normal`"),
            DataSource::Uniform { dim, label, .. } => {
                (Some(*dim), Some(label.is_some()), "`uniform`")
            }
            DataSource::Csv { input, label, .. } => {
                problems.extend(check_index_range(block.columns.as_ref(), input));
                (None, Some(label.is_some()), "this csv")
            }
            DataSource::Series { values, input, .. } => {
                problems.extend(check_index_range(block.columns.as_ref(), values));
                if let Some(input) = input {
                    problems.extend(check_index_range(block.input_columns.as_ref(), input));
                }
                (None, None, "a series")
            }
        };
        if let Some(width) = width {
            if width != input_width && !checker.inputs.is_empty() {
                problems.push(Diagnostic::error(
                    block.span,
                    format!(
                        "data `{}` gives {width} input value{} per sample but the model's inputs take {input_width} ({})",
                        block.name,
                        if width == 1 { "" } else { "s" },
                        input_names.join(", ")
                    ),
                ));
            }
        }
        if has_label && gives_label == Some(false) {
            problems.push(
                Diagnostic::error(
                    block.span,
                    format!(
                        "the model declares label `{}` but {what} gives none",
                        checker.labels[0].name
                    ),
                )
                .with_help("use a labelled source or remove the label"),
            );
        }
    }
    for d in problems {
        checker.diags.push(d);
    }
}
