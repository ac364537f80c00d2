//! The reference interpreter of the tensor IR: plain loops over whole arrays, the oracle that
//! the scalar expansion and compiled kernels are tested against.

use super::node::{Leaf, TId, TNode};
use super::pool::{grid, TensorPool};
use crate::ir::{apply_pow, Shape};

/// The index of the first largest element (NaN never wins, as `f64::max` ignores it).
pub fn first_max_index(x: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate().skip(1) {
        if v > x[best] || (x[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best
}

/// The elements of `x · y` for `[m, k]·[k]` or `[m, k]·[k, n]`, each a left-to-right sum.
pub fn matmul_values(x: &[f64], sx: Shape, y: &[f64], sy: Shape) -> Vec<f64> {
    let (m, k) = grid(sx);
    let n = match sy {
        Shape::Vector(_) => 1,
        _ => grid(sy).1,
    };
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for l in 0..k {
                acc += x[i * k + l] * y[l * n + j];
            }
            out[i * n + j] = acc;
        }
    }
    out
}

/// Evaluates `roots`, reading leaves from `leaf` (row-major elements of the leaf's shape).
pub fn eval(pool: &TensorPool, roots: &[TId], leaf: &dyn Fn(Leaf) -> Vec<f64>) -> Vec<Vec<f64>> {
    let end = roots.iter().map(|r| r.index() + 1).max().unwrap_or(0);
    // Only the nodes the roots reach: others may read leaves the caller has no values for.
    let mut needed = vec![false; end];
    for r in roots {
        needed[r.index()] = true;
    }
    for i in (0..end).rev() {
        if needed[i] {
            pool.node(TId(i as u32))
                .for_each_operand(|c| needed[c.index()] = true);
        }
    }
    let mut values: Vec<Vec<f64>> = Vec::with_capacity(end);
    for (i, &need) in needed.iter().enumerate() {
        let id = TId(i as u32);
        let v = if need {
            eval_node(pool, id, &values, leaf)
        } else {
            Vec::new()
        };
        debug_assert!(
            !need || v.len() == pool.shape(id).len(),
            "{}",
            pool.node(id).kind()
        );
        values.push(v);
    }
    roots.iter().map(|r| values[r.index()].clone()).collect()
}

fn eval_node(
    pool: &TensorPool,
    id: TId,
    values: &[Vec<f64>],
    leaf: &dyn Fn(Leaf) -> Vec<f64>,
) -> Vec<f64> {
    let shape = pool.shape(id);
    let n = shape.len();
    let v = |c: &TId| &values[c.index()];
    // Element `i` of a child, broadcasting scalars.
    let at = |c: &TId, i: usize| {
        let x = &values[c.index()];
        if x.len() == 1 {
            x[0]
        } else {
            x[i]
        }
    };
    let map2 = |a: &TId, b: &TId, f: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
        (0..n).map(|i| f(at(a, i), at(b, i))).collect()
    };
    match pool.node(id) {
        TNode::Const(bits) => vec![f64::from_bits(*bits)],
        TNode::Literal(bits) => bits.iter().map(|b| f64::from_bits(*b)).collect(),
        TNode::Leaf(l) => leaf(*l),
        TNode::Fill(a) => vec![v(a)[0]; n],
        TNode::Add(c) => (0..n)
            .map(|i| c.iter().fold(0.0, |acc, x| acc + at(x, i)))
            .collect(),
        TNode::Mul(c) => (0..n)
            .map(|i| c.iter().fold(1.0, |acc, x| acc * at(x, i)))
            .collect(),
        TNode::Div(a, b) => map2(a, b, &|x, y| x / y),
        TNode::Pow(a, b) => map2(a, b, &apply_pow),
        TNode::Func(f, a) => v(a).iter().map(|&x| f.apply(x)).collect(),
        TNode::Min(a, b) => map2(a, b, &f64::min),
        TNode::Max(a, b) => map2(a, b, &f64::max),
        TNode::Cmp(op, a, b) => map2(a, b, &|x, y| op.apply(x, y)),
        TNode::MatMul(a, b) => matmul_values(v(a), pool.shape(*a), v(b), pool.shape(*b)),
        TNode::Transpose(a) => {
            let (m, k) = grid(pool.shape(*a));
            let x = v(a);
            (0..k)
                .flat_map(|j| (0..m).map(move |i| x[i * k + j]))
                .collect()
        }
        TNode::Reshape(a) => v(a).clone(),
        TNode::Sum(a) => vec![v(a).iter().sum()],
        TNode::SumAxis(a, axis) => {
            let (m, k) = grid(pool.shape(*a));
            let x = v(a);
            if *axis == 0 {
                (0..k).map(|j| (0..m).map(|i| x[i * k + j]).sum()).collect()
            } else {
                (0..m).map(|i| x[i * k..(i + 1) * k].iter().sum()).collect()
            }
        }
        TNode::MaxAll(a) => {
            let x = v(a);
            vec![x[1..].iter().fold(x[0], |m, &y| m.max(y))]
        }
        TNode::FirstMax(a) => {
            let mut out = vec![0.0; n];
            out[first_max_index(v(a))] = 1.0;
            out
        }
        TNode::ArgMax(a) => vec![first_max_index(v(a)) as f64],
        TNode::Gather(a, w) => {
            let (rows, cols) = grid(shape);
            let x = v(a);
            (0..rows)
                .flat_map(|i| (0..cols).map(move |j| x[w.at(i, j)]))
                .collect()
        }
        TNode::Scatter(g, w) => {
            let (rows, cols) = grid(pool.shape(*g));
            let mut out = vec![0.0; n];
            for i in 0..rows {
                for j in 0..cols {
                    out[w.at(i, j)] += v(g)[i * cols + j];
                }
            }
            out
        }
        TNode::Concat(parts) => parts.iter().flat_map(|p| v(p).iter().copied()).collect(),
        TNode::Outer(a, b) => v(a)
            .iter()
            .flat_map(|&x| v(b).iter().map(move |&y| x * y))
            .collect(),
        TNode::Diag(a) => {
            let k = v(a).len();
            let mut out = vec![0.0; k * k];
            for (i, &x) in v(a).iter().enumerate() {
                out[i * k + i] = x;
            }
            out
        }
    }
}
