//! The instruction set the lane loops run with, chosen when the binary runs.
//!
//! `cargo build --release` targets baseline x86-64 (SSE2: two `f64` per vector). The hot lane
//! loops (`tape::exec`, `lanes::func` with the vectorized `tanh`/`exp`/`sigmoid`, the tensor
//! kernels' elementwise programs) are also compiled with AVX2 (four `f64` or eight `f32` per
//! vector) and with AVX-512 (eight and sixteen), in both precisions, and the widest copy the
//! CPU runs is picked at run time (`is_x86_feature_detected!`, cached by `std`). The copies
//! give the same bits: they perform the same IEEE operations on the same operands in the same
//! order, only more lanes per instruction. Rust never contracts `a * b + c` into a fused
//! multiply-add (which rounds once, so it changes the last bit), whatever the target features.
//! The vectorized `tanh`/`exp`/`sigmoid` (`compile::math`) do ask for fused multiply-adds
//! (`mul_add`): IEEE defines their result exactly, so every copy still gives the same bits.
//! The AVX2 and AVX-512 copies enable `fma` and are chosen only on CPUs with it (every CPU with
//! AVX2 we know of); the SSE2 copy calls libm's `fma` per value, which made `cnf_moons` 3.6×
//! slower under `NODEC_ISA=baseline`: the price, on x86 CPUs from before 2013 only, of one
//! set of bits and of `tanh` taking half the instructions. `NODEC_ISA=baseline` forces the SSE2 copies and
//! `NODEC_ISA=avx2` caps them at AVX2; the test `isa_does_not_change_the_bits` runs models all
//! three ways. The GEMMs (the `gemm` crate, `compile::gemm`, in the tape and the tensor
//! kernels) choose their own kernels at run time and *do* use FMA where the CPU has it:
//! products of at least 8 × 8 × 8 (see `tape::matmul`) can differ in the last bits between
//! machines with different vector units; on one machine they are reproducible.
//!
//! Safety: calling a `#[target_feature(enable = ...)]` function is sound only on a CPU with
//! those features. [`multiversion!`] calls its AVX2 copy only when [`isa`] said
//! [`Isa::Avx2`] or wider, which requires `is_x86_feature_detected!` of `avx2` and `fma`, and
//! its AVX-512 copy only when it said [`Isa::Avx512`], which requires every feature that copy
//! enables.

use std::sync::OnceLock;

/// The lane loops' instruction sets, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    Baseline,
    Avx2,
    Avx512,
}

/// The copies that run: the widest the CPU has, capped by `NODEC_ISA`.
#[inline(always)]
pub(crate) fn isa() -> Isa {
    static CHOICE: OnceLock<Isa> = OnceLock::new();
    *CHOICE.get_or_init(detect)
}

#[cold]
fn detect() -> Isa {
    let cap = match std::env::var("NODEC_ISA").as_deref() {
        Ok("baseline") => Isa::Baseline,
        Ok("avx2") => Isa::Avx2,
        _ => Isa::Avx512,
    };
    #[cfg(target_arch = "x86_64")]
    let cpu = {
        use std::arch::is_x86_feature_detected as has;
        if has!("fma")
            && has!("avx512f")
            && has!("avx512dq")
            && has!("avx512vl")
            && has!("avx512bw")
        {
            Isa::Avx512
        } else if has!("avx2") && has!("fma") {
            Isa::Avx2
        } else {
            Isa::Baseline
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let cpu = Isa::Baseline;
    cpu.min(cap)
}

/// The instruction set the lane loops use on this machine, for reports.
pub fn lane_isa() -> &'static str {
    match isa() {
        Isa::Avx512 => "avx512",
        Isa::Avx2 => "avx2",
        Isa::Baseline => "baseline",
    }
}

/// `fn NAME(ARGS) -> R { BODY(ARGS) }` that runs `BODY` (an `#[inline(always)]` function)
/// compiled with AVX-512 or AVX2 where [`isa`] says so, and as compiled otherwise. `NAME` may
/// take type parameters (`fn NAME<R: Real>(..)`): each instantiation (`f64`, `f32`) gets all
/// three copies.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$($g:ident: $bound:path),*>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$meta])*
        $vis fn $name $(<$($g: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::compile::isa::{isa, Isa};
                #[target_feature(enable = "avx2,fma")]
                fn with_avx2 $(<$($g: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,fma")]
                fn with_avx512 $(<$($g: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match isa() {
                    // SAFETY: `isa()` says `Avx512` only on a CPU with these five features
                    // (see `compile::isa`).
                    #[allow(unsafe_code, reason = "see the safety comment")]
                    Isa::Avx512 => return unsafe { with_avx512 $(::<$($g),*>)? ($($arg),*) },
                    // SAFETY: `isa()` says `Avx2` only on a CPU with AVX2 and FMA.
                    #[allow(unsafe_code, reason = "see the safety comment")]
                    Isa::Avx2 => return unsafe { with_avx2 $(::<$($g),*>)? ($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;
