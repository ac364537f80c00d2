//! The hash-consed tensor pool and its smart constructors.
//!
//! As in the scalar [`crate::ir::Pool`], every node is built through a constructor that folds
//! constants and applies cheap identities before looking the node up in a memo table, so equal
//! subexpressions are one [`TId`]. The memo key is the node with its shape, because a `Fill`,
//! `Literal`, `Reshape`, `Gather` or `Scatter` means different things at different shapes.

use std::collections::HashMap;

use super::node::{Leaf, TId, TNode, Window};
use crate::ir::{apply_pow, CmpOp, Func, Shape};

/// Constant arrays up to this many elements are folded at build time; larger ones stay
/// symbolic, so that folding never makes the IR grow with a layer's width.
const FOLD_LIMIT: usize = 4096;

/// `(rows, cols)` of a shape as a row-major grid: a scalar is `1 × 1`, a vector one row.
pub fn grid(shape: Shape) -> (usize, usize) {
    match shape {
        Shape::Scalar => (1, 1),
        Shape::Vector(n) => (1, n),
        Shape::Matrix(m, n) => (m, n),
    }
}

/// The shape of an elementwise result: the children's common shape, scalars broadcast.
fn broadcast_shape(shapes: impl IntoIterator<Item = Shape>) -> Shape {
    let mut out = Shape::Scalar;
    for s in shapes {
        if s != Shape::Scalar {
            debug_assert!(
                out == Shape::Scalar || out == s,
                "elementwise operands {out} and {s}"
            );
            out = s;
        }
    }
    out
}

/// An append-only arena of tensor nodes with a hash-consing memo table.
#[derive(Clone, Debug, Default)]
pub struct TensorPool {
    nodes: Vec<TNode>,
    shapes: Vec<Shape>,
    memo: HashMap<(TNode, Shape), TId>,
}

impl TensorPool {
    /// An empty pool.
    pub fn new() -> TensorPool {
        TensorPool::default()
    }

    /// Number of distinct nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the pool has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node with this id.
    pub fn node(&self, id: TId) -> &TNode {
        &self.nodes[id.index()]
    }

    /// The shape of node `id`.
    pub fn shape(&self, id: TId) -> Shape {
        self.shapes[id.index()]
    }

    /// Interns a node of the given shape without simplification; constructors call this last.
    pub fn intern(&mut self, node: TNode, shape: Shape) -> TId {
        let key = (node, shape);
        if let Some(&id) = self.memo.get(&key) {
            return id;
        }
        let id = TId(u32::try_from(self.nodes.len()).expect("tensor pool exceeds 2^32 nodes"));
        self.nodes.push(key.0.clone());
        self.shapes.push(shape);
        self.memo.insert(key, id);
        id
    }

    /// Makes every `from` leaf (of any shape) a `to` leaf in place, so that the expressions
    /// that read `from` read `to` instead. `to` must not be in the pool yet: two nodes for one
    /// leaf would break the pool's hash-consing.
    pub fn rebind_leaf(&mut self, from: Leaf, to: Leaf) {
        for (id, (node, shape)) in self.nodes.iter_mut().zip(&self.shapes).enumerate() {
            match node {
                TNode::Leaf(leaf) if *leaf == to => panic!("{to:?} is already in the pool"),
                TNode::Leaf(leaf) if *leaf == from => {
                    *leaf = to;
                    self.memo.remove(&(TNode::Leaf(from), *shape));
                    self.memo.insert((TNode::Leaf(to), *shape), TId(id as u32));
                }
                _ => {}
            }
        }
    }

    /// Rebuilds `node` of shape `shape` (whose children are ids of this pool) through the
    /// smart constructors.
    pub fn build(&mut self, node: &TNode, shape: Shape) -> TId {
        match node {
            TNode::Const(bits) => self.constant(f64::from_bits(*bits)),
            TNode::Literal(bits) => {
                let values: Vec<f64> = bits.iter().map(|b| f64::from_bits(*b)).collect();
                self.literal(&values, shape)
            }
            TNode::Leaf(leaf) => self.leaf(*leaf, shape),
            TNode::Fill(a) => self.fill(*a, shape),
            TNode::Add(c) => self.sum_of(c),
            TNode::Mul(c) => self.product(c),
            TNode::Div(a, b) => self.div(*a, *b),
            TNode::Pow(a, b) => self.pow(*a, *b),
            TNode::Func(f, a) => self.func(*f, *a),
            TNode::Min(a, b) => self.min(*a, *b),
            TNode::Max(a, b) => self.max(*a, *b),
            TNode::Cmp(op, a, b) => self.cmp(*op, *a, *b),
            TNode::MatMul(a, b) => self.matmul(*a, *b),
            TNode::Transpose(a) => self.transpose(*a),
            TNode::Reshape(a) => self.reshape(*a, shape),
            TNode::Sum(a) => self.sum(*a),
            TNode::SumAxis(a, axis) => self.sum_axis(*a, *axis),
            TNode::MaxAll(a) => self.max_all(*a),
            TNode::FirstMax(a) => self.first_max(*a),
            TNode::ArgMax(a) => self.argmax(*a),
            TNode::Gather(a, w) => self.gather(*a, *w, shape),
            TNode::Scatter(a, w) => self.scatter(*a, *w, shape),
            TNode::Concat(c) => self.concat(c),
            TNode::Outer(a, b) => self.outer(*a, *b),
            TNode::Diag(a) => self.diag(*a),
        }
    }

