//! Symbolic differentiation of the tensor IR: forward mode ([`jvp`]), reverse mode ([`vjp`])
//! and the language's calculus built on them ([`grad`], [`jacobian`], [`div`]).
//!
//! Every rule produces tensor nodes, so the derivative of `K2 · tanh(K1 · x + b1)` is a few
//! nodes whatever the width: the VJP of `K · x` is `Kᵀ · g` for `x` and `g xᵀ` (an outer
//! product) for `K`. Each operation has one JVP rule and one VJP rule, written side by side;
//! the elementwise ones share [`local_partial`], the tensor counterpart of the scalar IR's table.

use super::node::{Leaf, TId, TNode, Window};
use super::pool::{grid, TensorPool};
use crate::ir::{CmpOp, Func, Shape};

/// `∂node/∂child_i` for an elementwise node, as an elementwise expression (broadcast like the
/// node). The same formulas as the scalar IR's `diff::local_partial`.
pub fn local_partial(pool: &mut TensorPool, id: TId, i: usize) -> TId {
    let node = pool.node(id).clone();
    match node {
        // ∂(Σ c_j)/∂c_i = 1
        TNode::Add(_) => pool.constant(1.0),
        // ∂(Π c_j)/∂c_i = Π_{j≠i} c_j
        TNode::Mul(c) => {
            let others: Vec<TId> = c
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &x)| x)
                .collect();
            pool.product(&others)
        }
        TNode::Div(_, b) => {
            if i == 0 {
                // ∂(a/b)/∂a = 1/b
                let one = pool.constant(1.0);
                pool.div(one, b)
            } else {
                // ∂(a/b)/∂b = −(a/b)/b, reusing the quotient
                let q = pool.div(id, b);
                pool.neg(q)
            }
        }
        TNode::Pow(x, y) => {
            if i == 0 {
                match pool.uniform_value(y) {
                    // n·x^(n−1) for a constant exponent
                    Some(n) => {
                        let n1 = pool.constant(n - 1.0);
                        let p = pool.pow(x, n1);
                        let n = pool.constant(n);
                        pool.mul(n, p)
                    }
                    // y·x^(y−1)
                    None => {
                        let one = pool.constant(1.0);
                        let y1 = pool.sub(y, one);
                        let p = pool.pow(x, y1);
                        pool.mul(y, p)
                    }
                }
            } else {
                // x^y · ln x
                let ln = pool.func(Func::Log, x);
                pool.mul(id, ln)
            }
        }
        TNode::Func(f, u) => func_derivative(pool, f, u, id),
        // min(a, b): ∂/∂a = [a ≤ b], ∂/∂b = [a > b]
        TNode::Min(a, b) => pool.cmp(if i == 0 { CmpOp::Le } else { CmpOp::Gt }, a, b),
        // max(a, b): ∂/∂a = [a ≥ b], ∂/∂b = [a < b]
        TNode::Max(a, b) => pool.cmp(if i == 0 { CmpOp::Ge } else { CmpOp::Lt }, a, b),
        TNode::Cmp(..) => pool.constant(0.0),
        other => panic!("local_partial of {}", other.kind()),
    }
}

/// `f'(u)` for the node `s = f(u)`.
fn func_derivative(pool: &mut TensorPool, f: Func, u: TId, s: TId) -> TId {
    let one = pool.constant(1.0);
    match f {
        Func::Sin => pool.func(Func::Cos, u),
        Func::Cos => {
            let sin = pool.func(Func::Sin, u);
            pool.neg(sin)
        }
        // 1 + tan²
        Func::Tan => {
            let sq = pool.mul(s, s);
            pool.add(one, sq)
        }
        Func::Exp => s,
        Func::Log => pool.div(one, u),
        // 0.5 / sqrt(u)
        Func::Sqrt => {
            let half = pool.constant(0.5);
            pool.div(half, s)
        }
        Func::Abs => pool.func(Func::Sign, u),
        // 1 − tanh²
        Func::Tanh => {
            let sq = pool.mul(s, s);
            pool.sub(one, sq)
        }
        // s(1 − s)
        Func::Sigmoid => {
            let q = pool.sub(one, s);
            pool.mul(s, q)
        }
        // [u > 0]
        Func::Relu => {
            let zero = pool.constant(0.0);
            pool.cmp(CmpOp::Gt, u, zero)
        }
        // softplus' = sigmoid
        Func::Softplus => pool.func(Func::Sigmoid, u),
        Func::Sign => pool.constant(0.0),
    }
}

