//! x86-64 AVX2 kernels for Q2_K, Q3_K and Q5_K × Q8_K activations
//! (`k_tile`), for CPUs without AVX-512 VNNI: the sub-block sums Σ code·x
//! with `vpmaddubsw` (unsigned codes × signed activations, pairs within
//! i16) and `vpmaddwd`. The same bits as the blockwise scalar twins and
//! the VNNI tiles. (Q4_K and Q6_K keep their own AVX2 kernels on this level.)

use std::arch::x86_64::*;

use super::k_tile;
use crate::quant::QuantKind;

/// The 16 sums Σ code·x over sub-blocks of 16 of one superblock.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sub_sums(codes: &[u8; 256], xb: &[u8]) -> [i32; 16] {
    let x = xb[4..260].as_ptr();
    let ones = _mm256_set1_epi16(1);
    let mut out = [0i32; 16];
    for i in 0..8 {
        // sub-blocks 2i (low 128 bits) and 2i + 1 (high)
        let c = _mm256_loadu_si256(codes.as_ptr().add(32 * i) as *const __m256i);
        let v = _mm256_loadu_si256(x.add(32 * i) as *const __m256i);
        let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(c, v), ones);
        let pairs = _mm256_hadd_epi32(lanes, lanes);
        let sums = _mm256_hadd_epi32(pairs, pairs);
        out[2 * i] = _mm256_extract_epi32::<0>(sums);
        out[2 * i + 1] = _mm256_extract_epi32::<4>(sums);
    }
    out
}

/// Σ w·x over a row of `kind` superblocks and Q8_K blocks.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_k(kind: QuantKind, w: &[u8], x: &[u8]) -> f32 {
    let mut out = [0f32; 16];
    tile_k(kind, &[w], &[x], &mut out);
    out[0]
}

/// Up to 4 × 4 (weight row, activation row) pairs, `out[r * 4 + c]`
/// (`k_tile::tile_k`).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_k(kind: QuantKind, w_rows: &[&[u8]], x_rows: &[&[u8]], out: &mut [f32; 16]) {
    k_tile::tile_k(kind, w_rows, x_rows, out, |codes, xb| sub_sums(codes, xb))
}
