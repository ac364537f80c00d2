//! The command line: arguments, file IO, rendering of diagnostics and reports, exit codes.
//!
//! Only this module touches files, the terminal and the process environment. Exit codes are
//! [`exit`]'s, documented in `nodec --help`.

pub mod ensemble;
pub mod grad;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run;
pub mod train;

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::diag::SourceFile;
use crate::dist::{Local, Ranks};
use crate::sema::Overrides;

/// The exit codes, for scripts (listed in `nodec --help`).
pub mod exit {
    use crate::sens::GradientError;
    use crate::solve::SolveError;
    use crate::train::TrainError;

    /// Success.
    pub const OK: u8 = 0;
    /// An error in the model, its data or parameter files, or a file that cannot be read or
    /// written.
    pub const MODEL: u8 = 1;
    /// A bad command line.
    pub const USAGE: u8 = 2;
    /// The numerics failed: a solve (step limit, Newton, blow-up), a gradient's solve, or a
    /// training run that diverged or whose solves kept failing.
    pub const SOLVER: u8 = 3;
    /// Interrupted with Ctrl-C (`train` writes its checkpoint first), as shells report SIGINT.
    pub const INTERRUPTED: u8 = 130;

    /// The code of a failed solve: options the solver refuses are the model's error.
    pub fn solve(e: &SolveError) -> u8 {
        match e {
            SolveError::InvalidOptions(_) => MODEL,
            _ => SOLVER,
        }
    }

    /// The code of a failed gradient.
    pub fn gradient(e: &GradientError) -> u8 {
        match e {
            GradientError::Solve(e) => solve(e),
            GradientError::Unavailable(_) | GradientError::ForwardLimit { .. } => MODEL,
        }
    }

    /// The code of a failed training run.
    pub fn train(e: &TrainError) -> u8 {
        match e {
            TrainError::Gradient(e) => gradient(e),
            TrainError::Failures { error, .. } => gradient(error),
            TrainError::Diverged { .. } | TrainError::LineSearch(_) => SOLVER,
            TrainError::Unsupported(_) | TrainError::Located { .. } => MODEL,
        }
    }
}

/// What `nodec --help` says of exit codes.
const EXIT_CODES_HELP: &str = "Exit codes:
  0    success
  1    an error in the model, its data or parameter files (parse, check, data, --params), or
       a file that cannot be read or written
  2    a bad command line
  3    the numerics failed: a solve (step limit, Newton, blow-up), a gradient's solve, or a
       training run that diverged or whose solves kept failing
  130  interrupted with Ctrl-C (train writes its checkpoint first)";

/// Largest model file accepted; real models are a few kilobytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Stack size of the thread that runs a command: deep but legal expressions must not overflow.
const STACK_BYTES: usize = 256 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "nodec",
    version,
    about = "Compile, solve, differentiate and train continuous-time models written in .node files",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every command that evaluates a model takes.
#[derive(clap::Args, Debug)]
struct ModelArgs {
    /// Model file.
    file: String,
    /// Override a const or param: NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    set: Vec<(String, f64)>,
    /// Seed of random parameter initialisations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Refuse models whose estimated memory exceeds SIZE (512M, 8G; powers of 1024)
    /// [default: three quarters of the machine's memory].
    #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
    max_memory: Option<u64>,
    /// The precision the kernels compute in, in place of the schedule's `precision =`
    /// [default: the schedule's, else f64]. States between steps, parameters and gradients
    /// stay f64 (mixed precision).
    #[arg(long, value_enum, env = "NODEC_PRECISION")]
    precision: Option<PrecisionArg>,
}

/// `--precision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PrecisionArg {
    F64,
    F32,
}

impl From<PrecisionArg> for crate::ir::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F64 => crate::ir::Precision::F64,
            PrecisionArg::F32 => crate::ir::Precision::F32,
        }
    }
}

