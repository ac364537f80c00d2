//! `compile`: the prepared IR as fast batched kernels.
//!
//! [`Program::compile`] turns a prepared [`ir::Model`] into kernels that evaluate, for a block of
//! samples at once (component-major, `y[i * width + s]`), the state equations, their Jacobian
//! products, the initial state, costs, metrics and outputs. Parameters are shared by a block
//! ([`Params`], layout in [`ParamLayout`]); states, directions, inputs and labels are per sample.
//! Scratch space lives in a [`Workspace`] created once per block and thread; the hot path never
//! walks the IR or hashes, and allocates only the packing buffer of a matrix product run as a
//! GEMM (see `tape::matmul`). `compile` knows nothing of solvers: `simulate` presents a program
//! to them.
//!
//! Two kinds of kernels sit behind one [`Program`]: the scalar tape (`tape`: one instruction
//! per element, fused sums, GEMMs found among them, native code for small kernels), compiled
//! from the scalar IR for models small enough to have one (`ir::prepare_to_run`), and tensor
//! kernels (`tensor`: one operation per tensor node, GEMMs over the block, fused elementwise
//! loops), compiled from the tensor IR for wide models. Derivatives come from the symbolic
//! JVP/VJP IR (scalar or tensor), compiled like any other expression. The dense Jacobian is one
//! JVP call on a block of `dim` lanes whose tangents are the unit vectors, so it equals the
//! stacked JVPs exactly.
//!
//! Precision: every kernel and entry point is generic in [`Real`] (`f64`, `f32`), one code
//! path monomorphized twice; the precision is the [`Workspace`]'s (`Workspace<R = f64>`, so
//! `f64` callers name no type). States, directions, cotangents, outputs, parameter gradients,
//! registers, the uniform file and GEMMs (`nalgebra`'s generic `gemm`: `sgemm` or `dgemm`) are
//! `R`. What stays `f64` (master copies, as in mixed-precision training): [`Params`], times
//! (pieces of per-layer and knot parameters are found in `f64`; a kernel reading `t` gets it
//! rounded), bound data (rounded when bound), and the uniform prologue of a kernel, which
//! depends on the parameters only: it runs in `f64` once per parameter update and its file
//! is rounded to `R` once, as is a copy of the parameters that tensor kernels read in place.
//! The `f64` instantiation reads all of these in place, so its bits and costs are those of the
//! code before it was generic. Native code (`tape::native`) is `f64` only: `f32` kernels run
//! in the interpreter (its AVX2 copy holds eight `f32` per vector). Penalties are summed in `f64`.

mod gemm;
mod isa;
mod lanes;
pub(crate) mod math;
mod params;
mod tape;
mod tensor;
#[cfg(test)]
mod tests;

pub use gemm::{gemm, View};
pub use isa::lane_isa;
/// The block widths the lane loops are specialized for, which `solve::block_width` chooses
/// between: a block of another width runs their plain, slower loops.
pub(crate) use lanes::{NARROW as NARROW_LANES, WIDE as WIDE_LANES};
pub use math::{exp, sigmoid, tanh, tanh_in_place};
pub use params::{FitError, ParamEntry, ParamLayout, Params, Piece};

use std::collections::HashMap;

use crate::ir::tensor::TId;
use crate::ir::{self, CostKind};
use crate::real::{narrow_into, Real};
use tape::{Builder, Lanes, BANKS};

/// Which kernel; index into [`Program::kernels`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum K {
    Rhs,
    Init,
    JvpState,
    JvpParam,
    VjpState,
    Vjp,
    VjpParam,
    RhsTime,
    InitJvpParam,
    InitVjpParam,
    Metrics,
    Outputs,
    LmCoef,
    LmCoefParam,
    MsaMixed,
    VjpSaved,
    EventConds,
    EventJumps,
    EventJvp,
    /// The field followed by the running costs' sum `L`: the quadrature's right-hand side in
    /// the same pass (scalar tape, models with running costs).
    RhsQuad,
    /// The VJP of `RhsQuad`'s rows (`quad_vjp_state`, `quad_vjp_param`).
    VjpQuad,
    /// `VjpQuad` reading the registers `RhsQuad` saved.
    VjpQuadSaved,
}

const FIXED_KERNELS: usize = 22;

/// A compiled kernel: the scalar tape, which small models run (as native code where it pays),
/// or tensor operations, whose size follows the model's text rather than its widths.
#[derive(Clone, Debug)]
enum Kernel {
    Tape(tape::Kernel),
    Tensor(tensor::Kernel),
}

impl Default for Kernel {
    fn default() -> Kernel {
        Kernel::Tape(tape::Kernel::default())
    }
}

impl Kernel {
    fn n_regs(&self) -> usize {
        match self {
            Kernel::Tape(k) => k.n_regs,
            Kernel::Tensor(k) => k.n_regs,
        }
    }

    fn n_uniform(&self) -> usize {
        match self {
            Kernel::Tape(k) => k.n_uniform,
            Kernel::Tensor(k) => k.n_uniform,
        }
    }

    fn n_reduce(&self) -> usize {
        match self {
            Kernel::Tape(k) => k.n_reduce,
            Kernel::Tensor(k) => k.n_reduce,
        }
    }

    fn scratch_len(&self, width: usize) -> usize {
        match self {
            Kernel::Tape(k) => k.scratch,
            Kernel::Tensor(k) => k.scratch_len(width),
        }
    }

    fn reads_tangent(&self) -> bool {
        match self {
            Kernel::Tape(k) => k.reads_tangent,
            Kernel::Tensor(k) => k.reads_tangent,
        }
    }

    fn reads_time(&self) -> bool {
        match self {
            Kernel::Tape(k) => k.reads_time,
            Kernel::Tensor(k) => k.reads_time,
        }
    }

    fn native(&self) -> Option<&tape::native::Native> {
        match self {
            Kernel::Tape(k) => k.native(),
            Kernel::Tensor(_) => None,
        }
    }

    /// Starts generating the kernel's native code (see [`tape::native::NATIVE_AFTER`]).
    fn start_native(&self) {
        if let Kernel::Tape(k) = self {
            k.start_native();
        }
    }

    /// [`Kernel::native`], compiled now if it is not ready.
    #[cfg(test)]
    fn native_now(&self) -> Option<&tape::native::Native> {
        match self {
            Kernel::Tape(k) => k.native_now(),
            Kernel::Tensor(_) => None,
        }
    }

    fn prepare(&self, theta: &[f64], tangent: &[f64], u: &mut [f64]) {
        match self {
            Kernel::Tape(k) => k.prepare(theta, tangent, u),
            Kernel::Tensor(k) => k.prepare(theta, tangent, u),
        }
    }

    /// Runs the kernel's lanes; `params` are the parameters in storage order, which a tensor
    /// kernel reads in place when they are constant in time.
    #[allow(clippy::too_many_arguments)]
    fn run<R: Real>(
        &self,
        u: &[R],
        params: &[R],
        regs: &mut [R],
        lanes: Lanes<'_, R>,
        out: &mut [R],
        reduced: &mut [R],
        scratch: &mut [R],
    ) {
        match self {
            Kernel::Tape(k) => k.run(u, regs, lanes, out, reduced, scratch),
            Kernel::Tensor(k) => k.run(u, params, regs, lanes, out, reduced, scratch),
        }
    }

    /// The scalar tape, for tests that look inside it.
    #[cfg(test)]
    fn tape(&self) -> &tape::Kernel {
        match self {
            Kernel::Tape(k) => k,
            Kernel::Tensor(_) => panic!("a tensor kernel"),
        }
    }
}

/// The compiled model: kernels for every entry point, the parameter layout and the shapes of
/// the blocks they read and write. `Send + Sync`; all mutable state is in a [`Workspace`],
/// apart from a cache of uniform files its workspaces share (`SharedUniforms`).
#[derive(Clone, Debug)]
pub struct Program {
    kernels: Vec<Kernel>,
    /// One kernel per declared cost kind: values then state gradients as lanes, parameter
    /// gradients reduced; and one with the value alone.
    /// Per cost entry: its kind, the kernel with gradients, the value-only kernel, and the
    /// number of parameter copies it is summed over (see [`crate::ir::CostGradient::copies`]).
    costs: Vec<(CostKind, usize, usize, usize)>,
    layout: ParamLayout,
    dim: usize,
    input_len: usize,
    labels: usize,
    observed_len: usize,
    metrics_len: usize,
    outputs_len: usize,
    t0: f64,
    t1: f64,
    has_lm_k: bool,
    /// Whether the `msa` mixed second-derivative kernel was built.
    has_msa_mixed: bool,
    /// Whether an initial state depends on a parameter (its pull-back to them is not zero).
    init_reads_params: bool,
    /// Whether some parameter changes with time (cached [`ParamLayout::is_time_varying`]).
    time_varying: bool,
    /// The precision [`Program::workspace`] runs the kernels in.
    precision: ir::Precision,
    /// Registers of `Rhs` that `VjpSaved` reads (row `i` of its `SAVED` bank is register
    /// `saved_rows[i]`); empty when the VJP recomputes everything.
    saved_rows: Vec<u32>,
    /// Whether `RhsQuad` and `VjpQuad` were built (see [`Program::has_fused_running_cost`]).
    fused_running: bool,
    /// Registers of `RhsQuad` that `VjpQuadSaved` reads, like `saved_rows`.
    quad_saved_rows: Vec<u32>,
    /// The model's events, in declaration order (empty for most models).
    events: Vec<EventInfo>,
    /// Structural nonzeros of `∂f/∂y` per row, when the scalar IR gives them.
    jacobian_pattern: Option<Vec<Vec<u32>>>,
    /// Uniform files every workspace reads, computed once per parameter generation.
    shared: SharedUniforms,
}

/// The uniform files of kernels whose uniforms depend on the parameters alone (no tangent,
/// parameters constant in time), shared by every workspace of the program: a pure function of
/// the parameters' generation, computed by the first thread that needs it and read by all. A
/// wide model's files hold its transposed weights (`Kᵀ` of a VJP): one copy, not one per
/// thread. The program's only mutable state, a cache: which thread fills it does not change a
/// bit of it.
#[derive(Default)]
struct SharedUniforms {
    /// Per kernel: the parameters' generation and the file (a `Vec<R>` of the precision that
    /// asked for it).
    files: std::sync::Mutex<HashMap<usize, (u64, SharedFile)>>,
}

