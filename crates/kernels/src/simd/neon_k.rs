//! aarch64 NEON kernels for the K-quants (Q2_K..Q6_K) × Q8_K activations
//! (`k_tile`): the sub-block sums Σ code·x with SDOT, or widening multiplies
//! without dotprod. The same bits as the blockwise scalar twins.

use std::arch::aarch64::*;

use super::k_tile;
use super::neon::dot16;
use crate::quant::QuantKind;

/// The 16 sums Σ code·x over sub-blocks of 16 of one superblock.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sub_sums<const DOT: bool>(codes: &[u8; 256], xb: &[u8]) -> [i32; 16] {
    let x = xb[4..260].as_ptr() as *const i8;
    std::array::from_fn(|i| {
        let c = vreinterpretq_s8_u8(vld1q_u8(codes.as_ptr().add(16 * i)));
        vaddvq_s32(dot16::<DOT>(vdupq_n_s32(0), c, vld1q_s8(x.add(16 * i))))
    })
}

/// Up to 4 × 4 (weight row, activation row) pairs, `out[r * 4 + c]`
/// (`k_tile::tile_k`).
///
/// # Safety
/// With `DOT`, the CPU must support dotprod.
#[target_feature(enable = "neon")]
pub unsafe fn tile_k<const DOT: bool>(kind: QuantKind, w_rows: &[&[u8]], x_rows: &[&[u8]], out: &mut [f32; 16]) {
    k_tile::tile_k(kind, w_rows, x_rows, out, k_tile::codes, |codes, xb| {
        sub_sums::<DOT>(codes, xb)
    })
}