/// The example that ends each subcommand's `--help`: one command a user can paste, on a model
/// of `models/`.
mod examples {
    pub const CHECK: &str = "Example:\n  nodec check models/*.node";
    pub const IR: &str = "Example:\n  nodec ir models/decay.node --derivatives";
    pub const RUN: &str = "Example:\n  nodec run models/lorenz.node --format csv --out lorenz.csv";
    pub const TRAIN: &str =
        "Example:\n  nodec train models/decay_fit.node --out params.json --log train.csv";
    pub const GRAD: &str = "Example:\n  nodec grad models/decay_fit.node --method adjoint";
    pub const COMPLETIONS: &str =
        "Example:\n  nodec completions bash > ~/.local/share/bash-completion/completions/nodec";
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check models: print diagnostics, exit 1 on any error.
    #[command(after_help = examples::CHECK)]
    Check {
        /// Model files.
        #[arg(required = true)]
        files: Vec<String>,
        /// Override a const or param: NAME=VALUE (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
        set: Vec<(String, f64)>,
        /// Refuse models whose estimated memory exceeds SIZE (512M, 8G; powers of 1024)
        /// [default: three quarters of the machine's memory].
        #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
        max_memory: Option<u64>,
    },
    /// Print the lowered, simplified IR of a model.
    #[command(after_help = examples::IR)]
    Ir {
        /// Model file.
        file: String,
        /// Override a const or param: NAME=VALUE (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
        set: Vec<(String, f64)>,
        /// Print node counts before and after simplification instead of the IR.
        #[arg(long)]
        stats: bool,
        /// Also print the Jacobian-vector and vector-Jacobian products of the equations.
        #[arg(long)]
        derivatives: bool,
        /// Print the adjoint (costate) equations and the parameter-gradient integrand instead.
        #[arg(long, conflicts_with_all = ["stats", "derivatives"])]
        adjoint: bool,
        /// Print the tensor IR as readable expressions (`K2 · tanh(K1 · x + b1)`) instead of
        /// one scalar node per element (the default for models too wide for the scalar IR).
        #[arg(long, conflicts_with_all = ["stats", "adjoint"])]
        tensor: bool,
    },
    /// Solve a model and report trajectories, outputs, costs and metrics.
    #[command(after_help = examples::RUN)]
    Run {
        #[command(flatten)]
        model: ModelArgs,
        /// Load parameter values from a JSON file {PARAM: value} or an .npz archive (as `train`
        /// writes). It must give every param, each once.
        #[arg(long, value_name = "PARAMS.json")]
        params: Option<String>,
        /// Accept a --params file that leaves params out: they keep their initial values.
        #[arg(long, requires = "params")]
        params_partial: bool,
        /// Output format [default: from --out's extension (.csv, .json, .npy, .npz), else
        /// table]; npy and npz are binary and need --out.
        #[arg(long, value_enum)]
        format: Option<run::Format>,
        /// Write the report to this file (atomically) instead of stdout.
        #[arg(long, value_name = "PATH")]
        out: Option<String>,
        /// For a model with data: the sample whose trajectory is reported.
        #[arg(long, default_value_t = 0)]
        sample: usize,
        /// Also report the costate p(t) of every state and the Hamiltonian H = p·f − L.
        #[arg(long)]
        costate: bool,
        /// Report every sample of every data block, one row each: its label, outputs and
        /// states at the final time, its terms of the loss, and its metrics.
        #[arg(long, conflicts_with_all = ["sample", "costate"])]
        all_samples: bool,
        /// Leave wall times and memory out of the report, so that identical runs print
        /// identical bytes (for diffing outputs).
        #[arg(long)]
        no_timings: bool,
        /// Solve many parameter sets at once, one row per member (to --out as CSV, JSON or
        /// .npy) and summary statistics on stdout: a grid `k=0.1:1:50,rho=20:30:11` (COUNT
        /// values from START to STOP, the last axis fastest), a CSV file whose header names
        /// the params, or draws `k~uniform(0.1,1)`, `~loguniform(LO,HI)`, `~normal(MEAN,STD)`
        /// with --members (seeded by --seed); NAME=VALUE fixes a param.
        #[arg(long, value_name = "SPEC", conflicts_with_all = ["sample", "costate", "all_samples"])]
        ensemble: Option<String>,
        /// Members of a drawn --ensemble.
        #[arg(long, value_name = "N", requires = "ensemble")]
        members: Option<usize>,
    },
    /// Train the parameters with the model's optimizer; writes PARAMS.json.
    #[command(after_help = examples::TRAIN)]
    Train {
        #[command(flatten)]
        model: ModelArgs,
        /// Start from these parameter values (by name, shapes checked); the file must give
        /// every param, each once.
        #[arg(long, visible_alias = "params", value_name = "PARAMS.json")]
        init: Option<String>,
        /// Accept an --init file that leaves params out: they keep their initial values.
        #[arg(long, requires = "init")]
        params_partial: bool,
        /// Initialise param TARGET from SOURCE of the --init file, optionally from one of its
        /// layers: `--map W0=W[0]` starts an evolving weight at a trained ResNet's first layer.
        #[arg(long = "map", value_name = "TARGET=SOURCE[LAYER]", value_parser = run::parse_param_map, requires = "init")]
        maps: Vec<run::ParamMap>,
        /// Write the trained parameters here (atomically): JSON, or an .npz archive of one
        /// array per param when the name ends in .npz; JSON on stdout if absent.
        #[arg(long, value_name = "PARAMS.json")]
        out: Option<String>,
        /// Continue from a checkpoint.
        #[arg(long, value_name = "CKPT")]
        resume: Option<String>,
        /// Write one CSV row per epoch here.
        #[arg(long, value_name = "LOG.csv")]
        log: Option<String>,
        /// Write a checkpoint every N epochs (and always on Ctrl-C).
        #[arg(long, value_name = "N", default_value_t = 0)]
        checkpoint_every: usize,
        /// Checkpoint file (default: OUT.ckpt.json, or MODEL.ckpt.json).
        #[arg(long, value_name = "PATH")]
        checkpoint: Option<String>,
        /// No progress and no summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Print the loss and its gradient with respect to every parameter.
    #[command(after_help = examples::GRAD)]
    Grad {
        #[command(flatten)]
        model: ModelArgs,
        /// Load parameter values from a JSON file {PARAM: value} or an .npz archive (as `train`
        /// writes). It must give every param, each once.
        #[arg(long, value_name = "PARAMS.json")]
        params: Option<String>,
        /// Accept a --params file that leaves params out: they keep their initial values.
        #[arg(long, requires = "params")]
        params_partial: bool,
        /// Gradient method (default: the model's `gradient =`, else backprop; adjoint for
        /// rodas4 and bdf).
        #[arg(long, value_enum)]
        method: Option<grad::MethodArg>,
        /// Backprop: steps per checkpoint segment (default: the square root of the steps).
        #[arg(long, value_name = "STEPS")]
        segment: Option<usize>,
        /// Forward: the most parameter coordinates to accept (default 64).
        #[arg(long, value_name = "N")]
        forward_limit: Option<usize>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = grad::Format::Json)]
        format: grad::Format,
        /// Write the report to this file (atomically) instead of stdout.
        #[arg(long, value_name = "PATH")]
        out: Option<String>,
        /// Leave wall times and memory out of the report, so that identical runs print
        /// identical bytes (for diffing outputs).
        #[arg(long)]
        no_timings: bool,
    },
    /// Print a shell completion script for nodec (bash, zsh, fish, elvish or powershell).
    #[command(after_help = examples::COMPLETIONS)]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Draw a picture of a model (SVG or PNG): time series, phase portraits, decision regions,
    /// densities, trajectories, a moved grid or training curves.
    #[command(after_help = plot::HELP)]
    Plot {
        #[command(flatten)]
        model: ModelArgs,
        /// Load parameter values from a JSON file {PARAM: value} or an .npz archive (as `train`
        /// writes). It must give every param, each once.
        #[arg(long, value_name = "PARAMS.json")]
        params: Option<String>,
        /// The picture, written atomically; its extension (.svg or .png) sets the format
        /// [default: MODEL-KIND.svg in the current directory, MODEL the model file's stem].
        #[arg(long, value_name = "FILE.svg|FILE.png")]
        out: Option<String>,
        /// What to draw.
        #[arg(long, value_enum, default_value_t = plot::Kind::Auto)]
        kind: plot::Kind,
        /// The variables to draw, as `nodec run` labels them (`x`, `z[0]`): two or three
        /// state components for phase (three: 3-D), two for trajectories and grid, up to 12
        /// states and outputs for series [default: the first state components].
        #[arg(long, value_name = "A,B[,C]", value_parser = plot::parse_vars)]
        vars: Option<plot::VarList>,
        /// A training log written by `nodec train --log`, for --kind training.
        #[arg(long, value_name = "LOG.csv")]
        log: Option<String>,
        /// Picture size in pixels.
        #[arg(long, value_name = "WxH", default_value = "800x600", value_parser = plot::parse_size)]
        size: (u32, u32),
    },
}

