//! The reference interpreter: evaluates IR nodes with plain `f64` arithmetic.
//!
//! It is the oracle that compiled kernels, simplification and differentiation are tested
//! against, so it is deliberately simple: mark the nodes the roots need, then one forward loop
//! in id order (children precede parents) computing each needed node once. Functions, powers
//! and comparisons go through [`Func::apply`], [`apply_pow`] and [`CmpOp::apply`], the same
//! definitions that constant folding uses.

use super::node::apply_pow;
use super::tensor::{Leaf, TId, TensorPool};
use super::{CmpOp, ExprId, Func, Node, Pool, Var};

/// The values of `roots`, with each variable's value given by `value_of`.
///
/// Every node needed by some root is evaluated exactly once, in one forward pass.
pub fn eval(pool: &Pool, roots: &[ExprId], value_of: &dyn Fn(Var) -> f64) -> Vec<f64> {
    let size = roots.iter().map(|r| r.index() + 1).max().unwrap_or(0);
    let mut needed = vec![false; size];
    for r in roots {
        needed[r.index()] = true;
    }
    for i in (0..size).rev() {
        if needed[i] {
            pool.node(ExprId(i as u32))
                .for_each_operand(|c| needed[c.index()] = true);
        }
    }
    let mut values = vec![f64::NAN; size];
    for i in 0..size {
        if needed[i] {
            values[i] = eval_node(pool.node(ExprId(i as u32)), &values, value_of);
        }
    }
    roots.iter().map(|r| values[r.index()]).collect()
}

/// One node's value from its children's `values`.
pub(crate) fn eval_node(node: &Node, values: &[f64], value_of: &dyn Fn(Var) -> f64) -> f64 {
    let v = |id: &ExprId| values[id.index()];
    match node {
        Node::Const(bits) => f64::from_bits(*bits),
        Node::Var(var) => value_of(*var),
        // Left to right in child order: the order compiled kernels must follow to match bits.
        Node::Add(c) => c.split_first().map_or(0.0, |(first, rest)| {
            rest.iter().fold(v(first), |acc, x| acc + v(x))
        }),
        Node::Mul(c) => c.split_first().map_or(1.0, |(first, rest)| {
            rest.iter().fold(v(first), |acc, x| acc * v(x))
        }),
        Node::Div(a, b) => v(a) / v(b),
        Node::Pow(a, b) => apply_pow(v(a), v(b)),
        Node::Func(f, a) => Func::apply(*f, v(a)),
        Node::Min(a, b) => v(a).min(v(b)),
        Node::Max(a, b) => v(a).max(v(b)),
        Node::Cmp(op, a, b) => CmpOp::apply(*op, v(a), v(b)),
    }
}

/// Values for every kind of variable, by declaration index then row-major element: a
/// convenient `value_of` for [`eval`]. Missing entries read as NaN, so a forgotten value shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point {
    /// The time `t`.
    pub t: f64,
    /// `states[s][e]`: element `e` of state `s`.
    pub states: Vec<Vec<f64>>,
    /// `params[p][e]`: element `e` of the copy of param `p` in force at `t`.
    pub params: Vec<Vec<f64>>,
    /// `inputs[i][e]`.
    pub inputs: Vec<Vec<f64>>,
    /// `labels[l]`.
    pub labels: Vec<f64>,
    /// `observed[o][e]`.
    pub observed: Vec<Vec<f64>>,
    /// `state_tangents[s][e]`: the direction `v` of a state JVP.
    pub state_tangents: Vec<Vec<f64>>,
    /// `param_tangents[p][e]`: the direction `u` of a parameter JVP.
    pub param_tangents: Vec<Vec<f64>>,
    /// `cotangents[s][e]`: the weights `w` of a VJP, indexed like the states.
    pub cotangents: Vec<Vec<f64>>,
    /// The running cost's cotangent `w_q` of an augmented VJP.
    pub running_cotangent: Option<f64>,
}

