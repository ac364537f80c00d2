//! Symbolic differentiation on the IR: partial derivatives, forward mode (JVP) and reverse
//! mode (VJP), all building new nodes in the same [`Pool`] through its smart constructors.
//!
//! Every rule is one function, [`local_partial`]: the derivative of a node with respect to one
//! of its children, written in terms of existing nodes where it can (`d tanh u = (1 − tanh² u)
//! du` reuses the `tanh u` node). The three modes combine those local partials by the chain
//! rule in different orders:
//!
//! - [`partial`] walks the DAG below an expression in id order (children first), memoized in
//!   the pool by `(node, variable)` so repeated and nested derivatives (`div(grad(Phi, z), z)`)
//!   share work and nodes;
//! - [`jvp`] sweeps forward once, carrying a tangent node per node;
//! - [`vjp`] sweeps backward once in reverse id order, accumulating adjoints from parents to
//!   children, as candle's `backprop.rs` walks topologically sorted nodes.
//!
//! `sema` calls [`partial`] for `grad`, `jacobian` and `div`; [`super::prepare`] calls [`jvp`] and
//! [`vjp`] to build the [`super::Derivatives`] of a model.

use std::collections::{HashMap, HashSet};

use super::{CmpOp, ExprId, Func, Node, Pool, Var};

/// The partial derivative of `expr` with respect to `var`, as new nodes in the same pool.
///
/// Memoized in the pool by `(node, var)`: a second call, or the partial of an expression that
/// shares nodes with an earlier one, reuses the earlier result. Walks iteratively, so deep DAGs
/// do not grow the call stack.
pub fn partial(pool: &mut Pool, expr: ExprId, var: Var) -> ExprId {
    if let Some(&d) = pool.diff_memo.get(&(expr, var)) {
        return d;
    }
    // Nodes below `expr` whose partial is not known yet; children always have smaller ids, so
    // processing them in increasing id order sees every child before its parents.
    let mut todo = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![expr];
    while let Some(id) = stack.pop() {
        if pool.diff_memo.contains_key(&(id, var)) || !seen.insert(id) {
            continue;
        }
        todo.push(id);
        pool.node(id).for_each_operand(|c| stack.push(c));
    }
    todo.sort_unstable();
    let mut terms = Vec::new();
    for id in todo {
        let d = match pool.node(id) {
            Node::Const(_) => pool.constant(0.0),
            Node::Var(v) => pool.constant(if *v == var { 1.0 } else { 0.0 }),
            node => {
                terms.clear();
                for i in 0..node.operand_count() {
                    let child = pool.node(id).operand(i);
                    let dc = pool.diff_memo[&(child, var)];
                    if !pool.is_const(dc, 0.0) {
                        let l = local_partial(pool, id, i);
                        terms.push(pool.mul(l, dc));
                    }
                }
                pool.sum(&terms)
            }
        };
        pool.diff_memo.insert((id, var), d);
    }
    pool.diff_memo[&(expr, var)]
}

/// Forward mode: for each output, `Σ_j ∂out/∂v_j · tangent(v_j)` over the variables `v_j` for
/// which `tangent` gives a direction (others are held fixed).
///
/// One forward sweep over the nodes reachable from `outputs`: each node's tangent is
/// `Σ_i ∂node/∂child_i · tangent(child_i)`, skipping children whose tangent is zero.
pub fn jvp(
    pool: &mut Pool,
    outputs: &[ExprId],
    tangent: &dyn Fn(Var) -> Option<ExprId>,
) -> Vec<ExprId> {
    let order = reachable(pool, outputs);
    let zero = pool.constant(0.0);
    let size = order.last().map_or(0, |id| id.index() + 1);
    let mut tangents = vec![zero; size];
    let mut terms = Vec::new();
    for &id in &order {
        let t = match pool.node(id) {
            Node::Const(_) => zero,
            Node::Var(v) => tangent(*v).unwrap_or(zero),
            node => {
                terms.clear();
                for i in 0..node.operand_count() {
                    let dc = tangents[pool.node(id).operand(i).index()];
                    if !pool.is_const(dc, 0.0) {
                        let l = local_partial(pool, id, i);
                        terms.push(pool.mul(l, dc));
                    }
                }
                pool.sum(&terms)
            }
        };
        tangents[id.index()] = t;
    }
    outputs.iter().map(|o| tangents[o.index()]).collect()
}