fn parse_set(text: &str) -> Result<(String, f64), String> {
    Overrides::parse_one(text)
}

/// Parses the process's arguments and runs the command on a thread with a large stack.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let worker = std::thread::Builder::new()
        .name("nodec".into())
        .stack_size(STACK_BYTES)
        .spawn(move || run(cli));
    match worker.map(|handle| handle.join()) {
        Ok(Ok(code)) => ExitCode::from(code),
        _ => ExitCode::from(exit::MODEL),
    }
}

/// The largest scalar IR `nodec ir --adjoint` builds to print a model's costate equations.
const ADJOINT_PRINT_LIMIT: usize = 1_000_000;

fn run(cli: Cli) -> u8 {
    // Under `mpirun` (with the `mpi` feature) an ensemble and training are shared among the
    // ranks; any other command runs on rank 0 alone, and only rank 0 prints.
    #[cfg(feature = "mpi")]
    let mpi = crate::dist::mpi::Mpi::init();
    #[cfg(feature = "mpi")]
    let ranks: &dyn Ranks = match &mpi {
        Some(world) => world,
        None => &Local,
    };
    #[cfg(not(feature = "mpi"))]
    let ranks: &dyn Ranks = &Local;
    let shared = matches!(
        &cli.command,
        Command::Train { .. }
            | Command::Run {
                ensemble: Some(_),
                ..
            }
    );
    if !ranks.is_root() && !shared {
        return exit::OK;
    }
    let mut out = Output::default();
    let code = match cli.command {
        Command::Check {
            files,
            set,
            max_memory,
        } => {
            let overrides = Overrides {
                values: set,
                ..Overrides::default()
            };
            let mut code = 0;
            for file in &files {
                code =
                    code.max(check_file(file, &overrides, max_memory, &mut out).map_or(1, |_| 0));
            }
            code
        }
        Command::Ir {
            file,
            set,
            stats,
            derivatives,
            adjoint,
            tensor,
        } => {
            let overrides = Overrides {
                values: set,
                ..Overrides::default()
            };
            match check_file(&file, &overrides, None, &mut out) {
                Some((_, model)) => {
                    // The IR the program is compiled from: a wide model has no scalar IR
                    // (see `ir::prepare_to_run`), and prints as tensors.
                    let mut model = crate::prepare_to_run(model);
                    let size = crate::ir::scalar_ir_estimate(&model);
                    if adjoint && size > ADJOINT_PRINT_LIMIT {
                        out.stderr.push_str(&format!(
                            "{file}: error: the adjoint equations are printed per element, and this model has about {size} scalar nodes (the limit is {ADJOINT_PRINT_LIMIT}); `nodec ir --tensor --derivatives` prints its vector-Jacobian products as tensors\n"
                        ));
                        1
                    } else {
                        if adjoint {
                            // The costate equations are written per element.
                            crate::ir::prepare_scalar(&mut model);
                            let system = crate::ir::adjoint(&mut model);
                            out.stdout
                                .push_str(&crate::ir::print_adjoint(&model, &system));
                        } else if stats {
                            out.stdout.push_str(&crate::ir::stats(&model));
                        } else if tensor || !model.has_scalar_ir() {
                            out.stdout
                                .push_str(&crate::ir::print_tensor(&model, derivatives));
                        } else {
                            out.stdout.push_str(&crate::ir::print(&model, derivatives));
                        }
                        0
                    }
                }
                None => 1,
            }
        }
        Command::Run {
            model:
                ModelArgs {
                    file,
                    set,
                    seed,
                    max_memory,
                    precision,
                },
            params,
            params_partial,
            format,
            out: out_path,
            sample,
            costate,
            all_samples,
            no_timings,
            ensemble,
            members,
        } => run::run_across(
            &run::RunArgs {
                file,
                overrides: Overrides {
                    values: set,
                    precision: precision.map(Into::into),
                },
                seed,
                max_memory,
                params,
                params_partial,
                format,
                out: out_path,
                sample,
                costate,
                all_samples,
                no_timings,
                ensemble,
                members,
            },
            ranks,
            &mut out,
        ),
        Command::Train {
            model:
                ModelArgs {
                    file,
                    set,
                    seed,
                    max_memory,
                    precision,
                },
            init,
            params_partial,
            maps,
            out: out_path,
            resume,
            log,
            checkpoint_every,
            checkpoint,
            quiet,
        } => train::train(
            &train::TrainArgs {
                file,
                overrides: Overrides {
                    values: set,
                    precision: precision.map(Into::into),
                },
                seed,
                max_memory,
                init,
                params_partial,
                maps,
                out: out_path,
                resume,
                log,
                checkpoint_every,
                checkpoint,
                quiet,
            },
            ranks,
            &mut out,
        ),
        Command::Grad {
            model:
                ModelArgs {
                    file,
                    set,
                    seed,
                    max_memory,
                    precision,
                },
            params,
            params_partial,
            method,
            segment,
            forward_limit,
            format,
            out: out_path,
            no_timings,
        } => grad::grad(
            &grad::GradArgs {
                file,
                overrides: Overrides {
                    values: set,
                    precision: precision.map(Into::into),
                },
                seed,
                max_memory,
                params,
                params_partial,
                method,
                segment,
                forward_limit,
                format,
                out: out_path,
                no_timings,
            },
            &mut out,
        ),
        Command::Completions { shell } => {
            out.stdout.push_str(&completion_script(shell));
            exit::OK
        }
        Command::Plot {
            model:
                ModelArgs {
                    file,
                    set,
                    seed,
                    max_memory,
                    precision,
                },
            params,
            out: out_path,
            kind,
            vars,
            log,
            size,
        } => plot::plot(
            &plot::PlotArgs {
                file,
                overrides: Overrides {
                    values: set,
                    precision: precision.map(Into::into),
                },
                seed,
                max_memory,
                params,
                out: out_path,
                kind,
                vars: vars.map(|v| v.0),
                log,
                size,
            },
            &mut out,
        ),
    };
    if ranks.is_root() {
        out.flush();
    }
    #[cfg(feature = "mpi")]
    if let Some(world) = &mpi {
        if ranks.is_root() && std::env::var_os("NODEC_MPI_TRAFFIC").is_some() {
            let _ = std::io::stderr().write_all(world.traffic().as_bytes());
        }
    }
    code
}