/// Which of the nodes `0..end` depend on a leaf for which `wrt` holds.
fn dependence(pool: &TensorPool, end: usize, wrt: &dyn Fn(Leaf) -> bool) -> Vec<bool> {
    let mut depends = vec![false; end];
    for i in 0..end {
        let node = pool.node(TId(i as u32));
        depends[i] = match node {
            TNode::Leaf(l) => wrt(*l),
            _ => {
                let mut any = false;
                node.for_each_operand(|c| any |= depends[c.index()]);
                any
            }
        };
    }
    depends
}

/// Forward mode: the tangents of `roots` when each leaf `l` moves along `tangent(pool, l)`
/// (`None`: the leaf is held fixed). A root that does not move gets zeros of its shape.
pub fn jvp(
    pool: &mut TensorPool,
    roots: &[TId],
    tangent: &mut dyn FnMut(&mut TensorPool, Leaf) -> Option<TId>,
) -> Vec<TId> {
    let end = roots.iter().map(|r| r.index() + 1).max().unwrap_or(0);
    let mut dt: Vec<Option<TId>> = vec![None; end];
    for i in 0..end {
        let id = TId(i as u32);
        let node = pool.node(id).clone();
        let shape = pool.shape(id);
        let d = |c: &TId| dt[c.index()];
        let out = match &node {
            TNode::Const(_) | TNode::Literal(_) => None,
            TNode::Cmp(..) | TNode::FirstMax(_) | TNode::ArgMax(_) => None,
            TNode::Leaf(l) => tangent(pool, *l),
            TNode::Fill(a) => d(a).map(|t| pool.fill(t, shape)),
            TNode::Add(c) => {
                let terms: Vec<TId> = c.iter().filter_map(d).collect();
                (!terms.is_empty()).then(|| pool.sum_of(&terms))
            }
            TNode::Mul(_)
            | TNode::Div(..)
            | TNode::Pow(..)
            | TNode::Func(..)
            | TNode::Min(..)
            | TNode::Max(..) => {
                let mut terms = Vec::new();
                for (k, c) in node.operands().iter().enumerate() {
                    if let Some(t) = d(c) {
                        let p = local_partial(pool, id, k);
                        terms.push(pool.mul(p, t));
                    }
                }
                (!terms.is_empty()).then(|| pool.sum_of(&terms))
            }
            TNode::MatMul(a, b) => bilinear(pool, *a, *b, d(a), d(b), TensorPool::matmul),
            TNode::Outer(a, b) => bilinear(pool, *a, *b, d(a), d(b), TensorPool::outer),
            TNode::Transpose(a) => d(a).map(|t| pool.transpose(t)),
            TNode::Reshape(a) => d(a).map(|t| pool.reshape(t, shape)),
            TNode::Sum(a) => d(a).map(|t| pool.sum(t)),
            TNode::SumAxis(a, axis) => d(a).map(|t| pool.sum_axis(t, *axis)),
            // d max(x) = dx at the first maximum
            TNode::MaxAll(a) => d(a).map(|t| {
                let hot = pool.first_max(*a);
                pool.dot(hot, t)
            }),
            TNode::Gather(a, w) => d(a).map(|t| pool.gather(t, *w, shape)),
            TNode::Scatter(g, w) => d(g).map(|t| pool.scatter(t, *w, shape)),
            TNode::Concat(parts) => {
                if parts.iter().all(|p| d(p).is_none()) {
                    None
                } else {
                    let ts: Vec<TId> = parts
                        .iter()
                        .map(|p| match d(p) {
                            Some(t) => t,
                            None => {
                                let s = pool.shape(*p);
                                pool.zeros(s)
                            }
                        })
                        .collect();
                    Some(pool.concat(&ts))
                }
            }
            TNode::Diag(a) => d(a).map(|t| pool.diag(t)),
        };
        // A scalar tangent of a broadcast operand may leave a scalar: restore the shape.
        dt[i] = out.map(|t| pool.broadcast_to(t, shape));
    }
    roots
        .iter()
        .map(|r| match dt[r.index()] {
            Some(t) => t,
            None => {
                let s = pool.shape(*r);
                pool.zeros(s)
            }
        })
        .collect()
}

