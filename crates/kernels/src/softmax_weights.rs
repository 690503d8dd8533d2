//! Attention's softmax weights: `e_i = exp(s_i − max s)` for one query's
//! scores, and their sum.
//!
//! Why not `f32::exp`: the C library's `expf` is one call per key, about a
//! third of a long prompt's attention (pp2048: 7.4% of all samples in
//! `__expf_fma`, 4.9% in the loop around it). Here the exponential is
//! [`crate::exp`]'s polynomial, the same operations in the same order on
//! every path: [`weights_scalar`] is the twin, and the AVX-512 path gives
//! its bits, sixteen keys at a time.
//!
//! The sum is kept in sixteen partial sums, key `i` in lane `i mod 16` in
//! key order, then added pairwise ((lane j + lane j+8), then +4, +2, +1):
//! a fixed order, whichever path ran.
//!
//! Weights of scores more than 87 below the maximum are zero (the
//! exponential's flush, `crate::exp`): below e^−87 a weight would be
//! subnormal, moving an output by under 2⁻¹²⁶·|v| while each multiplication
//! by it costs a microcode assist of about a hundred cycles (pp512 on
//! random weights, whose scores spread widely, ran 1.35× slower for them).

/// Partial sums of the denominator.
const LANES: usize = 16;

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
        *s = crate::exp::exp(*s - max);
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

    /// [`weights`] sixteen keys at a time; the last keys under a mask.
    ///
    /// # Safety
    /// AVX-512 F and FMA must be available.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn weights16(scores: &mut [f32]) -> f32 {
        let n = scores.len();
        let p = scores.as_mut_ptr();
        let mask_at = |i: usize| crate::simd::tail_mask16(n - i);
        let low = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut m = low;
        for i in (0..n).step_by(LANES) {
            m = _mm512_max_ps(m, _mm512_mask_loadu_ps(low, mask_at(i), p.add(i)));
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
        let mut sums = _mm512_setzero_ps();
        for i in (0..n).step_by(LANES) {
            let mask = mask_at(i);
            let x = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p.add(i)), max);
            let e = _mm512_maskz_mov_ps(mask, crate::exp::x86::exp16(x));
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
