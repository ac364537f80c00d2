//! Built-in functions and calculus: their arity, argument names, shape rules and lowering.

use super::expr::Scope;
use super::value::Value;
use super::Checker;
use crate::diag::{suggest, Diagnostic};
use crate::ir::tensor::{diff, Leaf, TId, TNode, TensorPool, Window};
use crate::ir::{CmpOp, Func, Shape};
use crate::syntax::ast;

/// Every built-in function with its argument names; the first `required` are mandatory.
const SIGNATURES: &[(&str, &[&str], usize)] = &[
    ("sin", &["x"], 1),
    ("cos", &["x"], 1),
    ("tan", &["x"], 1),
    ("exp", &["x"], 1),
    ("log", &["x"], 1),
    ("sqrt", &["x"], 1),
    ("abs", &["x"], 1),
    ("tanh", &["x"], 1),
    ("sigmoid", &["x"], 1),
    ("relu", &["x"], 1),
    ("softplus", &["x"], 1),
    ("sign", &["x"], 1),
    ("min", &["a", "b"], 2),
    ("max", &["a", "b"], 2),
    ("pow", &["a", "b"], 2),
    ("sum", &["x"], 1),
    ("mean", &["x"], 1),
    ("sumsq", &["x"], 1),
    ("norm", &["x"], 1),
    ("dot", &["a", "b"], 2),
    ("logsumexp", &["x"], 1),
    ("argmax", &["x"], 1),
    ("transpose", &["x"], 1),
    ("trace", &["x"], 1),
    ("diag", &["x", "k"], 1),
    ("linspace", &["a", "b", "n"], 3),
    ("range", &["n"], 1),
    ("outer", &["a", "b"], 2),
    ("eye", &["n"], 1),
    ("zeros", &["m", "n"], 1),
    ("ones", &["m", "n"], 1),
    ("softmax", &["x"], 1),
    ("log_softmax", &["x"], 1),
    ("bce", &["p", "y"], 2),
    ("cross_entropy", &["logits", "class"], 2),
    ("mse", &["a", "b"], 2),
    ("der", &["x"], 1),
    ("grad", &["e", "v"], 2),
    ("jacobian", &["e", "v"], 2),
    ("div", &["e", "v"], 2),
];

/// Names of all built-in functions, for suggestions.
pub(crate) const NAMES: [&str; 40] = {
    let mut names = [""; 40];
    let mut i = 0;
    while i < SIGNATURES.len() {
        names[i] = SIGNATURES[i].0;
        i += 1;
    }
    names
};

/// Whether `name` is a built-in function.
pub(crate) fn is_builtin(name: &str) -> bool {
    SIGNATURES.iter().any(|(n, _, _)| *n == name)
}

