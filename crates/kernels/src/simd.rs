//! Run-time selection of SIMD kernels. Every function here has a scalar twin
//! in `quant::dot` and a test tying the two together (`tests/simd_twins.rs`).

use crate::quant::dot::{dot_q4_0_q8_0_scalar, dot_q8_0_q8_0_scalar};

/// Which instruction set the kernels use on this CPU (decided once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

/// The best instruction set available, or `PHI3_ISA=scalar` to force the
/// scalar kernels (for comparisons).
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var("PHI3_ISA").is_ok_and(|v| v == "scalar") {
            return Isa::Scalar;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
        Isa::Scalar
    })
}

pub fn dot_q4_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA were detected at run time.
        Isa::Avx2 => unsafe { avx2::dot_q4_0_q8_0(w, x) },
        Isa::Scalar => dot_q4_0_q8_0_scalar(w, x),
    }
}

pub fn dot_q8_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA were detected at run time.
        Isa::Avx2 => unsafe { avx2::dot_q8_0_q8_0(w, x) },
        Isa::Scalar => dot_q8_0_q8_0_scalar(w, x),
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    //! AVX2 + FMA kernels.

    use std::arch::x86_64::*;

    use crate::quant::{f16_table, q4_0, q8_0};

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
    unsafe fn dot_blocks(w: &[u8], x: &[u8], wbytes: usize, values: unsafe fn(&[u8]) -> __m256i) -> f32 {
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
        dot_blocks(w, x, q4_0::BYTES, q4_0_values)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
        dot_blocks(w, x, q8_0::BYTES, q8_values)
    }
}
