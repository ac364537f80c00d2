//! The hash-consed node pool and its smart constructors.
//!
//! Every node is built through a constructor that first folds constants and applies the cheap
//! identities (`x + 0`, `x·1`, `x·0`, `x − x`, `exp(log x)`, ...) and then looks the node up in a
//! memo table, so structurally equal subexpressions are one [`ExprId`] (CSE for free). Children
//! always precede parents, so evaluation is one forward loop and a reverse sweep one backward loop.

use std::collections::HashMap;

use super::node::{apply_pow, CmpOp, ExprId, Func, Node, Var};

/// An append-only arena of IR nodes with a hash-consing memo table.
#[derive(Clone, Debug, Default)]
pub struct Pool {
    nodes: Vec<Node>,
    memo: HashMap<Node, ExprId>,
    /// Memo of symbolic partial derivatives, keyed by expression and variable (used by `diff`).
    pub(crate) diff_memo: HashMap<(ExprId, Var), ExprId>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
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
    pub fn node(&self, id: ExprId) -> &Node {
        &self.nodes[id.index()]
    }

    /// All nodes in id order (children before parents).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The value of a constant node.
    pub fn const_value(&self, id: ExprId) -> Option<f64> {
        match self.node(id) {
            Node::Const(bits) => Some(f64::from_bits(*bits)),
            _ => None,
        }
    }

    /// Whether the node is a constant.
    pub fn is_const_node(&self, id: ExprId) -> bool {
        matches!(self.node(id), Node::Const(_))
    }

    /// Whether the node is the constant `value` (compared by value, so `-0.0` is zero).
    pub fn is_const(&self, id: ExprId, value: f64) -> bool {
        self.const_value(id) == Some(value)
    }

    /// Interns a node without simplification; constructors call this last.
    pub fn intern(&mut self, node: Node) -> ExprId {
        if let Some(&id) = self.memo.get(&node) {
            return id;
        }
        let id = ExprId(u32::try_from(self.nodes.len()).expect("IR pool exceeds 2^32 nodes"));
        self.nodes.push(node.clone());
        self.memo.insert(node, id);
        id
    }

    /// The id of `node` if the pool already holds it; never creates a node.
    pub fn lookup(&self, node: &Node) -> Option<ExprId> {
        self.memo.get(node).copied()
    }

    /// Builds `node` (whose children are ids of this pool) through the smart constructors, so
    /// that it is folded and put in canonical form; `simplify` rebuilds nodes this way.
    pub fn build(&mut self, node: &Node) -> ExprId {
        match node {
            Node::Const(bits) => self.constant(f64::from_bits(*bits)),
            Node::Var(v) => self.var(*v),
            Node::Add(c) => self.sum(c),
            Node::Mul(c) => self.product(c),
            Node::Div(a, b) => self.div(*a, *b),
            Node::Pow(a, b) => self.pow(*a, *b),
            Node::Func(f, a) => self.func(*f, *a),
            Node::Min(a, b) => self.min(*a, *b),
            Node::Max(a, b) => self.max(*a, *b),
            Node::Cmp(op, a, b) => self.cmp(*op, *a, *b),
        }
    }

    /// Keeps only the nodes with `keep[id]` (which must be closed under children: a kept node's
    /// children are kept), renumbering them in the same order so that children still precede
    /// parents and sorted children stay sorted. Returns the map from old ids to new ones.
    /// Memoized derivatives survive when both ends are kept.
    pub fn compact(&mut self, keep: &[bool]) -> Vec<Option<ExprId>> {
        let mut map: Vec<Option<ExprId>> = vec![None; self.nodes.len()];
        let old = std::mem::take(&mut self.nodes);
        self.memo.clear();
        for (i, node) in old.into_iter().enumerate() {
            if !keep.get(i).copied().unwrap_or(false) {
                continue;
            }
            let renumbered = node.map_operands(|c| {
                map[c.index()].expect("compact: a kept node's children must be kept")
            });
            let id = ExprId(self.nodes.len() as u32);
            self.nodes.push(renumbered.clone());
            self.memo.insert(renumbered, id);
            map[i] = Some(id);
        }
        let memo = std::mem::take(&mut self.diff_memo);
        for ((e, v), d) in memo {
            if let (Some(e), Some(d)) = (map[e.index()], map[d.index()]) {
                self.diff_memo.insert((e, v), d);
            }
        }
        map
    }

    /// A constant. `-0.0` is stored as `0.0` so that the two share a node.
    pub fn constant(&mut self, value: f64) -> ExprId {
        let value = if value == 0.0 { 0.0 } else { value };
        self.intern(Node::Const(value.to_bits()))
    }

