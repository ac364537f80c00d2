//! `nodec run` end to end: accuracy against closed forms and `tests/data/reference/`, the JSON
//! contract, located run-time errors, atomic `--out`, and thread-count independence.

use serde_json::Value;

use crate::support::{nodec, root};

fn run_json(args: &[&str]) -> Value {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = nodec(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("run prints JSON")
}

fn reference(name: &str) -> Value {
    let path = root()
        .join("tests/data/reference")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference present")).unwrap()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// x(t) = 2·exp(−t/2) at every save time, to 1e-9 relative (the model asks for rtol 1e-10).
#[test]
fn decay_matches_its_closed_form_at_every_save_time() {
    let v = run_json(&["models/decay.node"]);
    let t = numbers(&v["t"]);
    let x = numbers(&v["states"]["x"]);
    assert_eq!(t, (0..=8).map(|k| k as f64 * 0.5).collect::<Vec<_>>());
    for (t, x) in t.iter().zip(&x) {
        let exact = 2.0 * (-0.5 * t).exp();
        assert!(
            ((x - exact) / exact).abs() < 1e-9,
            "x({t}) = {x}, exact {exact}"
        );
    }
    assert_eq!(v["final"]["x"].as_f64().unwrap(), *x.last().unwrap());
}

/// Final values within 1e-5 relative of the high-precision references, at each model's own
/// tolerance (Lorenz is chaotic: 5th-order solvers at 1e-8 end 7e-7 to 5e-6 away).
#[test]
fn final_values_match_the_references() {
    for (name, states) in [("lorenz", vec!["x", "y", "z"]), ("vdp", vec!["x", "y"])] {
        let v = run_json(&[&format!("models/{name}.node")]);
        let expected = numbers(&reference(name)["y_end"]);
        for (state, want) in states.iter().zip(&expected) {
            let got = v["final"][state].as_f64().unwrap();
            assert!(
                ((got - want) / want).abs() < 1e-5,
                "{name}.{state}: {got} vs {want}"
            );
        }
    }
    let expected = numbers(&reference("robertson")["y_end"]);
    for method in ["rodas4", "bdf"] {
        let text = std::fs::read_to_string(root().join("models/robertson.node")).unwrap();
        let text = text.replace("rodas4(", &format!("{method}("));
        let dir = root().join("target/run-tmp");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("robertson_{method}.node"));
        std::fs::write(&path, text).unwrap();
        let v = run_json(&[path.to_str().unwrap()]);
        let got = numbers(&v["final"]["y"]);
        for (g, w) in got.iter().zip(&expected) {
            assert!(
                ((g - w) / w).abs() < 1e-5,
                "robertson {method}: {got:?} vs {expected:?}"
            );
        }
        for mass in numbers(&v["outputs"]["mass"]) {
            assert!((mass - 1.0).abs() < 1e-9, "{method}: mass {mass}");
        }
    }
}

/// The same bits with one thread and with two, for every model in `models/`.
#[test]
fn output_is_bit_identical_for_any_thread_count() {
    for model in [
        "models/circles_anode.node",
        "models/lorenz.node",
        "models/cnf_moons.node",
        // Too wide for the scalar IR: tensor kernels.
        "models/digits_odenet.node",
    ] {
        let run = |threads: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
                .args(["run", model, "--format", "json"])
                .env("RAYON_NUM_THREADS", threads)
                .current_dir(root())
                .output()
                .unwrap();
            assert!(out.status.success());
            let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
            // Wall times differ from run to run; everything else must not.
            v["stats"]["compile_seconds"] = Value::Null;
            v["stats"]["solve_seconds"] = Value::Null;
            v
        };
        assert_eq!(run("1"), run("2"), "{model}");
    }
}

