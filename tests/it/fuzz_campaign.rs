//! The fuzz harness: a corpus-mutation runner on stable Rust (cargo-fuzz needs nightly).
//!
//! Seeds are the files of the repository: `models/*.node`, `models/data/*` and a parameter
//! file, a checkpoint and `.npy`/`.npz` arrays made here. Input number `i` of a campaign is the
//! seed file that `i` picks, mutated by a generator seeded with `i` alone, so any input can be
//! made again from its number. Targets, round-robin:
//! - `check`: parse → check → the memory budget ([`nodec::budget`]);
//! - `compile`: the above, then prepare → compile for a model that checks clean;
//! - `run`: the whole `nodec run` path in this process (data files read from a copy of
//!   `models/data`), for a clean model that is small: at most [`RUN_STEPS`] fixed steps (or
//!   [`RUN_STEPS`] adaptive `max_steps`) and an estimate under [`RUN_BYTES`];
//! - `csv`, `npy`: the data readers on mutated CSV, series and `.npy`/`.npz` bytes;
//! - `params`: the `--params` reader, JSON and `.npz`;
//! - `checkpoint`: the `--resume` reader, then one epoch from the resumed state.
//!
//! A panic is caught, counted, and its input written to `target/fuzz-crashes/`; an input
//! slower than [`HANG_SECONDS`] counts as a hang. Each crash found becomes a regression test
//! below, named after it. Entry points (all `#[ignore]`d, run with `--ignored`):
//! - `fuzz_campaign::for_a_time_budget`: `NODEC_FUZZ_SECONDS` (default 5) of every target;
//!   `.ci/run` runs it for 20 seconds;
//! - `fuzz_campaign::a_million_inputs`: 10⁶ inputs (`NODEC_FUZZ_INPUTS` overrides the count);
//! - `fuzz_campaign::child`: inputs `NODEC_FUZZ_START..+NODEC_FUZZ_COUNT` of the targets in
//!   `NODEC_FUZZ_TARGETS`, writing each input's number to `NODEC_FUZZ_PROGRESS` first, for a
//!   driver that runs it under `ulimit -v` and restarts it after an abort
//!   (`tests/fuzz/capped.sh`).

use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nodec::cli::run::{load_param_file, RunArgs};
use nodec::cli::Output;
use nodec::diag::SourceFile;
use nodec::ir::{DataSource, MethodFamily};
use nodec::rng::Rng;
use nodec::sema::Overrides;

use crate::support::{node_files, root};

/// A clean model runs only with at most this many fixed steps, or adaptive `max_steps`.
const RUN_STEPS: usize = 20_000;
/// A clean model runs only if its parameters and states × samples × steps are at most this.
const RUN_WORK: f64 = 2e8;
/// A clean model runs only if its memory estimate is under this many bytes.
const RUN_BYTES: u64 = 256 << 20;
/// The memory budget `check` is given: the issue's cap of 2 GB per process.
const CHECK_BUDGET: u64 = 2 << 30;
/// Inputs of the `run` target that checked clean, were small enough and went through `nodec run`.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Inputs of the `check`, `compile` and `run` targets that checked clean.
static CLEAN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An input that takes longer than this counts as a hang.
const HANG_SECONDS: f64 = 10.0;

/// What a target is fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Check,
    Compile,
    Run,
    Csv,
    Npy,
    Params,
    Checkpoint,
}

impl Target {
    const ALL: [Target; 7] = [
        Target::Check,
        Target::Compile,
        Target::Run,
        Target::Csv,
        Target::Npy,
        Target::Params,
        Target::Checkpoint,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::Check => "check",
            Target::Compile => "compile",
            Target::Run => "run",
            Target::Csv => "csv",
            Target::Npy => "npy",
            Target::Params => "params",
            Target::Checkpoint => "checkpoint",
        }
    }

    fn parse_list(text: &str) -> Vec<Target> {
        text.split(',')
            .filter_map(|name| Target::ALL.into_iter().find(|t| t.name() == name.trim()))
            .collect()
    }
}

