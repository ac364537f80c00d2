//! Native code for small elementwise kernels, generated with Cranelift.
//!
//! The interpreter pays for every instruction: a dispatch, a lane sliced and bounds-checked, a
//! loop over the block. For a kernel of a handful of scalar operations (the Lorenz field) that
//! overhead is most of the work: the tape measured 6× a hand-written loop there, and an ideal
//! interpreter would still be about 2×. So a kernel whose instructions are all plain arithmetic
//! — no reductions, no matrix products, no transcendental functions — is also compiled to one
//! machine function that runs the whole tape for two samples at a time (`f64x2`), with every
//! intermediate in a register: the loop a hand-written kernel is.
//!
//! Exactness: each operation is the IEEE operation the interpreter performs on the same
//! operands, in the same order, and Cranelift fuses nothing (no multiply-add contraction), so
//! the native code gives the interpreter's bits; `native_kernels_give_the_interpreters_bits`
//! checks every kernel of every model in `models/`. The one rewrite, a term `±1·a` (every
//! difference `y − x` is `y + (−1)·x` in the IR) as `a`, `−a` or a subtraction, is exact too:
//! only the sign of a NaN may differ. Registers the caller reads after the run
//! (the activations that `Program::rhs_saving` copies) are stored; the rest live in registers.
//!
//! Safety: this is nodec's only `unsafe` code, and the argument is local.
//! - The generated function reads `rows[b] * width` values from bank `b`, writes
//!   `out_rows * width` values of `out` and `spill_rows * width` of `regs`, and reads
//!   `n_uniform` uniforms, at lanes `lo..hi`; `Native::call` and `Native::run_state` check
//!   every one of these lengths and `lo <= hi <= width` before the call, and decline (the
//!   interpreter runs) otherwise. A `StateCall` (one sample: `width = 1`, lanes `0..1`) checks
//!   `u`, `regs` and that the state and output rows are at most `dim` when it is made (it
//!   borrows `u` and `regs`, so they cannot shrink), and `y` and `out` against `dim` on each
//!   call; its time bank is the one `f64` it passes.
//! - The code lives as long as any `Native` holding its `Arc<Code>`; its memory is freed only
//!   when the last one is dropped, and no pointer into it escapes a `Native`.

#![allow(
    unsafe_code,
    reason = "calling generated code; the module docs give the safety argument"
)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

use super::{
    Bin, Dst, Instr, Kernel, Kind, Lanes, Opd, Shape, Src, UInstr, ULeaf, BANKS, REG, STATE, TIME,
};
use crate::ir::Func;

/// `f(banks, u, regs, out, lo, hi, width)`: see the module docs.
type Entry = extern "C" fn(*const *const f64, *const f64, *mut f64, *mut f64, usize, usize, usize);

/// Kernels larger than this stay interpreted: the interpreter's overhead is a small share of
/// them, and a long body only adds compile time (digits_odenet's compile took 0.7 s longer
/// at 256) and register spills.
const MAX_VALUES: usize = 64;

/// Pairs of samples per iteration of the main loop.
const UNROLL: usize = 4;

/// The compiled code of one program's kernels. Freed when the last [`Native`] goes.
struct Code(Mutex<Option<JITModule>>);

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(module) = self.0.get_mut().ok().and_then(Option::take) {
            // SAFETY: every function pointer into this module is held by a `Native` together
            // with an `Arc` of this `Code`; the last such `Arc` is being dropped, so no pointer
            // is left to call.
            unsafe { module.free_memory() }
        }
    }
}

/// A kernel's native function, with the lengths it needs.
#[derive(Clone)]
pub(crate) struct Native {
    entry: Entry,
    /// The banks read and how many rows of each (`REG` is never read: registers live in
    /// machine registers); the first `n_reads` entries.
    reads: [(u8, u32); BANKS],
    n_reads: u8,
    /// Rows of the state and of the time read, when these are the only banks read (a field
    /// without inputs, labels or tangents): [`Native::run_state`] runs it.
    state_time: Option<(u32, u32)>,
    out_rows: u32,
    spill_rows: u32,
    n_uniform: u32,
    _code: Arc<Code>,
}

