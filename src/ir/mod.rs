//! The symbolic IR: a hash-consed DAG of scalar nodes, its simplifier, symbolic differentiation,
//! printer, verifier and reference interpreter.
//!
//! `sema::check` builds a [`Model`] whose expressions are nodes of one [`Pool`], through the
//! pool's smart constructors; arrays are lowered to one node per element, and `grad`,
//! `jacobian` and `div` to [`diff::partial`]. [`prepare`] then simplifies the DAG
//! ([`simplify`]), adds the Jacobian-vector and vector-Jacobian products of the state equations
//! and the cost gradients ([`Derivatives`], built by [`diff::jvp`] and [`diff::vjp`]) and
//! compacts the pool to what the model's roots reach. [`print()`] gives the text of `nodec ir`,
//! [`verify()`] checks the invariants, and [`eval()`] is the interpreter that compiled kernels are
//! tested against.
//!
//! **Architecture invariant:** children precede parents (`ExprId`s grow), so evaluation is one
//! forward loop and reverse mode one backward loop; equal nodes are one id.
//! **API boundary:** `sema` builds nodes only through the constructors and [`diff::partial`];
//! later stages read a prepared [`Model`].

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
pub use prepare::{derivatives, prepare};
pub use print::{print, print_tensor, stats};
pub use verify::verify;