type SharedFile = std::sync::Arc<dyn std::any::Any + Send + Sync>;

impl SharedUniforms {
    /// Kernel `k`'s file for parameters of generation `generation` in precision `R`, from
    /// `fill` unless it is already held.
    fn get<R: Real>(
        &self,
        k: usize,
        generation: u64,
        fill: impl FnOnce() -> Vec<R>,
    ) -> std::sync::Arc<Vec<R>> {
        // A poisoned lock only means another thread panicked mid-fill: the map is still a
        // valid cache (a half-made entry is never inserted).
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, file)) = files.get(&k) {
            if *g == generation {
                if let Ok(file) = file.clone().downcast::<Vec<R>>() {
                    return file;
                }
            }
        }
        // The stale file goes before its successor is made: holding both doubled the largest
        // allocation of a wide model's gradient (wide_4096: 2 × 4.2 MB of `Kᵀ`).
        files.remove(&k);
        let file = std::sync::Arc::new(fill());
        files.insert(k, (generation, file.clone()));
        file
    }
}

impl Clone for SharedUniforms {
    /// A cache starts empty.
    fn clone(&self) -> Self {
        SharedUniforms::default()
    }
}

impl std::fmt::Debug for SharedUniforms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedUniforms")
    }
}

/// An event as the compiled program runs it: [`Program::event_conditions`] row `i` is its
/// condition, and its assigned values are rows `jump_offset..` of [`Program::event_jumps`].
#[derive(Clone, Debug, PartialEq)]
pub struct EventInfo {
    /// The event's name.
    pub name: String,
    /// `1` rising, `-1` falling, `0` both.
    pub direction: i8,
    /// Whether the event stops the sample.
    pub terminate: bool,
    /// Assignment targets: (offset in the state, elements).
    pub targets: Vec<(usize, usize)>,
    /// The first row of this event's values in [`Program::event_jumps`].
    pub jump_offset: usize,
}

fn event_specs(model: &ir::Model) -> Vec<EventInfo> {
    let mut offset = 0;
    model
        .events
        .iter()
        .map(|e| {
            let info = EventInfo {
                name: e.name.clone(),
                direction: e.direction,
                terminate: e.terminate,
                targets: e.targets.clone(),
                jump_offset: offset,
            };
            offset += e.targets.iter().map(|t| t.1).sum::<usize>();
            info
        })
        .collect()
}

/// Per-kernel cache of the uniform file: valid while the parameters' generation and the piece
/// of time are the ones it was filled for.
#[derive(Clone, Debug, Default)]
struct UniformCache<R> {
    key: Option<(u64, u64)>,
    u: Uniforms<R>,
    /// Whether the workspace's buffers have been grown for this kernel (`Workspace::fit`).
    fitted: bool,
    /// The kernel's native code, once [`Program::rhs`] has found it ready (its fast path).
    native: Option<tape::native::Native>,
    /// Lane evaluations run through [`Program::run`] here, counted up to
    /// [`tape::native::NATIVE_AFTER`], when the kernel's native code is started.
    lane_runs: usize,
}

impl<R> UniformCache<R> {
    /// Counts a run of `lanes` lane evaluations of `kernel`, starting its native code when
    /// they reach [`tape::native::NATIVE_AFTER`].
    #[inline(always)]
    fn count_run(&mut self, kernel: &Kernel, lanes: usize) {
        if self.lane_runs < tape::native::NATIVE_AFTER {
            self.lane_runs += lanes;
            if self.lane_runs >= tape::native::NATIVE_AFTER {
                kernel.start_native();
            }
        }
    }
}

impl<R: Real> Workspace<R> {
    /// Grows the registers, reductions and scratch to what `kernel` needs, and the tangent
    /// view to `view_len` if the call has a tangent. Allocates only on a kernel's first call.
    #[inline(always)]
    fn fit(&mut self, k: usize, kernel: &Kernel, view_len: usize) {
        // One flag on the hot path: a Lorenz-size kernel costs tens of nanoseconds a call.
        if !self.caches[k].fitted {
            self.grow_for(kernel, view_len);
            self.caches[k].fitted = true;
        }
    }

    #[cold]
    #[inline(never)]
    fn grow_for(&mut self, kernel: &Kernel, view_len: usize) {
        grown(&mut self.regs, kernel.n_regs() * self.width);
        // A tensor kernel with parameters constant in time reduces straight into the caller's
        // gradient; its `reduced` buffer (as long as every weight) is grown only if needed.
        if matches!(kernel, Kernel::Tape(_)) {
            grown(&mut self.reduced, kernel.n_reduce());
        }
        grown(&mut self.scratch, kernel.scratch_len(self.width));
        if kernel.reads_tangent() {
            grown(&mut self.tangent, view_len);
        }
    }
}

/// `buf` grown to at least `len` values, as a slice of exactly `len`.
fn grown<R: Real>(buf: &mut Vec<R>, len: usize) -> &mut [R] {
    if buf.len() < len {
        buf.resize(len, R::zero());
    }
    &mut buf[..len]
}

/// `src` as `f64`: itself when `R` is `f64`, else widened into `buf`.
fn widened<'a, R: Real>(src: &'a [R], buf: &'a mut Vec<f64>) -> &'a [f64] {
    match R::as_f64(src) {
        Some(s) => s,
        None => {
            buf.clear();
            buf.extend(src.iter().map(|x| x.widen()));
            buf
        }
    }
}

/// Fills `kernel`'s uniform file `u` from the resolved parameters and tangent: in place for
/// `f64`; for another precision in `f64` (the uniform prologue depends on the parameters
/// only and runs once per update) into `staging`, then rounded once.
fn prepare_into<R: Real>(
    kernel: &Kernel,
    theta: &[f64],
    tangent: &[f64],
    u: &mut [R],
    staging: &mut Vec<f64>,
) {
    match R::as_f64_mut(u) {
        Some(u) => kernel.prepare(theta, tangent, u),
        None => {
            // Zeroed, as a new cache is: slots the prologue does not write read 0.
            let s = grown(staging, u.len());
            s.fill(0.0);
            kernel.prepare(theta, tangent, s);
            narrow_into(s, u);
        }
    }
}

/// The parameters in the kernels' precision, for tensor kernels that read them in place: the
/// storage itself for `f64`, else a copy rounded once per parameter update.
#[derive(Clone, Debug, Default)]
struct Narrowed<R> {
    generation: Option<u64>,
    values: Vec<R>,
}

/// The `f64` buffers a kernel's uniforms are resolved and computed in (see [`prepare_into`]).
struct Resolved<'a> {
    theta: &'a mut Vec<f64>,
    tangent: &'a mut Vec<f64>,
    tangent_wide: &'a mut Vec<f64>,
    staging: &'a mut Vec<f64>,
}

impl<R: Real> Narrowed<R> {
    #[inline(always)]
    fn of<'a>(&'a mut self, params: &'a Params) -> &'a [R] {
        let fresh = self.generation == Some(params.generation());
        self.generation = Some(params.generation());
        R::from_f64s(params.values(), &mut self.values, !fresh)
    }
}

impl<R: Real> UniformCache<R> {
    /// The cache's own uniform file, of the size of `kernel`'s, for filling. A block calls a
    /// few of the program's kernels, and a wide model's uniform files hold its weight
    /// matrices: only those called are allocated, on first use.
    fn own_for(&mut self, kernel: &Kernel) -> &mut Vec<R> {
        if let Uniforms::Shared(_) = self.u {
            self.u = Uniforms::Own(Vec::new());
        }
        let Uniforms::Own(u) = &mut self.u else {
            unreachable!("made its own above")
        };
        if u.len() != kernel.n_uniform() {
            u.resize(kernel.n_uniform(), R::zero());
        }
        u
    }
}

/// A workspace's uniform file for one kernel: its own, or the program's shared one
/// ([`SharedUniforms`]).
#[derive(Clone, Debug)]
enum Uniforms<R> {
    Own(Vec<R>),
    Shared(std::sync::Arc<Vec<R>>),
}

impl<R> Default for Uniforms<R> {
    fn default() -> Self {
        Uniforms::Own(Vec::new())
    }
}

impl<R> std::ops::Deref for Uniforms<R> {
    type Target = [R];
    fn deref(&self) -> &[R] {
        match self {
            Uniforms::Own(u) => u,
            Uniforms::Shared(u) => u,
        }
    }
}

/// The field's native code for one sample, bound to a workspace ([`Program::field_call`]):
/// what [`Program::rhs`] would run, without its checks on each call.
pub struct FieldCall<'w> {
    call: tape::native::StateCall<'w>,
    count: Option<fn(usize)>,
    /// Calls not yet told to `count`.
    pending: usize,
}

impl FieldCall<'_> {
    /// Calls told to `count` at a time: a live count for progress reports need not be exact
    /// between them, and telling it costs a fifth of a small field's call.
    const COUNT_EVERY: usize = 256;

    /// Also tells `count` of the evaluations (the live count a progress report reads), in
    /// batches; [`FieldCall::flush`] tells the rest.
    pub fn counting(self, count: fn(usize)) -> Self {
        FieldCall {
            count: Some(count),
            ..self
        }
    }

    /// `out = f(t, y)`; false (nothing written) when `y` or `out` is shorter than the
    /// dimension the call was made for.
    #[inline(always)]
    pub fn call(&mut self, t: f64, y: &[f64], out: &mut [f64]) -> bool {
        self.pending += 1;
        if self.pending == Self::COUNT_EVERY {
            self.flush();
        }
        self.call.call(t, y, out)
    }

    /// Tells `count` of the calls it has not been told of.
    pub fn flush(&mut self) {
        if let Some(count) = self.count {
            count(self.pending);
        }
        self.pending = 0;
    }
}