/// Matches positional and named arguments to parameter names. Positional arguments fill
/// parameters in order; named ones go by name. Reports too many, unknown, repeated and missing
/// arguments (the first `required` parameters are mandatory) and returns `None` after an error.
pub(crate) fn bind_args<'c>(
    checker: &mut Checker,
    call: &'c ast::Call,
    what: &str,
    params: &[&str],
    required: usize,
) -> Option<Vec<Option<&'c ast::Expr>>> {
    let mut bound: Vec<Option<&ast::Expr>> = vec![None; params.len()];
    let mut ok = true;
    let mut position = 0;
    for arg in &call.args {
        match &arg.name {
            None => {
                if position >= params.len() {
                    checker.diags.error(
                        arg.span,
                        format!(
                            "too many arguments: {what} takes at most {} ({})",
                            params.len(),
                            params.join(", ")
                        ),
                    );
                    ok = false;
                    break;
                }
                bound[position] = Some(&arg.value);
                position += 1;
            }
            Some(name) => match params.iter().position(|p| *p == name.name) {
                Some(i) if bound[i].is_some() => {
                    checker.diags.error(
                        name.span,
                        format!("argument `{}` is given twice", name.name),
                    );
                    ok = false;
                }
                Some(i) => bound[i] = Some(&arg.value),
                None => {
                    let mut d = Diagnostic::error(
                        name.span,
                        format!("{what} has no argument `{}`", name.name),
                    );
                    match suggest(&name.name, params.iter().copied()) {
                        Some(s) => d = d.with_help(format!("did you mean `{s}`?")),
                        None => {
                            d = d.with_help(format!("its arguments are: {}", params.join(", ")))
                        }
                    }
                    checker.diags.push(d);
                    ok = false;
                }
            },
        }
    }
    if !ok {
        return None;
    }
    let missing: Vec<&str> = (0..required)
        .filter(|i| bound[*i].is_none())
        .map(|i| params[i])
        .collect();
    if !missing.is_empty() {
        checker.diags.error(
            call.span,
            format!(
                "{what} needs argument{} {}",
                if missing.len() == 1 { "" } else { "s" },
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return None;
    }
    Some(bound)
}

/// Lowers a call of a built-in function.
pub(crate) fn call<'a>(checker: &mut Checker<'a>, call: &'a ast::Call, scope: &Scope) -> Value {
    let name = call.name.name.as_str();
    let &(_, params, required) = SIGNATURES
        .iter()
        .find(|(n, _, _)| *n == name)
        .expect("is_builtin was checked");
    let what = format!("`{name}`");
    let Some(bound) = bind_args(checker, call, &what, params, required) else {
        return Value::Error;
    };
    let args: Vec<&'a ast::Expr> = bound.iter().flatten().copied().collect();
    // Shape constructors take constant sizes, not values.
    match name {
        "eye" | "zeros" | "ones" => return constructor(checker, name, &args),
        "linspace" => return linspace(checker, call, &args),
        "range" => return range(checker, &args),
        "diag" if args.len() == 2 => return diag_k(checker, call, args[0], args[1], scope),
        "der" => return der(checker, args[0], scope),
        _ => {}
    }
    let mut values = Vec::with_capacity(args.len());
    for arg in &args {
        values.push(checker.lower(arg, scope));
    }
    if values.iter().any(Value::is_error) {
        return Value::Error;
    }
    let span = call.span;
    if let Some(func) = Func::ALL.iter().find(|f| f.name() == name) {
        return checker.apply_func(*func, values.swap_remove(0));
    }
    let b = values.pop();
    let a = values.pop();
    let (a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, Some(b)),
        (None, Some(a)) => (a, None),
        _ => return Value::Error,
    };
    let sa = a.shape().expect("errors filtered");
    let x = a.id().expect("errors filtered");
    let scalar = |id: TId| Value::tensor(id, Shape::Scalar);
    match (name, b) {
        ("min" | "max" | "pow", Some(b)) => {
            let sb = b.shape().expect("errors filtered");
            let f = match name {
                "min" => TensorPool::min,
                "max" => TensorPool::max,
                _ => TensorPool::pow,
            };
            checker.broadcast(a, b, f).unwrap_or_else(|| {
                checker.diags.error(
                    span,
                    format!("`{name}` needs equal shapes or a scalar, found {sa} and {sb}"),
                );
                Value::Error
            })
        }
        ("sum", None) => scalar(checker.model.tensors.sum(x)),
        ("mean", None) => {
            if sa.is_empty() {
                checker
                    .diags
                    .error(span, "the mean of an empty array is undefined");
                return Value::Error;
            }
            let pool = &mut checker.model.tensors;
            let total = pool.sum(x);
            let n = pool.constant(sa.len() as f64);
            scalar(pool.div(total, n))
        }
        ("sumsq", None) => scalar(sumsq(&mut checker.model.tensors, x)),
        ("norm", None) => {
            let pool = &mut checker.model.tensors;
            let s = sumsq(pool, x);
            scalar(pool.func(Func::Sqrt, s))
        }
        ("logsumexp", None) => {
            if sa.is_empty() {
                checker
                    .diags
                    .error(span, "`logsumexp` of an empty array is undefined");
                return Value::Error;
            }
            scalar(logsumexp(&mut checker.model.tensors, x))
        }
        ("argmax", None) => {
            if !matches!(sa, Shape::Vector(n) if n > 0) {
                checker.diags.error(
                    span,
                    format!("`argmax` needs a non-empty vector, found {sa}"),
                );
                return Value::Error;
            }
            scalar(checker.model.tensors.argmax(x))
        }
        ("softmax" | "log_softmax", None) => {
            if !matches!(sa, Shape::Vector(n) if n > 0) {
                checker.diags.error(
                    span,
                    format!("`{name}` needs a non-empty vector, found {sa}"),
                );
                return Value::Error;
            }
            let pool = &mut checker.model.tensors;
            let lse = logsumexp(pool, x);
            let shifted = pool.sub(x, lse);
            let out = if name == "softmax" {
                pool.func(Func::Exp, shifted)
            } else {
                shifted
            };
            Value::tensor(out, sa)
        }
        ("transpose", None) => checker.transpose(a),
        ("trace", None) => match sa {
            Shape::Matrix(m, n) if m == n => {
                let pool = &mut checker.model.tensors;
                let d = pool.diag_part(x);
                scalar(pool.sum(d))
            }
            _ => {
                checker
                    .diags
                    .error(span, format!("`trace` needs a square matrix, found {sa}"));
                Value::Error
            }
        },
        ("diag", None) => match sa {
            Shape::Vector(n) => Value::tensor(checker.model.tensors.diag(x), Shape::Matrix(n, n)),
            Shape::Matrix(m, n) => {
                Value::tensor(checker.model.tensors.diag_part(x), Shape::Vector(m.min(n)))
            }
            Shape::Scalar => {
                checker.diags.error(
                    span,
                    "`diag` needs a vector (to build a matrix) or a matrix (to read its diagonal)",
                );
                Value::Error
            }
        },
        ("dot", Some(b)) => {
            let sb = b.shape().expect("errors filtered");
            if sa != sb || matches!(sa, Shape::Matrix(..)) {
                checker.diags.error(
                    span,
                    format!("`dot` needs two vectors of the same length, found {sa} and {sb}"),
                );
                return Value::Error;
            }
            let y = b.id().expect("errors filtered");
            scalar(checker.model.tensors.dot(x, y))
        }
        ("outer", Some(b)) => {
            let sb = b.shape().expect("errors filtered");
            match (sa, sb) {
                (Shape::Vector(m), Shape::Vector(n)) => {
                    let y = b.id().expect("errors filtered");
                    Value::tensor(checker.model.tensors.outer(x, y), Shape::Matrix(m, n))
                }
                _ => {
                    checker.diags.error(
                        span,
                        format!("`outer` needs two vectors, found {sa} and {sb}"),
                    );
                    Value::Error
                }
            }
        }
        ("bce", Some(b)) => {
            let sb = b.shape().expect("errors filtered");
            let n = sa.len().max(sb.len());
            // −(y log p + (1 − y) log(1 − p)), averaged over elements like PyTorch's BCELoss.
            let losses = checker.broadcast(a, b, |pool, p, y| {
                let one = pool.constant(1.0);
                let log_p = pool.func(Func::Log, p);
                let one_minus_p = pool.sub(one, p);
                let log_q = pool.func(Func::Log, one_minus_p);
                let one_minus_y = pool.sub(one, y);
                let a = pool.mul(y, log_p);
                let b = pool.mul(one_minus_y, log_q);
                let s = pool.add(a, b);
                pool.neg(s)
            });
            match losses {
                Some(v) => mean_of(checker, v, n),
                None => {
                    checker.diags.error(
                        span,
                        format!("`bce` needs equal shapes or a scalar, found {sa} and {sb}"),
                    );
                    Value::Error
                }
            }
        }
        ("mse", Some(b)) => {
            let sb = b.shape().expect("errors filtered");
            let n = sa.len().max(sb.len());
            let squares = checker.broadcast(a, b, |pool, x, y| {
                let d = pool.sub(x, y);
                pool.mul(d, d)
            });
            match squares {
                Some(v) => mean_of(checker, v, n),
                None => {
                    checker.diags.error(
                        span,
                        format!("`mse` needs equal shapes or a scalar, found {sa} and {sb}"),
                    );
                    Value::Error
                }
            }
        }
        ("cross_entropy", Some(b)) => {
            let sb = b.shape().expect("errors filtered");
            let Shape::Vector(n) = sa else {
                return cross_entropy_shapes(checker, span, sa, sb);
            };
            if n == 0 || sb != Shape::Scalar {
                return cross_entropy_shapes(checker, span, sa, sb);
            }
            // logsumexp(z) − z[class], with the class read at run time through indicators
            // `[class == k]`, which a class outside `0..n` would silently miss: a literal class
            // is checked here, a label's values when the data is bound (`data::check_labels`).
            let class = b.id().expect("errors filtered");
            match checker.model.tensors.node(class) {
                TNode::Const(bits) => {
                    let c = f64::from_bits(*bits);
                    if !crate::ir::is_class(c, n) {
                        let c = if c.abs() < 1e15 {
                            c.to_string()
                        } else {
                            format!("{c:e}")
                        };
                        checker.diags.push(
                            Diagnostic::error(
                                args[1].span,
                                format!(
                                    "`cross_entropy` with {n} logits takes a class index {}, found {c}",
                                    crate::ir::classes_text(n)
                                ),
                            )
                            .with_help("classes are counted from 0, one per logit"),
                        );
                        return Value::Error;
                    }
                }
                TNode::Leaf(Leaf::Label(i)) => {
                    if let Some(label) = checker.model.labels.get_mut(*i as usize) {
                        label.classes = Some(label.classes.map_or(n, |c| c.min(n)));
                    }
                }
                _ => {}
            }
            let pool = &mut checker.model.tensors;
            let lse = logsumexp(pool, x);
            let ks: Vec<f64> = (0..n).map(|k| k as f64).collect();
            let ks = pool.literal(&ks, sa);
            let is_k = pool.cmp(CmpOp::Eq, class, ks);
            let z_class = pool.dot(is_k, x);
            scalar(pool.sub(lse, z_class))
        }
        ("grad" | "jacobian" | "div", Some(b)) => calculus(checker, name, a, b, &args),
        _ => {
            checker
                .diags
                .error(span, format!("`{name}` is missing an argument"));
            Value::Error
        }
    }
}

