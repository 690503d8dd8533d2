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

    use crate::quant::{half_at, q4_0, q8_0};

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

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
        let n = w.len() / q4_0::BYTES;
        assert_eq!(x.len(), n * q8_0::BYTES);
        let mut acc = _mm256_setzero_ps();
        let low_mask = _mm256_set1_epi8(0x0F);
        let eight = _mm256_set1_epi8(8);
        for b in 0..n {
            let wb = &w[b * q4_0::BYTES..];
            let xb = &x[b * q8_0::BYTES..];
            // 16 bytes of nibbles → 32 values: low nibbles are weights 0..16,
            // high nibbles 16..32
            let raw = _mm_loadu_si128(wb.as_ptr().add(2) as *const __m128i);
            let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
            let q = _mm256_sub_epi8(_mm256_and_si256(both, low_mask), eight);
            let xv = _mm256_loadu_si256(xb.as_ptr().add(2) as *const __m256i);
            let sums = _mm256_cvtepi32_ps(dot_i8x32(q, xv));
            let d = _mm256_set1_ps(half_at(wb, 0) * half_at(xb, 0));
            acc = _mm256_fmadd_ps(d, sums, acc);
        }
        hsum(acc)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
        let n = w.len() / q8_0::BYTES;
        assert_eq!(x.len(), n * q8_0::BYTES);
        let mut acc = _mm256_setzero_ps();
        for b in 0..n {
            let wb = &w[b * q8_0::BYTES..];
            let xb = &x[b * q8_0::BYTES..];
            let wv = _mm256_loadu_si256(wb.as_ptr().add(2) as *const __m256i);
            let xv = _mm256_loadu_si256(xb.as_ptr().add(2) as *const __m256i);
            let sums = _mm256_cvtepi32_ps(dot_i8x32(wv, xv));
            let d = _mm256_set1_ps(half_at(wb, 0) * half_at(xb, 0));
            acc = _mm256_fmadd_ps(d, sums, acc);
        }
        hsum(acc)
    }
}