/// The seed files, read once.
struct Corpus {
    models: Vec<String>,
    /// `(model text, data block index, file bytes)` of every model block that reads a file.
    data_files: Vec<(String, usize, Vec<u8>, bool)>,
    params_model: String,
    params_json: String,
    params_npz: Vec<u8>,
    checkpoint_model: String,
    checkpoint_json: String,
    /// Where mutated models are written, beside a copy of `models/data`.
    scratch: PathBuf,
}

/// A model with a matrix, a per-layer and a knot parameter, for the `--params` reader.
const PARAMS_MODEL: &str = "model p
input u[2]
param W[2, 2] ~ normal(0, 0.5)
param b[2] per layer = 0
param k on knots(0, 0.5, 1) = 1
state x[2] = u
dx/dt = k * tanh(W * x + b)
schedule euler(t = [0, 1], steps = 3)
cost terminal = sumsq(x)
data train = normal(n = 4, dim = 2, seed = 1)
";

/// A tiny trainable model for the checkpoint reader.
const CHECKPOINT_MODEL: &str = "model c
input u[2]
param W[2, 2] ~ normal(0, 0.5)
state x[2] = u
dx/dt = tanh(W * x)
schedule rk4(t = [0, 1], steps = 4)
cost terminal = sumsq(x - [1, 0])
data train = normal(n = 8, dim = 2, seed = 1)
train adam(lr = 0.01, epochs = 3, batch = 4, seed = 2)
";

impl Corpus {
    fn load() -> Corpus {
        let scratch = root()
            .join("target")
            .join(format!("fuzz-scratch-{}", std::process::id()));
        let data_copy = scratch.join("data");
        std::fs::create_dir_all(&data_copy).expect("scratch directory");
        for entry in std::fs::read_dir(root().join("models/data")).expect("models/data") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::copy(&path, data_copy.join(path.file_name().unwrap())).expect("copy");
            }
        }
        let mut models = Vec::new();
        let mut data_files = Vec::new();
        for path in node_files("models") {
            let text = std::fs::read_to_string(&path).expect("model readable");
            let file = SourceFile::new("seed.node", text.clone());
            let (model, _) = nodec::check_source(&file, &Overrides::default(), "seed");
            for (i, block) in model.data.iter().enumerate() {
                if let Some(rel) = nodec::data::file_path(&block.source) {
                    if let Ok(bytes) = std::fs::read(path.parent().unwrap().join(rel)) {
                        data_files.push((text.clone(), i, bytes, rel.ends_with(".npy")));
                    }
                }
            }
            models.push(text);
        }
        let (params_json, params_npz) = params_seed();
        let checkpoint_json = checkpoint_seed();
        Corpus {
            models,
            data_files,
            params_model: PARAMS_MODEL.to_string(),
            params_json,
            params_npz,
            checkpoint_model: CHECKPOINT_MODEL.to_string(),
            checkpoint_json,
            scratch,
        }
    }
}

impl Drop for Corpus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A parameter file for [`PARAMS_MODEL`] in both forms `train` writes.
fn params_seed() -> (String, Vec<u8>) {
    let json = r#"{"W": [[0.5, -0.25], [0.125, 1.0]], "b": [[0, 0], [0.1, 0.2], [0.3, 0.4]], "k": [1, 2, 3], "$shapes": {"W": [2, 2], "b": [3, 2], "k": [3]}}"#;
    let arrays = vec![
        (
            "W".to_string(),
            nodec::npy::Array::new(vec![2, 2], vec![0.5, -0.25, 0.125, 1.0]),
        ),
        (
            "b".to_string(),
            nodec::npy::Array::new(vec![3, 2], vec![0.0, 0.0, 0.1, 0.2, 0.3, 0.4]),
        ),
        (
            "k".to_string(),
            nodec::npy::Array::new(vec![3], vec![1.0, 2.0, 3.0]),
        ),
    ];
    let npz = nodec::npy::write_npz(&arrays).expect("npz");
    (json.to_string(), npz)
}

