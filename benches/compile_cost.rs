//! Compile cost: the time and memory from a model file to its first evaluation, phase by phase,
//! for the wide models of `benches/data/wide/` (same text, growing width) and
//! `models/digits_odenet.node`.
//!
//! These models are too wide for the scalar IR (`ir::prepare_to_run`): they compile to tensor
//! kernels, whose size and build time follow the model's text, not its widths, so the cost up
//! to the first evaluation should not grow with the width. Phases, as `nodec run` goes through
//! them (`cli::run::load`):
//!
//! - `parse+check`: read the file, `nodec::check_source` (parse, name resolution, shapes,
//!   lowering to tensor IR, symbolic calculus);
//! - `prepare`: `nodec::prepare_to_run` (tensor derivatives; the scalar IR only for a model
//!   small enough for it);
//! - `compile`: `Program::compile` (kernels for every entry point);
//! - `params+data`: seeded initial parameters and the first data block;
//! - `first rhs`: a workspace, `init` and one right-hand side on the first block of
//!   `NARROW_BLOCK` samples (this builds the kernels' uniform caches, so it is dearer than the
//!   second call, also shown);
//! - `first vjp`: one vector-Jacobian product (state and parameter pull-back) on that block;
//! - `solve` and `gradient`: the first whole forward solve and backprop gradient on the data.
//!
//! Each model runs in a child process of this binary so that its peak resident set (`VmHWM`)
//! is its own and a model that is refused or fails cannot stop the others. A model `sema`
//! refuses is reported as refused.
//! The IR size is what `nodec ir --stats` reports as tensor nodes: of the primal roots and of
//! all roots (with derivatives). `MiB @vjp` is the peak resident set up to the first VJP (what
//! `run`, `grad` and a first training step hold before the solve's own storage), `peak MiB`
//! that after the whole solve and gradient.
//!
//! `cargo bench --bench compile_cost [-- FILTER] [-- --repeat=N]` runs every model whose name
//! contains FILTER, each N times (default 1), and reports each phase's fastest time (and the
//! largest peak RSS); `-- --test` runs only `wide_64`, as a smoke test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nodec::compile::Program;
use nodec::diag::SourceFile;
use nodec::ir::{GradientMethod, Shape};
use nodec::sema::Overrides;
use nodec::sens::GradientOptions;

/// The child's environment variable: the model file it measures.
const CHILD: &str = "NODEC_COMPILE_COST_CHILD";

/// The models, wide ones in width order, then the digits ODE-Net.
fn models() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut wide: Vec<PathBuf> = std::fs::read_dir(root.join("benches/data/wide"))
        .expect("benches/data/wide exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "node"))
        .collect();
    // By parameter count rather than by name, so wide_1024 does not come before wide_256.
    wide.sort_by_key(|p| {
        let stem = stem(p);
        let width = stem
            .strip_prefix("wide_")
            .and_then(|w| w.parse::<usize>().ok());
        (width.is_none(), width, stem)
    });
    wide.push(root.join("models/digits_odenet.node"));
    wide
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or(String::new(), |s| s.to_string_lossy().into_owned())
}

/// One model's figures, written by the child as one line of JSON.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Figures {
    model: String,
    /// `sema`'s first error when the model is refused.
    refused: Option<String>,
    parse_check: f64,
    prepare: f64,
    compile: f64,
    params_data: f64,
    first_rhs: f64,
    /// A second right-hand side on the same block, to show what the first call's set-up costs.
    second_rhs: f64,
    first_vjp: f64,
    solve: f64,
    gradient: f64,
    params: usize,
    primal_nodes: usize,
    all_nodes: usize,
    peak_rss_mib: f64,
    /// Peak resident set up to the first VJP: what `run`, `grad` and a first training step
    /// need before the solve's own storage.
    first_rss_mib: f64,
}

