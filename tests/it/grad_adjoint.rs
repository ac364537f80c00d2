//! Backprop through adaptive pairs and implicit Euler, and the continuous adjoint of every
//! method: against closed forms, finite differences, each other and Pontryagin's theory.
//!
//! Small test models are written from templates into a temporary folder, so that the number
//! of steps and the method (which `--set` cannot change) vary per test.

use nodec::cli::run::{load, Loaded};
use nodec::cli::Output;
use nodec::data::Dataset;
use nodec::ir::GradientMethod;
use nodec::sema::Overrides;
use nodec::sens::{self, GradientError, GradientOptions};
use nodec::solve::{OptionsError, SolveError};

use crate::grad::{check_against_fd, finite_difference, gradient, load_small};

/// Writes `text` as `NAME.node` into a temporary folder and loads it with its first data set.
fn load_text(name: &str, text: &str) -> (Loaded, Dataset) {
    let dir = std::env::temp_dir().join(format!("nodec-grad-adjoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let path = dir.join(format!("{name}.node"));
    std::fs::write(&path, text).expect("model written");
    let mut out = Output::default();
    let loaded = load(
        path.to_str().unwrap(),
        &Overrides::default(),
        0,
        None,
        &mut out,
    )
    .unwrap_or_else(|| panic!("{name} loads: {}", out.stderr));
    let data = loaded.data[0].1.clone();
    (loaded, data)
}

/// A small neural ODE on 20 moons with a per-layer bias (a breakpoint at t = 1/2), a weight
/// on knots, a running and a terminal cost, under the schedule `schedule`.
fn neural(schedule: &str) -> String {
    neural_with(schedule, "per layer")
}

/// [`neural`] with the bias `s` declared with `kind` (`per layer`, or empty for a constant).
fn neural_with(schedule: &str, kind: &str) -> String {
    format!(
        "model neural
const d = 2
const w = 6
input u[2]
label y
param K1[w, d] ~ normal(0, 0.8)
param b[w] = 0.1
param K2[d, w] ~ normal(0, 0.8)
param s[d] {kind} ~ normal(0, 0.3)
param c on knots(0, 0.5, 1) ~ uniform(0.1, 0.5)
param kappa = 0.1
param head[d] ~ normal(0, 0.5)
state x[d] = u
dx/dt = K2 * tanh(K1 * x + b) + s - c * x
schedule {schedule}
let p = sigmoid(dot(head, x))
cost terminal = bce(p, y)
cost running = 0.05 * sumsq(x)
data train = moons(n = 20, noise = 0.1, seed = 1)
"
    )
}

/// A mass on a nonlinear spring in leapfrog's split form, with a per-layer and a knot
/// parameter and a running cost (a quadrature component outside `q` and `p`).
fn spring(steps: usize) -> String {
    format!(
        "model spring
param a on knots(0, 0.5, 1) ~ uniform(0.8, 1.3)
param m = 0.8
param e per layer ~ uniform(0.05, 0.3)
state q[2] = [1, 0.5]
state p[2] = [0, 1]
dq/dt = p / m
dp/dt = -a * q - e * q^3
schedule leapfrog(t = [0, 1], steps = {steps}, position = q, momentum = p, layers = 2)
cost terminal = sumsq(q) + p[0]
cost running = 0.1 * sumsq(p)
"
    )
}

fn grad_of(l: &Loaded, data: &Dataset, method: GradientMethod) -> Vec<f64> {
    gradient(l, data, method).grad
}

/// `‖a − b‖ / ‖b‖`.
fn rel_gap(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let n: f64 = b.iter().map(|y| y * y).sum::<f64>();
    (d / n).sqrt()
}

#[test]
fn decay_sensitivity_matches_the_closed_form() {
    let (l, data) = load_small("decay.node", &[], 1);
    let exact = -4.0 * 2.0 * (-2.0f64).exp();
    assert_eq!(exact, -1.0826822658929016);
    for method in [GradientMethod::Backprop, GradientMethod::Adjoint] {
        let g = gradient(&l, &data, method);
        assert!(
            (g.grad[0] - exact).abs() < 1e-8,
            "{method:?}: {} vs {exact}",
            g.grad[0]
        );
        assert!(g.stats.vjp_evals > 0 && g.stats.rhs_evals > 0);
    }
}

#[test]
fn decay_fit_gradients_match_finite_differences() {
    let (l, data) = load_small("decay_fit.node", &[], 1);
    for method in [GradientMethod::Backprop, GradientMethod::Adjoint] {
        let g = grad_of(&l, &data, method);
        let fd = finite_difference(&l, &data, 0, 1e-4);
        assert!(
            (g[0] - fd).abs() <= 1e-6 * fd.abs(),
            "{method:?}: {} vs {fd}",
            g[0]
        );
    }
}

#[test]
fn fixed_step_models_adjoint_is_near_the_discrete_gradient() {
    // The continuous adjoint differs from the gradient of the computed (discrete) loss by the
    // schedules' discretization error: tens of percent for 10 Euler or LM steps, far less for
    // RK4. Each bound is a few times the gap measured, and far below 1 (a wrong sign, a
    // missing cost or a wrong layer would break it).
    for (name, tol) in [
        ("resnet_euler.node", 0.3),
        ("lm_resnet.node", 0.5),
        ("evolutionary_weights.node", 2e-2),
        ("circles_anode.node", 1e-2),
        ("cnf_moons.node", 1e-2),
        ("crowd_motion.node", 2e-2),
    ] {
        let (l, data) = load_small(name, &[], 20);
        let adj = grad_of(&l, &data, GradientMethod::Adjoint);
        let bp = grad_of(&l, &data, GradientMethod::Backprop);
        let gap = rel_gap(&adj, &bp);
        assert!(gap < tol, "{name}: relative gap {gap:e} ≥ {tol}");
        check_against_fd(name, &l, &data, &adj, 2.0 * tol, 4);
    }
}

#[test]
fn fixed_step_adjoint_converges_at_each_methods_order() {
    // The gap to the discrete gradient shrinks like h^order when the steps quadruple (per-layer
    // parameters keep two layers, so the parameter vector does not change size). AB2 carries
    // f across a layer boundary, which costs it an order there, forward and backward alike, so
    // it runs without one.
    for (method, order) in [
        ("euler", 1),
        ("midpoint", 2),
        ("heun", 2),
        ("rk4", 4),
        ("ab2", 2),
        ("lm", 1),
        ("implicit_euler", 1),
    ] {
        let extra = if method == "lm" { ", k = kappa" } else { "" };
        let gap = |steps: usize| {
            let text = if method == "ab2" {
                neural_with(&format!("ab2(t = [0, 1], steps = {steps})"), "")
            } else {
                neural(&format!(
                    "{method}(t = [0, 1], steps = {steps}, layers = 2{extra})"
                ))
            };
            let (l, data) = load_text(&format!("neural_{method}_{steps}"), &text);
            let adj = grad_of(&l, &data, GradientMethod::Adjoint);
            let bp = grad_of(&l, &data, GradientMethod::Backprop);
            rel_gap(&adj, &bp)
        };
        let (coarse, fine) = (gap(8), gap(32));
        let ratio = fine / coarse;
        let expected = 0.25f64.powi(order);
        assert!(
            ratio < 2.0 * expected && fine < 0.05,
            "{method}: gap {coarse:e} -> {fine:e} is not order {order}"
        );
    }
    // Leapfrog (symmetric, order 2) on its own split model.
    let gap = |steps: usize| {
        let (l, data) = load_text(&format!("spring_{steps}"), &spring(steps));
        let adj = grad_of(&l, &data, GradientMethod::Adjoint);
        let bp = grad_of(&l, &data, GradientMethod::Backprop);
        rel_gap(&adj, &bp)
    };
    let (coarse, fine) = (gap(8), gap(32));
    assert!(
        fine / coarse < 2.0 / 16.0 && fine < 0.01,
        "leapfrog: {coarse:e} -> {fine:e}"
    );
}

#[test]
fn rk4_adjoint_agrees_with_finite_differences_with_many_steps() {
    let (l, data) = load_text(
        "neural_rk4_400",
        &neural("rk4(t = [0, 1], steps = 400, layers = 2)"),
    );
    let adj = grad_of(&l, &data, GradientMethod::Adjoint);
    let bp = grad_of(&l, &data, GradientMethod::Backprop);
    assert!(rel_gap(&adj, &bp) < 1e-6, "{:e}", rel_gap(&adj, &bp));
    check_against_fd("neural rk4 × 400", &l, &data, &adj, 1e-6, 6);
}

#[test]
fn adaptive_and_stiff_gradients_match_finite_differences() {
    // Breakpoints (per-layer s) are landed on by both solves; knots scatter by time.
    for (schedule, methods, tol) in [
        (
            "dopri5(t = [0, 1], rtol = 1e-10, atol = 1e-10, layers = 2)",
            &[GradientMethod::Backprop, GradientMethod::Adjoint][..],
            1e-6,
        ),
        (
            "tsit5(t = [0, 1], rtol = 1e-10, atol = 1e-10, layers = 2)",
            &[GradientMethod::Backprop, GradientMethod::Adjoint][..],
            1e-6,
        ),
        (
            "bosh3(t = [0, 1], rtol = 1e-9, atol = 1e-9, layers = 2)",
            &[GradientMethod::Backprop, GradientMethod::Adjoint][..],
            1e-5,
        ),
        (
            "rodas4(t = [0, 1], rtol = 1e-9, atol = 1e-9, layers = 2)",
            &[GradientMethod::Adjoint][..],
            1e-5,
        ),
        (
            "bdf(t = [0, 1], rtol = 1e-9, atol = 1e-9, layers = 2)",
            &[GradientMethod::Adjoint][..],
            1e-4,
        ),
    ] {
        let name = schedule.split('(').next().unwrap();
        let (l, data) = load_text(&format!("neural_{name}"), &neural(schedule));
        for method in methods {
            let g = grad_of(&l, &data, *method);
            check_against_fd(&format!("{name} {method:?}"), &l, &data, &g, tol, 6);
        }
    }
}

#[test]
fn stiff_methods_refuse_backprop_and_point_to_the_adjoint() {
    let (l, data) = load_text(
        "neural_rodas4_refuse",
        &neural("rodas4(t = [0, 1], layers = 2)"),
    );
    let e = sens::gradient(
        &l.bind(&data),
        &GradientOptions::new(GradientMethod::Backprop),
    )
    .unwrap_err();
    assert_eq!(
        e,
        GradientError::Solve(SolveError::InvalidOptions(OptionsError::NoBackprop {
            method: "rodas4"
        }))
    );
    assert!(e.to_string().contains("--method adjoint"), "{e}");
}

#[test]
fn adaptive_backprop_is_the_derivative_of_the_discrete_map() {
    // With a negligible atol the controller is scale-invariant for a linear field, so scaling
    // the initial value does not change the accepted steps: finite differences in `a` see the
    // discrete map with frozen steps, which differs from the exact flow at rtol = 1e-5.
    let (l, data) = load_text(
        "decay_scale",
        "model decay_scale
param k = 0.5
param a = 1
state x = 2 * a
dx/dt = -k * x
schedule bosh3(t = [0, 4], rtol = 1e-5, atol = 1e-30)
cost terminal = x
",
    );
    let g = gradient(&l, &data, GradientMethod::Backprop);
    let fd = finite_difference(&l, &data, 1, 1e-3);
    let exact = 2.0 * (-2.0f64).exp();
    assert!((g.grad[1] - fd).abs() < 1e-12, "{} vs {fd}", g.grad[1]);
    // ... and it is not the exact flow's derivative (the discretization error is visible).
    assert!((g.grad[1] - exact).abs() > 1e-7, "{} vs {exact}", g.grad[1]);
    // The initial cotangent is the discrete map's too.
    assert!((g.initial_cotangent[0] - fd / 2.0).abs() < 1e-12);
}

#[test]
fn gradients_are_bit_identical_for_one_and_two_threads() {
    let text = neural("dopri5(t = [0, 1], rtol = 1e-7, atol = 1e-7, layers = 2)")
        .replace("moons(n = 20", "moons(n = 100");
    let (l, data) = load_text("neural_threads", &text);
    for method in [GradientMethod::Backprop, GradientMethod::Adjoint] {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| gradient(&l, &data, method))
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one.grad, two.grad, "{method:?}");
        assert_eq!(one.initial_cotangent, two.initial_cotangent, "{method:?}");
        // The forward states are the plain solve's.
        let t1 = l.model.schedule.as_ref().unwrap().t1;
        let plain = l.bind(&data).simulate(Some(vec![t1])).expect("solves");
        assert_eq!(one.simulation.solution.y, plain.solution.y, "{method:?}");
        assert_eq!(one.simulation.loss, plain.loss, "{method:?}");
    }
}

