//! Expansion of tensor nodes into the scalar IR: one scalar node per element, built through the
//! scalar pool's smart constructors (CasADi's `expand()` from MX to SX).
//!
//! Small models run fastest as scalar kernels (the native elementwise code), so a tensor
//! expression is expanded where that wins; the products and reductions are expanded the way
//! `sema` lowered them element by element (a row of `K · x` is the sum of `K[i, k]·x[k]`).
//! [`expand_scalar`] expands a whole model's roots (`ir::prepare` runs it), and
//! [`ExpansionSize`] estimates the cost of that without doing it, for `ir::prepare_to_run`'s
//! choice between the scalar tape and tensor kernels.

use super::node::{Leaf, TId, TNode};
use super::pool::{grid, TensorPool};
use crate::diag::Span;
use crate::ir::{DataSource, ExprId, Model, Pool, ScalarIr, Shape, Var};

/// Fills the scalar roots of a model that `sema` built as tensor roots only: each state's
/// `init` and `rhs`, each cost's, metric's and output's `value`, LM-ResNet's `k` and
/// `uniform`'s labels, in a scalar pool built afresh. Does nothing when the model already has
/// its scalar IR ([`Model::has_scalar_ir`]), so it may be called more than once.
///
/// The roots are expanded in the order `sema` lowers them (every state's `init` then `rhs`,
/// then the other declarations in source order, i.e. by span), which is the order in which
/// `sema` expanded them when it did so itself, so the scalar pool is node for node the one it
/// built. That matters beyond `nodec ir`'s numbering: [`Pool::sum`] orders terms by id, so the
/// order of creation fixes how sums round. It is also why `k` and the labels, which `sema`
/// expands into the pool at once, are expanded again here in their place rather than kept.
pub fn expand_scalar(model: &mut Model) {
    if model.has_scalar_ir() {
        return;
    }
    let order = scalar_roots(model);
    let mut pool = Pool::new();
    let mut expander = Expander::new();
    for (slot, _, id) in order {
        let elements = expander.expand(&model.tensors, &mut pool, id);
        match slot {
            Slot::Init(i) => model.states[i].init = elements,
            Slot::Rhs(i) => model.states[i].rhs = elements,
            Slot::Cost(i) => model.costs[i].value = elements[0],
            Slot::Metric(i) => model.metrics[i].value = elements,
            Slot::Output(i) => model.outputs[i].value = elements,
            Slot::EventCond(i) => model.events[i].cond = elements[0],
            Slot::EventJump(i) => model.events[i].jumps.extend(elements),
            Slot::LmK => {
                if let Some(s) = model.schedule.as_mut() {
                    s.lm_k = Some(elements[0]);
                }
            }
            Slot::Label(block) => {
                if let DataSource::Uniform { label, .. } = &mut model.data[block].source {
                    *label = Some(elements[0]);
                }
            }
        }
    }
    model.pool = pool;
    model.scalar_ir = ScalarIr::Present;
}

/// Which scalar field of the model an expanded tensor root fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// `states[i].init`
    Init(usize),
    /// `states[i].rhs`
    Rhs(usize),
    /// `costs[i].value`
    Cost(usize),
    /// `metrics[i].value`
    Metric(usize),
    /// `outputs[i].value`
    Output(usize),
    /// `events[i].cond`
    EventCond(usize),
    /// One assignment of `events[i].jumps`, appended in order.
    EventJump(usize),
    /// `schedule.lm_k`
    LmK,
    /// The label of `data[i]`'s `uniform` source.
    Label(usize),
}