/// Reverse mode: for each `v` in `wrt`, `Σ_i cotangents[i] · ∂outputs[i]/∂v`.
///
/// One backward sweep in decreasing id order over the nodes reachable from `outputs` that
/// depend on some variable of `wrt`: when a node is reached, all its parents (larger ids) have
/// already pushed their contributions `adjoint(parent) · ∂parent/∂node`, which are summed into
/// its adjoint and then pushed on to its own children.
///
/// # Panics
/// If `outputs` and `cotangents` differ in length.
pub fn vjp(pool: &mut Pool, outputs: &[ExprId], cotangents: &[ExprId], wrt: &[Var]) -> Vec<ExprId> {
    assert_eq!(
        outputs.len(),
        cotangents.len(),
        "vjp: one cotangent per output"
    );
    let order = reachable(pool, outputs);
    let size = order.last().map_or(0, |id| id.index() + 1);
    // Which nodes depend on a variable of `wrt`: only their adjoints are worth building.
    let wanted: HashSet<Var> = wrt.iter().copied().collect();
    let mut relevant = vec![false; size];
    for &id in &order {
        relevant[id.index()] = match pool.node(id) {
            Node::Var(v) => wanted.contains(v),
            node => {
                let mut any = false;
                node.for_each_operand(|c| any |= relevant[c.index()]);
                any
            }
        };
    }
    let mut contributions: Vec<Vec<ExprId>> = vec![Vec::new(); size];
    for (&o, &w) in outputs.iter().zip(cotangents) {
        if relevant[o.index()] {
            contributions[o.index()].push(w);
        }
    }
    let zero = pool.constant(0.0);
    let mut var_adjoints: HashMap<Var, ExprId> = HashMap::new();
    for &id in order.iter().rev() {
        if !relevant[id.index()] {
            continue;
        }
        let parts = std::mem::take(&mut contributions[id.index()]);
        let adjoint = pool.sum(&parts);
        if pool.is_const(adjoint, 0.0) {
            continue;
        }
        if let Node::Var(v) = pool.node(id) {
            var_adjoints.insert(*v, adjoint);
            continue;
        }
        for i in 0..pool.node(id).operand_count() {
            let child = pool.node(id).operand(i);
            if relevant[child.index()] {
                let l = local_partial(pool, id, i);
                let c = pool.mul(adjoint, l);
                contributions[child.index()].push(c);
            }
        }
    }
    wrt.iter()
        .map(|v| var_adjoints.get(v).copied().unwrap_or(zero))
        .collect()
}

/// The nodes reachable from `roots`, in increasing id order (children before parents).
pub(crate) fn reachable(pool: &Pool, roots: &[ExprId]) -> Vec<ExprId> {
    let size = roots.iter().map(|r| r.index() + 1).max().unwrap_or(0);
    let mut marked = vec![false; size];
    for r in roots {
        marked[r.index()] = true;
    }
    // Parents have larger ids, so one descending pass marks everything below the roots.
    for i in (0..size).rev() {
        if marked[i] {
            pool.node(ExprId(i as u32))
                .for_each_operand(|c| marked[c.index()] = true);
        }
    }
    (0..size)
        .filter(|&i| marked[i])
        .map(|i| ExprId(i as u32))
        .collect()
}

