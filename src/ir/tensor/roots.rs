//! The model's roots as tensor nodes and their derivative IR at tensor level: the same
//! Jacobian-vector and vector-Jacobian products, time derivative, initial-state sensitivities
//! and cost gradients that [`crate::ir::Derivatives`] holds per element, here one node per
//! state or parameter, so their size follows the model's text and not its widths.

use super::diff::{jvp, vjp};
use super::node::{Leaf, TId, TNode};
use super::pool::TensorPool;
use crate::ir::{CostKind, Model, Optimizer, Shape};

/// The roots `sema` lowered, in declaration order, and (after [`derive`]) their derivatives.
#[derive(Clone, Debug, Default)]
pub struct TensorRoots {
    /// Each state's initial value.
    pub init: Vec<TId>,
    /// Each state's right-hand side.
    pub rhs: Vec<TId>,
    /// Each cost's value (scalars), in the order of [`Model::costs`].
    pub costs: Vec<TId>,
    /// Each metric.
    pub metrics: Vec<TId>,
    /// Each output.
    pub outputs: Vec<TId>,
    /// Each event's condition (a scalar).
    pub event_conds: Vec<TId>,
    /// Every event's assigned values, events in order, assignments in source order.
    pub event_jumps: Vec<TId>,
    /// LM-ResNet's coefficient, if the schedule has one.
    pub lm_k: Option<TId>,
    /// `uniform`'s `label = EXPR` by index of its block in [`Model::data`]. Not a root of
    /// [`TensorRoots::primal`]: it describes the data, not the model, and is kept only so that
    /// [`crate::ir::expand_scalar`] can rebuild the scalar pool in `sema`'s order.
    pub data_labels: Vec<(usize, TId)>,
    /// The derivative roots; empty until [`derive`] runs.
    pub derivatives: TensorDerivatives,
}

/// The derivative IR per state (`f_i`, `x_i`, `v_i`, `w_i`) and per parameter (`θ_j`, `u_j`),
/// with the definitions of [`crate::ir::Derivatives`].
#[derive(Clone, Debug, Default)]
pub struct TensorDerivatives {
    /// `Σ_j ∂f_i/∂x_j · v_j`, per state.
    pub jvp_state: Vec<TId>,
    /// `Σ_j ∂f_i/∂θ_j · u_j`, per state.
    pub jvp_param: Vec<TId>,
    /// `Σ_i w_i · ∂f_i/∂x_j`, per state.
    pub vjp_state: Vec<TId>,
    /// `Σ_i w_i · ∂f_i/∂θ_j`, per parameter.
    pub vjp_param: Vec<TId>,
    /// `∂f_i/∂t`, per state.
    pub rhs_time: Vec<TId>,
    /// `Σ_j ∂x0_i/∂θ_j · u_j`, per state.
    pub init_jvp_param: Vec<TId>,
    /// `Σ_i w_i · ∂x0_i/∂θ_j`, per parameter.
    pub init_vjp_param: Vec<TId>,
    /// `∂k/∂θ_j` of LM-ResNet's coefficient, per parameter; empty without one.
    pub lm_k_param: Vec<TId>,
    /// `∂θ_j (Σ_i w_i · (J v)_i)`, per parameter, for models trained by `msa`.
    pub msa_mixed_param: Vec<TId>,
    /// The events' forward derivatives, as [`crate::ir::Derivatives::event_jvp`]: per row of
    /// `event_conds` then `event_jumps`, its JVP in the state and parameter tangents, then per
    /// row its time derivative.
    pub event_jvp: Vec<TId>,
    /// Per declared cost kind (terminal, running, penalty, observed), the summed value and its
    /// gradients; a penalty is split by parameter copies as in [`crate::ir::CostGradient`].
    pub costs: Vec<TensorCost>,
}