impl std::fmt::Debug for Native {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Native")
            .field("reads", &&self.reads[..self.n_reads as usize])
            .field("out_rows", &self.out_rows)
            .field("spill_rows", &self.spill_rows)
            .finish()
    }
}

impl Native {
    /// Rows of the output block the kernel writes.
    #[cfg(test)]
    pub(crate) fn out_rows(&self) -> usize {
        self.out_rows as usize
    }

    /// Runs the kernel's lanes `lo..hi` natively; false (nothing written) when a buffer is
    /// shorter than the code needs, so that the interpreter runs and reports it.
    pub(super) fn run(
        &self,
        u: &[f64],
        regs: &mut [f64],
        lanes: &Lanes<'_, f64>,
        out: &mut [f64],
    ) -> bool {
        self.call(
            u,
            regs,
            |b| lanes.banks[b as usize],
            out,
            lanes.lo,
            lanes.hi,
            lanes.width,
        )
    }

    /// [`Native::run`] over a whole block of `width` samples, bank `b` being `bank(b)`.
    #[inline]
    pub(crate) fn run_block<'a>(
        &self,
        u: &[f64],
        regs: &mut [f64],
        bank: impl Fn(u8) -> &'a [f64],
        out: &mut [f64],
        width: usize,
    ) -> bool {
        self.call(u, regs, bank, out, 0, width, width)
    }

    /// [`Native::run_block`] of a kernel that reads nothing but the state `y` and the times
    /// `t` (most fields); false (nothing written) when it reads more or a buffer is short. A
    /// Lorenz-size field costs about as much as the general path's bank lookups.
    #[inline(always)]
    pub(crate) fn run_state(
        &self,
        u: &[f64],
        regs: &mut [f64],
        y: &[f64],
        t: &[f64],
        out: &mut [f64],
        width: usize,
    ) -> bool {
        let Some((state_rows, time_rows)) = self.state_time else {
            return false;
        };
        let fits = |len: usize, rows: u32| len >= rows as usize * width;
        if !(u.len() >= self.n_uniform as usize
            && fits(out.len(), self.out_rows)
            && fits(regs.len(), self.spill_rows)
            && fits(y.len(), state_rows)
            && fits(t.len(), time_rows))
        {
            return false;
        }
        let mut banks = [std::ptr::null::<f64>(); BANKS];
        banks[STATE as usize] = y.as_ptr();
        banks[TIME as usize] = t.as_ptr();
        (self.entry)(
            banks.as_ptr(),
            u.as_ptr(),
            regs.as_mut_ptr(),
            out.as_mut_ptr(),
            0,
            width,
            width,
        );
        true
    }

    /// The kernel bound to a workspace's uniforms `u` and registers `regs` for one sample of
    /// `dim` state components: [`Native::run_state`] at width one with its checks made once,
    /// here, rather than on each call. `None` when [`Native::run_state`] would refuse it.
    pub(crate) fn state_call<'w>(
        &'w self,
        u: &'w [f64],
        regs: &'w mut [f64],
        dim: usize,
    ) -> Option<StateCall<'w>> {
        let (state_rows, time_rows) = self.state_time?;
        let fits = u.len() >= self.n_uniform as usize
            && regs.len() >= self.spill_rows as usize
            && state_rows as usize <= dim
            && self.out_rows as usize <= dim
            && time_rows <= 1;
        fits.then_some(StateCall {
            native: self,
            u,
            regs,
            dim,
        })
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn call<'a>(
        &self,
        u: &[f64],
        regs: &mut [f64],
        bank: impl Fn(u8) -> &'a [f64],
        out: &mut [f64],
        lo: usize,
        hi: usize,
        width: usize,
    ) -> bool {
        let fits = |len: usize, rows: u32| len >= rows as usize * width;
        if !(lo <= hi
            && hi <= width
            && u.len() >= self.n_uniform as usize
            && fits(out.len(), self.out_rows)
            && fits(regs.len(), self.spill_rows))
        {
            return false;
        }
        let mut banks = [std::ptr::null::<f64>(); BANKS];
        for &(b, rows) in &self.reads[..self.n_reads as usize] {
            let lane = bank(b);
            if !fits(lane.len(), rows) {
                return false;
            }
            banks[b as usize] = lane.as_ptr();
        }
        (self.entry)(
            banks.as_ptr(),
            u.as_ptr(),
            regs.as_mut_ptr(),
            out.as_mut_ptr(),
            lo,
            hi,
            width,
        );
        true
    }
}