/// The product rule of a bilinear operation `op(a, b)`: `op(da, b) + op(a, db)`, leaving out
/// the terms whose tangent is zero.
fn bilinear(
    pool: &mut TensorPool,
    a: TId,
    b: TId,
    da: Option<TId>,
    db: Option<TId>,
    op: fn(&mut TensorPool, TId, TId) -> TId,
) -> Option<TId> {
    let mut terms = Vec::new();
    if let Some(t) = da {
        terms.push(op(pool, t, b));
    }
    if let Some(t) = db {
        terms.push(op(pool, a, t));
    }
    (!terms.is_empty()).then(|| pool.sum_of(&terms))
}

/// `g` summed down to `shape` when `shape` is a scalar that was broadcast.
fn reduce_to(pool: &mut TensorPool, g: TId, shape: Shape) -> TId {
    if shape == Shape::Scalar && pool.shape(g) != Shape::Scalar {
        pool.sum(g)
    } else {
        g
    }
}

/// Reverse mode: `Σ_r cotangents[r] · ∂roots[r]/∂wrt[k]` for each leaf node `wrt[k]`, with the
/// shape of `wrt[k]` (zeros when no root depends on it).
pub fn vjp(pool: &mut TensorPool, roots: &[TId], cotangents: &[TId], wrt: &[TId]) -> Vec<TId> {
    debug_assert_eq!(roots.len(), cotangents.len());
    let wrt_leaves: Vec<Leaf> = wrt
        .iter()
        .map(|&w| match pool.node(w) {
            TNode::Leaf(l) => *l,
            other => panic!("vjp with respect to a {} node", other.kind()),
        })
        .collect();
    let end = roots.iter().map(|r| r.index() + 1).max().unwrap_or(0);
    let depends = dependence(pool, end, &|l| wrt_leaves.contains(&l));
    let mut pending: Vec<Vec<TId>> = vec![Vec::new(); end];
    for (r, c) in roots.iter().zip(cotangents) {
        if depends[r.index()] {
            pending[r.index()].push(*c);
        }
    }
    let mut result: Vec<Option<TId>> = vec![None; end];
    for i in (0..end).rev() {
        if pending[i].is_empty() {
            continue;
        }
        let id = TId(i as u32);
        let shape = pool.shape(id);
        let parts = std::mem::take(&mut pending[i]);
        let g = pool.sum_of(&parts);
        let g = pool.broadcast_to(g, shape);
        let node = pool.node(id).clone();
        let mut give = |pool: &mut TensorPool, child: TId, contribution: TId| {
            if depends[child.index()] {
                let s = pool.shape(child);
                let c = reduce_to(pool, contribution, s);
                pending[child.index()].push(c);
            }
        };
        match &node {
            TNode::Leaf(_) => result[i] = Some(g),
            TNode::Const(_) | TNode::Literal(_) => {}
            TNode::Cmp(..) | TNode::FirstMax(_) | TNode::ArgMax(_) => {}
            TNode::Fill(a) => {
                let s = pool.sum(g);
                give(pool, *a, s);
            }
            TNode::Add(c) => {
                for &x in c.iter() {
                    give(pool, x, g);
                }
            }
            TNode::Mul(_)
            | TNode::Div(..)
            | TNode::Pow(..)
            | TNode::Func(..)
            | TNode::Min(..)
            | TNode::Max(..) => {
                for (k, x) in node.operands().into_iter().enumerate() {
                    if depends[x.index()] {
                        let p = local_partial(pool, id, k);
                        let c = pool.mul(g, p);
                        give(pool, x, c);
                    }
                }
            }
            TNode::MatMul(a, b) => {
                if depends[a.index()] {
                    // ∂/∂A of A·x is g xᵀ; of A·B it is g Bᵀ
                    let c = match pool.shape(*b) {
                        Shape::Vector(_) => pool.outer(g, *b),
                        _ => {
                            let bt = pool.transpose(*b);
                            pool.matmul(g, bt)
                        }
                    };
                    give(pool, *a, c);
                }
                if depends[b.index()] {
                    // Aᵀ g
                    let at = pool.transpose(*a);
                    let c = pool.matmul(at, g);
                    give(pool, *b, c);
                }
            }
            TNode::Outer(a, b) => {
                if depends[a.index()] {
                    let c = pool.matmul(g, *b);
                    give(pool, *a, c);
                }
                if depends[b.index()] {
                    let gt = pool.transpose(g);
                    let c = pool.matmul(gt, *a);
                    give(pool, *b, c);
                }
            }
            TNode::Transpose(a) => {
                let c = pool.transpose(g);
                give(pool, *a, c);
            }
            TNode::Reshape(a) => {
                let s = pool.shape(*a);
                let c = pool.reshape(g, s);
                give(pool, *a, c);
            }
            TNode::Sum(a) => {
                let s = pool.shape(*a);
                let c = pool.fill(g, s);
                give(pool, *a, c);
            }
            TNode::SumAxis(a, axis) => {
                let (m, n) = grid(pool.shape(*a));
                let one = pool.constant(1.0);
                let c = if *axis == 0 {
                    let ones = pool.fill(one, Shape::Vector(m));
                    pool.outer(ones, g)
                } else {
                    let ones = pool.fill(one, Shape::Vector(n));
                    pool.outer(g, ones)
                };
                give(pool, *a, c);
            }
            TNode::MaxAll(a) => {
                let hot = pool.first_max(*a);
                let c = pool.mul(hot, g);
                give(pool, *a, c);
            }
            TNode::Gather(a, w) => {
                let s = pool.shape(*a);
                let c = pool.scatter(g, *w, s);
                give(pool, *a, c);
            }
            TNode::Scatter(x, w) => {
                let s = pool.shape(*x);
                let c = pool.gather(g, *w, s);
                give(pool, *x, c);
            }
            TNode::Concat(parts) => {
                let mut offset = 0usize;
                for &p in parts.iter() {
                    let s = pool.shape(p);
                    let len = s.len();
                    if depends[p.index()] {
                        let w = Window {
                            start: offset as u32,
                            row_stride: 0,
                            col_stride: 1,
                        };
                        let c = pool.gather(g, w, s);
                        give(pool, p, c);
                    }
                    offset += len;
                }
            }
            TNode::Diag(a) => {
                let c = pool.diag_part(g);
                give(pool, *a, c);
            }
        }
    }
    wrt.iter()
        .map(|w| match result.get(w.index()).copied().flatten() {
            Some(g) => g,
            None => {
                let s = pool.shape(*w);
                pool.zeros(s)
            }
        })
        .collect()
}

