//! Forward sensitivities: a closed form, finite differences through adaptive and stiff solves,
//! agreement with backprop on every coordinate of fixed-step schedules (both are exact
//! derivatives of the same discrete map), the size limit and thread-count independence.

use nodec::cli::run::{load, Loaded};
use nodec::cli::Output;
use nodec::data::Dataset;
use nodec::ir::GradientMethod;
use nodec::sema::Overrides;
use nodec::sens::{self, GradientError, GradientOptions};

use crate::grad::{finite_difference, load_small};

fn options(method: GradientMethod, limit: Option<usize>) -> GradientOptions {
    let mut o = GradientOptions::new(method);
    o.forward_limit = limit;
    o
}

fn forward(l: &Loaded, data: &Dataset) -> sens::Gradient {
    let total = l.program.layout().total;
    sens::gradient(
        &l.bind(data),
        &options(GradientMethod::Forward, Some(total)),
    )
    .expect("forward gradient")
}

fn backprop(l: &Loaded, data: &Dataset) -> sens::Gradient {
    sens::gradient(
        &l.bind(data),
        &GradientOptions::new(GradientMethod::Backprop),
    )
    .expect("backprop gradient")
}

/// Loads a model from source text (written to a temporary file, since data paths and
/// diagnostics are relative to a file) and keeps its first `n` samples.
fn load_text(name: &str, text: &str, n: usize) -> (Loaded, Dataset) {
    let dir = std::env::temp_dir().join(format!("nodec-grad-forward-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write model");
    let mut out = Output::default();
    let loaded = load(
        path.to_str().unwrap(),
        &Overrides::default(),
        0,
        None,
        &mut out,
    )
    .unwrap_or_else(|| panic!("{name} loads: {}", out.stderr));
    let full = loaded.data[0].1.clone();
    let keep: Vec<usize> = (0..full.n.min(n)).collect();
    let data = full.select(&keep);
    (loaded, data)
}

/// A model from `models/` with its schedule line replaced.
fn with_schedule(model: &str, schedule: &str) -> String {
    let text = std::fs::read_to_string(crate::support::root().join("models").join(model))
        .expect("model readable");
    text.lines()
        .map(|l| {
            if l.starts_with("schedule ") {
                schedule.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `|f − b| ≤ tol · |b|` on every coordinate; coordinates whose exact value is zero (a
/// parameter the loss does not reach) must come out as (almost) zero on both sides.
fn assert_close(name: &str, f: &[f64], b: &[f64], tol: f64) {
    assert_eq!(f.len(), b.len(), "{name}: gradient lengths");
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (i, (x, y)) in f.iter().zip(b).enumerate() {
        let err = (x - y).abs();
        assert!(
            err <= tol * y.abs().max(1e-12 * scale),
            "{name}: coordinate {i}: forward {x} vs backprop {y} (err {err:e})"
        );
    }
}

#[test]
fn decay_terminal_matches_the_closed_form() {
    let (l, data) = load_small("decay.node", &[], 1);
    let g = forward(&l, &data);
    let exact = -4.0 * 2.0 * (-2.0f64).exp();
    assert!((exact - -1.0826822658929016f64).abs() < 1e-15);
    assert!(
        (g.grad[0] - exact).abs() <= 1e-8,
        "d x(4)/dk = {} vs {exact}",
        g.grad[0]
    );
    assert!((g.simulation.loss - 2.0 * (-2.0f64).exp()).abs() < 1e-9);
}

#[test]
fn decay_fit_observed_costs_match_finite_differences() {
    let (l, data) = load_small("decay_fit.node", &[], 1);
    let g = forward(&l, &data);
    for (i, &gi) in g.grad.iter().enumerate() {
        let fd = finite_difference(&l, &data, i, 1e-4);
        assert!(
            (gi - fd).abs() <= 1e-6 * fd.abs(),
            "coordinate {i}: forward {gi} vs finite difference {fd}"
        );
    }
}

#[test]
fn fixed_step_forward_equals_backprop() {
    for (name, n) in [
        ("resnet_euler.node", 20),
        ("lm_resnet.node", 12),
        ("evolutionary_weights.node", 10),
        ("circles_anode.node", 10),
        ("cnf_moons.node", 10),
        ("crowd_motion.node", 10),
    ] {
        let (l, data) = load_small(name, &[], n);
        let f = forward(&l, &data);
        let b = backprop(&l, &data);
        assert_eq!(
            f.simulation.loss.to_bits(),
            b.simulation.loss.to_bits(),
            "{name}: the loss is the plain solve's"
        );
        assert_close(name, &f.grad, &b.grad, 1e-10);
    }
}

#[test]
fn other_fixed_step_methods_equal_backprop() {
    // Every explicit fixed-step method on a model with per-layer weights and a running cost.
    for method in ["midpoint", "heun", "ab2"] {
        let text = with_schedule(
            "crowd_motion.node",
            &format!("schedule {method}(t = [0, 1], steps = 7)"),
        );
        let (l, data) = load_text(&format!("crowd_{method}.node"), &text, 6);
        let f = forward(&l, &data);
        let b = backprop(&l, &data);
        assert_close(method, &f.grad, &b.grad, 1e-10);
    }
    // Leapfrog with a quadrature (the running cost, which reads the label: lanes bind their
    // own sample) outside q and p.
    let text = "model hamiltonian\n\
        input u[2]\n\
        label y\n\
        param W[2, 2] ~ normal(0, 0.5)\n\
        param b[2] per layer = 0.1\n\
        param c = 0.7\n\
        state q[2] = u\n\
        state p[2] = [0.5 * c, 0]\n\
        dq/dt = c * p\n\
        dp/dt = -tanh(W * q + b)\n\
        schedule leapfrog(t = [0, 1], steps = 6, position = q, momentum = p)\n\
        cost terminal = sumsq(q) * (1 + y)\n\
        cost running = 0.1 * c * sumsq(p) + 0.01 * (1 + y) * sumsq(W * q + b)\n\
        data train = moons(n = 40, noise = 0.1, seed = 2)\n";
    let (l, data) = load_text("hamiltonian.node", text, 35);
    let f = forward(&l, &data);
    let b = backprop(&l, &data);
    assert_close("leapfrog", &f.grad, &b.grad, 1e-10);
}

#[test]
fn adaptive_and_stiff_methods_match_finite_differences() {
    let base = "model vdp_cost\n\
        param mu = 1.5\n\
        param a = 0.3\n\
        state x = 2 * a + 1\n\
        state y = 0\n\
        dx/dt = y\n\
        dy/dt = mu * (1 - x^2) * y - x\n\
        cost terminal = x^2 + 0.5 * y\n\
        cost running = 0.1 * a * x^2\n";
    for schedule in [
        "schedule tsit5(t = [0, 3], rtol = 1e-10, atol = 1e-12)",
        "schedule bosh3(t = [0, 3], rtol = 1e-10, atol = 1e-12)",
        "schedule bdf(t = [0, 3], rtol = 1e-9, atol = 1e-11)",
        "schedule rodas4(t = [0, 3], rtol = 1e-9, atol = 1e-11)",
        "schedule implicit_euler(t = [0, 3], steps = 60)",
    ] {
        let text = format!("{base}{schedule}\n");
        let (l, data) = load_text("vdp_cost.node", &text, 1);
        let g = forward(&l, &data);
        for (i, &gi) in g.grad.iter().enumerate() {
            let fd = finite_difference(&l, &data, i, 1e-4);
            assert!(
                (gi - fd).abs() <= 1e-5 * fd.abs(),
                "{schedule}: coordinate {i}: forward {gi} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn running_costs_in_adaptive_blocks_match_finite_differences() {
    // Several samples in one lockstep block: the running cost's parameter tangent is per lane.
    let text = with_schedule(
        "crowd_motion.node",
        "schedule dopri5(t = [0, 1], rtol = 1e-11, atol = 1e-13)",
    );
    let (l, data) = load_text("crowd_dopri5.node", &text, 5);
    let g = forward(&l, &data);
    let scale = g.grad.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for i in (0..g.grad.len()).step_by(7) {
        let fd = finite_difference(&l, &data, i, 1e-4);
        assert!(
            (g.grad[i] - fd).abs() <= 1e-6 * fd.abs().max(1e-2 * scale),
            "coordinate {i}: forward {} vs finite difference {fd}",
            g.grad[i]
        );
    }
}

#[test]
fn refuses_above_the_limit_and_raising_it_works() {
    let (l, data) = load_small("crowd_motion.node", &[], 3);
    let total = l.program.layout().total;
    assert!(total > sens::DEFAULT_FORWARD_LIMIT);
    let err = sens::gradient(
        &l.bind(&data),
        &GradientOptions::new(GradientMethod::Forward),
    )
    .expect_err("too many coordinates");
    assert_eq!(
        err,
        GradientError::ForwardLimit {
            params: total,
            limit: sens::DEFAULT_FORWARD_LIMIT
        }
    );
    let message = err.to_string();
    for part in [
        "forward sensitivities need one solve per parameter coordinate",
        &format!("this model has {total}"),
        "--method backprop",
        "--forward-limit",
    ] {
        assert!(message.contains(part), "{message}");
    }
    let err = sens::gradient(
        &l.bind(&data),
        &options(GradientMethod::Forward, Some(total - 1)),
    )
    .expect_err("one below");
    assert!(matches!(err, GradientError::ForwardLimit { .. }));
    let g = sens::gradient(
        &l.bind(&data),
        &options(GradientMethod::Forward, Some(total)),
    )
    .expect("limit raised");
    assert_eq!(g.grad.len(), total);
}

#[test]
fn bits_do_not_depend_on_the_thread_count() {
    let cases = [
        load_small("resnet_euler.node", &[], 37),
        load_small("cnf_moons.node", &[], 34),
        load_small("decay_fit.node", &[], 1),
    ];
    for (l, data) in &cases {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| forward(l, data))
        };
        let (a, b) = (run(1), run(2));
        let bits = |g: &sens::Gradient| g.grad.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{}", l.model.name);
        assert_eq!(a.simulation.loss.to_bits(), b.simulation.loss.to_bits());
    }
}