    // ----- constant inspection ---------------------------------------------------------------

    /// The value of a node whose every element is the same constant (`Const` or a filled one).
    pub fn uniform_value(&self, id: TId) -> Option<f64> {
        match self.node(id) {
            TNode::Const(bits) => Some(f64::from_bits(*bits)),
            TNode::Fill(a) => self.uniform_value(*a),
            _ => None,
        }
    }

    /// Whether every element of the node is the constant `value`.
    pub fn is_uniform(&self, id: TId, value: f64) -> bool {
        self.uniform_value(id) == Some(value)
    }

    /// Whether the node is all zeros.
    pub fn is_zero(&self, id: TId) -> bool {
        self.is_uniform(id, 0.0)
    }

    /// The elements of a constant node (`Const`, filled constant or `Literal`), row-major.
    pub fn const_elements(&self, id: TId) -> Option<Vec<f64>> {
        match self.node(id) {
            TNode::Literal(bits) => Some(bits.iter().map(|b| f64::from_bits(*b)).collect()),
            _ => self
                .uniform_value(id)
                .map(|v| vec![v; self.shape(id).len()]),
        }
    }

    fn foldable(&self, id: TId) -> Option<Vec<f64>> {
        if self.shape(id).len() > FOLD_LIMIT {
            return None;
        }
        self.const_elements(id)
    }

    // ----- leaves and constants --------------------------------------------------------------

    /// A scalar constant; `-0.0` is stored as `0.0` so the two share a node.
    pub fn constant(&mut self, value: f64) -> TId {
        let value = if value == 0.0 { 0.0 } else { value };
        self.intern(TNode::Const(value.to_bits()), Shape::Scalar)
    }

    /// A constant array: a scalar constant, a fill when every element is equal, else a literal.
    pub fn literal(&mut self, values: &[f64], shape: Shape) -> TId {
        debug_assert_eq!(values.len(), shape.len());
        if shape == Shape::Scalar {
            return self.constant(values[0]);
        }
        if let Some(&first) = values.first() {
            if values.iter().all(|v| v.to_bits() == first.to_bits()) {
                let c = self.constant(first);
                return self.fill(c, shape);
            }
        }
        let bits = values
            .iter()
            .map(|&v| if v == 0.0 { 0u64 } else { v.to_bits() })
            .collect();
        self.intern(TNode::Literal(bits), shape)
    }

    /// A whole declared array.
    pub fn leaf(&mut self, leaf: Leaf, shape: Shape) -> TId {
        self.intern(TNode::Leaf(leaf), shape)
    }

    /// The scalar `a` at every element of `shape`.
    pub fn fill(&mut self, a: TId, shape: Shape) -> TId {
        debug_assert_eq!(self.shape(a), Shape::Scalar, "fill takes a scalar");
        if shape == Shape::Scalar {
            return a;
        }
        self.intern(TNode::Fill(a), shape)
    }

    /// Zeros of `shape`.
    pub fn zeros(&mut self, shape: Shape) -> TId {
        let zero = self.constant(0.0);
        self.fill(zero, shape)
    }

    /// `a` broadcast to `shape` when it is a scalar and `shape` is not.
    pub fn broadcast_to(&mut self, a: TId, shape: Shape) -> TId {
        if self.shape(a) == shape {
            a
        } else {
            self.fill(a, shape)
        }
    }

    // ----- elementwise -----------------------------------------------------------------------