/// A field's native code with the buffers it reads checked for one sample of `dim` state
/// components ([`Native::state_call`]): a call is the code's own cost and two length checks.
pub(crate) struct StateCall<'w> {
    native: &'w Native,
    u: &'w [f64],
    regs: &'w mut [f64],
    dim: usize,
}

impl StateCall<'_> {
    /// `out = f(t, y)` for the sample; false (nothing written) when `y` or `out` is shorter
    /// than the dimension the call was made for.
    #[inline(always)]
    pub(crate) fn call(&mut self, t: f64, y: &[f64], out: &mut [f64]) -> bool {
        if y.len() < self.dim || out.len() < self.dim {
            return false;
        }
        let mut banks = [std::ptr::null::<f64>(); BANKS];
        banks[STATE as usize] = y.as_ptr();
        banks[TIME as usize] = &t;
        (self.native.entry)(
            banks.as_ptr(),
            self.u.as_ptr(),
            self.regs.as_mut_ptr(),
            out.as_mut_ptr(),
            0,
            1,
            1,
        );
        true
    }
}

/// Whether the native code can run `k`: see the module docs.
fn supported(k: &Kernel) -> bool {
    let values: usize = k
        .steps
        .iter()
        .map(|s| match s.instr {
            Instr::Lin { rows, .. } => rows as usize,
            _ => 1,
        })
        .sum();
    let step_ok = |i: &Instr| match i {
        Instr::Lin { gemm, .. } => gemm.is_none(),
        Instr::Bin { op, .. } => matches!(op, Bin::Mul | Bin::Div),
        Instr::Fold { .. } | Instr::Square { .. } => true,
        Instr::Func { f, .. } => matches!(f, Func::Sqrt | Func::Abs),
    };
    k.reduces.is_empty()
        && (!k.steps.is_empty() || !k.outputs.is_empty())
        && values + k.outputs.len() <= MAX_VALUES
        && k.steps.iter().all(|s| step_ok(&s.instr))
}

/// A kernel's native code, compiled in the background once the kernel has run
/// [`NATIVE_AFTER`] lane evaluations. A command compiles only the kernels it calls often: `nodec run` of a small model calls its field and
/// outputs, not the derivative kernels, whose compilation was half of `nodec run
/// models/lorenz.node`. Until the code is ready the interpreter runs the kernel, with the same
/// bits (module docs), so which calls ran natively changes no result. Compiling on the
/// caller's thread cost more than some whole solves: Robertson's BDF solve spent 6.1 M of its
/// 6.8 M instructions generating code for a field called 886 times.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    /// Whether the kernel may run natively ([`attach`] found it supported).
    enabled: bool,
    /// Registers the caller reads after a run, which the code must store.
    spill: Vec<u32>,
    /// Shared by the clones of a program, so that one compilation serves them all.
    code: Arc<OnceLock<Option<Native>>>,
    /// Set by the run that starts the compilation.
    started: Arc<AtomicBool>,
}

impl Slot {
    /// Stops the kernel from running natively (compiled code, if any, is kept unused).
    pub(crate) fn disable(&mut self) {
        self.enabled = false;
    }

    /// Whether the code has been compiled.
    #[cfg(test)]
    pub(crate) fn is_compiled(&self) -> bool {
        self.code.get().is_some_and(Option::is_some)
    }

    /// Whether the code is compiled, once a compilation that was started has finished.
    pub(crate) fn await_compiled(&self) -> bool {
        self.started.load(Ordering::Acquire) && self.code.wait().is_some()
    }
}

