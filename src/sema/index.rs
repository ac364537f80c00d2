//! Index forms: `sum(i in a..b, EXPR)` and `[EXPR for i in a..b]`, lowered as one tensor
//! expression over the index vector, never as `b − a` copies of `EXPR`.
//!
//! The index `i` is the literal vector `a, a + 1, …, b − 1` (an [`IValue::Indexed`] value: one
//! element per `i`); elementwise arithmetic and elementwise functions map it, and an index
//! `x[c·i + d]` is one strided gather of `x`. So `sum(i in 0..N, x[i] * x[i + 1])` is
//! `sum(gather(x, 0, 1) .* gather(x, 1, 1))` whatever `N`, and the tensor pool does not grow
//! with the range. Everything else (a reduction, a list, a user `fn`, a nested index form) must
//! not see a value that varies with `i`: [`Checker::lower`] refuses one with a located error,
//! so no form can silently read the index vector as an ordinary vector.

use super::expr::Scope;
use super::value::Value;
use super::{Checker, MAX_INDEX_RANGE};
use crate::diag::{Diagnostic, Span};
use crate::ir::tensor::{TId, Window};
use crate::ir::{Func, Shape};
use crate::syntax::ast::{self, BinOp, ExprKind, IndexItem};

/// The index of the index form being lowered.
#[derive(Clone, Debug)]
pub(crate) struct IndexVar {
    /// Its name.
    name: String,
    /// Its first value.
    start: usize,
    /// How many values it takes.
    n: usize,
}

impl IndexVar {
    fn range(&self) -> String {
        format!("{}..{}", self.start, self.start + self.n)
    }
}

/// Which index form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// `sum(i in a..b, EXPR)`
    Sum,
    /// `[EXPR for i in a..b]`
    Vector,
}

/// A value inside an index form's body.
#[derive(Clone, Copy, Debug)]
enum IValue {
    /// The same for every `i`.
    Plain(Value),
    /// A number for each `i`: a vector node with one element per value of the index.
    Indexed(TId),
}

/// Whether `expr` mentions the name `var` anywhere (index forms do not nest, so no binder
/// inside can shadow it).
fn mentions(expr: &ast::Expr, var: &str) -> bool {
    match &expr.kind {
        ExprKind::Name(n) => n == var,
        ExprKind::Number(_) | ExprKind::Str(_) => false,
        ExprKind::Neg(e) | ExprKind::Transpose(e) => mentions(e, var),
        ExprKind::Binary { lhs, rhs, .. }
        | ExprKind::Range {
            start: lhs,
            end: rhs,
        } => mentions(lhs, var) || mentions(rhs, var),
        ExprKind::Call(c) => c.args.iter().any(|a| mentions(&a.value, var)),
        ExprKind::List(items) => items.iter().any(|e| mentions(e, var)),
        ExprKind::Index { base, items } => {
            mentions(base, var)
                || items.iter().any(|item| match item {
                    IndexItem::Single(e) => mentions(e, var),
                    IndexItem::Slice { start, end, .. } => {
                        start.iter().chain(end.iter()).any(|e| mentions(e, var))
                    }
                })
        }
        ExprKind::IndexSum { binder, body } | ExprKind::Comprehension { binder, body } => {
            mentions(&binder.start, var) || mentions(&binder.end, var) || mentions(body, var)
        }
    }
}