    /// Folds an elementwise operation whose children are all small constants.
    fn fold(&mut self, children: &[TId], f: impl Fn(&[f64]) -> f64) -> Option<TId> {
        let shape = broadcast_shape(children.iter().map(|&c| self.shape(c)));
        let mut columns = Vec::with_capacity(children.len());
        for &c in children {
            columns.push(self.foldable(c)?);
        }
        if shape.len() > FOLD_LIMIT {
            return None;
        }
        let mut args = vec![0.0; children.len()];
        let values: Vec<f64> = (0..shape.len())
            .map(|i| {
                for (arg, col) in args.iter_mut().zip(&columns) {
                    *arg = if col.len() == 1 { col[0] } else { col[i] };
                }
                f(&args)
            })
            .collect();
        Some(self.literal(&values, shape))
    }

    /// `a + b`
    pub fn add(&mut self, a: TId, b: TId) -> TId {
        self.sum_of(&[a, b])
    }

    /// `a − b`, as `a + (−1)·b`.
    pub fn sub(&mut self, a: TId, b: TId) -> TId {
        let nb = self.neg(b);
        self.sum_of(&[a, nb])
    }

    /// `−a`, as `(−1)·a`.
    pub fn neg(&mut self, a: TId) -> TId {
        let minus_one = self.constant(-1.0);
        self.product(&[minus_one, a])
    }

    /// `c · base` split into `(c, base)` when the term is a two-factor product with a constant.
    fn split_coefficient(&self, term: TId) -> (f64, TId) {
        match self.node(term) {
            TNode::Mul(c) if c.len() == 2 => match self.node(c[0]) {
                TNode::Const(bits) => (f64::from_bits(*bits), c[1]),
                _ => (1.0, term),
            },
            _ => (1.0, term),
        }
    }

    /// A product's constant factor and its other factors: `(c, [a, b])` for `c·a·b`.
    fn split_product(&self, factor: TId) -> Option<(f64, Vec<TId>)> {
        match self.node(factor) {
            TNode::Mul(c) => match self.node(c[0]) {
                TNode::Const(bits) => Some((f64::from_bits(*bits), c[1..].to_vec())),
                _ => None,
            },
            _ => None,
        }
    }

    /// The elementwise sum of `terms`: nested sums of the same shape flattened, constants
    /// folded, like terms collected (`x − x → 0`), the rest sorted.
    pub fn sum_of(&mut self, terms: &[TId]) -> TId {
        let shape = broadcast_shape(terms.iter().map(|&t| self.shape(t)));
        let mut flat = Vec::with_capacity(terms.len());
        for &t in terms {
            match self.node(t) {
                TNode::Add(c) if self.shape(t) == shape => flat.extend_from_slice(c),
                _ => flat.push(t),
            }
        }
        let mut constant = 0.0;
        let mut bases: Vec<TId> = Vec::new();
        let mut coefficients: Vec<f64> = Vec::new();
        let mut literals: Vec<TId> = Vec::new();
        for t in flat {
            if let Some(v) = self.uniform_value(t) {
                constant += v;
                continue;
            }
            if matches!(self.node(t), TNode::Literal(_)) {
                literals.push(t);
                continue;
            }
            let (c, base) = self.split_coefficient(t);
            match bases.iter().position(|&b| b == base) {
                Some(i) => coefficients[i] += c,
                None => {
                    bases.push(base);
                    coefficients.push(c);
                }
            }
        }
        // Constant arrays fold together (and with the scalar constant) when small.
        if !literals.is_empty() {
            let mut all = literals.clone();
            if constant != 0.0 {
                all.push(self.constant(constant));
            }
            if all.len() > 1 {
                if let Some(folded) = self.fold(&all, |x| x.iter().sum()) {
                    literals = vec![folded];
                    constant = 0.0;
                }
            }
            for l in literals {
                match self.uniform_value(l) {
                    Some(v) => constant += v,
                    None => {
                        bases.push(l);
                        coefficients.push(1.0);
                    }
                }
            }
        }
        let mut children = Vec::with_capacity(bases.len() + 1);
        for (base, c) in bases.into_iter().zip(coefficients) {
            if c == 0.0 {
                continue;
            }
            children.push(if c == 1.0 {
                base
            } else {
                let k = self.constant(c);
                self.product(&[k, base])
            });
        }
        children.sort_unstable();
        if constant != 0.0 || constant.is_nan() {
            let c = self.constant(constant);
            children.insert(0, c);
        }
        let out = match children.len() {
            0 => self.constant(0.0),
            1 => children[0],
            _ => {
                let s = broadcast_shape(children.iter().map(|&c| self.shape(c)));
                self.intern(TNode::Add(children.into_boxed_slice()), s)
            }
        };
        self.broadcast_to(out, shape)
    }