impl Kernel {
    /// The kernel's native code if it is ready; `None` before [`Kernel::start_native`], while
    /// it is being compiled and when the kernel runs interpreted (unsupported, disabled, or
    /// code generation failed).
    #[inline]
    pub(crate) fn native(&self) -> Option<&Native> {
        if !self.native.enabled {
            return None;
        }
        self.native.code.get().and_then(Option::as_ref)
    }

    /// Starts compiling the kernel's native code on a thread of its own, unless it is
    /// disabled, started already or ready. Callers start it once the kernel has run
    /// [`NATIVE_AFTER`] lane evaluations interpreted.
    #[inline]
    pub(crate) fn start_native(&self) {
        if self.native.enabled && self.native.code.get().is_none() {
            self.start_compiling();
        }
    }

    /// The kernel's native code, compiled now (or awaited) if it is not ready: for tests and
    /// measurements that must know which code ran.
    #[cfg(test)]
    pub(crate) fn native_now(&self) -> Option<&Native> {
        if !self.native.enabled {
            return None;
        }
        self.native.code.get_or_init(|| compile(self)).as_ref()
    }

    #[cold]
    #[inline(never)]
    fn start_compiling(&self) {
        if self.native.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let kernel = self.clone();
        let spawned = std::thread::Builder::new()
            .name("nodec-native".into())
            .spawn(move || {
                let code = &kernel.native.code;
                code.get_or_init(|| compile(&kernel));
            });
        if spawned.is_err() {
            // No thread to spare (a process limit): compile here, as before.
            self.native.code.get_or_init(|| compile(self));
        }
    }
}

/// Interpreted lane evaluations of a kernel (per workspace) before its native code is
/// generated. Code generation runs on another core but is not free to the solve: while it
/// runs, the solving thread slows down (by ~0.6 ms on the 2-core development machine, even
/// when the code is never used: the compiler's allocations and page mappings contend with
/// it). Measured on `nodec run` (`solve_seconds`, medians of 9, threshold 1 / 1024 / never):
/// Robertson `bdf` (886 field evaluations) 1.5 / 0.5 / 0.5 ms, Robertson `rodas4` (1 092, so
/// compiled near its end) 1.45 / 1.2 / 0.57 ms, P1 Lorenz (5 006) 1.54 / 1.15 / 1.50 ms. A
/// solve that ends sooner never pays for code generation, and a block of 32 samples reaches
/// the threshold within 32 calls.
pub(crate) const NATIVE_AFTER: usize = 1024;

/// Marks every supported kernel of a program for native code; `spills[i]` are the registers
/// of kernel `i` that the caller reads after a run. Nothing is compiled until a kernel runs.
pub(crate) fn attach(kernels: &mut [Kernel], spills: &[(usize, &[u32])]) {
    for (i, k) in kernels.iter_mut().enumerate() {
        if supported(k) {
            let spill: BTreeSet<u32> = spills
                .iter()
                .filter(|(j, _)| *j == i)
                .flat_map(|(_, rows)| rows.iter().copied())
                .collect();
            k.native = Slot {
                enabled: true,
                spill: spill.into_iter().collect(),
                ..Slot::default()
            };
        }
    }
}

/// One kernel as native code in a module of its own; `None` when the host has no Cranelift
/// backend or code generation fails (the kernel then stays interpreted).
fn compile(kernel: &Kernel) -> Option<Native> {
    let mut module = new_module()?;
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    // `Entry`: four pointers and three pointer-sized integers, no result.
    let config = module.target_config();
    let mut sig = module.make_signature();
    sig.params = vec![AbiParam::new(config.pointer_type()); 7];
    let spill: BTreeSet<u32> = kernel.native.spill.iter().copied().collect();
    ctx.func.signature = sig.clone();
    let needs = emit(kernel, &spill, &mut ctx.func, &mut fctx, config);
    let id = module
        .declare_function("kernel", Linkage::Local, &sig)
        .ok()?;
    module.define_function(id, &mut ctx).ok()?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().ok()?;
    let pointer = module.get_finalized_function(id);
    let code = Arc::new(Code(Mutex::new(Some(module))));
    // SAFETY: `pointer` is the finalized code of a function declared with the signature of
    // `Entry` (four pointers and three pointer-sized integers, the platform's C calling
    // convention, no result); it stays mapped while `code` lives, and `Native` keeps it.
    let entry = unsafe { std::mem::transmute::<*const u8, Entry>(pointer) };
    let mut reads = [(0, 0); BANKS];
    let mut n_reads = 0;
    for (b, &rows) in needs.rows.iter().enumerate() {
        if rows > 0 {
            reads[n_reads] = (b as u8, rows);
            n_reads += 1;
        }
    }
    let state_time = reads[..n_reads]
        .iter()
        .all(|&(b, _)| b == STATE || b == TIME)
        .then_some((needs.rows[STATE as usize], needs.rows[TIME as usize]));
    Some(Native {
        entry,
        reads,
        n_reads: n_reads as u8,
        state_time,
        out_rows: needs.out_rows,
        spill_rows: needs.spill_rows,
        n_uniform: needs.n_uniform,
        _code: code,
    })
}

