//! `nodec train`: the training loop with progress, a per-epoch log, atomic parameter files and
//! checkpoints that resume bit for bit, and Ctrl-C that checkpoints before exiting.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::grad::{gradient_error, ParamValues};
use super::report::format_sig;
use super::run::{load_mapped, Loaded};
use super::{write_atomic, AtomicFile, Output};
use crate::diag::Diagnostic;
use crate::dist::Ranks;
use crate::npy::{write_npz, Array};
use crate::sema::Overrides;
use crate::sens::{self, GradientOptions};
use crate::train::{Checkpoint, EpochSummary, TrainError, Trainer};

/// Arguments of `nodec train`.
#[derive(Clone, Debug)]
pub struct TrainArgs {
    /// The model file.
    pub file: String,
    /// `--set` overrides.
    pub overrides: Overrides,
    /// Seed of random parameter initialisations.
    pub seed: u64,
    /// `--max-memory`: the memory budget in bytes (default: [`super::memory_limit`]).
    pub max_memory: Option<u64>,
    /// Initial parameter values by name.
    pub init: Option<String>,
    /// `--params-partial`: the `init` file may leave params out.
    pub params_partial: bool,
    /// `--map` renamings of the `init` file.
    pub maps: Vec<super::run::ParamMap>,
    /// Where the trained parameters go.
    pub out: Option<String>,
    /// A checkpoint to continue from.
    pub resume: Option<String>,
    /// Per-epoch CSV log.
    pub log: Option<String>,
    /// Epochs between checkpoints (0: only on interruption and at the end).
    pub checkpoint_every: usize,
    /// Where checkpoints go.
    pub checkpoint: Option<String>,
    /// No progress output.
    pub quiet: bool,
}

/// Set by SIGINT; the loop checks it after every mini-batch.
fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = flag.clone();
        // If a handler cannot be installed, Ctrl-C simply kills the process as usual.
        let _ = ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst));
        flag
    })
    .clone()
}

/// `{PARAM: value}` as `--params` reads it, with each parameter's shape under
/// [`super::run::SHAPES_KEY`] (copies outermost for `per layer` and `on knots` params).
fn params_json(loaded: &Loaded, values: &[f64]) -> String {
    let mut text = serde_json::to_string_pretty(&param_values(loaded, values)).unwrap_or_default();
    text.push('\n');
    text
}

fn param_values<'a>(loaded: &'a Loaded, values: &'a [f64]) -> ParamValues<'a> {
    ParamValues {
        model: &loaded.model,
        layout: loaded.program.layout(),
        values,
        shapes: true,
    }
}

/// An `.npz` archive of one array per parameter, shaped as [`ParamEntry::saved_shape`] says.
///
/// [`ParamEntry::saved_shape`]: crate::compile::ParamEntry::saved_shape
fn params_npz(loaded: &Loaded, values: &[f64]) -> Result<Vec<u8>, String> {
    let arrays: Vec<(String, Array)> = loaded
        .program
        .layout()
        .entries
        .iter()
        .map(|e| {
            let v = &values[e.offset..e.offset + e.len() * e.copies];
            (e.name.clone(), Array::new(e.saved_shape(), v.to_vec()))
        })
        .collect();
    write_npz(&arrays)
}

/// Writes the parameters to `path` atomically: an `.npz` archive when the name ends in
/// `.npz`, else JSON.
fn write_params(loaded: &Loaded, values: &[f64], path: &str) -> Result<(), String> {
    if super::has_extension(path, "npz") {
        let bytes = params_npz(loaded, values)?;
        return write_atomic(Path::new(path), &bytes).map_err(|e| e.to_string());
    }
    // Streamed: the text of a wide model's parameters is never held whole.
    let mut file = AtomicFile::create(Path::new(path)).map_err(|e| e.to_string())?;
    serde_json::to_writer_pretty(&mut file, &param_values(loaded, values))
        .map_err(|e| e.to_string())?;
    file.write_all(b"\n")
        .and_then(|()| file.commit())
        .map_err(|e| e.to_string())
}

fn summary_line(loaded: &Loaded, s: &EpochSummary, epochs: usize, steps_per_second: f64) -> String {
    if s.steps == 0 {
        // Every mini-batch failed to solve: there is no loss to report, not a loss of 0.
        return format!(
            "epoch {}/{epochs}: no mini-batch solved, {} failed solves skipped",
            s.epoch, s.skipped
        );
    }
    let mut line = format!("epoch {}/{epochs}: loss {}", s.epoch, format_sig(s.loss));
    for (m, v) in loaded.model.metrics.iter().zip(&s.metrics) {
        line.push_str(&format!(", {} {}", m.name, format_sig(*v)));
    }
    if s.skipped > 0 {
        line.push_str(&format!(", {} failed solves skipped", s.skipped));
    }
    line.push_str(&format!(", {steps_per_second:.0} steps/s"));
    line
}

