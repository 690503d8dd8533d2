//! Dot products of an f32 activation row with a weight row.

use half::{bf16, f16};

/// Lanes of independent partial sums: breaks the add dependency chain so the
/// loop vectorizes, and keeps the summation order fixed (deterministic).
const LANES: usize = 16;

/// `sum(a[i] * b[i])` over f32: one fused multiply-add per element into
/// 16 lanes, the lanes added in order, then the tail. With AVX2 + FMA
/// (picked at run time) the same steps run eight lanes to a register;
/// without, `f32::mul_add` in software gives the same bits, slowly.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if crate::simd::isa() != crate::simd::Isa::Scalar {
        // SAFETY: the AVX2 level (and above) includes FMA, detected at run time.
        return unsafe { dot_f32_fma(a, b) };
    }
    dot_f32_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_lanes(a, b)
}

#[inline(always)]
fn dot_f32_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.len() / LANES;
    for c in 0..chunks {
        let (x, y) = (&a[c * LANES..][..LANES], &b[c * LANES..][..LANES]);
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut tail = 0f32;
    for i in chunks * LANES..a.len() {
        tail = a[i].mul_add(b[i], tail);
    }
    acc.iter().sum::<f32>() + tail
}

/// Widens f16 values to f32 (the `half` crate picks F16C at run time where
/// the CPU has it).
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    src.convert_to_f32_slice(dst);
}

/// Widens bf16 values to f32 (exact: a shift of the bits).
pub fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((s.to_bits() as u32) << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_f64_on_odd_lengths() {
        for n in [0usize, 1, 15, 16, 17, 63, 100] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot_f32(&a, &b) as f64 - exact).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn half_widening_is_exact() {
        let v = [0.5f32, -1.25, 3.0e-3, 65504.0];
        let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        let mut out = [0f32; 4];
        f16_to_f32(&h, &mut out);
        for (o, h) in out.iter().zip(&h) {
            assert_eq!(*o, h.to_f32());
        }
        bf16_to_f32(&b, &mut out);
        for (o, b) in out.iter().zip(&b) {
            assert_eq!(*o, b.to_f32());
        }
    }
}
