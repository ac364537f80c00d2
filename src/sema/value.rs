//! Values of expressions during lowering: a shape and one IR node per element.

use crate::ir::{ExprId, Shape};

/// What an expression lowers to. `Error` silences follow-on errors: every operation on it gives
/// `Error` again without a diagnostic.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// Already reported.
    Error,
    /// A scalar, vector or matrix, row-major.
    Array {
        /// The shape.
        shape: Shape,
        /// One node per element.
        elems: Vec<ExprId>,
    },
}

impl Value {
    pub(crate) fn scalar(id: ExprId) -> Value {
        Value::Array {
            shape: Shape::Scalar,
            elems: vec![id],
        }
    }

    pub(crate) fn array(shape: Shape, elems: Vec<ExprId>) -> Value {
        debug_assert_eq!(shape.len(), elems.len());
        Value::Array { shape, elems }
    }

    pub(crate) fn shape(&self) -> Option<Shape> {
        match self {
            Value::Error => None,
            Value::Array { shape, .. } => Some(*shape),
        }
    }

    pub(crate) fn elems(&self) -> &[ExprId] {
        match self {
            Value::Error => &[],
            Value::Array { elems, .. } => elems,
        }
    }

    pub(crate) fn is_error(&self) -> bool {
        matches!(self, Value::Error)
    }
}
