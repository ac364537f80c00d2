//! Multiple shooting (`train ...(shooting = N, continuity = W, polish = K)`) on the
//! Lotka–Volterra fit of `models/lotka_volterra_fit.node`: `shooting = 1` is single shooting to
//! the bit, a poor start that Adam alone leaves in a local minimum is recovered with it, and a
//! `shooting` the data cannot carry is a located error. The gradient of the segment starts is
//! checked against finite differences in `src/train/shooting.rs`.

use crate::support::root;

fn tmp(name: &str) -> String {
    let dir = root().join("target/shooting-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_str().unwrap().to_string()
}

/// `models/lotka_volterra_fit.node` with `edits`, its data path made absolute.
fn edited(name: &str, edits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(root().join("models/lotka_volterra_fit.node")).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "no `{from}`");
        text = text.replace(from, to);
    }
    let data = root().join("models/data");
    let text = text.replace("\"data/", &format!("\"{}/", data.to_str().unwrap()));
    let path = tmp(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `nodec train MODEL --quiet --out PARAMS ARGS`: the output.
fn train(model: &str, out: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
        .arg("train")
        .arg(model)
        .args(["--quiet", "--out", out])
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .current_dir(root())
        .output()
        .expect("nodec runs")
}

fn fitted(model: &str, name: &str) -> serde_json::Value {
    let out = tmp(name);
    let o = train(model, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

const TRAIN: &str = "train lbfgs(iters = 100, history = 10)";
const TRUTH: [(&str, f64); 4] = [
    ("alpha", 1.1),
    ("beta", 0.4),
    ("gamma", 0.4),
    ("delta", 0.1),
];
/// The poor start (alpha, beta, gamma, delta) = (1, 0.5, 0.5, 2).
const POOR: [(&str, &str); 4] = [
    ("param alpha = 1.5", "param alpha = 1"),
    ("param beta = 0.8", "param beta = 0.5"),
    ("param gamma = 0.8", "param gamma = 0.5"),
    ("param delta = 0.2", "param delta = 2"),
];

fn worst_relative_error(params: &serde_json::Value) -> f64 {
    TRUTH
        .iter()
        .map(|(name, truth)| (params[name].as_f64().unwrap() - truth).abs() / truth)
        .fold(0.0, f64::max)
}

#[test]
fn shooting_one_is_single_shooting_to_the_bit() {
    let adam = "train adam(lr = 0.02, epochs = 15)";
    let single = edited("lv_single.node", &[(TRAIN, adam)]);
    let one = edited(
        "lv_one.node",
        &[(TRAIN, "train adam(lr = 0.02, epochs = 15, shooting = 1)")],
    );
    let a = fitted(&single, "lv_single.json");
    let b = fitted(&one, "lv_one.json");
    assert_eq!(a, b);
}

/// The brief's poor start (1.5, 0.8, 2.5, 0.8): single shooting sits in a local minimum,
/// with Adam and with L-BFGS alike.
const POORER: [(&str, &str); 3] = [
    ("param gamma = 0.8", "param gamma = 2.5"),
    ("param delta = 0.2", "param delta = 0.8"),
    ("param alpha = 1.5", "param alpha = 1.5"),
];

const SHOOTING: &str = "train adam(lr = 0.05, epochs = 300, shooting = 10, polish = 300)";

/// The test: from (1, 0.5, 0.5, 2), ten segments and a single-shooting polish recover
/// all four rates within 3%.
#[test]
fn with_multiple_shooting_it_does_so_from_the_poor_start() {
    let mut edits = POOR.to_vec();
    edits.push((TRAIN, SHOOTING));
    let shot = fitted(
        &edited("lv_poor_shooting.node", &edits),
        "lv_poor_shooting.json",
    );
    assert!(
        worst_relative_error(&shot) <= 0.03,
        "multiple shooting: {shot}"
    );
    // PARAMS.json holds the model's parameters only.
    assert_eq!(shot.as_object().unwrap().len(), TRUTH.len() + 1, "{shot}");
}

/// From (1.5, 0.8, 2.5, 0.8) single shooting ends far from the rates, with Adam (the same
/// optimizer and epochs) and with the model's own L-BFGS; multiple shooting recovers them.
#[test]
fn multiple_shooting_escapes_the_local_minimum_single_shooting_ends_in() {
    for (train, name) in [
        ("train adam(lr = 0.05, epochs = 600)", "adam"),
        (TRAIN, "lbfgs"),
    ] {
        let mut edits = POORER.to_vec();
        edits.push((TRAIN, train));
        let single = fitted(
            &edited(&format!("lv_poorer_{name}.node"), &edits),
            &format!("lv_poorer_{name}.json"),
        );
        assert!(
            worst_relative_error(&single) > 0.5,
            "single shooting ({name}) was expected to miss the rates: {single}"
        );
    }
    let mut edits = POORER.to_vec();
    edits.push((TRAIN, SHOOTING));
    let shot = fitted(
        &edited("lv_poorer_shooting.node", &edits),
        "lv_poorer_shooting.json",
    );
    assert!(
        worst_relative_error(&shot) <= 0.03,
        "multiple shooting: {shot}"
    );
}

/// A checkpoint keeps the segment starts: a resumed run ends on the same bits, resumed in the
/// shooting epochs and in the polish.
#[test]
fn a_resumed_shooting_run_is_bit_identical() {
    let full_train = "train adam(lr = 0.05, epochs = 12, shooting = 5, polish = 6)";
    let mut edits = POOR.to_vec();
    edits.push((TRAIN, full_train));
    let model = edited("lv_resume.node", &edits);
    let full = fitted(&model, "lv_full.json");
    // Stopped after 5 shooting epochs, and after 2 of the polish.
    for (short, every, name) in [
        (
            "train adam(lr = 0.05, epochs = 5, shooting = 5, polish = 0)",
            "5",
            "a",
        ),
        (
            "train adam(lr = 0.05, epochs = 12, shooting = 5, polish = 2)",
            "14",
            "b",
        ),
    ] {
        let mut edits = POOR.to_vec();
        edits.push((TRAIN, short));
        let short = edited(&format!("lv_short_{name}.node"), &edits);
        let ckpt = tmp(&format!("lv_{name}.ckpt.json"));
        let _ = std::fs::remove_file(&ckpt);
        let first = tmp(&format!("lv_first_{name}.json"));
        let o = train(
            &short,
            &first,
            &["--checkpoint", &ckpt, "--checkpoint-every", every],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = tmp(&format!("lv_resumed_{name}.json"));
        let o = train(&model, &out, &["--resume", &ckpt]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let resumed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(full, resumed, "resumed after epoch {every}");
    }
}

#[test]
fn a_shooting_the_data_cannot_carry_is_a_located_error() {
    let model = edited(
        "lv_many.node",
        &[(TRAIN, "train adam(lr = 0.05, epochs = 3, shooting = 500)")],
    );
    let o = train(&model, &tmp("lv_many.json"), &[]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "lv_many.node:27:46: error: `shooting = 500` needs at least 500 observation intervals"
        ),
        "{stderr}"
    );
    let model = edited(
        "lv_zero.node",
        &[(TRAIN, "train adam(lr = 0.05, epochs = 3, shooting = 0)")],
    );
    let o = train(&model, &tmp("lv_zero.json"), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("lv_zero.node:27:46: error: `shooting` must be positive"),
        "{stderr}"
    );
    // Generated samples are not a series to split.
    let text = std::fs::read_to_string(root().join("models/resnet_euler.node"))
        .unwrap()
        .replace(
            "train adam(lr = 0.02, epochs = 200, batch = 64, seed = 2)",
            "train adam(lr = 0.02, epochs = 2, shooting = 2)",
        );
    let model = tmp("resnet_shooting.node");
    std::fs::write(&model, text).unwrap();
    let o = train(&model, &tmp("resnet_shooting.json"), &[]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "resnet_shooting.node:27:46: error: `shooting` splits the trajectories of a `series`"
        ),
        "{stderr}"
    );
}
