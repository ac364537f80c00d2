//! The library's trained models reach their targets: `digits_odenet` classifies held-out
//! digits, `otflow_moons` fits the density of the moons. The full runs take minutes in the test
//! profile and are ignored (run them with
//! `cargo test --release --test it -- --ignored train_models --test-threads=1`, so that the two
//! runs do not share the cores and the wall times mean something); each has a CI-sized companion
//! that trains a few epochs and checks that the model learns.

use std::time::Instant;

use crate::support::{edited_model, root};

fn tmp(name: &str) -> String {
    let dir = root().join("target/train-models-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_str().unwrap().to_string()
}

/// `nodec train MODEL ARGS --quiet --out PARAMS` on 2 threads; returns the parameter file.
fn train(model: &str, args: &[&str], out: &str) -> String {
    let path = tmp(out);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
        .arg("train")
        .arg(model)
        .args(args)
        .args(["--quiet", "--out", &path])
        .env("RAYON_NUM_THREADS", "2")
        .current_dir(root())
        .output()
        .expect("nodec runs");
    assert!(
        output.status.success(),
        "{model}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

/// The `nodec run --format json` report, with `params` if given.
fn run(model: &str, params: Option<&str>) -> serde_json::Value {
    let mut args = vec!["run", model, "--format", "json"];
    if let Some(p) = params {
        args.extend(["--params", p]);
    }
    let out = crate::support::nodec(&args);
    assert!(
        out.status.success(),
        "{model}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A metric of a data block in a `run` report.
fn metric(report: &serde_json::Value, block: &str, name: &str) -> f64 {
    report["data"][block]["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric `{name}` on `{block}` in {report}"))
}

/// A copy of a model from `models/` with `edits` applied, in `target/`.
fn edited(name: &str, edits: &[(&str, &str)]) -> String {
    edited_model(name, &tmp(name), edits)
}

/// Figures of the ignored runs, shown with `--nocapture`.
#[allow(clippy::print_stderr)]
fn report(line: &str) {
    eprintln!("{line}");
}

const DIGITS: &str = "models/digits_odenet.node";
const MOONS: &str = "models/otflow_moons.node";

/// Two epochs on the 1400 training digits lift held-out accuracy from chance (about 10%) to
/// well above 80%: the embedding, the ODE block, the head, `cross_entropy` and `argmax` work
/// together.
#[test]
fn digits_odenet_learns_in_two_epochs() {
    let short = edited("digits_odenet.node", &[("epochs = 60", "epochs = 2")]);
    let before = metric(&run(&short, None), "test", "accuracy");
    assert!(before < 0.3, "untrained test accuracy {before}");
    let params = train(&short, &[], "digits_short.json");
    let after = metric(&run(&short, Some(&params)), "test", "accuracy");
    assert!(
        after > 0.8,
        "test accuracy {before} → {after} after 2 epochs"
    );
}

/// The full run: at least 97% accuracy on the 397 held-out digits for two initialisations,
/// and (in a release build) in under two minutes.
#[test]
#[ignore = "slow: trains digits_odenet twice in full (20–50 s each in release)"]
fn digits_odenet_reaches_97_percent_test_accuracy() {
    for seed in ["0", "1"] {
        let started = Instant::now();
        let params = train(DIGITS, &["--seed", seed], &format!("digits_{seed}.json"));
        let seconds = started.elapsed().as_secs_f64();
        let report_json = run(DIGITS, Some(&params));
        let train_acc = metric(&report_json, "train", "accuracy");
        let test_acc = metric(&report_json, "test", "accuracy");
        report(&format!(
            "digits_odenet seed {seed}: train accuracy {train_acc:.4}, test accuracy {test_acc:.4}, {seconds:.1} s"
        ));
        assert!(test_acc >= 0.97, "seed {seed}: test accuracy {test_acc}");
        if !cfg!(debug_assertions) {
            assert!(seconds < 120.0, "seed {seed}: training took {seconds:.1} s");
        }
    }
}

/// Three epochs on 1024 moons halve the held-out negative log-likelihood (from about 2.9 nats
/// to about 1.4): the potential's gradient, its exact Laplacian and both running costs train.
#[test]
fn otflow_moons_learns_in_three_epochs() {
    let short = edited(
        "otflow_moons.node",
        &[
            ("moons(n = 8192", "moons(n = 1024"),
            ("epochs = 60", "epochs = 3"),
        ],
    );
    let before = run(&short, None);
    let nll_before = metric(&before, "test", "nll");
    assert!(nll_before > 2.5, "untrained NLL {nll_before}");
    let params = train(&short, &[], "moons_short.json");
    let after = run(&short, Some(&params));
    let nll_after = metric(&after, "test", "nll");
    assert!(
        nll_after < nll_before - 1.0,
        "test NLL {nll_before} → {nll_after} after 3 epochs"
    );
    let running = after["data"]["test"]["costs"]["running"].as_f64().unwrap();
    assert!(running > 0.0 && running < 0.1, "running costs {running}");
}

/// The full run: a held-out NLL of at most 0.45 nats for two initialisations (OT-Flow reports
/// 0.39 on its moons; the data's entropy is about 0.29). The HJB and transport costs make the
/// paths straight enough that 16 RK4 steps give the same NLL as the 4 trained with.
#[test]
#[ignore = "slow: trains otflow_moons twice in full (1–2 minutes each in release)"]
fn otflow_moons_reaches_an_nll_of_045() {
    let fine = edited("otflow_moons.node", &[("steps = 4", "steps = 16")]);
    for seed in ["0", "1"] {
        let started = Instant::now();
        let params = train(MOONS, &["--seed", seed], &format!("moons_{seed}.json"));
        let seconds = started.elapsed().as_secs_f64();
        let report_json = run(MOONS, Some(&params));
        let train_nll = metric(&report_json, "train", "nll");
        let test_nll = metric(&report_json, "test", "nll");
        let fine_nll = metric(&run(&fine, Some(&params)), "test", "nll");
        report(&format!(
            "otflow_moons seed {seed}: train NLL {train_nll:.4}, test NLL {test_nll:.4} \
             (16 steps: {fine_nll:.4}), {seconds:.1} s"
        ));
        assert!(test_nll <= 0.45, "seed {seed}: test NLL {test_nll}");
        assert!(train_nll <= 0.45, "seed {seed}: train NLL {train_nll}");
        assert!(
            (fine_nll - test_nll).abs() < 0.01,
            "seed {seed}: NLL {test_nll} with 4 steps, {fine_nll} with 16"
        );
    }
}

/// Five Lotka–Volterra experiments in one series (`traj = "exp"`), each from its own initial
/// state and on its own grid with 3% noise: L-BFGS from rates 36–100% off recovers the rates
/// of the generator (`models/data/lotka_volterra.py`) within 3%.
#[test]
fn lotka_volterra_fit_recovers_the_rates_from_five_experiments() {
    let params = train("models/lotka_volterra_fit.node", &[], "lotka_volterra.json");
    let fitted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&params).unwrap()).unwrap();
    let truth = [
        ("alpha", 1.1),
        ("beta", 0.4),
        ("gamma", 0.4),
        ("delta", 0.1),
    ];
    for (name, value) in truth {
        let got = fitted[name].as_f64().unwrap();
        assert!(
            (got - value).abs() <= 0.03 * value,
            "{name}: fitted {got}, truth {value} ({fitted})"
        );
    }
}

/// `bouncing_ball` fits the restitution through the bounces (gradients through events by
/// backprop, the default, and by the adjoint with `gradient = adjoint`): from e = 0.6, L-BFGS
/// recovers the generator's e = 0.8 (`models/data/bouncing_ball.py`, exact heights) to 1e-6.
#[test]
fn bouncing_ball_recovers_the_restitution_from_its_heights() {
    let source = std::fs::read_to_string(root().join("models/bouncing_ball.node")).unwrap();
    let data = root().join("models/data/bouncing_ball.csv");
    let adjoint = source
        .replace(
            "\"data/bouncing_ball.csv\"",
            &format!("{:?}", data.display().to_string()),
        )
        .replace("history = 5)", "history = 5, gradient = adjoint)");
    assert!(adjoint.contains("gradient = adjoint"));
    let adjoint_model = tmp("bouncing_ball_adjoint.node");
    std::fs::write(&adjoint_model, adjoint).unwrap();
    for (model, out) in [
        ("models/bouncing_ball.node", "bouncing_ball.json"),
        (adjoint_model.as_str(), "bouncing_ball_adjoint.json"),
    ] {
        let params = train(model, &[], out);
        let fitted: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&params).unwrap()).unwrap();
        let e = fitted["e"].as_f64().unwrap();
        assert!((e - 0.8).abs() < 1e-6, "{model}: fitted e = {e}");
    }
}
