//! Models run, differentiated and trained with their kernels in `f32` (`precision = f32` or
//! `--precision f32`, issue 19): states between steps, parameters and gradient sums stay
//! `f64`, each evaluation is rounded to `f32` (mixed precision, see ARCHITECTURE.md).
//!
//! The bounds come from `f32`'s unit roundoff `u = 2^-24 ≈ 6e-8`: one evaluation carries a
//! relative error of a few `u`, and a solve of `N` steps accumulates at most about `N` of them
//! (more only where the flow amplifies errors, which the models here do not over their spans).
//! Adaptive methods also take different steps in each precision, each within `rtol`.
//!
//! That every trained model of `models/` reaches its target in `f32` is shown by the target
//! tests themselves run with `NODEC_PRECISION=f32` (the default of `--precision`, inherited by
//! the binary they start): `NODEC_PRECISION=f32 cargo test --release --test it --
//! --include-ignored --test-threads=1 resnets_reach the_crowd evolutionary_weights_reach
//! augmenting_the_state the_moons_flow lbfgs_fits digits_odenet_reaches otflow_moons_reaches
//! lotka_volterra bouncing_ball_recovers sir_fit spiral_fit ot_gauss train_msa`. (The other
//! `bouncing_ball` tests hold event times and gradients to a closed form within 1e-8, an `f64`
//! check that `f32`'s evaluations, at 6e-8 each, cannot pass.)

use nodec::ir::Precision;
use nodec::sema::Overrides;
use serde_json::Value;

use crate::support::{node_files, nodec, root};

/// `f32`'s unit roundoff.
const U32: f64 = <f32 as nodec::real::Real>::UNIT_ROUNDOFF;

fn check(text: &str, precision: Option<Precision>) -> (nodec::ir::Model, String, bool) {
    let file = nodec::diag::SourceFile::new("m.node", text);
    let overrides = Overrides {
        precision,
        ..Overrides::default()
    };
    let (model, diags) = nodec::check_source(&file, &overrides, "m");
    (model, diags.render(&file), diags.has_errors())
}

const DECAY: &str = "model m\nparam k = 0.7\nstate x = 1\ndx/dt = -k * x\n";

#[test]
fn precision_is_read_from_the_schedule_and_the_flag_overrides_it() {
    let schedule = |args: &str| format!("{DECAY}schedule dopri5(t = [0, 1]{args})\n");
    let precision = |m: &nodec::ir::Model| m.schedule.as_ref().map(|s| s.precision);

    let (m, _, errors) = check(&schedule(""), None);
    assert!(!errors);
    assert_eq!(precision(&m), Some(Precision::F64), "the default");
    let (m, _, _) = check(&schedule(", precision = f32"), None);
    assert_eq!(precision(&m), Some(Precision::F32));
    let (m, _, _) = check(&schedule(", precision = f32"), Some(Precision::F64));
    assert_eq!(precision(&m), Some(Precision::F64), "--precision wins");
    let (m, _, _) = check(&schedule(""), Some(Precision::F32));
    assert_eq!(precision(&m), Some(Precision::F32));

    let (_, text, errors) = check(&schedule(", precision = f16"), None);
    assert!(errors, "{text}");
    assert!(text.contains("`precision` is f64 or f32"), "{text}");
    assert!(text.contains("m.node:5:41"), "points at the value: {text}");

    // A tolerance below what f32 resolves is allowed, with a warning at `rtol`.
    let tight = schedule(", rtol = 1e-10, precision = f32");
    let (_, text, errors) = check(&tight, None);
    assert!(!errors, "{text}");
    assert!(
        text.contains("warning: rtol = 1e-10 is below what f32"),
        "{text}"
    );
    assert!(text.contains("m.node:5:36"), "{text}");
    for quiet in [
        schedule(", rtol = 1e-10"),
        schedule(", rtol = 1e-6, precision = f32"),
    ] {
        let (_, text, _) = check(&quiet, None);
        assert!(!text.contains("warning"), "{quiet}: {text}");
    }
    let fixed = format!("{DECAY}schedule rk4(t = [0, 1], steps = 10, precision = f32)\n");
    let (_, text, errors) = check(&fixed, None);
    assert!(!errors && !text.contains("warning"), "{text}");
}