/// The completion script of `nodec` for `shell`, generated from the clap definitions above so
/// it always offers the current subcommands and flags.
fn completion_script(shell: clap_complete::Shell) -> String {
    use clap::CommandFactory as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "nodec", &mut script);
    // clap_complete writes UTF-8 (the command's names and help are Rust strings).
    String::from_utf8_lossy(&script).into_owned()
}

/// What a command prints, written once at the end so a broken pipe cannot interleave.
#[derive(Default)]
pub struct Output {
    /// The report.
    pub stdout: String,
    /// Diagnostics.
    pub stderr: String,
}

impl Output {
    fn flush(&self) {
        // A closed pipe (`nodec ir m.node | head`) is not an error worth reporting.
        let _ = std::io::stdout().write_all(self.stdout.as_bytes());
        let _ = std::io::stderr().write_all(self.stderr.as_bytes());
    }
}

/// Reads, parses and checks one file, rendering diagnostics to stderr, and refuses a model whose
/// estimated memory ([`crate::budget`]) exceeds `max_memory` (default: [`memory_limit`]).
/// `None` on any error.
fn check_file(
    path: &str,
    overrides: &Overrides,
    max_memory: Option<u64>,
    out: &mut Output,
) -> Option<(SourceFile, crate::ir::Model)> {
    let file = match read_source(path) {
        Ok(file) => file,
        Err(message) => {
            out.stderr.push_str(&message);
            return None;
        }
    };
    let stem = Path::new(path)
        .file_stem()
        .map_or("model".to_string(), |s| s.to_string_lossy().into_owned());
    let (model, diags) = crate::check_source(&file, overrides, &stem);
    out.stderr.push_str(&diags.render(&file));
    if diags.has_errors() {
        return None;
    }
    let blocks: Vec<_> = model
        .data
        .iter()
        .map(|b| crate::budget::BlockSize::declared(&model, b))
        .collect();
    let estimate = crate::budget::estimate(&model, &blocks, rayon::current_num_threads());
    if let Some(refusal) = estimate.check(memory_limit(max_memory)) {
        out.stderr.push_str(&refusal.render(&file));
        return None;
    }
    Some((file, model))
}