/// What an expression can be differentiated with respect to: a leaf, or a window of one
/// (`grad(e, x[0:2])`).
#[derive(Clone, Copy, Debug)]
pub struct Wrt {
    /// The leaf node.
    pub leaf: TId,
    /// The window of the leaf, `None` for all of it.
    pub window: Option<Window>,
    /// The shape of the variable as written.
    pub shape: Shape,
}

impl Wrt {
    /// Reads `v` as a differentiation variable: a leaf or a gather of one.
    pub fn of(pool: &TensorPool, v: TId) -> Option<Wrt> {
        match *pool.node(v) {
            TNode::Leaf(_) => Some(Wrt {
                leaf: v,
                window: None,
                shape: pool.shape(v),
            }),
            TNode::Gather(x, w) if matches!(pool.node(x), TNode::Leaf(_)) => Some(Wrt {
                leaf: x,
                window: Some(w),
                shape: pool.shape(v),
            }),
            _ => None,
        }
    }

    fn leaf(&self, pool: &TensorPool) -> Leaf {
        match pool.node(self.leaf) {
            TNode::Leaf(l) => *l,
            _ => unreachable!("Wrt::of takes leaves"),
        }
    }

    /// The leaf's tangent when the variable moves along `t` (of the variable's shape).
    fn embed(&self, pool: &mut TensorPool, t: TId) -> TId {
        match self.window {
            None => t,
            Some(w) => {
                let s = pool.shape(self.leaf);
                pool.scatter(t, w, s)
            }
        }
    }

    /// The variable's part of a cotangent of the leaf.
    fn restrict(&self, pool: &mut TensorPool, g: TId) -> TId {
        match self.window {
            None => g,
            Some(w) => pool.gather(g, w, self.shape),
        }
    }
}

