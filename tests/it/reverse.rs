//! Reverse time: `t = [T1, T0]` with `T1 > T0` integrates backward with every schedule method.
//! Against closed forms (decay there and back, polynomial fields with per-layer and knot
//! parameters), the observed order of the fixed-step methods, and finite differences of the
//! loss for every gradient method.

use nodec::cli::run::Loaded;
use nodec::data::Dataset;
use nodec::ir::GradientMethod;
use nodec::sens::{self, GradientOptions};

use crate::grad::{check_against_fd, finite_difference, load_path};
use crate::support::{nodec, root};

/// Writes `text` as `NAME.node` in a folder of its own under `target/` (with the series file
/// of `models/data/` beside it, so relative data paths resolve) and loads it.
fn load_text(name: &str, text: &str) -> (Loaded, Dataset) {
    let path = write(name, text);
    load_path(&path, &[], usize::MAX)
}

fn write(name: &str, text: &str) -> String {
    let dir = root().join("target/reverse-tmp").join(name);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let csv = "decay_obs.csv";
    std::fs::copy(
        root().join("models/data").join(csv),
        dir.join("data").join(csv),
    )
    .unwrap();
    let path = dir.join(format!("{name}.node"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Save times and the single sample's first state component at each.
fn trajectory(l: &Loaded, data: &Dataset) -> (Vec<f64>, Vec<f64>) {
    let sim = l.bind(data).simulate(None).expect("solves");
    let s = &sim.solution;
    let x = (0..s.t.len()).map(|k| s.state(k, 0)[0]).collect();
    (s.t.clone(), x)
}

/// Decay `dx/dt = −k x` from `x0` over `t = [a, b]` under `schedule` (its arguments after `t`).
fn decay(x0: f64, a: f64, b: f64, schedule: &str) -> String {
    format!(
        "model decay\nparam k = 0.5\nstate x = {x0}\ndx/dt = -k * x\nschedule {schedule}\ncost terminal = x\n",
        schedule = schedule
            .replace("{a}", &a.to_string())
            .replace("{b}", &b.to_string())
            .replace("{x0}", &x0.to_string()),
    )
}

const ADAPTIVE: [&str; 5] = ["bosh3", "dopri5", "tsit5", "rodas4", "bdf"];

#[test]
fn decay_run_backward_returns_to_its_start_with_every_adaptive_method() {
    let (x0, big_t, k) = (2.0, 4.0, 0.5);
    for method in ADAPTIVE {
        let schedule = format!("{method}(t = [{{a}}, {{b}}], rtol = 1e-13, atol = 1e-15)");
        let (l, data) = load_text(
            &format!("there_{method}"),
            &decay(x0, 0.0, big_t, &schedule),
        );
        let (_, x) = trajectory(&l, &data);
        let x_t = *x.last().unwrap();
        // Backward from the computed end, saving every half unit on the way down.
        let schedule =
            format!("{method}(t = [{{a}}, {{b}}], rtol = 1e-13, atol = 1e-15, save = 0.5)");
        let (l, data) = load_text(
            &format!("back_{method}"),
            &decay(x_t, big_t, 0.0, &schedule),
        );
        let (t, x) = trajectory(&l, &data);
        let expected_t: Vec<f64> = (0..=8).map(|i| big_t - 0.5 * i as f64).collect();
        assert_eq!(t, expected_t, "{method}: save times run backward");
        let back = *x.last().unwrap();
        assert!(
            ((back - x0) / x0).abs() < 1e-10,
            "{method}: back at {back}, started at {x0}"
        );
        // The backward solution is x(t) = x_T exp(−k (t − T)) at every save time.
        for (t, x) in t.iter().zip(&x) {
            let exact = x_t * (-k * (t - big_t)).exp();
            assert!(
                ((x - exact) / exact).abs() < 1e-10,
                "{method}: x({t}) = {x}, exact {exact}"
            );
        }
    }
}

/// `log2(e_N / e_2N)` for the error of `x(0)` of decay run backward from `T = 2` with `N`
/// steps of `method`, against the closed form; `lm` converges to `dx/dt = −k x / (1 + κ)`.
fn observed_orders(method: &str, extra: &str, rate: f64, steps: &[usize]) -> Vec<f64> {
    let (big_t, x_t) = (2.0, 0.75);
    let exact = x_t * (rate * big_t).exp();
    let errors: Vec<f64> = steps
        .iter()
        .map(|n| {
            let schedule = format!("{method}(t = [{{a}}, {{b}}], steps = {n}{extra})");
            let mut text = decay(x_t, big_t, 0.0, &schedule);
            if method == "lm" {
                text = text.replace("param k = 0.5", "param k = 0.5\nparam kappa = 0.25");
            }
            let (l, data) = load_text(&format!("order_{method}_{n}"), &text);
            let (t, x) = trajectory(&l, &data);
            assert_eq!(t.first(), Some(&big_t));
            assert_eq!(t.last(), Some(&0.0));
            assert!(t.windows(2).all(|w| w[1] < w[0]), "{method}: {t:?}");
            (x.last().unwrap() - exact).abs()
        })
        .collect();
    errors.windows(2).map(|e| (e[0] / e[1]).log2()).collect()
}

#[test]
fn fixed_step_methods_backward_converge_at_their_order() {
    let k = 0.5;
    for (method, p, extra, steps) in [
        ("euler", 1.0, "", vec![64, 128, 256, 512]),
        ("midpoint", 2.0, "", vec![16, 32, 64, 128]),
        ("heun", 2.0, "", vec![16, 32, 64, 128]),
        ("ab2", 2.0, "", vec![16, 32, 64, 128]),
        ("rk4", 4.0, "", vec![8, 16, 32, 64]),
        ("implicit_euler", 1.0, "", vec![64, 128, 256, 512]),
    ] {
        let orders = observed_orders(method, extra, k, &steps);
        for o in &orders {
            assert!(
                (o - p).abs() < 0.1,
                "{method}: observed orders {orders:?}, expected {p}"
            );
        }
    }
    // LM-ResNet's two-step scheme converges (at order 1) to the field divided by 1 + κ.
    let orders = observed_orders("lm", ", k = kappa", k / 1.25, &[64, 128, 256, 512]);
    for o in &orders {
        assert!((o - 1.0).abs() < 0.1, "lm: observed orders {orders:?}");
    }
}

#[test]
fn leapfrog_backward_converges_at_order_two() {
    // q' = p, p' = −q from (q, p)(T) = (cos T, −sin T) back to (1, 0) at t = 0.
    let big_t = 3.0f64;
    let errors: Vec<f64> = [16, 32, 64, 128]
        .iter()
        .map(|n| {
            let text = format!(
                "model spring\nstate q = {}\nstate p = {}\ndq/dt = p\ndp/dt = -q\n\
                 schedule leapfrog(t = [{big_t}, 0], steps = {n}, position = q, momentum = p)\n\
                 cost terminal = q\n",
                big_t.cos(),
                -big_t.sin()
            );
            let (l, data) = load_text(&format!("leapfrog_{n}"), &text);
            let sim = l.bind(&data).simulate(None).unwrap();
            let y = sim.solution.final_state(0);
            ((y[0] - 1.0).powi(2) + y[1].powi(2)).sqrt()
        })
        .collect();
    for e in errors.windows(2) {
        let o = (e[0] / e[1]).log2();
        assert!((o - 2.0).abs() < 0.1, "leapfrog: errors {errors:?}");
    }
}

/// A field `dx/dt = a(t) t + c(t) t²` with `a` per layer (two layers) and `c` on knots at 0
/// and 1, run backward over `[1, 0]`: a polynomial, so every method but Euler-like ones is
/// exact up to rounding, and `x(0) = x(1) − 3/8 a₀ − 1/8 a₁ − c₀/12 − c₁/4` with layer 0 the
/// first in integration order (`[1/2, 1]`).
fn layered(schedule: &str) -> String {
    format!(
        "model layered\nparam a per layer = 1\nparam c on knots(0, 1) = 1\nstate x = 1\n\
         dx/dt = a * t + c * t^2\nschedule {schedule}\ncost terminal = x\n"
    )
}

#[test]
fn per_layer_and_knot_parameters_follow_the_direction_of_integration() {
    // ∂x(0)/∂(a₀, a₁, c₀, c₁): layer 0 is [1/2, 1], where integration starts.
    let exact = [-0.375, -0.125, -1.0 / 12.0, -0.25];
    for schedule in [
        "dopri5(t = [1, 0], rtol = 1e-12, atol = 1e-14, layers = 2)",
        "tsit5(t = [1, 0], rtol = 1e-12, atol = 1e-14, layers = 2)",
        "rodas4(t = [1, 0], rtol = 1e-12, atol = 1e-14, layers = 2)",
        "rk4(t = [1, 0], steps = 8, layers = 2)",
    ] {
        let name = schedule.split('(').next().unwrap();
        let (l, data) = load_text(&format!("layered_{name}"), &layered(schedule));
        let (_, x) = trajectory(&l, &data);
        let x0 = 1.0 + exact.iter().sum::<f64>();
        assert!((x.last().unwrap() - x0).abs() < 1e-11, "{name}: {x:?}");
        let methods: &[GradientMethod] = if name == "rodas4" {
            &[GradientMethod::Adjoint, GradientMethod::Forward]
        } else {
            &[
                GradientMethod::Backprop,
                GradientMethod::Adjoint,
                GradientMethod::Forward,
            ]
        };
        for &method in methods {
            let g = sens::gradient(&l.bind(&data), &GradientOptions::new(method)).unwrap();
            for (i, (g, e)) in g.grad.iter().zip(exact).enumerate() {
                assert!(
                    (g - e).abs() < 1e-9,
                    "{name} {method:?}: coordinate {i}: {g} vs {e}"
                );
            }
        }
    }
    // Euler's steps start at 1 and 1/2 (the second just below the layer boundary, in layer 1):
    // x(0) = x(1) − 1/2 (a₀ + c(1)) − 1/2 (a₁ / 2 + c(1/2) / 4).
    let (l, data) = load_text("layered_euler", &layered("euler(t = [1, 0], steps = 2)"));
    let exact = [-0.5, -0.25, -1.0 / 16.0, -0.5 - 1.0 / 16.0];
    for method in [GradientMethod::Backprop, GradientMethod::Forward] {
        let g = sens::gradient(&l.bind(&data), &GradientOptions::new(method)).unwrap();
        for (i, (g, e)) in g.grad.iter().zip(exact).enumerate() {
            assert!(
                (g - e).abs() < 1e-14,
                "euler {method:?}: coordinate {i}: {g} vs {e}"
            );
        }
    }
}

#[test]
fn running_costs_are_charged_on_elapsed_time() {
    // dx/dt = 0 from x = 3 over [2, 0]: ∫ x² |dt| = 18 whichever the direction.
    for (name, span) in [("forward", "[0, 2]"), ("backward", "[2, 0]")] {
        let text = format!(
            "model still\nstate x = 3\ndx/dt = 0 * x\nschedule rk4(t = {span}, steps = 4)\ncost running = x^2\n"
        );
        let (l, data) = load_text(&format!("running_{name}"), &text);
        let loss = l.bind(&data).simulate(None).unwrap().loss;
        assert!((loss - 18.0).abs() < 1e-12, "{name}: {loss}");
    }
}

/// A small neural ODE on 20 moons run backward over `[1, 0]`, with a per-layer bias, a weight
/// on knots, a running and a terminal cost.
fn neural(schedule: &str) -> String {
    format!(
        "model neural
input u[2]
label y
param K1[5, 2] ~ normal(0, 0.8)
param b[5] = 0.1
param K2[2, 5] ~ normal(0, 0.8)
param s[2] per layer ~ normal(0, 0.3)
param c on knots(0, 0.5, 1) ~ uniform(0.1, 0.5)
param head[2] ~ normal(0, 0.5)
state x[2] = u
dx/dt = K2 * tanh(K1 * x + b) + s - c * x
schedule {schedule}
cost terminal = bce(sigmoid(dot(head, x)), y)
cost running = 0.05 * sumsq(x)
data train = moons(n = 20, noise = 0.1, seed = 1)
"
    )
}

#[test]
fn backward_gradients_match_finite_differences_with_every_gradient_method() {
    // (schedule, methods, tolerance): backprop and forward differentiate the computed loss;
    // the continuous adjoint approximates it to the accuracy of the solves.
    let exact = [GradientMethod::Backprop, GradientMethod::Forward];
    let all = [
        GradientMethod::Backprop,
        GradientMethod::Adjoint,
        GradientMethod::Forward,
    ];
    let cases: [(&str, &[GradientMethod], f64); 9] = [
        ("euler(t = [1, 0], steps = 8, layers = 2)", &exact, 1e-7),
        ("rk4(t = [1, 0], steps = 6, layers = 2)", &all, 1e-5),
        ("ab2(t = [1, 0], steps = 8, layers = 2)", &exact, 1e-7),
        (
            "implicit_euler(t = [1, 0], steps = 8, layers = 2)",
            &exact,
            1e-7,
        ),
        (
            "bosh3(t = [1, 0], rtol = 1e-9, atol = 1e-11, layers = 2)",
            &all,
            1e-5,
        ),
        (
            "dopri5(t = [1, 0], rtol = 1e-10, atol = 1e-12, layers = 2)",
            &all,
            1e-6,
        ),
        (
            "tsit5(t = [1, 0], rtol = 1e-10, atol = 1e-12, layers = 2)",
            &all,
            1e-6,
        ),
        (
            "rodas4(t = [1, 0], rtol = 1e-10, atol = 1e-12, layers = 2)",
            &[GradientMethod::Adjoint, GradientMethod::Forward],
            1e-5,
        ),
        (
            "bdf(t = [1, 0], rtol = 1e-10, atol = 1e-12, layers = 2)",
            &[GradientMethod::Adjoint, GradientMethod::Forward],
            1e-4,
        ),
    ];
    for (schedule, methods, tol) in cases {
        let name = schedule.split('(').next().unwrap();
        let (l, data) = load_text(&format!("neural_{name}"), &neural(schedule));
        for &method in methods {
            let g = sens::gradient(&l.bind(&data), &GradientOptions::new(method))
                .unwrap_or_else(|e| panic!("{name} {method:?}: {e}"));
            // The continuous adjoint and the adaptive methods' forward sensitivities solve
            // other equations than the computed loss's: judge them at their own accuracy.
            let tol = match (method, name) {
                (GradientMethod::Backprop, _) => 1e-7,
                (GradientMethod::Forward, "euler" | "rk4" | "ab2" | "implicit_euler") => 1e-7,
                _ => tol,
            };
            check_against_fd(&format!("{name} {method:?}"), &l, &data, &g.grad, tol, 6);
        }
    }
}

#[test]
fn a_series_is_observed_backward_in_integration_order() {
    // decay_fit's observations of x(t) = 2 exp(−t/2), solved from x(4) down to t = 0.
    let text = std::fs::read_to_string(root().join("models/decay_fit.node"))
        .unwrap()
        .replace("t = [0, 4]", "t = [4, 0]")
        .replace(
            "state x = 2",
            &format!("state x = {}", 2.0 * (-2.0f64).exp()),
        );
    let (l, data) = load_text("decay_fit_backward", &text);
    let sim = l.bind(&data).simulate(None).unwrap();
    let t = &sim.solution.t;
    assert!(t.windows(2).all(|w| w[1] < w[0]), "{t:?}");
    let obs = data.times.clone().unwrap();
    assert!(obs.iter().all(|o| t.contains(o)), "{t:?} misses {obs:?}");
    // The loss against the closed form of the backward solve at k = 0.3.
    let observed = data.observed.clone().unwrap();
    let x4 = 2.0 * (-2.0f64).exp();
    let loss: f64 = obs
        .iter()
        .zip(&observed)
        .map(|(t, o)| (x4 * (-0.3 * (t - 4.0)).exp() - o).powi(2))
        .sum();
    assert!(
        (sim.loss - loss).abs() < 1e-9 * loss,
        "{} vs {loss}",
        sim.loss
    );
    for method in [
        GradientMethod::Backprop,
        GradientMethod::Adjoint,
        GradientMethod::Forward,
    ] {
        let g = sens::gradient(&l.bind(&data), &GradientOptions::new(method)).unwrap();
        let fd = finite_difference(&l, &data, 0, 1e-4);
        assert!(
            (g.grad[0] - fd).abs() < 1e-6 * fd.abs(),
            "{method:?}: {} vs {fd}",
            g.grad[0]
        );
    }
}

#[test]
fn nodec_run_reports_a_backward_solve_in_integration_order() {
    let path = write(
        "run_backward",
        &decay(
            0.5,
            3.0,
            1.0,
            "rk4(t = [{a}, {b}], steps = 8, save = [3, 2.5, 1.25, 1])",
        ),
    );
    let out = nodec(&["run", &path, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t: Vec<f64> = v["t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(t, [3.0, 2.5, 1.25, 1.0]);
    let x = v["final"]["x"].as_f64().unwrap();
    let exact = 0.5 * (0.5 * 2.0f64).exp();
    assert!((x - exact).abs() < 1e-5 * exact, "{x} vs {exact}");
    // Save times out of the backward order are a located error.
    let path = write(
        "run_backward_unsorted",
        &decay(
            0.5,
            3.0,
            1.0,
            "rk4(t = [{a}, {b}], steps = 8, save = [1, 2])",
        ),
    );
    let out = nodec(&["check", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":5:") && stderr.contains("save times must decrease strictly"),
        "{stderr}"
    );
}
