//! AVX-512 quantizers for activation rows (Q8_0 and Q8_K), byte for byte
//! those of `quant::q8_0::quantize` and `quant::q8_k::quantize`: the same
//! scale, the same products, C's `roundf` (half away from zero) done exactly
//! as truncation plus a step where the remainder is at least one half.

use std::arch::x86_64::*;

use crate::quant::{put_half, q8_0, q8_k};

/// `roundf` of each lane: truncate, then step away from zero where the
/// dropped part (exact: x − trunc(x) loses nothing) is at least 0.5.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn round_half_away(v: __m512) -> __m512 {
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let rest = _mm512_abs_ps(_mm512_sub_ps(v, t));
    let step = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(rest, _mm512_set1_ps(0.5));
    // ±1 with v's sign
    let one = _mm512_or_ps(_mm512_set1_ps(1.0), _mm512_and_ps(v, _mm512_set1_ps(-0.0)));
    _mm512_mask_add_ps(t, step, t, one)
}

/// Quantizes a row of activations to Q8_0 blocks (`x.len()` a multiple of 32).
///
/// # Safety
/// The CPU must support AVX-512 F, BW and DQ.
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
pub unsafe fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), x.len() / 32 * q8_0::BYTES, "Q8_0 row size");
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(q8_0::BYTES)) {
        let v = [_mm512_loadu_ps(xb.as_ptr()), _mm512_loadu_ps(xb.as_ptr().add(16))];
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_half(b, 0, d);
        for (h, &v) in v.iter().enumerate() {
            let q = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(v, _mm512_set1_ps(id))));
            // saturating to i8, as Rust's float-to-int cast
            _mm_storeu_si128(b.as_mut_ptr().add(2 + 16 * h) as *mut __m128i, _mm512_cvtsepi32_epi8(q));
        }
    }
}

/// Quantizes one block of 256 activations to Q8_K.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and DQ.
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
pub unsafe fn quantize_q8_k(x: &[f32], b: &mut [u8]) {
    assert!(x.len() == q8_k::BLOCK && b.len() == q8_k::BYTES, "Q8_K block size");
    let mut amax = _mm512_setzero_ps();
    for c in 0..16 {
        amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(x.as_ptr().add(16 * c))));
    }
    let amax = _mm512_reduce_max_ps(amax);
    if amax == 0.0 {
        b.fill(0);
        return;
    }
    // the first value of that magnitude, with its sign (the scalar scan keeps the first)
    let max = *x
        .iter()
        .find(|v| v.abs() == amax)
        .expect("the maximum is one of the values");
    let iscale = -127.0 / max;
    for c in 0..16 {
        let v = _mm512_mul_ps(_mm512_set1_ps(iscale), _mm512_loadu_ps(x.as_ptr().add(16 * c)));
        let r = _mm512_min_ps(
            _mm512_max_ps(round_half_away(v), _mm512_set1_ps(-127.0)),
            _mm512_set1_ps(127.0),
        );
        let q = _mm512_cvtps_epi32(r);
        _mm_storeu_si128(b.as_mut_ptr().add(4 + 16 * c) as *mut __m128i, _mm512_cvtsepi32_epi8(q));
        // each run of 16 values is one register: its sum is the block's bsum
        let sum = _mm512_reduce_add_epi32(q) as i16;
        b[260 + 2 * c..262 + 2 * c].copy_from_slice(&sum.to_le_bytes());
    }
    b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}
