//! The IR verifier: checks the invariants every later stage relies on.
//!
//! [`verify`] checks that children precede parents, that `Add` and `Mul` are in the canonical
//! form the constructors produce, that constants are stored canonically, that no node occurs
//! twice, that every variable names a declared element, and that every root is in the pool and
//! every per-element list has its declaration's length. Tests run it after `prepare`; like
//! cranelift's verifier it reports the first problem with the node's id.

use std::collections::HashSet;

use super::{ExprId, Model, Node, Pool, Var};

/// `Ok` when the model's IR satisfies every invariant, else a description of the first breach.
pub fn verify(model: &Model) -> Result<(), String> {
    verify_pool(&model.pool)?;
    for (i, node) in model.pool.nodes().iter().enumerate() {
        if let Node::Var(v) = node {
            check_var(model, *v).map_err(|e| format!("%{i}: {e}"))?;
        }
    }
    let len = model.pool.len();
    if let Some(r) = model.roots().into_iter().find(|r| r.index() >= len) {
        return Err(format!("root {r} is outside the pool of {len} nodes"));
    }
    for s in &model.states {
        let n = s.shape.len();
        if s.init.len() != n || s.rhs.len() != n {
            return Err(format!(
                "state {} has {} elements but {} initial values and {} equations",
                s.name,
                n,
                s.init.len(),
                s.rhs.len()
            ));
        }
    }
    for o in model.metrics.iter().chain(&model.outputs) {
        if o.value.len() != o.shape.len() {
            return Err(format!(
                "{} has shape {} but {} values",
                o.name,
                o.shape,
                o.value.len()
            ));
        }
    }
    check_derivative_lengths(model)
}

/// The pool-level invariants: ordering, canonical forms, canonical constants, uniqueness.
pub fn verify_pool(pool: &Pool) -> Result<(), String> {
    let mut seen = HashSet::with_capacity(pool.len());
    for (i, node) in pool.nodes().iter().enumerate() {
        let id = ExprId(i as u32);
        let mut early = Ok(());
        node.for_each_operand(|c| {
            if c >= id && early.is_ok() {
                early = Err(format!(
                    "{id} = {} uses {c}, which does not precede it",
                    node.kind()
                ));
            }
        });
        early?;
        match node {
            Node::Add(c) => canonical(pool, id, "add", c, 0.0)?,
            Node::Mul(c) => canonical(pool, id, "mul", c, 1.0)?,
            Node::Const(bits) if *bits == (-0.0f64).to_bits() => {
                return Err(format!("{id} is the constant -0, stored as 0 by the pool"));
            }
            _ => {}
        }
        if !seen.insert(node) {
            return Err(format!("{id} duplicates an earlier node"));
        }
    }
    Ok(())
}

/// An n-ary node: at least two children, at most one constant which comes first and is not
/// the identity `unit`, the rest strictly increasing. Sums are flat. A product with a constant
/// has exactly one other factor; a product may hold another product, but not one with a constant
/// (that constant belongs outside).
fn canonical(pool: &Pool, id: ExprId, kind: &str, c: &[ExprId], unit: f64) -> Result<(), String> {
    if c.len() < 2 {
        return Err(format!("{id} = {kind} has {} operand(s)", c.len()));
    }
    let rest = match pool.const_value(c[0]) {
        Some(v) if v == unit || (kind == "mul" && v == 0.0) => {
            return Err(format!("{id} = {kind} has the trivial constant {v}"));
        }
        Some(_) if kind == "mul" && c.len() != 2 => {
            return Err(format!(
                "{id} = mul has a constant and {} other factors",
                c.len() - 1
            ));
        }
        Some(_) => &c[1..],
        None => c,
    };
    for (j, &x) in rest.iter().enumerate() {
        if pool.const_value(x).is_some() {
            return Err(format!(
                "{id} = {kind} has a constant {x} that is not first"
            ));
        }
        let nested = match (kind, pool.node(x)) {
            ("add", Node::Add(_)) => true,
            ("mul", Node::Mul(inner)) => inner.first().is_some_and(|&f| pool.is_const_node(f)),
            _ => false,
        };
        if nested {
            return Err(format!("{id} = {kind} has a nested {kind} {x}"));
        }
        if j > 0 && rest[j - 1] >= x {
            return Err(format!(
                "{id} = {kind} operands are not strictly increasing"
            ));
        }
    }
    Ok(())
}

