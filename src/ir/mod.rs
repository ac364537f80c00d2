//! The symbolic IR: a hash-consed DAG of scalar nodes, its simplifier, symbolic differentiation,
//! printer, verifier and reference interpreter.
//!
//! `sema::check` builds an [`Model`] whose expressions are nodes of one [`Pool`]; arrays are
//! lowered to one node per element. [`prepare`] simplifies it; `diff` resolves calculus and builds
//! the Jacobian-vector and vector-Jacobian products that later stages compile.

pub mod diff;
pub mod eval;
mod model;
mod node;
mod pool;
mod prepare;
pub mod print;
pub mod simplify;
pub mod verify;

pub use eval::{eval, Point};
pub use model::*;
pub use node::{apply_pow, CmpOp, ExprId, Func, Node, Var};
pub use pool::Pool;
pub use prepare::{derivatives, prepare};
pub use print::{print, stats};
pub use verify::verify;