/// A cost's value and gradients at tensor level (see [`crate::ir::CostGradient`]).
#[derive(Clone, Debug)]
pub struct TensorCost {
    /// Which part of the loss.
    pub kind: CostKind,
    /// The summed value (a scalar).
    pub value: TId,
    /// Its gradient per state.
    pub state: Vec<TId>,
    /// Its gradient per parameter.
    pub param: Vec<TId>,
    /// How many copies of the time-varying parameters the value is summed over.
    pub copies: usize,
}

impl TensorDerivatives {
    /// Every derivative root, in field order.
    pub fn roots(&self) -> Vec<TId> {
        let mut out: Vec<TId> = [
            &self.jvp_state,
            &self.jvp_param,
            &self.vjp_state,
            &self.vjp_param,
            &self.rhs_time,
            &self.init_jvp_param,
            &self.init_vjp_param,
            &self.lm_k_param,
            &self.msa_mixed_param,
            &self.event_jvp,
        ]
        .into_iter()
        .flatten()
        .copied()
        .collect();
        for c in &self.costs {
            out.push(c.value);
            out.extend(&c.state);
            out.extend(&c.param);
        }
        out
    }
}

impl TensorRoots {
    /// The model's own roots (initial values, equations, costs, metrics, outputs, `k`).
    pub fn primal(&self) -> Vec<TId> {
        let mut out: Vec<TId> = [
            &self.init,
            &self.rhs,
            &self.costs,
            &self.metrics,
            &self.outputs,
        ]
        .into_iter()
        .flatten()
        .copied()
        .collect();
        out.extend(self.lm_k);
        out.extend(&self.event_conds);
        out.extend(&self.event_jumps);
        out
    }

    /// The primal roots then the derivative roots.
    pub fn all(&self) -> Vec<TId> {
        let mut out = self.primal();
        out.extend(self.derivatives.roots());
        out
    }
}

/// Builds the tensor derivative IR of `model` into its tensor pool. A model that `sema` did not
/// build (one assembled from scalar nodes, as some tests do) has no tensor roots and is left
/// as it is.
pub fn derive(model: &mut Model) {
    if model.tensor_roots.rhs.len() != model.states.len()
        || model.tensor_roots.costs.len() != model.costs.len()
    {
        return;
    }
    let state_shapes: Vec<Shape> = model.states.iter().map(|s| s.shape).collect();
    let param_shapes: Vec<Shape> = model.params.iter().map(|p| p.shape).collect();
    let msa = model
        .train
        .as_ref()
        .is_some_and(|t| t.optimizer == Optimizer::Msa);
    let kinds: Vec<CostKind> = model.costs.iter().map(|c| c.kind).collect();
    let param_copies = model.param_copies();
    let roots = &mut model.tensor_roots;
    let pool = &mut model.tensors;
    let leaves = |pool: &mut TensorPool, shapes: &[Shape], make: fn(u32) -> Leaf| -> Vec<TId> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, s)| pool.leaf(make(i as u32), *s))
            .collect()
    };
    let x = leaves(pool, &state_shapes, Leaf::State);
    let theta = leaves(pool, &param_shapes, Leaf::Param);
    let v = leaves(pool, &state_shapes, Leaf::StateTangent);
    let u = leaves(pool, &param_shapes, Leaf::ParamTangent);
    let w = leaves(pool, &state_shapes, Leaf::Cotangent);
    let mut both = x.clone();
    both.extend_from_slice(&theta);
    let one = pool.constant(1.0);
    let f = roots.rhs.clone();
    let init = roots.init.clone();

    let mut d = TensorDerivatives {
        jvp_state: jvp(pool, &f, &mut |_, l| match l {
            Leaf::State(i) => Some(v[i as usize]),
            _ => None,
        }),
        jvp_param: jvp(pool, &f, &mut |_, l| match l {
            Leaf::Param(j) => Some(u[j as usize]),
            _ => None,
        }),
        ..TensorDerivatives::default()
    };
    let mut pulled = vjp(pool, &f, &w, &both);
    d.vjp_param = pulled.split_off(x.len());
    d.vjp_state = pulled;
    d.rhs_time = jvp(pool, &f, &mut |_, l| (l == Leaf::Time).then_some(one));
    d.init_jvp_param = jvp(pool, &init, &mut |_, l| match l {
        Leaf::Param(j) => Some(u[j as usize]),
        _ => None,
    });
    d.init_vjp_param = vjp(pool, &init, &w, &theta);
    if let Some(k) = roots.lm_k {
        d.lm_k_param = vjp(pool, &[k], &[one], &theta);
    }
    if msa {
        let terms: Vec<TId> = w
            .iter()
            .zip(&d.jvp_state)
            .map(|(&wi, &ji)| pool.dot(wi, ji))
            .collect();
        let contracted = pool.sum_of(&terms);
        d.msa_mixed_param = vjp(pool, &[contracted], &[one], &theta);
    }
    let event_rows: Vec<TId> = roots
        .event_conds
        .iter()
        .chain(&roots.event_jumps)
        .copied()
        .collect();
    if !event_rows.is_empty() {
        d.event_jvp = jvp(pool, &event_rows, &mut |_, l| match l {
            Leaf::State(i) => Some(v[i as usize]),
            Leaf::Param(j) => Some(u[j as usize]),
            _ => None,
        });
        let dt = jvp(pool, &event_rows, &mut |_, l| {
            (l == Leaf::Time).then_some(one)
        });
        d.event_jvp.extend(dt);
    }
    for kind in [
        CostKind::Terminal,
        CostKind::Running,
        CostKind::Penalty,
        CostKind::Observed,
    ] {
        let values: Vec<TId> = roots
            .costs
            .iter()
            .zip(&kinds)
            .filter(|(_, k)| **k == kind)
            .map(|(c, _)| *c)
            .collect();
        if values.is_empty() {
            continue;
        }
        let value = pool.sum_of(&values);
        let groups = if kind == CostKind::Penalty {
            penalty_groups(pool, value, &param_copies)
        } else {
            vec![(1, value)]
        };
        for (copies, value) in groups {
            let mut state = vjp(pool, &[value], &[one], &both);
            let param = state.split_off(x.len());
            d.costs.push(TensorCost {
                kind,
                value,
                state,
                param,
                copies,
            });
        }
    }
    roots.derivatives = d;
}

