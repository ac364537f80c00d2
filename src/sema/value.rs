//! Values of expressions during lowering: one tensor node with its shape.

use crate::ir::tensor::TId;
use crate::ir::Shape;

/// What an expression lowers to. `Error` silences follow-on errors: every operation on it gives
/// `Error` again without a diagnostic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value {
    /// Already reported.
    Error,
    /// A scalar, vector or matrix: one node of the model's tensor pool.
    Tensor {
        /// The node.
        id: TId,
        /// Its shape (the pool's, kept here so that shape rules need no pool).
        shape: Shape,
    },
}

impl Value {
    pub(crate) fn tensor(id: TId, shape: Shape) -> Value {
        Value::Tensor { id, shape }
    }

    pub(crate) fn shape(&self) -> Option<Shape> {
        match self {
            Value::Error => None,
            Value::Tensor { shape, .. } => Some(*shape),
        }
    }

    pub(crate) fn id(&self) -> Option<TId> {
        match self {
            Value::Error => None,
            Value::Tensor { id, .. } => Some(*id),
        }
    }

    pub(crate) fn is_error(&self) -> bool {
        matches!(self, Value::Error)
    }
}
