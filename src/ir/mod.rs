//! The symbolic IR: a hash-consed DAG of scalar nodes, its simplifier, symbolic differentiation,
//! printer, verifier and reference interpreter.
//!
//! `sema::check` builds a [`Model`] whose expressions are array-valued nodes of the
//! [`tensor`] pool, `grad`, `jacobian` and `div` resolved by [`tensor::diff`]; its roots are
//! [`Model::tensor_roots`]. [`prepare`] adds their derivatives at tensor level, expands the
//! roots into one scalar node per element of one [`Pool`] ([`expand_scalar`], through the
//! pool's smart constructors), simplifies that DAG ([`simplify`]), adds the Jacobian-vector and
//! vector-Jacobian products of the state equations and the cost gradients ([`Derivatives`],
//! built by [`diff::jvp`] and [`diff::vjp`]) and compacts the pool to what the model's roots
//! reach; [`prepare_tensor_only`] stops before the scalar IR. [`print()`] gives the text of
//! `nodec ir`, [`verify()`] checks the invariants, and [`eval()`] is the interpreter that
//! compiled kernels are tested against.
//!
//! **Architecture invariant:** children precede parents (`ExprId`s grow), so evaluation is one
//! forward loop and reverse mode one backward loop; equal nodes are one id.
//! **API boundary:** `sema` builds tensor nodes only through the [`tensor::TensorPool`]
//! constructors; later stages read a prepared [`Model`].

mod adjoint;
pub mod diff;
pub mod eval;
mod model;
mod node;
mod pool;
mod prepare;
pub mod print;
pub mod simplify;
pub mod tensor;
pub mod verify;

pub use adjoint::{adjoint, print_adjoint, Adjoint};
pub use eval::{eval, Point};
pub use model::*;
pub use node::{apply_pow, CmpOp, ExprId, Func, Node, Var};
pub use pool::Pool;
pub use prepare::{
    derivatives, prepare, prepare_scalar, prepare_tensor_only, prepare_to_run, products_are_gemms,
    scalar_ir_estimate, scalar_ir_pays, GEMM_SIDE, SCALAR_IR_LIMIT,
};
pub use print::{print, print_tensor, stats};
pub use tensor::expand::expand_scalar;
pub use verify::verify;