    /// `a .* b`
    pub fn mul(&mut self, a: TId, b: TId) -> TId {
        self.product(&[a, b])
    }

    /// The elementwise product of `factors`: constants folded, `x·0 → 0`, `x·1 → x`, a
    /// constant times `c·x` merged, the rest sorted with the constant first.
    pub fn product(&mut self, factors: &[TId]) -> TId {
        let shape = broadcast_shape(factors.iter().map(|&t| self.shape(t)));
        let mut constant = 1.0;
        let mut rest: Vec<TId> = Vec::with_capacity(factors.len());
        for &f in factors {
            if let Some(v) = self.uniform_value(f) {
                constant *= v;
                continue;
            }
            // A constant inside a factor moves out, so that no product has two constants
            // (`2·(3·a·b) → 6·(a·b)`); the other factors stay one node, shared where it is.
            match self.split_product(f) {
                Some((c, others)) => {
                    constant *= c;
                    rest.push(match others[..] {
                        [one] => one,
                        _ => {
                            let s = broadcast_shape(others.iter().map(|&o| self.shape(o)));
                            self.intern(TNode::Mul(others.into_boxed_slice()), s)
                        }
                    });
                }
                None => rest.push(f),
            }
        }
        if constant == 0.0 {
            return self.zeros(shape);
        }
        let literals: Vec<TId> = rest
            .iter()
            .copied()
            .filter(|&f| matches!(self.node(f), TNode::Literal(_)))
            .collect();
        if literals.len() > 1 {
            if let Some(folded) = self.fold(&literals, |x| x.iter().product()) {
                rest.retain(|f| !literals.contains(f));
                rest.push(folded);
            }
        }
        rest.sort_unstable();
        let out = match (rest.len(), constant == 1.0) {
            (0, _) => self.constant(constant),
            (1, true) => rest[0],
            _ => {
                if constant != 1.0 {
                    let c = self.constant(constant);
                    rest.insert(0, c);
                }
                let s = broadcast_shape(rest.iter().map(|&c| self.shape(c)));
                self.intern(TNode::Mul(rest.into_boxed_slice()), s)
            }
        };
        self.broadcast_to(out, shape)
    }

    /// `a ./ b`, with the scalar pool's rules in its order: constants folded, `a/1 → a`,
    /// `a/c → (1/c)·a` when `1/c` is exact, `0/b → 0`, `a/a → 1`.
    pub fn div(&mut self, a: TId, b: TId) -> TId {
        let shape = broadcast_shape([self.shape(a), self.shape(b)]);
        if let Some(f) = self.fold(&[a, b], |x| x[0] / x[1]) {
            return f;
        }
        if let Some(c) = self.uniform_value(b) {
            if c == 1.0 {
                return self.broadcast_to(a, shape);
            }
            if exact_reciprocal(c) {
                let k = self.constant(1.0 / c);
                let out = self.mul(k, a);
                return self.broadcast_to(out, shape);
            }
        }
        if self.is_zero(a) {
            return self.zeros(shape);
        }
        if a == b {
            let one = self.constant(1.0);
            return self.fill(one, shape);
        }
        self.intern(TNode::Div(a, b), shape)
    }

    /// `a .^ b`
    pub fn pow(&mut self, a: TId, b: TId) -> TId {
        let shape = broadcast_shape([self.shape(a), self.shape(b)]);
        match self.uniform_value(b) {
            Some(1.0) => return self.broadcast_to(a, shape),
            Some(0.0) => {
                let one = self.constant(1.0);
                return self.fill(one, shape);
            }
            _ => {}
        }
        if let Some(f) = self.fold(&[a, b], |x| apply_pow(x[0], x[1])) {
            return f;
        }
        self.intern(TNode::Pow(a, b), shape)
    }

    /// `f(a)` elementwise.
    pub fn func(&mut self, f: Func, a: TId) -> TId {
        if let Some(folded) = self.fold(&[a], |x| f.apply(x[0])) {
            return folded;
        }
        if let TNode::Fill(c) = *self.node(a) {
            let fc = self.func(f, c);
            let shape = self.shape(a);
            return self.fill(fc, shape);
        }
        let shape = self.shape(a);
        self.intern(TNode::Func(f, a), shape)
    }

    /// Elementwise minimum.
    pub fn min(&mut self, a: TId, b: TId) -> TId {
        if a == b {
            return a;
        }
        if let Some(f) = self.fold(&[a, b], |x| x[0].min(x[1])) {
            return f;
        }
        let shape = broadcast_shape([self.shape(a), self.shape(b)]);
        self.intern(TNode::Min(a, b), shape)
    }

