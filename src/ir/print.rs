//! The text form of the IR: the output of `nodec ir` and the IR snapshot format.
//!
//! [`print()`] writes a header (model name, consts, params, inputs, labels, observed values,
//! states), then every node reachable from the model's roots, one per line in id order
//! (`%7 = mul %3, %5`), then the roots by name (`dx/dt[0] = %12`). Elements are row-major and
//! shown as `[i]` for vectors and `[i, j]` for matrices. [`stats`] counts nodes by kind. The
//! text is stable: it depends only on the model, in declaration order.

use std::fmt::Write as _;

use super::diff::reachable;
use super::tensor::{grid, Leaf, TId, TNode, TensorPool};
use super::{CostKind, ExprId, Model, Node, ParamInit, ParamTime, Pool, Shape, Var};

/// The model as text; with `with_derivatives`, the derivative IR and its roots too.
pub fn print(model: &Model, with_derivatives: bool) -> String {
    let mut out = String::new();
    header(model, &mut out);
    let roots = if with_derivatives {
        model.roots()
    } else {
        model.primal_roots()
    };
    out.push('\n');
    print_nodes(model, &roots, &mut out);
    out.push('\n');
    primal_roots(model, &mut out);
    if with_derivatives {
        derivative_roots(model, &mut out);
    }
    out
}

/// The model as tensor expressions (`nodec ir --tensor`): the header, then every shared node
/// once and each root as a readable expression (`dx/dt = K2 · tanh(K1 · x + b1)`); with
/// `with_derivatives`, the derivative roots too (`v_x`, `u_K` and `w_x` are the directions and
/// cotangents).
pub fn print_tensor(model: &Model, with_derivatives: bool) -> String {
    let mut out = String::new();
    header(model, &mut out);
    out.push('\n');
    let r = &model.tensor_roots;
    let state = |i: usize| model.states[i].name.as_str();
    let param = |i: usize| model.params[i].name.as_str();
    let mut roots: Vec<(String, TId)> = Vec::new();
    for (i, (&init, &rhs)) in r.init.iter().zip(&r.rhs).enumerate() {
        roots.push((format!("state {} init", state(i)), init));
        roots.push((format!("d{}/dt", state(i)), rhs));
    }
    for (c, &id) in model.costs.iter().zip(&r.costs) {
        roots.push((format!("cost {}", c.kind.name()), id));
    }
    for (m, &id) in model.metrics.iter().zip(&r.metrics) {
        roots.push((format!("metric {}", m.name), id));
    }
    for (o, &id) in model.outputs.iter().zip(&r.outputs) {
        roots.push((format!("output {}", o.name), id));
    }
    if let Some(k) = r.lm_k {
        roots.push(("schedule k".to_string(), k));
    }
    if with_derivatives {
        let d = &r.derivatives;
        let per_state = [
            ("jvp_state", &d.jvp_state),
            ("jvp_param", &d.jvp_param),
            ("vjp_state", &d.vjp_state),
            ("rhs_time", &d.rhs_time),
            ("init_jvp_param", &d.init_jvp_param),
        ];
        for (what, list) in per_state {
            for (i, &id) in list.iter().enumerate() {
                roots.push((format!("{what} {}", state(i)), id));
            }
        }
        let per_param = [
            ("vjp_param", &d.vjp_param),
            ("init_vjp_param", &d.init_vjp_param),
            ("lm_k_param", &d.lm_k_param),
            ("msa_mixed_param", &d.msa_mixed_param),
        ];
        for (what, list) in per_param {
            for (j, &id) in list.iter().enumerate() {
                roots.push((format!("{what} {}", param(j)), id));
            }
        }
        for c in &d.costs {
            let kind = if c.copies > 1 {
                format!("{} per copy ×{}", c.kind.name(), c.copies)
            } else {
                c.kind.name().to_string()
            };
            roots.push((format!("cost {kind}"), c.value));
            for (i, &id) in c.state.iter().enumerate() {
                roots.push((format!("cost {kind} ∂/∂{}", state(i)), id));
            }
            for (j, &id) in c.param.iter().enumerate() {
                roots.push((format!("cost {kind} ∂/∂{}", param(j)), id));
            }
        }
    }
    let name = |leaf: Leaf| -> String {
        match leaf {
            Leaf::Time => "t".to_string(),
            Leaf::State(i) => state(i as usize).to_string(),
            Leaf::Param(i) => param(i as usize).to_string(),
            Leaf::Input(i) => model.inputs[i as usize].name.clone(),
            Leaf::Label(i) => model.labels[i as usize].name.clone(),
            Leaf::Observed(i) => model.observed[i as usize].name.clone(),
            Leaf::StateTangent(i) => format!("v_{}", state(i as usize)),
            Leaf::ParamTangent(i) => format!("u_{}", param(i as usize)),
            Leaf::Cotangent(i) => format!("w_{}", state(i as usize)),
        }
    };
    out.push_str(&super::tensor::print::roots_text(
        &model.tensors,
        &roots,
        &name,
    ));
    out
}