/// The tensor roots of a model that `sema` built, in the order [`expand_scalar`] expands
/// them, each with the field it fills and its declaration's span (for `sema`'s size error).
pub(crate) fn scalar_roots(model: &Model) -> Vec<(Slot, Span, TId)> {
    let roots = &model.tensor_roots;
    assert!(
        roots.init.len() == model.states.len()
            && roots.rhs.len() == model.states.len()
            && roots.costs.len() == model.costs.len()
            && roots.metrics.len() == model.metrics.len()
            && roots.outputs.len() == model.outputs.len(),
        "sema records one tensor root per scalar root"
    );
    let mut order = Vec::new();
    for (i, state) in model.states.iter().enumerate() {
        order.push((Slot::Init(i), state.span, roots.init[i]));
        order.push((Slot::Rhs(i), state.equation_span, roots.rhs[i]));
    }
    let mut rest = Vec::new();
    for (i, c) in model.costs.iter().enumerate() {
        rest.push((Slot::Cost(i), c.span, roots.costs[i]));
    }
    for (i, m) in model.metrics.iter().enumerate() {
        rest.push((Slot::Metric(i), m.span, roots.metrics[i]));
    }
    for (i, o) in model.outputs.iter().enumerate() {
        rest.push((Slot::Output(i), o.span, roots.outputs[i]));
    }
    let mut jump = 0;
    for (i, e) in model.events.iter().enumerate() {
        rest.push((Slot::EventCond(i), e.span, roots.event_conds[i]));
        for _ in &e.targets {
            rest.push((Slot::EventJump(i), e.span, roots.event_jumps[jump]));
            jump += 1;
        }
    }
    if let (Some(id), Some(schedule)) = (roots.lm_k, &model.schedule) {
        rest.push((Slot::LmK, schedule.span, id));
    }
    for &(block, id) in &roots.data_labels {
        rest.push((Slot::Label(block), model.data[block].span, id));
    }
    // `sema` lowers the declarations after the states in source order; a stable sort keeps
    // anything without a span (none from `sema`) in the order above.
    rest.sort_by_key(|(_, span, _)| *span);
    order.extend(rest);
    order
}

/// An estimate of the number of scalar nodes [`Expander`] creates for some roots, computed on
/// the tensor nodes without expanding them: one node per element of each operation, `k + 1`
/// per element of a product with inner dimension `k` (its products and their sum). Hash-consing
/// and constant folding can only make the real count smaller, except for the few nodes the
/// scalar constructors add to collect like terms.
#[derive(Clone, Debug, Default)]
pub struct ExpansionSize {
    counted: Vec<bool>,
    total: usize,
}

impl ExpansionSize {
    /// Nothing counted yet.
    pub fn new() -> ExpansionSize {
        ExpansionSize::default()
    }

    /// Counts the nodes `root` needs that no earlier root needed (as the memoized expansion
    /// shares them) and returns the total so far.
    pub fn add(&mut self, tensors: &TensorPool, root: TId) -> usize {
        if self.counted.len() < tensors.len() {
            self.counted.resize(tensors.len(), false);
        }
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut self.counted[id.index()], true) {
                continue;
            }
            self.total = self.total.saturating_add(node_size(tensors, id));
            tensors.node(id).for_each_operand(|c| stack.push(c));
        }
        self.total
    }
}

/// The scalar nodes the expansion of one tensor node builds, at most (see [`ExpansionSize`]).
fn node_size(t: &TensorPool, id: TId) -> usize {
    let n = t.shape(id).len();
    let len = |a: &TId| t.shape(*a).len();
    match t.node(id) {
        TNode::Const(_) | TNode::Sum(_) | TNode::Scatter(..) | TNode::Diag(_) => 1,
        TNode::Literal(bits) => bits.len(),
        TNode::Fill(_)
        | TNode::Transpose(_)
        | TNode::Reshape(_)
        | TNode::Gather(..)
        | TNode::Concat(_) => 0,
        TNode::Leaf(_)
        | TNode::Add(_)
        | TNode::Mul(_)
        | TNode::Div(..)
        | TNode::Pow(..)
        | TNode::Func(..)
        | TNode::Min(..)
        | TNode::Max(..)
        | TNode::Cmp(..)
        | TNode::SumAxis(..)
        | TNode::Outer(..) => n,
        TNode::MatMul(a, _) => n.saturating_mul(grid(t.shape(*a)).1 + 1),
        TNode::MaxAll(a) => len(a),
        // Prefix maxima, comparisons and differences.
        TNode::FirstMax(a) => 3 * len(a) + 1,
        TNode::ArgMax(a) => 2 * len(a) + 1,
    }
}

/// Maps tensor nodes to scalar elements, memoized across calls (the tensor pool may grow
/// between calls).
#[derive(Clone, Debug, Default)]
pub struct Expander {
    elements: Vec<Option<Vec<ExprId>>>,
}