    /// Elementwise maximum.
    pub fn max(&mut self, a: TId, b: TId) -> TId {
        if a == b {
            return a;
        }
        if let Some(f) = self.fold(&[a, b], |x| x[0].max(x[1])) {
            return f;
        }
        let shape = broadcast_shape([self.shape(a), self.shape(b)]);
        self.intern(TNode::Max(a, b), shape)
    }

    /// Elementwise comparison giving 1.0 or 0.0.
    pub fn cmp(&mut self, op: CmpOp, a: TId, b: TId) -> TId {
        if let Some(f) = self.fold(&[a, b], |x| op.apply(x[0], x[1])) {
            return f;
        }
        let shape = broadcast_shape([self.shape(a), self.shape(b)]);
        self.intern(TNode::Cmp(op, a, b), shape)
    }

    // ----- linear algebra and structure -------------------------------------------------------

    /// `a · b`: `[m, k]·[k] → [m]` or `[m, k]·[k, n] → [m, n]`.
    pub fn matmul(&mut self, a: TId, b: TId) -> TId {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let shape = match (sa, sb) {
            (Shape::Matrix(m, k), Shape::Vector(k2)) if k == k2 => Shape::Vector(m),
            (Shape::Matrix(m, k), Shape::Matrix(k2, n)) if k == k2 => Shape::Matrix(m, n),
            _ => panic!("matmul of {sa} by {sb}"),
        };
        if self.is_zero(a) || self.is_zero(b) {
            return self.zeros(shape);
        }
        // A product by a unit vector is a column.
        if let (Shape::Vector(k), Some(e)) = (sb, self.foldable(b)) {
            let ones: Vec<usize> = (0..k).filter(|&i| e[i] != 0.0).collect();
            if let [j] = ones[..] {
                if e[j] == 1.0 {
                    let Shape::Matrix(_, cols) = sa else {
                        unreachable!()
                    };
                    return self.gather(a, Window::column(j, cols), shape);
                }
            }
        }
        // diag(d) · x = d .* x
        if let (TNode::Diag(d), Shape::Vector(_)) = (self.node(a).clone(), sb) {
            return self.mul(d, b);
        }
        if let (Some(x), Some(y)) = (self.foldable(a), self.foldable(b)) {
            if shape.len() <= FOLD_LIMIT {
                let values = crate::ir::tensor::eval::matmul_values(&x, sa, &y, sb);
                return self.literal(&values, shape);
            }
        }
        self.intern(TNode::MatMul(a, b), shape)
    }

    /// Transpose of a matrix.
    pub fn transpose(&mut self, a: TId) -> TId {
        let Shape::Matrix(m, n) = self.shape(a) else {
            panic!("transpose of {}", self.shape(a))
        };
        let shape = Shape::Matrix(n, m);
        match self.node(a).clone() {
            TNode::Transpose(x) => return x,
            TNode::Fill(c) => return self.fill(c, shape),
            TNode::Diag(_) => return a,
            _ => {}
        }
        if m == 1 || n == 1 {
            return self.reshape(a, shape);
        }
        if let Some(x) = self.foldable(a) {
            let values: Vec<f64> = (0..n)
                .flat_map(|j| (0..m).map(move |i| (i, j)))
                .map(|(i, j)| x[i * n + j])
                .collect();
            return self.literal(&values, shape);
        }
        self.intern(TNode::Transpose(a), shape)
    }

    /// The same elements, row-major, with another shape of the same length.
    pub fn reshape(&mut self, a: TId, shape: Shape) -> TId {
        debug_assert_eq!(self.shape(a).len(), shape.len());
        if self.shape(a) == shape {
            return a;
        }
        match self.node(a).clone() {
            TNode::Reshape(x) => return self.reshape(x, shape),
            TNode::Fill(c) => return self.fill(c, shape),
            TNode::Const(_) => return self.fill(a, shape),
            TNode::Literal(bits) => return self.intern(TNode::Literal(bits), shape),
            _ => {}
        }
        if shape == Shape::Scalar {
            return self.element(a, 0);
        }
        self.intern(TNode::Reshape(a), shape)
    }