    /// A variable leaf.
    pub fn var(&mut self, var: Var) -> ExprId {
        self.intern(Node::Var(var))
    }

    /// `a + b`
    pub fn add(&mut self, a: ExprId, b: ExprId) -> ExprId {
        self.sum(&[a, b])
    }

    /// `a − b`, built as `a + (−1)·b` so that `x − x` cancels.
    pub fn sub(&mut self, a: ExprId, b: ExprId) -> ExprId {
        let minus_b = self.neg(b);
        self.sum(&[a, minus_b])
    }

    /// `−a`, built as `(−1)·a`.
    pub fn neg(&mut self, a: ExprId) -> ExprId {
        let minus_one = self.constant(-1.0);
        self.product(&[minus_one, a])
    }

    /// The sum of `terms`: nested sums are flattened, constants folded, like terms collected
    /// (`2x + 3x → 5x`, `x − x → 0`) and the rest sorted for a canonical form.
    pub fn sum(&mut self, terms: &[ExprId]) -> ExprId {
        let mut flat = Vec::with_capacity(terms.len());
        for &term in terms {
            match self.node(term) {
                Node::Add(children) => flat.extend_from_slice(children),
                _ => flat.push(term),
            }
        }
        let mut constant = 0.0;
        // Like terms keyed by their non-constant part, in first-seen order for determinism.
        let mut bases: Vec<ExprId> = Vec::new();
        let mut coefficients: Vec<f64> = Vec::new();
        // Short sums (most of them) find like terms by a linear scan; long ones build an index.
        let mut index: Option<HashMap<ExprId, usize>> = None;
        for term in flat {
            if let Some(value) = self.const_value(term) {
                constant += value;
                continue;
            }
            let (coefficient, base) = self.split_coefficient(term);
            let found = match &index {
                Some(map) => map.get(&base).copied(),
                None => bases.iter().position(|&b| b == base),
            };
            match found {
                Some(i) => coefficients[i] += coefficient,
                None => {
                    bases.push(base);
                    coefficients.push(coefficient);
                    match &mut index {
                        Some(map) => {
                            map.insert(base, bases.len() - 1);
                        }
                        None if bases.len() >= 16 => {
                            index = Some(bases.iter().enumerate().map(|(i, &b)| (b, i)).collect());
                        }
                        None => {}
                    }
                }
            }
        }
        let mut children: Vec<ExprId> = Vec::with_capacity(bases.len() + 1);
        for (base, coefficient) in bases.into_iter().zip(coefficients) {
            if coefficient == 0.0 {
                continue;
            }
            children.push(if coefficient == 1.0 {
                base
            } else {
                let c = self.constant(coefficient);
                self.product(&[c, base])
            });
        }
        children.sort_unstable();
        if constant != 0.0 || constant.is_nan() {
            let c = self.constant(constant);
            children.insert(0, c);
        }
        match children.len() {
            0 => self.constant(0.0),
            1 => children[0],
            _ => self.intern(Node::Add(children.into_boxed_slice())),
        }
    }

    /// Splits `c·x` into `(c, x)`; any other term is `(1, term)`.
    fn split_coefficient(&self, term: ExprId) -> (f64, ExprId) {
        match self.node(term) {
            Node::Mul(children) if children.len() == 2 => match self.const_value(children[0]) {
                Some(c) => (c, children[1]),
                None => (1.0, term),
            },
            _ => (1.0, term),
        }
    }

    /// `a · b`
    pub fn mul(&mut self, a: ExprId, b: ExprId) -> ExprId {
        self.product(&[a, b])
    }

    /// The product of `factors`: constants folded, `x·0 → 0` (assuming finite `x`, as algebra
    /// does), `x·1 → x`, equal bases collected into integer powers (`x·x → x²`,
    /// `x³·x⁻¹ → x²`), the rest sorted.
    ///
    /// Products are not flattened: a nested product stays one factor, so that a product built
    /// once (a derivative's `(1 − tanh² u)·du`) is shared by all its users instead of being
    /// re-multiplied inside each. A constant always stands alone beside one other factor,
    /// `c·(x·y)`, so the constant of a nested product moves out and `c·x·y`, `(c·x)·y` and
    /// `c·(x·y)` are one node.
    pub fn product(&mut self, factors: &[ExprId]) -> ExprId {
        let mut constant = 1.0;
        let mut children: Vec<ExprId> = Vec::with_capacity(factors.len());
        for &factor in factors {
            if let Some(v) = self.const_value(factor) {
                constant *= v;
                continue;
            }
            let (c, base) = self.split_coefficient(factor);
            constant *= c;
            children.push(base);
        }
        if constant == 0.0 {
            return self.constant(0.0);
        }
        if children.len() > 1 {
            children = self.collect_powers(children);
        }
        children.sort_unstable();
        let base = match children.len() {
            0 => return self.constant(constant),
            1 => children[0],
            _ => self.intern(Node::Mul(children.into_boxed_slice())),
        };
        // A constant times a sum stays a product: distributing would duplicate the sum's terms.
        if constant == 1.0 {
            return base;
        }
        let c = self.constant(constant);
        self.intern(Node::Mul(Box::new([c, base])))
    }

