//! The symbolic adjoint (costate) equations of Pontryagin's principle, built from the
//! derivative IR, for `nodec ir --adjoint`.
//!
//! Sign convention (Pontryagin's): `H = p·f − L`, so
//! `dp/dt = −∂H/∂x = −(∂f/∂x)ᵀ p + ∂L/∂x` with `p(T) = −∂Φ/∂x(T)` for the terminal cost `Φ`,
//! and the loss gradient is `dJ/dθ = −∫ ∂H/∂θ dt = ∫ (−pᵀ ∂f/∂θ + ∂L/∂θ) dt` (plus the penalty's
//! gradient and, for parameters of the initial state, `−pᵀ(0) ∂x₀/∂θ`). The costate of a state
//! is the `Var::Cotangent` leaf of that state, so `vjp_state` is `(∂f/∂x)ᵀ p`.

use std::fmt::Write as _;

use super::print::{element, print_nodes};
use super::{CostKind, ExprId, Model};

/// The adjoint system's roots, one per state element or parameter element.
#[derive(Clone, Debug, PartialEq)]
pub struct Adjoint {
    /// `dp/dt` per state element.
    pub costate_rhs: Vec<ExprId>,
    /// `p(T) = −∂Φ/∂x(T)` per state element.
    pub costate_final: Vec<ExprId>,
    /// `−pᵀ ∂f/∂θ + ∂L/∂θ` per parameter element: integrated over time, the loss gradient.
    pub param_integrand: Vec<ExprId>,
}

/// Builds the adjoint roots in the model's pool from its prepared derivative IR.
pub fn adjoint(model: &mut Model) -> Adjoint {
    let d = model.derivatives.clone();
    let running = d.cost(CostKind::Running).cloned();
    let terminal = d.cost(CostKind::Terminal).cloned();
    let pool = &mut model.pool;
    let costate_rhs = d
        .vjp_state
        .iter()
        .enumerate()
        .map(|(j, &vjp)| {
            let minus = pool.neg(vjp);
            match &running {
                Some(l) => pool.add(minus, l.state[j]),
                None => minus,
            }
        })
        .collect();
    let costate_final = (0..d.vjp_state.len())
        .map(|j| match &terminal {
            Some(phi) => pool.neg(phi.state[j]),
            None => pool.constant(0.0),
        })
        .collect();
    let param_integrand = d
        .vjp_param
        .iter()
        .enumerate()
        .map(|(j, &vjp)| {
            let minus = pool.neg(vjp);
            match &running {
                Some(l) => pool.add(minus, l.param[j]),
                None => minus,
            }
        })
        .collect();
    Adjoint {
        costate_rhs,
        costate_final,
        param_integrand,
    }
}

/// The text of `nodec ir --adjoint`: the convention, the nodes, then the named roots.
pub fn print_adjoint(model: &Model, adjoint: &Adjoint) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "adjoint of model {}", model.name);
    let _ = writeln!(
        out,
        "// H = p·f − L;  dp/dt = −(∂f/∂x)ᵀ p + ∂L/∂x;  p(T) = −∂Φ/∂x(T)"
    );
    let _ = writeln!(
        out,
        "// dJ/dθ = ∫ (−pᵀ ∂f/∂θ + ∂L/∂θ) dt;  `cotangent x` is the costate p of x"
    );
    out.push('\n');
    let mut roots = adjoint.costate_rhs.clone();
    roots.extend(&adjoint.costate_final);
    roots.extend(&adjoint.param_integrand);
    print_nodes(model, &roots, &mut out);
    out.push('\n');
    let states: Vec<String> = model
        .states
        .iter()
        .flat_map(|s| (0..s.shape.len()).map(|e| element(&s.name, s.shape, e)))
        .collect();
    for (name, id) in states.iter().zip(&adjoint.costate_rhs) {
        let _ = writeln!(out, "dp_{name}/dt = {id}");
    }
    for (name, id) in states.iter().zip(&adjoint.costate_final) {
        let _ = writeln!(out, "p_{name}(T) = {id}");
    }
    let params = model
        .params
        .iter()
        .flat_map(|p| (0..p.shape.len()).map(|e| element(&p.name, p.shape, e)));
    for (name, id) in params.zip(&adjoint.param_integrand) {
        let _ = writeln!(out, "grad_integrand {name} = {id}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SourceFile;
    use crate::ir::Point;
    use crate::sema::Overrides;

    /// Decay, f = −k x, Φ = x: dp/dt = k p, p(T) = −1, integrand −p·(−x) = p x.
    #[test]
    fn decay_adjoint_by_hand() {
        let text = "param k = 0.5\nstate x = 2.0\ndx/dt = -k * x\n\
                    schedule dopri5(t = [0, 4])\ncost terminal = x\n";
        let file = SourceFile::new("d.node", text);
        let (model, diags) = crate::check_source(&file, &Overrides::default(), "d");
        assert!(!diags.has_errors());
        let mut model = crate::prepare(model);
        let a = adjoint(&mut model);
        let point = Point {
            t: 1.0,
            states: vec![vec![3.0]],
            params: vec![vec![0.5]],
            cotangents: vec![vec![2.0]],
            ..Point::default()
        };
        assert_eq!(point.eval(&model.pool, &a.costate_rhs), [1.0]);
        assert_eq!(point.eval(&model.pool, &a.costate_final), [-1.0]);
        assert_eq!(point.eval(&model.pool, &a.param_integrand), [6.0]);
    }

    /// A running cost L = x²/2 adds ∂L/∂x = x to dp/dt.
    #[test]
    fn running_costs_enter_the_costate_equation() {
        let text = "param k = 0.5\nstate x = 2.0\ndx/dt = -k * x\n\
                    schedule rk4(t = [0, 1], steps = 4)\ncost running = 0.5 * x^2\n";
        let file = SourceFile::new("r.node", text);
        let (model, _) = crate::check_source(&file, &Overrides::default(), "r");
        let mut model = crate::prepare(model);
        let a = adjoint(&mut model);
        let point = Point {
            t: 0.0,
            states: vec![vec![3.0]],
            params: vec![vec![0.5]],
            cotangents: vec![vec![2.0]],
            ..Point::default()
        };
        // k p + x = 1 + 3; p(T) = 0 without a terminal cost.
        assert_eq!(point.eval(&model.pool, &a.costate_rhs), [4.0]);
        assert_eq!(point.eval(&model.pool, &a.costate_final), [0.0]);
    }
}