/// A model with data reports loss, each cost and each metric.
#[test]
fn a_model_with_data_reports_loss_costs_and_metrics() {
    let v = run_json(&["models/circles_anode.node", "--sample", "3"]);
    assert_eq!(v["sample"], 3);
    let costs = v["costs"].as_object().unwrap();
    let keys: Vec<&String> = costs.keys().collect();
    assert_eq!(keys, ["terminal", "running", "penalty"]);
    let sum: f64 = costs.values().map(|c| c.as_f64().unwrap()).sum();
    let loss = v["loss"].as_f64().unwrap();
    assert!(
        (sum - loss).abs() <= 1e-12 * loss.abs(),
        "loss {loss} is the sum of the costs {sum}"
    );
    let accuracy = v["metrics"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert_eq!(numbers(&v["states"]["x"][0]).len(), 3);
}

/// A blow-up is an error at the equation's line, never NaN printed as a result.
#[test]
fn a_blow_up_points_at_the_equation() {
    let dir = root().join("target/run-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("blowup.node");
    std::fs::write(
        &path,
        "state x = 1\ndx/dt = x^2\nschedule rk4(t = [0, 2], steps = 50)\n",
    )
    .unwrap();
    let out = nodec(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("blowup.node:2:1: error: state x became infinite or NaN at t = "),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn out_writes_the_report_to_a_file() {
    let dir = root().join("target/run-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("decay.csv");
    let _ = std::fs::remove_file(&path);
    let out = nodec(&[
        "run",
        "models/decay.node",
        "--format",
        "csv",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("t,x\n0,2\n0.5,1.55760"), "{text}");
}

/// Robertson to t = 1e11 with both stiff methods (the IVP Test Set's published value), where
/// explicit methods cannot go; atol is lowered so that y2 ≈ 8e-14 is resolved at all.
#[test]
fn stiff_methods_reach_robertson_at_1e11() {
    let published = numbers(&reference("robertson")["t_1e11_published"]["y"]);
    let text = std::fs::read_to_string(root().join("models/robertson.node")).unwrap();
    let dir = root().join("target/run-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    for method in ["rodas4", "bdf"] {
        let long = text.replace(
            "rodas4(t = [0, 1e5], rtol = 1e-6, atol = 1e-10)",
            &format!("{method}(t = [0, 1e11], rtol = 1e-6, atol = 1e-14)"),
        );
        assert!(long.contains("1e11"));
        let path = dir.join(format!("robertson_1e11_{method}.node"));
        std::fs::write(&path, long).unwrap();
        let v = run_json(&[path.to_str().unwrap()]);
        let got = numbers(&v["final"]["y"]);
        for (g, w) in got.iter().zip(&published) {
            assert!(
                ((g - w) / w).abs() < 1e-5,
                "{method}: {got:?} vs {published:?}"
            );
        }
    }
}

/// Fitting to a series: the solver stops at every observation time and the observed cost is
/// summed there. With k = 0.3 the cost is Σ (2e^(−0.3t) − 2e^(−0.5t))² in closed form; at the
/// true rate k = 0.5 it vanishes to the solver's tolerance.
#[test]
fn observed_costs_are_summed_over_the_observation_times() {
    let times = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0];
    let v = run_json(&["models/decay_fit.node"]);
    let t = numbers(&v["t"]);
    for obs in times {
        assert!(
            t.contains(&obs),
            "observation time {obs} is hit exactly: {t:?}"
        );
    }
    let exact: f64 = times
        .iter()
        .map(|t: &f64| (2.0 * (-0.3 * t).exp() - 2.0 * (-0.5 * t).exp()).powi(2))
        .sum();
    let loss = v["loss"].as_f64().unwrap();
    assert!(
        ((loss - exact) / exact).abs() < 1e-8,
        "loss {loss}, closed form {exact}"
    );
    let v = run_json(&["models/decay_fit.node", "--set", "k=0.5"]);
    assert!(v["costs"]["observed"].as_f64().unwrap() < 1e-15);
}

/// `--params` loads values by name and checks their sizes.
#[test]
fn params_files_are_loaded_by_name_and_checked() {
    let dir = root().join("target/run-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("k.json");
    std::fs::write(&good, r#"{"k": 0.25}"#).unwrap();
    let v = run_json(&["models/decay.node", "--params", good.to_str().unwrap()]);
    let x4 = v["final"]["x"].as_f64().unwrap();
    assert!(
        (x4 - 2.0 * (-1.0f64).exp()).abs() < 1e-9,
        "x(4) with k = 0.25: {x4}"
    );
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"kk": 0.25}"#).unwrap();
    let out = nodec(&[
        "run",
        "models/decay.node",
        "--params",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no param `kk`; did you mean `k`?"));
    let wrong = dir.join("wrong.json");
    std::fs::write(&wrong, r#"{"K1": [1, 2, 3]}"#).unwrap();
    let out = nodec(&[
        "run",
        "models/resnet_euler.node",
        "--params",
        wrong.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has 3 values but the model's `K1` takes 160 ([8, 2] × 10 copies)"),
        "{stderr}"
    );
}

/// Step limits and Newton failures are errors at the schedule's line, with what to do.
#[test]
fn solver_failures_are_located_errors() {
    let dir = root().join("target/run-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "max_steps.node",
            "state x = 1\nstate y = 0\ndx/dt = y\ndy/dt = -x\nschedule dopri5(t = [0, 100], rtol = 1e-10, atol = 1e-10, max_steps = 20)\n",
            "max_steps.node:5:1: error: more than 20 steps were needed, stopped at t = ",
        ),
        (
            "newton.node",
            "state x = 1\ndx/dt = x^2 + 1\nschedule implicit_euler(t = [0, 10], steps = 2)\n",
            "newton.node:3:1: error: Newton's method did not converge at t = ",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = nodec(&["run", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// The table report of every model, snapshotted (6 significant digits, exact step counts; the
/// wall-time line is dropped). Each snapshot was read: Lorenz, Van der Pol and Robertson end at
/// their references, decay at 2e^(−t/2).
#[test]
fn run_table_of_every_model() {
    for path in crate::support::node_files("models") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = nodec(&["run", &format!("models/{name}")]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text: String = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("time: "))
            .map(|l| format!("{l}\n"))
            .collect();
        insta::assert_snapshot!(format!("run_{}", name.trim_end_matches(".node")), text);
    }
}

/// The neural-ODE benchmark P4 (`benches/data/p4/`): with its fixed weights, nodec's loss equals
/// the value every f64 implementation (PyTorch, JAX, hand-written Rust) agrees on to 1e-15.
#[test]
fn neural_ode_benchmark_loss_matches_the_peers() {
    for (d, expected) in [(2, 3.93834273556), (32, 68.5813899156)] {
        let bench = root().join("benches/data/p4");
        let model = bench.join(format!("node_d{d}.node"));
        let params = bench.join(format!("params_d{d}.json"));
        let v = run_json(&[
            model.to_str().unwrap(),
            "--params",
            params.to_str().unwrap(),
        ]);
        let loss = v["loss"].as_f64().unwrap();
        // The README gives 12 significant digits.
        assert!(
            ((loss - expected) / expected).abs() < 1e-11,
            "D = {d}: loss {loss}, expected {expected}"
        );
    }
}

fn write_model(name: &str, text: &str) -> String {
    let dir = root().join("target/run-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A running cost is integrated with the states: ∫₀⁴ (2e^(−t/2))² dt = 4(1 − e^(−4)), to the
/// solver's tolerance (rtol 1e-10), also by the stiff methods, whose Jacobian then carries the
/// quadrature row ∂L/∂x (bdf's error constant is larger, hence its looser bound).
#[test]
fn running_costs_are_integrated_with_the_states() {
    let exact = 4.0 * (1.0 - (-4.0f64).exp());
    for (method, tolerance) in [("dopri5", 1e-9), ("rodas4", 1e-9), ("bdf", 1e-8)] {
        let path = write_model(
            &format!("quadrature_{method}.node"),
            &format!(
                "state x = 2\ndx/dt = -0.5 * x\nschedule {method}(t = [0, 4], rtol = 1e-10, atol = 1e-12)\ncost running = x^2\n"
            ),
        );
        let v = run_json(&[&path]);
        let running = v["costs"]["running"].as_f64().unwrap();
        assert!(
            ((running - exact) / exact).abs() < tolerance,
            "{method}: {running} vs {exact}"
        );
        assert_eq!(v["loss"].as_f64().unwrap(), running);
    }
}

/// LM-ResNet with a per-layer coefficient: x₁ = x₀ + h f(x₀) (the first step is Euler), then
/// x₂ = (1 − k₁) x₁ + k₁ x₀ + h f(x₁) with the second layer's k₁. For dx/dt = −x, h = 1/2,
/// x₀ = 1: x₁ = 1/2 and x₂ = (1 − k₁)/2 + k₁ − 1/4.
#[test]
fn lm_uses_each_layers_coefficient() {
    let path = write_model(
        "lm_layers.node",
        "param kappa per layer = 0\nstate x = 1\ndx/dt = -x\nschedule lm(t = [0, 1], steps = 2, k = kappa)\n",
    );
    for k1 in [0.0, 0.5, -0.75] {
        let params = write_model(
            &format!("lm_{k1}.json"),
            &format!("{{\"kappa\": [0.3, {k1}]}}"),
        );
        let v = run_json(&[&path, "--params", &params]);
        let x = numbers(&v["states"]["x"]);
        let expected = (1.0 - k1) * 0.5 + k1 - 0.25;
        assert_eq!(x[1], 0.5);
        assert!(
            (x[2] - expected).abs() < 1e-15,
            "k1 = {k1}: {x:?}, expected x2 = {expected}"
        );
    }
}

/// A held-out `test` block is reported separately from `train`.
#[test]
fn train_and_test_blocks_are_reported_separately() {
    let path = write_model(
        "two_blocks.node",
        "input u[2]\nlabel y\nparam w[2] = [1, -1]\nstate x[2] = u\ndx/dt = -x\n\
         schedule rk4(t = [0, 1], steps = 4)\nlet p = sigmoid(dot(w, x))\ncost terminal = bce(p, y)\n\
         metric accuracy = (p > 0.5) == y\n\
         data train = moons(n = 64, noise = 0.1, seed = 1)\ndata test = moons(n = 32, noise = 0.1, seed = 2)\n",
    );
    let v = run_json(&[&path]);
    assert_eq!(v["data"]["train"]["samples"], 64);
    assert_eq!(v["data"]["test"]["samples"], 32);
    assert_eq!(v["loss"], v["data"]["train"]["loss"]);
    assert_ne!(v["data"]["train"]["loss"], v["data"]["test"]["loss"]);
    assert!(v["data"]["test"]["metrics"]["accuracy"].is_f64());
}

/// The heat model against the semi-discrete closed form, for two grids chosen by `--set N=`.
/// `sin(kπx_j)` is an eigenvector of the second-difference matrix with eigenvalue
/// `λ_k = −(4/h²) sin²(kπh/2)`, `h = 1/(N + 1)`, so the ODE system's exact solution from
/// `sin(πx) + 0.5 sin(3πx)` is `u_j(t) = e^{λ_1 t} sin(πx_j) + 0.5 e^{λ_3 t} sin(3πx_j)`: the
/// only error left is the solver's, which rtol 1e-8 bounds well below 1e-7 (it is ~1e-9).
#[test]
fn heat_matches_the_semidiscrete_closed_form_for_two_grids() {
    for n in [15usize, 63] {
        let set = format!("N={n}");
        let v = run_json(&["models/heat.node", "--set", &set]);
        let t = numbers(&v["t"]);
        let u = v["states"]["u"].as_array().unwrap();
        assert_eq!(t, [0.0, 0.05, 0.1]);
        let h = 1.0 / (n + 1) as f64;
        let lambda = |k: f64| -4.0 / (h * h) * (k * std::f64::consts::PI * h / 2.0).sin().powi(2);
        let mut worst: f64 = 0.0;
        for (t, row) in t.iter().zip(u) {
            let row = numbers(row);
            assert_eq!(row.len(), n, "--set N={n} resizes the grid");
            for (j, got) in row.iter().enumerate() {
                let x = (j + 1) as f64 * h;
                let exact = (lambda(1.0) * t).exp() * (std::f64::consts::PI * x).sin()
                    + 0.5 * (lambda(3.0) * t).exp() * (3.0 * std::f64::consts::PI * x).sin();
                worst = worst.max((got - exact).abs());
            }
        }
        assert!(worst < 1e-7, "N={n}: max error {worst:e}");
    }
}

/// `atol = [...]` gives each state component its own absolute tolerance. A slow decay
/// `x' = −x/10` beside a tiny oscillator `y'' = −25 y` of amplitude 1e-8: with one `atol` of
/// 1e-6 the oscillator is below the tolerance, the steps follow `x` alone and `y(4)` is wrong
/// by orders of magnitude; with `atol = [1e-6, 1e-16, 1e-16]` the oscillator is resolved and
/// `y(4) = 1e-8 cos(20)` holds to the relative tolerance, for adaptive and stiff methods.
#[test]
fn per_component_atol_resolves_a_small_component() {
    let exact_y = 1e-8 * 20f64.cos();
    for method in ["dopri5", "tsit5", "rodas4", "bdf"] {
        let rel_err = |atol: &str| {
            let text = format!(
                "state x = 1\nstate y[2] = [1e-8, 0]\ndx/dt = -0.1 * x\ndy/dt = [y[1], -25 * y[0]]\n\
                 schedule {method}(t = [0, 4], rtol = 1e-6, atol = {atol})\n"
            );
            let path = write_model(&format!("atol_{method}.node"), &text);
            let v = run_json(&[&path]);
            let x = v["final"]["x"].as_f64().unwrap();
            assert!((x - (-0.4f64).exp()).abs() < 1e-5, "{method}: x = {x}");
            let y = numbers(&v["final"]["y"]);
            ((y[0] - exact_y) / exact_y).abs()
        };
        let uniform = rel_err("1e-6");
        let per_component = rel_err("[1e-6, 1e-16, 1e-16]");
        assert!(uniform > 0.1, "{method}: {uniform:e}");
        assert!(per_component < 1e-3, "{method}: {per_component:e}");
    }
}

/// Observations outside the schedule's span are an error (`tests/bad/series_times_outside_span`)
/// unless the span reads a const set with `--set`: then the user asked for the shorter span, and
/// the observations it leaves out are a warning with their count while the run goes on.
#[test]
fn a_span_shortened_with_set_warns_of_the_observations_it_leaves_out() {
    let csv = std::fs::read_to_string(root().join("models/data/decay_obs.csv")).unwrap();
    write_model("decay_obs.csv", &csv);
    let model = write_model(
        "decay_fit_span.node",
        "const T = 4\nparam k = 0.3\nstate x = 2\nobserved xobs\ndx/dt = -k * x\n\
         schedule dopri5(t = [0, T], rtol = 1e-10, atol = 1e-12)\n\
         data obs = series(\"decay_obs.csv\", t = 0, values = 1..2)\n\
         cost observed = (x - xobs)^2\n",
    );
    let out = nodec(&["run", &model, "--set", "T=2", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(":7:1: warning: 2 of the 7 observation times in ")
            && stderr.contains(
                "lie outside the span [0, 2] set with `--set` and are left out; the first is t = 3"
            ),
        "{stderr}"
    );
    // The loss is the closed form over the five observations the span keeps.
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let exact: f64 = [0.25, 0.5, 1.0, 1.5, 2.0]
        .iter()
        .map(|t: &f64| (2.0 * (-0.3 * t).exp() - 2.0 * (-0.5 * t).exp()).powi(2))
        .sum();
    let loss = v["loss"].as_f64().unwrap();
    assert!(
        ((loss - exact) / exact).abs() < 1e-8,
        "loss {loss}, closed form {exact}"
    );
    // Without `--set` the full span keeps every observation and nothing is said.
    let out = nodec(&["run", &model, "--format", "json"]);
    assert!(out.status.success() && out.stderr.is_empty());
    // Setting something else does not excuse a span that leaves observations out.
    let short = write_model(
        "decay_fit_short.node",
        &std::fs::read_to_string(&model)
            .unwrap()
            .replace("t = [0, T]", "t = [0, 2]"),
    );
    let out = nodec(&["run", &short, "--set", "k=0.5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":7:1: error: 2 of the 7 observation times"),
        "{stderr}"
    );
}

/// `--out`, `--log` and `--checkpoint` never replace a FIFO or a symlink (a rename over them
/// would turn them into regular files): the command refuses before any work, exit 1, and
/// leaves them as they were. An output directory that does not exist is refused before
/// training starts, not after it ends.
#[test]
fn outputs_that_are_not_regular_files_are_refused_and_left_untouched() {
    let dir = root().join(format!("target/outputs-tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "mkfifo (coreutils) makes the FIFO"
    );
    let target = dir.join("target.json");
    std::fs::write(&target, "kept").unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let paths = [link.clone(), fifo.clone()];
    for path in &paths {
        let p = path.to_str().unwrap();
        for args in [
            vec!["run", "models/decay.node", "--format", "csv", "--out", p],
            vec!["grad", "models/decay_fit.node", "--out", p],
            vec!["train", "models/decay_fit.node", "--quiet", "--log", p],
            vec![
                "train",
                "models/decay_fit.node",
                "--quiet",
                "--checkpoint",
                p,
            ],
        ] {
            let out = nodec(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("nodec writes only regular files"),
                "{stderr}"
            );
        }
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
    if paths.len() == 2 {
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }
    let missing = dir.join("no/such/dir/params.json");
    let out = nodec(&[
        "train",
        "models/decay_fit.node",
        "--quiet",
        "--out",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not take new files"), "{stderr}");
    // Nothing but the three files made above: no temporaries, no probes.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1 + paths.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With `--no-timings`, two identical runs print identical bytes (the JSON `stats` keep their
/// counts and drop wall times and memory); without it the reports carry the times.
#[test]
fn no_timings_makes_identical_runs_print_identical_bytes() {
    for (command, model, timing_key) in [
        ("run", "models/lorenz.node", "solve_seconds"),
        ("grad", "models/decay_fit.node", "gradient_seconds"),
    ] {
        let report = |extra: &[&str]| {
            let mut args = vec![command, model, "--format", "json"];
            args.extend_from_slice(extra);
            let out = nodec(&args);
            assert!(out.status.success(), "{command} {model}");
            String::from_utf8(out.stdout).unwrap()
        };
        let timed = report(&[]);
        assert!(timed.contains(timing_key), "{timed}");
        let (a, b) = (report(&["--no-timings"]), report(&["--no-timings"]));
        assert_eq!(a, b);
        for key in ["seconds", "rss"] {
            assert!(!a.contains(key), "{command}: {key} in {a}");
        }
        assert!(a.contains("\"steps\""), "the counts stay: {a}");
    }
}

/// A parameter file must give every param once: a missing one is an error naming it, unless
/// `--params-partial`; a key given twice (which JSON readers resolve to the last) is an error
/// naming the key and its place.
#[test]
fn params_files_give_every_param_once() {
    let model = write_model(
        "two_params.node",
        "param a = 0.1\nparam b = 0.2\nstate x = 1\ndx/dt = -a * x + b\nschedule rk4(t = [0, 1], steps = 4)\ncost terminal = x^2\n",
    );
    let partial = write_model("partial.json", r#"{"a": 0.5}"#);
    for command in ["run", "grad"] {
        let out = nodec(&[command, &model, "--params", &partial]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("two_params.node:2:1: error: `")
                && stderr.contains("partial.json` has no value for param `b` of the model `two_params`; add it to the file, or pass `--params-partial`"),
            "{command}: {stderr}"
        );
        let out = nodec(&[command, &model, "--params", &partial, "--params-partial"]);
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `b` keeps its declared value.
    let v = run_json(&[&model, "--params", &partial, "--params-partial"]);
    let w = run_json(&[&model, "--set", "a=0.5"]);
    assert_eq!(v["final"], w["final"]);
    // `--params-partial` needs a file to apply to.
    let out = nodec(&["run", &model, "--params-partial"]);
    assert_eq!(out.status.code(), Some(2));
    let twice = write_model("twice.json", "{\"a\": 0.5,\n \"b\": 1,\n \"a\": 0.7}");
    let out = nodec(&["run", &model, "--params", &twice]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "twice.json: error: the key `a` appears twice; give each parameter once at line 3"
        ),
        "{stderr}"
    );
    // In `$shapes` too.
    let twice = write_model(
        "twice_shapes.json",
        r#"{"a": 0.5, "b": 1, "$shapes": {"a": [], "a": []}}"#,
    );
    let out = nodec(&["run", &model, "--params", &twice]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the key `a` appears twice"), "{stderr}");
}

/// A parameter file far larger than the model's parameters could need is refused before it
/// is read and parsed (a 500 MB file used to exhaust memory in the JSON parser).
#[test]
fn an_oversized_parameter_file_is_refused_before_reading() {
    let path = write_model("oversized.json", &" ".repeat((16 << 20) + 1));
    let out = nodec(&["run", "models/decay.node", "--params", &path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the parameter file has 16777217 bytes, more than the 16777216"),
        "{stderr}"
    );
    std::fs::remove_file(&path).unwrap();
}

/// Issue 18: a 0/0 at t = 0 from a zero diagonal was reported as "the solution blows up here"
/// without naming the division. The division is named at its place, with its denominator,
/// for an adaptive method (NaN noticed at t = 0) and a fixed-step one (noticed after a step).
#[test]
fn a_zero_diagonal_at_the_start_names_the_division() {
    let dir = root().join("target").join("run-division");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, schedule, noticed) in [
        ("adaptive.node", "dopri5(t = [0, 1])", "t = 0\n"),
        ("fixed.node", "rk4(t = [0, 1], steps = 10)", "t = 0.1\n"),
    ] {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("param A[2, 2] = [[0, 1], [1, 2]]\nstate x[2] = [1, 1]\ndx/dt = [x[1] / A[0, 0] - x[0], -x[1] / A[1, 1]]\nschedule {schedule}\n"),
        )
        .unwrap();
        let out = nodec(&["run", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "a numeric failure: {stderr}");
        assert!(
            stderr.contains(&format!("{name}:3:10: error: division by zero: `A[0, 0]` is 0 at the start (t = 0), and state x[0] became infinite or NaN at {noticed}")),
            "{stderr}"
        );
        assert!(
            stderr.contains("  3 | dx/dt = [x[1] / A[0, 0] - x[0]"),
            "{stderr}"
        );
    }
    // A NaN without a zero denominator at the start keeps the general message.
    let path = dir.join("blowup.node");
    std::fs::write(
        &path,
        "state x = 1\ndx/dt = x ^ 2\nschedule rk4(t = [0, 10], steps = 10)\n",
    )
    .unwrap();
    let out = nodec(&["run", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the solution blows up here"), "{stderr}");
}

/// `div(v, z)` skips the elements of `z` that `v` never reads (issue 18: a `z[65536]` read at
/// two elements took 4 s to check). With `z` constant, `s(1) = div(v, z)` exactly:
/// ∂(z₀²)/∂z₀ + ∂(z₀z₁)/∂z₁ + ∂(5z₂)/∂z₂ + 0 = 2·1 + 1 + 5 = 8 when only gathers read `z`,
/// and with `sum(z)` reading all of it, each of the 6 elements adds 1 more: 14.
#[test]
fn div_counts_only_the_elements_read() {
    let dir = root().join("target").join("run-div");
    std::fs::create_dir_all(&dir).unwrap();
    for (v, expected) in [
        ("[z[0] ^ 2, z[0] * z[1], 5 * z[2], 0, 0, 0]", 8.0),
        ("[z[0] ^ 2, z[0] * z[1], 5 * z[2], 0, 0, 0] + sum(z)", 14.0),
    ] {
        let path = dir.join("div.node");
        std::fs::write(
            &path,
            format!("state z[6] = [1, 2, 3, 4, 5, 6]\nstate s = 0\nlet v = {v}\ndz/dt = 0 * z\nds/dt = div(v, z)\nschedule rk4(t = [0, 1], steps = 2)\n"),
        )
        .unwrap();
        let out = run_json(&[path.to_str().unwrap()]);
        let s = out["final"]["s"].as_f64().unwrap();
        // rk4 integrates a constant exactly, up to rounding.
        assert!((s - expected).abs() < 1e-12, "{v}: s(1) = {s}");
    }
}

/// A long `run` or `grad` shows that it is moving: off a terminal, a line on stderr every
/// `NODEC_PROGRESS_SECONDS` (ten seconds by default) with the right-hand sides evaluated so
/// far, whose count grows; the report on stdout is the same as without it.
#[test]
fn long_solves_report_progress_on_stderr() {
    let dir = crate::support::root().join("target/progress-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("long.node");
    std::fs::write(
        &model,
        "model long\nparam k = 0.5\nstate x = 1\ndx/dt = -k * x\n\
         schedule rk4(t = [0, 1], steps = 2000000, save = 1)\ncost terminal = x\n",
    )
    .unwrap();
    let model = model.to_str().unwrap();
    for (command, what) in [("run", "solving"), ("grad", "differentiating")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
            .args([command, model, "--no-timings"])
            .env("NODEC_PROGRESS_SECONDS", "0.005")
            .output()
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let counts: Vec<u64> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("nodec: {what}: ")))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(counts.len() >= 2, "{command}: {stderr}");
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert!(*counts.last().unwrap() > 0, "{counts:?}");
        let quiet = crate::support::nodec(&[command, model, "--no-timings"]);
        assert_eq!(
            out.stdout, quiet.stdout,
            "{command}: progress changes the report"
        );
        assert!(
            quiet.stderr.is_empty(),
            "{command}: a short run prints nothing"
        );
    }
}

/// The 1-D Brusselator (N = 40, 80 equations) at every save time against SciPy's Radau at rtol
/// 1e-12 (`tests/data/reference/brusselator.json`, written by
/// `scripts/brusselator_reference.py`), for `bdf` and `rodas4` with the automatic (banded) and the
/// dense LU. The model asks for rtol 1e-6, atol 1e-8; over 10 time units of a limit cycle the
/// global error grows to a few 1e-5, so 2e-4 relative to max(1, |value|) holds with margin and
/// still catches a wrong Jacobian entry (which costs the Rosenbrock method its order).
#[test]
fn brusselator_matches_the_scipy_reference_banded_and_dense() {
    let r = reference("brusselator");
    let rows =
        |key: &str| -> Vec<Vec<f64>> { r[key].as_array().unwrap().iter().map(numbers).collect() };
    let (ref_u, ref_v) = (rows("u"), rows("v"));
    let text = std::fs::read_to_string(root().join("models/brusselator.node")).unwrap();
    let dir = root().join("target/run-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let mut steps = Vec::new();
    for method in ["bdf", "rodas4"] {
        for linear in ["auto", "dense"] {
            let edited = text
                .replace("schedule bdf(", &format!("schedule {method}("))
                .replace("save = 1)", &format!("save = 1, linear = {linear})"));
            assert!(edited.contains(&format!("linear = {linear}")));
            let path = dir.join(format!("brusselator_{method}_{linear}.node"));
            std::fs::write(&path, edited).unwrap();
            let v = run_json(&[path.to_str().unwrap()]);
            assert_eq!(numbers(&v["t"]), numbers(&r["t"]));
            for (state, want) in [("u", &ref_u), ("v", &ref_v)] {
                let got = &v["states"][state];
                for (k, want_row) in want.iter().enumerate() {
                    let got_row = numbers(&got[k]);
                    for (j, (g, w)) in got_row.iter().zip(want_row).enumerate() {
                        assert!(
                            (g - w).abs() <= 2e-4 * w.abs().max(1.0),
                            "{method} {linear}: {state}[{j}](t = {k}) = {g}, reference {w}"
                        );
                    }
                }
            }
            steps.push((method, linear, v["stats"]["steps"].as_u64().unwrap()));
        }
    }
    // The banded LU solves the same systems as the dense one, to rounding: the step sequence
    // of each method is the same.
    assert_eq!(steps[0].2, steps[1].2, "{steps:?}");
    assert_eq!(steps[2].2, steps[3].2, "{steps:?}");
}
