//! The integration-test binary: one module per area, driving the library façade or the real
//! `nodec` binary.

/// `tests/bad/*.node`: each malformed model fails with diagnostics, snapshotted byte for byte.
mod bad;
/// The memory budget: refusals at the driving declaration with the figure, and runs below it.
mod budget;
/// The command line's surface: `--help` examples and shell completions.
mod cli;
/// Compiled kernels against the interpreter, finite differences and each other.
mod compile;
/// Data sets: the portable generator, toy sets, CSV and series parsing.
mod data;
/// Symbolic derivatives of every model against finite differences and each other.
mod derivatives;
/// Every ```node block of the README and `docs/` checks (or fails as its error marker says).
mod docs;
/// `run --ensemble`: grids, member files and seeded draws against closed forms and single runs.
mod ensemble;
/// Events: bounce times, terminate and dosing against closed forms; refusals.
mod events;
/// Property tests: no input makes `check` panic.
mod fuzz;
/// The fuzz harness: a corpus-mutation runner over every reader (campaigns are ignored; a
/// short slice runs here), and the regression tests of what it found.
mod fuzz_campaign;
/// Gradients through the solve against finite differences and theory.
mod grad;
/// Backprop through adaptive and implicit schedules, and the continuous adjoint.
mod grad_adjoint;
/// Forward sensitivities against closed forms, finite differences and backprop.
mod grad_forward;
/// The lane loops' AVX2 copies give the bits of the baseline copies.
mod isa;
/// The model library's properties from theory: reversibility, stability, conservation, fits.
mod library;
/// Models run, differentiated and trained in f32 (mixed precision) against f64.
mod mixed_precision;
/// Every model in `models/` checks clean through the binary; `ir` output is snapshotted.
mod models;
/// `--features mpi`: ensembles and training under mpirun, byte for byte against one process.
#[cfg(feature = "mpi")]
mod mpi;
/// `nodec plot`: every kind renders a valid, non-blank SVG and PNG; `auto`'s rule; misfits.
mod plot;
/// Kernels in f32 against f64 on every model and entry point; forward/reverse products in f32.
mod precision;
/// Results for other tools: parameter files with shapes, `run --all-samples`, `.npy`/`.npz`.
mod results;
/// Reverse time: backward schedules against closed forms, orders and finite differences.
mod reverse;
/// `nodec run` end to end.
mod run;
/// Multiple shooting: single shooting to the bit at N = 1, a poor start recovered, resume.
mod shooting;
/// Shared helpers: paths, running the binary, loading models.
mod support;
/// The tensor IR and its derivatives against the scalar IR, and its size against width.
mod tensor;
/// `nodec train` end to end.
mod train;
/// The trained models of `models/` reach their targets (full runs ignored: slow).
mod train_models;
/// `nodec train` with `msa`, the method of successive approximations: against Adam on
/// `models/msa_sin.node`, refusals, thread-count and resume determinism.
mod train_msa;
/// Several trajectories in one series: against single runs, parsing and errors.
mod trajectories;