/// The memory budget in bytes: `--max-memory`, else three quarters of the machine's memory
/// ([`crate::budget::default_limit`]).
pub fn memory_limit(max_memory: Option<u64>) -> u64 {
    max_memory.unwrap_or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
        crate::budget::default_limit(meminfo.as_deref())
    })
}

/// Reads a model file, rejecting files that are too large or not UTF-8 with a located error.
fn read_source(path: &str) -> Result<SourceFile, String> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| format!("{path}: error: cannot read the file: {e}\n"))?;
    if metadata.is_dir() {
        return Err(format!(
            "{path}: error: this is a directory, not a model file\n"
        ));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{path}: error: the file is {} bytes, more than the limit of {MAX_FILE_BYTES} bytes for a model\n",
            metadata.len()
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| format!("{path}: error: cannot read the file: {e}\n"))?;
    decode(path, bytes)
}

/// Decodes UTF-8, pointing at the first invalid byte.
fn decode(path: &str, bytes: Vec<u8>) -> Result<SourceFile, String> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile::new(path, text)),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let prefix = String::from_utf8_lossy(&bytes[..valid]).into_owned();
            let file = SourceFile::new(path, prefix);
            let (line, column) = file.line_col(valid);
            Err(format!(
                "{path}:{line}:{column}: error: the file is not valid UTF-8 (byte 0x{:02x} at offset {valid}); a model file is text\n",
                bytes[valid]
            ))
        }
    }
}

