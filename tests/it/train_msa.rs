//! `nodec train` with `msa` end to end: `models/msa_sin.node` against Adam and to its accuracy
//! target, the models it refuses and why, and bit-identical parameters for any thread count
//! and across a resume. The formulas themselves (the consistency terms vanishing at the
//! current parameters, the layer gradient and the mixed second-derivative kernel against
//! finite differences) are unit tests in `src/train/msa.rs`.

use crate::support::root;

const MODEL: &str = "models/msa_sin.node";

fn tmp(name: &str) -> String {
    let dir = root().join("target/train-msa-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_str().unwrap().to_string()
}

fn nodec(args: &[&str], threads: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .current_dir(root())
        .output()
        .expect("nodec runs")
}

fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Trains `model` from `seed` for `epochs` and returns the parameter file's path and text.
fn train(model: &str, seed: &str, epochs: usize, tag: &str) -> (String, String) {
    let out_path = tmp(&format!("{tag}_{seed}_{epochs}.json"));
    let epochs = format!("epochs={epochs}");
    let out = nodec(
        &[
            "train", model, "--quiet", "--seed", seed, "--set", &epochs, "--out", &out_path,
        ],
        "2",
    );
    succeeded(&out);
    let text = std::fs::read_to_string(&out_path).unwrap();
    (out_path, text)
}

/// `(training loss, test mse)` of `model` at the parameters in `params`.
fn evaluate(model: &str, params: &str) -> (f64, f64) {
    let out = nodec(&["run", model, "--params", params, "--format", "json"], "2");
    succeeded(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = &v["data"];
    (
        data["train"]["loss"].as_f64().unwrap(),
        data["test"]["metrics"]["mse"].as_f64().unwrap(),
    )
}

/// `msa_sin` with Adam (lr 5e-3, same batches) in place of `msa`, written to `name` (one per
/// test, as tests run in parallel).
fn adam_variant(name: &str) -> String {
    let text = std::fs::read_to_string(root().join(MODEL)).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("train msa("))
        .expect("msa_sin trains with msa");
    let adam = text.replace(
        line,
        "train adam(lr = 5e-3, epochs = epochs, batch = 50, seed = 3)",
    );
    assert_ne!(adam, text);
    let path = tmp(name);
    std::fs::write(&path, adam).unwrap();
    path
}

#[test]
fn msa_fits_sin_faster_than_adam_and_to_a_test_mse_below_a_hundredth() {
    let adam = adam_variant("msa_sin_adam.node");
    for seed in ["0", "1", "2"] {
        let (msa_params, _) = train(MODEL, seed, 10, "msa");
        let (adam_params, _) = train(&adam, seed, 10, "adam");
        let (msa_loss, _) = evaluate(MODEL, &msa_params);
        let (adam_loss, _) = evaluate(&adam, &adam_params);
        assert!(
            msa_loss <= adam_loss,
            "seed {seed}: msa {msa_loss} vs adam {adam_loss} after 10 epochs"
        );
        // The model's own epoch count.
        let full = tmp(&format!("msa_full_{seed}.json"));
        let out = nodec(
            &["train", MODEL, "--quiet", "--seed", seed, "--out", &full],
            "2",
        );
        succeeded(&out);
        let (_, test_mse) = evaluate(MODEL, &full);
        assert!(test_mse < 0.01, "seed {seed}: test mse {test_mse}");
    }
}

#[test]
fn msa_is_bit_identical_for_any_thread_count_and_across_a_resume() {
    let one = tmp("threads1.json");
    let two = tmp("threads2.json");
    for (path, threads) in [(&one, "1"), (&two, "2")] {
        let out = nodec(
            &[
                "train", MODEL, "--quiet", "--set", "epochs=6", "--out", path,
            ],
            threads,
        );
        succeeded(&out);
    }
    let straight = std::fs::read_to_string(&one).unwrap();
    assert_eq!(straight, std::fs::read_to_string(&two).unwrap());

    // Stop after 3 epochs with a checkpoint, resume to 6 on another thread count.
    let ckpt = tmp("resume.ckpt.json");
    let out = nodec(
        &[
            "train",
            MODEL,
            "--quiet",
            "--set",
            "epochs=3",
            "--checkpoint-every",
            "3",
            "--checkpoint",
            &ckpt,
            "--out",
            &tmp("first_half.json"),
        ],
        "2",
    );
    succeeded(&out);
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ckpt).unwrap()).unwrap();
    assert_eq!(checkpoint["state"]["epoch"], 3);
    assert_eq!(checkpoint["state"]["optimizer"]["Msa"]["maxiter"], 3);
    let resumed = tmp("resumed.json");
    let out = nodec(
        &[
            "train", MODEL, "--quiet", "--set", "epochs=6", "--resume", &ckpt, "--out", &resumed,
        ],
        "1",
    );
    succeeded(&out);
    assert_eq!(straight, std::fs::read_to_string(&resumed).unwrap());
    // A checkpoint of another optimizer is refused rather than stepped by the wrong update.
    let out = nodec(
        &[
            "train",
            &adam_variant("resume_adam.node"),
            "--quiet",
            "--resume",
            &ckpt,
        ],
        "2",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the checkpoint was written by `msa`, but the model trains with `adam`"),
        "{err}"
    );
    // The run moved the parameters: the first half differs from the whole.
    assert_ne!(
        straight,
        std::fs::read_to_string(tmp("first_half.json")).unwrap()
    );
}

/// `nodec train` on a variant of `msa_sin` fails with exit code 1 and says `message`.
fn refused(name: &str, from: &str, to: &str, message: &str) {
    let text = std::fs::read_to_string(root().join(MODEL)).unwrap();
    let variant = text.replace(from, to);
    assert_ne!(variant, text, "{from:?} is in the model");
    let path = tmp(name);
    std::fs::write(&path, variant).unwrap();
    let out = nodec(&["train", &path, "--quiet"], "2");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{path}: error: `msa`")), "{err}");
    assert!(err.contains(message), "{err}\nwanted: {message}");
    assert!(err.contains("adam"), "{err}");
}

#[test]
fn msa_refuses_adaptive_schedules_and_models_without_per_layer_controls() {
    refused(
        "dopri5.node",
        "euler(t = [0, 5], steps = 20)",
        "dopri5(t = [0, 5], layers = 20)",
        "`dopri5` chooses its steps adaptively; use `schedule euler(",
    );
    refused(
        "constant_params.node",
        " per layer ~",
        " ~",
        "`msa` trains `per layer` parameters only (the controls of Pontryagin's maximum principle), but `W` is constant in time",
    );
    refused(
        "heun.node",
        "euler(t = [0, 5], steps = 20)",
        "heun(t = [0, 5], steps = 20)",
        "`heun` is not supported: use `euler`",
    );
}
