//! The instruction tape: building it from IR roots, and running it over a range of lanes.
//!
//! A [`Kernel`] evaluates a list of IR roots for a block of samples. Every needed node is
//! *uniform* (depends only on constants and parameters: one scalar per block, computed by the
//! uniform prologue when the parameters in force change) or *varying* (one lane of `width`
//! values). Varying leaves (states, directions, inputs, labels, observations, time) are read in
//! place from their banks; other varying nodes get a register (a lane of the register file) in
//! SSA order, so an instruction's sources always lie below its destination. A lane root that no
//! other node reads is written straight into its output row, without a register and a copy.
//!
//! Fusion: a varying `Add` becomes one linear-combination instruction whose terms are lanes,
//! uniforms, `c·a`, `a·b` or `(c·a)·b` (a product feeding only sums is never materialized).
//! Sums with the same term structure over the same lanes (the rows of `K x`) form one
//! instruction, run row by row (see `lin`). Parameter-gradient roots are reduced over the lanes
//! by fused `Σ_s a_s b_s` instructions; a two-term sum that only a reduction reads (a weight's
//! gradient integrand with a contribution from the field and one from its divergence) is
//! summed as it is formed, never stored.
//!
//! Exactness: nodes reachable from primal roots (equations, costs, outputs, ...) are computed in
//! the interpreter's order (sums and products left to right), so they agree with `ir::eval` to
//! the last bit except for the vectorized `tanh`, `exp` and `sigmoid` (see `math`) and matrix
//! products run as GEMMs (see `matmul`: a few ulps per term). Products
//! reachable only from derivative roots are reassociated as `c · (v_1 · v_2 ...)`, varying
//! factors from the highest id down, so that a VJP's `W1[h,j] · d_h · c_h` shares `d_h · c_h`
//! between all `j` and between the state and parameter pull-backs, exactly as a hand-written
//! reverse sweep would.
//!
//! `build` turns IR roots into a [`Kernel`] ([`Builder`]); `exec` runs one over a range of lanes
//! ([`Lanes`]). The instruction set they share is defined here.

mod build;
mod exec;
mod matmul;
pub(crate) mod native;

use crate::ir::{CmpOp, ExprId, Func, Node};
pub(crate) use build::Builder;
// `matmul` reads its operands through the running context, as the lane loops do.
use exec::Ctx;
pub(crate) use exec::Lanes;

/// Banks of lane sources.
pub(crate) const REG: u8 = 0;
pub(crate) const STATE: u8 = 1;
pub(crate) const STATE_TANGENT: u8 = 2;
pub(crate) const COTANGENT: u8 = 3;
pub(crate) const INPUT: u8 = 4;
pub(crate) const LABEL: u8 = 5;
pub(crate) const OBSERVED: u8 = 6;
pub(crate) const TIME: u8 = 7;
/// Values a kernel reads instead of computing: registers of the right-hand side saved at the
/// same point (see [`Builder::kernel_reading`]).
pub(crate) const SAVED: u8 = 8;
pub(crate) const BANKS: usize = 9;

/// A lane: row `row` of bank `bank`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Src {
    bank: u8,
    row: u32,
}

/// An operand: a lane or a uniform register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Opd {
    L(Src),
    U(u32),
}

/// The kinds of terms of a linear combination (and of a reduction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// `a`
    Lane,
    /// `c`
    Uni,
    /// `c·a`
    Scaled,
    /// `a·b`
    Prod,
    /// `(c·a)·b`
    ScaledProd,
}

/// A term without its coefficient: the part shared by the rows of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Shape {
    kind: Kind,
    a: Src,
    b: Src,
    /// Index of this term's coefficient within a row of the coefficient table.
    slot: u32,
}

/// Binary elementwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bin {
    Mul,
    Div,
    Pow,
    Min,
    Max,
    Cmp(CmpOp),
}

