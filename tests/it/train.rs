//! `nodec train` end to end: accuracy targets on CI-sized models, determinism across thread
//! counts, bit-identical resume, and a located error when training diverges.

use crate::support::{nodec, root};

fn tmp(name: &str) -> String {
    let dir = root().join("target/train-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_str().unwrap().to_string()
}

fn train(args: &[&str], threads: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
        .arg("train")
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .current_dir(root())
        .output()
        .expect("nodec runs")
}

fn metric(params: &str, model: &str, name: &str) -> f64 {
    let out = nodec(&["run", model, "--params", params, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["metrics"][name].as_f64().unwrap()
}

#[test]
fn resnets_reach_full_training_accuracy() {
    for model in ["models/resnet_euler.node", "models/lm_resnet.node"] {
        for seed in ["0", "1"] {
            let out_path = tmp(&format!("acc_{seed}_{}.json", model.len()));
            let out = train(&[model, "--quiet", "--seed", seed, "--out", &out_path], "2");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let acc = metric(&out_path, model, "accuracy");
            assert!(acc >= 0.99, "{model} seed {seed}: accuracy {acc}");
            if model.contains("lm_") {
                // LM's coefficients are not clamped to |k| < 1: trained, they drift below −1.
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
                let lowest = v["kappa"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_f64().unwrap())
                    .fold(f64::INFINITY, f64::min);
                assert!(lowest < -1.0, "seed {seed}: the lowest k is {lowest}");
            }
        }
    }
}

#[test]
fn training_is_bit_identical_for_any_thread_count_and_across_a_resume() {
    let model = "models/resnet_euler.node";
    let one = tmp("threads1.json");
    let two = tmp("threads2.json");
    for (path, threads) in [(&one, "1"), (&two, "2")] {
        let out = train(&[model, "--quiet", "--out", path], threads);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let a = std::fs::read_to_string(&one).unwrap();
    assert_eq!(a, std::fs::read_to_string(&two).unwrap());

    // Stop after 70 epochs (a checkpoint every 70), resume, and compare with the full run.
    let ckpt = tmp("resume.ckpt.json");
    let text = std::fs::read_to_string(root().join(model))
        .unwrap()
        .replace("epochs = 200", "epochs = 70");
    let short = tmp("resnet_short.node");
    std::fs::write(&short, text).unwrap();
    // A model file elsewhere has a different name only if its `model` line differs: it does not.
    let out = train(
        &[
            &short,
            "--quiet",
            "--checkpoint-every",
            "70",
            "--checkpoint",
            &ckpt,
            "--out",
            &tmp("short.json"),
        ],
        "2",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = tmp("resumed.json");
    let out = train(
        &[model, "--quiet", "--resume", &ckpt, "--out", &resumed],
        "1",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a, std::fs::read_to_string(&resumed).unwrap());
}

/// The same for a model too wide for the scalar IR (tensor kernels): `digits_odenet` cut to
/// four epochs trains to the same bits on 1 and 2 threads and across a resume after two.
#[test]
fn tensor_kernel_training_is_bit_identical_for_any_thread_count_and_across_a_resume() {
    let csv = root().join("models/data/digits.csv");
    let text = std::fs::read_to_string(root().join("models/digits_odenet.node"))
        .unwrap()
        .replace(
            "\"data/digits.csv\"",
            &format!("{:?}", csv.to_str().unwrap()),
        );
    let write = |name: &str, epochs: &str| {
        let path = tmp(name);
        let edited = text.replace("epochs = 60", epochs);
        assert_ne!(edited, text, "the epochs are edited");
        std::fs::write(&path, edited).unwrap();
        path
    };
    let full = write("digits_4.node", "epochs = 4");
    let short = write("digits_2.node", "epochs = 2");
    let run = |args: &[&str], threads: &str| {
        let out = train(args, threads);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (one, two) = (tmp("digits_t1.json"), tmp("digits_t2.json"));
    run(&[&full, "--quiet", "--out", &one], "1");
    run(&[&full, "--quiet", "--out", &two], "2");
    let a = std::fs::read_to_string(&one).unwrap();
    assert_eq!(a, std::fs::read_to_string(&two).unwrap());
    let ckpt = tmp("digits.ckpt.json");
    run(
        &[
            &short,
            "--quiet",
            "--checkpoint-every",
            "2",
            "--checkpoint",
            &ckpt,
            "--out",
            &tmp("digits_short.json"),
        ],
        "2",
    );
    let resumed = tmp("digits_resumed.json");
    run(
        &[&full, "--quiet", "--resume", &ckpt, "--out", &resumed],
        "1",
    );
    assert_eq!(a, std::fs::read_to_string(&resumed).unwrap());
}

/// `dx/dt = a x²` from `x(0) = u` blows up at `t = 1/(a u)`: with `a = 0.5`, every sample
/// with `u > 2` fails to solve on [0, 1]. `HI` is the largest input.
fn blow_up_model(hi: &str, max_failures: &str) -> String {
    format!(
        "model blowup
input u
param a = 0.5
state x = u
dx/dt = a * x * x
schedule dopri5(t = [0, 1], rtol = 1e-6, max_steps = 300)
cost terminal = (x - 0.5)^2
data train = uniform(n = 32, dim = 1, lo = -1, hi = {hi}, seed = 3)
train adam(lr = 0.01, epochs = 2, batch = 1, seed = 1{max_failures})
"
    )
}

/// A failed solve skips its mini-batch: training goes on, counts the skipped batches in the log
/// and the progress lines, and its parameters load into a model whose data solves.
#[test]
fn training_skips_mini_batches_whose_solve_fails() {
    let path = tmp("blowup.node");
    std::fs::write(&path, blow_up_model("3", "")).unwrap();
    let (params, log) = (tmp("blowup.json"), tmp("blowup.csv"));
    let out = train(&[&path, "--out", &params, "--log", &log], "2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("failed solves skipped"), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = header
        .iter()
        .position(|c| *c == "skipped")
        .expect("a skipped column");
    let skipped: usize = lines
        .map(|l| l.split(',').nth(column).unwrap().parse::<usize>().unwrap())
        .sum();
    // A quarter of the 32 single-sample batches have u > 2 at the start; training lowers `a`,
    // which saves some of them.
    assert!((1..=32).contains(&skipped), "{skipped} skipped:\n{text}");
    let good = tmp("blowup_good.node");
    std::fs::write(&good, blow_up_model("1", "")).unwrap();
    let out = nodec(&["run", &good, "--params", &params]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// L-BFGS treats a trial point whose solve fails as too far and shortens its step: aiming
/// `x(1)` at 3 pushes `a` towards the blow-up, and the run converges all the same.
#[test]
fn lbfgs_shortens_a_step_whose_solve_fails() {
    let path = tmp("blowup_lbfgs.node");
    let text = blow_up_model("1.9", "")
        .replace("(x - 0.5)^2", "(x - 3)^2")
        .replace("lo = -1", "lo = 0.5")
        .replace(
            "adam(lr = 0.01, epochs = 2, batch = 1, seed = 1)",
            "lbfgs(iters = 10)",
        );
    std::fs::write(&path, text).unwrap();
    let log = tmp("blowup_lbfgs.csv");
    let out = train(
        &[
            &path,
            "--quiet",
            "--out",
            &tmp("blowup_lbfgs.json"),
            "--log",
            &log,
        ],
        "2",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let skipped: usize = text
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert!(skipped > 0, "no trial point failed:\n{text}");
}

/// `max_failures` failed solves in a row stop training with an error naming the epoch, the
/// mini-batch, the sample and the parameters; `--out` then holds the best parameters so far
/// (here the starting ones), which load.
#[test]
fn consecutive_failed_solves_stop_training_and_keep_the_best_parameters() {
    let path = tmp("blowup_all.node");
    std::fs::write(
        &path,
        blow_up_model("3", ", max_failures = 3").replace("lo = -1", "lo = 2.5"),
    )
    .unwrap();
    let params = tmp("blowup_all.json");
    let _ = std::fs::remove_file(&params);
    let out = train(&[&path, "--quiet", "--out", &params], "2");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("training stopped in epoch 1, mini-batch 3: 3 solves in a row failed"),
        "{err}"
    );
    assert!(err.contains("sample") && err.contains("a = 0.5"), "{err}");
    assert!(
        err.contains("the starting parameters, the best so far"),
        "{err}"
    );
    let good = tmp("blowup_all_good.node");
    std::fs::write(&good, blow_up_model("1", "")).unwrap();
    let out = nodec(&["run", &good, "--params", &params]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_diverging_run_names_the_epoch_and_suggests_a_smaller_rate() {
    // Gradient ascent in disguise: x(1) = exp(a) grows until the solve overflows.
    let text = "model diverge
param a = 1
state x = 1
dx/dt = a * x
schedule rk4(t = [0, 1], steps = 10)
cost terminal = -x
train sgd(lr = 1000, epochs = 50)
";
    let path = tmp("diverge.node");
    std::fs::write(&path, text).unwrap();
    let out = train(&[&path, "--quiet"], "2");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("diverged in epoch"), "{err}");
    assert!(err.contains("smaller learning rate"), "{err}");
}

#[test]
fn lbfgs_fits_the_decay_rate_the_data_were_made_with() {
    // models/data/decay_obs.csv samples x(t) = 2 exp(−t/2): the rate is 0.5.
    let out_path = tmp("decay_fit.json");
    let out = train(
        &["models/decay_fit.node", "--quiet", "--out", &out_path],
        "2",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let k = v["k"].as_f64().unwrap();
    assert!((k - 0.5).abs() < 1e-6, "k = {k}");
}

#[test]
fn a_trained_resnets_layers_initialise_an_evolving_weight() {
    // A ResNet whose per-layer weight has the shape of evolutionary_weights' W0.
    let resnet = tmp("resnet_w.node");
    std::fs::write(
        &resnet,
        "model resnet_w\nconst d = 2\ninput u[2]\nlabel y\n\
         param W[d, d] per layer ~ normal(0, 0.5)\nparam b[d] per layer = 0\n\
         param head[d] ~ normal(0, 0.5)\nparam bias = 0\n\
         state x[d] = u\ndx/dt = tanh(W * x + b)\nschedule euler(t = [0, 1], steps = 10)\n\
         let p = sigmoid(dot(head, x) + bias)\ncost terminal = bce(p, y)\n\
         data train = moons(n = 256, noise = 0.1, seed = 11)\n\
         train adam(lr = 0.02, epochs = 5, batch = 64, seed = 12)\n",
    )
    .unwrap();
    let trained = tmp("resnet_w.json");
    let out = train(&[&resnet, "--quiet", "--out", &trained], "2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The evolutionary model with a step too small to move any weight, so its output is
    // the initial values.
    let evolving = tmp("evolving_still.node");
    let text = std::fs::read_to_string(root().join("models/evolutionary_weights.node"))
        .unwrap()
        .replace("lr = 0.02, epochs = 800", "lr = 1e-300, epochs = 1");
    assert!(text.contains("lr = 1e-300"));
    std::fs::write(&evolving, text).unwrap();
    let start = tmp("evolving_start.json");
    let args = [
        evolving.as_str(),
        "--quiet",
        "--init",
        &trained,
        // `A` and `B` are not in the ResNet's file: they keep their initial values.
        "--params-partial",
        "--map",
        "W0=W[0]",
        "--map",
        "b=b[9]",
        "--out",
        &start,
    ];
    let out = train(&args, "2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (r, e) = (read(&trained), read(&start));
    let r_w = r["W"].as_array().unwrap();
    assert_eq!(r_w.len(), 40, "10 layers of [2, 2]");
    assert_eq!(e["W0"].as_array().unwrap()[..], r_w[..4]);
    assert_eq!(
        e["b"].as_array().unwrap()[..],
        r["b"].as_array().unwrap()[18..20]
    );
    assert_eq!(e["head"], r["head"]);

    // Without picking a layer, the per-layer `b` cannot fill the constant `b`: the error
    // says how to pick one.
    let out = train(&args[..args.len() - 4], "2");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pick one layer with `--map b=b[0]`"), "{err}");
}

#[test]
fn sigint_writes_a_checkpoint_that_resumes_to_the_same_bits() {
    let model_text = |epochs: &str| {
        std::fs::read_to_string(root().join("models/resnet_euler.node"))
            .unwrap()
            .replace("epochs = 200", &format!("epochs = {epochs}"))
    };
    let endless = tmp("sigint_endless.node");
    std::fs::write(&endless, model_text("1000000")).unwrap();
    let ckpt = tmp("sigint.ckpt.json");
    let _ = std::fs::remove_file(&ckpt);
    let _ = std::fs::remove_file(tmp("sigint.log.csv"));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
        .args(["train", &endless, "--quiet", "--checkpoint-every", "1"])
        .args(["--checkpoint", &ckpt, "--out", &tmp("sigint_never.json")])
        .args(["--log", &tmp("sigint.log.csv")])
        .current_dir(root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nodec starts");
    // Interrupt once the first epoch's checkpoint exists, i.e. somewhere in a later epoch.
    let started = std::time::Instant::now();
    while !std::path::Path::new(&ckpt).exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let out = child.wait_with_output().expect("nodec exits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!(
            "checkpoint written to {ckpt}; continue with --resume {ckpt}"
        )),
        "{err}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ckpt).unwrap()).unwrap();
    let epoch = state["state"]["epoch"].as_u64().unwrap();
    assert!((1..40).contains(&epoch), "interrupted after epoch {epoch}");

    // Resuming a 40-epoch run from the interruption gives the uninterrupted run's file.
    let short = tmp("sigint_short.node");
    std::fs::write(&short, model_text("40")).unwrap();
    let (whole, resumed) = (tmp("sigint_whole.json"), tmp("sigint_resumed.json"));
    let (whole_log, log) = (tmp("sigint_whole.log.csv"), tmp("sigint.log.csv"));
    // The interrupted run's log holds exactly the epochs its checkpoint holds.
    let rows = |path: &str| -> Vec<Vec<String>> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    };
    assert_eq!(rows(&log).len() as u64, epoch);
    let out = train(
        &[&short, "--quiet", "--out", &whole, "--log", &whole_log],
        "2",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = [
        &short, "--quiet", "--resume", &ckpt, "--out", &resumed, "--log", &log,
    ];
    let out = train(&args, "1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&whole).unwrap(),
        std::fs::read_to_string(&resumed).unwrap()
    );
    // The resumed log continues the interrupted one: one row per epoch, and every column
    // but the wall time equal to the uninterrupted run's.
    let (a, b) = (rows(&whole_log), rows(&log));
    assert_eq!(a.len(), 40);
    assert_eq!(b.len(), 40);
    // The columns end `grad_norm, seconds, rhs_evals, skipped`.
    let seconds = a[0].len() - 3;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x[..seconds], y[..seconds]);
        assert_eq!(x[seconds + 1..], y[seconds + 1..]);
    }
}

/// `nodec run FILE --params P --seed S --format json` (params optional).
fn run_json(model: &str, params: Option<&str>, seed: &str, sets: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", model, "--format", "json", "--seed", seed];
    if let Some(p) = params {
        args.extend(["--params", p]);
    }
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = nodec(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Trains `model` with `--seed seed` (and `--set` overrides) into a fresh file.
fn trained(model: &str, seed: &str, sets: &[&str], tag: &str) -> String {
    let path = tmp(&format!("{tag}_{seed}.json"));
    let mut args = vec![model, "--quiet", "--seed", seed, "--out", &path];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = train(&args, "2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
#[allow(
    clippy::print_stderr,
    reason = "prints the figures a closing note reports"
)]
fn the_crowd_reaches_its_target_and_bends_around_the_obstacle() {
    let model = "models/crowd_motion.node";
    let text = std::fs::read_to_string(root().join(model)).unwrap();
    // The obstacle's share of the running cost as a metric; the dynamics are untouched.
    let with_meter = |field: &str| {
        text.replace(
            "dz/dt = v",
            &format!(
                "dz/dt = {field}\nstate obst = 0\ndobst/dt = obstacle(z)\nmetric obstacle = obst"
            ),
        )
    };
    let metered = tmp("crowd_metered.node");
    std::fs::write(&metered, with_meter("v")).unwrap();
    // Every agent walks straight from its start to the target's centre at constant speed.
    let straight = tmp("crowd_straight.node");
    std::fs::write(
        &straight,
        with_meter("[0, 2] - [0.3 * u[0], 0.3 * u[1] - 2]"),
    )
    .unwrap();
    let straight_cost = run_json(&straight, None, "0", &[])["metrics"]["obstacle"]
        .as_f64()
        .unwrap();
    // A straight path through the obstacle's centre costs ∫ 5 exp(−16 (t − ½)² / 0.5) dt
    // ≈ 5 √(π / 32) = 1.567; the starts are spread around (0, −2), so a little less.
    assert!((1.3..1.6).contains(&straight_cost), "{straight_cost}");
    // Some initial weights settle on the symmetric path through the obstacle, slowed down
    // in its middle, rather than on one that bends around it (seeds 1 and 3 of 0–5 do):
    // most must bend.
    let mut bent = 0;
    let seeds = ["0", "1", "2"];
    for seed in seeds {
        let start = run_json(model, None, seed, &[])["loss"].as_f64().unwrap();
        let params = trained(model, seed, &[], "crowd");
        let end = run_json(model, Some(&params), seed, &[]);
        let loss = end["loss"].as_f64().unwrap();
        let miss = end["metrics"]["miss"].as_f64().unwrap();
        let obstacle = run_json(&metered, Some(&params), seed, &[])["metrics"]["obstacle"]
            .as_f64()
            .unwrap();
        eprintln!("crowd seed {seed}: loss {start} → {loss}, miss {miss}, obstacle {obstacle} against {straight_cost} straight");
        assert!(miss <= 0.3, "seed {seed}: miss {miss}");
        assert!(loss * 10.0 <= start, "seed {seed}: loss {start} → {loss}");
        bent += usize::from(obstacle < straight_cost);
    }
    assert!(
        2 * bent > seeds.len(),
        "only {bent} of {} trained crowds avoid the obstacle better than straight paths",
        seeds.len()
    );
}

#[test]
#[ignore = "slow in the test profile (800 epochs × 2 seeds); run with --release -- --ignored"]
#[allow(
    clippy::print_stderr,
    reason = "prints the figures a closing note reports"
)]
fn evolutionary_weights_reach_98_percent() {
    let model = "models/evolutionary_weights.node";
    for seed in ["0", "1"] {
        let params = trained(model, seed, &[], "evolutionary");
        let acc = metric(&params, model, "accuracy");
        eprintln!("evolutionary_weights seed {seed}: accuracy {acc}");
        assert!(acc >= 0.98, "seed {seed}: accuracy {acc}");
    }
}

#[test]
#[ignore = "slow in the test profile (4 trainings); run with --release -- --ignored"]
#[allow(
    clippy::print_stderr,
    reason = "prints the figures a closing note reports"
)]
fn augmenting_the_state_lowers_loss_and_kinetic_energy() {
    let model = "models/circles_anode.node";
    for seed in ["0", "1"] {
        let mut figures = Vec::new();
        for d in ["3", "2"] {
            let set = format!("d={d}");
            let params = trained(model, seed, &[&set], &format!("anode{d}"));
            let v = run_json(model, Some(&params), seed, &[&set]);
            let acc = v["metrics"]["accuracy"].as_f64().unwrap();
            let loss = v["loss"].as_f64().unwrap();
            let kinetic = v["costs"]["running"].as_f64().unwrap();
            eprintln!("circles_anode d={d} seed {seed}: accuracy {acc}, loss {loss}, running (0.01·kinetic) {kinetic}");
            figures.push((acc, loss, kinetic));
        }
        let ((acc3, loss3, kinetic3), (_, loss2, kinetic2)) = (figures[0], figures[1]);
        assert!(acc3 >= 0.99, "seed {seed}: d = 3 accuracy {acc3}");
        assert!(
            loss3 < loss2,
            "seed {seed}: loss {loss3} (d = 3) against {loss2} (d = 2)"
        );
        assert!(
            kinetic3 < kinetic2,
            "seed {seed}: kinetic {kinetic3} (d = 3) against {kinetic2} (d = 2)"
        );
    }
}

#[test]
#[ignore = "slow in the test profile (150 epochs of a CNF × 2 seeds); run with --release -- --ignored"]
#[allow(
    clippy::print_stderr,
    reason = "prints the figures a closing note reports"
)]
fn the_moons_flow_reaches_0_7_nats() {
    let model = "models/cnf_moons.node";
    for seed in ["0", "1"] {
        let params = trained(model, seed, &[], "cnf");
        let nll = metric(&params, model, "nll");
        eprintln!("cnf_moons seed {seed}: NLL {nll}");
        assert!(nll <= 0.7, "seed {seed}: NLL {nll}");
    }
}

#[test]
fn without_a_terminal_progress_is_plain_lines_then_a_summary() {
    let out = train(
        &[
            "models/resnet_euler.node",
            "--out",
            &tmp("plain_progress.json"),
        ],
        "2",
    );
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    // Every tenth of the run: epoch, loss, each metric and the optimizer's steps per second.
    let progress: Vec<&&str> = lines.iter().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(progress.len(), 10, "{err}");
    assert!(
        progress[9].starts_with("epoch 200/200: loss ")
            && progress[9].contains(", accuracy ")
            && progress[9].ends_with(" steps/s"),
        "{err}"
    );
    assert!(err.contains("\ntrain (512 samples): loss "), "{err}");
    assert!(err.contains("trained 200 epochs in "), "{err}");
}

/// A checkpoint whose optimizer buffers do not match the model's parameter count (edited by
/// hand, or written for another model of the same name) is refused with an error naming the
/// checkpoint file, for Adam's moments, SGD's momentum and L-BFGS's history; it used to panic.
#[test]
fn a_checkpoint_with_mismatched_optimizer_buffers_is_refused() {
    let source = std::fs::read_to_string(root().join("models/decay_fit.node"))
        .unwrap()
        .replace(
            "data/decay_obs.csv",
            root().join("models/data/decay_obs.csv").to_str().unwrap(),
        );
    for (name, optimizer) in [
        ("adam", "adam(lr = 0.01, epochs = 2)"),
        ("sgd", "sgd(lr = 0.01, momentum = 0.9, epochs = 2)"),
        ("lbfgs", "lbfgs(iters = 2, history = 5)"),
    ] {
        let model = tmp(&format!("ckpt_{name}.node"));
        let text = source.replace("lbfgs(iters = 50, history = 5)", optimizer);
        assert!(text.contains(optimizer));
        std::fs::write(&model, text).unwrap();
        let ckpt = tmp(&format!("ckpt_{name}.ckpt.json"));
        let out = train(
            &[
                &model,
                "--quiet",
                "--checkpoint-every",
                "1",
                "--checkpoint",
                &ckpt,
                "--out",
                &tmp(&format!("ckpt_{name}.json")),
            ],
            "1",
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One value more in every list of numbers of the optimizer's state.
        fn grow(v: &mut serde_json::Value) -> usize {
            match v {
                serde_json::Value::Array(items) if items.iter().all(|x| x.is_number()) => {
                    items.push(serde_json::json!(0.5));
                    1
                }
                serde_json::Value::Array(items) => items.iter_mut().map(grow).sum(),
                serde_json::Value::Object(map) => map.values_mut().map(grow).sum(),
                _ => 0,
            }
        }
        let mut state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ckpt).unwrap()).unwrap();
        assert!(
            grow(&mut state["state"]["optimizer"]) > 0,
            "{name}: {state}"
        );
        std::fs::write(&ckpt, state.to_string()).unwrap();
        let out = train(
            &[
                &model,
                "--quiet",
                "--resume",
                &ckpt,
                "--out",
                &tmp("x.json"),
            ],
            "1",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "{ckpt}: error: cannot resume from this checkpoint: "
            )) && stderr.contains("but the model has 1 parameter values"),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

/// Twenty `kill -9`s at spread-out moments of a training run (checkpoints every epoch), each
/// followed by `--resume` from whatever checkpoint is on disk (or a fresh start if none was
/// written yet), end in the uninterrupted run's parameters to the bit; the temporaries of the
/// writes the kills cut short are gone after the next writes.
#[test]
fn training_killed_twenty_times_resumes_to_the_same_bits() {
    let dir = root().join(format!("target/kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let model = path("resnet.node");
    std::fs::write(
        &model,
        std::fs::read_to_string(root().join("models/resnet_euler.node"))
            .unwrap()
            .replace("epochs = 200", "epochs = 2000"),
    )
    .unwrap();
    let (ckpt, out, whole) = (
        path("run.ckpt.json"),
        path("params.json"),
        path("whole.json"),
    );
    let start = |threads: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"));
        command
            .args(["train", &model, "--quiet", "--checkpoint-every", "1"])
            .args(["--checkpoint", &ckpt, "--out", &out])
            .env("RAYON_NUM_THREADS", threads)
            .current_dir(root())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if std::path::Path::new(&ckpt).exists() {
            command.args(["--resume", &ckpt]);
        }
        command.spawn().expect("nodec starts")
    };
    // The whole run takes seconds; twenty runs cut after at most 135 ms cannot finish it.
    let mut epochs_at_kill = Vec::new();
    for i in 0..20u64 {
        let mut child = start(if i % 2 == 0 { "2" } else { "1" });
        // Spread over process start, compilation, epochs and checkpoint writes.
        std::thread::sleep(std::time::Duration::from_millis(15 + (i * 37) % 120));
        assert!(child.try_wait().unwrap().is_none(), "run {i} ended early");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let epoch = std::fs::read_to_string(&ckpt).ok().and_then(|text| {
            let state: serde_json::Value = serde_json::from_str(&text).ok()?;
            state["state"]["epoch"].as_u64()
        });
        epochs_at_kill.push(epoch.unwrap_or(0));
    }
    // The checkpoints on disk were whole after every kill and training moved on between them.
    assert!(
        epochs_at_kill.windows(2).all(|w| w[0] <= w[1]),
        "{epochs_at_kill:?}"
    );
    assert!(epochs_at_kill[19] > 0, "{epochs_at_kill:?}");
    // Finish from the last checkpoint.
    let status = start("2").wait().unwrap();
    assert!(status.success(), "the last resume finishes");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"))
        .args(["train", &model, "--quiet", "--out", &whole])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&whole).unwrap(),
        std::fs::read_to_string(&out).unwrap(),
        "after kills at epochs {epochs_at_kill:?}"
    );
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporaries left: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An epoch in which every mini-batch fails to solve has no loss: its progress line says so
/// (not "loss 0"), and it never counts as the best so far, so the starting parameters stay the
/// best when training then stops.
#[test]
fn an_epoch_without_a_solved_mini_batch_is_not_the_best() {
    let path = tmp("blowup_epoch.node");
    // Every sample blows up; 40 failures in a row stop training in epoch 2 of 32 batches each.
    std::fs::write(
        &path,
        blow_up_model("3", ", max_failures = 40").replace("lo = -1", "lo = 2.5"),
    )
    .unwrap();
    let params = tmp("blowup_epoch.json");
    let out = train(&[&path, "--out", &params], "2");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("epoch 1/2: no mini-batch solved, 32 failed solves skipped"),
        "{err}"
    );
    assert!(!err.contains("loss 0"), "{err}");
    assert!(
        err.contains("the starting parameters, the best so far"),
        "{err}"
    );
}