/// A checkpoint of [`CHECKPOINT_MODEL`] after one epoch.
fn checkpoint_seed() -> String {
    let (model, program) = compiled(CHECKPOINT_MODEL).expect("checkpoint model compiles");
    let params = nodec::simulate::initial_params(&model, program.layout(), 0);
    let data = generated_data(&model);
    let bound = nodec::simulate::Bound::new(&model, &program, &params, &data);
    let options = nodec::sens::GradientOptions::new(nodec::sens::default_method(&model));
    let mut trainer = nodec::train::Trainer::new(bound, options).expect("trainer");
    trainer.run_epoch(&|| false).expect("an epoch");
    serde_json::to_string(&trainer.checkpoint()).expect("checkpoint serializes")
}

fn compiled(text: &str) -> Option<(nodec::ir::Model, nodec::compile::Program)> {
    let file = SourceFile::new("fuzz.node", text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "fuzz");
    if diags.has_errors() {
        return None;
    }
    let model = nodec::prepare_to_run(model);
    let program = nodec::compile::Program::compile(&model);
    Some((model, program))
}

fn generated_data(model: &nodec::ir::Model) -> nodec::data::Dataset {
    let shapes: Vec<_> = model.inputs.iter().map(|i| i.shape).collect();
    nodec::data::generate(&model.data[0].source, &model.pool, &shapes).expect("generated")
}

/// Values that break readers and solvers.
const NUMBERS: [&str; 16] = [
    "0",
    "-1",
    "1e9",
    "1e-320",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "-0",
    "2.5",
    "65536",
    "1e15",
    "4294967296",
    "0.0000001",
    "7",
    "NaN",
];
/// Tokens worth inserting into model text.
const MODEL_TOKENS: [&str; 20] = [
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    "-",
    "^",
    "'",
    "..",
    "der(",
    "grad(",
    "/ 0",
    "per layer ",
    "\n",
    "1e9",
    "sum(",
    "state y[1e6] = 0\n",
    "save = 1e-9",
    "steps = 1e8",
];
/// Tokens worth inserting into data, parameter and checkpoint files.
const DATA_TOKENS: [&str; 14] = [
    ",", "\n", "\"", "[", "]", "{", "}", ":", "-", "null", "true", "\u{0}", "\r\n", "1e400",
];

/// Mutates `bytes` with `rng`: 1 to 8 edits, each a byte flip, a deleted or duplicated range,
/// an inserted token, or a number replaced by an extreme one.
fn mutate(bytes: &[u8], rng: &mut Rng, tokens: &[&str]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let edits = 1 + rng.below(8);
    for _ in 0..edits {
        let len = out.len().max(1);
        let at = rng.below(len).min(out.len());
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            2 => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let piece = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, piece);
            }
            3 => {
                let token = tokens[rng.below(tokens.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            _ => {
                // The next number from `at` becomes an extreme value.
                let start = out[at..]
                    .iter()
                    .position(u8::is_ascii_digit)
                    .map(|p| p + at);
                if let Some(start) = start {
                    let end = out[start..]
                        .iter()
                        .position(|b| !(b.is_ascii_digit() || *b == b'.' || *b == b'e'))
                        .map_or(out.len(), |p| p + start);
                    let number = NUMBERS[rng.below(NUMBERS.len())].as_bytes();
                    out.splice(start..end, number.iter().copied());
                }
            }
        }
    }
    out
}

/// What a campaign found.
#[derive(Debug, Default)]
struct Summary {
    inputs: [u64; 7],
    panics: Vec<String>,
    hangs: Vec<String>,
    slowest: f64,
    seconds: f64,
    clean: u64,
    runs: u64,
}

impl Summary {
    fn total(&self) -> u64 {
        self.inputs.iter().sum()
    }

    fn line(&self) -> String {
        let counts: Vec<String> = Target::ALL
            .iter()
            .zip(self.inputs)
            .map(|(t, n)| format!("{} {n}", t.name()))
            .collect();
        format!(
            "fuzz: {} inputs in {:.1} s ({}; {} models checked clean, {} of them run); {} panics, {} hangs over {HANG_SECONDS} s; slowest input {:.3} s",
            self.total(),
            self.seconds,
            counts.join(", "),
            self.clean,
            self.runs,
            self.panics.len(),
            self.hangs.len(),
            self.slowest
        )
    }
}

