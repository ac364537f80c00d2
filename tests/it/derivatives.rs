//! Symbolic derivatives of every model: against central finite differences of the interpreted
//! IR, and JVP against VJP by the dot-product test.
//!
//! Tolerances: central differences with `h = 1e-6·(1 + |x|)` have truncation error O(h²·f''')
//! and rounding error O(ε·|f|/h) ≈ 1e-10·|f|, so 1e-7 relative (with an absolute floor of 1e-7
//! scaled by the size of the values involved) holds with a wide margin. The dot-product test
//! compares two exact evaluations of the same bilinear form, so it holds to rounding, 1e-12.

use nodec::ir::{self, ExprId, Model, ParamInit, Point, Shape, Var};

use crate::support::{load_model, node_files, Lcg};

/// A point where every model is smooth: states positive and moderate, params at their declared
/// values or small random ones, labels in {0, 1}.
pub(crate) fn random_point(model: &Model, rng: &mut Lcg) -> Point {
    Point {
        t: 0.3,
        states: model
            .states
            .iter()
            .map(|s| rng.fill(s.shape.len(), 0.2, 1.2))
            .collect(),
        params: model
            .params
            .iter()
            .map(|p| match &p.init {
                ParamInit::Values(v) if v.iter().any(|x| *x != 0.0) => v.clone(),
                _ => rng.fill(p.shape.len(), -0.5, 0.5),
            })
            .collect(),
        inputs: model
            .inputs
            .iter()
            .map(|i| rng.fill(i.shape.len(), -1.0, 1.0))
            .collect(),
        labels: model.labels.iter().map(|_| 1.0).collect(),
        observed: model
            .observed
            .iter()
            .map(|o| rng.fill(o.shape.len(), -1.0, 1.0))
            .collect(),
        ..Point::default()
    }
}

fn rhs_roots(model: &Model) -> Vec<ExprId> {
    model
        .states
        .iter()
        .flat_map(|s| s.rhs.iter().copied())
        .collect()
}

/// (state, element) of every flat state index.
fn state_slots(model: &Model) -> Vec<(usize, usize)> {
    model
        .states
        .iter()
        .enumerate()
        .flat_map(|(s, st)| (0..st.shape.len()).map(move |e| (s, e)))
        .collect()
}

fn param_slots(model: &Model) -> Vec<(usize, usize)> {
    model
        .params
        .iter()
        .enumerate()
        .flat_map(|(p, pr)| (0..pr.shape.len()).map(move |e| (p, e)))
        .collect()
}

fn shaped_like(template: &[Vec<f64>], flat: &[f64]) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    let mut k = 0;
    for row in template {
        out.push(flat[k..k + row.len()].to_vec());
        k += row.len();
    }
    out
}

fn close(fd: f64, exact: f64, scale: f64, what: &str) {
    let tol = 1e-7 * (1.0 + exact.abs() + scale);
    assert!(
        (fd - exact).abs() <= tol,
        "{what}: finite difference {fd} vs symbolic {exact} (tolerance {tol})"
    );
}

/// Central difference of `roots` in direction of one variable slot.
fn central(
    model: &Model,
    point: &Point,
    roots: &[ExprId],
    bump: &dyn Fn(&mut Point, f64),
    x: f64,
) -> Vec<f64> {
    let h = 1e-6 * (1.0 + x.abs());
    let mut plus = point.clone();
    bump(&mut plus, h);
    let mut minus = point.clone();
    bump(&mut minus, -h);
    let fp = plus.eval(&model.pool, roots);
    let fm = minus.eval(&model.pool, roots);
    fp.iter()
        .zip(&fm)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect()
}