/// The scalar variable of element `elem` of a leaf, in the scalar IR's numbering.
pub fn leaf_var(leaf: Leaf, elem: usize) -> Var {
    let elem = elem as u32;
    match leaf {
        Leaf::Time => Var::Time,
        Leaf::State(state) => Var::State { state, elem },
        Leaf::Param(param) => Var::Param { param, elem },
        Leaf::Input(input) => Var::Input { input, elem },
        Leaf::Label(label) => Var::Label { label },
        Leaf::Observed(observed) => Var::Observed { observed, elem },
        Leaf::StateTangent(state) => Var::StateTangent { state, elem },
        Leaf::ParamTangent(param) => Var::ParamTangent { param, elem },
        Leaf::Cotangent(state) => Var::Cotangent { state, elem },
    }
}

impl Expander {
    /// An expander with nothing expanded yet; leaves become the variables of [`leaf_var`].
    pub fn new() -> Expander {
        Expander::default()
    }

    /// The scalar nodes of `id`'s elements, row-major.
    ///
    /// The nodes `id` needs are expanded in increasing id order, the order in which they were
    /// built, so the scalar nodes are created in the order an element-by-element lowering of
    /// the same text would create them.
    pub fn expand(&mut self, tensors: &TensorPool, pool: &mut Pool, id: TId) -> Vec<ExprId> {
        if self.elements.len() < tensors.len() {
            self.elements.resize(tensors.len(), None);
        }
        let mut needed = vec![false; id.index() + 1];
        needed[id.index()] = true;
        for i in (0..=id.index()).rev() {
            if needed[i] && self.elements[i].is_none() {
                tensors
                    .node(TId(i as u32))
                    .for_each_operand(|c| needed[c.index()] = true);
            }
        }
        for (i, &need) in needed.iter().enumerate() {
            if need && self.elements[i].is_none() {
                let elems = self.expand_node(tensors, pool, TId(i as u32));
                self.elements[i] = Some(elems);
            }
        }
        self.elements[id.index()].clone().expect("expanded")
    }

