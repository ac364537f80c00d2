//! Expression lowering: names, operators with their shape rules, indexing, literals and calls.

use super::value::Value;
use super::{builtins, Checker, Item, Lazy, Symbol, MAX_DEPTH, MAX_ELEMENTS};
use crate::diag::{suggest, Diagnostic, Span};
use crate::ir::tensor::{Leaf, TId, TensorPool, Window};
use crate::ir::{CmpOp, Func, Shape};
use crate::syntax::ast::{self, BinOp, ExprKind, IndexItem};

/// Names bound by `fn` arguments while a body is lowered, innermost last, and the index of the
/// index form (`sum(i in ..)`, `[.. for i in ..]`) whose body is being lowered, if any.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    pub(crate) bindings: Vec<(String, Value)>,
    pub(crate) index: Option<super::index::IndexVar>,
}

impl<'a> Checker<'a> {
    /// Lowers an expression at declaration level (no `fn` arguments in scope).
    pub(crate) fn lower_top(&mut self, expr: &'a ast::Expr) -> Value {
        self.lower(expr, &Scope::default())
    }

    /// Lowers an expression to a value: its shape and its tensor node. Inside an index form, a
    /// value that depends on the index is refused here: only the elementwise forms that
    /// [`Checker::lower_indexed`] handles may take one.
    pub(crate) fn lower(&mut self, expr: &'a ast::Expr, scope: &Scope) -> Value {
        if scope.index.is_some() {
            return self.lower_in_index_form(expr, scope);
        }
        self.lower_plain(expr, scope)
    }