fn host_isa() -> Option<cranelift_codegen::isa::OwnedTargetIsa> {
    let mut flags = settings::builder();
    // Not "speed": its e-graph pass re-materialized the uniforms' splats inside the sample loop
    // (2.5× → 3.2× the hand-written Lorenz loop); the tape is already simplified, and emitted
    // in the order it should run.
    flags.set("opt_level", "none").ok()?;
    // The verifier re-checks Cranelift's own output: a fifth of a small model's run
    // (`nodec run models/lorenz.node`) in release. Debug builds, which the tests use, keep it.
    if !cfg!(debug_assertions) {
        flags.set("enable_verifier", "false").ok()?;
    }
    flags.set("use_colocated_libcalls", "false").ok()?;
    flags.set("is_pic", "false").ok()?;
    let isa = cranelift_native::builder()
        .ok()?
        .finish(settings::Flags::new(flags))
        .ok()?;
    Some(isa)
}

/// A JIT module for the host, its ISA looked up once per process.
fn new_module() -> Option<JITModule> {
    static ISA: OnceLock<Option<cranelift_codegen::isa::OwnedTargetIsa>> = OnceLock::new();
    let isa = ISA.get_or_init(host_isa).clone()?;
    Some(JITModule::new(JITBuilder::with_isa(
        isa,
        default_libcall_names(),
    )))
}

/// The uniforms of `k` that `Kernel::prepare` sets to a constant of the model: constant leaves
/// and their copies in coefficient tables.
fn known_uniforms(k: &Kernel) -> HashMap<u32, f64> {
    let mut known: HashMap<u32, f64> = k
        .leaves
        .iter()
        .filter_map(|&(dst, leaf)| match leaf {
            ULeaf::Const(c) => Some((dst, c)),
            _ => None,
        })
        .collect();
    for UInstr::Node { dst, .. } in &k.prologue {
        known.remove(dst);
    }
    for &(dst, src) in &k.gather {
        match known.get(&src).copied() {
            Some(c) => known.insert(dst, c),
            None => known.remove(&dst),
        };
    }
    known
}

/// The lengths a generated function relies on.
struct Needs {
    rows: [u32; BANKS],
    out_rows: u32,
    spill_rows: u32,
    n_uniform: u32,
}

/// The per-function state of code generation.
struct Emitter<'k> {
    k: &'k Kernel,
    spill: &'k BTreeSet<u32>,
    /// Row base address of every bank lane read, of every output row and spilled register.
    lane_base: HashMap<Src, Value>,
    out_base: HashMap<u32, Value>,
    reg_base: HashMap<u32, Value>,
    /// Uniforms whose value is a constant of the model, whatever the parameters.
    known: HashMap<u32, f64>,
    /// Each uniform read, splat to `f64x2` (the single-sample tail loads its own scalars, so
    /// that they are not kept live, or spilled, across the loops).
    splat: HashMap<u32, Value>,
}

