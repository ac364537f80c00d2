//! `prepare`: turns the IR that `sema` built into what `compile` consumes.
//!
//! [`prepare`] builds the tensor derivative IR ([`super::tensor::derive`]), expands the tensor
//! roots into the scalar IR ([`super::expand_scalar`]), simplifies the model's expressions,
//! builds the scalar derivative IR ([`super::Derivatives`]: Jacobian-vector and
//! vector-Jacobian products of the state equations, the time derivative, the initial state's
//! sensitivities and the cost gradients), simplifies again, and finally compacts the pool to
//! the nodes the roots reach, renumbered in order. [`prepare_tensor_only`] and
//! [`prepare_scalar`] are its two halves, for a caller that needs no scalar IR.
//! The JVP and VJP are symbolic IR rather than a reverse sweep over a compiled tape, so that
//! `compile` treats them like any other expression and they share nodes with the primal.

use std::collections::HashMap;

use super::diff::{jvp, partial, reachable, vjp};
use super::simplify::simplify_model;
use super::{CostGradient, CostKind, Derivatives, ExprId, Model, Node, Optimizer, Pool, Var};

/// Adds the tensor derivative IR, expands the scalar IR, simplifies it, adds its derivative IR
/// and compacts its pool: [`prepare_tensor_only`] then [`prepare_scalar`]. Never fails.
///
/// Afterwards every node is reachable from a root of [`Model::roots`] and children precede
/// parents. `nodec ir --stats` derives its before/after counts from the DAG itself.
pub fn prepare(model: &mut Model) {
    prepare_tensor_only(model);
    prepare_scalar(model);
}

/// The estimated size of the scalar IR (nodes of the primal roots' expansion) above which a
/// model runs on tensor kernels (`compile::tensor`) instead of the scalar tape; see
/// ARCHITECTURE.md, Decisions, for the measurements behind it.
pub const SCALAR_IR_LIMIT: usize = 20_000;

/// The estimated number of scalar nodes of the primal roots (see
/// [`super::tensor::expand::ExpansionSize`]).
pub fn scalar_ir_estimate(model: &Model) -> usize {
    let mut size = super::tensor::expand::ExpansionSize::new();
    let mut total = 0;
    for root in model.tensor_roots.primal() {
        total = size.add(&model.tensors, root);
    }
    total
}

/// Whether the scalar tape pays for `model`: a small model's scalar IR is cheap to build and
/// its kernels are fused per element (and compiled to native code); a wide model's would take
/// seconds and hundreds of megabytes to build.
///
/// Nor does it pay where every matrix product is a parameter matrix at least
/// [`GEMM_SIDE`] wide each way ([`products_are_gemms`]): the time is then in the GEMMs, which
/// both kinds of kernels run alike, and the tensor kernels' fused elementwise passes and
/// direct GEMM accumulation of the weight gradients beat the tape's one row per instruction
/// (P4's training step at widths 8, 16 and 32: 11–15 % faster; see ARCHITECTURE.md,
/// Decisions).
pub fn scalar_ir_pays(model: &Model) -> bool {
    scalar_ir_estimate(model) <= SCALAR_IR_LIMIT && !products_are_gemms(model)
}

/// The smallest side of a parameter matrix for [`products_are_gemms`]: the side below which
/// the tensor kernels multiply by lane loops (`compile::tensor`'s `MIN_SIDE`).
pub const GEMM_SIDE: usize = 8;

/// Whether the primal roots have matrix products, and every one of them multiplies a
/// parameter matrix (or its transpose) with both sides at least [`GEMM_SIDE`].
pub fn products_are_gemms(model: &Model) -> bool {
    use super::tensor::{grid, Leaf, TNode};
    let t = &model.tensors;
    let mut seen = vec![false; t.len()];
    let mut stack = model.tensor_roots.primal();
    let mut products = 0;
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut seen[id.index()], true) {
            continue;
        }
        let node = t.node(id);
        if let TNode::MatMul(a, _) = node {
            let matrix = match t.node(*a) {
                TNode::Transpose(m) => *m,
                _ => *a,
            };
            let (m, k) = grid(t.shape(*a));
            if !matches!(t.node(matrix), TNode::Leaf(Leaf::Param(_))) || m.min(k) < GEMM_SIDE {
                return false;
            }
            products += 1;
        }
        node.for_each_operand(|c| stack.push(c));
    }
    products > 0
}

/// What running a model needs: the tensor derivative IR, and the scalar IR where it pays
/// ([`scalar_ir_pays`]); `compile::Program::compile` follows what it finds.
pub fn prepare_to_run(model: &mut Model) {
    prepare_tensor_only(model);
    if scalar_ir_pays(model) {
        prepare_scalar(model);
    }
}