fn check_var(model: &Model, var: Var) -> Result<(), String> {
    let in_range = |len: Option<usize>, elem: u32, what: &str, index: u32| match len {
        Some(n) if (elem as usize) < n => Ok(()),
        Some(n) => Err(format!(
            "{what} {index} has {n} elements, not element {elem}"
        )),
        None => Err(format!("there is no {what} {index}")),
    };
    let state = |s: u32| model.states.get(s as usize).map(|d| d.shape.len());
    let param = |p: u32| model.params.get(p as usize).map(|d| d.shape.len());
    match var {
        Var::Time | Var::RunningCotangent => Ok(()),
        Var::State { state: s, elem }
        | Var::StateTangent { state: s, elem }
        | Var::Cotangent { state: s, elem } => in_range(state(s), elem, "state", s),
        Var::Param { param: p, elem } | Var::ParamTangent { param: p, elem } => {
            in_range(param(p), elem, "param", p)
        }
        Var::Input { input, elem } => {
            let len = model.inputs.get(input as usize).map(|d| d.shape.len());
            in_range(len, elem, "input", input)
        }
        Var::Label { label } => in_range(
            model.labels.get(label as usize).map(|_| 1),
            0,
            "label",
            label,
        ),
        Var::Observed { observed, elem } => {
            let len = model.observed.get(observed as usize).map(|d| d.shape.len());
            in_range(len, elem, "observed", observed)
        }
    }
}

/// Derivative lists are either empty (not computed) or have their documented lengths.
fn check_derivative_lengths(model: &Model) -> Result<(), String> {
    let d = &model.derivatives;
    let (nx, np) = (model.state_len(), model.param_len());
    let lists: [(&str, usize, usize); 8] = [
        ("jvp_state", d.jvp_state.len(), nx),
        ("jvp_param", d.jvp_param.len(), nx),
        ("vjp_state", d.vjp_state.len(), nx),
        ("vjp_param", d.vjp_param.len(), np),
        ("rhs_time", d.rhs_time.len(), nx),
        ("init_jvp_param", d.init_jvp_param.len(), nx),
        ("init_vjp_param", d.init_vjp_param.len(), np),
        ("msa_mixed_param", d.msa_mixed_param.len(), np),
    ];
    for (name, len, want) in lists {
        if len != 0 && len != want {
            return Err(format!("derivatives.{name} has {len} entries, not {want}"));
        }
    }
    for c in &d.costs {
        if c.state.len() != nx || c.param.len() != np {
            return Err(format!(
                "the {} cost gradient has the wrong length",
                c.kind.name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_constructor_output_and_rejects_broken_forms() {
        let mut pool = Pool::new();
        let x = pool.var(Var::Time);
        let y = pool.var(Var::Param { param: 0, elem: 0 });
        let s = pool.add(x, y);
        let two = pool.constant(2.0);
        pool.mul(two, s);
        assert_eq!(verify_pool(&pool), Ok(()));

        let mut raw = pool.clone();
        raw.intern(Node::Add(vec![y, x].into_boxed_slice()));
        assert!(verify_pool(&raw)
            .unwrap_err()
            .contains("not strictly increasing"));

        let mut raw = pool.clone();
        raw.intern(Node::Mul(vec![x, two].into_boxed_slice()));
        assert!(verify_pool(&raw).unwrap_err().contains("not first"));

        let mut raw = pool.clone();
        raw.intern(Node::Func(crate::ir::Func::Sin, ExprId(99)));
        assert!(verify_pool(&raw).unwrap_err().contains("does not precede"));
    }

    #[test]
    fn rejects_undeclared_variables() {
        let mut model = Model::default();
        model.pool.var(Var::State { state: 0, elem: 0 });
        assert!(verify(&model).unwrap_err().contains("no state 0"));
    }
}