    /// Merges factors with a common base into one power: `x^a · x^b = x^(a+b)` for integer `a`
    /// and `b` (a plain `x` counts as `x^1`). With integer exponents the identity holds for every
    /// `x` where both sides are defined; `x^a · x^(−a) → 1` is undefined only at `x = 0`.
    fn collect_powers(&mut self, factors: Vec<ExprId>) -> Vec<ExprId> {
        // (base, integer exponent, the factor itself)
        let mut split: Vec<(ExprId, f64, ExprId)> = factors
            .iter()
            .map(|&f| match self.node(f) {
                Node::Pow(base, e) => match self.const_value(*e) {
                    Some(n) if n.fract() == 0.0 => (*base, n, f),
                    _ => (f, 1.0, f),
                },
                _ => (f, 1.0, f),
            })
            .collect();
        split.sort_by_key(|&(base, _, f)| (base, f));
        if split.windows(2).all(|w| w[0].0 != w[1].0) {
            return factors;
        }
        let mut out = Vec::with_capacity(split.len());
        let mut i = 0;
        while i < split.len() {
            let base = split[i].0;
            let mut j = i + 1;
            let mut exponent = split[i].1;
            while j < split.len() && split[j].0 == base {
                exponent += split[j].1;
                j += 1;
            }
            if j == i + 1 {
                out.push(split[i].2);
            } else if exponent != 0.0 {
                let e = self.constant(exponent);
                out.push(self.pow(base, e));
            }
            i = j;
        }
        out
    }

    /// `a / b`: constants folded, `a/1 → a`, `0/b → 0`, `a/a → 1`, `a/c → (1/c)·a` only when
    /// `1/c` is exact (c a power of two) so that folding never changes the rounding.
    pub fn div(&mut self, a: ExprId, b: ExprId) -> ExprId {
        match (self.const_value(a), self.const_value(b)) {
            (Some(x), Some(y)) => return self.constant(x / y),
            (_, Some(1.0)) => return a,
            (_, Some(y)) if y != 0.0 && is_power_of_two(y) => {
                let c = self.constant(1.0 / y);
                return self.product(&[c, a]);
            }
            (Some(0.0), _) => return self.constant(0.0),
            _ => {}
        }
        if a == b {
            return self.constant(1.0);
        }
        self.intern(Node::Div(a, b))
    }

    /// `base ^ exponent`: constants folded, `x^1 → x`, `x^0 → 1`.
    pub fn pow(&mut self, base: ExprId, exponent: ExprId) -> ExprId {
        match (self.const_value(base), self.const_value(exponent)) {
            (Some(x), Some(y)) => return self.constant(apply_pow(x, y)),
            (_, Some(1.0)) => return base,
            (_, Some(0.0)) => return self.constant(1.0),
            _ => {}
        }
        self.intern(Node::Pow(base, exponent))
    }

    /// An elementwise function: constants folded, `exp(log x) → x` (valid where `log x` is,
    /// i.e. `x > 0`; elsewhere the original is NaN anyway), `log(exp x) → x`.
    pub fn func(&mut self, func: Func, a: ExprId) -> ExprId {
        if let Some(x) = self.const_value(a) {
            return self.constant(func.apply(x));
        }
        match (func, self.node(a)) {
            (Func::Exp, Node::Func(Func::Log, inner))
            | (Func::Log, Node::Func(Func::Exp, inner)) => return *inner,
            _ => {}
        }
        self.intern(Node::Func(func, a))
    }

    /// `min(a, b)`
    pub fn min(&mut self, a: ExprId, b: ExprId) -> ExprId {
        if let (Some(x), Some(y)) = (self.const_value(a), self.const_value(b)) {
            return self.constant(x.min(y));
        }
        if a == b {
            return a;
        }
        self.intern(Node::Min(a, b))
    }

