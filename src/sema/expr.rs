//! Expression lowering: names, operators with their shape rules, indexing, literals and calls.

use super::value::Value;
use super::{builtins, Checker, Item, Lazy, Symbol, MAX_DEPTH, MAX_ELEMENTS};
use crate::diag::{suggest, Diagnostic, Span};
use crate::ir::{CmpOp, ExprId, Func, Node, Shape, Var};
use crate::syntax::ast::{self, BinOp, ExprKind, IndexItem};

/// Names bound by `fn` arguments while a body is lowered, innermost last.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    pub(crate) bindings: Vec<(String, Value)>,
}

impl<'a> Checker<'a> {
    /// Lowers an expression at declaration level (no `fn` arguments in scope).
    pub(crate) fn lower_top(&mut self, expr: &'a ast::Expr) -> Value {
        self.lower(expr, &Scope::default())
    }

    /// Lowers an expression to a value: its shape and one node per element.
    pub(crate) fn lower(&mut self, expr: &'a ast::Expr, scope: &Scope) -> Value {
        if self.check_size(expr.span) {
            return Value::Error;
        }
        match &expr.kind {
            ExprKind::Number(v) => Value::scalar(self.model.pool.constant(*v)),
            ExprKind::Str(_) => {
                self.diags.error(
                    expr.span,
                    "a string is not a number; strings are only for file paths",
                );
                Value::Error
            }
            ExprKind::Range { .. } => {
                self.diags.error(
                    expr.span,
                    "a range `a..b` can only be a column range argument, such as `input = 0..2`",
                );
                Value::Error
            }
            ExprKind::Name(name) => self.lower_name(name, expr.span, scope),
            ExprKind::Neg(operand) => {
                let v = self.lower(operand, scope);
                self.map_elems(v, |pool, x| pool.neg(x))
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.lower(lhs, scope);
                let b = self.lower(rhs, scope);
                self.binary(*op, a, b, expr.span, lhs.span, rhs.span)
            }
            ExprKind::Transpose(operand) => {
                let v = self.lower(operand, scope);
                transpose(v)
            }
            ExprKind::Index { base, items } => {
                let v = self.lower(base, scope);
                self.index(v, items, scope, expr.span)
            }
            ExprKind::List(items) => self.list(items, scope, expr.span),
            ExprKind::Call(call) => self.call(call, scope),
        }
    }

    /// Applies a scalar function to every element.
    pub(crate) fn map_elems(
        &mut self,
        v: Value,
        mut f: impl FnMut(&mut crate::ir::Pool, ExprId) -> ExprId,
    ) -> Value {
        match v {
            Value::Error => Value::Error,
            Value::Array { shape, elems } => {
                let pool = &mut self.model.pool;
                let elems = elems.into_iter().map(|x| f(pool, x)).collect();
                Value::array(shape, elems)
            }
        }
    }