/// Scratch space for one block of `width` samples: lane registers, the block's bound inputs,
/// labels and observations (component-major), resolved parameters and per-kernel uniforms.
/// Create it once per block and thread with [`Program::workspace`] (`f64`) or
/// [`Program::workspace_in`] (any [`Real`]): the precision of a workspace is the precision the
/// kernels run in.
#[derive(Clone, Debug)]
pub struct Workspace<R = f64> {
    width: usize,
    regs: Vec<R>,
    inputs: Vec<R>,
    labels: Vec<R>,
    observed: Vec<R>,
    /// Times of a block whose samples share one (`f64`, like every time).
    times: Vec<f64>,
    /// The block's times in the kernels' precision (not used by `f64`, which reads them in
    /// place).
    time_lanes: Vec<R>,
    /// Resolved parameters and parameter tangent (`f64`: see [`crate::real`]).
    theta: Vec<f64>,
    tangent: Vec<f64>,
    /// A parameter tangent widened to `f64` before it is resolved, and the uniform file
    /// computed in `f64` before it is rounded (neither used by `f64`).
    tangent_wide: Vec<f64>,
    staging: Vec<f64>,
    /// The parameters rounded to `R`, for tensor kernels that read them in place.
    narrowed: Narrowed<R>,
    reduced: Vec<R>,
    /// Cells of the reductions' matrix products.
    scratch: Vec<R>,
    /// Whether matrix products run as GEMMs (`tape::matmul`); off only to test and measure the
    /// lane loops.
    matmul: bool,
    /// Whether kernels compiled to native code run it (`tape::native`); off only to test and
    /// measure the interpreter.
    native: bool,
    caches: Vec<UniformCache<R>>,
    jacobian: Option<Box<JacobianScratch<R>>>,
    /// The kernels' own workspace when the program runs in single precision and this is its
    /// `f64` workspace ([`Program::workspace`]): every kernel the entry points call runs
    /// there, on blocks narrowed to `f32`.
    single: Option<Box<Single>>,
}

/// The `f32` side of an `f64` workspace of a single-precision program (mixed precision: the
/// solvers keep states, parameters and gradients in `f64`, the kernels compute in `f32`).
/// [`Program::run_single`] narrows a kernel's inputs into these buffers, runs the kernel here
/// and widens its outputs back; parameter gradients are added to the caller's `f64` sums.
#[derive(Clone, Debug)]
struct Single {
    ws: Workspace<f32>,
    y: Vec<f32>,
    v: Vec<f32>,
    w: Vec<f32>,
    tangent: Vec<f32>,
    out: Vec<f32>,
    grad: Vec<f32>,
}

/// The `f32` values [`copy_saved`] keeps in the first half of `saved`'s slots.
fn saved_f32<R: Real>(saved: &[R]) -> &[f32] {
    let slots = R::as_f64(saved).expect("a single-precision program's workspace is f64");
    &bytemuck::cast_slice(slots)[..slots.len()]
}

/// `src` rounded to `f32` into `dst`.
fn narrowed_into<'a, R: Real>(src: &[R], dst: &'a mut Vec<f32>) -> &'a [f32] {
    dst.resize(src.len(), 0.0);
    narrow_lanes(src, dst);
    dst
}

// The conversions at the boundary of a single-precision program's kernels: AVX2 converts four
// values an instruction (AVX-512 eight) where SSE2 converts two (they were 9 % of a P4 D = 32
// gradient's instructions in SSE2).
isa::multiversion!(
    /// `dst = src` rounded to `f32` (equal lengths).
    fn narrow_lanes<R: Real>(src: &[R], dst: &mut [f32]) => narrow_lanes_body
);

#[inline(always)]
fn narrow_lanes_body<R: Real>(src: &[R], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.widen() as f32;
    }
}

isa::multiversion!(
    /// `dst = src` widened (equal lengths).
    fn widen_lanes<R: Real>(src: &[f32], dst: &mut [R]) => widen_lanes_body
);

#[inline(always)]
fn widen_lanes_body<R: Real>(src: &[f32], dst: &mut [R]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = R::cast(f64::from(s));
    }
}

isa::multiversion!(
    /// `dst += src` widened (the first `src.len()` values of `dst`).
    fn add_widened<R: Real>(src: &[f32], dst: &mut [R]) => add_widened_body
);

#[inline(always)]
fn add_widened_body<R: Real>(src: &[f32], dst: &mut [R]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += R::cast(f64::from(s));
    }
}

#[derive(Clone, Debug)]
struct JacobianScratch<R> {
    ws: Workspace<R>,
    /// Tangent directions (lanes) the scratch is built for, and whether they are the identity.
    lanes: usize,
    identity: bool,
    y: Vec<R>,
    v: Vec<R>,
    out: Vec<R>,
}

impl<R: Real> Workspace<R> {
    /// The block width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Binds the block's inputs from sample-major rows (`rows[s * input_len + i]`).
    pub fn bind_inputs(&mut self, rows: &[f64]) {
        to_soa(rows, &mut self.inputs, self.width);
        if let Some(single) = self.single.as_deref_mut() {
            single.ws.bind_inputs(rows);
        }
    }

    /// Binds the block's labels from sample-major rows (`rows[s * labels + l]`).
    pub fn bind_labels(&mut self, rows: &[f64]) {
        to_soa(rows, &mut self.labels, self.width);
        if let Some(single) = self.single.as_deref_mut() {
            single.ws.bind_labels(rows);
        }
    }

    /// Binds the block's observed values from sample-major rows.
    pub fn bind_observed(&mut self, rows: &[f64]) {
        to_soa(rows, &mut self.observed, self.width);
        if let Some(single) = self.single.as_deref_mut() {
            single.ws.bind_observed(rows);
        }
    }
}

/// The cheapest instruction (lane operations per sample, [`tape::Kernel::cost`]'s scale) whose
/// result a VJP reads saved rather than recomputing it (see [`Program::vjp_reading_rhs`]). A
/// square, a product or a two-term sum costs less to recompute from its sources than to copy
/// into the step record and read back: `cnf_moons` saved 130 rows per stage, most of them such
/// (2.1 MB of records per 64-sample block, beyond L2), and copying them took 11 % of its
/// training; keeping its 32 `tanh` rows and a few sums makes training 7–10 % faster with the
/// same bits.
const SAVE_MIN_COST: usize = 3;

/// Copies registers `rows` of the kernel `ws` last ran into `saved` (a row of the block width
/// each). An `f32` kernel's registers stay `f32`, in the first half of `saved`'s `f64` slots
/// ([`saved_f32`]): they only go back into the same kernels, and widening them for the record
/// and narrowing them again cost 7 % of P4 D = 32's `f32` training step.
fn copy_saved<R: Real>(rows: &[u32], saved: &mut [R], ws: &Workspace<R>) {
    let w = ws.width;
    if let Some(single) = ws.single.as_deref() {
        let slots = R::as_f64_mut(saved).expect("a single-precision program's workspace is f64");
        copy_rows(rows, bytemuck::cast_slice_mut(slots), &single.ws.regs, w);
        return;
    }
    copy_rows(rows, saved, &ws.regs, w);
}

/// Rows `rows` of `regs` (each `w` long) into consecutive rows of `dst`, as many as it holds
/// (none for an empty `dst`: nothing is being saved); a run of consecutive registers (a
/// layer's activations) is one copy.
fn copy_rows<T: Copy>(rows: &[u32], dst: &mut [T], regs: &[T], w: usize) {
    let rows = &rows[..rows.len().min(dst.len() / w.max(1))];
    let mut at = 0;
    while at < rows.len() {
        let first = rows[at] as usize;
        let mut len = 1;
        while at + len < rows.len() && rows[at + len] as usize == first + len {
            len += 1;
        }
        dst[at * w..(at + len) * w].copy_from_slice(&regs[first * w..(first + len) * w]);
        at += len;
    }
}

/// Sample-major rows into a component-major block of `width` samples (`dst.len() / width`
/// components), rounded to `R`; missing samples are left as they were.
fn to_soa<R: Real>(rows: &[f64], dst: &mut [R], width: usize) {
    let dim = dst.len() / width.max(1);
    if dim == 0 {
        return;
    }
    for (s, row) in rows.chunks_exact(dim).take(width).enumerate() {
        for (i, &x) in row.iter().enumerate() {
            dst[i * width + s] = R::cast(x);
        }
    }
}

/// Node visits allowed for finding the Jacobian's pattern; past it the Jacobian counts as dense
/// (a dense field pays `dim ×` its size, and is dense anyway).
const JACOBIAN_PATTERN_WORK: usize = 4_000_000;

/// The state-like blocks a kernel reads besides the bound data.
#[derive(Clone, Copy, Default)]
struct Blocks<'a, R> {
    y: &'a [R],
    v: &'a [R],
    w: &'a [R],
    saved: &'a [R],
}

impl Program {
    /// Compiles a prepared model (after [`ir::prepare`] or [`ir::prepare_to_run`]): the
    /// scalar tape if the model has its scalar IR, else tensor kernels. Never fails: `sema`
    /// checked limits.
    pub fn compile(model: &ir::Model) -> Program {
        if model.has_scalar_ir() {
            Program::compile_with(model, true)
        } else {
            Program::compile_tensor(model)
        }
    }