    /// `max(a, b)`
    pub fn max(&mut self, a: ExprId, b: ExprId) -> ExprId {
        if let (Some(x), Some(y)) = (self.const_value(a), self.const_value(b)) {
            return self.constant(x.max(y));
        }
        if a == b {
            return a;
        }
        self.intern(Node::Max(a, b))
    }

    /// A comparison giving 1.0 or 0.0.
    pub fn cmp(&mut self, op: CmpOp, a: ExprId, b: ExprId) -> ExprId {
        if let (Some(x), Some(y)) = (self.const_value(a), self.const_value(b)) {
            return self.constant(op.apply(x, y));
        }
        self.intern(Node::Cmp(op, a, b))
    }
}

fn is_power_of_two(y: f64) -> bool {
    let m = y.abs();
    m.is_finite() && m > 0.0 && (m.log2().fract() == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(pool: &mut Pool) -> ExprId {
        pool.var(Var::State { state: 0, elem: 0 })
    }

    #[test]
    fn identities_fold_as_nodes_are_built() {
        let mut p = Pool::new();
        let x = x(&mut p);
        let zero = p.constant(0.0);
        let one = p.constant(1.0);
        assert_eq!(p.add(x, zero), x);
        assert_eq!(p.mul(x, one), x);
        assert_eq!(p.mul(x, zero), zero);
        assert_eq!(p.sub(x, x), zero);
        let log = p.func(Func::Log, x);
        assert_eq!(p.func(Func::Exp, log), x);
        let two = p.constant(2.0);
        let three = p.constant(3.0);
        let five = p.constant(5.0);
        assert_eq!(p.add(two, three), five);
    }

    #[test]
    fn equal_subtrees_share_one_node() {
        let mut p = Pool::new();
        let x = x(&mut p);
        let y = p.var(Var::Time);
        let a = p.mul(x, y);
        let b = p.mul(y, x);
        assert_eq!(a, b);
        let t1 = p.func(Func::Tanh, a);
        let t2 = p.func(Func::Tanh, b);
        assert_eq!(t1, t2);
        let twice = p.add(t1, t2);
        let two = p.constant(2.0);
        assert_eq!(twice, p.mul(two, t1));
    }

    #[test]
    fn products_keep_nested_products_but_move_constants_out() {
        let mut p = Pool::new();
        let x = x(&mut p);
        let y = p.var(Var::Time);
        let a = p.var(Var::Param { param: 0, elem: 0 });
        let two = p.constant(2.0);
        let three = p.constant(3.0);
        let six = p.constant(6.0);
        let xy = p.mul(x, y);
        // One node for c·x·y, (c·x)·y and c·(x·y): the constant beside one factor.
        let flat = p.product(&[six, x, y]);
        let two_x = p.mul(two, x);
        let left = p.product(&[three, two_x, y]);
        let right = p.mul(six, xy);
        assert_eq!(flat, left);
        assert_eq!(flat, right);
        assert_eq!(p.node(flat), &Node::Mul(Box::new([six, xy])));
        // A nested product stays one factor, so `x·y` is computed once for all its users.
        let axy = p.mul(a, xy);
        assert!(matches!(p.node(axy), Node::Mul(c) if c.len() == 2 && c.contains(&xy)));
        // −(−x·y) = x·y
        let minus = p.neg(xy);
        assert_eq!(p.neg(minus), xy);
    }

    #[test]
    fn equal_factors_become_powers() {
        let mut p = Pool::new();
        let x = x(&mut p);
        let y = p.var(Var::Time);
        let two = p.constant(2.0);
        let three = p.constant(3.0);
        let square = p.pow(x, two);
        assert_eq!(p.mul(x, x), square);
        let cube = p.pow(x, three);
        assert_eq!(p.mul(square, x), cube);
        let one = p.constant(1.0);
        let minus_three = p.constant(-3.0);
        let inverse_cube = p.pow(x, minus_three);
        assert_eq!(p.mul(cube, inverse_cube), one);
        let yx2 = p.product(&[x, y, x]);
        assert_eq!(p.node(yx2), &Node::Mul(Box::new([y, square])));
    }

    #[test]
    fn division_by_three_is_not_rewritten_as_a_product() {
        let mut p = Pool::new();
        let x = x(&mut p);
        let three = p.constant(3.0);
        let third = p.div(x, three);
        assert!(matches!(p.node(third), Node::Div(..)));
        let two = p.constant(2.0);
        let half = p.constant(0.5);
        let halved = p.div(x, two);
        assert_eq!(halved, p.mul(half, x));
    }
}