/// `∂node/∂child_i`: the derivative of node `id` with respect to its `i`-th operand, built from
/// existing nodes where possible. The one table of derivative rules.
pub fn local_partial(pool: &mut Pool, id: ExprId, i: usize) -> ExprId {
    // ∂(Π_j c_j)/∂c_i = Π_{j≠i} c_j  (product rule, one factor at a time)
    if let Node::Mul(c) = pool.node(id) {
        let others: Vec<ExprId> = c
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &x)| x)
            .collect();
        return pool.product(&others);
    }
    match *pool.node(id) {
        // Leaves have no operands; constants and variables are handled by the callers.
        Node::Const(_) | Node::Var(_) => pool.constant(0.0),
        // ∂(Σ_j c_j)/∂c_i = 1
        Node::Add(_) => pool.constant(1.0),
        Node::Mul(_) => unreachable!("handled above"),
        Node::Div(_, b) => {
            if i == 0 {
                // ∂(a/b)/∂a = 1/b
                let one = pool.constant(1.0);
                pool.div(one, b)
            } else {
                // ∂(a/b)/∂b = −a/b² = −(a/b)/b, reusing the quotient node
                let q_over_b = pool.div(id, b);
                pool.neg(q_over_b)
            }
        }
        Node::Pow(x, y) => {
            if i == 0 {
                match pool.const_value(y) {
                    // ∂(x^n)/∂x = n·x^(n−1) for a constant exponent n
                    Some(n) => {
                        let n_minus_1 = pool.constant(n - 1.0);
                        let p = pool.pow(x, n_minus_1);
                        let n = pool.constant(n);
                        pool.mul(n, p)
                    }
                    // ∂(x^y)/∂x = y·x^(y−1)  (correct at x = 0 for y > 1, unlike y·x^y/x)
                    None => {
                        let one = pool.constant(1.0);
                        let y_minus_1 = pool.sub(y, one);
                        let p = pool.pow(x, y_minus_1);
                        pool.mul(y, p)
                    }
                }
            } else {
                // ∂(x^y)/∂y = x^y·ln x, reusing the power node
                let ln_x = pool.func(Func::Log, x);
                pool.mul(id, ln_x)
            }
        }
        Node::Func(f, u) => func_derivative(pool, f, u, id),
        // min(a, b) = [a ≤ b]·a + [a > b]·b, so ∂/∂a = [a ≤ b] and ∂/∂b = [a > b]
        Node::Min(a, b) => {
            let op = if i == 0 { CmpOp::Le } else { CmpOp::Gt };
            pool.cmp(op, a, b)
        }
        // max(a, b) = [a ≥ b]·a + [a < b]·b, so ∂/∂a = [a ≥ b] and ∂/∂b = [a < b]
        Node::Max(a, b) => {
            let op = if i == 0 { CmpOp::Ge } else { CmpOp::Lt };
            pool.cmp(op, a, b)
        }
        // A comparison is piecewise constant: derivative 0 (where it exists).
        Node::Cmp(..) => pool.constant(0.0),
    }
}