fn json(args: &[&str]) -> Value {
    let out = nodec(args);
    assert!(
        out.status.success(),
        "nodec {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn numbers(v: &Value, into: &mut Vec<f64>) {
    match v {
        Value::Number(n) => into.push(n.as_f64().unwrap()),
        Value::Array(a) => a.iter().for_each(|x| numbers(x, into)),
        Value::Object(o) => o.values().for_each(|x| numbers(x, into)),
        _ => {}
    }
}

fn flat(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    numbers(v, &mut out);
    out
}

/// `max |a − b| / max |a|`.
fn relative(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Every model of `models/` solved in `f32` ends within the accumulated roundoff of its `f64`
/// solve, and a schedule whose tolerance `f32` resolves takes about as many steps (a Newton
/// iteration asked for corrections below `f32`'s noise would shrink `bdf`'s steps: the
/// Brusselator took 3172 steps instead of 224 before the BDF's Newton tolerance followed the
/// evaluations' roundoff).
#[test]
fn every_model_solves_in_f32_within_the_roundoff_of_f64() {
    for path in node_files("models") {
        let file = path.to_str().unwrap();
        let run = |p: &str| {
            let args = ["run", file, "--precision", p, "--format", "json"];
            let out = nodec(&[&args[..], &["--no-timings"]].concat());
            assert!(out.status.success(), "{file} {p}");
            let warned = String::from_utf8_lossy(&out.stderr).contains("below what f32");
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            (report, warned)
        };
        let ((r64, _), (r32, warned)) = (run("f64"), run("f32"));
        assert_eq!(
            r32["stats"]["precision"], "f32",
            "{file}: the report names f32"
        );
        assert!(
            r64["stats"].get("precision").is_none(),
            "{file}: f64 is not named"
        );
        let table = nodec(&["run", file, "--precision", "f32"]);
        assert!(
            String::from_utf8_lossy(&table.stdout).contains(", kernels in f32\n"),
            "{file}: the table names f32"
        );
        let steps = |r: &Value| r["stats"]["steps"].as_f64().unwrap();
        let (n64, n32) = (steps(&r64), steps(&r32));
        let text = std::fs::read_to_string(&path).unwrap();
        let rtol = if text.contains("rtol") { 1e-5 } else { 0.0 };
        let bound = 4.0 * n64.max(n32) * U32 + 10.0 * rtol;
        let diff = relative(&flat(&r64["final"]), &flat(&r32["final"]));
        assert!(
            diff <= bound,
            "{file}: f32 final state {diff:.1e} from f64's (bound {bound:.1e})"
        );
        assert!(diff > 0.0, "{file}: f32 gave f64's bits: not run in f32");
        if !warned {
            assert!(
                n32 <= 1.25 * n64 + 5.0,
                "{file}: {n32} steps in f32 against {n64} in f64"
            );
        }
    }
}

/// Gradients in `f32` by each method agree with the `f64` ones to the roundoff of a solve:
/// the three methods are three different computations, so each matching shows that
/// evaluations, VJPs and JVPs all run (and are summed) right in `f32`.
#[test]
fn gradients_in_f32_agree_with_f64_by_every_method() {
    let cases = [
        ("models/resnet_euler.node", &["backprop", "adjoint"][..]),
        (
            "models/lotka_volterra_fit.node",
            &["backprop", "adjoint", "forward"][..],
        ),
        (
            "models/decay_fit.node",
            &["backprop", "adjoint", "forward"][..],
        ),
    ];
    for (file, methods) in cases {
        for method in methods {
            let grad = |p: &str| {
                json(&[
                    "grad",
                    file,
                    "--method",
                    method,
                    "--precision",
                    p,
                    "--format",
                    "json",
                    "--no-timings",
                ])
            };
            let (g64, g32) = (grad("f64"), grad("f32"));
            let steps = g64["stats"]["steps"].as_f64().unwrap();
            let bound = 1e-4 + 8.0 * steps * U32;
            let diff = relative(&flat(&g64["grad"]), &flat(&g32["grad"]));
            assert!(
                diff <= bound,
                "{file} {method}: gradient {diff:.1e} (bound {bound:.1e})"
            );
            assert!(diff > 0.0, "{file} {method}: f64's bits in f32");
            let loss = (g64["loss"].as_f64().unwrap() - g32["loss"].as_f64().unwrap()).abs();
            assert!(
                loss <= bound * g64["loss"].as_f64().unwrap().abs(),
                "{file}: loss"
            );
        }
    }
}

/// `f32` results do not depend on the thread count, and training in `f32` stopped by a
/// checkpoint resumes to the bits of an uninterrupted run.
#[test]
fn f32_training_is_bit_identical_for_any_thread_count_and_across_a_resume() {
    let dir = root().join("target/mixed-precision-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("resnet_euler_short.node");
    let text = std::fs::read_to_string(root().join("models/resnet_euler.node")).unwrap();
    std::fs::write(&model, text.replace("epochs = 200", "epochs = 4")).unwrap();
    let model = model.to_str().unwrap();
    // `nodec train ARGS --quiet --out OUT` on `threads` threads: the parameters it wrote.
    let train = |args: &[&str], threads: &str, out: &str| -> String {
        let out = dir.join(out).to_str().unwrap().to_string();
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
            .arg("train")
            .args(args)
            .args(["--quiet", "--out", &out])
            .env("RAYON_NUM_THREADS", threads)
            .current_dir(root())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{stderr}");
        std::fs::read_to_string(out).unwrap()
    };
    let f32_args = [model, "--precision", "f32"];
    let one = train(&f32_args, "1", "p1.json");
    assert_eq!(one, train(&f32_args, "2", "p2.json"), "1 and 2 threads");
    assert_eq!(one, train(&f32_args, "3", "p3.json"), "1 and 3 threads");
    let f64_run = train(&[model, "--precision", "f64"], "2", "p64.json");
    assert_ne!(one, f64_run, "--precision f32 changed nothing");

    // Two epochs with a checkpoint, then the rest from it.
    let ckpt = dir.join("f32.ckpt.json");
    let ckpt = ckpt.to_str().unwrap();
    let _ = std::fs::remove_file(ckpt);
    let half = dir.join("half.node");
    std::fs::write(&half, text.replace("epochs = 200", "epochs = 2")).unwrap();
    let half = half.to_str().unwrap();
    let every = ["--checkpoint-every", "1", "--checkpoint", ckpt];
    train(
        &[&[half, "--precision", "f32"][..], &every].concat(),
        "2",
        "half.json",
    );
    let resumed = train(
        &[&f32_args[..], &["--resume", ckpt]].concat(),
        "2",
        "resumed.json",
    );
    assert_eq!(one, resumed, "resumed in f32");
    // The same checkpoint resumed in f64 would continue another computation: refused.
    let refused = nodec(&[
        "train",
        model,
        "--precision",
        "f64",
        "--quiet",
        "--resume",
        ckpt,
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("resume with `--precision f32`"), "{stderr}");
}