    /// [`Program::compile`] with fusion switched on or off. Without fusion every product is
    /// its own instruction and sums are computed one row at a time: the plain tape, kept to
    /// measure what fusion gains (`benches/kernels.rs`).
    pub fn compile_with(model: &ir::Model, fuse: bool) -> Program {
        let mut b = Builder::new(model);
        b.fuse = fuse;
        let d = &model.derivatives;
        let init: Vec<ir::ExprId> = model
            .states
            .iter()
            .flat_map(|s| s.init.iter().copied())
            .collect();
        let metrics: Vec<ir::ExprId> = model
            .metrics
            .iter()
            .flat_map(|o| o.value.iter().copied())
            .collect();
        let outputs: Vec<ir::ExprId> = model
            .outputs
            .iter()
            .flat_map(|o| o.value.iter().copied())
            .collect();
        let lm_k: Vec<ir::ExprId> = model.schedule.iter().filter_map(|s| s.lm_k).collect();
        let mut kernels = vec![tape::Kernel::default(); FIXED_KERNELS];
        let rhs = model.rhs();
        kernels[K::Rhs as usize] = b.kernel(&rhs, &[]);
        kernels[K::Init as usize] = b.kernel(&init, &[]);
        kernels[K::JvpState as usize] = b.kernel(&d.jvp_state, &[]);
        kernels[K::JvpParam as usize] = b.kernel(&d.jvp_param, &[]);
        kernels[K::VjpState as usize] = b.kernel(&d.vjp_state, &[]);
        kernels[K::Vjp as usize] = b.kernel(&d.vjp_state, &d.vjp_param);
        kernels[K::VjpParam as usize] = b.kernel(&[], &d.vjp_param);
        kernels[K::RhsTime as usize] = b.kernel(&d.rhs_time, &[]);
        kernels[K::InitJvpParam as usize] = b.kernel(&d.init_jvp_param, &[]);
        kernels[K::InitVjpParam as usize] = b.kernel(&[], &d.init_vjp_param);
        kernels[K::Metrics as usize] = b.kernel(&metrics, &[]);
        kernels[K::Outputs as usize] = b.kernel(&outputs, &[]);
        kernels[K::LmCoef as usize] = b.kernel(&lm_k, &[]);
        kernels[K::LmCoefParam as usize] = b.kernel(&[], &d.lm_k_param);
        kernels[K::MsaMixed as usize] = b.kernel(&[], &d.msa_mixed_param);
        if !model.events.is_empty() {
            let conds: Vec<ir::ExprId> = model.events.iter().map(|e| e.cond).collect();
            let jumps: Vec<ir::ExprId> = model
                .events
                .iter()
                .flat_map(|e| e.jumps.iter().copied())
                .collect();
            kernels[K::EventConds as usize] = b.kernel(&conds, &[]);
            kernels[K::EventJumps as usize] = b.kernel(&jumps, &[]);
            kernels[K::EventJvp as usize] = b.kernel(&d.event_jvp, &[]);
        }
        let saved_rows = if fuse {
            let plain = (K::Rhs, K::Vjp, K::VjpSaved);
            Self::vjp_reading_rhs(&mut b, &mut kernels, plain, &d.vjp_state, &d.vjp_param)
        } else {
            Vec::new()
        };
        // `quad_vjp_*` exist exactly when the model has running costs.
        let running = d
            .cost(CostKind::Running)
            .filter(|_| fuse && !d.quad_vjp_state.is_empty());
        let fused_running = running.is_some();
        let quad_saved_rows = match running {
            Some(running) => {
                let mut rows = rhs.clone();
                rows.push(running.value);
                kernels[K::RhsQuad as usize] = b.kernel(&rows, &[]);
                kernels[K::VjpQuad as usize] = b.kernel(&d.quad_vjp_state, &d.quad_vjp_param);
                let quad = (K::RhsQuad, K::VjpQuad, K::VjpQuadSaved);
                let (state, param) = (&d.quad_vjp_state, &d.quad_vjp_param);
                Self::vjp_reading_rhs(&mut b, &mut kernels, quad, state, param)
            }
            None => Vec::new(),
        };
        let mut costs = Vec::new();
        for c in &d.costs {
            let mut lanes = vec![c.value];
            lanes.extend_from_slice(&c.state);
            let with_grad = kernels.len();
            kernels.push(b.kernel(&lanes, &c.param));
            kernels.push(b.kernel(&[c.value], &[]));
            costs.push((c.kind, with_grad, with_grad + 1, c.copies));
        }
        if fuse {
            tape::native::attach(
                &mut kernels,
                &[
                    (K::Rhs as usize, &saved_rows),
                    (K::RhsQuad as usize, &quad_saved_rows),
                ],
            );
        }
        let (t0, t1) = model.schedule.as_ref().map_or((0.0, 1.0), |s| (s.t0, s.t1));
        let layout = ParamLayout::new(model);
        Program {
            time_varying: layout.is_time_varying(),
            precision: model
                .schedule
                .as_ref()
                .map_or_else(Default::default, |s| s.precision),
            kernels: kernels.into_iter().map(Kernel::Tape).collect(),
            costs,
            layout,
            dim: model.state_len(),
            input_len: model.inputs.iter().map(|i| i.shape.len()).sum(),
            labels: model.labels.len(),
            observed_len: model.observed.iter().map(|o| o.shape.len()).sum(),
            metrics_len: metrics.len(),
            outputs_len: outputs.len(),
            t0,
            t1,
            has_lm_k: !lm_k.is_empty(),
            has_msa_mixed: !d.msa_mixed_param.is_empty(),
            init_reads_params: d
                .init_vjp_param
                .iter()
                .any(|&e| model.pool.const_value(e) != Some(0.0)),
            saved_rows,
            fused_running,
            quad_saved_rows,
            events: event_specs(model),
            jacobian_pattern: model.jacobian_pattern(JACOBIAN_PATTERN_WORK),
            shared: SharedUniforms::default(),
        }
    }

    /// [`Program::compile`] from the tensor IR (`model.tensor_roots` with their derivatives):
    /// one operation per tensor node, so the program's size and build time follow the model's
    /// text, not its widths (see `tensor`). It does not read the scalar IR.
    pub fn compile_tensor(model: &ir::Model) -> Program {
        let roots = &model.tensor_roots;
        let d = &roots.derivatives;
        let pool = &model.tensors;
        let leaves = tensor::Leaves::new(model);
        let computed = HashMap::new();
        let build = |lanes: &[TId], reduced: &[TId]| {
            Kernel::Tensor(tensor::build(pool, &leaves, lanes, reduced, &computed))
        };
        let lm_k: Vec<TId> = roots.lm_k.into_iter().collect();
        let mut kernels = vec![Kernel::default(); FIXED_KERNELS];
        kernels[K::Rhs as usize] = build(&roots.rhs, &[]);
        kernels[K::Init as usize] = build(&roots.init, &[]);
        kernels[K::JvpState as usize] = build(&d.jvp_state, &[]);
        kernels[K::JvpParam as usize] = build(&d.jvp_param, &[]);
        kernels[K::VjpState as usize] = build(&d.vjp_state, &[]);
        kernels[K::Vjp as usize] = build(&d.vjp_state, &d.vjp_param);
        kernels[K::VjpParam as usize] = build(&[], &d.vjp_param);
        kernels[K::RhsTime as usize] = build(&d.rhs_time, &[]);
        kernels[K::InitJvpParam as usize] = build(&d.init_jvp_param, &[]);
        kernels[K::InitVjpParam as usize] = build(&[], &d.init_vjp_param);
        kernels[K::Metrics as usize] = build(&roots.metrics, &[]);
        kernels[K::Outputs as usize] = build(&roots.outputs, &[]);
        kernels[K::LmCoef as usize] = build(&lm_k, &[]);
        kernels[K::LmCoefParam as usize] = build(&[], &d.lm_k_param);
        kernels[K::MsaMixed as usize] = build(&[], &d.msa_mixed_param);
        if !model.events.is_empty() {
            kernels[K::EventConds as usize] = build(&roots.event_conds, &[]);
            kernels[K::EventJumps as usize] = build(&roots.event_jumps, &[]);
            kernels[K::EventJvp as usize] = build(&d.event_jvp, &[]);
        }
        let saved_rows = Self::tensor_vjp_reading_rhs(model, &leaves, &mut kernels);
        let mut costs = Vec::new();
        for c in &d.costs {
            let mut lanes = vec![c.value];
            lanes.extend_from_slice(&c.state);
            let with_grad = kernels.len();
            kernels.push(build(&lanes, &c.param));
            kernels.push(build(&[c.value], &[]));
            costs.push((c.kind, with_grad, with_grad + 1, c.copies));
        }
        for (k, kernel) in kernels.iter_mut().enumerate() {
            if let Kernel::Tensor(kernel) = kernel {
                // `rhs_saving` copies the saved rows out of `Rhs`'s registers after it runs.
                let kept: &[u32] = if k == K::Rhs as usize {
                    &saved_rows
                } else {
                    &[]
                };
                kernel.outputs_in_place(kept);
            }
        }
        let len = |ids: &[TId]| ids.iter().map(|&r| pool.shape(r).len()).sum();
        let (t0, t1) = model.schedule.as_ref().map_or((0.0, 1.0), |s| (s.t0, s.t1));
        let layout = ParamLayout::new(model);
        Program {
            time_varying: layout.is_time_varying(),
            precision: model
                .schedule
                .as_ref()
                .map_or_else(Default::default, |s| s.precision),
            kernels,
            costs,
            layout,
            dim: model.state_len(),
            input_len: model.inputs.iter().map(|i| i.shape.len()).sum(),
            labels: model.labels.len(),
            observed_len: model.observed.iter().map(|o| o.shape.len()).sum(),
            metrics_len: len(&roots.metrics),
            outputs_len: len(&roots.outputs),
            t0,
            t1,
            has_lm_k: roots.lm_k.is_some(),
            has_msa_mixed: !d.msa_mixed_param.is_empty(),
            init_reads_params: d.init_vjp_param.iter().any(|&t| !pool.is_zero(t)),
            saved_rows,
            fused_running: false,
            quad_saved_rows: Vec::new(),
            events: event_specs(model),
            jacobian_pattern: None,
            shared: SharedUniforms::default(),
        }
    }

    /// The tensor program's `K::VjpSaved`: the VJP reading every node it shares with the
    /// right-hand side (the activations `tanh(K1 x + b1)` of a neural field) from the saved
    /// registers of an evaluation at the same point. Returns the `Rhs` register rows to save,
    /// in `SAVED` row order (empty when the VJP shares nothing).
    fn tensor_vjp_reading_rhs(
        model: &ir::Model,
        leaves: &tensor::Leaves,
        kernels: &mut [Kernel],
    ) -> Vec<u32> {
        let (pool, d) = (&model.tensors, &model.tensor_roots.derivatives);
        let Kernel::Tensor(rhs) = &kernels[K::Rhs as usize] else {
            return Vec::new();
        };
        let all: HashMap<TId, u32> = rhs.registers.iter().copied().collect();
        let trial = tensor::build(pool, leaves, &d.vjp_state, &d.vjp_param, &all);
        let mut rows = Vec::new();
        let mut saved = HashMap::new();
        for id in &trial.saved {
            saved.insert(*id, rows.len() as u32);
            let start = all[id];
            rows.extend(start..start + pool.shape(*id).len() as u32);
        }
        if !rows.is_empty() {
            let reading = tensor::build(pool, leaves, &d.vjp_state, &d.vjp_param, &saved);
            kernels[K::VjpSaved as usize] = Kernel::Tensor(reading);
        }
        rows
    }