/// Whether `path`'s extension is `ext`, in any case (`P.NPZ` is an `.npz`).
pub fn has_extension(path: &str, ext: &str) -> bool {
    Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// Writes a file atomically: a temporary file beside it, flushed to disk, then renamed over the
/// target, so a reader (or a crash) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// A file written in pieces and then put in place whole, as [`write_atomic`] does: the pieces
/// go to `.NAME.PID.tmp` beside the target, and [`AtomicFile::commit`] flushes it to disk and
/// renames it over the target. Dropped without a commit (an error, a panic), the temporary
/// file is removed and the target is untouched.
pub struct AtomicFile {
    file: Option<std::io::BufWriter<std::fs::File>>,
    tmp: std::path::PathBuf,
    target: std::path::PathBuf,
}

impl AtomicFile {
    /// Checks the target ([`check_output`]), clears stale temporaries and creates the
    /// temporary file.
    pub fn create(path: &Path) -> std::io::Result<AtomicFile> {
        check_output(path).map_err(std::io::Error::other)?;
        let dir = output_dir(path);
        let name = path
            .file_name()
            .map_or("out".into(), |n| n.to_string_lossy().into_owned());
        remove_stale_temporaries(dir, &name);
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = std::fs::File::create(&tmp)?;
        Ok(AtomicFile {
            file: Some(std::io::BufWriter::new(file)),
            tmp,
            target: path.to_path_buf(),
        })
    }

    /// Appends bytes to the temporary file.
    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(std::io::Error::other("the file was already committed")),
        }
    }

    /// Flushes the temporary file to disk and renames it over the target.
    pub fn commit(mut self) -> std::io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("the file was already committed"))?;
        let result = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.target));
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }
}