impl<'a> Checker<'a> {
    /// `sum(i in a..b, body)` or `[body for i in a..b]`.
    pub(crate) fn index_form(
        &mut self,
        form: Form,
        binder: &'a ast::Binder,
        body: &'a ast::Expr,
        scope: &Scope,
    ) -> Value {
        if let Some(outer) = &scope.index {
            self.diags.push(
                Diagnostic::error(
                    binder.span,
                    format!(
                        "index forms cannot be nested: this one is inside the index form over `{}`",
                        outer.name
                    ),
                )
                .with_help("write the inner one as a matrix product, or in a `let` that does not depend on the outer index"),
            );
            return Value::Error;
        }
        let name = &binder.var.name;
        let start = self.const_usize(&binder.start, &format!("the start of `{name}`'s range"));
        let end = self.const_usize(&binder.end, &format!("the end of `{name}`'s range"));
        let (Some(start), Some(end)) = (start, end) else {
            return Value::Error;
        };
        if end < start {
            self.diags.error(
                binder.span,
                format!("the range {start}..{end} of `{name}` runs backwards"),
            );
            return Value::Error;
        }
        let n = end - start;
        if n > MAX_INDEX_RANGE {
            self.diags.error(
                binder.span,
                format!(
                    "the range of `{name}` has {n} values, more than the limit of {MAX_INDEX_RANGE}"
                ),
            );
            return Value::Error;
        }
        let inner = Scope {
            bindings: scope.bindings.clone(),
            index: Some(IndexVar {
                name: name.clone(),
                start,
                n,
            }),
        };
        let v = self.lower_indexed(body, &inner);
        let pool = &mut self.model.tensors;
        let vector = Shape::Vector(n);
        match (form, v) {
            (_, IValue::Plain(Value::Error)) => Value::Error,
            (Form::Sum, IValue::Indexed(id)) => Value::tensor(pool.sum(id), Shape::Scalar),
            (Form::Vector, IValue::Indexed(id)) => Value::tensor(id, vector),
            // A body that does not vary with the index: n equal terms.
            (
                Form::Sum,
                IValue::Plain(Value::Tensor {
                    id,
                    shape: Shape::Scalar,
                }),
            ) => {
                let count = pool.constant(n as f64);
                Value::tensor(pool.mul(count, id), Shape::Scalar)
            }
            (
                Form::Vector,
                IValue::Plain(Value::Tensor {
                    id,
                    shape: Shape::Scalar,
                }),
            ) => Value::tensor(pool.fill(id, vector), vector),
            (_, IValue::Plain(Value::Tensor { shape, .. })) => {
                self.diags.push(
                    Diagnostic::error(
                        body.span,
                        format!("the body of an index form must be a number for each `{name}`, found {shape}"),
                    )
                    .with_help(format!("index it, e.g. `x[{name}]`")),
                );
                Value::Error
            }
        }
    }

    /// [`Checker::lower`] inside an index form: a value that varies with the index is refused.
    pub(crate) fn lower_in_index_form(&mut self, expr: &'a ast::Expr, scope: &Scope) -> Value {
        match self.lower_indexed(expr, scope) {
            IValue::Plain(v) => v,
            IValue::Indexed(_) => {
                let name = scope.index.as_ref().map_or("", |v| v.name.as_str());
                self.diags.push(
                    Diagnostic::error(
                        expr.span,
                        format!("this depends on the index `{name}` and cannot be used here"),
                    )
                    .with_help(format!(
                        "in an index form, `{name}` may appear in arithmetic, elementwise functions and indices such as `x[{name} + 1]`"
                    )),
                );
                Value::Error
            }
        }
    }

    /// Lowers part of an index form's body: an indexed value when it varies with the index.
    fn lower_indexed(&mut self, expr: &'a ast::Expr, scope: &Scope) -> IValue {
        let var = scope.index.clone().expect("inside an index form");
        if !mentions(expr, &var.name) {
            return IValue::Plain(self.lower_plain(expr, scope));
        }
        match &expr.kind {
            ExprKind::Name(n) if *n == var.name => {
                let values: Vec<f64> = (var.start..var.start + var.n).map(|k| k as f64).collect();
                IValue::Indexed(self.model.tensors.literal(&values, Shape::Vector(var.n)))
            }
            // A number for each `i` is its own transpose.
            ExprKind::Transpose(e) => match self.lower_indexed(e, scope) {
                IValue::Plain(v) => IValue::Plain(self.transpose(v)),
                indexed => indexed,
            },
            ExprKind::Neg(e) => {
                let v = self.lower_indexed(e, scope);
                self.elementwise(&[(v, e.span)], &var, |pool, x| pool.neg(x[0]))
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.lower_indexed(lhs, scope);
                let b = self.lower_indexed(rhs, scope);
                if let (IValue::Plain(a), IValue::Plain(b)) = (a, b) {
                    return IValue::Plain(self.binary(*op, a, b, expr.span, lhs.span, rhs.span));
                }
                // Numbers for each `i`: `*` is the elementwise product.
                let op = if *op == BinOp::Mul {
                    BinOp::ElemMul
                } else {
                    *op
                };
                let parts = [(a, lhs.span), (b, rhs.span)];
                let Some((ids, _)) = self.per_index(&parts, &var) else {
                    return IValue::Plain(Value::Error);
                };
                let shape = |id: TId, c: &Checker| c.model.tensors.shape(id);
                let (x, y) = (ids[0], ids[1]);
                let (sx, sy) = (shape(x, self), shape(y, self));
                match self.binary(
                    op,
                    Value::tensor(x, sx),
                    Value::tensor(y, sy),
                    expr.span,
                    lhs.span,
                    rhs.span,
                ) {
                    Value::Tensor { id, .. } => IValue::Indexed(id),
                    Value::Error => IValue::Plain(Value::Error),
                }
            }
            ExprKind::Index { base, items } => self.index_by(base, items, scope, &var, expr.span),
            ExprKind::Call(call) if self.is_elementwise_builtin(&call.name.name) => {
                self.elementwise_call(call, scope, &var)
            }
            _ => IValue::Plain(self.lower_plain(expr, scope)),
        }
    }