fn cross_entropy_shapes(
    checker: &mut Checker,
    span: crate::diag::Span,
    sa: Shape,
    sb: Shape,
) -> Value {
    checker.diags.error(
        span,
        format!("`cross_entropy` needs a vector of logits and a scalar class index, found {sa} and {sb}"),
    );
    Value::Error
}

fn sumsq(pool: &mut TensorPool, x: TId) -> TId {
    let squares = pool.mul(x, x);
    pool.sum(squares)
}

/// `max(x) + log Σ exp(x − max(x))`: never overflows.
fn logsumexp(pool: &mut TensorPool, x: TId) -> TId {
    if pool.shape(x).len() == 1 {
        return pool.reshape(x, Shape::Scalar);
    }
    let m = pool.max_all(x);
    let shifted = pool.sub(x, m);
    let exps = pool.func(Func::Exp, shifted);
    let total = pool.sum(exps);
    let log = pool.func(Func::Log, total);
    pool.add(m, log)
}

fn mean_of(checker: &mut Checker, v: Value, n: usize) -> Value {
    let Value::Tensor { id, .. } = v else {
        return Value::Error;
    };
    let pool = &mut checker.model.tensors;
    let total = pool.sum(id);
    if n == 1 {
        return Value::tensor(total, Shape::Scalar);
    }
    let count = pool.constant(n as f64);
    Value::tensor(pool.div(total, count), Shape::Scalar)
}