/// So that serializers stream into the temporary file instead of building the text first (a
/// wide model's parameters are tens of MB of JSON).
impl std::io::Write for AtomicFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(bytes),
            None => Err(std::io::Error::other("the file was already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Checks every output path given ([`check_output`]), reporting each refusal; `false` if any.
fn outputs_writable<const N: usize>(paths: [&Option<String>; N], out: &mut Output) -> bool {
    let mut ok = true;
    for path in paths.into_iter().flatten() {
        if let Err(e) = check_output(Path::new(path)) {
            out.stderr.push_str(&format!("{path}: error: {e}\n"));
            ok = false;
        }
    }
    ok
}

/// The directory an output file is written in.
fn output_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether `path` may be written by [`write_atomic`]: absent or a regular file, in a directory
/// where a file can be created. A rename over a symlink, FIFO or device would replace it with
/// a regular file (as root, `--out /dev/null` would delete the device node), so those are
/// refused rather than followed. Commands check their outputs before any work starts, so that
/// hours of training are not lost to an output that cannot be written.
pub fn check_output(path: &Path) -> Result<(), String> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let kind = meta.file_type();
            let what = if kind.is_file() {
                None
            } else if kind.is_symlink() {
                Some("a symbolic link")
            } else if kind.is_dir() {
                Some("a directory")
            } else {
                Some("a device, FIFO or socket")
            };
            if let Some(what) = what {
                return Err(format!(
                    "`{shown}` is {what}; nodec writes only regular files (it replaces them whole, through a temporary file), so choose the path of a file"
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot write `{shown}`: {e}")),
    }
    let dir = output_dir(path);
    // A process killed between creating and removing its probe leaves it; the next one clears it.
    remove_stale_temporaries(dir, "nodec-probe");
    let probe = dir.join(format!(".nodec-probe.{}.tmp", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot write `{shown}`: the directory `{}` does not take new files ({e})",
            dir.display()
        )),
    }
}

/// Removes `.NAME.PID.tmp` files that [`write_atomic`] left for `name` when a process was killed
/// while writing: those whose process no longer runs (known on Linux through `/proc`; elsewhere
/// nothing is removed).
fn remove_stale_temporaries(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = std::env::temp_dir().join(format!("nodec-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        assert!(write_atomic(&dir.join("missing/x.json"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Only regular files are replaced; `/dev/null`'s metadata is enough to refuse it (nothing
    /// in `/dev` is written).
    #[test]
    fn outputs_that_are_not_regular_files_are_refused() {
        let refused = check_output(Path::new("/dev/null")).unwrap_err();
        assert!(refused.contains("device, FIFO or socket"), "{refused}");
        let dir = std::env::temp_dir().join(format!("nodec-outputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(check_output(&dir).unwrap_err().contains("a directory"));
        let target = dir.join("target.json");
        std::fs::write(&target, "kept").unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_atomic(&link, b"new").is_err());
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
        assert!(check_output(&dir.join("absent.json")).is_ok());
        assert!(check_output(&dir.join("no/such/dir.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A temporary left by a killed writer goes at the next write of the same file; one whose
    /// process still runs (this one) stays.
    #[test]
    fn stale_temporaries_are_removed_on_the_next_write() {
        let dir = std::env::temp_dir().join(format!("nodec-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Process ids are below 2^22 on Linux, so this one never runs.
        let stale = dir.join(".out.json.4294967.tmp");
        let live = dir.join(format!(".other.json.{}.tmp", std::process::id()));
        // A writability probe left by a process killed while checking its output path.
        let probe = dir.join(".nodec-probe.4294967.tmp");
        std::fs::write(&stale, "partial").unwrap();
        std::fs::write(&live, "in progress").unwrap();
        std::fs::write(&probe, "").unwrap();
        write_atomic(&dir.join("out.json"), b"whole").unwrap();
        assert!(!stale.exists());
        assert!(!probe.exists());
        assert!(live.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_utf8_is_located() {
        let err = decode("m.node", b"state x = 1\nparam caf\xe9 = 2\n".to_vec()).unwrap_err();
        assert!(
            err.starts_with("m.node:2:10: error: the file is not valid UTF-8"),
            "{err}"
        );
    }
}