/// The first data block's samples, read as `cli::run` reads them (CSV paths are relative to
/// the model file).
fn first_data(path: &Path, model: &nodec::ir::Model) -> nodec::data::Dataset {
    let block = &model.data[0];
    let shapes: Vec<Shape> = model.inputs.iter().map(|i| i.shape).collect();
    match nodec::data::file_path(&block.source) {
        None => nodec::data::generate(&block.source, &model.pool, &shapes).expect("generates"),
        Some(rel) => {
            let csv = path.parent().expect("model directory").join(rel);
            let text = std::fs::read_to_string(&csv).expect("data file");
            nodec::data::parse_csv(&text, &block.source, &csv.display().to_string())
                .expect("data parses")
        }
    }
}

/// `(primal, all)` distinct DAG nodes from `nodec ir --stats`'s "after (distinct DAG)" row.
fn ir_nodes(model: &nodec::ir::Model) -> (usize, usize) {
    let stats = nodec::ir::stats(model);
    let row = stats
        .lines()
        .find(|l| l.starts_with("tensor nodes"))
        .expect("ir::stats has a tensor row");
    let numbers: Vec<usize> = row
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Measures one model in this process (the child's work).
fn measure(path: &Path) -> Figures {
    let mut f = Figures {
        model: stem(path),
        ..Figures::default()
    };
    let time = |t: &mut f64, start: Instant| *t = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let text = std::fs::read_to_string(path).expect("model file");
    let file = SourceFile::new(path.display().to_string(), text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), &f.model);
    time(&mut f.parse_check, start);
    if diags.has_errors() {
        let first = diags.iter().next().expect("an error").message.clone();
        f.refused = Some(first);
        f.peak_rss_mib = nodec::cli::grad::peak_rss_mib().unwrap_or(0.0);
        return f;
    }

    let start = Instant::now();
    let model = nodec::prepare_to_run(model);
    time(&mut f.prepare, start);

    let start = Instant::now();
    let program = Program::compile(&model);
    time(&mut f.compile, start);

    let start = Instant::now();
    let params = nodec::simulate::initial_params(&model, program.layout(), 0);
    let data = first_data(path, &model);
    time(&mut f.params_data, start);
    f.params = params.values().len();

    let width = nodec::solve::NARROW_BLOCK.min(data.n);
    let dim = program.dim();
    let (t0, _) = program.span();
    let t = vec![t0; width];
    let mut y = vec![0.0; dim * width];
    let mut dy = vec![0.0; dim * width];
    let start = Instant::now();
    let mut ws = program.workspace(width);
    ws.bind_inputs(&data.inputs[..width * data.input_dim]);
    program.init(&params, &mut y, &mut ws);
    program.rhs(&params, &t, &y, &mut dy, &mut ws);
    time(&mut f.first_rhs, start);
    std::hint::black_box(&dy);

    let start = Instant::now();
    program.rhs(&params, &t, &y, &mut dy, &mut ws);
    time(&mut f.second_rhs, start);
    std::hint::black_box(&dy);

    let w = vec![1.0; dim * width];
    let mut pulled = vec![0.0; dim * width];
    let mut grad = vec![0.0; f.params];
    let start = Instant::now();
    program.vjp(&params, &t, &y, &w, &mut pulled, &mut grad, &mut ws);
    time(&mut f.first_vjp, start);
    std::hint::black_box(&grad);
    f.first_rss_mib = nodec::cli::grad::peak_rss_mib().unwrap_or(0.0);

    let start = Instant::now();
    let bound = nodec::simulate::Bound::new(&model, &program, &params, &data);
    let sim = bound.simulate(None).expect("solves");
    time(&mut f.solve, start);
    std::hint::black_box(sim.loss);

    let start = Instant::now();
    let options = GradientOptions::new(GradientMethod::Backprop);
    let g = nodec::sens::gradient(&bound, &options).expect("gradient");
    time(&mut f.gradient, start);
    std::hint::black_box(g.grad[0]);

    // Read before the IR statistics, which build large temporary tables of their own.
    f.peak_rss_mib = nodec::cli::grad::peak_rss_mib().unwrap_or(0.0);
    (f.primal_nodes, f.all_nodes) = ir_nodes(&model);
    f
}

impl Figures {
    /// The phase-by-phase minimum of two runs of the same model: on a shared machine the
    /// fastest run is the one least disturbed by other work.
    fn min(self, o: Figures) -> Figures {
        if self.refused.is_some() || o.refused.is_some() {
            return self;
        }
        Figures {
            parse_check: self.parse_check.min(o.parse_check),
            prepare: self.prepare.min(o.prepare),
            compile: self.compile.min(o.compile),
            params_data: self.params_data.min(o.params_data),
            first_rhs: self.first_rhs.min(o.first_rhs),
            second_rhs: self.second_rhs.min(o.second_rhs),
            first_vjp: self.first_vjp.min(o.first_vjp),
            solve: self.solve.min(o.solve),
            gradient: self.gradient.min(o.gradient),
            peak_rss_mib: self.peak_rss_mib.max(o.peak_rss_mib),
            first_rss_mib: self.first_rss_mib.max(o.first_rss_mib),
            ..self
        }
    }
}

/// Runs one model in a child process; a crash is reported in the `refused` column.
fn run_child(path: &Path) -> Figures {
    let exe = std::env::current_exe().expect("own path");
    let failed = |why: String| Figures {
        model: stem(path),
        refused: Some(why),
        ..Figures::default()
    };
    match std::process::Command::new(exe).env(CHILD, path).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str(text.trim()).unwrap_or_else(|e| failed(format!("bad report: {e}")))
        }
        Ok(out) => failed(format!(
            "child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => failed(format!("cannot start the child: {e}")),
    }
}

fn main() {
    if let Some(path) = std::env::var_os(CHILD) {
        let figures = measure(Path::new(&path));
        let line = serde_json::to_string(&figures).expect("serializes");
        let _ = writeln!(std::io::stdout(), "{line}");
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--test" || a == "--list");
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let repeat: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("--repeat="))
        .map_or(1, |n| n.parse().expect("--repeat=N takes a count"));
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "compile cost, milliseconds (first rhs/vjp on one block of {} samples; solve and gradient on the data; \
         to compiled = parse+check + prepare + compile)",
        nodec::solve::NARROW_BLOCK
    );
    let _ = writeln!(
        out,
        "{:<13}{:>8}{:>12}{:>9}{:>9}{:>12}{:>9}{:>11}{:>11}{:>11}{:>9}{:>9}{:>11}{:>11}{:>11}{:>10}{:>10}",
        "model",
        "params",
        "parse+check",
        "prepare",
        "compile",
        "to compiled",
        "prm+data",
        "first rhs",
        "2nd rhs",
        "first vjp",
        "solve",
        "gradient",
        "to 1st rhs",
        "IR primal",
        "IR all",
        "MiB @vjp",
        "peak MiB",
    );
    for path in models() {
        let name = stem(&path);
        if (smoke && name != "wide_64") || filter.is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let f = (1..repeat).fold(run_child(&path), |best, _| best.min(run_child(&path)));
        if let Some(why) = &f.refused {
            let _ = writeln!(
                out,
                "{:<13} refused after {:.3} ms (peak {:.0} MiB): {why}",
                f.model,
                f.parse_check * 1e3,
                f.peak_rss_mib
            );
            continue;
        }
        let compiled = f.parse_check + f.prepare + f.compile;
        let to_first = compiled + f.params_data + f.first_rhs;
        let ms = |s: f64| s * 1e3;
        let _ = writeln!(
            out,
            "{:<13}{:>8}{:>12.3}{:>9.3}{:>9.3}{:>12.3}{:>9.2}{:>11.3}{:>11.3}{:>11.3}{:>9.1}{:>9.1}{:>11.2}{:>11}{:>11}{:>10.0}{:>10.0}",
            f.model,
            f.params,
            ms(f.parse_check),
            ms(f.prepare),
            ms(f.compile),
            ms(compiled),
            ms(f.params_data),
            ms(f.first_rhs),
            ms(f.second_rhs),
            ms(f.first_vjp),
            ms(f.solve),
            ms(f.gradient),
            ms(to_first),
            f.primal_nodes,
            f.all_nodes,
            f.first_rss_mib,
            f.peak_rss_mib,
        );
    }
}