    /// Whether `name` is an elementwise built-in (not shadowed by a user `fn`).
    fn is_elementwise_builtin(&self, name: &str) -> bool {
        !self.symbols.contains_key(name)
            && (Func::ALL.iter().any(|f| f.name() == name) || matches!(name, "min" | "max" | "pow"))
    }

    /// `sin(EXPR)`, `min(a, b)`, ... applied to numbers for each `i`.
    fn elementwise_call(&mut self, call: &'a ast::Call, scope: &Scope, var: &IndexVar) -> IValue {
        let name = call.name.name.as_str();
        let params: &[&str] = if matches!(name, "min" | "max" | "pow") {
            &["a", "b"]
        } else {
            &["x"]
        };
        let what = format!("`{name}`");
        let Some(bound) = super::builtins::bind_args(self, call, &what, params, params.len())
        else {
            return IValue::Plain(Value::Error);
        };
        let args: Vec<&'a ast::Expr> = bound.into_iter().flatten().collect();
        let parts: Vec<(IValue, Span)> = args
            .iter()
            .map(|a| (self.lower_indexed(a, scope), a.span))
            .collect();
        let func = Func::ALL.iter().copied().find(|f| f.name() == name);
        self.elementwise(&parts, var, |pool, x| match (func, name) {
            (Some(f), _) => pool.func(f, x[0]),
            (None, "min") => pool.min(x[0], x[1]),
            (None, "max") => pool.max(x[0], x[1]),
            _ => pool.pow(x[0], x[1]),
        })
    }

    /// Applies an elementwise operation to numbers for each `i` (scalars broadcast).
    fn elementwise(
        &mut self,
        parts: &[(IValue, Span)],
        var: &IndexVar,
        f: impl FnOnce(&mut crate::ir::tensor::TensorPool, &[TId]) -> TId,
    ) -> IValue {
        let Some((ids, indexed)) = self.per_index(parts, var) else {
            return IValue::Plain(Value::Error);
        };
        let out = f(&mut self.model.tensors, &ids);
        if indexed {
            IValue::Indexed(out)
        } else {
            IValue::Plain(Value::tensor(out, Shape::Scalar))
        }
    }

    /// The nodes of operands that must each be a number for each `i`: an indexed value or a
    /// scalar. Reports any other shape; also says whether any operand varies with `i`.
    fn per_index(&mut self, parts: &[(IValue, Span)], var: &IndexVar) -> Option<(Vec<TId>, bool)> {
        let mut ids = Vec::with_capacity(parts.len());
        let mut indexed = false;
        let mut failed = false;
        for &(v, span) in parts {
            match v {
                IValue::Indexed(id) => {
                    indexed = true;
                    ids.push(id);
                }
                IValue::Plain(Value::Error) => failed = true,
                IValue::Plain(Value::Tensor {
                    id,
                    shape: Shape::Scalar,
                }) => ids.push(id),
                IValue::Plain(Value::Tensor { shape, .. }) => {
                    self.diags.push(
                        Diagnostic::error(
                            span,
                            format!(
                                "the body of an index form is a number for each `{}`, but this is {shape}",
                                var.name
                            ),
                        )
                        .with_help(format!("index it, e.g. `x[{}]`", var.name)),
                    );
                    failed = true;
                }
            }
        }
        (!failed).then_some((ids, indexed))
    }