    /// Builds `K::VjpSaved`, the VJP that reads the right-hand side's registers (the hidden
    /// activations of a neural field) from an evaluation saved at the same point instead of
    /// recomputing them, when that is clearly cheaper; returns the `Rhs` registers to save, in
    /// `SAVED` row order (empty when the VJP gains nothing). Reading a value computed by the
    /// same instructions from the same inputs gives the recomputation's bits.
    /// Only registers whose own instruction costs at least [`SAVE_MIN_COST`] lane operations
    /// per sample are saved; the VJP recomputes cheaper ones from them.
    /// The kernels are `(rhs, vjp, saved_vjp)`: `K::Rhs`, `K::Vjp`, `K::VjpSaved`, or the same
    /// with the running costs fused (`K::RhsQuad`, ...).
    fn vjp_reading_rhs(
        b: &mut Builder,
        kernels: &mut [tape::Kernel],
        (rhs, vjp, saved_vjp): (K, K, K),
        vjp_state: &[ir::ExprId],
        vjp_param: &[ir::ExprId],
    ) -> Vec<u32> {
        let registers = &kernels[rhs as usize].registers;
        let all: HashMap<ir::ExprId, u32> = registers.iter().copied().collect();
        let trial = b.kernel_reading(vjp_state, vjp_param, &all);
        let used = trial.rows_read(tape::SAVED);
        let costs = kernels[rhs as usize].register_costs();
        let worth_saving = |reg: &u32| costs[*reg as usize] >= SAVE_MIN_COST;
        let mut saved = HashMap::new();
        let mut rows = Vec::new();
        for &(node, reg) in registers {
            if used.contains(&reg) && worth_saving(&reg) {
                saved.insert(node, rows.len() as u32);
                rows.push(reg);
            }
        }
        let reading = b.kernel_reading(vjp_state, vjp_param, &saved);
        let gain = kernels[vjp as usize].cost() - reading.cost();
        // Saving costs a copy of each row per recorded evaluation, and memory.
        if rows.is_empty() || gain < 4 * rows.len() {
            return Vec::new();
        }
        kernels[saved_vjp as usize] = reading;
        rows
    }

    /// Whether the program runs tensor kernels (a wide model) rather than the scalar tape.
    pub fn runs_tensor_kernels(&self) -> bool {
        matches!(self.kernels[K::Rhs as usize], Kernel::Tensor(_))
    }

    /// Rows of the largest register file among the kernels.
    pub fn largest_register_file(&self) -> usize {
        self.kernels.iter().map(|k| k.n_regs()).max().unwrap_or(0)
    }

    /// Whether every kernel is scalar code summing in the interpreter's order: no tensor
    /// kernels and no matrix products run as GEMMs (`tape::matmul`), whose order of summation
    /// is the GEMM's and depends on which factors are parameters.
    pub fn sums_in_order(&self) -> bool {
        self.kernels.iter().all(|k| match k {
            Kernel::Tape(k) => !k.has_matmuls(),
            Kernel::Tensor(_) => false,
        })
    }

    /// The same program with every kernel interpreted, none as native code (`tape::native`):
    /// the same bits, to measure what native code gains or to rule it out when debugging.
    pub fn interpreted(mut self) -> Program {
        for k in &mut self.kernels {
            if let Kernel::Tape(k) = k {
                k.native.disable();
            }
        }
        self
    }

    /// Waits until the native code of every kernel whose compilation has started is compiled
    /// (code generation runs on a thread of its own once a kernel has run
    /// `tape::native::NATIVE_AFTER` lane evaluations): for measurements of the steady state. Results do not depend on it.
    pub fn await_native(&self) {
        for k in &self.kernels {
            if let Kernel::Tape(k) = k {
                k.native.await_compiled();
            }
        }
    }

    /// Whether kernel `k` runs as native code.
    #[cfg(test)]
    fn is_native(&self, k: K) -> bool {
        self.kernels[k as usize].native_now().is_some()
    }

    /// Number of state components of one sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Elements of one sample's inputs (all inputs concatenated).
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Number of labels per sample.
    pub fn label_len(&self) -> usize {
        self.labels
    }

    /// Elements of one sample's observed values.
    pub fn observed_len(&self) -> usize {
        self.observed_len
    }

    /// Elements of all metrics concatenated.
    pub fn metrics_len(&self) -> usize {
        self.metrics_len
    }

    /// Elements of all outputs concatenated.
    pub fn outputs_len(&self) -> usize {
        self.outputs_len
    }

    /// Start and end time of the schedule (`[0, 1]` without one).
    pub fn span(&self) -> (f64, f64) {
        (self.t0, self.t1)
    }

    /// Whether the model declares LM-ResNet's coefficient `k`.
    pub fn has_lm_k(&self) -> bool {
        self.has_lm_k
    }

    /// The cost kinds the model declares (terminal, running, penalty, observed order).
    pub fn cost_kinds(&self) -> Vec<CostKind> {
        let mut kinds: Vec<CostKind> = self.costs.iter().map(|c| c.0).collect();
        // A penalty split by parameter copies is still one kind.
        kinds.dedup();
        kinds
    }

    /// Times inside the span where `per layer` parameters switch layers; a solve steps exactly
    /// onto them so that no step mixes two layers' weights.
    pub fn breakpoints(&self) -> &[f64] {
        &self.layout.layer_breaks
    }

    /// Whether the right-hand side reads `t` only through piecewise-constant parameters:
    /// no explicit time and no knot interpolation.
    pub fn is_autonomous(&self) -> bool {
        !self.kernels[K::Rhs as usize].reads_time() && !self.layout.has_knots()
    }

    /// A workspace for blocks of `width` samples (at least 1), for kernels run in `f64`.
    pub fn workspace(&self, width: usize) -> Workspace {
        let mut ws = self.workspace_in::<f64>(width);
        if self.precision == ir::Precision::F32 {
            let mut inner = self.workspace_in::<f32>(width);
            // Native code is `f64` only: counting runs would compile code never run.
            inner.native = false;
            ws.single = Some(Box::new(Single {
                ws: inner,
                y: Vec::new(),
                v: Vec::new(),
                w: Vec::new(),
                tangent: Vec::new(),
                out: Vec::new(),
                grad: Vec::new(),
            }));
        }
        ws
    }

    /// The precision the kernels run in through [`Program::workspace`].
    pub fn precision(&self) -> ir::Precision {
        self.precision
    }

    /// A workspace for blocks of `width` samples (at least 1) whose kernels run in `R`: every
    /// entry point called with it reads and writes `R` blocks.
    pub fn workspace_in<R: Real>(&self, width: usize) -> Workspace<R> {
        let width = width.max(1);
        // Registers, reductions, scratch and the tangent view grow to what the kernels a block
        // calls need (`Workspace::fit`): a wide model's largest kernel can need megabytes that
        // a forward solve never touches.
        Workspace {
            width,
            regs: Vec::new(),
            inputs: vec![R::nan(); self.input_len * width],
            labels: vec![R::nan(); self.labels * width],
            observed: vec![R::nan(); self.observed_len * width],
            times: vec![0.0; width],
            time_lanes: Vec::new(),
            theta: Vec::new(),
            tangent: Vec::new(),
            tangent_wide: Vec::new(),
            staging: Vec::new(),
            narrowed: Narrowed::default(),
            reduced: Vec::new(),
            scratch: Vec::new(),
            matmul: true,
            native: true,
            caches: self
                .kernels
                .iter()
                .map(|_| UniformCache::default())
                .collect(),
            jacobian: None,
            single: None,
        }
    }

