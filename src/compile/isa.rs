//! The instruction set the lane loops run with, chosen when the binary runs.
//!
//! `cargo build --release` targets baseline x86-64 (SSE2: two `f64` per vector). The hot lane
//! loops (`tape::exec`, `lanes::func` with the vectorized `tanh`/`exp`/`sigmoid`) are also
//! compiled with AVX2 (four `f64` or eight `f32` per vector), in both precisions, and the copy
//! is picked at run time when the CPU has it (`is_x86_feature_detected!`, cached by `std`). The two copies give the same bits: they
//! perform the same IEEE operations on the same operands in the same order, only more lanes
//! per instruction, and FMA is not enabled (a fused multiply-add rounds once, which would change
//! the last bit). `NODEC_ISA=baseline` forces the SSE2 copies; the test
//! `isa_does_not_change_the_bits` runs models both ways. The GEMMs (`nalgebra` →
//! `matrixmultiply` in the tape, the `gemm` crate in tensor kernels) choose their own kernels
//! at run time and *do* use FMA where the CPU has it:
//! products of at least 8 × 8 × 8 (see `tape::matmul`) can differ in the last bits between
//! machines with and without FMA; on one machine they are reproducible.
//!
//! Safety: calling a `#[target_feature(enable = "avx2")]` function is sound only on a CPU
//! with AVX2. [`multiversion!`] calls its AVX2 copy only after [`avx2`] returned true, which
//! requires `is_x86_feature_detected!("avx2")`.

use std::sync::OnceLock;

/// Whether the AVX2 copies run: the CPU has AVX2 and `NODEC_ISA` does not say `baseline`.
#[inline(always)]
pub(crate) fn avx2() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(detect)
}

#[cold]
fn detect() -> bool {
    if std::env::var("NODEC_ISA").is_ok_and(|v| v == "baseline") {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The instruction set the lane loops use on this machine, for reports.
pub fn lane_isa() -> &'static str {
    if avx2() {
        "avx2"
    } else {
        "baseline"
    }
}

/// `fn NAME(ARGS) -> R { BODY(ARGS) }` that runs `BODY` (an `#[inline(always)]` function)
/// compiled with AVX2 where [`avx2`] says so, and as compiled otherwise. `NAME` may take type
/// parameters (`fn NAME<R: Real>(..)`): each instantiation (`f64`, `f32`) gets both copies.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$($g:ident: $bound:path),*>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$meta])*
        $vis fn $name $(<$($g: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn with_avx2 $(<$($g: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::compile::isa::avx2() {
                    // SAFETY: `avx2()` is true only on a CPU with AVX2 (see `compile::isa`).
                    #[allow(unsafe_code, reason = "see the safety comment")]
                    return unsafe { with_avx2 $(::<$($g),*>)? ($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;
