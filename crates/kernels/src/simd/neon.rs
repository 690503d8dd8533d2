//! aarch64 NEON building blocks; with `DOT`, the SDOT instruction
//! (dotprod). The kernels: `neon_tiles` (the 32-weight types), `neon_k` (K-quants).

use std::arch::aarch64::*;
use std::arch::asm;

/// Σ a·b over 16 signed bytes, added to the four i32 lanes of `acc`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot16_plain(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vaddq_s32(acc, vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)))
}

/// The same with SDOT (inline assembly: the intrinsic is not stable).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot16_sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    asm!("sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b", acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
         options(pure, nomem, nostack));
    acc
}

#[inline]
pub(super) unsafe fn dot16<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DOT {
        dot16_sdot(acc, a, b)
    } else {
        dot16_plain(acc, a, b)
    }
}