/// The tensor half of [`prepare`]: the derivative IR at tensor level
/// ([`super::tensor::TensorRoots::derivatives`]), without expanding anything into the scalar
/// IR, which stays as `sema` left it ([`Model::has_scalar_ir`] is false for a checked model).
pub fn prepare_tensor_only(model: &mut Model) {
    super::tensor::derive(model);
}

/// The scalar half of [`prepare`]: expands the scalar IR if it is not there yet
/// ([`super::expand_scalar`]), simplifies it, adds [`Model::derivatives`] and compacts the
/// pool. After [`prepare_tensor_only`] it gives the model [`prepare`] gives.
pub fn prepare_scalar(model: &mut Model) {
    super::expand_scalar(model);
    simplify_model(model);
    model.derivatives = derivatives(model);
    simplify_model(model);
    compact(model);
}

/// Builds the derivative IR of `model` in its pool (see [`Derivatives`] for the definitions).
pub fn derivatives(model: &mut Model) -> Derivatives {
    let f = model.rhs();
    let init: Vec<ExprId> = model
        .states
        .iter()
        .flat_map(|s| s.init.iter().copied())
        .collect();
    let xs = model.state_vars();
    let thetas = model.param_vars();
    let mut both = xs.clone();
    both.extend_from_slice(&thetas);
    let lm_k = model.schedule.as_ref().and_then(|s| s.lm_k);
    let event_rows: Vec<ExprId> = model
        .events
        .iter()
        .map(|e| e.cond)
        .chain(model.events.iter().flat_map(|e| e.jumps.iter().copied()))
        .collect();
    let param_copies = model.param_copies();
    let msa = model
        .train
        .as_ref()
        .is_some_and(|t| t.optimizer == Optimizer::Msa);
    let mut cost_values: Vec<(CostKind, Vec<ExprId>)> = Vec::new();
    for kind in [
        CostKind::Terminal,
        CostKind::Running,
        CostKind::Penalty,
        CostKind::Observed,
    ] {
        let values: Vec<ExprId> = model
            .costs
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.value)
            .collect();
        if !values.is_empty() {
            cost_values.push((kind, values));
        }
    }

    let pool = &mut model.pool;
    let state_tangent: HashMap<Var, ExprId> =
        xs.iter().map(|&v| (v, pool.var(direction(v)))).collect();
    let param_tangent: HashMap<Var, ExprId> = thetas
        .iter()
        .map(|&v| (v, pool.var(direction(v))))
        .collect();
    // Cotangents are indexed like `f`, i.e. like the state elements.
    let w: Vec<ExprId> = xs
        .iter()
        .map(|&v| match v {
            Var::State { state, elem } => pool.var(Var::Cotangent { state, elem }),
            _ => unreachable!("state_vars gives states"),
        })
        .collect();
    let one = pool.constant(1.0);

    let mut d = Derivatives {
        jvp_state: jvp(pool, &f, &|v| state_tangent.get(&v).copied()),
        jvp_param: jvp(pool, &f, &|v| param_tangent.get(&v).copied()),
        ..Derivatives::default()
    };
    let mut pulled = vjp(pool, &f, &w, &both);
    d.vjp_param = pulled.split_off(xs.len());
    d.vjp_state = pulled;
    d.rhs_time = f.iter().map(|&fk| partial(pool, fk, Var::Time)).collect();
    d.init_jvp_param = jvp(pool, &init, &|v| param_tangent.get(&v).copied());
    d.init_vjp_param = vjp(pool, &init, &w, &thetas);
    if let Some(k) = lm_k {
        d.lm_k_param = vjp(pool, &[k], &[one], &thetas);
    }
    // Only `msa` needs this second derivative, and only `msa` models pay for it: other
    // models' kernels, compile time and `nodec ir` output stay as they were.
    if msa {
        d.msa_mixed_param = mixed_param(pool, &w, &d.jvp_state, &thetas);
    }
    if !event_rows.is_empty() {
        d.event_jvp = jvp(pool, &event_rows, &|v| {
            state_tangent
                .get(&v)
                .or_else(|| param_tangent.get(&v))
                .copied()
        });
        for &row in &event_rows {
            let dt = partial(pool, row, Var::Time);
            d.event_jvp.push(dt);
        }
    }
    for (kind, values) in cost_values {
        let value = pool.sum(&values);
        let groups = if kind == CostKind::Penalty {
            penalty_groups(pool, value, &param_copies)
        } else {
            vec![(1, value)]
        };
        for (copies, value) in groups {
            let mut grad = vjp(pool, &[value], &[one], &both);
            let param = grad.split_off(xs.len());
            d.costs.push(CostGradient {
                kind,
                value,
                state: grad,
                param,
                copies,
            });
        }
    }
    if let Some(running) = d.cost(CostKind::Running).map(|c| c.value) {
        let mut outputs = f.clone();
        outputs.push(running);
        let mut cotangents = w.clone();
        cotangents.push(pool.var(Var::RunningCotangent));
        let mut pulled = vjp(pool, &outputs, &cotangents, &both);
        d.quad_vjp_param = pulled.split_off(xs.len());
        d.quad_vjp_state = pulled;
    }
    d
}

