//! `nodec grad`: the loss of a model on its training data and the gradient with respect to
//! every parameter, by the method asked for.

use std::path::Path;
use std::time::Instant;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};

use super::report::format_sig;
use super::run::{declaration, load_mapped, not_finite_error, solve_error, Loaded, SHAPES_KEY};
use super::{write_atomic, Output};
use crate::compile::ParamLayout;
use crate::ir::{self, GradientMethod};
use crate::sema::Overrides;
use crate::sens::{self, GradientError, GradientOptions};

/// How `grad` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per parameter for people.
    Table,
    /// `{"loss", "grad": {PARAM: value}, "method", "stats"}`.
    Json,
}

/// The gradient methods as the command line names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Exact gradient of the discrete schedule (reverse sweep with checkpoints).
    Backprop,
    /// Continuous adjoint solved backward in time.
    Adjoint,
    /// Forward sensitivities, one direction per parameter coordinate.
    Forward,
}

impl From<MethodArg> for GradientMethod {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Backprop => GradientMethod::Backprop,
            MethodArg::Adjoint => GradientMethod::Adjoint,
            MethodArg::Forward => GradientMethod::Forward,
        }
    }
}

/// Arguments of `nodec grad`.
#[derive(Clone, Debug)]
pub struct GradArgs {
    /// The model file.
    pub file: String,
    /// `--set` overrides.
    pub overrides: Overrides,
    /// Seed of random parameter initialisations.
    pub seed: u64,
    /// `--max-memory`: the memory budget in bytes (default: [`super::memory_limit`]).
    pub max_memory: Option<u64>,
    /// A parameter file to load.
    pub params: Option<String>,
    /// `--params-partial`: the file may leave params out.
    pub params_partial: bool,
    /// The method; `None`: the model's `gradient =`, else the default for its schedule.
    pub method: Option<MethodArg>,
    /// Backprop: steps per checkpoint segment.
    pub segment: Option<usize>,
    /// Forward: the most parameter coordinates to accept (`None`: the default).
    pub forward_limit: Option<usize>,
    /// Output format.
    pub format: Format,
    /// Write here (atomically) instead of stdout.
    pub out: Option<String>,
    /// Leave wall times and memory out of the report.
    pub no_timings: bool,
}

/// The name of a gradient method as the spec spells it.
pub fn method_name(m: GradientMethod) -> &'static str {
    match m {
        GradientMethod::Backprop => "backprop",
        GradientMethod::Adjoint => "adjoint",
        GradientMethod::Forward => "forward",
    }
}

/// Renders a gradient failure located like a solver error.
pub fn gradient_error(loaded: &Loaded, e: &GradientError, block: &str) -> String {
    match e {
        GradientError::Solve(e) => solve_error(loaded, e, block),
        other => format!("{}: error: {other}\n", loaded.file.name),
    }
}

/// Values in the full parameter layout as `{PARAM: value}`: a number for a scalar, else a
/// row-major list with per-layer or knot copies outermost (what `--params` reads). Serialized
/// straight from the values, without a JSON tree: a wide model has millions of them, and a
/// tree costs 30 bytes or more for each.
pub struct ParamValues<'a> {
    /// The model whose parameters these are.
    pub model: &'a ir::Model,
    /// Where each parameter's values start.
    pub layout: &'a ParamLayout,
    /// Values in the full layout.
    pub values: &'a [f64],
    /// Whether to add each parameter's shape under [`SHAPES_KEY`].
    pub shapes: bool,
}

impl Serialize for ParamValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.layout.entries.len()))?;
        for (entry, param) in self.layout.entries.iter().zip(&self.model.params) {
            let v = &self.values[entry.offset..entry.offset + entry.len() * entry.copies];
            if param.shape == ir::Shape::Scalar && entry.copies == 1 {
                map.serialize_entry(&entry.name, &v[0])?;
            } else {
                map.serialize_entry(&entry.name, v)?;
            }
        }
        if self.shapes {
            let shapes: serde_json::Map<String, Value> = self
                .layout
                .entries
                .iter()
                .map(|e| (e.name.clone(), json!(e.saved_shape())))
                .collect();
            map.serialize_entry(SHAPES_KEY, &shapes)?;
        }
        map.end()
    }
}

/// The JSON report of `nodec grad`, keys in this order.
#[derive(serde::Serialize)]
struct GradReport<'a> {
    model: &'a str,
    method: &'a str,
    loss: f64,
    grad: ParamValues<'a>,
    stats: Value,
}