    /// Runs kernel `k` over the whole block; samples whose times select different parameter
    /// copies are run separately, each with its own copy.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run<R: Real>(
        &self,
        k: usize,
        params: &Params,
        t: &[f64],
        blocks: Blocks<'_, R>,
        tangent: Option<&[R]>,
        out: &mut [R],
        grad: Option<&mut [R]>,
        ws: &mut Workspace<R>,
    ) {
        if let Some(single) = ws.single.as_deref_mut() {
            self.run_single(k, params, t, blocks, tangent, out, grad, single);
            return;
        }
        let kernel = &self.kernels[k];
        let width = ws.width;
        assert_eq!(t.len(), width, "one time per sample of the block");
        ws.fit(k, kernel, self.layout.view_len);
        if ws.native {
            ws.caches[k].count_run(kernel, width);
        }
        // Native code over the whole block, without the interpreter's set-up: a small kernel
        // costs about as much as that set-up (`tape::native`). It is `f64` code: other
        // precisions are interpreted.
        let native = (ws.native && !self.time_varying)
            .then(|| kernel.native())
            .flatten();
        if let (Some(native), Some(out64)) = (native, R::as_f64_mut(out)) {
            let cache = &mut ws.caches[k];
            let piece = self.layout.piece(t[0]);
            self.refresh(
                k,
                params,
                tangent,
                (0, piece),
                Resolved {
                    theta: &mut ws.theta,
                    tangent: &mut ws.tangent,
                    tangent_wide: &mut ws.tangent_wide,
                    staging: &mut ws.staging,
                },
                cache,
            );
            fn as64<R: Real>(x: &[R]) -> &[f64] {
                R::as_f64(x).unwrap_or(&[])
            }
            let bank = |b: u8| -> &[f64] {
                match b {
                    tape::STATE => as64(blocks.y),
                    tape::STATE_TANGENT => as64(blocks.v),
                    tape::COTANGENT => as64(blocks.w),
                    tape::INPUT => as64(&ws.inputs),
                    tape::LABEL => as64(&ws.labels),
                    tape::OBSERVED => as64(&ws.observed),
                    tape::TIME => t,
                    tape::SAVED => as64(blocks.saved),
                    _ => &[],
                }
            };
            if let (Some(u), Some(regs)) = (R::as_f64(&cache.u), R::as_f64_mut(&mut ws.regs)) {
                if native.run_block(u, regs, bank, out64, width) {
                    return;
                }
            }
        }
        self.run_interpreted(k, params, t, blocks, tangent, out, grad, ws);
    }

    /// Brings `cache` to the uniforms of `kernel` for the parameters (and parameter tangent)
    /// in force at `piece` (whose key is `key`), unless it already holds them.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn refresh<R: Real>(
        &self,
        k: usize,
        params: &Params,
        tangent: Option<&[R]>,
        (key, piece): (u64, Piece),
        bufs: Resolved<'_>,
        cache: &mut UniformCache<R>,
    ) {
        let kernel = &self.kernels[k];
        let want = (params.generation(), key);
        if cache.key != Some(want) || kernel.reads_tangent() {
            if kernel.reads_tangent() || self.time_varying {
                self.refill(kernel, params, tangent, piece, bufs, cache);
            } else {
                // This workspace's hold on the stale file ends first, for the same reason.
                cache.u = Uniforms::default();
                cache.u = Uniforms::Shared(self.shared.get(k, params.generation(), || {
                    let mut u = vec![R::zero(); kernel.n_uniform()];
                    prepare_into(kernel, params.values(), &[], &mut u, bufs.staging);
                    u
                }));
            }
            cache.key = Some(want);
        }
    }

    /// The work of [`Program::refresh`], out of line: the hot path is the check above.
    #[inline(never)]
    fn refill<R: Real>(
        &self,
        kernel: &Kernel,
        params: &Params,
        tangent: Option<&[R]>,
        piece: Piece,
        bufs: Resolved<'_>,
        cache: &mut UniformCache<R>,
    ) {
        let u = cache.own_for(kernel);
        let tangent = tangent.map(|u| widened(u, bufs.tangent_wide));
        if self.time_varying {
            let view = self.layout.view_len;
            self.layout
                .resolve(params.values(), piece, grown(bufs.theta, view));
            if let Some(u) = tangent {
                self.layout.resolve(u, piece, grown(bufs.tangent, view));
            }
            prepare_into(kernel, bufs.theta, bufs.tangent, u, bufs.staging);
        } else {
            // Parameters constant in time are stored as one copy in the view's layout:
            // nothing to resolve, and a wide model's weights are not copied twice.
            let tangent = tangent.unwrap_or(&[]);
            prepare_into(kernel, params.values(), tangent, u, bufs.staging);
        }
    }

    /// [`Program::run`] of a single-precision program: kernel `k` in `f32` on the block's
    /// inputs rounded once, its outputs widened back and its parameter gradient added to the
    /// caller's (`f64`) sum.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn run_single<R: Real>(
        &self,
        k: usize,
        params: &Params,
        t: &[f64],
        blocks: Blocks<'_, R>,
        tangent: Option<&[R]>,
        out: &mut [R],
        grad: Option<&mut [R]>,
        single: &mut Single,
    ) {
        let Single {
            ws: inner,
            y,
            v,
            w,
            tangent: tangent32,
            out: out32,
            grad: grad_buf,
        } = single;
        let blocks32 = Blocks {
            y: narrowed_into(blocks.y, y),
            v: narrowed_into(blocks.v, v),
            w: narrowed_into(blocks.w, w),
            saved: saved_f32(blocks.saved),
        };
        let tangent = tangent.map(|u| narrowed_into(u, tangent32));
        narrowed_into(out, out32);
        // A tensor kernel with parameters constant in time reduces into the gradient's first
        // `n_reduce` entries only (see `run_interpreted`): the rest need no pass.
        let kernel = &self.kernels[k];
        let touched = |len: usize| {
            if !self.time_varying && matches!(kernel, Kernel::Tensor(_)) {
                kernel.n_reduce().min(len)
            } else {
                len
            }
        };
        if let Some(g) = &grad {
            grad_buf.clear();
            grad_buf.resize(touched(g.len()), 0.0);
        }
        let grad32 = grad.is_some().then_some(&mut grad_buf[..]);
        self.run(k, params, t, blocks32, tangent, out32, grad32, inner);
        widen_lanes(out32, out);
        if let Some(g) = grad {
            add_widened(grad_buf, g);
        }
    }

    /// [`Program::run`] by the interpreter, in pieces of the block that share parameters.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn run_interpreted<R: Real>(
        &self,
        k: usize,
        params: &Params,
        t: &[f64],
        blocks: Blocks<'_, R>,
        tangent: Option<&[R]>,
        out: &mut [R],
        mut grad: Option<&mut [R]>,
        ws: &mut Workspace<R>,
    ) {
        let kernel = &self.kernels[k];
        let width = ws.width;
        assert_eq!(t.len(), width, "one time per sample of the block");
        let varying = self.time_varying;
        let Workspace {
            regs,
            inputs,
            labels,
            observed,
            time_lanes,
            theta,
            tangent: tangent_view,
            tangent_wide,
            staging,
            narrowed,
            reduced,
            scratch,
            caches,
            matmul,
            native,
            ..
        } = ws;
        let times = R::from_f64s(t, time_lanes, true);
        let stored = narrowed.of(params);
        let mut lo = 0;
        while lo < width {
            let key = if varying {
                self.layout.piece_key(t[lo])
            } else {
                0
            };
            let mut hi = lo + 1;
            if varying {
                while hi < width && self.layout.piece_key(t[hi]) == key {
                    hi += 1;
                }
            } else {
                hi = width;
            }
            let piece = self.layout.piece(t[lo]);
            let cache = &mut caches[k];
            self.refresh(
                k,
                params,
                tangent,
                (key, piece),
                Resolved {
                    theta: &mut *theta,
                    tangent: &mut *tangent_view,
                    tangent_wide: &mut *tangent_wide,
                    staging: &mut *staging,
                },
                cache,
            );
            let mut banks: [&[R]; BANKS] = [&[]; BANKS];
            banks[tape::STATE as usize] = blocks.y;
            banks[tape::STATE_TANGENT as usize] = blocks.v;
            banks[tape::COTANGENT as usize] = blocks.w;
            banks[tape::INPUT as usize] = inputs;
            banks[tape::LABEL as usize] = labels;
            banks[tape::OBSERVED as usize] = observed;
            banks[tape::TIME as usize] = times;
            banks[tape::SAVED as usize] = blocks.saved;
            let lanes = Lanes {
                banks,
                width,
                lo,
                hi,
                matmul: *matmul,
                native: *native,
            };
            match grad.as_deref_mut() {
                // A tensor kernel's reductions add into their outputs, and with parameters
                // constant in time the reduced layout is the gradient's: no zeroed buffer of
                // every weight and no pass to add it in, per call.
                Some(g) if !varying && matches!(kernel, Kernel::Tensor(_)) => {
                    kernel.run(
                        &cache.u,
                        stored,
                        regs,
                        lanes,
                        out,
                        &mut g[..kernel.n_reduce()],
                        scratch,
                    );
                }
                grad => {
                    let reduced = grown(reduced, kernel.n_reduce());
                    reduced.fill(R::zero());
                    kernel.run(&cache.u, stored, regs, lanes, out, reduced, scratch);
                    if let Some(g) = grad {
                        self.layout.scatter(reduced, piece, g);
                    }
                }
            }
            lo = hi;
        }
    }

    /// `dy = f(t, y)` for a block: `t[s]` per sample, `y` and `dy` of length `dim * width`.
    #[inline(always)]
    pub fn rhs<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        dy: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        if !self.rhs_native(params, t, y, dy, ws) {
            self.rhs_general(params, t, y, dy, ws);
        }
    }

    /// [`Program::rhs`] straight into the field's native code once it is ready and the
    /// uniforms are current; false (nothing written) otherwise. A small field's code costs less
    /// than [`Program::run`]'s set-up (Lorenz: 66 instructions, against ~160 of set-up), and
    /// small adaptive solves make thousands of these calls.
    #[inline(always)]
    fn rhs_native<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        dy: &mut [R],
        ws: &mut Workspace<R>,
    ) -> bool {
        let (k, width, enabled) = (K::Rhs as usize, ws.width, ws.native);
        let Some(cache) = ws.caches.get_mut(k) else {
            return false;
        };
        if !(enabled && t.len() == width && self.native_current(k, params, cache)) {
            return false;
        }
        match (
            cache.native.as_ref(),
            R::as_f64(&cache.u),
            R::as_f64(y),
            R::as_f64_mut(dy),
            R::as_f64_mut(&mut ws.regs),
        ) {
            (Some(native), Some(u), Some(y), Some(out), Some(regs)) => {
                native.run_state(u, regs, y, t, out, width)
            }
            _ => false,
        }
    }

    /// [`Program::rhs`] of one sample of `dim` components as a direct call of the field's
    /// native code ([`FieldCall`]), when `rhs` would run that code in `ws` now: a width-one
    /// workspace of an `f64` program, the code ready, the uniforms current for `params` (a
    /// first `rhs` call with them fits them). A small adaptive solve makes thousands of calls,
    /// and `rhs`'s checks on each cost half as much as the Lorenz field itself.
    pub fn field_call<'w>(
        &self,
        params: &Params,
        dim: usize,
        ws: &'w mut Workspace<f64>,
    ) -> Option<FieldCall<'w>> {
        let k = K::Rhs as usize;
        if !(ws.native && ws.width == 1 && ws.single.is_none()) {
            return None;
        }
        let cache = ws.caches.get_mut(k)?;
        if !self.native_current(k, params, cache) {
            return None;
        }
        let Workspace { caches, regs, .. } = ws;
        let cache = &caches[k];
        let call = cache.native.as_ref()?.state_call(&cache.u, regs, dim)?;
        Some(FieldCall {
            call,
            count: None,
            pending: 0,
        })
    }

    /// Whether kernel `k`'s native code runs with `cache`'s uniforms for `params`: they carry
    /// the key [`Program::run`] gives uniforms constant in time, and the code is ready (kept in
    /// `cache` by [`Program::resolve_native`]).
    #[inline(always)]
    fn native_current<R: Real>(
        &self,
        k: usize,
        params: &Params,
        cache: &mut UniformCache<R>,
    ) -> bool {
        cache.key == Some((params.generation(), 0))
            && (cache.native.is_some() || self.resolve_native(k, cache))
    }

    /// Keeps kernel `k`'s native code in `cache` if [`Program::run`] would run it with the
    /// uniforms of `cache`: ready, and parameters constant in time.
    #[cold]
    #[inline(never)]
    fn resolve_native<R: Real>(&self, k: usize, cache: &mut UniformCache<R>) -> bool {
        let kernel = &self.kernels[k];
        if self.time_varying || kernel.reads_tangent() || !cache.fitted {
            return false;
        }
        cache.native = kernel.native().cloned();
        cache.native.is_some()
    }

    #[inline(never)]
    fn rhs_general<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        dy: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            y,
            ..Blocks::default()
        };
        self.run(K::Rhs as usize, params, t, blocks, None, dy, None, ws);
    }

    /// Rows per sample of the values [`Program::rhs_saving`] saves for
    /// [`Program::vjp_saved`]; 0 when the VJP recomputes everything.
    pub fn saved_len(&self) -> usize {
        self.saved_rows.len()
    }

    /// [`Program::rhs`], also copying into `saved` (`saved_len() * width`) the values the VJP
    /// at the same point would recompute.
    pub fn rhs_saving<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        dy: &mut [R],
        saved: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        self.rhs(params, t, y, dy, ws);
        copy_saved(&self.saved_rows, saved, ws);
    }

    /// Whether the program evaluates the running costs with the field, in one kernel, and
    /// pulls a cotangent back through both at once ([`Program::rhs_quad_saving`],
    /// [`Program::vjp_quad_saved`]): scalar-tape models with running costs.
    pub fn has_fused_running_cost(&self) -> bool {
        self.fused_running
    }

    /// Rows per sample that [`Program::rhs_quad_saving`] saves.
    pub fn quad_saved_len(&self) -> usize {
        self.quad_saved_rows.len()
    }

    /// `dy = (f(t, y), L(t, y))` for a block: `dim + 1` rows, the last the running costs' sum;
    /// with a non-empty `saved` (`quad_saved_len() * width`), also the values
    /// [`Program::vjp_quad_saved`] at the same point reads. Only where
    /// [`Program::has_fused_running_cost`].
    pub fn rhs_quad_saving<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        dy: &mut [R],
        saved: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        assert!(self.fused_running, "rhs_quad without a fused running cost");
        let blocks = Blocks {
            y,
            ..Blocks::default()
        };
        self.run(K::RhsQuad as usize, params, t, blocks, None, dy, None, ws);
        copy_saved(&self.quad_saved_rows, saved, ws);
    }

    /// The VJP of [`Program::rhs_quad_saving`]'s rows: `w` has `dim + 1` rows (the last the
    /// quadrature's cotangent, per sample), `out` gets `dim` rows and `grad += Σ_s` of the
    /// parameter pull-back. `saved` as [`Program::vjp_saved`]'s, or empty.
    #[allow(clippy::too_many_arguments)]
    pub fn vjp_quad_saved<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        saved: &[R],
        w: &[R],
        out: &mut [R],
        grad: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        assert!(self.fused_running, "vjp_quad without a fused running cost");
        let kernels = (K::VjpQuad, K::VjpQuadSaved, &self.quad_saved_rows[..]);
        self.vjp_reading(kernels, params, t, (y, saved, w), out, grad, ws);
    }

    /// [`Program::vjp`] at a point whose [`Program::rhs_saving`] filled `saved`: the same
    /// values, without recomputing the saved ones. An empty `saved` means nothing was saved.
    #[allow(clippy::too_many_arguments)]
    pub fn vjp_saved<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        saved: &[R],
        w: &[R],
        out: &mut [R],
        grad: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let kernels = (K::Vjp, K::VjpSaved, &self.saved_rows[..]);
        self.vjp_reading(kernels, params, t, (y, saved, w), out, grad, ws);
    }

    /// Runs VJP kernel `plain`, or `reading` (which reads the `rows` an evaluation at the same
    /// point saved) when `saved` holds them.
    #[allow(clippy::too_many_arguments)]
    fn vjp_reading<R: Real>(
        &self,
        (plain, reading, rows): (K, K, &[u32]),
        params: &Params,
        t: &[f64],
        (y, saved, w): (&[R], &[R], &[R]),
        out: &mut [R],
        grad: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let reads_saved = !rows.is_empty() && !saved.is_empty();
        let kernel = if reads_saved {
            assert_eq!(saved.len(), rows.len() * ws.width, "the values saved");
            reading
        } else {
            plain
        };
        let blocks = Blocks {
            y,
            w,
            saved,
            ..Blocks::default()
        };
        self.run(
            kernel as usize,
            params,
            t,
            blocks,
            None,
            out,
            Some(grad),
            ws,
        );
    }

    /// The initial states of the block from the parameters (in force at `t0`) and the bound
    /// inputs.
    pub fn init<R: Real>(&self, params: &Params, y0: &mut [R], ws: &mut Workspace<R>) {
        self.with_time(self.t0, ws, |p, t, ws| {
            p.run(
                K::Init as usize,
                params,
                t,
                Blocks::default(),
                None,
                y0,
                None,
                ws,
            )
        });
    }

    /// `out = ∂f/∂y · v` for a block (`v` like `y`).
    #[allow(clippy::too_many_arguments)]
    pub fn jvp_state<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        v: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            y,
            v,
            ..Blocks::default()
        };
        self.run(K::JvpState as usize, params, t, blocks, None, out, None, ws);
    }

    /// `out = ∂f/∂θ · u` for a block, `u` a direction in the full parameter layout (resolved at
    /// each sample's time like the parameters).
    #[allow(clippy::too_many_arguments)]
    pub fn jvp_param<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        u: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            y,
            ..Blocks::default()
        };
        self.run(
            K::JvpParam as usize,
            params,
            t,
            blocks,
            Some(u),
            out,
            None,
            ws,
        );
    }

    /// `out = wᵀ ∂f/∂y` for a block (`w` like `y`).
    #[allow(clippy::too_many_arguments)]
    pub fn vjp_state<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        w: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            y,
            w,
            ..Blocks::default()
        };
        self.run(K::VjpState as usize, params, t, blocks, None, out, None, ws);
    }

    /// `out = wᵀ ∂f/∂y` and `grad += Σ_s wᵀ ∂f/∂θ` (full parameter layout: into the layer in
    /// force, or the two neighbouring knots), sharing the work of both.
    #[allow(clippy::too_many_arguments)]
    pub fn vjp<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        w: &[R],
        out: &mut [R],
        grad: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        self.vjp_saved(params, t, y, &[], w, out, grad, ws);
    }

    /// `grad += Σ_s wᵀ ∂f/∂θ` over the block (full parameter layout).
    pub fn vjp_param_accumulate<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        w: &[R],
        grad: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            y,
            w,
            ..Blocks::default()
        };
        self.run(
            K::VjpParam as usize,
            params,
            t,
            blocks,
            None,
            &mut [],
            Some(grad),
            ws,
        );
    }

    /// Whether [`Program::msa_mixed_accumulate`] is available (models trained by `msa` with
    /// parameters).
    pub fn has_msa_mixed(&self) -> bool {
        self.has_msa_mixed
    }

    /// `grad += Σ_s ∂/∂θ [wᵀ (∂f/∂y) v]` over the block (full parameter layout, into the layer
    /// in force), with `v` and `w` like `y` and held fixed: the mixed second derivative that
    /// `msa`'s costate consistency term needs. Adds nothing unless
    /// [`Program::has_msa_mixed`].
    #[allow(clippy::too_many_arguments)]
    pub fn msa_mixed_accumulate<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        v: &[R],
        w: &[R],
        grad: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            y,
            v,
            w,
            ..Blocks::default()
        };
        self.run(
            K::MsaMixed as usize,
            params,
            t,
            blocks,
            None,
            &mut [],
            Some(grad),
            ws,
        );
    }

    /// `out = ∂f/∂t` (explicit time dependence) for a block.
    pub fn rhs_time<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            y,
            ..Blocks::default()
        };
        self.run(K::RhsTime as usize, params, t, blocks, None, out, None, ws);
    }

    /// `out = ∂y0/∂θ · u` for the block (inputs bound, parameters at `t0`).
    pub fn init_jvp_param<R: Real>(
        &self,
        params: &Params,
        u: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        self.with_time(self.t0, ws, |p, t, ws| {
            p.run(
                K::InitJvpParam as usize,
                params,
                t,
                Blocks::default(),
                Some(u),
                out,
                None,
                ws,
            )
        });
    }

    /// Whether some initial state depends on a parameter: if not,
    /// [`Program::init_vjp_param_accumulate`] adds nothing, and a gradient need not set up a
    /// workspace per block to call it (on P4 that set-up was 1 ms of each training step, with
    /// both cores waiting).
    pub fn init_reads_params(&self) -> bool {
        self.init_reads_params
    }

    /// `grad += Σ_s wᵀ ∂y0/∂θ` over the block (parameters at `t0`).
    pub fn init_vjp_param_accumulate<R: Real>(
        &self,
        params: &Params,
        w: &[R],
        grad: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            w,
            ..Blocks::default()
        };
        self.with_time(self.t0, ws, |p, t, ws| {
            p.run(
                K::InitVjpParam as usize,
                params,
                t,
                blocks,
                None,
                &mut [],
                Some(grad),
                ws,
            )
        });
    }

    /// The dense Jacobian `jac[i * dim + j] = ∂f_i/∂y_j` of sample `sample` of the block
    /// (its inputs and labels are the bound ones), at state `y` (length `dim`). Computed as one
    /// JVP over `dim` lanes whose tangents are the unit vectors.
    #[allow(clippy::too_many_arguments)]
    pub fn jacobian<R: Real>(
        &self,
        params: &Params,
        t: f64,
        y: &[R],
        sample: usize,
        jac: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        self.jacobian_times(params, t, y, sample, None, jac, ws);
    }

    /// `J V` for `lanes` tangent directions `seeds` (`seeds[j * lanes + s]` is component `j` of
    /// direction `s`), written to `out[i * lanes + s]`: one JVP over `lanes` lanes. With the
    /// columns of a sparse Jacobian grouped so that no two in a group share a row, `V` holding
    /// the groups' indicator vectors gives every nonzero in a few lanes instead of `dim`.
    #[allow(clippy::too_many_arguments)]
    pub fn jacobian_seeded<R: Real>(
        &self,
        params: &Params,
        t: f64,
        y: &[R],
        sample: usize,
        seeds: &[R],
        lanes: usize,
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        self.jacobian_times(params, t, y, sample, Some((seeds, lanes)), out, ws);
    }

    /// The JVP behind [`Program::jacobian`] (`seeds` = `None`: the identity) and
    /// [`Program::jacobian_seeded`].
    #[allow(clippy::too_many_arguments)]
    fn jacobian_times<R: Real>(
        &self,
        params: &Params,
        t: f64,
        y: &[R],
        sample: usize,
        seeds: Option<(&[R], usize)>,
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let n = self.dim;
        let lanes = seeds.map_or(n, |(_, k)| k);
        if n == 0 || lanes == 0 {
            return;
        }
        let width = ws.width;
        if ws
            .jacobian
            .as_ref()
            .is_none_or(|s| s.lanes != lanes || s.identity != seeds.is_none())
        {
            let mut v = vec![R::zero(); n * lanes];
            if seeds.is_none() {
                for j in 0..n {
                    v[j * n + j] = R::one();
                }
            }
            ws.jacobian = Some(Box::new(JacobianScratch {
                ws: self.workspace_in(lanes),
                lanes,
                identity: seeds.is_none(),
                y: vec![R::zero(); n * lanes],
                v,
                out: vec![R::zero(); n * lanes],
            }));
        }
        let scratch = ws.jacobian.as_mut().expect("built above");
        if let Some((seeds, _)) = seeds {
            scratch.v.copy_from_slice(&seeds[..n * lanes]);
        }
        for (i, &yi) in y.iter().enumerate() {
            scratch.y[i * lanes..(i + 1) * lanes].fill(yi);
        }
        let sub = &mut scratch.ws;
        for (src, dst) in [
            (&ws.inputs, &mut sub.inputs),
            (&ws.labels, &mut sub.labels),
            (&ws.observed, &mut sub.observed),
        ] {
            for (row, d) in src.chunks_exact(width).zip(dst.chunks_exact_mut(lanes)) {
                d.fill(row[sample]);
            }
        }
        sub.times.fill(t);
        let times = std::mem::take(&mut sub.times);
        let blocks = Blocks {
            y: &scratch.y,
            v: &scratch.v,
            ..Blocks::default()
        };
        self.run(
            K::JvpState as usize,
            params,
            &times,
            blocks,
            None,
            &mut scratch.out,
            None,
            sub,
        );
        sub.times = times;
        out[..n * lanes].copy_from_slice(&scratch.out);
    }

    /// The structural nonzeros of `∂f/∂y`, row by row (see [`ir::Model::jacobian_pattern`]);
    /// `None` when unknown (tensor kernels) and the Jacobian must be taken as dense.
    pub fn jacobian_pattern(&self) -> Option<&[Vec<u32>]> {
        self.jacobian_pattern.as_deref()
    }

    /// Runs `f` with a block of times all equal to `t` (the workspace's own buffer).
    fn with_time<R: Real>(
        &self,
        t: f64,
        ws: &mut Workspace<R>,
        f: impl FnOnce(&Program, &[f64], &mut Workspace<R>),
    ) {
        let mut times = std::mem::take(&mut ws.times);
        times.fill(t);
        f(self, &times, ws);
        ws.times = times;
    }

    fn cost_kernels(&self, kind: CostKind) -> Option<(usize, usize)> {
        self.costs.iter().find(|c| c.0 == kind).map(|c| (c.1, c.2))
    }

    /// Per-sample values of the costs of `kind` summed (`out` of length `width`); `false` if
    /// the model declares no such cost.
    pub fn cost<R: Real>(
        &self,
        kind: CostKind,
        params: &Params,
        t: &[f64],
        y: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) -> bool {
        let Some((_, k)) = self.cost_kernels(kind) else {
            return false;
        };
        let blocks = Blocks {
            y,
            ..Blocks::default()
        };
        self.run(k, params, t, blocks, None, out, None, ws);
        true
    }

    /// The costs of `kind` and their gradients: `out` holds `1 + dim` rows of `width` (the
    /// value, then `∂/∂y_j`), and `grad += Σ_s ∂/∂θ` (full layout). `false` without such costs.
    #[allow(clippy::too_many_arguments)]
    pub fn cost_grad<R: Real>(
        &self,
        kind: CostKind,
        params: &Params,
        t: &[f64],
        y: &[R],
        out: &mut [R],
        grad: &mut [R],
        ws: &mut Workspace<R>,
    ) -> bool {
        let Some((k, _)) = self.cost_kernels(kind) else {
            return false;
        };
        let blocks = Blocks {
            y,
            ..Blocks::default()
        };
        self.run(k, params, t, blocks, None, out, Some(grad), ws);
        true
    }

    /// The penalty costs (parameters only, added once rather than per sample), adding their
    /// gradient into `grad` (full layout) if given; 0 without penalty costs. Terms that read
    /// time-varying params are evaluated on every copy (layer or knot) and summed; the rest
    /// once, with the parameters in force at `t0`.
    pub fn penalty<R: Real>(
        &self,
        params: &Params,
        mut grad: Option<&mut [R]>,
        ws: &mut Workspace<R>,
    ) -> f64 {
        // Summed in f64 whatever the kernels' precision: a loss value, added once.
        let mut total = 0.0;
        let mut out = vec![R::zero(); 1 + self.dim];
        for &(kind, k, _, copies) in &self.costs {
            if kind != CostKind::Penalty {
                continue;
            }
            if copies <= 1 {
                self.scalar(k, params, self.t0, &mut out, grad.as_deref_mut(), ws);
                total += out[0].widen();
                continue;
            }
            for copy in 0..copies {
                self.scalar_on_copy(k, params, copy, &mut out, grad.as_deref_mut(), ws);
                total += out[0].widen();
            }
        }
        total
    }

    /// All metrics concatenated, `metrics_len` rows of `width`.
    pub fn metrics<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        self.run_on_states(K::Metrics, params, t, y, out, ws);
    }

    /// All outputs concatenated, `outputs_len` rows of `width`.
    pub fn outputs<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        self.run_on_states(K::Outputs, params, t, y, out, ws);
    }

    /// Runs a value-only kernel (no tangent, cotangent or gradient) on a block of states.
    fn run_on_states<R: Real>(
        &self,
        k: K,
        params: &Params,
        t: &[f64],
        y: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            y,
            ..Blocks::default()
        };
        self.run(k as usize, params, t, blocks, None, out, None, ws);
    }

    /// The model's events (empty for a model without any).
    pub fn events(&self) -> &[EventInfo] {
        &self.events
    }

    /// Every event's condition, one row of `width` each.
    pub fn event_conditions<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        self.run_on_states(K::EventConds, params, t, y, out, ws);
    }

    /// Every event's assigned values, events and assignments in order, one row of `width` each.
    pub fn event_jumps<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        self.run_on_states(K::EventJumps, params, t, y, out, ws);
    }

    /// The events' forward derivatives at one point, `2 (events + assigned values)` rows of
    /// `width`: with `c` every condition then every assigned value (the rows of
    /// [`Program::event_conditions`] then [`Program::event_jumps`]), first `∂c/∂y · v + ∂c/∂θ · u`
    /// (`u` a direction in the full parameter layout), then `∂c/∂t`.
    #[allow(clippy::too_many_arguments)]
    pub fn event_jvp<R: Real>(
        &self,
        params: &Params,
        t: &[f64],
        y: &[R],
        v: &[R],
        u: &[R],
        out: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        let blocks = Blocks {
            y,
            v,
            ..Blocks::default()
        };
        self.run(
            K::EventJvp as usize,
            params,
            t,
            blocks,
            Some(u),
            out,
            None,
            ws,
        );
    }

    /// LM-ResNet's coefficient `k` at `t` (0 without one).
    pub fn lm_k<R: Real>(&self, params: &Params, t: f64, ws: &mut Workspace<R>) -> R {
        if !self.has_lm_k {
            return R::zero();
        }
        let mut value = [R::zero(); 1];
        self.scalar(K::LmCoef as usize, params, t, &mut value, None, ws);
        value[0]
    }

    /// `grad += ∂k/∂θ` at `t` (full layout).
    pub fn lm_k_grad_accumulate<R: Real>(
        &self,
        params: &Params,
        t: f64,
        grad: &mut [R],
        ws: &mut Workspace<R>,
    ) {
        if self.has_lm_k {
            self.scalar(K::LmCoefParam as usize, params, t, &mut [], Some(grad), ws);
        }
    }

    /// Like [`Program::scalar`], with copy `copy` of every time-varying parameter (the last
    /// copy for those with fewer) instead of the copies in force at a time.
    fn scalar_on_copy<R: Real>(
        &self,
        k: usize,
        params: &Params,
        copy: usize,
        out: &mut [R],
        grad: Option<&mut [R]>,
        ws: &mut Workspace<R>,
    ) {
        self.uniform(k, params, self.t0, Some(copy), out, grad, ws);
    }

    /// Runs a kernel whose roots are uniform (they depend on parameters only) on one lane.
    fn scalar<R: Real>(
        &self,
        k: usize,
        params: &Params,
        t: f64,
        out: &mut [R],
        grad: Option<&mut [R]>,
        ws: &mut Workspace<R>,
    ) {
        self.uniform(k, params, t, None, out, grad, ws);
    }

    /// One lane of a uniform kernel at `t`, with the parameter copies in force at `t` or, given
    /// `copy`, that copy of every time-varying parameter.
    #[allow(clippy::too_many_arguments)]
    fn uniform<R: Real>(
        &self,
        k: usize,
        params: &Params,
        t: f64,
        copy: Option<usize>,
        out: &mut [R],
        grad: Option<&mut [R]>,
        ws: &mut Workspace<R>,
    ) {
        let kernel = &self.kernels[k];
        let piece = self.layout.piece(t);
        ws.fit(k, kernel, self.layout.view_len);
        let Workspace {
            regs,
            theta,
            staging,
            narrowed,
            reduced,
            scratch,
            caches,
            ..
        } = ws;
        let cache = &mut caches[k];
        match copy {
            Some(c) => {
                let theta = grown(theta, self.layout.view_len);
                self.layout.resolve_copy(params.values(), c, theta);
                prepare_into(kernel, theta, &[], cache.own_for(kernel), staging);
                // The resolved values belong to no time: the next timed call resolves again.
                cache.key = None;
            }
            None => {
                let want = (params.generation(), self.layout.piece_key(t));
                if cache.key != Some(want) {
                    let u = cache.own_for(kernel);
                    if self.time_varying {
                        let theta = grown(theta, self.layout.view_len);
                        self.layout.resolve(params.values(), piece, theta);
                        prepare_into(kernel, theta, &[], u, staging);
                    } else {
                        prepare_into(kernel, params.values(), &[], u, staging);
                    }
                    cache.key = Some(want);
                }
            }
        }
        let times = [R::cast(t)];
        let mut banks: [&[R]; BANKS] = [&[]; BANKS];
        banks[tape::TIME as usize] = &times;
        let lanes = Lanes {
            banks,
            width: 1,
            lo: 0,
            hi: 1,
            matmul: true,
            native: true,
        };
        let reduced = grown(reduced, kernel.n_reduce());
        reduced.fill(R::zero());
        kernel.run(
            &cache.u,
            narrowed.of(params),
            regs,
            lanes,
            out,
            reduced,
            scratch,
        );
        match (grad, copy) {
            (Some(g), Some(c)) => self.layout.scatter_copy(reduced, c, g),
            (Some(g), None) => self.layout.scatter(reduced, piece, g),
            (None, _) => {}
        }
    }
}