/// Splits a penalty into groups by how many copies of time-varying parameters its additive
/// terms read, in increasing order: `(1, terms reading constant params only)`, then e.g.
/// `(layers, terms reading per-layer params)`. Constant factors are distributed over sums
/// first, so `1e-4 * (sumsq(K) + sumsq(head))` charges `K` once per layer and `head` once.
/// A term reading time-varying params with different numbers of copies is evaluated for
/// the largest number, the others holding their last copy.
fn penalty_groups(pool: &mut Pool, value: ExprId, param_copies: &[usize]) -> Vec<(usize, ExprId)> {
    let mut terms = Vec::new();
    additive_terms(pool, value, 1.0, &mut terms);
    let mut groups: std::collections::BTreeMap<usize, Vec<ExprId>> = Default::default();
    for (coefficient, term) in terms {
        let copies = reachable(pool, &[term])
            .into_iter()
            .filter_map(|id| match pool.node(id) {
                Node::Var(Var::Param { param, .. }) => Some(param_copies[*param as usize]),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        let c = pool.constant(coefficient);
        let scaled = pool.mul(c, term);
        groups.entry(copies).or_default().push(scaled);
    }
    groups
        .into_iter()
        .map(|(copies, terms)| (copies, pool.sum(&terms)))
        .collect()
}

/// `value = Σ coefficient · term`, descending through sums and constant multiples.
fn additive_terms(pool: &Pool, value: ExprId, scale: f64, out: &mut Vec<(f64, ExprId)>) {
    match pool.node(value) {
        Node::Add(children) => {
            for &child in children.iter() {
                additive_terms(pool, child, scale, out);
            }
        }
        Node::Mul(children) if children.len() == 2 => match pool.const_value(children[0]) {
            Some(c) => additive_terms(pool, children[1], scale * c, out),
            None => out.push((scale, value)),
        },
        _ => out.push((scale, value)),
    }
}

/// `∂/∂θ (wᵀ J v)` with `J v` the symbolic state JVP (`jvp_state`, which reads the tangent
/// leaves `v`): the cotangent leaves `w` contract it to a scalar, which reverse mode then
/// differentiates with respect to the parameters, `v` and `w` held fixed. Exact, and it shares
/// the activations and their derivatives with the first-order kernels by hash-consing.
fn mixed_param(pool: &mut Pool, w: &[ExprId], jvp_state: &[ExprId], thetas: &[Var]) -> Vec<ExprId> {
    let terms: Vec<ExprId> = w
        .iter()
        .zip(jvp_state)
        .map(|(&wk, &jk)| pool.mul(wk, jk))
        .collect();
    let contracted = pool.sum(&terms);
    let one = pool.constant(1.0);
    vjp(pool, &[contracted], &[one], thetas)
}

/// The direction leaf matching a state or parameter element.
fn direction(v: Var) -> Var {
    match v {
        Var::State { state, elem } => Var::StateTangent { state, elem },
        Var::Param { param, elem } => Var::ParamTangent { param, elem },
        other => other,
    }
}

/// Keeps only the nodes reachable from the model's roots, renumbered in order, and remaps the
/// roots.
fn compact(model: &mut Model) {
    let mut keep = vec![false; model.pool.len()];
    for id in reachable(&model.pool, &model.roots()) {
        keep[id.index()] = true;
    }
    let map = model.pool.compact(&keep);
    model.map_roots(|r| map[r.index()].expect("roots are reachable from themselves"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Span;
    use crate::ir::{
        verify, CmpOp, Cost, Func, Input, Label, Node, Output, Param, ParamInit, ParamTime, Point,
        Pool, Shape, State,
    };

    const D: usize = 3;
    const W: usize = 5;

    fn param(name: &str, shape: Shape) -> Param {
        Param {
            name: name.to_string(),
            shape,
            time: ParamTime::Constant,
            init: ParamInit::Normal {
                mean: 0.0,
                std: 0.5,
            },
            span: Span::default(),
        }
    }

    fn sumsq(p: &mut Pool, xs: &[ExprId]) -> ExprId {
        let squares: Vec<ExprId> = xs.iter().map(|&x| p.mul(x, x)).collect();
        p.sum(&squares)
    }

    /// An augmented-neural-ODE classifier, written as `sema` would lower it:
    ///
    /// ```text
    /// param K1[5, 3], b[5], K2[3, 5], head[3], bias;  input u[3];  label y
    /// state x[3] = u;            dx/dt = K2 tanh(K1 x + b)
    /// state e = head[0] * bias;  de/dt = t * 0.5 * sumsq(dx/dt)
    /// let p = sigmoid(dot(head, x) + bias)
    /// cost terminal = bce(p, y);  cost running = 0.005 * sumsq(dx/dt)
    /// cost penalty = 1e-4 * sumsq(K1);  metric accuracy = (p > 0.5) == y;  output e = e
    /// ```
    pub(crate) fn classifier() -> Model {
        let mut m = Model {
            name: "classifier".to_string(),
            ..Model::default()
        };
        m.params = vec![
            param("K1", Shape::Matrix(W, D)),
            param("b", Shape::Vector(W)),
            param("K2", Shape::Matrix(D, W)),
            param("head", Shape::Vector(D)),
            param("bias", Shape::Scalar),
        ];
        m.inputs.push(Input {
            name: "u".to_string(),
            shape: Shape::Vector(D),
            span: Span::default(),
        });
        m.labels.push(Label {
            name: "y".to_string(),
            span: Span::default(),
            classes: None,
        });
        let p = &mut m.pool;
        let pv = |p: &mut Pool, param: u32, elem: usize| {
            p.var(Var::Param {
                param,
                elem: elem as u32,
            })
        };
        let x: Vec<ExprId> = (0..D)
            .map(|e| {
                p.var(Var::State {
                    state: 0,
                    elem: e as u32,
                })
            })
            .collect();
        let hidden: Vec<ExprId> = (0..W)
            .map(|h| {
                let mut pre = vec![pv(p, 1, h)];
                for (j, &xj) in x.iter().enumerate() {
                    let k = pv(p, 0, h * D + j);
                    pre.push(p.mul(k, xj));
                }
                let u = p.sum(&pre);
                p.func(Func::Tanh, u)
            })
            .collect();
        let f: Vec<ExprId> = (0..D)
            .map(|k| {
                let terms: Vec<ExprId> = (0..W)
                    .map(|h| {
                        let k2 = pv(p, 2, k * W + h);
                        p.mul(k2, hidden[h])
                    })
                    .collect();
                p.sum(&terms)
            })
            .collect();
        let init: Vec<ExprId> = (0..D)
            .map(|e| {
                p.var(Var::Input {
                    input: 0,
                    elem: e as u32,
                })
            })
            .collect();
        let half = p.constant(0.5);
        let t = p.var(Var::Time);
        let kinetic = sumsq(p, &f);
        let de = p.product(&[t, half, kinetic]);
        let head0 = pv(p, 3, 0);
        let bias = pv(p, 4, 0);
        let e0 = p.mul(head0, bias);
        let e = p.var(Var::State { state: 1, elem: 0 });
        // p = sigmoid(dot(head, x) + bias)
        let mut logit = vec![bias];
        for (j, &xj) in x.iter().enumerate() {
            let hj = pv(p, 3, j);
            logit.push(p.mul(hj, xj));
        }
        let z = p.sum(&logit);
        let prob = p.func(Func::Sigmoid, z);
        // bce(p, y) = −(y log p + (1 − y) log(1 − p)), as sema lowers it
        let y = p.var(Var::Label { label: 0 });
        let one = p.constant(1.0);
        let log_p = p.func(Func::Log, prob);
        let one_minus_p = p.sub(one, prob);
        let log_q = p.func(Func::Log, one_minus_p);
        let one_minus_y = p.sub(one, y);
        let a = p.mul(y, log_p);
        let b = p.mul(one_minus_y, log_q);
        let s = p.add(a, b);
        let bce = p.neg(s);
        let c_run = p.constant(0.005);
        let running = p.mul(c_run, kinetic);
        let k1: Vec<ExprId> = (0..W * D).map(|i| pv(p, 0, i)).collect();
        let k1sq = sumsq(p, &k1);
        let c_pen = p.constant(1e-4);
        let penalty = p.mul(c_pen, k1sq);
        let gt = p.cmp(CmpOp::Gt, prob, half);
        let accuracy = p.cmp(CmpOp::Eq, gt, y);
        m.states = vec![
            State {
                name: "x".to_string(),
                shape: Shape::Vector(D),
                init,
                rhs: f,
                span: Span::default(),
                equation_span: Span::default(),
            },
            State {
                name: "e".to_string(),
                shape: Shape::Scalar,
                init: vec![e0],
                rhs: vec![de],
                span: Span::default(),
                equation_span: Span::default(),
            },
        ];
        for (kind, value) in [
            (CostKind::Terminal, bce),
            (CostKind::Running, running),
            (CostKind::Penalty, penalty),
        ] {
            m.costs.push(Cost {
                kind,
                value,
                span: Span::default(),
            });
        }
        m.metrics.push(Output {
            name: "accuracy".to_string(),
            shape: Shape::Scalar,
            value: vec![accuracy],
            span: Span::default(),
        });
        m.outputs.push(Output {
            name: "e".to_string(),
            shape: Shape::Scalar,
            value: vec![e],
            span: Span::default(),
        });
        m
    }

    /// A deterministic pseudo-random number in (−1, 1).
    fn noise(seed: u64) -> f64 {
        // SplitMix64
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    /// Values for every declared variable and direction of `m`, drawn from `seed`.
    fn random_point(m: &Model, seed: u64) -> Point {
        let mut k = seed * 1000;
        let mut draw = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    k += 1;
                    noise(k)
                })
                .collect()
        };
        let states: Vec<Vec<f64>> = m.states.iter().map(|s| draw(s.shape.len())).collect();
        let params: Vec<Vec<f64>> = m.params.iter().map(|p| draw(p.shape.len())).collect();
        Point {
            t: 0.3,
            inputs: m.inputs.iter().map(|i| draw(i.shape.len())).collect(),
            labels: vec![1.0; m.labels.len()],
            state_tangents: m.states.iter().map(|s| draw(s.shape.len())).collect(),
            param_tangents: m.params.iter().map(|p| draw(p.shape.len())).collect(),
            cotangents: m.states.iter().map(|s| draw(s.shape.len())).collect(),
            states,
            params,
            ..Point::default()
        }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-300
    }

    #[test]
    fn prepare_keeps_values_verifies_and_compacts() {
        let raw = classifier();
        let mut m = raw.clone();
        prepare(&mut m);
        assert_eq!(verify(&m), Ok(()));
        let at = random_point(&raw, 1);
        let before = at.eval(&raw.pool, &raw.primal_roots());
        let after = at.eval(&m.pool, &m.primal_roots());
        for (a, b) in before.iter().zip(&after) {
            assert!(close(*a, *b, 1e-12), "{a} vs {b}");
        }
        // Compaction: every node is reachable from a root.
        assert_eq!(reachable(&m.pool, &m.roots()).len(), m.pool.len());
        // The binary cross-entropy of a sigmoid lost its logarithms to softplus.
        assert!(!m
            .pool
            .nodes()
            .iter()
            .any(|n| matches!(n, Node::Func(Func::Log, _))));
        // Preparing twice changes nothing.
        let mut again = m.clone();
        prepare(&mut again);
        assert_eq!(print_all(&again), print_all(&m));
    }

    fn print_all(m: &Model) -> String {
        crate::ir::print(m, true)
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn jacobian_products_pass_the_dot_product_test() {
        let mut m = classifier();
        prepare(&mut m);
        for seed in 0..5 {
            let at = random_point(&m, seed);
            let flat = |v: &Vec<Vec<f64>>| v.concat();
            let d = &m.derivatives;
            let jv = at.eval(&m.pool, &d.jvp_state);
            let ju = at.eval(&m.pool, &d.jvp_param);
            let jtw_x = at.eval(&m.pool, &d.vjp_state);
            let jtw_p = at.eval(&m.pool, &d.vjp_param);
            let w = flat(&at.cotangents);
            // ⟨w, J v⟩ = ⟨Jᵀ w, v⟩: the same bilinear form summed in two orders, so they agree to
            // rounding; 1e-12 relative leaves room for a few hundred O(1) terms.
            let (l, r) = (dot(&w, &jv), dot(&jtw_x, &flat(&at.state_tangents)));
            assert!(close(l, r, 1e-12), "state: {l} vs {r}");
            let (l, r) = (dot(&w, &ju), dot(&jtw_p, &flat(&at.param_tangents)));
            assert!(close(l, r, 1e-12), "param: {l} vs {r}");
            let ix = at.eval(&m.pool, &d.init_jvp_param);
            let ixt = at.eval(&m.pool, &d.init_vjp_param);
            let (l, r) = (dot(&w, &ix), dot(&ixt, &flat(&at.param_tangents)));
            assert!(close(l, r, 1e-12), "init: {l} vs {r}");
        }
    }

    /// Central difference of root `root` in the direction that `nudge` applies to a point.
    fn directional_fd(
        m: &Model,
        root: ExprId,
        at: &Point,
        h: f64,
        nudge: &dyn Fn(&mut Point, f64),
    ) -> f64 {
        let mut plus = at.clone();
        nudge(&mut plus, h);
        let mut minus = at.clone();
        nudge(&mut minus, -h);
        (plus.eval(&m.pool, &[root])[0] - minus.eval(&m.pool, &[root])[0]) / (2.0 * h)
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let mut m = classifier();
        prepare(&mut m);
        let at = random_point(&m, 7);
        let f = m.rhs();
        let d = m.derivatives.clone();
        // h = 1e-6 for O(1) values: truncation O(h²) and rounding O(ε/h) both far below 1e-7.
        let h = 1e-6;
        let jv = at.eval(&m.pool, &d.jvp_state);
        let ju = at.eval(&m.pool, &d.jvp_param);
        let ft = at.eval(&m.pool, &d.rhs_time);
        for k in 0..f.len() {
            let along_v = directional_fd(&m, f[k], &at, h, &|p, s| {
                for (x, v) in p.states.iter_mut().zip(&at.state_tangents) {
                    x.iter_mut().zip(v).for_each(|(x, v)| *x += s * v);
                }
            });
            assert!(
                close(jv[k], along_v, 1e-7),
                "jvp_state[{k}]: {} vs {along_v}",
                jv[k]
            );
            let along_u = directional_fd(&m, f[k], &at, h, &|p, s| {
                for (x, u) in p.params.iter_mut().zip(&at.param_tangents) {
                    x.iter_mut().zip(u).for_each(|(x, u)| *x += s * u);
                }
            });
            assert!(
                close(ju[k], along_u, 1e-7),
                "jvp_param[{k}]: {} vs {along_u}",
                ju[k]
            );
            let in_t = directional_fd(&m, f[k], &at, h, &|p, s| p.t += s);
            assert!(close(ft[k], in_t, 1e-7) || (ft[k] == 0.0 && in_t == 0.0));
        }
        for c in &d.costs {
            let grad_x = at.eval(&m.pool, &c.state);
            let grad_p = at.eval(&m.pool, &c.param);
            let mut j = 0;
            for (s, state) in m.states.iter().enumerate() {
                for e in 0..state.shape.len() {
                    let fd = directional_fd(&m, c.value, &at, h, &|p, d| p.states[s][e] += d);
                    assert!(close(grad_x[j], fd, 1e-7) || (grad_x[j] - fd).abs() < 1e-9);
                    j += 1;
                }
            }
            let mut j = 0;
            for (q, param) in m.params.iter().enumerate() {
                for e in 0..param.shape.len() {
                    let fd = directional_fd(&m, c.value, &at, h, &|p, d| p.params[q][e] += d);
                    assert!(
                        close(grad_p[j], fd, 1e-7) || (grad_p[j] - fd).abs() < 1e-9,
                        "{:?} d/d{}[{e}]: {} vs {fd}",
                        c.kind,
                        param.name,
                        grad_p[j]
                    );
                    j += 1;
                }
            }
        }
    }

    #[test]
    fn print_lists_derivative_roots_by_element() {
        let mut m = classifier();
        prepare(&mut m);
        let text = crate::ir::print(&m, true);
        for line in [
            "dx/dt[2] = %",
            "de/dt = %",
            "state e init = %",
            "metric accuracy = %",
            "vjp_param K1[4, 2] = %",
            "jvp_state e = %",
            "cost_grad penalty K1[0, 0] = %",
            "cost_sum terminal = %",
        ] {
            assert!(text.contains(line), "missing {line:?}");
        }
        let short = crate::ir::print(&m, false);
        assert!(!short.contains("vjp_state"));
        assert!(short.lines().count() < text.lines().count());
    }
}
#[cfg(test)]
mod properties {
    //! Random expression DAGs through `prepare`: values are preserved and the derivative IR
    //! passes the dot-product test.

    use proptest::prelude::*;

    use super::*;
    use crate::diag::Span;
    use crate::ir::eval::eval_node;
    use crate::ir::{
        verify, CmpOp, Func, Node, Output, Param, ParamInit, ParamTime, Point, Pool, Shape, State,
    };

    /// One random operation: an operator number and three operand choices (taken modulo the
    /// number of nodes built so far, so every DAG is well formed).
    type Step = (u8, u16, u16, u16);

    const EXPONENTS: [f64; 6] = [2.0, 3.0, -1.0, 0.5, -2.0, 1.5];
    const CONSTANTS: [f64; 5] = [0.5, 2.0, -1.0, 3.0, 0.0];

    fn build(p: &mut Pool, steps: &[Step]) -> Vec<ExprId> {
        let mut nodes: Vec<ExprId> = (0..3)
            .map(|elem| p.var(Var::State { state: 0, elem }))
            .collect();
        nodes.push(p.var(Var::Time));
        nodes.push(p.var(Var::Param { param: 0, elem: 0 }));
        nodes.push(p.constant(0.5));
        for &(op, a, b, c) in steps {
            let pick = |i: u16| nodes[i as usize % nodes.len()];
            let (a, b, c) = (pick(a), pick(b), pick(c));
            let e = match op % 34 {
                0 => p.add(a, b),
                1 => p.sub(a, b),
                2 => p.mul(a, b),
                3 => p.div(a, b),
                4 => p.neg(a),
                5 => {
                    let n = p.constant(EXPONENTS[b.index() % EXPONENTS.len()]);
                    p.pow(a, n)
                }
                6 => p.pow(a, b),
                7 => p.min(a, b),
                8 => p.max(a, b),
                9 => p.cmp(CmpOp::Lt, a, b),
                10 => p.sum(&[a, b, c]),
                11 => p.product(&[a, b, c]),
                12 => {
                    let k = p.constant(CONSTANTS[b.index() % CONSTANTS.len()]);
                    p.mul(k, a)
                }
                13 => {
                    let k = p.constant(CONSTANTS[b.index() % CONSTANTS.len()]);
                    p.add(k, a)
                }
                14 => {
                    // log(1 − σ(a)), the binary cross-entropy pattern
                    let one = p.constant(1.0);
                    let s = p.func(Func::Sigmoid, a);
                    let q = p.sub(one, s);
                    p.func(Func::Log, q)
                }
                15 => {
                    let one = p.constant(1.0);
                    let r = p.div(one, b);
                    p.mul(a, r)
                }
                16 => {
                    let s = p.func(Func::Sqrt, a);
                    p.mul(s, s)
                }
                // Patterns of the rule table, so that every rule fires often.
                17 => {
                    let sq = p.mul(a, a);
                    p.func(Func::Sqrt, sq)
                }
                18 => {
                    let s = p.func(Func::Sigmoid, a);
                    p.func(Func::Log, s)
                }
                19 => {
                    let minus_a = p.neg(a);
                    p.func(Func::ALL[b.index() % Func::ALL.len()], minus_a)
                }
                20 => {
                    let n = p.constant(EXPONENTS[b.index() % EXPONENTS.len()]);
                    let m = p.constant(EXPONENTS[c.index() % EXPONENTS.len()]);
                    let inner = p.pow(a, n);
                    p.pow(inner, m)
                }
                21 => {
                    let n = p.constant(EXPONENTS[c.index() % EXPONENTS.len()]);
                    let an = p.pow(a, n);
                    p.div(an, a)
                }
                f => p.func(Func::ALL[(f - 22) as usize % Func::ALL.len()], a),
            };
            nodes.push(e);
        }
        nodes
    }

    /// A model whose state `s[3]` has the last three nodes as its equations, the first state
    /// element's equation reading the others, and every node as an output.
    fn model(steps: &[Step]) -> Model {
        let mut m = Model::default();
        m.params.push(Param {
            name: "k".to_string(),
            shape: Shape::Scalar,
            time: ParamTime::Constant,
            init: ParamInit::Values(vec![0.0]),
            span: Span::default(),
        });
        let nodes = build(&mut m.pool, steps);
        let n = nodes.len();
        let one = m.pool.constant(1.0);
        m.states.push(State {
            name: "s".to_string(),
            shape: Shape::Vector(3),
            init: vec![one; 3],
            rhs: nodes[n - 3..].to_vec(),
            span: Span::default(),
            equation_span: Span::default(),
        });
        m.outputs.push(Output {
            name: "o".to_string(),
            shape: Shape::Vector(n),
            value: nodes,
            span: Span::default(),
        });
        m
    }

    fn point(values: (f64, f64, f64, f64, f64), directions: [f64; 7]) -> Point {
        let (x, y, z, t, k) = values;
        Point {
            t,
            states: vec![vec![x, y, z]],
            params: vec![vec![k]],
            state_tangents: vec![directions[..3].to_vec()],
            param_tangents: vec![vec![directions[3]]],
            cotangents: vec![directions[4..].to_vec()],
            ..Point::default()
        }
    }

    /// Every node's value, and whether the node is fit for comparing the original with its
    /// simplified form. Simplification changes rounding only, so a node is testable when it
    /// is defined and does not amplify rounding:
    ///
    /// - every value it is computed from is finite (relu, max and comparisons can turn an
    ///   undefined NaN into a number, and a rule such as relu(√y) → √y need not keep that);
    /// - perturbing every computed result (constants are data) by a relative ±1e-12, in
    ///   eight random sign patterns,
    ///   moves it by at most 1e-10 relative: a condition number of at most 100, which rules
    ///   out cancellations (log(1 − σ(40)) is all rounding, and the rewrite gets it right);
    /// - a comparison's operands differ by more than 1e-9 relative, so that no rounding
    ///   difference flips it.
    fn well_conditioned(pool: &Pool, at: &Point) -> (Vec<f64>, Vec<bool>) {
        let value_of = |v: Var| at.value(v);
        let n = pool.len();
        let mut values = vec![0.0; n];
        let mut ok = vec![false; n];
        for (i, node) in pool.nodes().iter().enumerate() {
            values[i] = eval_node(node, &values, &value_of);
            let mut fine = values[i].is_finite();
            node.for_each_operand(|c| fine &= ok[c.index()]);
            if let Node::Cmp(_, a, b) = node {
                let (a, b) = (values[a.index()], values[b.index()]);
                fine &= (a - b).abs() > 1e-9 * a.abs().max(b.abs());
            }
            ok[i] = fine;
        }
        for run in 0..8u64 {
            let mut perturbed = vec![0.0; n];
            for (i, node) in pool.nodes().iter().enumerate() {
                // A SplitMix64 hash of (run, node) picks the sign independently per node.
                let mut z = (run << 32 | i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                let sign = if (z ^ (z >> 31)) & 1 == 0 { 1.0 } else { -1.0 };
                let exact = eval_node(node, &perturbed, &value_of);
                // Constants are data, not results: an exponent 2 must stay an integer.
                let v = match node {
                    Node::Const(_) => exact,
                    _ => exact * (1.0 + sign * 1e-12),
                };
                perturbed[i] = v;
                ok[i] &= (v - values[i]).abs() <= 1e-10 * values[i].abs();
            }
        }
        (values, ok)
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            (any::<u8>(), any::<u16>(), any::<u16>(), any::<u16>()),
            1..12,
        )
    }

    fn values() -> impl Strategy<Value = (f64, f64, f64, f64, f64)> {
        (0.3..2.0, -2.0..-0.3, -1.5..1.5, 0.0..1.0, -1.0..1.0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn prepare_preserves_values(steps in steps(), at in values()) {
            let raw = model(&steps);
            let mut prepared = raw.clone();
            prepare(&mut prepared);
            prop_assert_eq!(verify(&prepared), Ok(()));
            let at = point(at, [0.0; 7]);
            let (before, testable) = well_conditioned(&raw.pool, &at);
            let after = at.eval(&prepared.pool, &prepared.outputs[0].value);
            for (i, (&id, &a)) in raw.outputs[0].value.iter().zip(&after).enumerate() {
                let b = before[id.index()];
                // Rounding differences of a few ε per node, amplified at most 100-fold.
                prop_assert!(
                    !testable[id.index()] || (a - b).abs() <= 1e-12 * b.abs(),
                    "node {}: {} before, {} after", i, b, a
                );
            }
        }

        #[test]
        fn random_jacobian_products_pass_the_dot_product_test(
            steps in steps(),
            at in values(),
            directions in prop::array::uniform7(-1.0..1.0f64),
        ) {
            let mut m = model(&steps);
            prepare(&mut m);
            let at = point(at, directions);
            let d = &m.derivatives;
            let rows = |ids: &[ExprId]| at.eval(&m.pool, ids);
            let (jv, ju, jtw) = (rows(&d.jvp_state), rows(&d.jvp_param), rows(&d.vjp_state));
            let jtw_k = rows(&d.vjp_param);
            let w = &directions[4..];
            // Both sides sum the same products w_k ∂f_k/∂v_j v_j in different orders, and each
            // ∂f_k/∂v_j is itself a sum that may cancel (d(2k/(kx))/dk = 0 up to rounding).
            // The rounding error is bounded by ε times the largest value involved: the terms
            // or any intermediate node (the prepared pool holds only reachable nodes).
            let all: Vec<ExprId> = (0..m.pool.len() as u32).map(ExprId).collect();
            let scale = rows(&all)
                .into_iter()
                .filter(|v| v.is_finite())
                .fold(0.0f64, |a, v| a.max(v.abs()));
            let check = |lhs: &[f64], rhs: &[f64]| -> bool {
                let terms = lhs.iter().chain(rhs).map(|x| x.abs()).sum::<f64>();
                if !terms.is_finite() {
                    return true;
                }
                let l: f64 = lhs.iter().sum();
                let r: f64 = rhs.iter().sum();
                (l - r).abs() <= 1e-11 * terms.max(scale)
            };
            let wjv: Vec<f64> = w.iter().zip(&jv).map(|(a, b)| a * b).collect();
            let jtwv: Vec<f64> = jtw.iter().zip(&directions[..3]).map(|(a, b)| a * b).collect();
            prop_assert!(check(&wjv, &jtwv), "state: {:?} vs {:?}", wjv, jtwv);
            let wju: Vec<f64> = w.iter().zip(&ju).map(|(a, b)| a * b).collect();
            let jtwu = vec![jtw_k[0] * directions[3]];
            prop_assert!(check(&wju, &jtwu), "param: {:?} vs {:?}", wju, jtwu);
        }
    }
}