fn constructor<'a>(checker: &mut Checker<'a>, name: &str, args: &[&'a ast::Expr]) -> Value {
    let mut sizes = Vec::new();
    for a in args {
        match checker.const_usize(a, &format!("the size given to `{name}`")) {
            Some(n) => sizes.push(n),
            None => return Value::Error,
        }
    }
    let shape = match (name, sizes.as_slice()) {
        ("eye", [n]) => Shape::Matrix(*n, *n),
        (_, [n]) => Shape::Vector(*n),
        (_, [m, n]) => Shape::Matrix(*m, *n),
        _ => return Value::Error,
    };
    let elements = super::element_count(&match shape {
        Shape::Matrix(m, n) => vec![m, n],
        other => vec![other.len()],
    });
    if elements > super::MAX_ELEMENTS as u128 {
        checker.diags.error(
            args[0].span,
            format!("`{name}` of {elements} elements is too large"),
        );
        return Value::Error;
    }
    let pool = &mut checker.model.tensors;
    let id = match name {
        "ones" => {
            let one = pool.constant(1.0);
            pool.fill(one, shape)
        }
        "zeros" => pool.zeros(shape),
        _ => {
            let one = pool.constant(1.0);
            let ones = pool.fill(one, Shape::Vector(sizes[0]));
            pool.diag(ones)
        }
    };
    Value::tensor(id, shape)
}