#[test]
fn implicit_euler_backprop_matches_finite_differences() {
    let (l, data) = load_text(
        "neural_implicit",
        &neural("implicit_euler(t = [0, 1], steps = 20, layers = 2)"),
    );
    let g = grad_of(&l, &data, GradientMethod::Backprop);
    check_against_fd("implicit_euler backprop", &l, &data, &g, 1e-6, 8);
}

#[test]
fn costates_satisfy_pontryagins_identities() {
    // An autonomous field with constant weights and only a terminal cost: H = p·f is constant
    // along the trajectory, p(T) = −∂Φ/∂x(T), and p(0) = −∂loss/∂x(0).
    let (l, data) = load_text(
        "pendulum",
        "model pendulum
param w = 1.3
param d = 0.2
state x = 1
state v = 0.3
dx/dt = v
dv/dt = -w * w * sin(x) - d * v
schedule dopri5(t = [0, 3], rtol = 1e-11, atol = 1e-11, save = 0.25)
cost terminal = x * x + v
",
    );
    let mut options = GradientOptions::new(GradientMethod::Adjoint);
    options.costates = true;
    let g = sens::gradient(&l.bind(&data), &options).expect("adjoint");
    let c = g.costates.as_ref().expect("costates");
    let n_save = c.t.len();
    assert_eq!(n_save, 13);
    let h0 = c.hamiltonian[0];
    for k in 0..n_save {
        assert!(
            (c.hamiltonian[k] - h0).abs() < 1e-8 * h0.abs().max(1.0),
            "H at t = {}: {} vs {h0}",
            c.t[k],
            c.hamiltonian[k]
        );
    }
    // The Hamiltonian is not trivially constant: p changes along the path.
    assert!((c.p[0] - c.p[(n_save - 1) * 2]).abs() > 0.1);
    let y_t = g.simulation.solution.final_state(0);
    let p_t = &c.p[(n_save - 1) * 2..];
    assert!((p_t[0] + 2.0 * y_t[0]).abs() < 1e-12, "{p_t:?} {y_t:?}");
    assert!((p_t[1] + 1.0).abs() < 1e-12, "{p_t:?}");
    let bp = gradient(&l, &data, GradientMethod::Backprop);
    for i in 0..2 {
        assert!(
            (c.p[i] + bp.initial_cotangent[i]).abs() < 1e-8,
            "p(0) = {:?} vs backprop {:?}",
            &c.p[..2],
            bp.initial_cotangent
        );
        assert!((g.initial_cotangent[i] - bp.initial_cotangent[i]).abs() < 1e-8);
    }
    // Backprop's costates agree with the adjoint's at t0 and t1, the nodes of both (between
    // steps backprop's are linear interpolations of its nodes' costates).
    let mut bp_options = GradientOptions::new(GradientMethod::Backprop);
    bp_options.costates = true;
    let bpc = sens::gradient(&l.bind(&data), &bp_options)
        .expect("backprop")
        .costates
        .expect("costates");
    for i in (0..2).chain(2 * (n_save - 1)..2 * n_save) {
        assert!((c.p[i] - bpc.p[i]).abs() < 1e-8, "{:?} vs {:?}", c.p, bpc.p);
    }
}