    /// The sum of every element.
    pub fn sum(&mut self, a: TId) -> TId {
        let shape = self.shape(a);
        if shape == Shape::Scalar {
            return a;
        }
        if let Some(c) = self.uniform_value(a) {
            let n = self.constant(shape.len() as f64);
            let c = self.constant(c);
            return self.mul(n, c);
        }
        match self.node(a).clone() {
            TNode::Scatter(g, _) => return self.sum(g),
            TNode::Reshape(x) | TNode::Transpose(x) | TNode::Diag(x) => return self.sum(x),
            TNode::Literal(bits) => {
                return self.constant(bits.iter().map(|b| f64::from_bits(*b)).sum());
            }
            _ => {}
        }
        self.intern(TNode::Sum(a), Shape::Scalar)
    }

    /// Column sums (`axis = 0`, `[m, n] → [n]`) or row sums (`axis = 1`, `→ [m]`).
    pub fn sum_axis(&mut self, a: TId, axis: u8) -> TId {
        let Shape::Matrix(m, n) = self.shape(a) else {
            panic!("sum_axis of {}", self.shape(a))
        };
        let (shape, count) = if axis == 0 {
            (Shape::Vector(n), m)
        } else {
            (Shape::Vector(m), n)
        };
        if let Some(c) = self.uniform_value(a) {
            let v = self.constant(c * count as f64);
            return self.fill(v, shape);
        }
        self.intern(TNode::SumAxis(a, axis), shape)
    }

    /// The largest element (the left fold of `max`).
    pub fn max_all(&mut self, a: TId) -> TId {
        let shape = self.shape(a);
        if shape.len() == 1 {
            return self.reshape(a, Shape::Scalar);
        }
        if let Some(c) = self.uniform_value(a) {
            return self.constant(c);
        }
        if let Some(x) = self.foldable(a) {
            let m = x[1..].iter().fold(x[0], |m, &v| m.max(v));
            return self.constant(m);
        }
        self.intern(TNode::MaxAll(a), Shape::Scalar)
    }

    /// A one-hot vector marking the first largest element.
    pub fn first_max(&mut self, a: TId) -> TId {
        let shape = self.shape(a);
        if let Some(x) = self.foldable(a) {
            let i = crate::ir::tensor::eval::first_max_index(&x);
            let mut v = vec![0.0; x.len()];
            v[i] = 1.0;
            return self.literal(&v, shape);
        }
        self.intern(TNode::FirstMax(a), shape)
    }

    /// The index of the first largest element.
    pub fn argmax(&mut self, a: TId) -> TId {
        if let Some(x) = self.foldable(a) {
            let i = crate::ir::tensor::eval::first_max_index(&x);
            return self.constant(i as f64);
        }
        self.intern(TNode::ArgMax(a), Shape::Scalar)
    }

    /// The elements of window `w` of `a`, as an array of `shape`.
    pub fn gather(&mut self, a: TId, w: Window, shape: Shape) -> TId {
        let w = w.normalized(shape);
        let source = self.shape(a);
        let (rows, cols) = grid(shape);
        debug_assert!(
            shape.is_empty() || w.at(rows - 1, cols - 1) < source.len(),
            "window out of range"
        );
        if shape == source && w == Window::whole(source) {
            return a;
        }
        match self.node(a).clone() {
            TNode::Fill(c) => return self.fill(c, shape),
            TNode::Literal(bits) => {
                let values: Vec<f64> = (0..rows)
                    .flat_map(|i| (0..cols).map(move |j| (i, j)))
                    .map(|(i, j)| f64::from_bits(bits[w.at(i, j)]))
                    .collect();
                return self.literal(&values, shape);
            }
            TNode::Reshape(x) => return self.gather(x, w, shape),
            // A window of a vector window is a window of the source.
            TNode::Gather(x, inner) if grid(source).0 == 1 => {
                let composed = Window {
                    start: inner.start + w.start * inner.col_stride,
                    row_stride: w.row_stride * inner.col_stride,
                    col_stride: w.col_stride * inner.col_stride,
                };
                return self.gather(x, composed, shape);
            }
            TNode::Scatter(g, inner) if inner == w && self.shape(g) == shape => return g,
            TNode::Concat(parts) if rows == 1 => {
                let last = w.at(0, cols.saturating_sub(1));
                let mut offset = 0usize;
                for &p in parts.iter() {
                    let len = self.shape(p).len();
                    if (w.start as usize) >= offset && last < offset + len {
                        let inner = Window {
                            start: w.start - offset as u32,
                            ..w
                        };
                        return self.gather(p, inner, shape);
                    }
                    offset += len;
                }
            }
            _ => {}
        }
        self.intern(TNode::Gather(a, w), shape)
    }

