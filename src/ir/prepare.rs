//! `prepare`: turns the IR that `sema` built into what `compile` consumes.
//!
//! [`prepare`] simplifies the model's expressions, builds the derivative IR
//! ([`super::Derivatives`]: Jacobian-vector and vector-Jacobian products of the state equations,
//! the time derivative, the initial state's sensitivities and the cost gradients), simplifies
//! again, and finally compacts the pool to the nodes the roots reach, renumbered in order.
//! The JVP and VJP are symbolic IR rather than a reverse sweep over a compiled tape, so that
//! `compile` treats them like any other expression and they share nodes with the primal.

use std::collections::HashMap;

use super::diff::{jvp, partial, reachable, vjp};
use super::simplify::simplify_model;
use super::{CostGradient, CostKind, Derivatives, ExprId, Model, PrepareStats, Var};

/// Simplifies the model, adds its derivative IR and compacts its pool. Never fails.
///
/// Afterwards every node is reachable from a root of [`Model::roots`], children precede
/// parents, and `model.prepared` records the node counts (`nodec ir --stats`).
pub fn prepare(model: &mut Model) {
    let requested = model
        .prepared
        .map_or(model.pool.requested(), |s| s.requested);
    let distinct_before = model.pool.len();
    simplify_model(model);
    model.derivatives = derivatives(model);
    simplify_model(model);
    compact(model);
    model.prepared = Some(PrepareStats {
        requested,
        distinct_before,
        distinct_after: model.pool.len(),
    });
}

/// Builds the derivative IR of `model` in its pool (see [`Derivatives`] for the definitions).
pub fn derivatives(model: &mut Model) -> Derivatives {
    let f = model.rhs();
    let init: Vec<ExprId> = model.states.iter().flat_map(|s| s.init.iter().copied()).collect();
    let xs = model.state_vars();
    let thetas = model.param_vars();
    let mut both = xs.clone();
    both.extend_from_slice(&thetas);
    let lm_k = model.schedule.as_ref().and_then(|s| s.lm_k);
    let mut cost_values: Vec<(CostKind, Vec<ExprId>)> = Vec::new();
    for kind in [CostKind::Terminal, CostKind::Running, CostKind::Penalty, CostKind::Observed] {
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
    let state_tangent: HashMap<Var, ExprId> = xs
        .iter()
        .map(|&v| (v, pool.var(direction(v))))
        .collect();
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
    for (kind, values) in cost_values {
        let value = pool.sum(&values);
        let mut grad = vjp(pool, &[value], &[one], &both);
        let param = grad.split_off(xs.len());
        d.costs.push(CostGradient {
            kind,
            value,
            state: grad,
            param,
        });
    }
    d
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
