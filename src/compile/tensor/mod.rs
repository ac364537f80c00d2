//! Kernels compiled from the tensor IR: one instruction per tensor node, however wide.
//!
//! The scalar tape (`tape`) gives every element of every array its own instruction, which is
//! what small models want (a width-2 state, native code) but costs seconds and hundreds of
//! megabytes for a 1024 × 64 layer. A tensor [`Kernel`] instead reads the model's roots as
//! [`crate::ir::tensor`] nodes, so its size follows the model's text:
//!
//! - *Uniform* nodes (parameters, their tangents, constants and whatever depends on nothing
//!   else, e.g. `K2ᵀ`) are evaluated by a uniform program when the parameters in force change,
//!   into the uniform file `u`, row-major, one value per element.
//! - *Varying* nodes (anything reading states, directions, inputs, labels, observations or the
//!   time) hold one lane per element and sample: element `i` of a node at register row `r` is
//!   row `r + i` of the register file, `width` lanes, as in the scalar tape, so states and
//!   outputs keep the blocks' component-major layout and a reshape is free.
//! - A uniform matrix times varying vectors is one GEMM over the block (`K x` for 32 samples
//!   is a 1024 × 64 by 64 × 32 product); chains of elementwise operations (`tanh(K x + b)`,
//!   `(1 − h²) .* g`) are fused into one pass over elements × lanes, the intermediates living
//!   in a few lanes of scratch.
//! - Parameter gradients are reduced over the lanes: an outer product `g xᵀ` summed over the
//!   samples is the GEMM `G Xᵀ`, never materialized per sample; sums of such terms reduce term
//!   by term; anything else is computed per lane and summed in lane order.
//!
//! Exactness: elementwise operations and lane-loop products sum left to right, like the
//! reference interpreter; GEMMs (`compile::gemm`) sum each output as one chain of fused
//! multiply-adds over the inner dimension (a few ulps per term). A lane's bits never depend on the other lanes: products over fewer than
//! `MIN_SIDE` lanes are padded to that many, so every lane count goes through the same GEMM.

mod build;
mod exec;

pub(crate) use build::{build, Leaves};

use crate::ir::tensor::TId;
use crate::ir::{CmpOp, Func};

/// Where element 0 of a tensor lives; element `i` is `i` rows (or uniform slots) further.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Loc {
    /// The uniform file, one value per element.
    U(u32),
    /// The parameters in place (constant in time: their storage is one copy in the view's
    /// layout), one value per element.
    P(u32),
    /// Rows of a lane bank (`tape::REG` is the kernel's own registers).
    L(u8, u32),
}

/// An operand of an elementwise program: a location, and whether it is a scalar broadcast
/// over the elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Arg {
    loc: Loc,
    scalar: bool,
}

/// An operand inside an elementwise program: an argument or an earlier instruction's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ref {
    Arg(u16),
    Tmp(u16),
}

/// Elementwise binary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinOp {
    Add,
    Mul,
    Div,
    Pow,
    Min,
    Max,
    Cmp(CmpOp),
}

/// One instruction of an elementwise program; its result is the next temporary.
#[derive(Clone, Copy, Debug)]
enum EwInstr {
    Bin(BinOp, Ref, Ref),
    Func(Func, Ref),
}

/// One tensor operation writing `len` rows of the file it runs on, from `dst` on.
#[derive(Clone, Debug)]
enum Op {
    /// A fused elementwise program over the elements; the last instruction is the result.
    Ew {
        dst: u32,
        len: u32,
        args: Box<[Arg]>,
        code: Box<[EwInstr]>,
    },
    /// `[m, k] · [k, n]` (`n = 1` for a vector) with the matrix uniform and the right side in
    /// lane rows: one GEMM per column of the right side; `a` is row-major.
    Gemm {
        dst: u32,
        a: Loc,
        b: (u8, u32),
        m: u32,
        k: u32,
        n: u32,
    },
    /// `[m, k] · [k, n]` by lane loops, sums left to right: any mix of uniform and lane operands.
    MatMul {
        dst: u32,
        a: Loc,
        b: Loc,
        m: u32,
        k: u32,
        n: u32,
    },
    /// `[m, k] → [k, m]`.
    Transpose { dst: u32, src: Loc, m: u32, k: u32 },
    /// `dst[i·n + j] = a[i] · b[j]`.
    Outer {
        dst: u32,
        a: Loc,
        m: u32,
        b: Loc,
        n: u32,
    },
    /// Rows moved: `dst` rows zeroed, then each `(row, src)` added in; with `dense`, every row
    /// is written exactly once in order and copied without zeroing.
    Rows {
        dst: u32,
        len: u32,
        moves: Box<[(u32, Loc)]>,
        dense: bool,
    },
    /// `dst[g] = Σ_c src[start + c · stride]` for each group `(start, count, stride)`, left to
    /// right.
    Sums {
        dst: u32,
        src: Loc,
        groups: Box<[(u32, u32, u32)]>,
    },
    /// `dst = max(max(src[0], src[1]), …)`.
    MaxAll { dst: u32, src: Loc, len: u32 },
    /// The first largest element's index, or (`onehot`) a vector with 1 there.
    ArgMax {
        dst: u32,
        src: Loc,
        len: u32,
        onehot: bool,
    },
}