/// Emits `k` into `func`; returns the lengths the code relies on.
fn emit(
    k: &Kernel,
    spill: &BTreeSet<u32>,
    func: &mut cranelift_codegen::ir::Function,
    fctx: &mut FunctionBuilderContext,
    config: TargetFrontendConfig,
) -> Needs {
    let ptr = config.pointer_type();
    let mut fb = FunctionBuilder::new(func, fctx);
    let entry = fb.create_block();
    let last = fb.create_block();
    let exit = fb.create_block();
    fb.append_block_params_for_function_params(entry);
    fb.switch_to_block(entry);
    let p = fb.block_params(entry).to_vec();
    let (banks, u, regs, out, lo, hi, width) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    let flags = MemFlagsData::new().with_notrap();
    let stride = fb.ins().ishl_imm_u(width, 3);

    // Everything the body reads or writes, so that addresses and uniforms are formed once.
    let mut lanes_read: BTreeSet<Src> = BTreeSet::new();
    let mut uniforms: BTreeSet<u32> = BTreeSet::new();
    let mut out_rows: BTreeSet<u32> = BTreeSet::new();
    let opd = |o: &Opd, lanes: &mut BTreeSet<Src>, unis: &mut BTreeSet<u32>| match *o {
        Opd::L(s) => {
            lanes.insert(s);
        }
        Opd::U(i) => {
            unis.insert(i);
        }
    };
    for step in &k.steps {
        let rows = match &step.instr {
            Instr::Lin {
                rows,
                shape,
                coefs,
                table,
                ..
            } => {
                for sh in shape.iter() {
                    match sh.kind {
                        Kind::Lane | Kind::Scaled => {
                            lanes_read.insert(sh.a);
                        }
                        Kind::Prod | Kind::ScaledProd => {
                            lanes_read.insert(sh.a);
                            lanes_read.insert(sh.b);
                        }
                        Kind::Uni => {}
                    }
                    if matches!(sh.kind, Kind::Uni | Kind::Scaled | Kind::ScaledProd) {
                        for r in 0..*rows {
                            uniforms.insert(table + r * coefs + sh.slot);
                        }
                    }
                }
                *rows
            }
            Instr::Bin { a, b, .. } => {
                opd(a, &mut lanes_read, &mut uniforms);
                opd(b, &mut lanes_read, &mut uniforms);
                1
            }
            Instr::Fold { ops } => {
                for o in ops.iter() {
                    opd(o, &mut lanes_read, &mut uniforms);
                }
                1
            }
            Instr::Square { a } | Instr::Func { a, .. } => {
                lanes_read.insert(*a);
                1
            }
        };
        if let Dst::Out(row) = step.dst {
            out_rows.extend(row..row + rows);
        }
    }
    for (row, o) in &k.outputs {
        opd(o, &mut lanes_read, &mut uniforms);
        out_rows.insert(*row);
    }
    lanes_read.retain(|s| s.bank != REG);

    let mut needs = Needs {
        rows: [0; BANKS],
        out_rows: out_rows.last().map_or(0, |r| r + 1),
        spill_rows: spill.last().map_or(0, |r| r + 1),
        n_uniform: uniforms.last().map_or(0, |i| i + 1),
    };
    let mut bank_ptr: HashMap<u8, Value> = HashMap::new();
    let row_base = |fb: &mut FunctionBuilder, base: Value, row: u32| match row {
        0 => base,
        1 => fb.ins().iadd(base, stride),
        _ => {
            let offset = fb.ins().imul_imm_u(stride, i64::from(row));
            fb.ins().iadd(base, offset)
        }
    };
    let mut e = Emitter {
        k,
        spill,
        lane_base: HashMap::new(),
        out_base: HashMap::new(),
        reg_base: HashMap::new(),
        splat: HashMap::new(),
        known: known_uniforms(k),
    };
    for s in &lanes_read {
        let rows = &mut needs.rows[s.bank as usize];
        *rows = (*rows).max(s.row + 1);
        let bp = *bank_ptr
            .entry(s.bank)
            .or_insert_with(|| fb.ins().load(ptr, flags, banks, 8 * i32::from(s.bank)));
        let base = row_base(&mut fb, bp, s.row);
        e.lane_base.insert(*s, base);
    }
    for &row in &out_rows {
        let base = row_base(&mut fb, out, row);
        e.out_base.insert(row, base);
    }
    for &row in spill {
        let base = row_base(&mut fb, regs, row);
        e.reg_base.insert(row, base);
    }
    let load_uniforms = |fb: &mut FunctionBuilder| -> HashMap<u32, Value> {
        let load =
            |fb: &mut FunctionBuilder, i: u32| fb.ins().load(types::F64, flags, u, 8 * i as i32);
        uniforms.iter().map(|&i| (i, load(fb, i))).collect()
    };
    let lo8 = fb.ins().ishl_imm_u(lo, 3);
    let hi8 = fb.ins().ishl_imm_u(hi, 3);
    let offset = fb.declare_var(ptr);
    fb.def_var(offset, lo8);
    // A lone sample (a small solve) goes straight to the last sample's code, without the
    // pairs' set-up (a splat of every uniform): a fifth of a Lorenz evaluation.
    let paired = fb.create_block();
    let tail = fb.create_block();
    let end = fb.ins().iadd_imm_u(lo8, 16);
    let enough = fb.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, hi8);
    fb.ins().brif(enough, paired, &[], tail, &[]);

    fb.switch_to_block(paired);
    for (i, scalar) in load_uniforms(&mut fb) {
        let splat = fb.ins().splat(types::F64X2, scalar);
        e.splat.insert(i, splat);
    }
    // Rotated loops (one branch per iteration): four pairs of samples at a time while eight
    // remain, then pairs, then the last sample alone.
    for pairs in [UNROLL, 1] {
        let bytes = 16 * pairs as i64;
        let body = fb.create_block();
        let done = fb.create_block();
        let off = fb.use_var(offset);
        let end = fb.ins().iadd_imm_u(off, bytes);
        let enough = fb.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, hi8);
        fb.ins().brif(enough, body, &[], done, &[]);

        fb.switch_to_block(body);
        let off = fb.use_var(offset);
        for p in 0..pairs {
            e.lanes(&mut fb, types::F64X2, &e.splat, off, 16 * p as i32, flags);
        }
        let next = fb.ins().iadd_imm_u(off, bytes);
        fb.def_var(offset, next);
        let end = fb.ins().iadd_imm_u(off, 2 * bytes);
        let enough = fb.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, hi8);
        fb.ins().brif(enough, body, &[], done, &[]);
        fb.switch_to_block(done);
    }
    fb.ins().jump(tail, &[]);

    fb.switch_to_block(tail);
    let off = fb.use_var(offset);
    let one_left = fb.ins().icmp(IntCC::UnsignedLessThan, off, hi8);
    fb.ins().brif(one_left, last, &[], exit, &[]);

    fb.switch_to_block(last);
    let scalars = load_uniforms(&mut fb);
    e.lanes(&mut fb, types::F64, &scalars, off, 0, flags);
    fb.ins().jump(exit, &[]);

    fb.switch_to_block(exit);
    fb.ins().return_(&[]);
    fb.seal_all_blocks();
    fb.finalize(config);
    needs
}