    /// Lowers an expression whose value does not vary with an index form's index.
    pub(crate) fn lower_plain(&mut self, expr: &'a ast::Expr, scope: &Scope) -> Value {
        if self.check_size(expr.span) {
            return Value::Error;
        }
        match &expr.kind {
            ExprKind::Number(v) => self.scalar_constant(*v),
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
                self.map(v, |pool, x| pool.neg(x))
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.lower(lhs, scope);
                let b = self.lower(rhs, scope);
                self.binary(*op, a, b, expr.span, lhs.span, rhs.span)
            }
            ExprKind::Transpose(operand) => {
                let v = self.lower(operand, scope);
                self.transpose(v)
            }
            ExprKind::Index { base, items } => {
                let v = self.lower(base, scope);
                self.index(v, items, scope, expr.span)
            }
            ExprKind::List(items) => self.list(items, scope, expr.span),
            ExprKind::Call(call) => self.call(call, scope),
            ExprKind::IndexSum { binder, body } => {
                self.index_form(super::index::Form::Sum, binder, body, scope)
            }
            ExprKind::Comprehension { binder, body } => {
                self.index_form(super::index::Form::Vector, binder, body, scope)
            }
        }
    }

    /// A scalar constant.
    pub(crate) fn scalar_constant(&mut self, v: f64) -> Value {
        Value::tensor(self.model.tensors.constant(v), Shape::Scalar)
    }

    /// Applies a shape-preserving operation to a value's node.
    pub(crate) fn map(&mut self, v: Value, f: impl FnOnce(&mut TensorPool, TId) -> TId) -> Value {
        match v {
            Value::Error => Value::Error,
            Value::Tensor { id, shape } => Value::tensor(f(&mut self.model.tensors, id), shape),
        }
    }

    fn lower_name(&mut self, name: &str, span: Span, scope: &Scope) -> Value {
        if let Some((_, v)) = scope.bindings.iter().rev().find(|(n, _)| n == name) {
            return *v;
        }
        let Some(&symbol) = self.symbols.get(name) else {
            return match name {
                "t" => Value::tensor(
                    self.model.tensors.leaf(Leaf::Time, Shape::Scalar),
                    Shape::Scalar,
                ),
                "pi" => self.scalar_constant(std::f64::consts::PI),
                _ => {
                    self.unknown_name(name, span, scope);
                    Value::Error
                }
            };
        };
        self.used.insert(symbol);
        let leaf = |checker: &mut Checker, shape: Option<Shape>, leaf: Leaf| match shape {
            Some(shape) => Value::tensor(checker.model.tensors.leaf(leaf, shape), shape),
            None => Value::Error,
        };
        match symbol {
            Symbol::Const(i) => self.const_value(i, span),
            Symbol::Param(i) => leaf(self, self.params[i].shape, Leaf::Param(i as u32)),
            Symbol::State(i) => leaf(self, self.states[i].shape, Leaf::State(i as u32)),
            Symbol::Input(i) => leaf(self, self.inputs[i].shape, Leaf::Input(i as u32)),
            Symbol::Observed(i) => leaf(self, self.observed[i].shape, Leaf::Observed(i as u32)),
            Symbol::Label(i) => leaf(self, Some(Shape::Scalar), Leaf::Label(i as u32)),
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
            // The suggested name is probably the one meant: count it as used, so the typo is
            // one error and not also a "never used" warning for the name it hid.
            if let Some(symbol) = self.symbols.get(s).copied() {
                self.used.insert(symbol);
            }
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
            Lazy::Done(v) => return *v,
            Lazy::InProgress | Lazy::NotStarted => {}
        }
        if !self.enter(Item::Const(i), span) {
            return Value::Error;
        }
        self.consts[i].value = Lazy::InProgress;
        let name = self.consts[i].name;
        let (value, values) = match self.overrides.get(&name.name) {
            Some(v) => (self.scalar_constant(v), vec![v]),
            None => {
                let expr = self.consts[i].expr;
                match self.lower_const_value(expr, &format!("const `{}`", name.name)) {
                    Some((shape, values)) => {
                        let id = self.model.tensors.literal(&values, shape);
                        (Value::tensor(id, shape), values)
                    }
                    None => (Value::Error, Vec::new()),
                }
            }
        };
        self.in_progress.pop();
        if let Some(shape) = value.shape() {
            self.model.consts.push(crate::ir::Const {
                name: name.name.clone(),
                shape,
                values,
                span: self.consts[i].span,
            });
        }
        self.consts[i].value = Lazy::Done(value);
        value
    }

    pub(crate) fn let_value(&mut self, i: usize, span: Span) -> Value {
        if let Lazy::Done(v) = &self.lets[i].value {
            return *v;
        }
        if !self.enter(Item::Let(i), span) {
            return Value::Error;
        }
        self.lets[i].value = Lazy::InProgress;
        let expr = self.lets[i].expr;
        let v = self.lower_top(expr);
        self.in_progress.pop();
        self.lets[i].value = Lazy::Done(v);
        v
    }

    /// The right-hand side of state `i`'s equation, as `der(x)` sees it.
    pub(crate) fn equation_value(&mut self, i: usize, span: Option<Span>) -> Value {
        if let Lazy::Done(v) = &self.states[i].rhs {
            return *v;
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
        self.states[i].rhs = Lazy::Done(v);
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
            inner.bindings.iter().map(|(_, v)| v.id()).collect(),
            inner.bindings.iter().map(|(_, v)| v.shape()).collect(),
        );
        if let Some(v) = self.fn_memo.get(&key) {
            return *v;
        }
        if !self.enter(Item::Fn(i), call.span) {
            return Value::Error;
        }
        let v = self.lower(body, &inner);
        self.in_progress.pop();
        self.fn_memo.insert(key, v);
        v
    }

    /// The value of a node that reads no leaf, computed by the tensor interpreter.
    pub(crate) fn constant_elements(&self, id: TId) -> Option<Vec<f64>> {
        if let Some(values) = self.model.tensors.const_elements(id) {
            return Some(values);
        }
        if self.find_leaf(&[id], |_| true).is_some() {
            return None;
        }
        // The interpreter evaluates every node below its root, leaves included: copy the
        // nodes the root reads (no leaf among them) into a pool of their own first.
        let pool = &self.model.tensors;
        let mut reach = vec![false; id.index() + 1];
        reach[id.index()] = true;
        for i in (0..=id.index()).rev() {
            if reach[i] {
                pool.node(TId(i as u32))
                    .for_each_operand(|c| reach[c.index()] = true);
            }
        }
        let mut copy = TensorPool::new();
        let mut map = vec![TId(0); id.index() + 1];
        for i in (0..=id.index()).filter(|&i| reach[i]) {
            let old = TId(i as u32);
            let node = pool.node(old).map_operands(|c| map[c.index()]);
            map[i] = copy.intern(node, pool.shape(old));
        }
        let mut values = crate::ir::tensor::eval(&copy, &[map[id.index()]], &|_| Vec::new());
        values.pop()
    }

    /// Lowers an expression that must be constant; reports and returns `None` otherwise.
    pub(crate) fn lower_const_value(
        &mut self,
        expr: &'a ast::Expr,
        what: &str,
    ) -> Option<(Shape, Vec<f64>)> {
        let v = self.lower_top(expr);
        let Value::Tensor { shape, id } = v else {
            return None;
        };
        match self.constant_elements(id) {
            Some(values) => Some((shape, values)),
            None => {
                let leaf = self.find_leaf(&[id], |_| true);
                let culprit =
                    leaf.map_or("a non-constant value".to_string(), |l| self.leaf_name(l));
                self.diags.error(
                    expr.span,
                    format!("{what} must be a constant, but it depends on {culprit}"),
                );
                None
            }
        }
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

    pub(crate) fn binary(
        &mut self,
        op: BinOp,
        a: Value,
        b: Value,
        span: Span,
        lspan: Span,
        rspan: Span,
    ) -> Value {
        let (Value::Tensor { shape: sa, .. }, Value::Tensor { shape: sb, .. }) = (a, b) else {
            return Value::Error;
        };
        if op == BinOp::Mul {
            return self.multiply(a, b, span, lspan, rspan);
        }
        let f = |pool: &mut TensorPool, x: TId, y: TId| -> TId {
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
        let result = self.broadcast(a, b, f);
        if let (
            BinOp::Div,
            true,
            Value::Tensor { id: numerator, .. },
            Value::Tensor {
                id: denominator, ..
            },
        ) = (op, result.is_some(), a, b)
        {
            // A `fn` body is checked once per call; its division is recorded once per operand pair.
            let division = crate::ir::Division {
                numerator,
                denominator,
                span,
                denominator_span: rspan,
            };
            if !self.model.divisions.contains(&division) {
                self.model.divisions.push(division);
            }
        }
        match result {
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

    /// An elementwise operation with scalar broadcasting; `None` when shapes are incompatible
    /// (or either side is an error).
    pub(crate) fn broadcast(
        &mut self,
        a: Value,
        b: Value,
        f: impl FnOnce(&mut TensorPool, TId, TId) -> TId,
    ) -> Option<Value> {
        let (Value::Tensor { id: x, shape: sa }, Value::Tensor { id: y, shape: sb }) = (a, b)
        else {
            return None;
        };
        let shape = if sa == sb || sb == Shape::Scalar {
            sa
        } else if sa == Shape::Scalar {
            sb
        } else {
            return None;
        };
        Some(Value::tensor(f(&mut self.model.tensors, x, y), shape))
    }

    fn multiply(&mut self, a: Value, b: Value, span: Span, lspan: Span, rspan: Span) -> Value {
        let _ = (lspan, rspan);
        let (Value::Tensor { id: x, shape: sa }, Value::Tensor { id: y, shape: sb }) = (a, b)
        else {
            return Value::Error;
        };
        if sa == Shape::Scalar || sb == Shape::Scalar {
            return self
                .broadcast(a, b, |p, x, y| p.mul(x, y))
                .unwrap_or(Value::Error);
        }
        // A vector is a column: [m, n] * [n] -> [m]; a [1, n] row times [n] is a scalar.
        match (sa, sb) {
            (Shape::Matrix(_, n), Shape::Vector(k)) if n == k => {}
            (Shape::Matrix(_, n), Shape::Matrix(k, _)) if n == k => {}
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
        }
        let pool = &mut self.model.tensors;
        let product = pool.matmul(x, y);
        let shape = pool.shape(product);
        if shape == Shape::Vector(1) && is_row(sa) {
            let one = pool.reshape(product, Shape::Scalar);
            return Value::tensor(one, Shape::Scalar);
        }
        Value::tensor(product, shape)
    }

    fn index(&mut self, v: Value, items: &'a [IndexItem], scope: &Scope, span: Span) -> Value {
        let Value::Tensor { id, shape } = v else {
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
        // Each index position becomes a range of positions and whether it keeps a dimension.
        let mut selections: Vec<(usize, usize, bool)> = Vec::new();
        for (axis, &size) in dims.iter().enumerate() {
            let Some(item) = items.get(axis) else {
                selections.push((0, size, true));
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
                    selections.push((i, 1, false));
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
                    selections.push((a, b - a, true));
                }
            }
        }
        let kept: Vec<usize> = selections
            .iter()
            .filter(|(_, _, k)| *k)
            .map(|(_, len, _)| *len)
            .collect();
        let out_shape = match kept.as_slice() {
            [] => Shape::Scalar,
            [n] => Shape::Vector(*n),
            [m, n] => Shape::Matrix(*m, *n),
            _ => unreachable!("at most two dimensions"),
        };
        // The selection as a window: rows step by the row length, columns by one.
        let (start, row_stride, col_stride) = match selections[..] {
            [(i, _, _)] => (i, 0, 1),
            [(i, _, keep_i), (j, _, keep_j)] => {
                let n = dims[1];
                match (keep_i, keep_j) {
                    (true, true) => (i * n + j, n, 1),
                    // A row slice or a column slice is a vector: its step is the kept axis's.
                    (true, false) => (i * n + j, 0, n),
                    _ => (i * n + j, 0, 1),
                }
            }
            _ => unreachable!("at most two dimensions"),
        };
        let window = Window {
            start: start as u32,
            row_stride: row_stride as u32,
            col_stride: col_stride as u32,
        };
        let pool = &mut self.model.tensors;
        let out = if out_shape == Shape::Scalar {
            pool.element(id, start)
        } else {
            pool.gather(id, window, out_shape)
        };
        Value::tensor(out, out_shape)
    }

    pub(crate) fn const_index(&mut self, e: &'a ast::Expr) -> Option<usize> {
        let v = self.lower_top(e);
        let Value::Tensor { shape, id } = v else {
            return None;
        };
        let value = match (shape, self.model.tensors.uniform_value(id)) {
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
            let mut rows: Vec<TId> = Vec::new();
            let mut width = 0;
            for item in items {
                let ExprKind::List(row_items) = &item.kind else {
                    unreachable!()
                };
                let Some(row) = self.concat(row_items, scope) else {
                    return Value::Error;
                };
                let len = self.model.tensors.shape(row).len();
                if rows.is_empty() {
                    width = len;
                } else if len != width {
                    self.diags.error(
                        item.span,
                        format!(
                            "row {} has {} elements but row 1 has {}",
                            rows.len() + 1,
                            len,
                            width
                        ),
                    );
                    return Value::Error;
                }
                rows.push(row);
            }
            let shape = Shape::Matrix(rows.len(), width);
            let pool = &mut self.model.tensors;
            let flat = pool.concat(&rows);
            return Value::tensor(pool.reshape(flat, shape), shape);
        }
        match self.concat(items, scope) {
            Some(id) => {
                let shape = self.model.tensors.shape(id);
                if shape.len() > MAX_ELEMENTS {
                    self.diags.error(span, "the list is too long");
                    return Value::Error;
                }
                Value::tensor(id, shape)
            }
            None => Value::Error,
        }
    }

    /// Concatenates scalars and vectors into a vector; `None` after reporting an error.
    fn concat(&mut self, items: &'a [ast::Expr], scope: &Scope) -> Option<TId> {
        let mut parts = Vec::new();
        let mut failed = false;
        for item in items {
            match self.lower(item, scope) {
                Value::Error => failed = true,
                Value::Tensor {
                    shape: Shape::Matrix(m, n),
                    ..
                } => {
                    self.diags.error(
                        item.span,
                        format!("a list concatenates scalars and vectors, but this is a [{m}, {n}] matrix"),
                    );
                    failed = true;
                }
                Value::Tensor { id, .. } => parts.push(id),
            }
        }
        if failed {
            None
        } else {
            Some(self.model.tensors.concat(&parts))
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
            // The suggested name is probably the one meant: count it as used, so the typo is
            // one error and not also a "never used" warning for the name it hid.
            if let Some(symbol) = self.symbols.get(s).copied() {
                self.used.insert(symbol);
            }
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        self.diags.push(d);
        Value::Error
    }

    /// Applies an elementwise function.
    pub(crate) fn apply_func(&mut self, func: Func, v: Value) -> Value {
        self.map(v, |pool, x| pool.func(func, x))
    }

    /// Transposes: a vector becomes a `[1, n]` row, a matrix is transposed, a scalar stays.
    pub(crate) fn transpose(&mut self, v: Value) -> Value {
        let Value::Tensor { id, shape } = v else {
            return Value::Error;
        };
        let pool = &mut self.model.tensors;
        match shape {
            Shape::Scalar => v,
            Shape::Vector(n) => {
                let row = Shape::Matrix(1, n);
                Value::tensor(pool.reshape(id, row), row)
            }
            Shape::Matrix(m, n) => Value::tensor(pool.transpose(id), Shape::Matrix(n, m)),
        }
    }
}

fn is_row(shape: Shape) -> bool {
    matches!(shape, Shape::Matrix(1, _))
}