/// `nodec train`. Under MPI every rank runs this loop with its share of each mini-batch
/// ([`Trainer::with_ranks`]); rank 0 alone prints and writes files, and decides when Ctrl-C
/// stops the run.
pub fn train(args: &TrainArgs, ranks: &dyn Ranks, out: &mut Output) -> u8 {
    let root = ranks.is_root();
    if !super::outputs_writable([&args.out, &args.log, &args.checkpoint], out) {
        return super::exit::MODEL;
    }
    let Some(loaded) = load_mapped(
        &args.file,
        &args.overrides,
        args.seed,
        args.max_memory,
        args.init.as_deref(),
        &args.maps,
        args.params_partial,
        out,
    ) else {
        return 1;
    };
    let model = &loaded.model;
    if model.train.is_none() {
        out.stderr.push_str(&format!(
            "{}: error: the model has no `train` declaration; add one, e.g. `train adam(lr = 0.01, epochs = 100, batch = 64)`\n",
            args.file
        ));
        return 1;
    }
    let (block, data) = loaded.training_block();
    // The model's `gradient =` if it names one, else its schedule's default.
    let options = GradientOptions::new(sens::default_method(model));
    let mut trainer = match Trainer::new(loaded.bind(data), options) {
        Ok(t) => t.with_ranks(ranks),
        Err(TrainError::Located { span, message }) => {
            out.stderr
                .push_str(&Diagnostic::error(span, message).render(&loaded.file));
            return 1;
        }
        Err(e) => {
            out.stderr.push_str(&format!("{}: error: {e}\n", args.file));
            return 1;
        }
    };
    if let Some(path) = &args.resume {
        let state: Result<Checkpoint, String> = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()));
        match state
            .map_err(|e| e.to_string())
            .and_then(|s| trainer.resume(s).map_err(|e| e.to_string()))
        {
            Ok(()) => {}
            Err(e) => {
                out.stderr.push_str(&format!(
                    "{path}: error: cannot resume from this checkpoint: {e}\n"
                ));
                return 1;
            }
        }
    }
    let checkpoint_path = args.checkpoint.clone().unwrap_or_else(|| {
        format!(
            "{}.ckpt.json",
            args.out.as_deref().unwrap_or(model.name.as_str())
        )
    });
    // The default path is written only when asked for checkpoints (or on Ctrl-C).
    let asked = args.checkpoint.is_some() || args.checkpoint_every > 0;
    if asked && !super::outputs_writable([&Some(checkpoint_path.clone())], out) {
        return super::exit::MODEL;
    }
    let write_checkpoint = |checkpoint: &Checkpoint| -> Result<(), String> {
        if !root {
            return Ok(());
        }
        let text = serde_json::to_string(checkpoint).map_err(|e| e.to_string())?;
        write_atomic(Path::new(&checkpoint_path), text.as_bytes()).map_err(|e| e.to_string())
    };
    let epochs = trainer.epochs();
    let started = Instant::now();
    let interrupted = interrupt_flag();
    // Every rank must stop after the same mini-batch: rank 0's flag decides.
    let stop = || {
        let mut flag = vec![u8::from(interrupted.load(Ordering::SeqCst))];
        if ranks.size() > 1 {
            ranks.broadcast(&mut flag);
        }
        flag.first() == Some(&1)
    };
    let quiet = args.quiet || !root;
    let terminal = std::io::stderr().is_terminal();
    let bar = (!quiet && terminal).then(|| {
        let bar = indicatif::ProgressBar::new(epochs as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} epochs  {msg}  {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_position(trainer.state.epoch as u64);
        bar
    });
    let every = (epochs / 10).max(1);
    let mut header = String::from("epoch,loss");
    for kind in loaded.program.cost_kinds() {
        header.push_str(&format!(",{}", kind.name()));
    }
    for m in &model.metrics {
        header.push_str(&format!(",{}", m.name));
    }
    header.push_str(",grad_norm,seconds,rhs_evals,skipped\n");
    // A resumed run continues the log of the run it resumes: its rows up to the checkpoint.
    let (mut log, seconds_before) = match (&args.log, &args.resume) {
        (Some(path), Some(_)) => resumed_log(path, &header, trainer.state.epoch),
        _ => (header.clone(), 0.0),
    };
    // The log is written with each checkpoint, on interruption, on failure and at the end,
    // so that it always covers the epochs a checkpoint holds.
    let save_log = |log: &str, out: &mut Output| {
        if let Some(path) = args.log.as_ref().filter(|_| root) {
            if let Err(e) = write_atomic(Path::new(path), log.as_bytes()) {
                out.stderr
                    .push_str(&format!("{path}: error: cannot write the log: {e}\n"));
            }
        }
    };
    // Optimizer steps taken by this process, for the steps-per-second figure.
    let mut steps = 0usize;
    // What a failed run leaves in `--out`: the parameters at the end of the epoch with the
    // lowest loss so far (the starting ones before any epoch ends).
    // Before any epoch ends those are the loaded ones, not copied (a wide model's are
    // megabytes), or the checkpoint's when resumed.
    let mut best: (f64, usize, Option<Vec<f64>>) = (
        f64::INFINITY,
        0,
        args.resume
            .is_some()
            .then(|| trainer.params().values().to_vec()),
    );
    while trainer.state.epoch < epochs {
        let summary = match trainer.run_epoch(&stop) {
            Ok(Some(s)) => s,
            Ok(None) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                if !root {
                    return super::exit::INTERRUPTED;
                }
                save_log(&log, out);
                return match write_checkpoint(&trainer.checkpoint()) {
                    Ok(()) => {
                        out.stderr.push_str(&format!(
                            "interrupted in epoch {}: checkpoint written to {checkpoint_path}; continue with --resume {checkpoint_path}\n",
                            trainer.state.epoch + 1
                        ));
                        super::exit::INTERRUPTED
                    }
                    Err(e) => {
                        out.stderr.push_str(&format!(
                            "{checkpoint_path}: error: cannot write the checkpoint: {e}\n"
                        ));
                        super::exit::INTERRUPTED
                    }
                };
            }
            Err(e) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                if !root {
                    return super::exit::train(&e);
                }
                let mut text = match &e {
                    TrainError::Gradient(g) => gradient_error(&loaded, g, block),
                    TrainError::Failures { error, .. } => format!(
                        "{}{}: error: {e}\n",
                        gradient_error(&loaded, error, block),
                        args.file
                    ),
                    other => format!("{}: error: {other}\n", args.file),
                };
                if let TrainError::Gradient(crate::sens::GradientError::Solve(
                    crate::solve::SolveError::NonFinite { .. },
                ))
                | TrainError::Failures {
                    error:
                        crate::sens::GradientError::Solve(crate::solve::SolveError::NonFinite {
                            ..
                        }),
                    ..
                } = &e
                {
                    text.push_str(&format!(
                        "training diverged in epoch {}; try a smaller learning rate\n",
                        trainer.state.epoch + 1
                    ));
                }
                out.stderr.push_str(&text);
                save_log(&log, out);
                let (loss, epoch, values) = &best;
                let values = values.as_deref().unwrap_or(loaded.params.values());
                let which = if loss.is_finite() {
                    format!(
                        "the parameters after epoch {epoch} (loss {})",
                        format_sig(*loss)
                    )
                } else {
                    "the starting parameters".to_string()
                };
                match &args.out {
                    Some(path) => match write_params(&loaded, values, path) {
                        Ok(()) => out
                            .stderr
                            .push_str(&format!("{which}, the best so far, are in {path}\n")),
                        Err(e) => out.stderr.push_str(&format!(
                            "{path}: error: cannot write the parameters: {e}\n"
                        )),
                    },
                    None => out.stdout.push_str(&params_json(&loaded, values)),
                }
                if Path::new(&checkpoint_path).exists() {
                    out.stderr
                        .push_str(&format!("the last good checkpoint is {checkpoint_path}\n"));
                }
                return super::exit::train(&e);
            }
        };
        if args.log.is_some() {
            log.push_str(&format!("{},{}", summary.epoch, summary.loss));
            for (_, v) in &summary.costs {
                log.push_str(&format!(",{v}"));
            }
            for v in &summary.metrics {
                log.push_str(&format!(",{v}"));
            }
            log.push_str(&format!(
                ",{},{},{},{}\n",
                summary.grad_norm,
                seconds_before + started.elapsed().as_secs_f64(),
                summary.rhs_evals,
                summary.skipped
            ));
        }
        // An epoch whose every mini-batch was skipped has no loss (its sums are empty).
        if summary.steps > 0 && summary.loss.is_finite() && summary.loss < best.0 {
            let values = trainer.params().values();
            match &mut best.2 {
                Some(kept) => kept.copy_from_slice(values),
                kept => *kept = Some(values.to_vec()),
            }
            (best.0, best.1) = (summary.loss, summary.epoch);
        }
        steps += summary.steps;
        let line = summary_line(
            &loaded,
            &summary,
            epochs,
            steps as f64 / started.elapsed().as_secs_f64().max(1e-9),
        );
        match &bar {
            Some(bar) => {
                bar.set_position(summary.epoch as u64);
                bar.set_message(line.clone());
            }
            None if !quiet && (summary.epoch % every == 0 || summary.epoch == epochs) => {
                // Not a terminal: plain periodic lines, written as they happen.
                eprintln_now(&line);
            }
            None => {}
        }
        if summary.converged {
            if !quiet {
                eprintln_now(&format!(
                    "converged after {} iterations: no step decreases the loss further",
                    summary.epoch
                ));
            }
            break;
        }
        if args.checkpoint_every > 0 && summary.epoch % args.checkpoint_every == 0 {
            save_log(&log, out);
            if let Err(e) = write_checkpoint(&trainer.checkpoint()) {
                out.stderr.push_str(&format!(
                    "{checkpoint_path}: error: cannot write the checkpoint: {e}\n"
                ));
                return 1;
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if !root {
        return 0;
    }
    if let Some(path) = &args.log {
        if let Err(e) = write_atomic(Path::new(path), log.as_bytes()) {
            out.stderr
                .push_str(&format!("{path}: error: cannot write the log: {e}\n"));
            return 1;
        }
    }
    let values = trainer.params().values().to_vec();
    if let Some(path) = &args.out {
        if let Err(e) = write_params(&loaded, &values, path) {
            out.stderr.push_str(&format!(
                "{path}: error: cannot write the parameters: {e}\n"
            ));
            return 1;
        }
    }
    // The summary on every data block at the trained parameters.
    let mut text = String::new();
    for (name, dataset) in &loaded.data {
        let t1 = model.schedule.as_ref().map(|s| vec![s.t1]);
        match loaded
            .bind(dataset)
            .with_params(trainer.params())
            .simulate(t1)
        {
            Ok(sim) => {
                text.push_str(&format!(
                    "{name} ({} samples): loss {}",
                    dataset.n.max(1),
                    format_sig(sim.loss)
                ));
                for (k, v) in &sim.costs {
                    text.push_str(&format!(", {} {}", k.name(), format_sig(*v)));
                }
                for (m, v) in model.metrics.iter().zip(&sim.metrics) {
                    text.push_str(&format!(", {} {}", m.name, format_sig(*v)));
                }
                text.push('\n');
            }
            Err(e) => {
                out.stderr
                    .push_str(&super::run::solve_error(&loaded, &e, name));
                return super::exit::solve(&e);
            }
        }
    }
    text.push_str(&format!(
        "trained {} epochs in {:.2} s{}\n",
        trainer.state.epoch,
        started.elapsed().as_secs_f64(),
        args.out
            .as_ref()
            .map_or(String::new(), |p| format!("; parameters written to {p}"))
    ));
    if !quiet {
        out.stderr.push_str(&text);
    }
    if args.out.is_none() {
        out.stdout.push_str(&params_json(&loaded, &values));
    }
    0
}

/// Progress lines must appear while training runs, not when the command ends.
#[allow(clippy::print_stderr)]
fn eprintln_now(line: &str) {
    eprintln!("{line}");
}

/// The log a resumed run continues: the rows of the file at `path` for epochs up to `epoch`
/// (those the checkpoint holds), and the wall seconds they took. A missing file, or one with
/// another header (another model), starts afresh.
fn resumed_log(path: &str, header: &str, epoch: usize) -> (String, f64) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (header.to_string(), 0.0);
    };
    let mut lines = text.lines();
    if lines.next() != Some(header.trim_end()) {
        return (header.to_string(), 0.0);
    }
    let seconds_column = header
        .trim_end()
        .split(',')
        .position(|c| c == "seconds")
        .unwrap_or(0);
    let mut log = header.to_string();
    let mut seconds = 0.0;
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        match fields.first().and_then(|e| e.parse::<usize>().ok()) {
            Some(e) if e <= epoch => {
                log.push_str(line);
                log.push('\n');
                seconds = fields
                    .get(seconds_column)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(seconds);
            }
            _ => break,
        }
    }
    (log, seconds)
}