/// The forward derivative of `roots` along `t` (shape of the variable) in the variable `v`.
pub fn directional(pool: &mut TensorPool, roots: &[TId], v: &Wrt, t: TId) -> Vec<TId> {
    let leaf = v.leaf(pool);
    let lt = v.embed(pool, t);
    jvp(pool, roots, &mut |_, l| (l == leaf).then_some(lt))
}

/// `grad(e, v)`: the gradient of a scalar expression, shaped like `v`.
pub fn grad(pool: &mut TensorPool, e: TId, v: &Wrt) -> TId {
    let one = pool.constant(1.0);
    let g = vjp(pool, &[e], &[one], &[v.leaf])[0];
    v.restrict(pool, g)
}

/// The unit vector `k` of a variable's shape.
fn unit(pool: &mut TensorPool, shape: Shape, k: usize) -> TId {
    if shape == Shape::Scalar {
        return pool.constant(1.0);
    }
    let one = pool.constant(1.0);
    pool.scatter(one, Window::single(k), shape)
}

/// `jacobian(e, v)`: `[m, n]` for an expression of `m` elements and a variable of `n`, built
/// from `n` JVPs with unit tangents, one column each (so `n` nodes, not `m·n`).
pub fn jacobian(pool: &mut TensorPool, e: TId, v: &Wrt) -> TId {
    let m = pool.shape(e).len();
    let n = v.shape.len();
    let columns: Vec<TId> = (0..n)
        .map(|k| {
            let u = unit(pool, v.shape, k);
            let col = directional(pool, &[e], v, u)[0];
            pool.reshape(
                col,
                if m == 1 {
                    Shape::Scalar
                } else {
                    Shape::Vector(m)
                },
            )
        })
        .collect();
    // The columns side by side: their concatenation is the transpose, row-major.
    let stacked = pool.concat(&columns);
    let t = pool.reshape(stacked, Shape::Matrix(n, m));
    pool.transpose(t)
}

/// `div(e, v)`: `Σ_k ∂e_k/∂v_k`, the trace of the Jacobian without forming it: one JVP per
/// component with a unit tangent, of which only component `k` is kept (pushed through the
/// expression by [`TensorPool::element`], so each costs a row, not the whole field).
pub fn div(pool: &mut TensorPool, e: TId, v: &Wrt) -> TId {
    let n = v.shape.len();
    // Only elements that `e` reads have a nonzero term: `div(-grad(Phi(z, t), z), z)` with a
    // `z[65536]` that `Phi` reads at `z[0]` and `z[1]` needs two directional derivatives, not
    // 65536 (issue 18: 4 s and 518 MB to check).
    let read = if v.window.is_none() {
        elements_read(pool, e, v.leaf, n)
    } else {
        None
    };
    let terms: Vec<TId> = (0..n)
        .filter(|&k| read.as_ref().is_none_or(|r| r[k]))
        .map(|k| {
            let u = unit(pool, v.shape, k);
            let col = directional(pool, &[e], v, u)[0];
            pool.element(col, k)
        })
        .collect();
    pool.sum_of(&terms)
}

/// Which of the `n` elements of `leaf` the expression `e` reads, when it reads them only
/// through gathers (`z[0]`, `z[1..3]`); `None` when some node reads the leaf whole.
fn elements_read(pool: &TensorPool, e: TId, leaf: TId, n: usize) -> Option<Vec<bool>> {
    let mut read = vec![false; n];
    let mut seen = vec![false; e.index() + 1];
    let mut stack = vec![e];
    while let Some(id) = stack.pop() {
        if id == leaf {
            // `e` is the leaf itself.
            return None;
        }
        if std::mem::replace(&mut seen[id.index()], true) {
            continue;
        }
        let node = pool.node(id);
        if let TNode::Gather(source, window) = *node {
            if source == leaf {
                let dims = pool.shape(id).dims();
                let (rows, cols) = match dims.as_slice() {
                    [] => (1, 1),
                    [c] => (1, *c),
                    [r, c, ..] => (*r, *c),
                };
                for i in 0..rows {
                    for j in 0..cols {
                        *read.get_mut(window.at(i, j))? = true;
                    }
                }
                continue;
            }
        }
        let mut whole = false;
        node.for_each_operand(|c| {
            whole |= c == leaf;
            stack.push(c);
        });
        if whole {
            return None;
        }
    }
    Some(read)
}