/// Where an instruction writes: registers, or rows of the output block (a lane root that no
/// other node reads is computed in place, without a register and a copy).
#[derive(Clone, Copy, Debug)]
enum Dst {
    Reg(u32),
    Out(u32),
}

/// One lane instruction with its destination; its sources lie in registers below `below`.
#[derive(Clone, Debug)]
struct Step {
    dst: Dst,
    below: u32,
    instr: Instr,
}

/// One lane operation.
#[derive(Clone, Debug)]
enum Instr {
    /// Rows `dst .. dst + rows` are linear combinations with the same term shapes; row `r`'s
    /// coefficients are `u[table + r * coefs ..][..coefs]`.
    Lin {
        rows: u32,
        shape: Box<[Shape]>,
        coefs: u32,
        table: u32,
        /// The same rows as one matrix product, when they are one (see `matmul`).
        gemm: Option<Box<matmul::LinGemm>>,
    },
    /// `dst = a ∘ b`.
    Bin { op: Bin, a: Opd, b: Opd },
    /// `dst = ((a · b) · c) ...`, left to right.
    Fold { ops: Box<[Opd]> },
    /// `dst = a · a`.
    Square { a: Src },
    /// `dst = f(a)`.
    Func { f: Func, a: Src },
}

/// Scalar operations of the uniform prologue.
#[derive(Clone, Debug)]
enum UInstr {
    Node { dst: u32, node: Node },
}

/// Where a uniform leaf takes its value.
#[derive(Clone, Copy, Debug)]
enum ULeaf {
    /// Element of the resolved parameter copy `θ`.
    Param(u32),
    /// Element of the resolved parameter tangent.
    Tangent(u32),
    /// A constant.
    Const(f64),
}

/// A reduction `out[index] += Σ_s term(s)`, or `Σ_s (term(s) + second(s))`.
#[derive(Clone, Copy, Debug)]
struct Reduce {
    index: u32,
    shape: Shape,
    coef: u32,
    /// The second term and its coefficient of a two-term sum that only this reduction reads:
    /// it is summed over the lanes as it is formed, not written to a register and read back.
    second: Option<(Shape, u32)>,
}

/// One step of a kernel's reductions.
#[derive(Clone, Debug)]
enum ReducePlan {
    /// `reduces[i]` alone.
    One(usize),
    /// Four products `shared · others[k]` into `reduced[index[k]]`.
    Four {
        shared: Src,
        others: [Src; 4],
        index: [u32; 4],
    },
    /// A grid of products summed as one matrix product (see `matmul`).
    Gemm(Box<matmul::ReduceGemm>),
}

/// A compiled kernel: see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Kernel {
    leaves: Vec<(u32, ULeaf)>,
    prologue: Vec<UInstr>,
    /// `u[dst] = u[src]`: coefficient tables of the linear combinations.
    gather: Vec<(u32, u32)>,
    /// Size of the uniform file.
    pub(crate) n_uniform: usize,
    /// Number of lane registers.
    pub(crate) n_regs: usize,
    steps: Vec<Step>,
    /// Lane outputs: row of the output block and its operand.
    outputs: Vec<(u32, Opd)>,
    reduces: Vec<Reduce>,
    /// The order `reduces` are computed in: runs of four products that share a lane are
    /// summed in one pass, which reads the shared lane once instead of four times.
    reduce_plan: Vec<ReducePlan>,
    /// Number of reduced outputs.
    pub(crate) n_reduce: usize,
    /// Scratch the matrix products need.
    pub(crate) scratch: usize,
    /// The node each register holds (canonical ids), for kernels that read them saved.
    pub(crate) registers: Vec<(ExprId, u32)>,
    /// Whether the kernel reads parameter tangents (its uniforms change with every call).
    pub(crate) reads_tangent: bool,
    /// Whether the kernel reads the time `t`.
    pub(crate) reads_time: bool,
    /// The same kernel as native code, when it is small and elementwise (see `native`).
    pub(crate) native: native::Slot,
}
