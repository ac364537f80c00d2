//! Gradients through the solve: every method against finite differences of the loss, and the
//! identities that tie them to theory (costates, LM with k = 0, per-layer locality, bits).

use nodec::cli::run::{load, Loaded};
use nodec::cli::Output;
use nodec::compile::Params;
use nodec::data::Dataset;
use nodec::ir::GradientMethod;
use nodec::sema::Overrides;
use nodec::sens::{self, GradientOptions};

use crate::support::{root, Lcg};

/// Loads `models/NAME` with overrides and keeps the first `n` samples of its first data block.
pub fn load_small(name: &str, sets: &[(&str, f64)], n: usize) -> (Loaded, Dataset) {
    let path = root().join("models").join(name);
    load_path(path.to_str().unwrap(), sets, n)
}

/// Writes a test model (and `models/data/`, so relative data paths resolve) under `target/`.
pub fn write_model(name: &str, text: &str) -> String {
    let dir = root().join("target/grad-tmp");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let file = "decay_obs.csv";
    std::fs::copy(
        root().join("models/data").join(file),
        dir.join("data").join(file),
    )
    .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A model from `models/` with its schedule line replaced, written under `target/`.
pub fn with_schedule(name: &str, schedule: &str) -> String {
    let text = std::fs::read_to_string(root().join("models").join(name)).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("schedule ") {
                schedule
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let method = schedule
        .split('(')
        .next()
        .unwrap()
        .trim_start_matches("schedule ");
    write_model(&format!("{method}_{name}"), &text)
}

/// Loads a model file with overrides and keeps the first `n` samples of its first data block.
pub fn load_path(path: &str, sets: &[(&str, f64)], n: usize) -> (Loaded, Dataset) {
    let mut overrides = Overrides::default();
    for (k, v) in sets {
        overrides.values.push((k.to_string(), *v));
    }
    let mut out = Output::default();
    let loaded = load(path, &overrides, 0, None, &mut out)
        .unwrap_or_else(|| panic!("{path} loads: {}", out.stderr));
    let full = loaded.data[0].1.clone();
    let keep: Vec<usize> = (0..full.n.min(n)).collect();
    let data = if full.times.is_some() {
        full
    } else {
        full.select(&keep)
    };
    (loaded, data)
}

pub(crate) fn loss(l: &Loaded, params: &Params, data: &Dataset) -> f64 {
    l.bind(data)
        .with_params(params)
        .simulate(None)
        .expect("solves")
        .loss
}

/// Central difference of the loss along coordinate `i`, fourth order (five points), so that
/// truncation error sits far below the tolerances checked.
pub(crate) fn finite_difference(l: &Loaded, data: &Dataset, i: usize, step: f64) -> f64 {
    let at = |d: f64| {
        let mut p = l.params.clone();
        p.values_mut()[i] += d;
        loss(l, &p, data)
    };
    (at(-2.0 * step) - 8.0 * at(-step) + 8.0 * at(step) - at(2.0 * step)) / (12.0 * step)
}

pub(crate) fn gradient(l: &Loaded, data: &Dataset, method: GradientMethod) -> sens::Gradient {
    sens::gradient(&l.bind(data), &GradientOptions::new(method)).expect("gradient")
}

/// Random coordinates (and always the first and last) of a gradient compared with finite
/// differences: `|g − fd| ≤ tol · max(|fd|, scale)` where `scale` is the gradient's largest
/// entry, so that tiny entries are judged against the gradient's size.
pub(crate) fn check_against_fd(
    name: &str,
    l: &Loaded,
    data: &Dataset,
    g: &[f64],
    tol: f64,
    picks: usize,
) {
    let total = g.len();
    let scale = g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mut rng = Lcg(total as u64 + 17);
    let mut coords = vec![0, total - 1];
    coords.extend((0..picks).map(|_| (rng.uniform(0.0, total as f64) as usize).min(total - 1)));
    for i in coords {
        let fd = finite_difference(l, data, i, 1e-4);
        let err = (g[i] - fd).abs();
        assert!(
            err <= tol * fd.abs().max(scale),
            "{name}: coordinate {i}: gradient {} vs finite difference {fd} (err {err:e}, scale {scale:e})",
            g[i]
        );
    }
}

#[test]
fn backprop_matches_finite_differences_of_the_discrete_map() {
    // Fixed-step models; each with a partial block (n not a multiple of 32).
    for (name, n) in [
        ("resnet_euler.node", 37),
        ("lm_resnet.node", 37),
        ("evolutionary_weights.node", 20),
        ("circles_anode.node", 20),
        ("cnf_moons.node", 20),
        ("crowd_motion.node", 20),
    ] {
        let (l, data) = load_small(name, &[], n);
        let g = gradient(&l, &data, GradientMethod::Backprop);
        check_against_fd(name, &l, &data, &g.grad, 1e-9, 12);
    }
}

/// Small models that exercise every fixed-step method's reverse, knots, observed costs between
/// grid points, and leapfrog with a running cost (a component outside q and p).
const LEAPFROG: &str = "model leapfrog_fit
param w[2] ~ normal(0, 1)
param k = 1.3
state q[2] = [1, 0.5]
state v[2] = [0, 0.2]
dq/dt = v
dv/dt = -k * q + tanh(w .* q)
schedule leapfrog(t = [0, 2], steps = 20, position = q, momentum = v)
cost terminal = sumsq(q) + 0.3 * sum(v)
cost running = 0.1 * sumsq(v)
";

const KNOTS: &str = "model knots_fit
param a[2] on knots(0, 0.3, 1) ~ normal(0, 1)
param c = 0.2
state x[2] = [1, -1]
dx/dt = a .* tanh(x) + c * t
schedule rk4(t = [0, 1], steps = 8)
cost terminal = sumsq(x)
cost running = 0.5 * sumsq(der(x))
";

#[test]
fn backprop_of_every_fixed_step_method_matches_finite_differences() {
    let mut paths = vec![
        write_model("leapfrog_fit.node", LEAPFROG),
        write_model("knots_fit.node", KNOTS),
        // Observation times fall between the grid points of 7 steps over [0, 4].
        with_schedule("decay_fit.node", "schedule euler(t = [0, 4], steps = 7)"),
        with_schedule("decay_fit.node", "schedule rk4(t = [0, 4], steps = 16)"),
    ];
    for method in ["midpoint", "heun", "rk4", "ab2", "lm"] {
        let k = if method == "lm" { ", k = -0.3" } else { "" };
        paths.push(with_schedule(
            "resnet_euler.node",
            &format!("schedule {method}(t = [0, 1], steps = 10{k})"),
        ));
    }
    for path in paths {
        let (l, data) = load_path(&path, &[], 19);
        let g = gradient(&l, &data, GradientMethod::Backprop);
        check_against_fd(&path, &l, &data, &g.grad, 1e-9, 10);
    }
}

/// A 4096-wide layer's activations (1 MB per evaluation of a 32-sample block) make the
/// record too large to keep with them: by default backprop keeps every step without them and
/// the VJP recomputes them, re-running no step, with the bits of the runs that keep them.
#[test]
fn wide_activations_are_recomputed_not_recorded() {
    let path = root().join("benches/data/wide/wide_4096.node");
    let (l, data) = load_path(path.to_str().unwrap(), &[], 32);
    let default = gradient(&l, &data, GradientMethod::Backprop);
    // rk4 × 4: 4 evaluations per step and sample forward.
    let forward_evals = 4 * 4 * 32;
    assert_eq!(default.stats.rhs_evals, forward_evals, "no step re-run");
    for (segment, recomputed_steps) in [(4, 0), (1, 3)] {
        let mut options = GradientOptions::new(GradientMethod::Backprop);
        options.segment = Some(segment);
        let g = sens::gradient(&l.bind(&data), &options).unwrap();
        assert_eq!(g.grad, default.grad, "segment {segment}");
        assert_eq!(
            g.stats.rhs_evals,
            forward_evals + 4 * recomputed_steps * 32,
            "segment {segment}"
        );
    }
}

#[test]
fn checkpointing_and_threads_do_not_change_a_bit() {
    let (l, data) = load_small("cnf_moons.node", &[], 70);
    let reference = gradient(&l, &data, GradientMethod::Backprop);
    // rk4 × 8: 4 evaluations per step and sample forward.
    let forward_evals = 4 * 8 * 70;
    for (segment, recomputed_steps) in [(1, 7), (3, 6), (8, 0)] {
        let mut options = GradientOptions::new(GradientMethod::Backprop);
        options.segment = Some(segment);
        let g = sens::gradient(&l.bind(&data), &options).unwrap();
        assert_eq!(g.grad, reference.grad, "segment {segment}");
        assert_eq!(
            g.simulation.loss.to_bits(),
            reference.simulation.loss.to_bits()
        );
        // The last segment is recorded by the forward pass; only the others are run again.
        assert_eq!(
            g.stats.rhs_evals,
            forward_evals + 4 * recomputed_steps * 70,
            "segment {segment}"
        );
    }
    backprop_is_the_same_on_1_2_and_3_threads(&l, &data, &reference);
    // The loss is the one `nodec run` computes, bit for bit.
    let plain = loss(&l, &l.params, &data);
    assert_eq!(plain.to_bits(), reference.simulation.loss.to_bits());
}

/// From 256 samples a batch runs in 64-sample blocks (`solve::block_width`). The gradient of
/// 300 samples (four wide blocks and a partial one) must be the sample-weighted mean of the
/// gradients of its first 256 (wide blocks) and its last 44 (one narrow block): the loss is a
/// mean over samples, so only the order of the sums differs. And it must not depend on the
/// number of threads.
#[test]
fn wide_blocks_give_the_narrow_blocks_gradient_at_any_thread_count() {
    assert_eq!(nodec::solve::block_width(255), 32);
    assert_eq!(nodec::solve::block_width(256), 64);
    let (l, data) = load_small("cnf_moons.node", &[], 300);
    assert_eq!(data.n, 300);
    let all = gradient(&l, &data, GradientMethod::Backprop);
    let part = |range: std::ops::Range<usize>| {
        let keep: Vec<usize> = range.collect();
        (
            keep.len() as f64,
            gradient(&l, &data.select(&keep), GradientMethod::Backprop),
        )
    };
    let (head, tail) = (part(0..256), part(256..300));
    let scale = all.grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    for (k, g) in all.grad.iter().enumerate() {
        let mean = (head.0 * head.1.grad[k] + tail.0 * tail.1.grad[k]) / 300.0;
        assert!(
            (g - mean).abs() <= 1e-13 * scale,
            "entry {k}: {g} against {mean}"
        );
    }
    let loss = (head.0 * head.1.simulation.loss + tail.0 * tail.1.simulation.loss) / 300.0;
    assert!((all.simulation.loss - loss).abs() <= 1e-13 * loss.abs());
    backprop_is_the_same_on_1_2_and_3_threads(&l, &data, &all);
}

fn backprop_is_the_same_on_1_2_and_3_threads(
    l: &Loaded,
    data: &Dataset,
    reference: &sens::Gradient,
) {
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let g = pool.install(|| gradient(l, data, GradientMethod::Backprop));
        assert_eq!(g.grad, reference.grad, "{threads} threads");
    }
}

#[test]
fn lm_with_zero_coefficients_is_the_euler_resnet() {
    let euler = with_schedule("lm_resnet.node", "schedule euler(t = [0, 1], steps = 10)");
    let (lm, data) = load_path(
        root().join("models/lm_resnet.node").to_str().unwrap(),
        &[("kappa", 0.0)],
        40,
    );
    let (eu, data_eu) = load_path(&euler, &[("kappa", 0.0)], 40);
    assert_eq!(data.inputs, data_eu.inputs);
    assert_eq!(
        lm.params.values(),
        eu.params.values(),
        "same seed, same weights"
    );
    let g_lm = gradient(&lm, &data, GradientMethod::Backprop);
    let g_eu = gradient(&eu, &data, GradientMethod::Backprop);
    assert_eq!(g_lm.simulation.loss, g_eu.simulation.loss);
    let layout = lm.program.layout();
    for entry in &layout.entries {
        let range = entry.offset..entry.offset + entry.len() * entry.copies;
        if entry.name == "kappa" {
            // Euler ignores kappa; LM's loss does depend on it.
            assert!(g_eu.grad[range.clone()].iter().all(|&g| g == 0.0));
            assert!(g_lm.grad[range].iter().any(|&g| g != 0.0));
        } else {
            assert_eq!(g_lm.grad[range.clone()], g_eu.grad[range], "{}", entry.name);
        }
    }
}

#[test]
fn a_layer_the_loss_does_not_see_gets_zero_gradient() {
    // The field is switched off for t >= 0.5: layers 5..9 cannot matter.
    let text = std::fs::read_to_string(root().join("models/resnet_euler.node"))
        .unwrap()
        .replace(
            "dx/dt = K2 * tanh(K1 * x + b)",
            "dx/dt = (t < 0.5) * (K2 * tanh(K1 * x + b))",
        )
        .replace("cost penalty = 1e-4 * (sumsq(K1) + sumsq(K2))", "");
    let path = write_model("half_resnet.node", &text);
    let (l, data) = load_path(&path, &[], 40);
    let g = gradient(&l, &data, GradientMethod::Backprop);
    for entry in &l.program.layout().entries {
        if entry.copies != 10 {
            continue;
        }
        for layer in 0..10 {
            let start = entry.offset + layer * entry.len();
            let values = &g.grad[start..start + entry.len()];
            let zero = values.iter().all(|&v| v == 0.0);
            assert_eq!(zero, layer >= 5, "{} layer {layer}: {values:?}", entry.name);
        }
    }
}

#[test]
fn costates_follow_pontryagins_conventions() {
    // Autonomous, constant weights, terminal cost only: H = p·f is constant along the exact
    // flow; RK4 with 200 steps keeps it to ~h⁴.
    let text = "model costate_check
param A[2, 2] = [[-0.3, 1.2], [-1.1, 0.1]]
param b[2] = [0.2, -0.4]
state x[2] = [1, 0.5]
dx/dt = A * tanh(x) + b
schedule rk4(t = [0, 2], steps = 200)
cost terminal = sumsq(x - [0.5, 0.2]) + x[0]^3
";
    let path = write_model("costate_check.node", text);
    let (l, data) = load_path(&path, &[], 1);
    let mut options = GradientOptions::new(GradientMethod::Backprop);
    options.costates = true;
    let g = sens::gradient(&l.bind(&data), &options).unwrap();
    let c = g.costates.unwrap();
    let h0 = c.hamiltonian[0];
    for h in &c.hamiltonian {
        assert!((h - h0).abs() < 1e-9 * h0.abs().max(1.0), "H {h} vs {h0}");
    }
    // p(T) = −∂Φ/∂x(T), from the final state by hand.
    let last = c.t.len() - 1;
    let x = g.simulation.solution.state(last, 0);
    let p_t = &c.p[last * 2..last * 2 + 2];
    let dphi = [2.0 * (x[0] - 0.5) + 3.0 * x[0] * x[0], 2.0 * (x[1] - 0.2)];
    for i in 0..2 {
        assert!(
            (p_t[i] + dphi[i]).abs() < 1e-13,
            "p(T) {p_t:?} vs −∂Φ/∂x {dphi:?}"
        );
    }
    // p(0) = −∂loss/∂x(0), which finite differences of the initial state confirm.
    let p0 = &c.p[0..2];
    assert_eq!(p0, &[-g.initial_cotangent[0], -g.initial_cotangent[1]]);
    for i in 0..2 {
        let step = 1e-5;
        let at = |d: f64| {
            let shifted = text.replace(
                "state x[2] = [1, 0.5]",
                &format!(
                    "state x[2] = [{}, {}]",
                    1.0 + if i == 0 { d } else { 0.0 },
                    0.5 + if i == 1 { d } else { 0.0 }
                ),
            );
            let path = write_model(&format!("costate_shift_{i}.node"), &shifted);
            let (l, data) = load_path(&path, &[], 1);
            loss(&l, &l.params, &data)
        };
        let fd = (at(step) - at(-step)) / (2.0 * step);
        assert!(
            (-p0[i] - fd).abs() < 1e-7 * fd.abs().max(1.0),
            "p(0) {p0:?} vs fd {fd}"
        );
    }
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let out = crate::support::nodec(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn nodec_grad_prints_loss_and_every_parameter_by_name() {
    let v = json_of(&["grad", "models/resnet_euler.node", "--format", "json"]);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["model", "method", "loss", "grad", "stats"]);
    assert_eq!(v["method"], "backprop");
    let run = json_of(&["run", "models/resnet_euler.node", "--format", "json"]);
    assert_eq!(v["loss"], run["loss"], "the loss is the one `run` reports");
    let grad = v["grad"].as_object().unwrap();
    let names: Vec<&String> = grad.keys().collect();
    assert_eq!(names, ["K1", "b", "K2", "head", "bias"]);
    // Per-layer: layers outermost, 10 layers of [8, 2].
    assert_eq!(grad["K1"].as_array().unwrap().len(), 160);
    assert!(grad["bias"].is_number());
    // The same numbers as the library, element for element.
    let (l, data) = load_small("resnet_euler.node", &[], 512);
    let g = gradient(&l, &data, GradientMethod::Backprop);
    let k1 = l
        .program
        .layout()
        .entries
        .iter()
        .find(|e| e.name == "K1")
        .unwrap();
    let first: f64 = grad["K1"][0].as_f64().unwrap();
    assert_eq!(first, g.grad[k1.offset]);
}

#[test]
fn nodec_grad_refuses_what_it_cannot_differentiate() {
    let out = crate::support::nodec(&["grad", "models/lorenz.node"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no cost to differentiate"), "{err}");
    let out = crate::support::nodec(&["grad", "models/robertson.node", "--method", "backprop"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn run_with_costate_reports_p_and_the_hamiltonian() {
    let v = json_of(&[
        "run",
        "models/resnet_euler.node",
        "--format",
        "json",
        "--costate",
        "--sample",
        "3",
    ]);
    let p = v["costates"]["x"].as_array().unwrap();
    let t = v["t"].as_array().unwrap();
    assert_eq!(p.len(), t.len());
    assert_eq!(v["hamiltonian"].as_array().unwrap().len(), t.len());
    // p(T) = −∂Φ/∂x for Φ = bce(sigmoid(head·x + bias), y): −(σ − y) head.
    let (l, data) = load_small("resnet_euler.node", &[], 512);
    let layout = l.program.layout();
    let get = |name: &str| {
        let e = layout.entries.iter().find(|e| e.name == name).unwrap();
        l.params.values()[e.offset..e.offset + e.len()].to_vec()
    };
    let (head, bias) = (get("head"), get("bias")[0]);
    let x_t: Vec<f64> = v["final"]["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let y = data.label(3).unwrap();
    let sigma = 1.0 / (1.0 + (-(head[0] * x_t[0] + head[1] * x_t[1] + bias)).exp());
    let p_t: Vec<f64> = p
        .last()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    for i in 0..2 {
        let expected = -(sigma - y) * head[i];
        assert!(
            (p_t[i] - expected).abs() < 1e-12,
            "p(T) {p_t:?}, expected {expected}"
        );
    }
}

#[test]
fn a_penalty_charges_every_layer_and_knot_of_time_varying_params_and_the_rest_once() {
    // The field ignores the params, so the loss gradient is the penalty's alone.
    let path = write_model(
        "penalty_copies.node",
        "model penalty_copies\n\
         param K[2] per layer ~ normal(0, 1)\n\
         param c on knots(0, 0.5, 1) ~ normal(0, 1)\n\
         param a[2] ~ normal(0, 1)\n\
         state x = 1\n\
         dx/dt = -x\n\
         schedule euler(t = [0, 1], steps = 4)\n\
         cost terminal = x * x\n\
         cost penalty = 0.5 * (sumsq(K) + sumsq(a)) + 3 * c * c\n",
    );
    let (l, data) = load_path(&path, &[], 1);
    let entry = |name: &str| {
        l.program
            .layout()
            .entries
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .clone()
    };
    let (k, c, a) = (entry("K"), entry("c"), entry("a"));
    assert_eq!((k.copies, c.copies, a.copies), (4, 3, 1));
    let values = l.params.values();
    let slice = |e: &nodec::compile::ParamEntry| &values[e.offset..e.offset + e.copies * e.len()];
    let sumsq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
    let penalty = 0.5 * (sumsq(slice(&k)) + sumsq(slice(&a))) + 3.0 * sumsq(slice(&c));
    let terminal = 0.75f64.powi(8); // x(1) = (1 − h)^4 with h = 1/4, cost x²
    let g = gradient(&l, &data, GradientMethod::Backprop);
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-14 * (1.0 + y.abs());
    assert!(
        close(g.simulation.loss, terminal + penalty),
        "loss {} against {}",
        g.simulation.loss,
        terminal + penalty
    );
    for (e, scale) in [(&k, 1.0), (&a, 1.0), (&c, 6.0)] {
        for i in 0..e.copies * e.len() {
            let want = scale * values[e.offset + i];
            assert!(
                close(g.grad[e.offset + i], want),
                "∂/∂{}[{i}] = {} against {want}",
                e.name,
                g.grad[e.offset + i]
            );
        }
    }
}