/// The generator of input `index`: its own seed, so an input is made again from its number.
fn input_rng(index: u64) -> Rng {
    Rng::new(index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x6E6F_6465_6366_757A)
}

/// What a target does with an input's bytes.
type Action<'a> = Box<dyn FnOnce(&[u8]) + 'a>;

/// Feeds input `index` to `target`; returns the input and, if it panicked, the message.
fn feed(corpus: &Corpus, target: Target, index: u64) -> (Vec<u8>, Option<String>) {
    let mut rng = input_rng(index);
    let (input, action): (Vec<u8>, Action) = match target {
        Target::Check | Target::Compile | Target::Run => {
            let seed = &corpus.models[rng.below(corpus.models.len())];
            let input = mutate(seed.as_bytes(), &mut rng, &MODEL_TOKENS);
            (
                input,
                Box::new(move |bytes: &[u8]| model_target(corpus, target, bytes, index)),
            )
        }
        Target::Csv | Target::Npy => {
            let npy = target == Target::Npy;
            let choices: Vec<_> = corpus.data_files.iter().filter(|d| d.3 == npy).collect();
            let (text, block, seed, _) = if choices.is_empty() {
                &corpus.data_files[rng.below(corpus.data_files.len())]
            } else {
                choices[rng.below(choices.len())]
            };
            let seed = if npy && choices.is_empty() {
                npy_seed(&mut rng)
            } else {
                seed.clone()
            };
            let input = mutate(&seed, &mut rng, &DATA_TOKENS);
            let text = text.clone();
            let block = *block;
            (
                input,
                Box::new(move |bytes: &[u8]| data_target(&text, block, bytes, npy)),
            )
        }
        Target::Params => {
            let npz = rng.below(4) == 0;
            let seed = if npz {
                corpus.params_npz.clone()
            } else {
                corpus.params_json.clone().into_bytes()
            };
            let input = mutate(&seed, &mut rng, &DATA_TOKENS);
            (
                input,
                Box::new(move |bytes: &[u8]| params_target(&corpus.params_model, bytes)),
            )
        }
        Target::Checkpoint => {
            let input = mutate(corpus.checkpoint_json.as_bytes(), &mut rng, &DATA_TOKENS);
            (
                input,
                Box::new(move |bytes: &[u8]| checkpoint_target(&corpus.checkpoint_model, bytes)),
            )
        }
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| action(&input)));
    let message = outcome.err().map(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    });
    (input, message)
}

/// An `.npy` array of a few rows, for readers when no data file is an `.npy`.
fn npy_seed(rng: &mut Rng) -> Vec<u8> {
    let rows = 1 + rng.below(5);
    let values = (0..rows * 3).map(|i| i as f64 * 0.5).collect();
    nodec::npy::write_npy(&nodec::npy::Array::new(vec![rows, 3], values))
}

