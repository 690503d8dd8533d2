//! AVX2 + FMA kernels.

use std::arch::x86_64::*;

use crate::quant::{f16_table, q4_0, q4_k, q6_k, q8_0, q8_k, scale_min_k4};

/// Σ over 32 lanes of a·b for signed bytes a, b, as 8 i32 partial sums.
/// maddubs needs an unsigned first operand: use |a| and b·sign(a).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8x32(a: __m256i, b: __m256i) -> __m256i {
    let abs_a = _mm256_sign_epi8(a, a);
    let b_signed = _mm256_sign_epi8(b, a);
    let pairs = _mm256_maddubs_epi16(abs_a, b_signed);
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The 32 weights of a Q4_0 block as signed bytes (−8..=7), in order:
/// low nibbles are weights 0..16, high nibbles 16..32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q4_0_values(block: &[u8]) -> __m256i {
    let raw = _mm_loadu_si128(block.as_ptr().add(2) as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q8_values(block: &[u8]) -> __m256i {
    _mm256_loadu_si256(block.as_ptr().add(2) as *const __m256i)
}

/// Two blocks per step with two accumulators, so the multiply-adds of
/// consecutive blocks overlap instead of waiting on one another.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_blocks<const Q4: bool>(w: &[u8], x: &[u8]) -> f32 {
    let wbytes = if Q4 { q4_0::BYTES } else { q8_0::BYTES };
    // monomorphised (not a function pointer) so the unpacking inlines
    let values = |b: &[u8]| if Q4 { q4_0_values(b) } else { q8_values(b) };
    let n = w.len() / wbytes;
    assert_eq!(x.len(), n * q8_0::BYTES, "activation blocks");
    let table = f16_table();
    let scale = |b: &[u8]| table[u16::from_le_bytes([b[0], b[1]]) as usize];
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut wi = w.chunks_exact(2 * wbytes);
    let mut xi = x.chunks_exact(2 * q8_0::BYTES);
    for (w2, x2) in (&mut wi).zip(&mut xi) {
        let (wa, wb) = w2.split_at(wbytes);
        let (xa, xb) = x2.split_at(q8_0::BYTES);
        let sa = _mm256_cvtepi32_ps(dot_i8x32(values(wa), q8_values(xa)));
        let sb = _mm256_cvtepi32_ps(dot_i8x32(values(wb), q8_values(xb)));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(scale(wa) * scale(xa)), sa, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(scale(wb) * scale(xb)), sb, acc1);
    }
    if !wi.remainder().is_empty() {
        let (wa, xa) = (wi.remainder(), xi.remainder());
        let sa = _mm256_cvtepi32_ps(dot_i8x32(values(wa), q8_values(xa)));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(scale(wa) * scale(xa)), sa, acc0);
    }
    hsum(_mm256_add_ps(acc0, acc1))
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q4_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    dot_blocks::<true>(w, x)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q8_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    dot_blocks::<false>(w, x)
}

/// Σ over 32 lanes of u·x (u unsigned ≤ 63, x signed), each 16-lane
/// half multiplied by its own 16-bit scale, as 8 i32 sums.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scaled_dot_u8(u: __m256i, x: __m256i, scales: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), scales)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q4_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let half = |b: &[u8]| table[u16::from_le_bytes([b[0], b[1]]) as usize];
    let low = _mm256_set1_epi8(0x0F);
    let mut sum = 0f32;
    for (wb, xb) in w.chunks_exact(q4_k::BYTES).zip(x.chunks_exact(q8_k::BYTES)) {
        let (d, dmin) = (half(wb), half(&wb[2..]));
        let (s, qs) = (&wb[4..16], &wb[16..144]);
        let xq = &xb[4..260];
        let mut acc = _mm256_setzero_si256();
        let mut mins = 0i32;
        for c in 0..4 {
            let (sc0, m0) = scale_min_k4(2 * c, s);
            let (sc1, m1) = scale_min_k4(2 * c + 1, s);
            let raw = _mm256_loadu_si256(qs.as_ptr().add(32 * c) as *const __m256i);
            let q0 = _mm256_and_si256(raw, low);
            let q1 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
            let x0 = _mm256_loadu_si256(xq.as_ptr().add(64 * c) as *const __m256i);
            let x1 = _mm256_loadu_si256(xq.as_ptr().add(64 * c + 32) as *const __m256i);
            acc = _mm256_add_epi32(acc, scaled_dot_u8(q0, x0, _mm256_set1_epi16(sc0 as i16)));
            acc = _mm256_add_epi32(acc, scaled_dot_u8(q1, x1, _mm256_set1_epi16(sc1 as i16)));
            let xs0 = q8_k::bsum(xb, 4 * c) + q8_k::bsum(xb, 4 * c + 1);
            let xs1 = q8_k::bsum(xb, 4 * c + 2) + q8_k::bsum(xb, 4 * c + 3);
            mins += m0 as i32 * xs0 + m1 as i32 * xs1;
        }
        let dx = q8_k::d(xb);
        sum += dx * (d * hsum_i32(acc) as f32 - dmin * mins as f32);
    }
    sum
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q6_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let low = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(0x03);
    let m30 = _mm256_set1_epi8(0x30);
    let mut sum = 0f32;
    for (wb, xb) in w.chunks_exact(q6_k::BYTES).zip(x.chunks_exact(q8_k::BYTES)) {
        let d = table[u16::from_le_bytes([wb[208], wb[209]]) as usize];
        let xq = &xb[4..260];
        let mut acc = _mm256_setzero_si256();
        let mut mins = 0i32;
        for n in 0..2 {
            let ql0 = _mm256_loadu_si256(wb.as_ptr().add(64 * n) as *const __m256i);
            let ql1 = _mm256_loadu_si256(wb.as_ptr().add(64 * n + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(wb.as_ptr().add(128 + 32 * n) as *const __m256i);
            let sc = &wb[192 + 8 * n..200 + 8 * n];
            // the four groups of 32 weights of this half (GGUF_PHI3.md §7, Q6_K)
            let groups = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, low),
                    _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, low),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
                    _mm256_and_si256(qh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                ),
            ];
            for (g, q) in groups.into_iter().enumerate() {
                let xv = _mm256_loadu_si256(xq.as_ptr().add(128 * n + 32 * g) as *const __m256i);
                let (sa, sb) = ((sc[2 * g] as i8) as i16, (sc[2 * g + 1] as i8) as i16);
                // low 16 lanes belong to sub-block 2g, high 16 to 2g+1
                let scales = _mm256_set_m128i(_mm_set1_epi16(sb), _mm_set1_epi16(sa));
                acc = _mm256_add_epi32(acc, scaled_dot_u8(q, xv, scales));
                mins += sa as i32 * q8_k::bsum(xb, 8 * n + 2 * g) + sb as i32 * q8_k::bsum(xb, 8 * n + 2 * g + 1);
            }
        }
        sum += q8_k::d(xb) * d * (hsum_i32(acc) - 32 * mins) as f32;
    }
    sum
}
