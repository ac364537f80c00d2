//! Elementwise loops over a lane range, shared by both kinds of kernels, in either precision.
//!
//! Indexed: at a fixed length these unrolled and vectorized better than `zip` in measurements.
//! At the solvers' block widths (32 and 64 samples, see `solve::block_width`) each is one
//! fixed-length loop whose result is formed before it is stored: it is fully unrolled and
//! vectorized without alias checks, and a call costs a few nanoseconds rather than a loop with
//! a remainder. Any other length (a batch's last, partial block) takes the plain loop. A loop
//! over chunks of 32 instead of one loop of 64 measured 1 112 M instructions against 827 M on
//! `cnf_moons` (the nested loops are not fully unrolled).
//!
//! The specialized lengths are block widths, not vector widths: the same samples in `f32` and
//! `f64`, and the compiler packs twice as many `f32` per vector (eight per AVX2 register), so
//! an `f32` loop is half the instructions. Every sample is computed by the same operations at
//! any length, so the length does not change the bits.

use crate::ir::Func;
use crate::real::Real;

/// The block widths the elementwise loops are specialized for, and so the two that
/// `solve::block_width` chooses between (it reads them from here).
pub(crate) const NARROW: usize = 32;
/// See [`NARROW`].
pub(crate) const WIDE: usize = 64;

/// Runs `$body` with `$n` a constant block width and each `$slice` as an array of that
/// length when every slice is that long, else `$fallback` with the slices as they are.
macro_rules! at_block_width {
    ($n:ident; [$($m:ident $slice:ident),+] $body:block else $fallback:block) => {
        'done: {
            at_block_width!(@one NARROW, $n; [$($m $slice),+] $body, 'done);
            at_block_width!(@one WIDE, $n; [$($m $slice),+] $body, 'done);
            $fallback
        }
    };
    (@one $w:ident, $n:ident; [$($m:ident $slice:ident),+] $body:block, $done:lifetime) => {
        #[allow(unused_parens)]
        if let ($(Ok($slice)),+) = ($(at_block_width!(@cast $m $slice, $crate::compile::lanes::$w)),+) {
            const $n: usize = $crate::compile::lanes::$w;
            $body;
            break $done;
        }
    };
    (@cast mut $slice:ident, $len:path) => { <&mut [_; $len]>::try_from(&mut *$slice) };
    (@cast ref $slice:ident, $len:path) => { <&[_; $len]>::try_from($slice) };
}
pub(crate) use at_block_width;

/// `d = f(a)`.
#[inline(always)]
pub(crate) fn map<R: Real>(d: &mut [R], a: &[R], f: impl Fn(R) -> R) {
    at_block_width!(W; [mut d, ref a] {
        for k in 0..W {
            d[k] = f(a[k]);
        }
    } else {
        d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(a));
    })
}

/// `d = f(a, b)`.
#[inline(always)]
pub(crate) fn zip<R: Real>(d: &mut [R], a: &[R], b: &[R], f: impl Fn(R, R) -> R) {
    at_block_width!(W; [mut d, ref a, ref b] {
        for k in 0..W {
            d[k] = f(a[k], b[k]);
        }
    } else {
        d.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(d, (&a, &b))| *d = f(a, b));
    })
}

/// `d = f(d, a)`.
#[inline(always)]
pub(crate) fn update<R: Real>(d: &mut [R], a: &[R], f: impl Fn(R, R) -> R) {
    at_block_width!(W; [mut d, ref a] {
        for k in 0..W {
            d[k] = f(d[k], a[k]);
        }
    } else {
        d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(*d, a));
    })
}

crate::compile::isa::multiversion!(
    /// `d = f(a)` with the kernels' vectorizable `tanh`, `exp` and `sigmoid`: the one dispatch
    /// both kinds of kernels use, so they give the same bits.
    pub(crate) fn func<R: Real>(d: &mut [R], f: Func, a: &[R]) => func_lanes
);

/// [`func`] in the caller's instruction set (for callers that dispatch themselves).
#[inline(always)]
pub(crate) fn func_lanes<R: Real>(d: &mut [R], f: Func, a: &[R]) {
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
