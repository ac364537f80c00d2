//! Elementwise loops over a lane range, shared by both kinds of kernels.
//!
//! Indexed: at a fixed length these unrolled and vectorized better than `zip` in measurements.
//! At the solvers' block width (32) each is one fixed-length loop whose result is formed before
//! it is stored: it is fully unrolled and vectorized without alias checks, and a call costs a
//! few nanoseconds rather than a loop with a remainder.

use crate::compile::math;
use crate::ir::Func;

/// The block width the elementwise loops are specialized for.
pub(crate) const W: usize = 32;

/// `d = f(a)`.
#[inline(always)]
pub(crate) fn map(d: &mut [f64], a: &[f64], f: impl Fn(f64) -> f64) {
    if let (Ok(d), Ok(a)) = (<&mut [f64; W]>::try_from(&mut *d), <&[f64; W]>::try_from(a)) {
        for k in 0..W {
            d[k] = f(a[k]);
        }
    } else {
        d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(a));
    }
}

/// `d = f(a, b)`.
#[inline(always)]
pub(crate) fn zip(d: &mut [f64], a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) {
    if let (Ok(d), Ok(a), Ok(b)) = (
        <&mut [f64; W]>::try_from(&mut *d),
        <&[f64; W]>::try_from(a),
        <&[f64; W]>::try_from(b),
    ) {
        for k in 0..W {
            d[k] = f(a[k], b[k]);
        }
    } else {
        d.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(d, (&a, &b))| *d = f(a, b));
    }
}

/// `d = f(d, a)`.
#[inline(always)]
pub(crate) fn update(d: &mut [f64], a: &[f64], f: impl Fn(f64, f64) -> f64) {
    if let (Ok(d), Ok(a)) = (<&mut [f64; W]>::try_from(&mut *d), <&[f64; W]>::try_from(a)) {
        for k in 0..W {
            d[k] = f(d[k], a[k]);
        }
    } else {
        d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(*d, a));
    }
}

crate::compile::isa::multiversion!(
    /// `d = f(a)` with the kernels' vectorizable `tanh`, `exp` and `sigmoid`: the one dispatch
    /// both kinds of kernels use, so they give the same bits.
    pub(crate) fn func(d: &mut [f64], f: Func, a: &[f64]) => func_lanes
);

#[inline(always)]
fn func_lanes(d: &mut [f64], f: Func, a: &[f64]) {
    match f {
        Func::Tanh => map(d, a, math::tanh),
        Func::Exp => map(d, a, math::exp),
        Func::Sigmoid => map(d, a, math::sigmoid),
        Func::Abs => map(d, a, f64::abs),
        Func::Sqrt => map(d, a, f64::sqrt),
        Func::Relu => map(d, a, |x| Func::Relu.apply(x)),
        f => map(d, a, |x| f.apply(x)),
    }
}
