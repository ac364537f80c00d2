//! The array-preserving IR: hash-consed nodes that carry a shape, so that `K2 · tanh(K1 · x)`
//! is four nodes whatever the width of `K1`.
//!
//! [`TensorPool`] holds the nodes and builds them through smart constructors that fold
//! constants and apply structural identities (`(Aᵀ)ᵀ → A`, a product by a unit vector is a
//! column, an element of `tanh(K·x)` is `tanh(K[i, :]·x)`). [`diff`] differentiates at tensor
//! level (one JVP and one VJP rule per operation), [`eval()`] is the reference interpreter,
//! [`expand`] turns tensor nodes into the scalar IR where scalar kernels are faster, and
//! [`print`] gives the text forms.
//!
//! **Architecture invariant:** children precede parents and equal nodes of equal shape are one
//! id, as in the scalar pool. The number of nodes of an expression and of its derivatives does
//! not depend on the sizes of its arrays, only on the expression's text (a test pins this).

pub mod diff;
pub mod eval;
pub mod expand;
mod node;
mod pool;
pub mod print;
mod roots;
#[cfg(test)]
mod tests;

pub use eval::eval;
pub use node::{Leaf, TId, TNode, Window};
pub use pool::{grid, TensorPool};
pub use roots::{derive, TensorCost, TensorDerivatives, TensorRoots};
