//! Our exponential, for attention's softmax weights and the MLP's SiLU:
//! the same operations in the same order on every path, so its bits do not
//! depend on the CPU ([`exp`] is the scalar twin; [`x86::exp16`] gives its
//! bits on sixteen lanes). The C library's `expf` is one call per value and
//! was ~12% of a 2048-token prompt in the softmax alone.
//!
//! Cephes' `expf` method (the coefficients are its published ones): n =
//! round(x · log₂e), r = x − n · ln 2 with ln 2 in two parts (the first
//! exact in few bits, so n · LN2_HI is exact), e^r ≈ 1 + r + r² · P(r) with
//! P of degree 5 on |r| ≤ ln2/2, then scaled by 2ⁿ built in the exponent
//! bits. Within 0.98 ulp of the exact value over the range (tested).
//!
//! Below −87 the result is zero: e^−87 is 1.6·10⁻³⁸, just above f32's
//! smallest normal, and a subnormal result would cost each multiplication
//! by it a microcode assist (and means nothing beside values near 1). Above
//! 88 it is infinite (e^88.72 is f32's largest value).

const FLUSH_BELOW: f32 = -87.0;
const INFINITE_ABOVE: f32 = 88.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 · 2²³: adding it rounds an f32 of magnitude below 2²² to an integer.
const ROUNDER: f32 = 12_582_912.0;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// P's coefficients from the highest degree down.
const P: [f32; 6] = [
    1.987_569_2e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    // Cephes' 5.0000001201e-1, which is 0.5 as an f32
    0.5,
];

/// e^x as the module doc says; a NaN gives zero.
#[inline]
pub fn exp(x: f32) -> f32 {
    if x > INFINITE_ABOVE {
        return f32::INFINITY;
    }
    // a NaN too, as the SIMD path's ordered comparison leaves it out
    if x < FLUSH_BELOW || x.is_nan() {
        return 0.0;
    }
    let n = x.mul_add(LOG2E, ROUNDER) - ROUNDER;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = P[0];
    for &c in &P[1..] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    // n is an integer in -126..=127 here: 2ⁿ is a normal f32
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// [`exp`] on sixteen lanes, lane for lane the same operations.
    ///
    /// # Safety
    /// AVX-512 F and FMA must be available.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    pub(crate) unsafe fn exp16(x: __m512) -> __m512 {
        let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(FLUSH_BELOW));
        let infinite = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(INFINITE_ABOVE));
        // lanes outside the range compute on a value inside it, then are replaced
        let x = _mm512_mask_mov_ps(_mm512_setzero_ps(), keep & !infinite, x);
        let rounder = _mm512_set1_ps(ROUNDER);
        let n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), rounder), rounder);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
        let mut p = _mm512_set1_ps(P[0]);
        for &c in &P[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
        let e = _mm512_maskz_mov_ps(keep, _mm512_mul_ps(y, _mm512_castsi512_ps(bits)));
        _mm512_mask_mov_ps(e, infinite, _mm512_set1_ps(f32::INFINITY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_one_ulp_of_the_exact_exponential() {
        let mut worst = 0f64;
        let mut x = FLUSH_BELOW;
        while x <= INFINITE_ABOVE {
            let got = exp(x) as f64;
            let exact = (x as f64).exp();
            let ulp = (exact as f32).to_bits();
            let ulp = (f32::from_bits(ulp + 1) - f32::from_bits(ulp)) as f64;
            worst = worst.max((got - exact).abs() / ulp);
            x += 0.000_37;
        }
        assert!(worst < 1.0, "{worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-87.5), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::NAN), 0.0);
        assert_eq!(exp(88.5), f32::INFINITY);
        assert!(exp(88.0).is_finite());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_lanes_give_the_twins_bits() {
        if crate::simd::isa() != crate::simd::Isa::Avx512Vnni {
            return;
        }
        let mut xs: Vec<f32> = (0..20_000).map(|i| -100.0 + i as f32 * 0.0097).collect();
        xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -87.0, 88.0, -0.0, 1e-30]);
        for chunk in xs.chunks(16) {
            let mut lanes = [0f32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let mut got = [0f32; 16];
            // SAFETY: the VNNI level implies AVX-512 F and FMA.
            unsafe {
                std::arch::x86_64::_mm512_storeu_ps(
                    got.as_mut_ptr(),
                    x86::exp16(std::arch::x86_64::_mm512_loadu_ps(lanes.as_ptr())),
                )
            };
            for (g, &x) in got.iter().zip(&lanes) {
                assert_eq!(g.to_bits(), exp(x).to_bits(), "exp({x})");
            }
        }
    }
}