/// Checks a constant array size against [`super::MAX_ELEMENTS`].
fn size_ok(checker: &mut Checker, n: usize, what: &str, at: crate::diag::Span) -> bool {
    if n > super::MAX_ELEMENTS {
        checker
            .diags
            .error(at, format!("`{what}` of {n} elements is too large"));
        return false;
    }
    true
}

/// `linspace(a, b, n)`: `n` evenly spaced numbers from `a` to `b`, both included, as numpy's
/// `linspace`: element `k` is `a + k·(b − a)/(n − 1)`, and the last is `b` exactly (not the
/// rounded sum), so a grid's boundary is where the model says it is. One literal node.
fn linspace<'a>(checker: &mut Checker<'a>, call: &'a ast::Call, args: &[&'a ast::Expr]) -> Value {
    let a = checker.const_number(args[0], "the start of `linspace`");
    let b = checker.const_number(args[1], "the end of `linspace`");
    let n = checker.const_usize(args[2], "the number of points of `linspace`");
    let (Some(a), Some(b), Some(n)) = (a, b, n) else {
        return Value::Error;
    };
    if !size_ok(checker, n, "linspace", call.span) {
        return Value::Error;
    }
    let mut values: Vec<f64> = if n < 2 {
        vec![a; n]
    } else {
        let step = (b - a) / (n - 1) as f64;
        (0..n).map(|k| a + k as f64 * step).collect()
    };
    if n >= 2 {
        values[n - 1] = b;
    }
    let shape = Shape::Vector(n);
    Value::tensor(checker.model.tensors.literal(&values, shape), shape)
}

/// `range(n)`: `0, 1, …, n − 1` as a vector; one literal node.
fn range<'a>(checker: &mut Checker<'a>, args: &[&'a ast::Expr]) -> Value {
    let Some(n) = checker.const_usize(args[0], "the length given to `range`") else {
        return Value::Error;
    };
    if !size_ok(checker, n, "range", args[0].span) {
        return Value::Error;
    }
    let values: Vec<f64> = (0..n).map(|k| k as f64).collect();
    let shape = Shape::Vector(n);
    Value::tensor(checker.model.tensors.literal(&values, shape), shape)
}

/// `diag(v, k)`: the square matrix of size `len(v) + |k|` with `v` on diagonal `k` (above the
/// main one for `k > 0`, below for `k < 0`), one scatter of `v` along a window of stride
/// `size + 1`; `diag(A, k)` of a matrix reads that diagonal, one gather. `k = 0` is `diag(x)`.
fn diag_k<'a>(
    checker: &mut Checker<'a>,
    call: &'a ast::Call,
    x: &'a ast::Expr,
    k: &'a ast::Expr,
    scope: &Scope,
) -> Value {
    let v = checker.lower(x, scope);
    let k_value = checker.const_number(k, "the diagonal `k` of `diag`");
    let (Value::Tensor { id, shape }, Some(kv)) = (v, k_value) else {
        return Value::Error;
    };
    if kv.fract() != 0.0 || kv.abs() > 1e9 {
        checker.diags.error(
            k.span,
            format!("the diagonal `k` of `diag` must be an integer, found {kv}"),
        );
        return Value::Error;
    }
    let k = kv as i64;
    let off = k.unsigned_abs() as usize;
    match shape {
        Shape::Vector(n) if k == 0 => {
            Value::tensor(checker.model.tensors.diag(id), Shape::Matrix(n, n))
        }
        Shape::Vector(n) => {
            let m = n + off;
            if !size_ok(checker, m.saturating_mul(m), "diag", call.span) {
                return Value::Error;
            }
            // Element i goes to (i, i + k) above the diagonal, (i + |k|, i) below it.
            let start = if k > 0 { off } else { off * m };
            let window = Window {
                start: start as u32,
                row_stride: 0,
                col_stride: m as u32 + 1,
            };
            let out = Shape::Matrix(m, m);
            Value::tensor(checker.model.tensors.scatter(id, window, out), out)
        }
        Shape::Matrix(rows, cols) => {
            let (r0, c0) = if k >= 0 { (0, off) } else { (off, 0) };
            let len = rows.saturating_sub(r0).min(cols.saturating_sub(c0));
            let window = Window {
                start: (r0 * cols + c0).min(rows * cols) as u32,
                row_stride: 0,
                col_stride: cols as u32 + 1,
            };
            let out = Shape::Vector(len);
            let pool = &mut checker.model.tensors;
            if len == 0 {
                return Value::tensor(pool.zeros(out), out);
            }
            Value::tensor(pool.gather(id, window, out), out)
        }
        Shape::Scalar => {
            checker.diags.error(
                call.span,
                "`diag` needs a vector (to build a matrix) or a matrix (to read its diagonal)",
            );
            Value::Error
        }
    }
}