fn model_target(corpus: &Corpus, target: Target, bytes: &[u8], index: u64) {
    let text = String::from_utf8_lossy(bytes);
    let file = SourceFile::new("fuzz.node", text.as_ref());
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "fuzz");
    let _ = diags.render(&file);
    if diags.has_errors() {
        return;
    }
    CLEAN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let blocks: Vec<_> = model
        .data
        .iter()
        .map(|b| nodec::budget::BlockSize::declared(&model, b))
        .collect();
    let estimate = nodec::budget::estimate(&model, &blocks, 2);
    if let Some(refusal) = estimate.check(CHECK_BUDGET) {
        let _ = refusal.render(&file);
        return;
    }
    match target {
        Target::Check => {}
        Target::Compile => {
            let model = nodec::prepare_to_run(model);
            let _ = nodec::compile::Program::compile(&model);
        }
        _ => {
            let small_schedule = model.schedule.as_ref().is_some_and(|s| {
                let steps = match s.method.family() {
                    MethodFamily::Fixed => s.steps.unwrap_or(0),
                    _ => s.max_steps,
                };
                steps <= RUN_STEPS && nodec::budget::save_points(s) <= RUN_STEPS as f64
            });
            let samples = blocks.iter().map(|b| b.samples).max().unwrap_or(1);
            // Work: values touched per right-hand side, times samples and steps; a legal model
            // can be slow (a 65536-wide layer over 512 samples), which is not a hang.
            let steps = model
                .schedule
                .as_ref()
                .map_or(0, |s| match s.method.family() {
                    MethodFamily::Fixed => s.steps.unwrap_or(0),
                    _ => s.max_steps.min(1000),
                });
            let work =
                (model.param_len() + model.state_len()) as f64 * samples as f64 * steps as f64;
            if !small_schedule
                || samples > 4096
                || work > RUN_WORK
                || estimate.total() > RUN_BYTES as f64
            {
                return;
            }
            let path = corpus.scratch.join(format!("input{index}.node"));
            std::fs::write(&path, bytes).expect("scratch is writable");
            let args = RunArgs {
                file: path.display().to_string(),
                overrides: Overrides::default(),
                seed: 0,
                max_memory: Some(RUN_BYTES * 4),
                params: None,
                params_partial: false,
                format: Some(nodec::cli::run::Format::Json),
                out: None,
                sample: 0,
                costate: false,
                all_samples: false,
                no_timings: true,
                ensemble: None,
                members: None,
            };
            let mut out = Output::default();
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = catch_unwind(AssertUnwindSafe(|| nodec::cli::run::run(&args, &mut out)));
            let _ = std::fs::remove_file(&path);
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn data_target(model_text: &str, block: usize, bytes: &[u8], npy: bool) {
    let file = SourceFile::new("fuzz.node", model_text);
    let (model, _) = nodec::check_source(&file, &Overrides::default(), "fuzz");
    let Some(block) = model.data.get(block) else {
        return;
    };
    let parsed = if npy || nodec::npy::is_zip(bytes) {
        let _ = nodec::npy::read_npz(bytes);
        let _ = nodec::npy::read_npy(bytes);
        nodec::data::parse_npy(bytes, &block.source, "fuzz.npy")
    } else {
        let text = String::from_utf8_lossy(bytes);
        let _ = nodec::data::check_columns(&text, block, "fuzz.csv");
        nodec::data::parse_csv(&text, &block.source, "fuzz.csv")
    };
    if let (Ok(dataset), Some(schedule)) = (&parsed, &model.schedule) {
        let _ = nodec::data::check_labels(dataset, block, &model.labels, None, "fuzz");
        if matches!(block.source, DataSource::Series { .. }) {
            let _ = nodec::data::check_times(dataset, block, schedule, "fuzz.csv");
        }
    }
}

fn params_target(model_text: &str, bytes: &[u8]) {
    let (model, program) = compiled(model_text).expect("the params model compiles");
    let mut params = nodec::simulate::initial_params(&model, program.layout(), 0);
    for partial in [false, true] {
        let _ = load_param_file(
            bytes,
            "fuzz.json",
            &model,
            &program,
            &mut params,
            &[],
            partial,
        );
    }
}

fn checkpoint_target(model_text: &str, bytes: &[u8]) {
    let (model, program) = compiled(model_text).expect("the checkpoint model compiles");
    let params = nodec::simulate::initial_params(&model, program.layout(), 0);
    let data = generated_data(&model);
    let bound = nodec::simulate::Bound::new(&model, &program, &params, &data);
    let options = nodec::sens::GradientOptions::new(nodec::sens::default_method(&model));
    let mut trainer = nodec::train::Trainer::new(bound, options).expect("trainer");
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(checkpoint) = serde_json::from_str(text) else {
        return;
    };
    if trainer.resume(checkpoint).is_ok() {
        let _ = trainer.run_epoch(&|| false);
    }
}

/// How a campaign is bounded.
struct Plan {
    targets: Vec<Target>,
    start: u64,
    count: Option<u64>,
    seconds: Option<f64>,
    progress: Option<PathBuf>,
}

fn campaign(plan: &Plan) -> Summary {
    let corpus = Corpus::load();
    let crashes = root().join("target").join("fuzz-crashes");
    let mut progress = plan
        .progress
        .as_ref()
        .map(|p| std::fs::File::create(p).expect("progress file"));
    // Panics are caught and reported once each below; the default hook would print them all.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut index = plan.start;
    loop {
        let done = index - plan.start;
        if plan.count.is_some_and(|c| done >= c)
            || plan
                .seconds
                .is_some_and(|s| started.elapsed() >= Duration::from_secs_f64(s))
        {
            break;
        }
        let slot = (index % plan.targets.len() as u64) as usize;
        let target = plan.targets[slot];
        if let Some(file) = &mut progress {
            let _ = writeln!(file, "{index}");
        }
        let begun = Instant::now();
        let (input, panic) = feed(&corpus, target, index);
        let seconds = begun.elapsed().as_secs_f64();
        summary.slowest = summary.slowest.max(seconds);
        let which = Target::ALL.iter().position(|t| *t == target).unwrap();
        summary.inputs[which] += 1;
        let name = format!("{}-{index}", target.name());
        if seconds > HANG_SECONDS || panic.is_some() {
            std::fs::create_dir_all(&crashes).expect("crash directory");
            std::fs::write(crashes.join(&name), &input).expect("crash written");
        }
        if seconds > HANG_SECONDS {
            summary.hangs.push(format!("{name}: {seconds:.1} s"));
        }
        if let Some(message) = panic {
            summary.panics.push(format!("{name}: {message}"));
        }
        index += 1;
    }
    std::panic::set_hook(hook);
    summary.seconds = started.elapsed().as_secs_f64();
    summary.clean = CLEAN.swap(0, std::sync::atomic::Ordering::Relaxed);
    summary.runs = RUNS.swap(0, std::sync::atomic::Ordering::Relaxed);
    summary
}

fn env_number(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[expect(
    clippy::print_stdout,
    reason = "a campaign's summary is its result; `--nocapture` shows it"
)]
fn report(summary: &Summary) {
    // The summary is the point of running a campaign; `--nocapture` shows it.
    println!("{}", summary.line());
    for line in summary.panics.iter().chain(&summary.hangs) {
        println!("  {line}");
    }
    assert!(
        summary.panics.is_empty() && summary.hangs.is_empty(),
        "{}: crashing inputs are in target/fuzz-crashes/",
        summary.line()
    );
}

/// `NODEC_FUZZ_SECONDS` (default 5) of every target; `.ci/run` runs it for 20 seconds.
#[test]
#[ignore = "a timed fuzz campaign: NODEC_FUZZ_SECONDS=20 cargo test --test it fuzz_campaign::for_a_time_budget -- --ignored"]
fn for_a_time_budget() {
    let summary = campaign(&Plan {
        targets: Target::ALL.to_vec(),
        start: env_number("NODEC_FUZZ_START").unwrap_or(0.0) as u64,
        count: None,
        seconds: Some(env_number("NODEC_FUZZ_SECONDS").unwrap_or(5.0)),
        progress: None,
    });
    report(&summary);
}

/// 10⁶ inputs (or `NODEC_FUZZ_INPUTS`) through `check` and the readers; run in release:
/// `cargo test --release --test it fuzz_campaign::a_million_inputs -- --ignored --nocapture`.
#[test]
#[ignore = "10⁶ fuzz inputs take minutes in release"]
fn a_million_inputs() {
    let summary = campaign(&Plan {
        targets: vec![
            Target::Check,
            Target::Check,
            Target::Check,
            Target::Csv,
            Target::Npy,
            Target::Params,
        ],
        start: 0,
        count: Some(env_number("NODEC_FUZZ_INPUTS").unwrap_or(1e6) as u64),
        seconds: None,
        progress: None,
    });
    report(&summary);
}

/// Writes the inputs `NODEC_FUZZ_SHOW` (comma-separated numbers) to `target/fuzz-crashes/`,
/// to look at an input a campaign reported without running it.
#[test]
#[ignore = "writes the inputs named by NODEC_FUZZ_SHOW"]
fn show() {
    let corpus = Corpus::load();
    let dir = root().join("target").join("fuzz-crashes");
    std::fs::create_dir_all(&dir).expect("crash directory");
    for index in std::env::var("NODEC_FUZZ_SHOW")
        .unwrap_or_default()
        .split(',')
    {
        let Ok(index) = index.trim().parse::<u64>() else {
            continue;
        };
        let mut rng = input_rng(index);
        let seed = &corpus.models[rng.below(corpus.models.len())];
        let input = mutate(seed.as_bytes(), &mut rng, &MODEL_TOKENS);
        std::fs::write(dir.join(format!("model-{index}.node")), input).expect("written");
    }
}

/// One slice of a capped campaign, driven by `tests/fuzz/capped.sh` under `ulimit -v`.
#[test]
#[ignore = "a slice of a capped campaign, run by tests/fuzz/capped.sh"]
fn child() {
    let targets = std::env::var("NODEC_FUZZ_TARGETS")
        .map(|t| Target::parse_list(&t))
        .unwrap_or_else(|_| Target::ALL.to_vec());
    assert!(!targets.is_empty(), "NODEC_FUZZ_TARGETS names no target");
    let summary = campaign(&Plan {
        targets,
        start: env_number("NODEC_FUZZ_START").unwrap_or(0.0) as u64,
        count: env_number("NODEC_FUZZ_COUNT").map(|c| c as u64),
        seconds: env_number("NODEC_FUZZ_SECONDS"),
        progress: std::env::var("NODEC_FUZZ_PROGRESS").ok().map(PathBuf::from),
    });
    report(&summary);
}

/// The same input number always makes the same input, so a crash can be made again, and
/// the inputs differ from their seed.
#[test]
fn inputs_are_made_again_from_their_number() {
    let seed = b"state x = 1\ndx/dt = -x\n";
    let a = mutate(seed, &mut input_rng(42), &MODEL_TOKENS);
    let b = mutate(seed, &mut input_rng(42), &MODEL_TOKENS);
    assert_eq!(a, b);
    let differs = (0..20).any(|i| mutate(seed, &mut input_rng(i), &MODEL_TOKENS) != seed);
    assert!(differs, "mutations change the seed");
}

/// A short slice of every target runs in the normal suite, so the harness itself stays sound.
#[test]
fn a_short_campaign_finds_nothing() {
    let summary = campaign(&Plan {
        targets: Target::ALL.to_vec(),
        start: 0,
        count: Some(70),
        seconds: None,
        progress: None,
    });
    assert_eq!(summary.total(), 70);
    assert!(
        summary.inputs.iter().all(|&n| n == 10),
        "{}",
        summary.line()
    );
    report(&summary);
}

/// Found by `a_million_inputs` (inputs 29048 and 349346, `check` hangs of 22 s and 19 s):
/// `models/otflow_moons.node` with `state z[65536]`, whose `div(v, z)` took one directional
/// derivative per element of `z` although `Phi` reads two. Checking now builds a tensor IR
/// whose size does not grow with the state (it had over 65536 nodes per derivative). The inputs'
/// numbers name a campaign over an older `models/`, so the test states the edit itself (the
/// binary before the fix took 3.7 s on it in release).
#[test]
fn check_29048_and_349346_div_over_a_wide_state() {
    let original = std::fs::read_to_string(root().join("models/otflow_moons.node")).unwrap();
    assert!(original.contains("state z[2] = u"));
    let text = original.replace("state z[2] = u", "state z[65536] = u");
    let file = SourceFile::new("fuzz.node", text.as_str());
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "fuzz");
    assert!(diags.has_errors(), "the initial value's shape is wrong");
    assert!(
        model.tensors.len() < 20_000,
        "{} tensor nodes",
        model.tensors.len()
    );
}
