//! AVX-512 dequantization of the 32-weight types that have no integer
//! kernel (Q4_1, Q5_0, Q5_1): the float path widens their rows with these.
//! Each weight takes the scalar dequantizer's steps (`quant::q4_1` etc.: a
//! product then a sum, never fused), so the values are the same bits.

use std::arch::x86_64::*;

use crate::quant::{half_at, QuantKind};

/// The 32 codes of a block's 16 nibble bytes at `p` as i32: weights 0-15
/// (low nibbles) and 16-31 (high nibbles).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn nibbles(p: *const u8) -> [__m512i; 2] {
    let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
    let low4 = _mm512_set1_epi32(0xF);
    [_mm512_and_si512(bytes, low4), _mm512_srli_epi32::<4>(bytes)]
}

/// `codes` with 16 added where the fifth bits `qh` (bit j for weight j) are set.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn with_fifth_bits(codes: [__m512i; 2], qh: u32) -> [__m512i; 2] {
    let sixteen = _mm512_set1_epi32(16);
    [
        _mm512_mask_add_epi32(codes[0], qh as u16, codes[0], sixteen),
        _mm512_mask_add_epi32(codes[1], (qh >> 16) as u16, codes[1], sixteen),
    ]
}

/// Dequantizes whole blocks of `kind` (Q4_1, Q5_0 or Q5_1) into `out`;
/// false for the other types.
///
/// # Safety
/// AVX-512F must be present.
#[target_feature(enable = "avx512f")]
pub unsafe fn dequantize(kind: QuantKind, blocks: &[u8], out: &mut [f32]) -> bool {
    let bytes = kind.block_bytes();
    if !matches!(kind, QuantKind::Q4_1 | QuantKind::Q5_0 | QuantKind::Q5_1) {
        return false;
    }
    assert_eq!(blocks.len() / bytes * 32, out.len(), "whole blocks");
    for (b, o) in blocks.chunks_exact(bytes).zip(out.chunks_exact_mut(32)) {
        let d = _mm512_set1_ps(half_at(b, 0));
        let values = match kind {
            QuantKind::Q4_1 => {
                let m = _mm512_set1_ps(half_at(b, 2));
                nibbles(b.as_ptr().add(4)).map(|q| _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(q), d), m))
            }
            QuantKind::Q5_0 => {
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let sixteen = _mm512_set1_epi32(16);
                with_fifth_bits(nibbles(b.as_ptr().add(6)), qh)
                    .map(|q| _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, sixteen)), d))
            }
            _ => {
                let m = _mm512_set1_ps(half_at(b, 2));
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                with_fifth_bits(nibbles(b.as_ptr().add(8)), qh)
                    .map(|q| _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(q), d), m))
            }
        };
        _mm512_storeu_ps(o.as_mut_ptr(), values[0]);
        _mm512_storeu_ps(o.as_mut_ptr().add(16), values[1]);
    }
    true
}
