//! Tensor IR node types: array-valued nodes referring to earlier nodes by [`TId`].

use std::fmt;

use crate::ir::{CmpOp, Func};

/// Index of a node in a [`super::TensorPool`]; children always have smaller ids than parents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TId(pub u32);

impl TId {
    /// The id as an index into the pool's node vector.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for TId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// A leaf: a whole declared array (or the time), never one element of it. The numbers are
/// declaration indices, as in the scalar IR's [`crate::ir::Var`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Leaf {
    /// The time `t` (scalar).
    Time,
    /// State number `i`.
    State(u32),
    /// Parameter number `i` (the copy in force at the current time).
    Param(u32),
    /// Input number `i`.
    Input(u32),
    /// Label number `i` (scalar).
    Label(u32),
    /// Observed quantity number `i`.
    Observed(u32),
    /// The tangent direction over state `i` in a Jacobian-vector product.
    StateTangent(u32),
    /// The tangent direction over parameter `i`.
    ParamTangent(u32),
    /// The cotangent over state equation `i` in a vector-Jacobian product.
    Cotangent(u32),
}

/// Which elements a [`TNode::Gather`] reads (or a [`TNode::Scatter`] writes) in a row-major
/// array: output element `(i, j)` of a `rows × cols` window is source element
/// `start + i·row_stride + j·col_stride` (a vector window has one row, a scalar one element).
/// Rows, columns, diagonals, slices, sub-matrices and single elements are all windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Flat index of the first element.
    pub start: u32,
    /// Step between rows of the window.
    pub row_stride: u32,
    /// Step between columns (between elements of a vector window).
    pub col_stride: u32,
}

impl Window {
    /// The source index of window element `(i, j)`.
    pub fn at(self, i: usize, j: usize) -> usize {
        self.start as usize + i * self.row_stride as usize + j * self.col_stride as usize
    }
}

/// One tensor node; its shape is kept beside it in the pool.
///
/// Elementwise operations (`Add`, `Mul`, `Div`, `Pow`, `Func`, `Min`, `Max`, `Cmp`) take
/// children of the node's shape or scalars, which are broadcast. Canonical forms kept by the
/// constructors: `Add` and `Mul` have at least two children, at most one scalar constant which
/// comes first, the others sorted by id; no `Add` has an `Add` child of the same shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TNode {
    /// A scalar constant, stored by its bits so that hashing and equality are total.
    Const(u64),
    /// A dense constant array (row-major bits) of the node's shape.
    Literal(Box<[u64]>),
    /// A whole declared array.
    Leaf(Leaf),
    /// A scalar broadcast to the node's shape.
    Fill(TId),
    /// Elementwise n-ary sum.
    Add(Box<[TId]>),
    /// Elementwise n-ary product.
    Mul(Box<[TId]>),
    /// Elementwise quotient.
    Div(TId, TId),
    /// Elementwise power.
    Pow(TId, TId),
    /// Elementwise function.
    Func(Func, TId),
    /// Elementwise minimum.
    Min(TId, TId),
    /// Elementwise maximum.
    Max(TId, TId),
    /// Elementwise comparison giving 1.0 or 0.0.
    Cmp(CmpOp, TId, TId),
    /// Matrix product: `[m, k]·[k] → [m]` or `[m, k]·[k, n] → [m, n]`.
    MatMul(TId, TId),
    /// Matrix transpose `[m, n] → [n, m]`.
    Transpose(TId),
    /// The same elements in row-major order with the node's shape.
    Reshape(TId),
    /// The sum of every element (a scalar).
    Sum(TId),
    /// Sums of a matrix along an axis: 0 gives column sums `[n]`, 1 row sums `[m]`.
    SumAxis(TId, u8),
    /// The largest element, as the left fold `max(max(x0, x1), x2)…` (a scalar).
    MaxAll(TId),
    /// A vector with 1 at the first largest element and 0 elsewhere (no derivative).
    FirstMax(TId),
    /// The index of the first largest element, as a number (no derivative).
    ArgMax(TId),
    /// The elements of a window of the child; the node's shape is the window's.
    Gather(TId, Window),
    /// Zeros of the node's shape with the child's elements placed at a window: the transpose
    /// of [`TNode::Gather`].
    Scatter(TId, Window),
    /// Scalars and vectors concatenated into a vector.
    Concat(Box<[TId]>),
    /// `[m] × [n] → [m, n]`, element `(i, j)` = `a_i b_j`.
    Outer(TId, TId),
    /// A vector as the diagonal of a square matrix.
    Diag(TId),
}

