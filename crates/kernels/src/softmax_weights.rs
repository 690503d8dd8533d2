//! Attention's softmax weights: `e_i = exp(s_i − max s)` for one query's
//! scores, and their sum.
//!
//! Why not `f32::exp`: the C library's `expf` is one call per key, about a
//! third of a long prompt's attention (pp2048: 7.4% of all samples in
//! `__expf_fma`, 4.9% in the loop around it). Here the exponential is a
//! polynomial (Cephes' `expf`: range reduction by ln 2 in two parts, a
//! degree-5 polynomial for e^r − 1 − r on |r| ≤ ln2/2; within 2 ulp of the
//! exact value, tested) computed by the same operations in the same order
//! on every path: [`weights_scalar`] is the twin, and the AVX-512 path gives
//! its bits, sixteen keys at a time.
//!
//! The sum is kept in sixteen partial sums, key `i` in lane `i mod 16` in
//! key order, then added pairwise ((lane j + lane j+8), then +4, +2, +1):
//! a fixed order, whichever path ran.
//!
//! Weights of scores more than 87 below the maximum are zero: e^−87 is
//! 1.6·10⁻³⁸, just above f32's smallest normal; below it a weight would be
//! subnormal, moving an output by under 2⁻¹²⁶·|v| while each multiplication
//! by it costs a microcode assist of about a hundred cycles (pp512 on
//! random weights, whose scores spread widely, ran 1.35× slower for them).

/// Scores this far below the maximum get weight zero.
const FLUSH_BELOW: f32 = -87.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 · 2²³: adding it rounds an f32 of magnitude below 2²² to an integer.
const ROUNDER: f32 = 12_582_912.0;
/// ln 2 in two parts (Cephes): the first exact in few bits, so n · LN2_HI is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// e^r ≈ 1 + r + r² · P(r), P's coefficients from the highest degree down (Cephes `expf`).
const P: [f32; 6] = [
    1.987_569_2e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    // Cephes' 5.0000001201e-1, which is 0.5 as an f32
    0.5,
];
/// Partial sums of the denominator.
const LANES: usize = 16;

/// exp(x) for FLUSH_BELOW ≤ x ≤ 0; the operations [`exp16`] applies to each lane.
#[inline]
fn exp_scalar(x: f32) -> f32 {
    let n = x.mul_add(LOG2E, ROUNDER) - ROUNDER;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = P[0];
    for &c in &P[1..] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    // n is an integer in -126..=0 here: 2ⁿ is a normal f32
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Replaces each score by its weight (module doc) and returns their sum,
/// in the fixed order of the module doc. Does nothing to an empty row.
pub fn weights(scores: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::isa() == crate::simd::Isa::Avx512Vnni {
        // SAFETY: the VNNI level implies AVX-512 F and FMA.
        return unsafe { x86::weights16(scores) };
    }
    weights_scalar(scores)
}

/// The twin of [`weights`]'s SIMD path, on every machine.
pub fn weights_scalar(scores: &mut [f32]) -> f32 {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut lanes = [0f32; LANES];
    for (i, s) in scores.iter_mut().enumerate() {
        let x = *s - max;
        // as the SIMD path's ordered comparison: a NaN gets weight zero too
        *s = if x >= FLUSH_BELOW { exp_scalar(x) } else { 0.0 };
        lanes[i % LANES] += *s;
    }
    pairwise(lanes)
}

/// Lanes j and j + width/2 added, halving until one is left.
#[inline]
fn pairwise(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            lanes[j] += lanes[j + width];
        }
    }
    lanes[0]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// [`exp_scalar`] on sixteen lanes, lane for lane the same operations.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn exp16(x: __m512) -> __m512 {
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
        _mm512_mul_ps(y, _mm512_castsi512_ps(bits))
    }

    /// [`weights`] sixteen keys at a time; the last keys under a mask.
    ///
    /// # Safety
    /// AVX-512 F and FMA must be available.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn weights16(scores: &mut [f32]) -> f32 {
        let n = scores.len();
        let p = scores.as_mut_ptr();
        let mask_at = |i: usize| -> __mmask16 { ((1u32 << (n - i).min(LANES)) - 1) as __mmask16 };
        let low = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut m = low;
        for i in (0..n).step_by(LANES) {
            m = _mm512_max_ps(m, _mm512_mask_loadu_ps(low, mask_at(i), p.add(i)));
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
        let flush = _mm512_set1_ps(FLUSH_BELOW);
        let mut sums = _mm512_setzero_ps();
        for i in (0..n).step_by(LANES) {
            let mask = mask_at(i);
            let x = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p.add(i)), max);
            let keep = _mm512_mask_cmp_ps_mask::<_CMP_GE_OQ>(mask, x, flush);
            let e = _mm512_maskz_mov_ps(keep, exp16(x));
            _mm512_mask_storeu_ps(p.add(i), mask, e);
            sums = _mm512_add_ps(sums, e);
        }
        let mut lanes = [0f32; LANES];
        _mm512_storeu_ps(lanes.as_mut_ptr(), sums);
        pairwise(lanes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(n: usize, spread: f32, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = i.wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503)) >> 8;
                (h as f32 / (1 << 24) as f32 - 0.5) * spread
            })
            .collect()
    }

    #[test]
    fn the_exponential_is_within_two_ulp_of_the_exact_one() {
        let mut worst = 0f64;
        let mut x = FLUSH_BELOW;
        while x <= 0.0 {
            let got = exp_scalar(x) as f64;
            let exact = (x as f64).exp();
            let ulp = (exact as f32).to_bits();
            let ulp = (f32::from_bits(ulp + 1) - f32::from_bits(ulp)) as f64;
            worst = worst.max((got - exact).abs() / ulp);
            x += 0.000_37;
        }
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(exp_scalar(0.0), 1.0);
    }

    #[test]
    fn the_simd_path_gives_the_twins_bits() {
        for n in [0usize, 1, 5, 15, 16, 17, 31, 100, 2049] {
            for spread in [0.1f32, 30.0, 400.0] {
                let mut simd = scores(n, spread, n as u32);
                let mut twin = simd.clone();
                let (a, b) = (weights(&mut simd), weights_scalar(&mut twin));
                assert_eq!(a.to_bits(), b.to_bits(), "n {n} spread {spread}");
                let (sb, tb): (Vec<u32>, Vec<u32>) = (
                    simd.iter().map(|v| v.to_bits()).collect(),
                    twin.iter().map(|v| v.to_bits()).collect(),
                );
                assert_eq!(sb, tb, "n {n} spread {spread}");
            }
        }
    }

    #[test]
    fn weights_are_a_softmax_and_far_scores_get_zero() {
        let mut s = vec![1.0f32, 3.0, -2.0, 3.0, -90.0, -84.5];
        let sum = weights(&mut s);
        let exact: Vec<f64> = [-2.0f64, 0.0, -5.0, 0.0].iter().map(|x| x.exp()).collect();
        for (w, e) in s.iter().zip(&exact) {
            assert!((*w as f64 - e).abs() <= 2e-7 * e, "{w} vs {e}");
        }
        // 93 below the maximum: flushed; 87.5 below: e^-87.5 is subnormal, flushed
        assert_eq!(s[4], 0.0);
        assert_eq!(s[5], 0.0);
        assert!(((sum as f64) - exact.iter().sum::<f64>()).abs() < 1e-6);
        // the maximum's weight is exactly 1
        assert_eq!(s[1], 1.0);
    }
}