/// Splits a penalty into groups by how many copies of time-varying parameters its additive
/// terms read, as `ir::prepare` does for the scalar IR: `1e-4 * (sumsq(K) + sumsq(head))`
/// charges a `per layer` `K` once per layer and `head` once.
fn penalty_groups(pool: &mut TensorPool, value: TId, param_copies: &[usize]) -> Vec<(usize, TId)> {
    let mut terms = Vec::new();
    additive_terms(pool, value, 1.0, &mut terms);
    let mut groups: std::collections::BTreeMap<usize, Vec<TId>> = Default::default();
    for (coefficient, term) in terms {
        let mut copies = 1;
        let mut stack = vec![term];
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let TNode::Leaf(Leaf::Param(p)) = pool.node(id) {
                copies = copies.max(param_copies[*p as usize]);
            }
            pool.node(id).for_each_operand(|c| stack.push(c));
        }
        let c = pool.constant(coefficient);
        let scaled = pool.mul(c, term);
        groups.entry(copies).or_default().push(scaled);
    }
    groups
        .into_iter()
        .map(|(copies, terms)| (copies, pool.sum_of(&terms)))
        .collect()
}

/// `value = Σ coefficient · term`, descending through sums and constant multiples.
fn additive_terms(pool: &mut TensorPool, value: TId, scale: f64, out: &mut Vec<(f64, TId)>) {
    match pool.node(value).clone() {
        TNode::Add(children) => {
            for &child in children.iter() {
                additive_terms(pool, child, scale, out);
            }
        }
        TNode::Mul(children) => match pool.uniform_value(children[0]) {
            Some(c) if pool.shape(children[0]) == pool.shape(value) => {
                let rest = pool.product(&children[1..]);
                additive_terms(pool, rest, scale * c, out)
            }
            _ => out.push((scale, value)),
        },
        _ => out.push((scale, value)),
    }
}