impl Emitter<'_> {
    /// The whole tape for the samples at byte offset `off`, `ty` being `f64x2` or `f64`.
    fn lanes(
        &self,
        fb: &mut FunctionBuilder,
        ty: Type,
        uniforms: &HashMap<u32, Value>,
        off: Value,
        disp: i32,
        flags: MemFlagsData,
    ) {
        let mut regs: HashMap<u32, Value> = HashMap::new();
        let mut loaded: HashMap<Src, Value> = HashMap::new();
        let uniform = |i: u32| uniforms[&i];
        let mut lane = |fb: &mut FunctionBuilder, s: Src, regs: &HashMap<u32, Value>| {
            if s.bank == REG {
                return regs[&s.row];
            }
            *loaded.entry(s).or_insert_with(|| {
                let addr = fb.ins().iadd(self.lane_base[&s], off);
                fb.ins().load(ty, flags, addr, disp)
            })
        };
        let mut operand = |fb: &mut FunctionBuilder, o: Opd, regs: &HashMap<u32, Value>| match o {
            Opd::L(s) => lane(fb, s, regs),
            Opd::U(i) => uniform(i),
        };
        for step in &self.k.steps {
            let values: Vec<Value> = match &step.instr {
                Instr::Lin {
                    rows,
                    shape,
                    coefs,
                    table,
                    ..
                } => (0..*rows)
                    .map(|r| {
                        let index = |sh: &Shape| table + r * coefs + sh.slot;
                        let coef = |sh: &Shape| uniform(index(sh));
                        // A term `±1·a` is `a`, or `a` subtracted (the `y − x` of every
                        // difference): the product by ±1 is exact, so the bits are the same.
                        let mut term = |fb: &mut FunctionBuilder, sh: &Shape| -> (Value, bool) {
                            let plain = match sh.kind {
                                Kind::Lane => operand(fb, Opd::L(sh.a), &regs),
                                Kind::Uni => coef(sh),
                                Kind::Scaled => {
                                    let a = operand(fb, Opd::L(sh.a), &regs);
                                    match self.known.get(&index(sh)) {
                                        Some(1.0) => a,
                                        Some(-1.0) => return (a, true),
                                        _ => fb.ins().fmul(coef(sh), a),
                                    }
                                }
                                Kind::Prod => {
                                    let a = operand(fb, Opd::L(sh.a), &regs);
                                    let b = operand(fb, Opd::L(sh.b), &regs);
                                    fb.ins().fmul(a, b)
                                }
                                Kind::ScaledProd => {
                                    let a = operand(fb, Opd::L(sh.a), &regs);
                                    let b = operand(fb, Opd::L(sh.b), &regs);
                                    let ca = fb.ins().fmul(coef(sh), a);
                                    fb.ins().fmul(ca, b)
                                }
                            };
                            (plain, false)
                        };
                        let (mut sum, negated) = term(fb, &shape[0]);
                        if negated {
                            sum = fb.ins().fneg(sum);
                        }
                        for sh in &shape[1..] {
                            let (t, negated) = term(fb, sh);
                            sum = if negated {
                                fb.ins().fsub(sum, t)
                            } else {
                                fb.ins().fadd(sum, t)
                            };
                        }
                        sum
                    })
                    .collect(),
                Instr::Bin { op, a, b } => {
                    let a = operand(fb, *a, &regs);
                    let b = operand(fb, *b, &regs);
                    vec![match op {
                        Bin::Mul => fb.ins().fmul(a, b),
                        Bin::Div => fb.ins().fdiv(a, b),
                        _ => unreachable!("`supported` admits products and quotients"),
                    }]
                }
                Instr::Fold { ops } => {
                    let mut acc = operand(fb, ops[0], &regs);
                    for o in &ops[1..] {
                        let x = operand(fb, *o, &regs);
                        acc = fb.ins().fmul(acc, x);
                    }
                    vec![acc]
                }
                Instr::Square { a } => {
                    let a = operand(fb, Opd::L(*a), &regs);
                    vec![fb.ins().fmul(a, a)]
                }
                Instr::Func { f, a } => {
                    let a = operand(fb, Opd::L(*a), &regs);
                    vec![match f {
                        Func::Sqrt => fb.ins().sqrt(a),
                        Func::Abs => fb.ins().fabs(a),
                        _ => unreachable!("`supported` admits sqrt and abs"),
                    }]
                }
            };
            for (r, v) in values.into_iter().enumerate() {
                let r = r as u32;
                match step.dst {
                    Dst::Reg(d) => {
                        regs.insert(d + r, v);
                        if self.spill.contains(&(d + r)) {
                            let addr = fb.ins().iadd(self.reg_base[&(d + r)], off);
                            fb.ins().store(flags, v, addr, disp);
                        }
                    }
                    Dst::Out(row) => {
                        let addr = fb.ins().iadd(self.out_base[&(row + r)], off);
                        fb.ins().store(flags, v, addr, disp);
                    }
                }
            }
        }
        for &(row, o) in &self.k.outputs {
            let v = operand(fb, o, &regs);
            let addr = fb.ins().iadd(self.out_base[&row], off);
            fb.ins().store(flags, v, addr, disp);
        }
    }
}