/// Every node reachable from `roots`, one per line in id order.
pub(crate) fn print_nodes(model: &Model, roots: &[ExprId], out: &mut String) {
    for id in reachable(&model.pool, roots) {
        let _ = writeln!(out, "{id} = {}", node_text(model, model.pool.node(id)));
    }
}

/// Node counts, the text of `nodec ir --stats`. "Before" is the size of the roots' expressions
/// written out as trees, i.e. what a lowering without sharing (CSE) or folding would build;
/// "after" is the number of distinct nodes of the simplified, hash-consed DAG. Each is given for
/// the model's own roots (equations, initial values, costs, metrics, outputs: `primal`) and
/// with the derivative IR that later stages compile (`all`). Then one line per node kind with
/// its count in the primal DAG and in the whole DAG, in a fixed order (kinds that do not occur
/// are left out), and the arithmetic operations one evaluation of the whole DAG takes.
pub fn stats(model: &Model) -> String {
    if !model.has_scalar_ir() {
        let mut out = String::new();
        let size = super::scalar_ir_estimate(model);
        if size > super::SCALAR_IR_LIMIT {
            let _ = writeln!(
                out,
                "scalar IR not built: about {size} nodes, above the limit of {}; tensor kernels",
                super::SCALAR_IR_LIMIT
            );
        } else {
            let _ = writeln!(
                out,
                "scalar IR not built: every matrix product is a parameter matrix at least {} wide each way; tensor kernels",
                super::GEMM_SIDE
            );
        }
        let _ = writeln!(out, "{:<26}{:>14}{:>14}", "nodes", "primal", "all");
        tensor_stats(model, &mut out);
        return out;
    }
    let primal_roots = model.primal_roots();
    let all_roots = model.roots();
    let primal = reachable(&model.pool, &primal_roots);
    let all = reachable(&model.pool, &all_roots);
    let mut out = String::new();
    let _ = writeln!(out, "{:<26}{:>14}{:>14}", "nodes", "primal", "all");
    let _ = writeln!(
        out,
        "{:<26}{:>14}{:>14}",
        "before (as trees)",
        tree_size(model, &primal_roots),
        tree_size(model, &all_roots)
    );
    let _ = writeln!(
        out,
        "{:<26}{:>14}{:>14}",
        "after (distinct DAG)",
        primal.len(),
        all.len()
    );
    let ops: usize = all
        .iter()
        .map(|&id| match model.pool.node(id) {
            Node::Const(_) | Node::Var(_) => 0,
            Node::Add(c) | Node::Mul(c) => c.len() - 1,
            _ => 1,
        })
        .sum();
    let _ = writeln!(out, "{:<26}{:>14}{:>14}", "operations", "", ops);
    let count = |nodes: &[ExprId]| {
        let mut counts: Vec<(&'static str, usize)> = KIND_ORDER.iter().map(|k| (*k, 0)).collect();
        for id in nodes {
            let kind = model.pool.node(*id).kind();
            if let Some(entry) = counts.iter_mut().find(|(k, _)| *k == kind) {
                entry.1 += 1;
            }
        }
        counts
    };
    for ((kind, p), (_, a)) in count(&primal).into_iter().zip(count(&all)) {
        if a > 0 {
            let _ = writeln!(out, "{kind:<26}{p:>14}{a:>14}");
        }
    }
    tensor_stats(model, &mut out);
    out
}

/// The `tensor nodes` and `tensor flops` lines of [`stats`] (none for a model without tensors).
fn tensor_stats(model: &Model, out: &mut String) {
    if model.tensors.is_empty() {
        return;
    }
    let tensors = &model.tensors;
    let tensor_primal = tensor_reachable(tensors, &model.tensor_roots.primal());
    let tensor_all = tensor_reachable(tensors, &model.tensor_roots.all());
    let _ = writeln!(
        out,
        "{:<26}{:>14}{:>14}",
        "tensor nodes",
        tensor_primal.len(),
        tensor_all.len()
    );
    let flops = |nodes: &[TId]| -> u64 { nodes.iter().map(|&id| tensor_flops(tensors, id)).sum() };
    let _ = writeln!(
        out,
        "{:<26}{:>14}{:>14}",
        "tensor flops",
        flops(&tensor_primal),
        flops(&tensor_all)
    );
}

/// The tensor nodes `roots` reach, in id order.
fn tensor_reachable(pool: &TensorPool, roots: &[TId]) -> Vec<TId> {
    let size = roots.iter().map(|r| r.index() + 1).max().unwrap_or(0);
    let mut keep = vec![false; size];
    for r in roots {
        keep[r.index()] = true;
    }
    for i in (0..size).rev() {
        if keep[i] {
            pool.node(TId(i as u32))
                .for_each_operand(|c| keep[c.index()] = true);
        }
    }
    (0..size)
        .filter(|&i| keep[i])
        .map(|i| TId(i as u32))
        .collect()
}

/// Arithmetic operations of one evaluation of a tensor node (a multiply-add counts two; moving
/// data, as in a transpose or a window, counts nothing).
fn tensor_flops(pool: &TensorPool, id: TId) -> u64 {
    let n = pool.shape(id).len() as u64;
    match pool.node(id) {
        TNode::Add(c) | TNode::Mul(c) => n * (c.len() as u64 - 1),
        TNode::Div(..)
        | TNode::Pow(..)
        | TNode::Func(..)
        | TNode::Min(..)
        | TNode::Max(..)
        | TNode::Cmp(..)
        | TNode::Outer(..) => n,
        TNode::MatMul(a, _) => 2 * n * grid(pool.shape(*a)).1 as u64,
        TNode::Sum(a)
        | TNode::SumAxis(a, _)
        | TNode::MaxAll(a)
        | TNode::FirstMax(a)
        | TNode::ArgMax(a) => pool.shape(*a).len() as u64,
        _ => 0,
    }
}

/// The number of nodes the roots' expressions have when written out as trees (no sharing),
/// summed over the roots; saturates rather than overflows.
fn tree_size(model: &Model, roots: &[ExprId]) -> u64 {
    let nodes = reachable(&model.pool, roots);
    let mut size = vec![0u64; model.pool.len()];
    // `reachable` lists ids in increasing order, so children come first.
    for id in nodes {
        let node = model.pool.node(id);
        size[id.index()] = node
            .operands()
            .iter()
            .fold(1u64, |acc, c| acc.saturating_add(size[c.index()]));
    }
    roots
        .iter()
        .fold(0u64, |acc, r| acc.saturating_add(size[r.index()]))
}

/// Node kinds in the order [`stats`] lists them.
const KIND_ORDER: [&str; 26] = [
    "const", "var", "add", "mul", "div", "pow", "min", "max", "sin", "cos", "tan", "exp", "log",
    "sqrt", "abs", "tanh", "sigmoid", "relu", "softplus", "sign", "lt", "le", "gt", "ge", "eq",
    "ne",
];

/// A number in shortest round-trip form: plain decimals for ordinary magnitudes, exponent
/// notation (`1e-10`, `3e30`) for very small or large ones.
pub fn number(x: f64) -> String {
    let m = x.abs();
    if m == 0.0 || !m.is_finite() || (1e-5..1e16).contains(&m) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

fn header(model: &Model, out: &mut String) {
    let _ = writeln!(out, "model {}", model.name);
    for c in &model.consts {
        let _ = writeln!(
            out,
            "const {} = {}",
            named(&c.name, c.shape),
            values(&c.values)
        );
    }
    for p in &model.params {
        let _ = write!(out, "param {}", named(&p.name, p.shape));
        match &p.time {
            ParamTime::Constant => {}
            ParamTime::PerLayer => out.push_str(" per layer"),
            ParamTime::Knots(knots) => {
                let list: Vec<String> = knots.iter().map(|k| number(*k)).collect();
                let _ = write!(out, " on knots({})", list.join(", "));
            }
        }
        match &p.init {
            ParamInit::Values(v) if v.is_empty() => {}
            ParamInit::Values(v) => {
                let _ = write!(out, " = {}", values(v));
            }
            ParamInit::Normal { mean, std } => {
                let _ = write!(out, " ~ normal({}, {})", number(*mean), number(*std));
            }
            ParamInit::Uniform { lo, hi } => {
                let _ = write!(out, " ~ uniform({}, {})", number(*lo), number(*hi));
            }
        }
        out.push('\n');
    }
    for i in &model.inputs {
        let _ = writeln!(out, "input {}", named(&i.name, i.shape));
    }
    for l in &model.labels {
        let _ = writeln!(out, "label {}", l.name);
    }
    for o in &model.observed {
        let _ = writeln!(out, "observed {}", named(&o.name, o.shape));
    }
    for s in &model.states {
        let _ = writeln!(out, "state {}", named(&s.name, s.shape));
    }
}

/// `name` with its dimensions: `K1[8, 2]`, or just `k` for a scalar.
fn named(name: &str, shape: Shape) -> String {
    match shape {
        Shape::Scalar => name.to_string(),
        _ => format!("{name}{shape}"),
    }
}

/// One value when all are equal (`0`), else the row-major list (`[1, 2, 3]`).
fn values(v: &[f64]) -> String {
    match v {
        [] => "[]".to_string(),
        [first, rest @ ..] if rest.iter().all(|x| x.to_bits() == first.to_bits()) => number(*first),
        _ => {
            let list: Vec<String> = v.iter().map(|x| number(*x)).collect();
            format!("[{}]", list.join(", "))
        }
    }
}

/// Element `elem` of `name`: `x` for a scalar, `x[3]` for a vector, `K[1, 0]` for a matrix.
pub(crate) fn element(name: &str, shape: Shape, elem: usize) -> String {
    match shape {
        Shape::Scalar => name.to_string(),
        Shape::Vector(_) => format!("{name}[{elem}]"),
        Shape::Matrix(_, n) => format!("{name}[{}, {}]", elem / n.max(1), elem % n.max(1)),
    }
}

/// Element `elem` of the `index`-th declaration of a list, or `#index[elem]` when out of range.
fn decl_element(decl: Option<(&str, Shape)>, index: u32, elem: u32) -> String {
    match decl {
        Some((name, shape)) => element(name, shape, elem as usize),
        None => format!("#{index}[{elem}]"),
    }
}

fn var_text(model: &Model, var: Var) -> String {
    let state = |s: u32| {
        model
            .states
            .get(s as usize)
            .map(|d| (d.name.as_str(), d.shape))
    };
    let param = |p: u32| {
        model
            .params
            .get(p as usize)
            .map(|d| (d.name.as_str(), d.shape))
    };
    match var {
        Var::Time => "time".to_string(),
        Var::State { state: s, elem } => format!("state {}", decl_element(state(s), s, elem)),
        Var::Param { param: p, elem } => format!("param {}", decl_element(param(p), p, elem)),
        Var::Input { input, elem } => {
            let decl = model
                .inputs
                .get(input as usize)
                .map(|d| (d.name.as_str(), d.shape));
            format!("input {}", decl_element(decl, input, elem))
        }
        Var::Label { label } => match model.labels.get(label as usize) {
            Some(l) => format!("label {}", l.name),
            None => format!("label #{label}"),
        },
        Var::Observed { observed, elem } => {
            let decl = model
                .observed
                .get(observed as usize)
                .map(|d| (d.name.as_str(), d.shape));
            format!("observed {}", decl_element(decl, observed, elem))
        }
        Var::StateTangent { state: s, elem } => {
            format!("state_tangent {}", decl_element(state(s), s, elem))
        }
        Var::ParamTangent { param: p, elem } => {
            format!("param_tangent {}", decl_element(param(p), p, elem))
        }
        Var::Cotangent { state: s, elem } => {
            format!("cotangent {}", decl_element(state(s), s, elem))
        }
        Var::RunningCotangent => "running_cotangent".to_string(),
    }
}

fn node_text(model: &Model, node: &Node) -> String {
    match node {
        Node::Const(bits) => format!("const {}", number(f64::from_bits(*bits))),
        Node::Var(v) => var_text(model, *v),
        _ => {
            let operands: Vec<String> = node.operands().iter().map(|c| c.to_string()).collect();
            format!("{} {}", node.kind(), operands.join(", "))
        }
    }
}

fn primal_roots(model: &Model, out: &mut String) {
    for s in &model.states {
        for (e, id) in s.init.iter().enumerate() {
            let _ = writeln!(out, "state {} init = {id}", element(&s.name, s.shape, e));
        }
        for (e, id) in s.rhs.iter().enumerate() {
            let index = element("", s.shape, e);
            let _ = writeln!(out, "d{}/dt{index} = {id}", s.name);
        }
    }
    for c in &model.costs {
        let _ = writeln!(out, "cost {} = {}", c.kind.name(), c.value);
    }
    for (word, list) in [("metric", &model.metrics), ("output", &model.outputs)] {
        for o in list {
            for (e, id) in o.value.iter().enumerate() {
                let _ = writeln!(out, "{word} {} = {id}", element(&o.name, o.shape, e));
            }
        }
    }
    if let Some(k) = model.schedule.as_ref().and_then(|s| s.lm_k) {
        let _ = writeln!(out, "schedule k = {k}");
    }
    for d in &model.data {
        if let super::DataSource::Uniform { label: Some(l), .. } = &d.source {
            let _ = writeln!(out, "data {} label = {l}", d.name);
        }
    }
}

fn derivative_roots(model: &Model, out: &mut String) {
    let d = &model.derivatives;
    let states: Vec<String> = model
        .states
        .iter()
        .flat_map(|s| (0..s.shape.len()).map(|e| element(&s.name, s.shape, e)))
        .collect();
    let params: Vec<String> = model
        .params
        .iter()
        .flat_map(|p| (0..p.shape.len()).map(|e| element(&p.name, p.shape, e)))
        .collect();
    let list = |out: &mut String, label: &str, names: &[String], ids: &[ExprId]| {
        for (i, id) in ids.iter().enumerate() {
            let name = names.get(i).map_or("?", String::as_str);
            let _ = writeln!(out, "{label} {name} = {id}");
        }
    };
    list(out, "jvp_state", &states, &d.jvp_state);
    list(out, "jvp_param", &states, &d.jvp_param);
    list(out, "vjp_state", &states, &d.vjp_state);
    list(out, "vjp_param", &params, &d.vjp_param);
    list(out, "rhs_time", &states, &d.rhs_time);
    list(out, "init_jvp_param", &states, &d.init_jvp_param);
    list(out, "init_vjp_param", &params, &d.init_vjp_param);
    list(out, "schedule_k_grad", &params, &d.lm_k_param);
    list(out, "msa_mixed_param", &params, &d.msa_mixed_param);
    for c in &d.costs {
        let kind: CostKind = c.kind;
        let name = if c.copies > 1 {
            format!("{} per copy ×{}", kind.name(), c.copies)
        } else {
            kind.name().to_string()
        };
        let _ = writeln!(out, "cost_sum {name} = {}", c.value);
        list(out, &format!("cost_grad {name}"), &states, &c.state);
        list(out, &format!("cost_grad {name}"), &params, &c.param);
    }
}

/// An expression as a nested s-expression, for test and debug messages: `(tanh (add x0 2))`.
pub fn expr_to_string(pool: &Pool, id: ExprId) -> String {
    let mut out = String::new();
    write_expr(pool, id, &mut out, 0);
    out
}

fn write_expr(pool: &Pool, id: ExprId, out: &mut String, depth: usize) {
    if depth > 32 {
        out.push_str("...");
        return;
    }
    match pool.node(id) {
        Node::Const(bits) => out.push_str(&number(f64::from_bits(*bits))),
        Node::Var(v) => {
            let _ = write!(out, "{v:?}");
        }
        node => {
            let _ = write!(out, "({}", node.kind());
            node.for_each_operand(|c| {
                out.push(' ');
                write_expr(pool, c, out, depth + 1);
            });
            out.push(')');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Span;
    use crate::ir::{Cost, Func, Output, Param, State};

    /// `dx/dt = −k·x` for a `[2]` state, `output r = tanh(x[0]·W[0, 1])`, a terminal cost.
    fn small_model() -> Model {
        let mut model = Model {
            name: "tiny".to_string(),
            ..Model::default()
        };
        model.params.push(Param {
            name: "k".to_string(),
            shape: Shape::Scalar,
            time: ParamTime::Constant,
            init: ParamInit::Values(vec![0.5]),
            span: Span::default(),
        });
        model.params.push(Param {
            name: "W".to_string(),
            shape: Shape::Matrix(2, 2),
            time: ParamTime::PerLayer,
            init: ParamInit::Normal {
                mean: 0.0,
                std: 0.5,
            },
            span: Span::default(),
        });
        let p = &mut model.pool;
        let k = p.var(Var::Param { param: 0, elem: 0 });
        let x: Vec<ExprId> = (0..2)
            .map(|elem| p.var(Var::State { state: 0, elem }))
            .collect();
        let rhs: Vec<ExprId> = x
            .iter()
            .map(|&xi| {
                let kx = p.mul(k, xi);
                p.neg(kx)
            })
            .collect();
        let one = p.constant(1.0);
        let two = p.constant(2.5e-7);
        let w01 = p.var(Var::Param { param: 1, elem: 1 });
        let prod = p.mul(x[0], w01);
        let r = p.func(Func::Tanh, prod);
        let cost = p.mul(two, x[1]);
        model.states.push(State {
            name: "x".to_string(),
            shape: Shape::Vector(2),
            init: vec![one, one],
            rhs,
            span: Span::default(),
            equation_span: Span::default(),
        });
        model.outputs.push(Output {
            name: "r".to_string(),
            shape: Shape::Scalar,
            value: vec![r],
            span: Span::default(),
        });
        model.costs.push(Cost {
            kind: CostKind::Terminal,
            value: cost,
            span: Span::default(),
        });
        model
    }

    #[test]
    fn prints_a_small_model() {
        let model = small_model();
        let expected = "\
model tiny
param k = 0.5
param W[2, 2] per layer ~ normal(0, 0.5)
state x[2]

%0 = param k
%1 = state x[0]
%2 = state x[1]
%3 = mul %0, %1
%4 = const -1
%5 = mul %4, %3
%6 = mul %0, %2
%7 = mul %4, %6
%8 = const 1
%9 = const 2.5e-7
%10 = param W[0, 1]
%11 = mul %1, %10
%12 = tanh %11
%13 = mul %9, %2

state x[0] init = %8
state x[1] init = %8
dx/dt[0] = %5
dx/dt[1] = %7
cost terminal = %13
output r = %12
";
        assert_eq!(print(&model, false), expected);
    }

    #[test]
    fn stats_count_reachable_nodes_by_kind() {
        let model = small_model();
        let text = stats(&model);
        assert_eq!(
            text,
            // Trees: init 1 + 1; rhs (−1)·(k·x_i) is 5 nodes, twice; tanh(x0·W01) 4;
            // 2.5e-7·x1 3: 19. Distinct: 3 consts, 4 vars, 6 products, 1 tanh.
            "nodes                             primal           all\n\
             before (as trees)                     19            19\n\
             after (distinct DAG)                  14            14\n\
             operations                                           7\n\
             const                                  3             3\n\
             var                                    4             4\n\
             mul                                    6             6\n\
             tanh                                   1             1\n"
        );
    }

    #[test]
    fn numbers_print_in_shortest_round_trip_form() {
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(-1e-10), "-1e-10");
        assert_eq!(number(3e7), "30000000");
        assert_eq!(number(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(number(f64::INFINITY), "inf");
    }
}