/// `der(x)`: the right-hand side of state `x`'s equation.
fn der<'a>(checker: &mut Checker<'a>, arg: &'a ast::Expr, scope: &Scope) -> Value {
    let v = checker.lower(arg, scope);
    let Value::Tensor { id, .. } = v else {
        return Value::Error;
    };
    match *checker.model.tensors.node(id) {
        TNode::Leaf(Leaf::State(s)) => checker.equation_value(s as usize, Some(arg.span)),
        _ => {
            checker.diags.push(
                Diagnostic::error(arg.span, "`der` takes a whole state, such as `der(x)`")
                    .with_help("der(x) is the right-hand side of x's equation"),
            );
            Value::Error
        }
    }
}

/// `grad(e, v)`, `jacobian(e, v)` and `div(e, v)`, resolved symbolically now.
fn calculus(checker: &mut Checker, name: &str, e: Value, v: Value, args: &[&ast::Expr]) -> Value {
    let (se, sv) = (
        e.shape().expect("errors filtered"),
        v.shape().expect("errors filtered"),
    );
    let e = e.id().expect("errors filtered");
    let wrt = diff::Wrt::of(&checker.model.tensors, v.id().expect("errors filtered")).filter(|w| {
        matches!(
            checker.model.tensors.node(w.leaf),
            TNode::Leaf(Leaf::State(_) | Leaf::Param(_) | Leaf::Input(_) | Leaf::Time)
        )
    });
    let Some(wrt) = wrt else {
        checker.diags.push(
            Diagnostic::error(
                args[1].span,
                format!(
                    "`{name}` differentiates with respect to a state, a param, an input or `t`"
                ),
            )
            .with_help("name one of them directly, e.g. `grad(Phi(z, t), z)`"),
        );
        return Value::Error;
    };
    let span = args[0].span;
    let pool = &mut checker.model.tensors;
    match name {
        "grad" => {
            if se != Shape::Scalar {
                checker.diags.push(
                    Diagnostic::error(
                        span,
                        format!("`grad` needs a scalar expression, found {se}"),
                    )
                    .with_help("use jacobian(e, v) for a vector expression"),
                );
                return Value::Error;
            }
            Value::tensor(diff::grad(pool, e, &wrt), sv)
        }
        "jacobian" => {
            if matches!(se, Shape::Matrix(..)) || matches!(sv, Shape::Matrix(..)) {
                checker.diags.error(
                    span,
                    format!("`jacobian` needs vectors or scalars, found {se} and {sv}"),
                );
                return Value::Error;
            }
            let j = diff::jacobian(pool, e, &wrt);
            Value::tensor(j, Shape::Matrix(se.len(), sv.len()))
        }
        _ => {
            if se.len() != sv.len() || matches!(se, Shape::Matrix(..)) {
                checker.diags.error(
                    span,
                    format!("`div` needs an expression of the same length as the variable, found {se} and {sv}"),
                );
                return Value::Error;
            }
            Value::tensor(diff::div(pool, e, &wrt), Shape::Scalar)
        }
    }
}
