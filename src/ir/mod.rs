//! The symbolic IR: a hash-consed DAG of scalar nodes, its simplifier, symbolic differentiation,
//! printer, verifier and reference interpreter.
//!
//! `sema::check` builds an [`Model`] whose expressions are nodes of one [`Pool`]; arrays are
//! lowered to one node per element. [`prepare`] simplifies it; `diff` resolves calculus and builds
//! the Jacobian-vector and vector-Jacobian products that later stages compile.

pub mod diff;
mod model;
mod node;
mod pool;

pub use model::*;
pub use node::{CmpOp, ExprId, Func, Node, Var};
pub use pool::Pool;

/// Placeholder until the IR slice lands.
pub fn prepare(model: &mut Model) {
    let _ = model;
}

/// Placeholder until the IR slice lands.
pub fn print(model: &Model, derivatives: bool) -> String {
    let _ = derivatives;
    format!("model {}\n", model.name)
}

/// Placeholder until the IR slice lands.
pub fn stats(model: &Model) -> String {
    format!("nodes {}\n", model.pool.len())
}
