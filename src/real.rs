//! The floating-point type kernels compute in: [`Real`], implemented for `f64` (the default and
//! the reference) and `f32` (single precision, issue 19).
//!
//! Everything generic code needs beyond `num_traits::Float` lives here, so a kernel is written
//! once: the vectorizable `tanh`/`exp`/`sigmoid` of its precision (`compile::math`, one macro
//! instantiated per type), conversions from and to the `f64` that parameters, times and data
//! are kept in, and views that let the `f64` instantiation use its `f64` inputs in place (no copy,
//! so its bits and costs are those of the code before the genericity). GEMMs need nothing here:
//! the tensor kernels' `compile::gemm` and `nalgebra`'s generic `gemm` (the scalar tape) pick
//! their `f32` or `f64` kernels by type.
//!
//! What stays `f64` whatever the precision (mixed precision as PyTorch's AMP keeps master
//! weights): [`crate::compile::Params`], times `t` (layers and knots are found in `f64`, a long
//! span keeps its resolution) and bound data, which are rounded to `R` when a kernel reads
//! them; and the uniform prologue of a kernel (functions of the parameters only, run once per
//! parameter update), computed in `f64` and rounded to `R` once.
//!
//! A model run with `precision = f32` (`ir::Precision`) keeps more in `f64`: the solvers see
//! `f64` entry points (`compile::Program::workspace` hides an `f32` workspace behind them), so
//! states between steps, the solvers' arithmetic, gradient sums over blocks, the stiff methods'
//! Newton Jacobians and the uniform kernels stay `f64`; every other kernel runs in `f32`.

use std::fmt::Debug;
use std::iter::Sum;

use nalgebra::{ClosedAddAssign, ClosedMulAssign, Scalar};
use num_traits::Float;

/// A precision kernels run in: `f64` or `f32`.
pub trait Real:
    Float + Scalar + ClosedAddAssign + ClosedMulAssign + Sum + Default + Debug + Send + Sync + 'static
{
    /// `"f64"` or `"f32"`, for reports and test messages.
    const NAME: &'static str;

    /// The unit roundoff `2^-p` (half an ulp of 1): the scale of tolerances between precisions.
    const UNIT_ROUNDOFF: f64;

    /// `x` rounded to this precision (exact for `f64`).
    fn cast(x: f64) -> Self;

    /// The value as an `f64` (exact for both).
    fn widen(self) -> f64;

    /// `e^x`, vectorizable (`compile::math`).
    fn vexp(self) -> Self;

    /// `tanh(x)`, vectorizable (`compile::math`).
    fn vtanh(self) -> Self;

    /// `1 / (1 + e^−x)`, vectorizable (`compile::math`).
    fn vsigmoid(self) -> Self;

    /// The slice itself when this is `f64`: lets `f64` code read its inputs in place and lets
    /// native code (which is `f64` only) run.
    fn as_f64(s: &[Self]) -> Option<&[f64]>;

    /// [`Real::as_f64`] for a mutable slice.
    fn as_f64_mut(s: &mut [Self]) -> Option<&mut [f64]>;

    /// The `f64` values `src` in this precision: `src` itself for `f64`, else `buf`, refilled
    /// from `src` if `refill` (or if its length differs).
    fn from_f64s<'a>(src: &'a [f64], buf: &'a mut Vec<Self>, refill: bool) -> &'a [Self];
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;

    #[inline(always)]
    fn cast(x: f64) -> f64 {
        x
    }

    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }

    #[inline(always)]
    fn vexp(self) -> f64 {
        crate::compile::math::double::exp(self)
    }

    #[inline(always)]
    fn vtanh(self) -> f64 {
        crate::compile::math::double::tanh(self)
    }

    #[inline(always)]
    fn vsigmoid(self) -> f64 {
        crate::compile::math::double::sigmoid(self)
    }

    #[inline(always)]
    fn as_f64(s: &[f64]) -> Option<&[f64]> {
        Some(s)
    }

    #[inline(always)]
    fn as_f64_mut(s: &mut [f64]) -> Option<&mut [f64]> {
        Some(s)
    }

    #[inline(always)]
    fn from_f64s<'a>(src: &'a [f64], _: &'a mut Vec<f64>, _: bool) -> &'a [f64] {
        src
    }
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    const UNIT_ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;

    #[inline(always)]
    fn cast(x: f64) -> f32 {
        x as f32
    }

    #[inline(always)]
    fn widen(self) -> f64 {
        self as f64
    }

    #[inline(always)]
    fn vexp(self) -> f32 {
        crate::compile::math::single::exp(self)
    }

    #[inline(always)]
    fn vtanh(self) -> f32 {
        crate::compile::math::single::tanh(self)
    }

    #[inline(always)]
    fn vsigmoid(self) -> f32 {
        crate::compile::math::single::sigmoid(self)
    }

    #[inline(always)]
    fn as_f64(_: &[f32]) -> Option<&[f64]> {
        None
    }

    #[inline(always)]
    fn as_f64_mut(_: &mut [f32]) -> Option<&mut [f64]> {
        None
    }

    fn from_f64s<'a>(src: &'a [f64], buf: &'a mut Vec<f32>, refill: bool) -> &'a [f32] {
        if refill || buf.len() != src.len() {
            buf.clear();
            buf.extend(src.iter().map(|&x| x as f32));
        }
        buf
    }
}

/// `src` rounded into `dst` (equal lengths).
#[inline]
pub fn narrow_into<R: Real>(src: &[f64], dst: &mut [R]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = R::cast(s);
    }
}

/// `src` widened into `dst` (equal lengths).
#[inline]
pub fn widen_into<R: Real>(src: &[R], dst: &mut [f64]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.widen();
    }
}