    fn lower_name(&mut self, name: &str, span: Span, scope: &Scope) -> Value {
        if let Some((_, v)) = scope.bindings.iter().rev().find(|(n, _)| n == name) {
            return v.clone();
        }
        let Some(&symbol) = self.symbols.get(name) else {
            return match name {
                "t" => Value::scalar(self.model.pool.var(Var::Time)),
                "pi" => Value::scalar(self.model.pool.constant(std::f64::consts::PI)),
                _ => {
                    self.unknown_name(name, span, scope);
                    Value::Error
                }
            };
        };
        self.used.insert(symbol);
        let leaves = |checker: &mut Checker, shape: Option<Shape>, make: &dyn Fn(u32) -> Var| {
            let Some(shape) = shape else {
                return Value::Error;
            };
            let elems = (0..shape.len() as u32)
                .map(|e| checker.model.pool.var(make(e)))
                .collect();
            Value::array(shape, elems)
        };
        match symbol {
            Symbol::Const(i) => self.const_value(i, span),
            Symbol::Param(i) => {
                let shape = self.params[i].shape;
                leaves(self, shape, &|elem| Var::Param {
                    param: i as u32,
                    elem,
                })
            }
            Symbol::State(i) => {
                let shape = self.states[i].shape;
                leaves(self, shape, &|elem| Var::State {
                    state: i as u32,
                    elem,
                })
            }
            Symbol::Input(i) => {
                let shape = self.inputs[i].shape;
                leaves(self, shape, &|elem| Var::Input {
                    input: i as u32,
                    elem,
                })
            }
            Symbol::Observed(i) => {
                let shape = self.observed[i].shape;
                leaves(self, shape, &|elem| Var::Observed {
                    observed: i as u32,
                    elem,
                })
            }
            Symbol::Label(i) => Value::scalar(self.model.pool.var(Var::Label { label: i as u32 })),
            Symbol::Let(i) => self.let_value(i, span),
            Symbol::Broken => Value::Error,
            Symbol::Fn(_) => {
                self.diags.push(
                    Diagnostic::error(
                        span,
                        format!("`{name}` is a function; call it with its arguments"),
                    )
                    .with_help(format!("write `{name}(...)`")),
                );
                Value::Error
            }
        }
    }

    fn unknown_name(&mut self, name: &str, span: Span, scope: &Scope) {
        let mut candidates: Vec<&str> = scope.bindings.iter().map(|(n, _)| n.as_str()).collect();
        candidates.extend(
            self.symbol_order
                .iter()
                .filter(|n| !matches!(self.symbols[*n], Symbol::Fn(_)))
                .map(String::as_str),
        );
        candidates.extend(["t", "pi"]);
        let mut d = Diagnostic::error(span, format!("unknown name `{name}`"));
        if let Some(s) = suggest(name, candidates.iter().copied()) {
            d = d.with_help(format!("did you mean `{s}`?"));
        } else if builtins::is_builtin(name) || self.symbols.contains_key(name) {
            d = d.with_help(format!(
                "`{name}` is a function; call it with its arguments"
            ));
        }
        self.diags.push(d);
    }

    /// Enters a definition; reports a cycle if it is already being lowered.
    fn enter(&mut self, item: Item, span: Span) -> bool {
        if let Some(pos) = self.in_progress.iter().position(|i| *i == item) {
            let mut names: Vec<String> = self.in_progress[pos..]
                .iter()
                .map(|i| self.item_name(*i))
                .collect();
            names.push(self.item_name(item));
            self.diags
                .error(span, format!("definition cycle: {}", names.join(" -> ")));
            return false;
        }
        if self.in_progress.len() >= MAX_DEPTH {
            self.diags.error(
                span,
                format!("definitions nest more than {MAX_DEPTH} levels deep"),
            );
            return false;
        }
        self.in_progress.push(item);
        true
    }

    fn item_name(&self, item: Item) -> String {
        match item {
            Item::Const(i) => self.consts[i].name.name.clone(),
            Item::Let(i) => self.lets[i].name.name.clone(),
            Item::Equation(i) => format!("d{}/dt", self.states[i].name.name),
            Item::Fn(i) => format!("{}()", self.fns[i].name.name),
        }
    }

    pub(crate) fn const_value(&mut self, i: usize, span: Span) -> Value {
        match &self.consts[i].value {
            Lazy::Done(v) => return v.clone(),
            Lazy::InProgress | Lazy::NotStarted => {}
        }
        if !self.enter(Item::Const(i), span) {
            return Value::Error;
        }
        self.consts[i].value = Lazy::InProgress;
        let name = self.consts[i].name;
        let value = match self.overrides.get(&name.name) {
            Some(v) => Value::scalar(self.model.pool.constant(v)),
            None => {
                let expr = self.consts[i].expr;
                match self.lower_const_value(expr, &format!("const `{}`", name.name)) {
                    Some((shape, values)) => {
                        let elems = values
                            .iter()
                            .map(|v| self.model.pool.constant(*v))
                            .collect();
                        Value::array(shape, elems)
                    }
                    None => Value::Error,
                }
            }
        };
        self.in_progress.pop();
        if let Value::Array { shape, elems } = &value {
            let values = elems
                .iter()
                .map(|e| self.model.pool.const_value(*e).unwrap_or(0.0))
                .collect();
            self.model.consts.push(crate::ir::Const {
                name: name.name.clone(),
                shape: *shape,
                values,
                span: self.consts[i].span,
            });
        }
        self.consts[i].value = Lazy::Done(value.clone());
        value
    }