fn check_model(name: &str) {
    let model = load_model(name);
    ir::verify(&model).unwrap_or_else(|e| panic!("{name}: {e}"));
    let d = &model.derivatives;
    let rhs = rhs_roots(&model);
    let states = state_slots(&model);
    let params = param_slots(&model);
    let mut rng = Lcg(0x5eed ^ name.len() as u64);
    let point = random_point(&model, &mut rng);
    let f0 = point.eval(&model.pool, &rhs);
    let scale = f0.iter().fold(0.0f64, |m, v| m.max(v.abs())) * 1e-3;

    // Jacobian columns with respect to each state element: JVP with a unit direction.
    for (j, &(s, e)) in states.iter().enumerate() {
        let mut at = point.clone();
        at.state_tangents = point.states.iter().map(|r| vec![0.0; r.len()]).collect();
        at.state_tangents[s][e] = 1.0;
        let column = at.eval(&model.pool, &d.jvp_state);
        let x = point.states[s][e];
        let fd = central(&model, &point, &rhs, &|p, h| p.states[s][e] += h, x);
        for k in 0..rhs.len() {
            close(fd[k], column[k], scale, &format!("{name}: ∂f[{k}]/∂x[{j}]"));
        }
    }
    // Columns with respect to each parameter element.
    for (j, &(p, e)) in params.iter().enumerate() {
        let mut at = point.clone();
        at.param_tangents = point.params.iter().map(|r| vec![0.0; r.len()]).collect();
        at.param_tangents[p][e] = 1.0;
        let column = at.eval(&model.pool, &d.jvp_param);
        let x = point.params[p][e];
        let fd = central(&model, &point, &rhs, &|pt, h| pt.params[p][e] += h, x);
        for k in 0..rhs.len() {
            close(fd[k], column[k], scale, &format!("{name}: ∂f[{k}]/∂θ[{j}]"));
        }
    }
    // Cost gradients.
    for cost in &d.costs {
        let roots = [cost.value];
        for (j, &(s, e)) in states.iter().enumerate() {
            let exact = point.eval(&model.pool, &cost.state[j..=j])[0];
            let fd = central(
                &model,
                &point,
                &roots,
                &|p, h| p.states[s][e] += h,
                point.states[s][e],
            );
            close(
                fd[0],
                exact,
                0.0,
                &format!("{name}: ∂{}/∂x[{j}]", cost.kind.name()),
            );
        }
        for (j, &(p, e)) in params.iter().enumerate() {
            let exact = point.eval(&model.pool, &cost.param[j..=j])[0];
            let fd = central(
                &model,
                &point,
                &roots,
                &|pt, h| pt.params[p][e] += h,
                point.params[p][e],
            );
            close(
                fd[0],
                exact,
                0.0,
                &format!("{name}: ∂{}/∂θ[{j}]", cost.kind.name()),
            );
        }
    }
    // Dot-product test: ⟨w, J v⟩ = ⟨Jᵀ w, v⟩ for states and params.
    let mut at = point.clone();
    let v = rng.fill(states.len(), -1.0, 1.0);
    let u = rng.fill(params.len(), -1.0, 1.0);
    let w = rng.fill(rhs.len(), -1.0, 1.0);
    at.state_tangents = shaped_like(&point.states, &v);
    at.param_tangents = shaped_like(&point.params, &u);
    at.cotangents = shaped_like(&point.states, &w);
    let jv = at.eval(&model.pool, &d.jvp_state);
    let ju = at.eval(&model.pool, &d.jvp_param);
    let jtw = at.eval(&model.pool, &d.vjp_state);
    let jtw_param = at.eval(&model.pool, &d.vjp_param);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for (lhs, rhs_value, what) in [
        (dot(&w, &jv), dot(&jtw, &v), "states"),
        (dot(&w, &ju), dot(&jtw_param, &u), "params"),
    ] {
        let tol = 1e-12 * (1.0 + lhs.abs().max(rhs_value.abs()));
        assert!(
            (lhs - rhs_value).abs() <= tol.max(1e-12 * scale * 1e3),
            "{name}: dot-product test for {what}: {lhs} vs {rhs_value}"
        );
    }
}

#[test]
fn symbolic_derivatives_match_finite_differences_on_every_model() {
    let files = node_files("models");
    assert!(!files.is_empty());
    for path in files {
        check_model(&path.file_name().unwrap().to_string_lossy());
    }
}

/// The CNF's `dlogdet/dt = div(field, z)` must equal the trace of the field's Jacobian, taken
/// here by finite differences of `dz/dt`: an independent check of `div` as `sema` lowers it.
#[test]
fn cnf_divergence_is_the_trace_of_the_field_jacobian() {
    let model = load_model("cnf_moons.node");
    let mut rng = Lcg(7);
    let point = random_point(&model, &mut rng);
    let z = &model.states[0];
    assert_eq!(z.shape, Shape::Vector(2));
    let logdet_rate = point.eval(&model.pool, &model.states[1].rhs)[0];
    let mut trace = 0.0;
    for i in 0..2 {
        let x = point.states[0][i];
        let fd = central(&model, &point, &z.rhs, &|p, h| p.states[0][i] += h, x);
        trace += fd[i];
    }
    close(trace, logdet_rate, 0.0, "div(field, z)");
}

/// crowd_motion's velocity is `-grad(Phi, z)`, so its Jacobian is minus a Hessian: symmetric.
#[test]
fn a_gradient_field_has_a_symmetric_jacobian() {
    let model = load_model("crowd_motion.node");
    let d = &model.derivatives;
    let mut rng = Lcg(11);
    let point = random_point(&model, &mut rng);
    let mut jac = [[0.0; 2]; 2];
    for (j, column) in jac.iter_mut().enumerate() {
        let mut at = point.clone();
        at.state_tangents = vec![vec![0.0; 2]];
        at.state_tangents[0][j] = 1.0;
        let col = at.eval(&model.pool, &d.jvp_state);
        column.copy_from_slice(&col);
    }
    let asym = (jac[0][1] - jac[1][0]).abs();
    assert!(asym <= 1e-12 * (1.0 + jac[0][1].abs()), "{jac:?}");
}

/// `grad(e, t)` is the partial derivative in the explicit time only.
#[test]
fn time_partial_ignores_the_states() {
    let model = load_model("cnf_moons.node");
    let d = &model.derivatives;
    let mut rng = Lcg(3);
    let point = random_point(&model, &mut rng);
    let exact = point.eval(&model.pool, &d.rhs_time);
    let rhs = rhs_roots(&model);
    let fd = central(&model, &point, &rhs, &|p, h| p.t += h, point.t);
    for k in 0..rhs.len() {
        close(fd[k], exact[k], 0.0, &format!("∂f[{k}]/∂t"));
    }
    let _ = Var::Time;
}