    /// `x[c·i + d]`, `A[i, j + 1]`, ...: one strided gather of the base, one element per `i`.
    fn index_by(
        &mut self,
        base: &'a ast::Expr,
        items: &'a [IndexItem],
        scope: &Scope,
        var: &IndexVar,
        span: Span,
    ) -> IValue {
        let Value::Tensor { id, shape } = self.lower(base, scope) else {
            return IValue::Plain(Value::Error);
        };
        let dims: Vec<usize> = match shape {
            Shape::Scalar => {
                self.diags.error(span, "cannot index a scalar");
                return IValue::Plain(Value::Error);
            }
            Shape::Vector(n) => vec![n],
            Shape::Matrix(m, n) => vec![m, n],
        };
        let singles: Vec<&'a ast::Expr> = items
            .iter()
            .filter_map(|item| match item {
                IndexItem::Single(e) => Some(e),
                IndexItem::Slice { .. } => None,
            })
            .collect();
        if singles.len() != items.len() || items.len() != dims.len() {
            self.diags.push(
                Diagnostic::error(
                    span,
                    format!(
                        "the body of an index form is a number for each `{}`: index every dimension of {shape} with a number",
                        var.name
                    ),
                )
                .with_help(format!("e.g. `A[{0}, {0}]`; slices cannot depend on `{0}`", var.name)),
            );
            return IValue::Plain(Value::Error);
        }
        // Each position as `first + step·k` for the k-th value of the index.
        let mut affine = Vec::with_capacity(dims.len());
        for (e, &size) in singles.iter().zip(&dims) {
            match self.affine_index(e, size, shape, scope, var) {
                Some(a) => affine.push(a),
                None => return IValue::Plain(Value::Error),
            }
        }
        let cols = *dims.last().expect("at least one dimension");
        let (start, step) = match affine[..] {
            [(d, c)] => (d, c),
            [(dr, cr), (dc, cc)] => (dr * cols + dc, cr * cols + cc),
            _ => unreachable!("at most two dimensions"),
        };
        let pool = &mut self.model.tensors;
        let out = Shape::Vector(var.n);
        if var.n == 0 {
            return IValue::Indexed(pool.zeros(out));
        }
        let window = Window {
            start: start as u32,
            row_stride: 0,
            col_stride: step as u32,
        };
        IValue::Indexed(pool.gather(id, window, out))
    }

    /// One index position of `index_by` as `(first, step)`: its value at the k-th value of the
    /// index is `first + step·k`. Reports an index that is not a non-negative integer, not
    /// affine in the index, decreasing, or out of range for some value of the index.
    fn affine_index(
        &mut self,
        e: &'a ast::Expr,
        size: usize,
        shape: Shape,
        scope: &Scope,
        var: &IndexVar,
    ) -> Option<(usize, usize)> {
        let name = &var.name;
        let values = match self.lower_indexed(e, scope) {
            IValue::Plain(Value::Error) => return None,
            IValue::Plain(_) => vec![self.const_index(e)? as f64; var.n],
            IValue::Indexed(id) => match self.constant_elements(id) {
                Some(values) => values,
                None => {
                    self.diags.error(
                        e.span,
                        format!("an index must be a constant integer for each `{name}`"),
                    );
                    return None;
                }
            },
        };
        let at = |k: usize| var.start + k;
        for (k, &v) in values.iter().enumerate() {
            if v < 0.0 || v.fract() != 0.0 || !v.is_finite() {
                self.diags.error(
                    e.span,
                    format!(
                        "this index is {v} when `{name}` = {}; an index must be a non-negative integer (`{name}` runs over {})",
                        at(k),
                        var.range()
                    ),
                );
                return None;
            }
        }
        if values.is_empty() {
            return Some((0, 0));
        }
        let first = values[0];
        let step = values.get(1).map_or(0.0, |v| v - first);
        if values
            .iter()
            .enumerate()
            .any(|(k, &v)| v != first + step * k as f64)
        {
            let shown: Vec<String> = values.iter().take(4).map(|v| v.to_string()).collect();
            let more = if values.len() > 4 { ", …" } else { "" };
            self.diags.push(
                Diagnostic::error(
                    e.span,
                    format!(
                        "this index is not affine in `{name}`: for `{name}` in {} it takes {}{more}",
                        var.range(),
                        shown.join(", ")
                    ),
                )
                .with_help(format!("an index in an index form must be `c * {name} + d` with constant integers c ≥ 0 and d")),
            );
            return None;
        }
        if step < 0.0 {
            self.diags.push(
                Diagnostic::error(
                    e.span,
                    format!(
                        "this index decreases as `{name}` grows ({first}, {}, …): only increasing or constant indices are supported",
                        first + step
                    ),
                )
                .with_help(format!("substitute `{name}` so that the index increases")),
            );
            return None;
        }
        let last = *values.last().expect("not empty");
        if last >= size as f64 {
            let k = values
                .iter()
                .position(|&v| v >= size as f64)
                .expect("the last one is");
            self.diags.error(
                e.span,
                format!(
                    "this index is {} when `{name}` = {}, out of range for {shape} (valid: 0 to {}; `{name}` runs over {})",
                    values[k],
                    at(k),
                    size.saturating_sub(1),
                    var.range()
                ),
            );
            return None;
        }
        Some((first as usize, step as usize))
    }
}