    /// Element `flat` (row-major) of `a` as a scalar, pushed through the operations that make
    /// it cheaper: an element of `tanh(K·x)` is `tanh(K[i, :]·x)`. Used where single elements
    /// of an array expression are taken (unit-tangent derivatives, indexing).
    pub fn element(&mut self, a: TId, flat: usize) -> TId {
        let shape = self.shape(a);
        if shape == Shape::Scalar {
            return a;
        }
        let (_, cols) = grid(shape);
        let node = self.node(a).clone();
        if node.is_elementwise() {
            // The same operation on the operands' elements (scalar operands broadcast, so
            // their element is themselves).
            let scalar = node.map_operands(|c| self.element(c, flat));
            return self.build(&scalar, Shape::Scalar);
        }
        let (i, j) = (flat / cols, flat % cols);
        match node {
            // Row i of a · b: a[i, :] · b (a dot product, or a row of the product).
            TNode::MatMul(x, y) => {
                let Shape::Matrix(_, k) = self.shape(x) else {
                    unreachable!()
                };
                // A vector result is a column: its element `flat` is row `flat`.
                let (i, j) = match shape {
                    Shape::Vector(_) => (flat, 0),
                    _ => (i, j),
                };
                let row = self.gather(x, Window::row(i, k), Shape::Vector(k));
                let col = match self.shape(y) {
                    Shape::Vector(_) => y,
                    Shape::Matrix(_, n) => self.gather(y, Window::column(j, n), Shape::Vector(k)),
                    Shape::Scalar => unreachable!(),
                };
                self.dot(row, col)
            }
            TNode::Transpose(x) => {
                let (_, n) = grid(self.shape(x));
                self.element(x, j * n + i)
            }
            TNode::Outer(x, y) => {
                let (p, q) = (self.element(x, i), self.element(y, j));
                self.mul(p, q)
            }
            TNode::Diag(x) => {
                if i == j {
                    self.element(x, i)
                } else {
                    self.constant(0.0)
                }
            }
            TNode::Gather(x, w) => self.element(x, w.at(i, j)),
            TNode::Scatter(g, w) => {
                let (rows, cols) = grid(self.shape(g));
                for r in 0..rows {
                    for c in 0..cols {
                        if w.at(r, c) == flat {
                            return self.element(g, r * cols + c);
                        }
                    }
                }
                self.constant(0.0)
            }
            TNode::Concat(parts) => {
                let mut offset = 0usize;
                for &p in parts.iter() {
                    let len = self.shape(p).len();
                    if flat < offset + len {
                        return self.element(p, flat - offset);
                    }
                    offset += len;
                }
                unreachable!("element within the concatenation")
            }
            TNode::Reshape(x) => self.element(x, flat),
            _ => self.gather(a, Window::single(flat), Shape::Scalar),
        }
    }

    /// `Σ a .* b`
    pub fn dot(&mut self, a: TId, b: TId) -> TId {
        let p = self.mul(a, b);
        self.sum(p)
    }

    /// Zeros of `shape` with `g`'s elements placed at window `w`.
    pub fn scatter(&mut self, g: TId, w: Window, shape: Shape) -> TId {
        let w = w.normalized(self.shape(g));
        if self.is_zero(g) {
            return self.zeros(shape);
        }
        if self.shape(g) == shape && w == Window::whole(shape) {
            return g;
        }
        // A small constant placed in zeros is a literal (a unit vector, say), which products
        // and concatenations then fold: `W · e_k` becomes the column `W[:, k]`.
        if shape.len() <= FOLD_LIMIT {
            if let Some(values) = self.const_elements(g) {
                let (rows, cols) = grid(self.shape(g));
                let mut out = vec![0.0; shape.len()];
                for i in 0..rows {
                    for j in 0..cols {
                        out[w.at(i, j)] = values[i * cols + j];
                    }
                }
                return self.literal(&out, shape);
            }
        }
        self.intern(TNode::Scatter(g, w), shape)
    }

    /// Scalars and vectors concatenated into a vector; consecutive windows of one vector are
    /// merged back into it.
    pub fn concat(&mut self, parts: &[TId]) -> TId {
        let mut merged: Vec<TId> = Vec::with_capacity(parts.len());
        for &p in parts {
            if self.shape(p).is_empty() {
                continue;
            }
            if let Some(&last) = merged.last() {
                if let Some(joined) = self.join_windows(last, p) {
                    merged.pop();
                    merged.push(joined);
                    continue;
                }
            }
            merged.push(p);
        }
        let len: usize = merged.iter().map(|&p| self.shape(p).len()).sum();
        let shape = Shape::Vector(len);
        match merged[..] {
            [] => return self.zeros(Shape::Vector(0)),
            [one] => return self.reshape(one, shape),
            _ => {}
        }
        if len <= FOLD_LIMIT && merged.iter().all(|&p| self.const_elements(p).is_some()) {
            let values: Vec<f64> = merged
                .iter()
                .flat_map(|&p| self.const_elements(p).expect("checked"))
                .collect();
            return self.literal(&values, shape);
        }
        self.intern(TNode::Concat(merged.into_boxed_slice()), shape)
    }

