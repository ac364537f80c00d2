//! Symbolic differentiation on the IR (placeholder signatures; implemented in the IR slice).

use super::{ExprId, Pool, Var};

/// The partial derivative of `expr` with respect to `var`, as new nodes in the same pool.
pub fn partial(pool: &mut Pool, expr: ExprId, var: Var) -> ExprId {
    let _ = (expr, var);
    pool.constant(0.0)
}