/// `f'(u)` for the node `s = f(u)`.
fn func_derivative(pool: &mut Pool, f: Func, u: ExprId, s: ExprId) -> ExprId {
    match f {
        // sin' = cos
        Func::Sin => pool.func(Func::Cos, u),
        // cos' = −sin
        Func::Cos => {
            let sin = pool.func(Func::Sin, u);
            pool.neg(sin)
        }
        // tan' = 1 + tan²
        Func::Tan => {
            let one = pool.constant(1.0);
            let sq = pool.mul(s, s);
            pool.add(one, sq)
        }
        // exp' = exp (the node itself)
        Func::Exp => s,
        // log' = 1/u
        Func::Log => {
            let one = pool.constant(1.0);
            pool.div(one, u)
        }
        // sqrt' = 1/(2 sqrt u) = 0.5/s  (the same correctly rounded quotient)
        Func::Sqrt => {
            let half = pool.constant(0.5);
            pool.div(half, s)
        }
        // abs' = sign  (0 at the kink)
        Func::Abs => pool.func(Func::Sign, u),
        // tanh' = 1 − tanh²
        Func::Tanh => {
            let one = pool.constant(1.0);
            let sq = pool.mul(s, s);
            pool.sub(one, sq)
        }
        // sigmoid' = s(1 − s)
        Func::Sigmoid => {
            let one = pool.constant(1.0);
            let one_minus_s = pool.sub(one, s);
            pool.mul(s, one_minus_s)
        }
        // relu' = [u > 0]  (0 at the kink)
        Func::Relu => {
            let zero = pool.constant(0.0);
            pool.cmp(CmpOp::Gt, u, zero)
        }
        // softplus' = sigmoid
        Func::Softplus => pool.func(Func::Sigmoid, u),
        // sign' = 0 (where it exists)
        Func::Sign => pool.constant(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::eval::eval;

    const X: Var = Var::State { state: 0, elem: 0 };
    const Y: Var = Var::State { state: 0, elem: 1 };

    /// Central difference of `expr` in `var` at `at`, with `h = 1e-6·(1 + |x|)`.
    fn finite_difference(pool: &Pool, expr: ExprId, var: Var, at: &dyn Fn(Var) -> f64) -> f64 {
        let x = at(var);
        let h = 1e-6 * (1.0 + x.abs());
        let shifted = |delta: f64| {
            let value_of = |v: Var| if v == var { x + delta } else { at(v) };
            eval(pool, &[expr], &value_of)[0]
        };
        (shifted(h) - shifted(-h)) / (2.0 * h)
    }

    /// Asserts that `partial` agrees with a central difference. With h ≈ 1e-6 the truncation
    /// error is O(h²) ≈ 1e-12 and the rounding error O(ε/h) ≈ 1e-10 relative to the function's
    /// size, so 1e-7 relative (plus 1e-9 absolute for near-zero derivatives) has a wide margin.
    fn check(pool: &mut Pool, expr: ExprId, var: Var, at: &dyn Fn(Var) -> f64) {
        let d = partial(pool, expr, var);
        let exact = eval(pool, &[d], at)[0];
        let approx = finite_difference(pool, expr, var, at);
        assert!(
            (exact - approx).abs() <= 1e-7 * exact.abs().max(approx.abs()) + 1e-9,
            "{}: exact {exact}, finite difference {approx}",
            crate::ir::print::expr_to_string(pool, expr)
        );
    }

    fn point(v: Var) -> f64 {
        match v {
            X => 0.7,
            Y => 1.3,
            _ => 0.4,
        }
    }

    #[test]
    fn every_function_rule_matches_finite_differences() {
        for f in Func::ALL {
            if f == Func::Sign {
                continue; // piecewise constant; checked below
            }
            for at in [0.7, -0.45, 1.9] {
                if matches!(f, Func::Log | Func::Sqrt) && at < 0.0 {
                    continue;
                }
                let mut p = Pool::new();
                let x = p.var(X);
                let y = p.var(Y);
                // f(x·y + x): the chain rule through a sum and a product.
                let xy = p.mul(x, y);
                let u = p.add(xy, x);
                let e = p.func(f, u);
                let value_of = |v: Var| if v == X { at } else { point(v) };
                check(&mut p, e, X, &value_of);
                check(&mut p, e, Y, &value_of);
            }
        }
    }

    #[test]
    fn piecewise_constant_nodes_have_zero_derivative() {
        let mut p = Pool::new();
        let x = p.var(X);
        let y = p.var(Y);
        let sign = p.func(Func::Sign, x);
        let lt = p.cmp(CmpOp::Lt, x, y);
        let zero = p.constant(0.0);
        assert_eq!(partial(&mut p, sign, X), zero);
        assert_eq!(partial(&mut p, lt, X), zero);
    }

    #[test]
    fn arithmetic_rules_match_finite_differences() {
        let mut p = Pool::new();
        let x = p.var(X);
        let y = p.var(Y);
        let t = p.var(Var::Time);
        let three = p.constant(3.0);
        let half = p.constant(-0.5);
        let exprs = [
            p.div(x, y),
            p.div(three, x),
            p.pow(x, three),
            p.pow(x, half),
            p.pow(x, y),
            p.pow(three, y),
            p.min(x, y),
            p.max(x, y),
            p.product(&[x, y, t, x]),
            p.sub(x, y),
        ];
        for e in exprs {
            check(&mut p, e, X, &point);
            check(&mut p, e, Y, &point);
            check(&mut p, e, Var::Time, &point);
        }
    }

    #[test]
    fn relu_derivative_is_a_comparison_node() {
        let mut p = Pool::new();
        let x = p.var(X);
        let r = p.func(Func::Relu, x);
        let d = partial(&mut p, r, X);
        assert!(matches!(p.node(d), Node::Cmp(CmpOp::Gt, a, _) if *a == x));
    }

    #[test]
    fn tanh_derivative_reuses_the_tanh_node() {
        let mut p = Pool::new();
        let x = p.var(X);
        let two = p.constant(2.0);
        let u = p.mul(two, x);
        let s = p.func(Func::Tanh, u);
        let d = partial(&mut p, s, X);
        let tanh_nodes = p
            .nodes()
            .iter()
            .filter(|n| matches!(n, Node::Func(Func::Tanh, _)))
            .count();
        assert_eq!(tanh_nodes, 1);
        // 2·(1 − tanh²(2x)) = 2 − 2·tanh²(2x)
        let value = eval(&p, &[d], &point)[0];
        let t = (1.4f64).tanh();
        assert!((value - 2.0 * (1.0 - t * t)).abs() < 1e-15);
    }

    #[test]
    fn partials_are_memoized() {
        let mut p = Pool::new();
        let x = p.var(X);
        let s = p.func(Func::Sin, x);
        let e = p.mul(s, s);
        let d1 = partial(&mut p, e, X);
        let len = p.len();
        assert_eq!(partial(&mut p, e, X), d1);
        assert_eq!(p.len(), len);
    }

    /// `Phi = dot(a, softplus(W z + b))` with `z` two states, `W` 4×2: a small potential.
    fn potential(p: &mut Pool) -> (ExprId, Vec<Var>) {
        let width = 4;
        let z: Vec<Var> = (0..2).map(|elem| Var::State { state: 0, elem }).collect();
        let mut terms = Vec::new();
        for h in 0..width {
            let mut pre = vec![p.var(Var::Param { param: 1, elem: h })];
            for (j, &zj) in z.iter().enumerate() {
                let w = p.var(Var::Param {
                    param: 0,
                    elem: h * 2 + j as u32,
                });
                let zj = p.var(zj);
                pre.push(p.mul(w, zj));
            }
            let u = p.sum(&pre);
            let s = p.func(Func::Softplus, u);
            let a = p.var(Var::Param { param: 2, elem: h });
            terms.push(p.mul(a, s));
        }
        (p.sum(&terms), z)
    }

    fn potential_point(v: Var) -> f64 {
        match v {
            Var::State { elem, .. } => [0.3, -0.8][elem as usize],
            Var::Param { param, elem } => {
                let k = f64::from(param * 10 + elem);
                (k * 0.37).sin() * 1.2
            }
            _ => 0.0,
        }
    }

    #[test]
    fn laplacian_by_nested_partials_matches_finite_differences() {
        let mut p = Pool::new();
        let (phi, z) = potential(&mut p);
        let second: Vec<ExprId> = z
            .iter()
            .map(|&zi| {
                let g = partial(&mut p, phi, zi);
                partial(&mut p, g, zi)
            })
            .collect();
        let laplacian = p.sum(&second);
        let exact = eval(&p, &[laplacian], &potential_point)[0];
        // Second central differences: error O(h²) + O(ε/h²); h = 1e-4 balances them near 1e-8.
        let h = 1e-4;
        let mut approx = 0.0;
        for &zi in &z {
            let at = |delta: f64| {
                let value_of = |v: Var| potential_point(v) + if v == zi { delta } else { 0.0 };
                eval(&p, &[phi], &value_of)[0]
            };
            approx += (at(h) - 2.0 * at(0.0) + at(-h)) / (h * h);
        }
        assert!(
            (exact - approx).abs() < 1e-6 * exact.abs().max(1.0),
            "{exact} vs {approx}"
        );
        // Every softplus has one sigmoid (its derivative) shared by both second derivatives.
        let count = |f: Func| {
            p.nodes()
                .iter()
                .filter(|n| matches!(n, Node::Func(g, _) if *g == f))
                .count()
        };
        assert_eq!(count(Func::Softplus), 4);
        assert_eq!(count(Func::Sigmoid), 4);
    }

    #[test]
    fn time_partial_sees_only_explicit_time() {
        let mut p = Pool::new();
        let x = p.var(X);
        let t = p.var(Var::Time);
        let xt = p.mul(x, t);
        let e = p.func(Func::Sin, xt);
        check(&mut p, e, Var::Time, &point);
        let zero = p.constant(0.0);
        assert_eq!(partial(&mut p, x, Var::Time), zero);
    }

    /// `K2 tanh(K1 x + b)` with `x` of size `d`, hidden width `w`; params 0, 1, 2 are K1, b, K2.
    pub(crate) fn neural_field(p: &mut Pool, d: u32, w: u32) -> Vec<ExprId> {
        let hidden: Vec<ExprId> = (0..w)
            .map(|h| {
                let mut pre = vec![p.var(Var::Param { param: 1, elem: h })];
                for j in 0..d {
                    let k = p.var(Var::Param {
                        param: 0,
                        elem: h * d + j,
                    });
                    let x = p.var(Var::State { state: 0, elem: j });
                    pre.push(p.mul(k, x));
                }
                let u = p.sum(&pre);
                p.func(Func::Tanh, u)
            })
            .collect();
        (0..d)
            .map(|k| {
                let terms: Vec<ExprId> = (0..w)
                    .map(|h| {
                        let k2 = p.var(Var::Param {
                            param: 2,
                            elem: k * w + h,
                        });
                        p.mul(k2, hidden[h as usize])
                    })
                    .collect();
                p.sum(&terms)
            })
            .collect()
    }

    /// A deterministic pseudo-random value in (−1, 1) per variable.
    pub(crate) fn scrambled(v: Var) -> f64 {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&v, &mut h);
        let bits = std::hash::Hasher::finish(&h);
        (bits >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    #[test]
    fn jvp_equals_the_sum_of_partials_times_the_tangent() {
        let mut p = Pool::new();
        let f = neural_field(&mut p, 3, 5);
        let leaves: Vec<(Var, ExprId)> = (0..3)
            .map(|elem| {
                let v = Var::State { state: 0, elem };
                (v, p.var(Var::StateTangent { state: 0, elem }))
            })
            .collect();
        let j = jvp(&mut p, &f, &|v| {
            leaves.iter().find(|(w, _)| *w == v).map(|(_, id)| *id)
        });
        for (k, &fk) in f.iter().enumerate() {
            let terms: Vec<ExprId> = leaves
                .iter()
                .map(|&(v, t)| {
                    let d = partial(&mut p, fk, v);
                    p.mul(d, t)
                })
                .collect();
            let by_partials = p.sum(&terms);
            let values = eval(&p, &[j[k], by_partials], &scrambled);
            // Same terms in another association order: rounding only.
            assert!((values[0] - values[1]).abs() <= 1e-13 * values[0].abs().max(1.0));
        }
    }

    #[test]
    fn partials_of_a_neural_field_share_its_tanh_nodes() {
        let mut p = Pool::new();
        let f = neural_field(&mut p, 3, 5);
        let before = p.len();
        for &fk in &f {
            for elem in 0..3 {
                partial(&mut p, fk, Var::State { state: 0, elem });
            }
        }
        let tanh = p
            .nodes()
            .iter()
            .filter(|n| matches!(n, Node::Func(Func::Tanh, _)))
            .count();
        assert_eq!(tanh, 5);
        // Per hidden unit one tanh² and one 1 − tanh², then per (k, j) a short sum: the full
        // 3×3 Jacobian stays well under a naive re-expansion of the field for each entry.
        assert!(
            p.len() - before < 9 * 5 * 4,
            "{} new nodes",
            p.len() - before
        );
    }

    fn dot_product_test(state_direction: bool) {
        let mut p = Pool::new();
        let f = neural_field(&mut p, 3, 5);
        let wrt: Vec<Var> = if state_direction {
            (0..3).map(|elem| Var::State { state: 0, elem }).collect()
        } else {
            let mut v: Vec<Var> = (0..15).map(|elem| Var::Param { param: 0, elem }).collect();
            v.extend((0..5).map(|elem| Var::Param { param: 1, elem }));
            v.extend((0..15).map(|elem| Var::Param { param: 2, elem }));
            v
        };
        let direction = |v: Var| match v {
            Var::State { state, elem } => Var::StateTangent { state, elem },
            Var::Param { param, elem } => Var::ParamTangent { param, elem },
            other => other,
        };
        let leaves: Vec<(Var, ExprId)> = wrt.iter().map(|&v| (v, p.var(direction(v)))).collect();
        let jv = jvp(&mut p, &f, &|v| {
            leaves.iter().find(|(w, _)| *w == v).map(|(_, id)| *id)
        });
        let w: Vec<ExprId> = (0..3)
            .map(|elem| p.var(Var::Cotangent { state: 0, elem }))
            .collect();
        let jtw = vjp(&mut p, &f, &w, &wrt);
        let wv = eval(&p, &w, &scrambled);
        let jv_values = eval(&p, &jv, &scrambled);
        let v_values = eval(
            &p,
            &leaves.iter().map(|l| l.1).collect::<Vec<_>>(),
            &scrambled,
        );
        let jtw_values = eval(&p, &jtw, &scrambled);
        let lhs: f64 = wv.iter().zip(&jv_values).map(|(a, b)| a * b).sum();
        let rhs: f64 = jtw_values.iter().zip(&v_values).map(|(a, b)| a * b).sum();
        // Both sides are the same bilinear form summed in different orders: only rounding
        // differs, so 1e-12 relative is generous for a few dozen terms of size O(1).
        assert!(
            (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(rhs.abs()),
            "{lhs} vs {rhs}"
        );
        assert!(lhs.abs() > 1e-3, "a degenerate test point");
    }

    #[test]
    fn dot_product_test_in_state_directions() {
        dot_product_test(true);
    }

    #[test]
    fn dot_product_test_in_param_directions() {
        dot_product_test(false);
    }

    #[test]
    fn vjp_of_independent_outputs_is_zero() {
        let mut p = Pool::new();
        let x = p.var(X);
        let s = p.func(Func::Sin, x);
        let one = p.constant(1.0);
        let zero = p.constant(0.0);
        assert_eq!(vjp(&mut p, &[s], &[one], &[Y]), vec![zero]);
        let cos = p.func(Func::Cos, x);
        assert_eq!(vjp(&mut p, &[s], &[one], &[X]), vec![cos]);
    }
}