impl Point {
    /// The value of `var` at this point (NaN when absent).
    pub fn value(&self, var: Var) -> f64 {
        fn at(table: &[Vec<f64>], i: u32, e: u32) -> f64 {
            table
                .get(i as usize)
                .and_then(|row| row.get(e as usize))
                .copied()
                .unwrap_or(f64::NAN)
        }
        match var {
            Var::Time => self.t,
            Var::State { state, elem } => at(&self.states, state, elem),
            Var::Param { param, elem } => at(&self.params, param, elem),
            Var::Input { input, elem } => at(&self.inputs, input, elem),
            Var::Label { label } => self.labels.get(label as usize).copied().unwrap_or(f64::NAN),
            Var::Observed { observed, elem } => at(&self.observed, observed, elem),
            Var::StateTangent { state, elem } => at(&self.state_tangents, state, elem),
            Var::ParamTangent { param, elem } => at(&self.param_tangents, param, elem),
            Var::Cotangent { state, elem } => at(&self.cotangents, state, elem),
            Var::RunningCotangent => self.running_cotangent.unwrap_or(f64::NAN),
        }
    }

    /// [`eval`] at this point.
    pub fn eval(&self, pool: &Pool, roots: &[ExprId]) -> Vec<f64> {
        eval(pool, roots, &|v| self.value(v))
    }

    /// The elements of a whole leaf of the tensor IR at this point (empty when absent).
    pub fn leaf(&self, leaf: Leaf) -> Vec<f64> {
        let row = |table: &[Vec<f64>], i: u32| table.get(i as usize).cloned().unwrap_or_default();
        match leaf {
            Leaf::Time => vec![self.t],
            Leaf::State(i) => row(&self.states, i),
            Leaf::Param(i) => row(&self.params, i),
            Leaf::Input(i) => row(&self.inputs, i),
            Leaf::Label(i) => self
                .labels
                .get(i as usize)
                .map(|&l| vec![l])
                .unwrap_or_default(),
            Leaf::Observed(i) => row(&self.observed, i),
            Leaf::StateTangent(i) => row(&self.state_tangents, i),
            Leaf::ParamTangent(i) => row(&self.param_tangents, i),
            Leaf::Cotangent(i) => row(&self.cotangents, i),
        }
    }

    /// The tensor interpreter at this point: each root's elements, row-major.
    pub fn eval_tensors(&self, pool: &TensorPool, roots: &[TId]) -> Vec<Vec<f64>> {
        super::tensor::eval(pool, roots, &|l| self.leaf(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_every_node_kind() {
        let mut p = Pool::new();
        let x = p.var(Var::State { state: 0, elem: 1 });
        let k = p.var(Var::Param { param: 0, elem: 0 });
        let t = p.var(Var::Time);
        let y = p.var(Var::Label { label: 0 });
        let sum = p.add(x, k);
        let prod = p.mul(sum, t);
        let quot = p.div(prod, k);
        let pow = p.pow(quot, x);
        let tanh = p.func(Func::Tanh, pow);
        let min = p.min(tanh, y);
        let max = p.max(tanh, y);
        let lt = p.cmp(CmpOp::Lt, min, max);
        let point = Point {
            t: 2.0,
            states: vec![vec![0.0, 3.0]],
            params: vec![vec![1.5]],
            labels: vec![0.25],
            ..Point::default()
        };
        let values = point.eval(&p, &[sum, prod, quot, pow, tanh, min, max, lt]);
        let expected_pow = 6.0f64.powf(3.0);
        assert_eq!(values[..4], [4.5, 9.0, 6.0, expected_pow]);
        assert_eq!(values[4], expected_pow.tanh());
        assert_eq!(values[5..], [0.25, 1.0, 1.0]);
    }

    #[test]
    fn missing_values_read_as_nan() {
        let point = Point::default();
        assert!(point.value(Var::Input { input: 3, elem: 0 }).is_nan());
    }
}
