//! Elementwise loops over a lane range, shared by both kinds of kernels, in either precision.
//!
//! Indexed: at a fixed length these unrolled and vectorized better than `zip` in measurements.
//! At the solvers' block width (32) each is one fixed-length loop whose result is formed before
//! it is stored: it is fully unrolled and vectorized without alias checks, and a call costs a
//! few nanoseconds rather than a loop with a remainder.
//!
//! The specialized length is the block width, not a vector width: it is the same 32 samples in
//! `f32` and `f64`, and the compiler packs twice as many `f32` per vector (eight per AVX2
//! register), so an `f32` loop is half the instructions. The block width is the solvers'
//! (samples per block fix the partition that makes results independent of the thread count);
//! it is not changed by the precision.

use crate::ir::Func;
use crate::real::Real;

/// The block width the elementwise loops are specialized for.
pub(crate) const W: usize = 32;

/// `d = f(a)`.
#[inline(always)]
pub(crate) fn map<R: Real>(d: &mut [R], a: &[R], f: impl Fn(R) -> R) {
    if let (Ok(d), Ok(a)) = (<&mut [R; W]>::try_from(&mut *d), <&[R; W]>::try_from(a)) {
        for k in 0..W {
            d[k] = f(a[k]);
        }
    } else {
        d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(a));
    }
}

/// `d = f(a, b)`.
#[inline(always)]
pub(crate) fn zip<R: Real>(d: &mut [R], a: &[R], b: &[R], f: impl Fn(R, R) -> R) {
    if let (Ok(d), Ok(a), Ok(b)) = (
        <&mut [R; W]>::try_from(&mut *d),
        <&[R; W]>::try_from(a),
        <&[R; W]>::try_from(b),
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
pub(crate) fn update<R: Real>(d: &mut [R], a: &[R], f: impl Fn(R, R) -> R) {
    if let (Ok(d), Ok(a)) = (<&mut [R; W]>::try_from(&mut *d), <&[R; W]>::try_from(a)) {
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
    pub(crate) fn func<R: Real>(d: &mut [R], f: Func, a: &[R]) => func_lanes
);

#[inline(always)]
fn func_lanes<R: Real>(d: &mut [R], f: Func, a: &[R]) {
    match f {
        Func::Tanh => map(d, a, R::vtanh),
        Func::Exp => map(d, a, R::vexp),
        Func::Sigmoid => map(d, a, R::vsigmoid),
        Func::Abs => map(d, a, R::abs),
        Func::Sqrt => map(d, a, R::sqrt),
        Func::Relu => map(d, a, |x| Func::Relu.apply(x)),
        f => map(d, a, |x| f.apply(x)),
    }
}

/// The value the lane loops give for one element (a uniform operand of a lane operation).
#[inline]
pub(crate) fn func_one<R: Real>(f: Func, x: R) -> R {
    match f {
        Func::Tanh => x.vtanh(),
        Func::Exp => x.vexp(),
        Func::Sigmoid => x.vsigmoid(),
        f => f.apply(x),
    }
}