impl TNode {
    /// The operation's name as printed in the IR.
    pub fn kind(&self) -> &'static str {
        match self {
            TNode::Const(_) => "const",
            TNode::Literal(_) => "literal",
            TNode::Leaf(_) => "leaf",
            TNode::Fill(_) => "fill",
            TNode::Add(_) => "add",
            TNode::Mul(_) => "mul",
            TNode::Div(..) => "div",
            TNode::Pow(..) => "pow",
            TNode::Func(f, _) => f.name(),
            TNode::Min(..) => "min",
            TNode::Max(..) => "max",
            TNode::Cmp(op, ..) => op.name(),
            TNode::MatMul(..) => "matmul",
            TNode::Transpose(_) => "transpose",
            TNode::Reshape(_) => "reshape",
            TNode::Sum(_) => "sum",
            TNode::SumAxis(..) => "sum_axis",
            TNode::MaxAll(_) => "max_all",
            TNode::FirstMax(_) => "first_max",
            TNode::ArgMax(_) => "argmax",
            TNode::Gather(..) => "gather",
            TNode::Scatter(..) => "scatter",
            TNode::Concat(_) => "concat",
            TNode::Outer(..) => "outer",
            TNode::Diag(_) => "diag",
        }
    }

    /// Calls `f` on each child in order.
    pub fn for_each_operand(&self, mut f: impl FnMut(TId)) {
        match self {
            TNode::Const(_) | TNode::Literal(_) | TNode::Leaf(_) => {}
            TNode::Add(c) | TNode::Mul(c) | TNode::Concat(c) => c.iter().for_each(|&x| f(x)),
            TNode::Fill(a)
            | TNode::Func(_, a)
            | TNode::Transpose(a)
            | TNode::Reshape(a)
            | TNode::Sum(a)
            | TNode::SumAxis(a, _)
            | TNode::MaxAll(a)
            | TNode::FirstMax(a)
            | TNode::ArgMax(a)
            | TNode::Gather(a, _)
            | TNode::Scatter(a, _)
            | TNode::Diag(a) => f(*a),
            TNode::Div(a, b)
            | TNode::Pow(a, b)
            | TNode::Min(a, b)
            | TNode::Max(a, b)
            | TNode::Cmp(_, a, b)
            | TNode::MatMul(a, b)
            | TNode::Outer(a, b) => {
                f(*a);
                f(*b);
            }
        }
    }

    /// The node's children in order.
    pub fn operands(&self) -> Vec<TId> {
        let mut out = Vec::new();
        self.for_each_operand(|c| out.push(c));
        out
    }

    /// The same node with every child replaced by `f(child)`.
    pub fn map_operands(&self, mut f: impl FnMut(TId) -> TId) -> TNode {
        match self {
            TNode::Const(_) | TNode::Literal(_) | TNode::Leaf(_) => self.clone(),
            TNode::Fill(a) => TNode::Fill(f(*a)),
            TNode::Add(c) => TNode::Add(c.iter().map(|&x| f(x)).collect()),
            TNode::Mul(c) => TNode::Mul(c.iter().map(|&x| f(x)).collect()),
            TNode::Concat(c) => TNode::Concat(c.iter().map(|&x| f(x)).collect()),
            TNode::Div(a, b) => TNode::Div(f(*a), f(*b)),
            TNode::Pow(a, b) => TNode::Pow(f(*a), f(*b)),
            TNode::Func(func, a) => TNode::Func(*func, f(*a)),
            TNode::Min(a, b) => TNode::Min(f(*a), f(*b)),
            TNode::Max(a, b) => TNode::Max(f(*a), f(*b)),
            TNode::Cmp(op, a, b) => TNode::Cmp(*op, f(*a), f(*b)),
            TNode::MatMul(a, b) => TNode::MatMul(f(*a), f(*b)),
            TNode::Transpose(a) => TNode::Transpose(f(*a)),
            TNode::Reshape(a) => TNode::Reshape(f(*a)),
            TNode::Sum(a) => TNode::Sum(f(*a)),
            TNode::SumAxis(a, axis) => TNode::SumAxis(f(*a), *axis),
            TNode::MaxAll(a) => TNode::MaxAll(f(*a)),
            TNode::FirstMax(a) => TNode::FirstMax(f(*a)),
            TNode::ArgMax(a) => TNode::ArgMax(f(*a)),
            TNode::Gather(a, w) => TNode::Gather(f(*a), *w),
            TNode::Scatter(a, w) => TNode::Scatter(f(*a), *w),
            TNode::Outer(a, b) => TNode::Outer(f(*a), f(*b)),
            TNode::Diag(a) => TNode::Diag(f(*a)),
        }
    }

    /// Whether the node is elementwise over its (broadcast) children.
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            TNode::Add(_)
                | TNode::Mul(_)
                | TNode::Div(..)
                | TNode::Pow(..)
                | TNode::Func(..)
                | TNode::Min(..)
                | TNode::Max(..)
                | TNode::Cmp(..)
        )
    }
}