    pub(crate) fn let_value(&mut self, i: usize, span: Span) -> Value {
        if let Lazy::Done(v) = &self.lets[i].value {
            return v.clone();
        }
        if !self.enter(Item::Let(i), span) {
            return Value::Error;
        }
        self.lets[i].value = Lazy::InProgress;
        let expr = self.lets[i].expr;
        let v = self.lower_top(expr);
        self.in_progress.pop();
        self.lets[i].value = Lazy::Done(v.clone());
        v
    }

    /// The right-hand side of state `i`'s equation, as `der(x)` sees it.
    pub(crate) fn equation_value(&mut self, i: usize, span: Option<Span>) -> Value {
        if let Lazy::Done(v) = &self.states[i].rhs {
            return v.clone();
        }
        let Some((_, rhs, eq_span)) = self.states[i].equation else {
            return Value::Error;
        };
        if !self.enter(Item::Equation(i), span.unwrap_or(eq_span)) {
            return Value::Error;
        }
        self.states[i].rhs = Lazy::InProgress;
        let v = self.lower_top(rhs);
        self.in_progress.pop();
        self.states[i].rhs = Lazy::Done(v.clone());
        v
    }

    /// Calls a user `fn`: arguments are lowered in the caller's scope, the body in a scope that
    /// binds only the arguments, so it is checked for the argument shapes of this call.
    pub(crate) fn call_user_fn(&mut self, i: usize, call: &'a ast::Call, scope: &Scope) -> Value {
        let f = &self.fns[i];
        let (fn_name, params, body) = (f.name, f.params, f.body);
        self.used.insert(Symbol::Fn(i));
        if let Some(arg) = call.args.iter().find(|a| a.name.is_some()) {
            self.diags.error(
                arg.span,
                format!(
                    "`{}` is a user function; pass its arguments by position",
                    fn_name.name
                ),
            );
            return Value::Error;
        }
        if call.args.len() != params.len() {
            let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
            self.diags.error(
                call.span,
                format!(
                    "`{}` takes {} argument{} ({}), found {}",
                    fn_name.name,
                    params.len(),
                    if params.len() == 1 { "" } else { "s" },
                    names.join(", "),
                    call.args.len()
                ),
            );
            return Value::Error;
        }
        let mut inner = Scope::default();
        let mut failed = false;
        for (p, arg) in params.iter().zip(&call.args) {
            let v = self.lower(&arg.value, scope);
            failed |= v.is_error();
            inner.bindings.push((p.name.clone(), v));
        }
        if failed {
            return Value::Error;
        }
        // Calls with the same arguments are the same nodes: memoizing keeps nested calls such as
        // `fn f(x) = g(x) + g(x)` linear in work instead of exponential.
        let key: super::FnCallKey = (
            i,
            inner
                .bindings
                .iter()
                .flat_map(|(_, v)| v.elems().to_vec())
                .collect(),
            inner.bindings.iter().map(|(_, v)| v.shape()).collect(),
        );
        if let Some(v) = self.fn_memo.get(&key) {
            return v.clone();
        }
        if !self.enter(Item::Fn(i), call.span) {
            return Value::Error;
        }
        let v = self.lower(body, &inner);
        self.in_progress.pop();
        self.fn_memo.insert(key, v.clone());
        v
    }

    pub(crate) fn all_const(&self, elems: &[ExprId]) -> bool {
        elems
            .iter()
            .all(|e| matches!(self.model.pool.node(*e), Node::Const(_)))
    }