    fn expand_node(&self, t: &TensorPool, pool: &mut Pool, id: TId) -> Vec<ExprId> {
        let shape = t.shape(id);
        let n = shape.len();
        let e = |c: &TId| self.elements[c.index()].as_ref().expect("children first");
        // Element i of a child, broadcasting scalars.
        let at = |c: &TId, i: usize| {
            let x = e(c);
            if x.len() == 1 {
                x[0]
            } else {
                x[i]
            }
        };
        match t.node(id) {
            TNode::Const(bits) => vec![pool.constant(f64::from_bits(*bits))],
            TNode::Literal(bits) => bits
                .iter()
                .map(|b| pool.constant(f64::from_bits(*b)))
                .collect(),
            TNode::Leaf(l) => (0..n).map(|i| pool.var(leaf_var(*l, i))).collect(),
            TNode::Fill(a) => vec![e(a)[0]; n],
            TNode::Add(c) => (0..n)
                .map(|i| {
                    let terms: Vec<ExprId> = c.iter().map(|x| at(x, i)).collect();
                    pool.sum(&terms)
                })
                .collect(),
            TNode::Mul(c) => (0..n)
                .map(|i| {
                    let factors: Vec<ExprId> = c.iter().map(|x| at(x, i)).collect();
                    pool.product(&factors)
                })
                .collect(),
            TNode::Div(a, b) => (0..n).map(|i| pool.div(at(a, i), at(b, i))).collect(),
            TNode::Pow(a, b) => (0..n).map(|i| pool.pow(at(a, i), at(b, i))).collect(),
            TNode::Func(f, a) => e(a).iter().map(|&x| pool.func(*f, x)).collect(),
            TNode::Min(a, b) => (0..n).map(|i| pool.min(at(a, i), at(b, i))).collect(),
            TNode::Max(a, b) => (0..n).map(|i| pool.max(at(a, i), at(b, i))).collect(),
            TNode::Cmp(op, a, b) => (0..n).map(|i| pool.cmp(*op, at(a, i), at(b, i))).collect(),
            TNode::MatMul(a, b) => {
                let (m, k) = grid(t.shape(*a));
                let p = match t.shape(*b) {
                    Shape::Vector(_) => 1,
                    s => grid(s).1,
                };
                let (x, y) = (e(a), e(b));
                let mut out = Vec::with_capacity(m * p);
                let mut terms = Vec::with_capacity(k);
                for i in 0..m {
                    for j in 0..p {
                        terms.clear();
                        for l in 0..k {
                            terms.push(pool.mul(x[i * k + l], y[l * p + j]));
                        }
                        out.push(pool.sum(&terms));
                    }
                }
                out
            }
            TNode::Transpose(a) => {
                let (m, k) = grid(t.shape(*a));
                let x = e(a);
                (0..k)
                    .flat_map(|j| (0..m).map(move |i| x[i * k + j]))
                    .collect()
            }
            TNode::Reshape(a) => e(a).clone(),
            TNode::Sum(a) => vec![pool.sum(e(a))],
            TNode::SumAxis(a, axis) => {
                let (m, k) = grid(t.shape(*a));
                let x = e(a);
                if *axis == 0 {
                    (0..k)
                        .map(|j| {
                            let col: Vec<ExprId> = (0..m).map(|i| x[i * k + j]).collect();
                            pool.sum(&col)
                        })
                        .collect()
                } else {
                    (0..m).map(|i| pool.sum(&x[i * k..(i + 1) * k])).collect()
                }
            }
            TNode::MaxAll(a) => {
                let x = e(a);
                let mut m = x[0];
                for &y in &x[1..] {
                    m = pool.max(m, y);
                }
                vec![m]
            }
            TNode::FirstMax(a) => {
                // [prefix max before k < max] − [prefix max through k < max]: 1 exactly at the
                // first maximum.
                let x = e(a);
                let (prefix, m) = prefix_maxima(pool, x);
                let below: Vec<ExprId> = prefix
                    .iter()
                    .map(|&p| pool.cmp(crate::ir::CmpOp::Lt, p, m))
                    .collect();
                let one = pool.constant(1.0);
                (0..x.len())
                    .map(|k| {
                        let before = if k == 0 { one } else { below[k - 1] };
                        pool.sub(before, below[k])
                    })
                    .collect()
            }
            TNode::ArgMax(a) => {
                // Σ_k [max(x_0..x_k) < max(x)] counts the positions before the first maximum.
                let x = e(a);
                let (prefix, m) = prefix_maxima(pool, x);
                let below: Vec<ExprId> = prefix[..prefix.len() - 1]
                    .iter()
                    .map(|&p| pool.cmp(crate::ir::CmpOp::Lt, p, m))
                    .collect();
                vec![pool.sum(&below)]
            }
            TNode::Gather(a, w) => {
                let (rows, cols) = grid(shape);
                let x = e(a);
                (0..rows)
                    .flat_map(|i| (0..cols).map(move |j| x[w.at(i, j)]))
                    .collect()
            }
            TNode::Scatter(g, w) => {
                let (rows, cols) = grid(t.shape(*g));
                let zero = pool.constant(0.0);
                let mut out = vec![zero; n];
                let x = e(g);
                for i in 0..rows {
                    for j in 0..cols {
                        out[w.at(i, j)] = x[i * cols + j];
                    }
                }
                out
            }
            TNode::Concat(parts) => parts.iter().flat_map(|p| e(p).iter().copied()).collect(),
            TNode::Outer(a, b) => {
                let (x, y) = (e(a), e(b));
                let mut out = Vec::with_capacity(n);
                for &p in x {
                    for &q in y {
                        out.push(pool.mul(p, q));
                    }
                }
                out
            }
            TNode::Diag(a) => {
                let x = e(a);
                let k = x.len();
                let zero = pool.constant(0.0);
                let mut out = vec![zero; k * k];
                for (i, &v) in x.iter().enumerate() {
                    out[i * k + i] = v;
                }
                out
            }
        }
    }
}

/// The running maxima `max(x_0..x_k)` for every `k`, and the overall maximum (the last).
fn prefix_maxima(pool: &mut Pool, x: &[ExprId]) -> (Vec<ExprId>, ExprId) {
    let mut prefix = Vec::with_capacity(x.len());
    let mut m = x[0];
    prefix.push(m);
    for &y in &x[1..] {
        m = pool.max(m, y);
        prefix.push(m);
    }
    (prefix, m)
}