    /// `a` then `b` as one contiguous window of a vector, when they are.
    fn join_windows(&mut self, a: TId, b: TId) -> Option<TId> {
        let window = |pool: &TensorPool, id: TId| -> Option<(TId, usize, usize)> {
            match *pool.node(id) {
                TNode::Gather(x, w)
                    if grid(pool.shape(x)).0 == 1
                        && (w.col_stride == 1 || pool.shape(id).len() == 1) =>
                {
                    Some((x, w.start as usize, pool.shape(id).len()))
                }
                _ => None,
            }
        };
        let (xa, sa, la) = window(self, a)?;
        let (xb, sb, lb) = window(self, b)?;
        if xa != xb || sa + la != sb {
            return None;
        }
        Some(self.gather(
            xa,
            Window {
                start: sa as u32,
                row_stride: 0,
                col_stride: 1,
            },
            Shape::Vector(la + lb),
        ))
    }

    /// `[m] × [n] → [m, n]`
    pub fn outer(&mut self, a: TId, b: TId) -> TId {
        let (Shape::Vector(m), Shape::Vector(n)) = (self.shape(a), self.shape(b)) else {
            panic!("outer of {} and {}", self.shape(a), self.shape(b))
        };
        let shape = Shape::Matrix(m, n);
        if self.is_zero(a) || self.is_zero(b) {
            return self.zeros(shape);
        }
        self.intern(TNode::Outer(a, b), shape)
    }

    /// A vector as the diagonal of a square matrix.
    pub fn diag(&mut self, a: TId) -> TId {
        let Shape::Vector(n) = self.shape(a) else {
            panic!("diag of {}", self.shape(a))
        };
        let shape = Shape::Matrix(n, n);
        if self.is_zero(a) {
            return self.zeros(shape);
        }
        self.intern(TNode::Diag(a), shape)
    }

    /// The diagonal of a matrix, as a vector of `min(m, n)` elements.
    pub fn diag_part(&mut self, a: TId) -> TId {
        let Shape::Matrix(m, n) = self.shape(a) else {
            panic!("diag_part of {}", self.shape(a))
        };
        if let TNode::Diag(d) = *self.node(a) {
            return d;
        }
        let k = m.min(n);
        self.gather(
            a,
            Window {
                start: 0,
                row_stride: 0,
                col_stride: n as u32 + 1,
            },
            Shape::Vector(k),
        )
    }
}

/// Whether `1/c` is exact: `c` is a power of two (so `x/c` and `x·(1/c)` round alike); the
/// scalar pool's test, so that expansion agrees with it.
fn exact_reciprocal(c: f64) -> bool {
    let m = c.abs();
    m.is_finite() && m > 0.0 && m.log2().fract() == 0.0
}

impl Window {
    /// Every element of `shape`, in order.
    pub fn whole(shape: Shape) -> Window {
        let (_, cols) = grid(shape);
        Window {
            start: 0,
            row_stride: cols as u32,
            col_stride: 1,
        }
        .normalized(shape)
    }

    /// The canonical form of a window read as `shape`: a stride along a dimension of length 1
    /// is never used, so it is 0, and equal windows hash alike.
    pub fn normalized(self, shape: Shape) -> Window {
        let (rows, cols) = grid(shape);
        Window {
            start: self.start,
            row_stride: if rows <= 1 { 0 } else { self.row_stride },
            col_stride: if cols <= 1 { 0 } else { self.col_stride },
        }
    }

    /// Element `flat` alone.
    pub fn single(flat: usize) -> Window {
        Window {
            start: flat as u32,
            row_stride: 0,
            col_stride: 0,
        }
    }

    /// Row `i` of a matrix with `cols` columns.
    pub fn row(i: usize, cols: usize) -> Window {
        Window {
            start: (i * cols) as u32,
            row_stride: 0,
            col_stride: 1,
        }
    }

    /// Column `j` of a matrix with `cols` columns.
    pub fn column(j: usize, cols: usize) -> Window {
        Window {
            start: j as u32,
            row_stride: 0,
            col_stride: cols as u32,
        }
    }
}