    /// Lowers an expression that must be constant; reports and returns `None` otherwise.
    pub(crate) fn lower_const_value(
        &mut self,
        expr: &'a ast::Expr,
        what: &str,
    ) -> Option<(Shape, Vec<f64>)> {
        let v = self.lower_top(expr);
        let Value::Array { shape, elems } = v else {
            return None;
        };
        if !self.all_const(&elems) {
            let var = self.find_var(&elems, |_| true);
            let culprit = var.map_or("a non-constant value".to_string(), |v| self.var_name(v));
            self.diags.error(
                expr.span,
                format!("{what} must be a constant, but it depends on {culprit}"),
            );
            return None;
        }
        let values = elems
            .iter()
            .map(|e| self.model.pool.const_value(*e).unwrap_or(0.0))
            .collect();
        Some((shape, values))
    }

    /// A constant scalar.
    pub(crate) fn const_number(&mut self, expr: &'a ast::Expr, what: &str) -> Option<f64> {
        let (shape, values) = self.lower_const_value(expr, what)?;
        if shape != Shape::Scalar {
            self.diags
                .error(expr.span, format!("{what} must be a number, found {shape}"));
            return None;
        }
        if !values[0].is_finite() {
            self.diags.error(
                expr.span,
                format!("{what} must be finite, found {}", values[0]),
            );
            return None;
        }
        Some(values[0])
    }

    /// A constant non-negative integer (a dimension, an index, a count).
    pub(crate) fn const_usize(&mut self, expr: &'a ast::Expr, what: &str) -> Option<usize> {
        let v = self.const_number(expr, what)?;
        if v < 0.0 || v.fract() != 0.0 || v > 1e15 {
            self.diags.error(
                expr.span,
                format!("{what} must be a non-negative integer, found {v}"),
            );
            return None;
        }
        Some(v as usize)
    }

    fn binary(
        &mut self,
        op: BinOp,
        a: Value,
        b: Value,
        span: Span,
        lspan: Span,
        rspan: Span,
    ) -> Value {
        let (
            Value::Array {
                shape: sa,
                elems: ea,
            },
            Value::Array {
                shape: sb,
                elems: eb,
            },
        ) = (&a, &b)
        else {
            return Value::Error;
        };
        let (sa, sb) = (*sa, *sb);
        if op == BinOp::Mul {
            return self.multiply(sa, ea, sb, eb, span, lspan, rspan);
        }
        let f = |pool: &mut crate::ir::Pool, x: ExprId, y: ExprId| -> ExprId {
            match op {
                BinOp::Add => pool.add(x, y),
                BinOp::Sub => pool.sub(x, y),
                BinOp::Div => pool.div(x, y),
                BinOp::ElemMul | BinOp::Mul => pool.mul(x, y),
                BinOp::Pow => pool.pow(x, y),
                BinOp::Lt => pool.cmp(CmpOp::Lt, x, y),
                BinOp::Le => pool.cmp(CmpOp::Le, x, y),
                BinOp::Gt => pool.cmp(CmpOp::Gt, x, y),
                BinOp::Ge => pool.cmp(CmpOp::Ge, x, y),
                BinOp::Eq => pool.cmp(CmpOp::Eq, x, y),
                BinOp::Ne => pool.cmp(CmpOp::Ne, x, y),
            }
        };
        match self.broadcast(sa, ea, sb, eb, f) {
            Some(v) => v,
            None => {
                let verb = match op {
                    BinOp::Add => "add",
                    BinOp::Sub => "subtract",
                    BinOp::Div => "divide",
                    BinOp::ElemMul => "multiply elementwise",
                    BinOp::Pow => "raise",
                    _ => "compare",
                };
                let (x, y) = match op {
                    BinOp::Sub => (sb, sa),
                    BinOp::Pow => (sa, sb),
                    _ => (sa, sb),
                };
                let message = match op {
                    BinOp::Sub => format!("cannot subtract {x} from {y}: shapes differ"),
                    BinOp::Div => format!("cannot divide {sa} by {sb}: shapes differ"),
                    BinOp::Pow => format!("cannot raise {x} to the power {y}: shapes differ"),
                    BinOp::Add => format!("cannot add {sa} and {sb}: shapes differ"),
                    _ => format!("cannot {verb} {sa} and {sb}: shapes differ"),
                };
                self.diags.error(span, message);
                Value::Error
            }
        }
    }

