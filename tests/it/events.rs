//! Events (`event NAME when EXPR crosses 0 ... -> terminate | STATE = EXPR`): event times and
//! states against closed forms, with adaptive and fixed-step methods, and their refusals;
//! gradients through events (forward sensitivities with the saltation rule) against closed
//! forms and central finite differences.

use serde_json::Value;

use crate::support::{nodec, root};

fn write_model(name: &str, text: &str) -> String {
    let dir = root().join("target/events-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn run_json(path: &str) -> Value {
    let out = nodec(&["run", path, "--format", "json"]);
    assert!(
        out.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("run prints JSON")
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The reported events as (name, t).
fn events(v: &Value) -> Vec<(String, f64)> {
    v["events"]
        .as_array()
        .expect("a model with events reports them")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["t"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A ball dropped from 10 m that keeps the fraction `e` of its speed at each bounce.
pub const BALL: &str = "model ball
const g = 9.81
param e = 0.8
state h = 10
state v = 0
dh/dt = v
dv/dt = -g
event bounce when h crosses 0 falling -> v = -e * v
";

/// Bounce times of a ball dropped from `h0`: `t1 = sqrt(2 h0 / g)`, then flights of
/// `2 e^k v1 / g` with `v1 = g t1`.
fn bounce_times(h0: f64, g: f64, e: f64, n: usize) -> Vec<f64> {
    let t1 = (2.0 * h0 / g).sqrt();
    let v1 = g * t1;
    let mut t = vec![t1];
    for k in 1..n {
        t.push(t[k - 1] + 2.0 * e.powi(k as i32) * v1 / g);
    }
    t
}

/// The bouncing ball's bounce times match the closed form to 1e-8, with dopri5 at a tight
/// tolerance and with rk4 at small steps (located on the cubic Hermite interpolant), and the
/// height between bounces follows the parabola of the last bounce.
#[test]
fn bouncing_ball_bounce_times_match_the_closed_form() {
    let (h0, g, e) = (10.0, 9.81, 0.8);
    let exact = bounce_times(h0, g, e, 12);
    let t_end = 10.0;
    for (name, schedule) in [
        (
            "ball_dopri5.node",
            "schedule dopri5(t = [0, 10], rtol = 1e-12, atol = 1e-12, save = [2.5, 10])\n",
        ),
        (
            "ball_tsit5.node",
            "schedule tsit5(t = [0, 10], rtol = 1e-12, atol = 1e-12, save = [2.5, 10])\n",
        ),
        (
            "ball_rk4.node",
            "schedule rk4(t = [0, 10], steps = 20000, save = [2.5, 10])\n",
        ),
    ] {
        let path = write_model(name, &format!("{BALL}{schedule}"));
        let v = run_json(&path);
        let got = events(&v);
        let expected: Vec<f64> = exact.iter().copied().filter(|&t| t <= t_end).collect();
        assert_eq!(got.len(), expected.len(), "{name}: {got:?}");
        for ((n, t), want) in got.iter().zip(&expected) {
            assert_eq!(n, "bounce");
            assert!(
                (t - want).abs() < 1e-8,
                "{name}: bounce at {t}, exact {want}"
            );
        }
        // h(2.5) after the first bounce: h = v1 e (t − t1) − g (t − t1)² / 2.
        let t1 = exact[0];
        let v1 = g * t1;
        let dt = 2.5 - t1;
        let h = numbers(&v["states"]["h"]);
        let want = e * v1 * dt - 0.5 * g * dt * dt;
        assert!(
            (h[0] - want).abs() < 1e-8,
            "{name}: h(2.5) = {}, exact {want}",
            h[0]
        );
    }
}

/// A terminate event stops the sample at `t = ln(x0/c)/k`; later save times hold the state at
/// the event (`x = c`), and the report marks it.
#[test]
fn a_terminate_event_stops_the_sample_at_the_threshold() {
    let (x0, k, c) = (4.0f64, 0.5, 1.0);
    for schedule in [
        "schedule dopri5(t = [0, 10], rtol = 1e-10, atol = 1e-12, save = 1)",
        "schedule rk4(t = [0, 10], steps = 10000, save = 1)",
    ] {
        let path = write_model(
            "stop.node",
            &format!(
                "param k = {k}\nstate x = {x0}\ndx/dt = -k * x\n\
                 event low when x - {c} crosses 0 falling -> terminate\n{schedule}\n"
            ),
        );
        let v = run_json(&path);
        let exact = (x0 / c).ln() / k;
        let got = events(&v);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!((got[0].1 - exact).abs() < 1e-8, "{} vs {exact}", got[0].1);
        assert_eq!(v["events"][0]["terminate"], Value::Bool(true));
        let t = numbers(&v["t"]);
        let x = numbers(&v["states"]["x"]);
        for (ti, xi) in t.iter().zip(&x) {
            let want = if *ti < exact { x0 * (-k * ti).exp() } else { c };
            assert!((xi - want).abs() < 1e-8, "x({ti}) = {xi}, expected {want}");
        }
    }
}

/// One-compartment pharmacokinetics with a dose `D` every 12 hours: `a(t) = D Σ_{n ≤ t/12}
/// exp(−k (t − 12 n))` (doses at 0, 12, 24, 36). Written twice: a clock state reset by the
/// jump, and a condition on `t` (`sin(π t / 12)` crosses 0 in both directions).
#[test]
fn a_dose_every_12_hours_matches_the_one_compartment_solution() {
    let (k, dose) = (0.1f64, 100.0);
    let exact = |t: f64| -> f64 {
        (0..4)
            .map(|n| 12.0 * n as f64)
            .filter(|&tn| tn <= t)
            .map(|tn| dose * (-k * (t - tn)).exp())
            .sum()
    };
    let save: Vec<f64> = (0..47).map(|i| 0.5 + i as f64).collect();
    let save_text = save
        .iter()
        .map(|t| format!("{t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let clock = "const k = 0.1\nconst D = 100\nstate a = D\nstate clock = 0\n\
                 da/dt = -k * a\ndclock/dt = 1\n\
                 event dose when clock - 12 crosses 0 rising -> a = a + D, clock = 0\n";
    let timer = "const k = 0.1\nconst D = 100\nstate a = D\nda/dt = -k * a\n\
                 event dose when sin(pi * t / 12) crosses 0 -> a = a + D\n";
    for (name, body) in [("clock", clock), ("timer", timer)] {
        for schedule in [
            format!(
                "schedule dopri5(t = [0, 47], rtol = 1e-11, atol = 1e-11, save = [{save_text}])"
            ),
            format!("schedule rk4(t = [0, 47], steps = 4700, save = [{save_text}])"),
        ] {
            let path = write_model("dose.node", &format!("{body}{schedule}\n"));
            let v = run_json(&path);
            let got = events(&v);
            let times: Vec<f64> = got.iter().map(|e| e.1).collect();
            assert_eq!(times.len(), 3, "{name}: {got:?}");
            for (t, want) in times.iter().zip([12.0, 24.0, 36.0]) {
                assert!(
                    (t - want).abs() < 1e-8,
                    "{name}: dose at {t}, expected {want}"
                );
            }
            let a = numbers(&v["states"]["a"]);
            for (t, ai) in save.iter().zip(&a) {
                let want = exact(*t);
                assert!(
                    (ai - want).abs() < 1e-7 * want,
                    "{name} {schedule}: a({t}) = {ai}, exact {want}"
                );
            }
        }
    }
}

/// Events are per sample: with an input initial height, each sample bounces at its own times.
#[test]
fn each_sample_has_its_own_events() {
    let data = root().join("target/events-tmp/heights.csv");
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    std::fs::write(&data, "h0\n5\n20\n").unwrap();
    let path = write_model(
        "balls.node",
        &format!(
            "const g = 9.81\nparam e = 0.8\ninput h0\nstate h = h0\nstate v = 0\n\
             dh/dt = v\ndv/dt = -g\n\
             event bounce when h crosses 0 falling -> v = -e * v\n\
             schedule dopri5(t = [0, 3], rtol = 1e-12, atol = 1e-12)\n\
             data train = csv(\"{}\", input = 0)\n",
            data.display()
        ),
    );
    for (sample, h0) in [(0usize, 5.0), (1, 20.0)] {
        let s = sample.to_string();
        let out = nodec(&["run", &path, "--format", "json", "--sample", &s]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let exact: Vec<f64> = bounce_times(h0, 9.81, 0.8, 10)
            .into_iter()
            .filter(|&t| t <= 3.0)
            .collect();
        let got: Vec<f64> = events(&v).iter().map(|e| e.1).collect();
        assert_eq!(got.len(), exact.len(), "sample {sample}: {got:?}");
        for (t, want) in got.iter().zip(&exact) {
            assert!((t - want).abs() < 1e-8);
        }
    }
}

/// Stiff methods are refused with a located error (not silently wrong), by `run` and by the
/// reverse gradient methods alike.
#[test]
fn stiff_methods_are_refused_with_a_located_error() {
    let path = write_model(
        "ball_rodas.node",
        &format!("{BALL}schedule rodas4(t = [0, 10])\ncost terminal = h^2\n"),
    );
    for args in [
        vec!["run", &path],
        vec!["grad", &path, "--method", "backprop"],
        vec!["grad", &path, "--method", "adjoint"],
    ] {
        let out = nodec(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("ball_rodas.node:9:1: error: events need an explicit"),
            "{args:?}: {err}"
        );
    }
}

/// A model too wide for the scalar IR runs its events on tensor kernels: the jump resets `y`
/// (so it crosses its threshold every `ln 4 / k`) and assigns one element of a vector state.
#[test]
fn events_run_on_tensor_kernels_too() {
    let path = write_model(
        "wide.node",
        "param W[200, 200] ~ normal(0, 0.01)\nstate x[200] = 1\nstate y = 4\n\
         dx/dt = tanh(W * x)\ndy/dt = -0.5 * y\n\
         event reset when y - 1 crosses 0 falling -> y = 4, x[3] = 7\n\
         schedule dopri5(t = [0, 6], rtol = 1e-12, atol = 1e-12)\n",
    );
    let out = nodec(&["ir", &path, "--stats"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tensor kernels"),
        "the model should be too wide for the scalar IR"
    );
    let v = run_json(&path);
    let period = 4.0f64.ln() / 0.5;
    let got: Vec<f64> = events(&v).iter().map(|e| e.1).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    for (i, t) in got.iter().enumerate() {
        let want = period * (i + 1) as f64;
        assert!((t - want).abs() < 1e-8, "reset at {t}, expected {want}");
    }
    let y = v["final"]["y"].as_f64().unwrap();
    let want = 4.0 * (-0.5 * (6.0 - 2.0 * period)).exp();
    assert!((y - want).abs() < 1e-8, "y(6) = {y}, exact {want}");
}

/// `nodec grad` as JSON: the loss and the gradient of each named scalar param.
fn grad_json(path: &str, extra: &[&str]) -> (f64, Value) {
    let mut args = vec!["grad", path, "--format", "json"];
    args.extend_from_slice(extra);
    let out = nodec(&args);
    assert!(
        out.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("grad prints JSON");
    (v["loss"].as_f64().unwrap(), v)
}

/// The gradient of the loss of `body` (whose params are declared by `params`, as
/// `param NAME = VALUE` lines) in each param, by central differences of the reported loss.
fn central_differences(name: &str, params: &[(&str, f64)], body: &str, step: f64) -> Vec<f64> {
    let loss_at = |values: &[(&str, f64)]| {
        let decls: String = values
            .iter()
            .map(|(p, x)| format!("param {p} = {x:e}\n"))
            .collect();
        let path = write_model(name, &format!("{decls}{body}"));
        grad_json(&path, &[]).0
    };
    (0..params.len())
        .map(|i| {
            let mut plus = params.to_vec();
            let mut minus = params.to_vec();
            plus[i].1 += step;
            minus[i].1 -= step;
            (loss_at(&plus) - loss_at(&minus)) / (2.0 * step)
        })
        .collect()
}

const BALL_BODY: &str = "const g = 9.81
state h = h0
state v = 0
dh/dt = v
dv/dt = -g
event bounce when h crosses 0 falling -> v = -e * v
";

/// Bounce `k` (from 1) of a ball dropped from `h0` at rest with restitution `e`:
/// `t_k = t1 (1 + 2 (e − e^k)/(1 − e))`, `t1 = sqrt(2 h0 / g)` (each flight after bounce `j`
/// lasts `2 e^j v1 / g = 2 e^j t1`), and its derivatives in `h0` and `e`.
fn bounce(h0: f64, e: f64, g: f64, k: i32) -> (f64, f64, f64) {
    let t1 = (2.0 * h0 / g).sqrt();
    let c = 1.0 + 2.0 * (e - e.powi(k)) / (1.0 - e);
    let dc_de = 2.0 * ((1.0 - k as f64 * e.powi(k - 1)) * (1.0 - e) + (e - e.powi(k)))
        / ((1.0 - e) * (1.0 - e));
    (t1 * c, t1 * c / (2.0 * h0), t1 * dc_de)
}

/// The ball's height and speed at `t` between bounces 3 and 4 and their gradients in `(h0, e)`,
/// differentiating `h = a τ − g τ²/2`, `v = a − g τ`, `a = e³ v1`, `τ = t − t_3`,
/// `v1 = sqrt(2 g h0)`.
fn ball_after_three(h0: f64, e: f64, g: f64, t: f64) -> [(f64, [f64; 2]); 2] {
    let (t3, dt3_dh, dt3_de) = bounce(h0, e, g, 3);
    assert!(t > t3 && t < bounce(h0, e, g, 4).0);
    let v1 = (2.0 * g * h0).sqrt();
    let a = e.powi(3) * v1;
    let (da_dh, da_de) = (e.powi(3) * g / v1, 3.0 * e * e * v1);
    let tau = t - t3;
    let h = a * tau - 0.5 * g * tau * tau;
    let v = a - g * tau;
    // dτ = −dt_3; ∂h/∂τ = v, ∂v/∂τ = −g.
    let dh = [da_dh * tau - v * dt3_dh, da_de * tau - v * dt3_de];
    let dv = [da_dh + g * dt3_dh, da_de + g * dt3_de];
    [(h, dh), (v, dv)]
}

/// The gradient methods that cross events.
const GRADIENTS: [&str; 3] = ["forward", "backprop", "adjoint"];

/// The bouncing ball's height and speed after three bounces, as costs: their gradients in the
/// drop height and the restitution match the closed form to 1e-8 by every gradient method
/// (dopri5 and tsit5 at tight tolerances), and central finite differences of the loss to 1e-6 (steps of 2e-5: the
/// truncation error of 1e-4 steps is 5e-6 here). `v` reads the third
/// bounce time's derivative directly: `dv = d(e³ v1) + g dt_3`.
#[test]
fn bouncing_ball_gradients_match_the_closed_form() {
    let (h0, e, g, t_end) = (10.0, 0.8, 9.81, 6.0);
    let exact = ball_after_three(h0, e, g, t_end);
    for (i, cost) in ["h", "v"].iter().enumerate() {
        for method in ["dopri5", "tsit5"] {
            let body = format!(
                "{BALL_BODY}schedule {method}(t = [0, {t_end}], rtol = 1e-12, atol = 1e-12)\n\
                 cost terminal = {cost}\n"
            );
            let path = write_model(
                "ball_grad_closed.node",
                &format!("param h0 = {h0}\nparam e = {e}\n{body}"),
            );
            let (value, grad) = exact[i];
            for gradient in GRADIENTS {
                let (loss, v) = grad_json(&path, &["--method", gradient]);
                assert_eq!(v["method"], gradient);
                assert!((loss - value).abs() < 1e-8, "{cost}: {loss} vs {value}");
                for (p, want) in ["h0", "e"].iter().zip(grad) {
                    let got = v["grad"][p].as_f64().unwrap();
                    assert!(
                        (got - want).abs() < 1e-8,
                        "{method}, {gradient}: d{cost}/d{p} = {got}, closed form {want}"
                    );
                }
            }
            if method == "dopri5" {
                let fd =
                    central_differences("ball_grad_fd.node", &[("h0", h0), ("e", e)], &body, 2e-5);
                for (got, want) in fd.iter().zip(grad) {
                    assert!(
                        (got - want).abs() < 1e-6,
                        "{cost}: fd {got}, closed form {want}"
                    );
                }
            }
        }
    }
}

/// A ball with the bounce time in an explicit clock: `rk4` with small steps locates the
/// events on its Hermite interpolant, and the gradient through them is still the closed form
/// (to the method's error, 1e-7 at 20000 steps) by every gradient method.
#[test]
fn bouncing_ball_gradients_with_a_fixed_step_method() {
    let (h0, e, g, t_end) = (10.0, 0.8, 9.81, 6.0);
    let exact = ball_after_three(h0, e, g, t_end);
    let path = write_model(
        "ball_grad_rk4.node",
        &format!(
            "param h0 = {h0}\nparam e = {e}\n{BALL_BODY}\
             schedule rk4(t = [0, {t_end}], steps = 20000)\ncost terminal = h\n"
        ),
    );
    for gradient in GRADIENTS {
        let (_, v) = grad_json(&path, &["--method", gradient]);
        for (p, want) in ["h0", "e"].iter().zip(exact[0].1) {
            let got = v["grad"][p].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-7,
                "{gradient}: dh/d{p} = {got}, closed form {want}"
            );
        }
    }
}

/// A terminate event: `x' = −k x` from `x0` stops where `x = c`, at `τ = ln(x0/c)/k`, read by
/// a clock state `s`; the held state is `x = c`. With the loss `s + 2 x`:
/// `dτ/dk = −τ/k`, `dτ/dc = −1/(k c)`, `dτ/dx0 = 1/(k x0)`, and `x(τ) = c` adds 2 to `d/dc`.
#[test]
fn a_terminate_event_has_the_closed_form_stopping_time_gradient() {
    let (k, c, x0): (f64, f64, f64) = (0.5, 1.0, 4.0);
    let tau = (x0 / c).ln() / k;
    let body = "state x = x0\nstate s = 0\ndx/dt = -k * x\nds/dt = 1\n\
                event low when x - c crosses 0 falling -> terminate\n\
                schedule dopri5(t = [0, 10], rtol = 1e-12, atol = 1e-12)\n\
                cost terminal = s + 2 * x\n";
    let path = write_model(
        "stop_grad.node",
        &format!("param k = {k}\nparam c = {c}\nparam x0 = {x0}\n{body}"),
    );
    let want = [-tau / k, -1.0 / (k * c) + 2.0, 1.0 / (k * x0)];
    for gradient in GRADIENTS {
        let (loss, v) = grad_json(&path, &["--method", gradient]);
        assert!((loss - (tau + 2.0 * c)).abs() < 1e-9, "{loss}");
        for (p, want) in ["k", "c", "x0"].iter().zip(want) {
            let got = v["grad"][p].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-8,
                "{gradient}: d/d{p} = {got}, closed form {want}"
            );
        }
    }
    let fd = central_differences(
        "stop_grad_fd.node",
        &[("k", k), ("c", c), ("x0", x0)],
        body,
        1e-5,
    );
    for (got, want) in fd.iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "fd {got}, closed form {want}");
    }
}

/// A dose `D` every 12 hours into one compartment, `a(47) = D Σ_{n=0..3} exp(−k (47 − 12 n))`:
/// `∂a/∂D = Σ exp(…)`, `∂a/∂k = −D Σ (47 − 12 n) exp(…)`. The doses come from a clock state
/// reset by the jump (the jump reads `D`: `h_p ≠ 0`) and from a condition on `t` alone (`g_t`
/// carries the event's rate; `g_y = 0`).
#[test]
fn dosing_gradients_match_the_one_compartment_solution() {
    let t_end = 47.0f64;
    let (k, dose) = (0.1f64, 100.0);
    let terms: Vec<f64> = (0..4)
        .map(|n| (-k * (t_end - 12.0 * n as f64)).exp())
        .collect();
    let value = dose * terms.iter().sum::<f64>();
    let d_dose: f64 = terms.iter().sum();
    let d_k: f64 = -dose
        * (0..4)
            .map(|n| (t_end - 12.0 * n as f64) * terms[n])
            .sum::<f64>();
    let schedule = format!(
        "schedule dopri5(t = [0, {t_end}], rtol = 1e-12, atol = 1e-12)\ncost terminal = a\n"
    );
    let clock = "state a = D\nstate clock = 0\nda/dt = -k * a\ndclock/dt = 1\n\
                 event dose when clock - 12 crosses 0 rising -> a = a + D, clock = 0\n";
    let timer = "state a = D\nda/dt = -k * a\n\
                 event dose when sin(pi * t / 12) crosses 0 -> a = a + D\n";
    for (name, body) in [("clock", clock), ("timer", timer)] {
        let path = write_model(
            "dose_grad.node",
            &format!("param k = {k}\nparam D = {dose}\n{body}{schedule}"),
        );
        for gradient in GRADIENTS {
            let (loss, v) = grad_json(&path, &["--method", gradient]);
            assert!(
                (loss - value).abs() < 1e-8 * value,
                "{name}: {loss} vs {value}"
            );
            for (p, want) in [("k", d_k), ("D", d_dose)] {
                let got = v["grad"][p].as_f64().unwrap();
                assert!(
                    (got - want).abs() < 1e-8 * want.abs().max(1.0),
                    "{name}, {gradient}: d/d{p} = {got}, closed form {want}"
                );
            }
        }
    }
}

/// A crossing with a zero rate (`x = (t − 1)³` crosses 0 at `t = 1` with slope 0) has no
/// gradient: `grad` refuses it at the event by every method, naming it and the time, rather
/// than printing an infinite or NaN derivative; `run` still reports the event.
#[test]
fn a_grazing_event_is_refused_with_its_name_and_time() {
    let path = write_model(
        "graze.node",
        "param p = 1\nstate x = -p\ndx/dt = 3 * (t - 1)^2\n\
         event touch when x crosses 0 rising -> terminate\n\
         schedule dopri5(t = [0, 2], rtol = 1e-10, atol = 1e-12)\ncost terminal = x\n",
    );
    let v = run_json(&path);
    assert_eq!(events(&v).len(), 1);
    for gradient in GRADIENTS {
        let out = nodec(&["grad", &path, "--method", gradient]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{gradient}: {err}");
        assert!(
            err.contains("graze.node:4:1: error: event `touch` grazes its condition at t = "),
            "{gradient}: {err}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("NaN"));
    }
}

/// A small seeded generator for test directions and weights (xorshift64*), in `[-1, 1)`.
fn uniform(state: &mut u64) -> f64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
    2.0 * (bits as f64 / (1u64 << 53) as f64) - 1.0
}

/// `w·(J u)` against `(Jᵀ w)·u` for the saved states `y(t_k)` of `body` as functions of its
/// params: `w` random weights read as `observed` values at off-grid times around the events
/// (the loss `Σ_k w_k·y(t_k)` has the gradient `Jᵀ w`), `u` a random direction. Forward
/// sensitivities give `w·(J e_p)` for each coordinate and so `w·(J u)`; backprop and the
/// adjoint give `Jᵀ w`. Returns the relative differences (backprop, adjoint).
fn dot_product_test(
    name: &str,
    params: &[(&str, f64)],
    observed: &[&str],
    body: &str,
    seed: u64,
) -> [f64; 2] {
    let mut state = seed;
    let data = root().join(format!("target/events-tmp/{name}.csv"));
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    let mut csv = format!("t,{}\n", observed.join(","));
    for k in 0..23 {
        // Off the fixed grids, 0.05 apart and more.
        let t = 0.37 + 0.213 * k as f64 + 0.01 * uniform(&mut state);
        let w: Vec<String> = observed
            .iter()
            .map(|_| format!("{:e}", uniform(&mut state)))
            .collect();
        csv.push_str(&format!("{t},{}\n", w.join(",")));
    }
    std::fs::write(&data, csv).unwrap();
    let decls: String = params
        .iter()
        .map(|(p, x)| format!("param {p} = {x:e}\n"))
        .collect();
    let obs: String = observed.iter().map(|o| format!("observed {o}\n")).collect();
    let path = write_model(
        &format!("{name}.node"),
        &format!(
            "{decls}{obs}{body}data obs = series(\"{}\", t = 0, values = 1..{})\n",
            data.display(),
            observed.len() + 1
        ),
    );
    let u: Vec<f64> = params.iter().map(|_| uniform(&mut state)).collect();
    let along = |gradient: &str| {
        let (_, v) = grad_json(&path, &["--method", gradient]);
        params
            .iter()
            .zip(&u)
            .map(|((p, _), u)| v["grad"][p].as_f64().unwrap() * u)
            .sum::<f64>()
    };
    let forward = along("forward");
    assert!(
        forward.abs() > 1e-3,
        "{name}: a direction the loss moves along"
    );
    ["backprop", "adjoint"].map(|m| (along(m) - forward).abs() / forward.abs())
}

const BALL_DOT: &str = "state h = h0\nstate v = 0\ndh/dt = v\ndv/dt = -g\n\
                        event bounce when h crosses 0 falling -> v = -e * v\n\
                        cost observed = wh * h + wv * v\n";

const DOSE_DOT: &str = "state a = D\nstate clock = 0\nda/dt = -k * a\ndclock/dt = 1\n\
                        event dose when clock - 1.5 crosses 0 rising -> a = 0.9 * a + D, clock = 0\n\
                        event stop when t - 4.1 * D crosses 0 rising -> terminate\n\
                        cost observed = wa * a + wc * clock\n";

/// The dot-product test between forward sensitivities and the reverse methods on event
/// models (the bouncing ball in `h0`, `e`, `g`; doses on a clock, stopped at a time that
/// depends on a param, in `k`, `D`): with `rk4` backprop is the transpose of forward sensitivities to rounding; with
/// `dopri5` both are within the tolerance of the exact derivative, and so is the adjoint.
#[test]
fn forward_and_reverse_pass_the_dot_product_test_on_event_models() {
    let ball = [("h0", 10.0), ("e", 0.8), ("g", 9.81)];
    let dose = [("k", 0.3), ("D", 1.0)];
    type Case<'a> = (&'a str, &'a [(&'a str, f64)], &'a [&'a str], &'a str);
    let cases: [Case; 2] = [
        ("ball_dot", &ball, &["wh", "wv"], BALL_DOT),
        ("dose_dot", &dose, &["wa", "wc"], DOSE_DOT),
    ];
    for (name, params, observed, body) in cases {
        let fixed = format!("{body}schedule rk4(t = [0, 5.2], steps = 400)\n");
        let [bp, adj] = dot_product_test(&format!("{name}_rk4"), params, observed, &fixed, 7);
        assert!(bp < 1e-12, "{name}, rk4: backprop off by {bp:e}");
        // The adjoint differentiates the flow, not the 400 steps: rk4's error on the grid.
        assert!(adj < 1e-6, "{name}, rk4: adjoint off by {adj:e}");
        let adaptive = format!("{body}schedule dopri5(t = [0, 5.2], rtol = 1e-11, atol = 1e-11)\n");
        for (r, what) in
            dot_product_test(&format!("{name}_dopri5"), params, observed, &adaptive, 11)
                .iter()
                .zip(["backprop", "adjoint"])
        {
            assert!(*r < 1e-8, "{name}, dopri5: {what} off by {r:e}");
        }
    }
}

/// Backprop and the adjoint through events give the same bits on 1 and 2 threads (70
/// samples: three blocks, each with its own bounces).
#[test]
fn event_gradients_do_not_depend_on_the_thread_count() {
    let data = root().join("target/events-tmp/many_heights.csv");
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    let rows: String = (0..70)
        .map(|i| format!("{}\n", 2.0 + 0.37 * i as f64))
        .collect();
    std::fs::write(&data, format!("h0\n{rows}")).unwrap();
    let path = write_model(
        "balls_threads.node",
        &format!(
            "const g = 9.81\nparam e = 0.8\ninput h0\nstate h = h0\nstate v = 0\n\
             dh/dt = v\ndv/dt = -g\n\
             event bounce when h crosses 0 falling -> v = -e * v\n\
             schedule dopri5(t = [0, 4], rtol = 1e-9, atol = 1e-9)\n\
             data train = csv(\"{}\", input = 0)\ncost terminal = h^2 + v\n",
            data.display()
        ),
    );
    for method in ["backprop", "adjoint"] {
        let at = |threads: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
                .args(["grad", &path, "--format", "json", "--method", method])
                .current_dir(root())
                .env("RAYON_NUM_THREADS", threads)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            (
                v["loss"].as_f64().unwrap(),
                v["grad"]["e"].as_f64().unwrap(),
            )
        };
        let (one, two) = (at("1"), at("2"));
        assert_eq!(one.0.to_bits(), two.0.to_bits(), "{method}: loss");
        assert_eq!(one.1.to_bits(), two.1.to_bits(), "{method}: gradient");
        assert!(one.1.is_finite() && one.1 != 0.0);
    }
}