/// The process's peak resident memory in MiB (Linux; `None` elsewhere), for judging
/// checkpointing from the outside.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `nodec grad`.
pub fn grad(args: &GradArgs, out: &mut Output) -> u8 {
    if !super::outputs_writable([&args.out], out) {
        return super::exit::MODEL;
    }
    let Some(loaded) = load_mapped(
        &args.file,
        &args.overrides,
        args.seed,
        args.max_memory,
        args.params.as_deref(),
        &[],
        args.params_partial,
        out,
    ) else {
        return 1;
    };
    let model = &loaded.model;
    if model.costs.is_empty() {
        out.stderr.push_str(&format!(
            "{}: error: the model has no cost to differentiate; declare one, e.g. `cost terminal = sumsq(x)`\n",
            args.file
        ));
        return 1;
    }
    let method = args
        .method
        .map_or_else(|| sens::default_method(model), Into::into);
    let mut options = GradientOptions::new(method);
    options.segment = args.segment;
    options.forward_limit = args.forward_limit;
    let (block, data) = loaded.training_block();
    let started = Instant::now();
    let progress = super::progress::Progress::start("differentiating");
    let g = sens::gradient(&loaded.bind(data), &options);
    drop(progress);
    let g = match g {
        Ok(g) => g,
        Err(e) => {
            out.stderr.push_str(&gradient_error(&loaded, &e, block));
            return super::exit::gradient(&e);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let layout = loaded.program.layout();
    if !g.simulation.loss.is_finite() {
        // At the first cost that is not finite.
        let cost = g.simulation.costs.iter().find(|(_, v)| !v.is_finite());
        let span = cost
            .and_then(|(kind, _)| declaration(model, "costs", kind.name()))
            .or_else(|| model.costs.first().map(|c| c.span));
        let bad = match cost {
            Some((kind, _)) => format!("the loss (its `{}` cost)", kind.name()),
            None => "the loss".to_string(),
        };
        out.stderr
            .push_str(&not_finite_error(&loaded, &args.file, &bad, span));
        return 1;
    }
    for entry in &layout.entries {
        let values = &g.grad[entry.offset..entry.offset + entry.len() * entry.copies];
        if values.iter().any(|v| !v.is_finite()) {
            let span = model
                .params
                .iter()
                .find(|p| p.name == entry.name)
                .map(|p| p.span);
            let bad = format!("the gradient of `{}`", entry.name);
            out.stderr
                .push_str(&not_finite_error(&loaded, &args.file, &bad, span));
            return 1;
        }
    }
    let text = match args.format {
        Format::Json => {
            let s = &g.stats;
            let root = GradReport {
                model: &model.name,
                method: method_name(method),
                loss: g.simulation.loss,
                grad: ParamValues {
                    model,
                    layout,
                    values: &g.grad,
                    shapes: false,
                },
                stats: json!({
                    "samples": data.n.max(1),
                    "steps": s.steps,
                    "rejected": s.rejected,
                    "rhs_evals": s.rhs_evals,
                    "jac_evals": s.jac_evals,
                    "vjp_evals": s.vjp_evals,
                    "jvp_evals": s.jvp_evals,
                }),
            };
            let mut root = root;
            if loaded.program.precision() != crate::ir::Precision::F64 {
                root.stats["precision"] = json!(loaded.program.precision().name());
            }
            if !args.no_timings {
                root.stats["compile_seconds"] = json!(loaded.compile_seconds);
                root.stats["gradient_seconds"] = json!(seconds);
                root.stats["peak_rss_mib"] = json!(peak_rss_mib());
            }
            let mut text = serde_json::to_string_pretty(&root).unwrap_or_default();
            text.push('\n');
            text
        }
        Format::Table => {
            let mut text = format!(
                "model {} ({} samples of `{block}`), method {}\nloss {}\n\n",
                model.name,
                data.n.max(1),
                method_name(method),
                format_sig(g.simulation.loss)
            );
            let rows: Vec<[String; 3]> = layout
                .entries
                .iter()
                .zip(&model.params)
                .map(|(entry, param)| {
                    let values = &g.grad[entry.offset..entry.offset + entry.len() * entry.copies];
                    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
                    let max = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    let shape = match (param.shape, entry.copies) {
                        (s, 1) => s.to_string(),
                        (s, c) => format!("{c} × {s}"),
                    };
                    let shown = if values.len() == 1 {
                        format_sig(values[0])
                    } else {
                        format!("|g| {}, max {}", format_sig(norm), format_sig(max))
                    };
                    [entry.name.clone(), shape, shown]
                })
                .collect();
            let w0 = rows
                .iter()
                .map(|r| r[0].chars().count())
                .max()
                .unwrap_or(0)
                .max(5);
            let w1 = rows
                .iter()
                .map(|r| r[1].chars().count())
                .max()
                .unwrap_or(0)
                .max(5);
            text.push_str(&format!("{:<w0$}  {:<w1$}  gradient\n", "param", "shape"));
            for r in rows {
                text.push_str(&format!("{:<w0$}  {:<w1$}  {}\n", r[0], r[1], r[2]));
            }
            let s = &g.stats;
            text.push_str(&format!(
                "\nsteps {}, rhs evaluations {}, vjps {}, jvps {}\n",
                s.steps, s.rhs_evals, s.vjp_evals, s.jvp_evals
            ));
            if !args.no_timings {
                text.push_str(&format!(
                    "time: parse+compile {}, gradient {}\n",
                    super::report::format_duration(loaded.compile_seconds),
                    super::report::format_duration(seconds)
                ));
            }
            text
        }
    };
    match &args.out {
        Some(path) => {
            if let Err(e) = write_atomic(Path::new(path), text.as_bytes()) {
                out.stderr
                    .push_str(&format!("{path}: error: cannot write the report: {e}\n"));
                return 1;
            }
        }
        // Moved, not copied: a wide model's report is tens of MB of text.
        None if out.stdout.is_empty() => out.stdout = text,
        None => out.stdout.push_str(&text),
    }
    0
}