    /// Elementwise op with scalar broadcasting; `None` when shapes are incompatible.
    pub(crate) fn broadcast(
        &mut self,
        sa: Shape,
        ea: &[ExprId],
        sb: Shape,
        eb: &[ExprId],
        f: impl Fn(&mut crate::ir::Pool, ExprId, ExprId) -> ExprId,
    ) -> Option<Value> {
        let pool = &mut self.model.pool;
        if sa == sb {
            let elems = ea.iter().zip(eb).map(|(x, y)| f(pool, *x, *y)).collect();
            Some(Value::array(sa, elems))
        } else if sa == Shape::Scalar {
            let elems = eb.iter().map(|y| f(pool, ea[0], *y)).collect();
            Some(Value::array(sb, elems))
        } else if sb == Shape::Scalar {
            let elems = ea.iter().map(|x| f(pool, *x, eb[0])).collect();
            Some(Value::array(sa, elems))
        } else {
            None
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn multiply(
        &mut self,
        sa: Shape,
        ea: &[ExprId],
        sb: Shape,
        eb: &[ExprId],
        span: Span,
        lspan: Span,
        rspan: Span,
    ) -> Value {
        let _ = (lspan, rspan);
        if sa == Shape::Scalar || sb == Shape::Scalar {
            return self
                .broadcast(sa, ea, sb, eb, |p, x, y| p.mul(x, y))
                .unwrap_or(Value::Error);
        }
        // A vector is a column: [m, n] * [n] -> [m]; a [1, n] row times [n] is a scalar.
        let (m, n, p, b_is_vector) = match (sa, sb) {
            (Shape::Matrix(m, n), Shape::Vector(k)) if n == k => (m, n, 1, true),
            (Shape::Matrix(m, n), Shape::Matrix(k, p)) if n == k => (m, n, p, false),
            (Shape::Vector(_), Shape::Vector(_)) => {
                self.diags.push(
                    Diagnostic::error(
                        span,
                        format!("cannot multiply {sa} by {sb}: `*` of two vectors is not defined"),
                    )
                    .with_help(
                        "use dot(a, b) for the inner product or a .* b for the elementwise product",
                    ),
                );
                return Value::Error;
            }
            (Shape::Vector(_), Shape::Matrix(..)) => {
                self.diags.push(
                    Diagnostic::error(
                        span,
                        format!("cannot multiply {sa} by {sb}: a vector is a column"),
                    )
                    .with_help("transpose it (`x'`) to multiply from the left"),
                );
                return Value::Error;
            }
            _ => {
                self.diags.error(
                    span,
                    format!("cannot multiply {sa} by {sb}: inner dimensions differ"),
                );
                return Value::Error;
            }
        };
        if m.saturating_mul(n).saturating_mul(p) > MAX_ELEMENTS * 64 {
            self.diags.error(
                span,
                format!("the product {sa} * {sb} is too large for the IR"),
            );
            return Value::Error;
        }
        let pool = &mut self.model.pool;
        let mut out = Vec::with_capacity(m * p);
        let mut terms = Vec::with_capacity(n);
        for i in 0..m {
            for j in 0..p {
                terms.clear();
                for k in 0..n {
                    let x = ea[i * n + k];
                    let y = eb[k * p + j];
                    terms.push(pool.mul(x, y));
                }
                out.push(pool.sum(&terms));
            }
        }
        let shape = if b_is_vector {
            if m == 1 && matches!(sa, Shape::Matrix(1, _)) && is_row(sa) {
                Shape::Scalar
            } else {
                Shape::Vector(m)
            }
        } else {
            Shape::Matrix(m, p)
        };
        if shape == Shape::Scalar {
            return Value::scalar(out[0]);
        }
        Value::array(shape, out)
    }

    fn index(&mut self, v: Value, items: &'a [IndexItem], scope: &Scope, span: Span) -> Value {
        let Value::Array { shape, elems } = v else {
            return Value::Error;
        };
        let dims: Vec<usize> = match shape {
            Shape::Scalar => {
                self.diags.error(span, "cannot index a scalar");
                return Value::Error;
            }
            Shape::Vector(n) => vec![n],
            Shape::Matrix(m, n) => vec![m, n],
        };
        if items.len() > dims.len() {
            self.diags.error(
                span,
                format!("too many indices: {shape} takes at most {}", dims.len()),
            );
            return Value::Error;
        }
        // Each index position becomes a list of positions and whether it keeps a dimension.
        let mut selections: Vec<(Vec<usize>, bool)> = Vec::new();
        for (axis, &size) in dims.iter().enumerate() {
            let Some(item) = items.get(axis) else {
                selections.push(((0..size).collect(), true));
                continue;
            };
            match item {
                IndexItem::Single(e) => {
                    let _ = scope;
                    let Some(i) = self.const_index(e) else {
                        return Value::Error;
                    };
                    if i >= size {
                        self.diags.error(
                            e.span,
                            format!(
                                "index {i} is out of range for {shape} (valid: 0 to {})",
                                size.saturating_sub(1)
                            ),
                        );
                        return Value::Error;
                    }
                    selections.push((vec![i], false));
                }
                IndexItem::Slice { start, end, span } => {
                    let a = match start {
                        Some(e) => match self.const_index(e) {
                            Some(a) => a,
                            None => return Value::Error,
                        },
                        None => 0,
                    };
                    let b = match end {
                        Some(e) => match self.const_index(e) {
                            Some(b) => b,
                            None => return Value::Error,
                        },
                        None => size,
                    };
                    if a > b || b > size {
                        self.diags.error(
                            *span,
                            format!("slice {a}:{b} is out of range for {shape} (dimension {size})"),
                        );
                        return Value::Error;
                    }
                    selections.push(((a..b).collect(), true));
                }
            }
        }
        let kept: Vec<usize> = selections
            .iter()
            .filter(|(_, k)| *k)
            .map(|(s, _)| s.len())
            .collect();
        let mut out = Vec::new();
        match dims.len() {
            1 => {
                for &i in &selections[0].0 {
                    out.push(elems[i]);
                }
            }
            _ => {
                let n = dims[1];
                for &i in &selections[0].0 {
                    for &j in &selections[1].0 {
                        out.push(elems[i * n + j]);
                    }
                }
            }
        }
        let shape = match kept.as_slice() {
            [] => Shape::Scalar,
            [n] => Shape::Vector(*n),
            [m, n] => Shape::Matrix(*m, *n),
            _ => unreachable!("at most two dimensions"),
        };
        Value::array(shape, out)
    }

    fn const_index(&mut self, e: &'a ast::Expr) -> Option<usize> {
        let v = self.lower_top(e);
        let Value::Array { shape, elems } = v else {
            return None;
        };
        let value = match (
            shape,
            elems.first().and_then(|e| self.model.pool.const_value(*e)),
        ) {
            (Shape::Scalar, Some(value)) => value,
            _ => {
                self.diags
                    .error(e.span, "an index must be a constant integer");
                return None;
            }
        };
        if value < 0.0 || value.fract() != 0.0 {
            self.diags.error(
                e.span,
                format!("an index must be a non-negative integer, found {value}"),
            );
            return None;
        }
        Some(value as usize)
    }

    fn list(&mut self, items: &'a [ast::Expr], scope: &Scope, span: Span) -> Value {
        let is_matrix =
            !items.is_empty() && items.iter().all(|i| matches!(i.kind, ExprKind::List(_)));
        if is_matrix {
            let mut rows: Vec<Vec<ExprId>> = Vec::new();
            for item in items {
                let ExprKind::List(row_items) = &item.kind else {
                    unreachable!()
                };
                let Some(row) = self.concat(row_items, scope) else {
                    return Value::Error;
                };
                if let Some(first) = rows.first() {
                    if first.len() != row.len() {
                        self.diags.error(
                            item.span,
                            format!(
                                "row {} has {} elements but row 1 has {}",
                                rows.len() + 1,
                                row.len(),
                                first.len()
                            ),
                        );
                        return Value::Error;
                    }
                }
                rows.push(row);
            }
            let (m, n) = (rows.len(), rows[0].len());
            return Value::array(Shape::Matrix(m, n), rows.concat());
        }
        match self.concat(items, scope) {
            Some(elems) => {
                if elems.len() > MAX_ELEMENTS {
                    self.diags.error(span, "the list is too long");
                    return Value::Error;
                }
                Value::array(Shape::Vector(elems.len()), elems)
            }
            None => Value::Error,
        }
    }

    /// Concatenates scalars and vectors; `None` after reporting an error.
    fn concat(&mut self, items: &'a [ast::Expr], scope: &Scope) -> Option<Vec<ExprId>> {
        let mut elems = Vec::new();
        let mut failed = false;
        for item in items {
            match self.lower(item, scope) {
                Value::Error => failed = true,
                Value::Array {
                    shape: Shape::Matrix(m, n),
                    ..
                } => {
                    self.diags.error(
                        item.span,
                        format!("a list concatenates scalars and vectors, but this is a [{m}, {n}] matrix"),
                    );
                    failed = true;
                }
                Value::Array { elems: e, .. } => elems.extend(e),
            }
        }
        if failed {
            None
        } else {
            Some(elems)
        }
    }

    /// Function-call dispatch: user functions first, then built-ins.
    fn call(&mut self, call: &'a ast::Call, scope: &Scope) -> Value {
        let name = call.name.name.as_str();
        if let Some(&Symbol::Fn(i)) = self.symbols.get(name) {
            return self.call_user_fn(i, call, scope);
        }
        if builtins::is_builtin(name) {
            return builtins::call(self, call, scope);
        }
        if let Some(Symbol::Broken) = self.symbols.get(name) {
            return Value::Error;
        }
        if let Some(symbol) = self.symbols.get(name) {
            self.diags.error(
                call.name.span,
                format!("`{name}` is a {}, not a function", symbol.kind_name()),
            );
            return Value::Error;
        }
        let mut candidates: Vec<&str> = self
            .symbol_order
            .iter()
            .filter(|n| matches!(self.symbols[*n], Symbol::Fn(_)))
            .map(String::as_str)
            .collect();
        candidates.extend(builtins::NAMES.iter().copied());
        let mut d = Diagnostic::error(call.name.span, format!("unknown function `{name}`"));
        if let Some(s) = suggest(name, candidates.iter().copied()) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        self.diags.push(d);
        Value::Error
    }

    /// Applies an elementwise function.
    pub(crate) fn apply_func(&mut self, func: Func, v: Value) -> Value {
        self.map_elems(v, |pool, x| pool.func(func, x))
    }
}

fn is_row(shape: Shape) -> bool {
    matches!(shape, Shape::Matrix(1, _))
}

/// Transposes: a vector becomes a `[1, n]` row, a matrix is transposed, a scalar stays.
pub(crate) fn transpose(v: Value) -> Value {
    match v {
        Value::Error => Value::Error,
        Value::Array { shape, elems } => match shape {
            Shape::Scalar => Value::array(shape, elems),
            Shape::Vector(n) => Value::array(Shape::Matrix(1, n), elems),
            Shape::Matrix(m, n) => {
                let mut out = Vec::with_capacity(m * n);
                for j in 0..n {
                    for i in 0..m {
                        out.push(elems[i * n + j]);
                    }
                }
                Value::array(Shape::Matrix(n, m), out)
            }
        },
    }
}