/// A parameter-gradient reduction over the lanes into `reduced[at ..]`.
#[derive(Clone, Debug)]
enum Reduce {
    /// `reduced[at + i] += Σ_s x_i[s]` (`scalar`: the same `x_0` for all `len` elements).
    Lanes {
        at: u32,
        len: u32,
        src: Loc,
        scalar: bool,
    },
    /// `reduced[at + i·n + j] += Σ_s a_i[s] · b_j[s]`: a GEMM `A Bᵀ` over the lanes.
    Outer {
        at: u32,
        a: Loc,
        m: u32,
        b: Loc,
        n: u32,
    },
}

/// How a uniform leaf is filled.
#[derive(Clone, Copy, Debug)]
enum ULeaf {
    /// `len` values of the resolved parameters from `from`.
    Param { from: u32 },
    /// `len` values of the resolved parameter tangent from `from`.
    Tangent { from: u32 },
}

/// A compiled tensor kernel: see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Kernel {
    /// Constants and literals: `u[at ..]` = values.
    consts: Vec<(u32, Box<[f64]>)>,
    /// Parameter and tangent leaves: `u[at .. at + len]`.
    leaves: Vec<(u32, u32, ULeaf)>,
    /// The uniform program, run over `u` as a file of width 1.
    uniform: Vec<Op>,
    /// The lane program, run over the registers.
    lanes: Vec<Op>,
    /// Lane outputs: output row, source and number of rows (a scalar source fills them all).
    outputs: Vec<(u32, Arg, u32)>,
    /// Per output: whether only the output reads its node (see [`Kernel::outputs_in_place`]).
    output_only: Vec<bool>,
    /// Per lane operation: the output row it writes in place of its registers, if any.
    pub(crate) in_place: Vec<Option<u32>>,
    reduces: Vec<Reduce>,
    /// Size of the uniform file.
    pub(crate) n_uniform: usize,
    /// Number of lane registers.
    pub(crate) n_regs: usize,
    /// Number of reduced outputs.
    pub(crate) n_reduce: usize,
    /// Temporary lanes the largest fused elementwise program needs.
    temps: usize,
    /// Scratch the padded GEMMs and the reductions' cells need.
    scratch: usize,
    /// Whether the kernel reads parameter tangents (its uniforms change with every call).
    pub(crate) reads_tangent: bool,
    /// Whether the kernel reads the time `t`.
    pub(crate) reads_time: bool,
    /// The node each lane register row starts, in order.
    pub(crate) registers: Vec<(TId, u32)>,
    /// The nodes read from the `SAVED` bank, in node order.
    pub(crate) saved: Vec<TId>,
}

impl Kernel {
    /// Lets the operations computing lane outputs write them straight into the output rows
    /// instead of registers that are then copied there: an elementwise program or a GEMM whose
    /// node nothing else reads, and whose registers are not among `kept` (rows the caller reads
    /// after the run, `Program::rhs_saving`'s). The copies were 2 % of P4's training step.
    pub(crate) fn outputs_in_place(&mut self, kept: &[u32]) {
        self.in_place = vec![None; self.lanes.len()];
        for (k, &(row, arg, len)) in self.outputs.iter().enumerate() {
            let (Loc::L(crate::compile::tape::REG, reg), false, true) =
                (arg.loc, arg.scalar, self.output_only[k])
            else {
                continue;
            };
            let Some(at) = self.lanes.iter().position(|op| match *op {
                Op::Ew { dst, len: n, .. } => dst == reg && n == len,
                Op::Gemm { dst, m, n, .. } => dst == reg && m * n == len,
                _ => false,
            }) else {
                continue;
            };
            if kept.iter().any(|&r| (reg..reg + len).contains(&r)) {
                continue;
            }
            self.in_place[at] = Some(row);
        }
    }

    /// Scratch a block of `width` samples needs.
    pub(crate) fn scratch_len(&self, width: usize) -> usize {
        self.scratch.max(self.temps * exec::ew_rows(width) * width)
    }
}
