//! Dot products of an f32 activation row with a weight row.

use half::{bf16, f16};

/// Lanes of independent partial sums: breaks the add dependency chain so the
/// loop vectorizes, and keeps the summation order fixed (deterministic).
const LANES: usize = 16;

/// Elements per block of the inner dimension: lane sums are taken at the end
/// of each block and the block sums added in order, so that the tile kernel
/// (`simd::float_tile`) can keep one block of several activation rows in L1
/// while many weight rows pass, and still give these bits.
pub const BLOCK: usize = 512;

/// `sum(a[i] * b[i])` over f32, in blocks of [`BLOCK`]: per block, one fused
/// multiply-add per element into lane `i % 16`, the lanes summed in halves
/// (8, 4, 2, 1), the block's tail (fewer than 16) chained onto that sum with
/// fused multiply-adds; then the block sums added in order. This is the
/// definition every float kernel matches bit for bit (AVX-512 tiles, AVX2 +
/// FMA, and `f32::mul_add` in software where there is neither).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    match crate::simd::isa() {
        crate::simd::Isa::Avx512Vnni => {
            let mut total = 0f32;
            for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
                let mut sum = [[0f32; 1]; 1];
                // SAFETY: the level includes AVX-512F and FMA (detected at
                // run time); both chunks hold `ab.len()` elements.
                unsafe {
                    crate::simd::float_tile::block::<f32, 1, 1>([bb.as_ptr()], [ab.as_ptr()], ab.len(), &mut sum)
                };
                total += sum[0][0];
            }
            return total;
        }
        // SAFETY: the AVX2 level includes FMA, detected at run time.
        crate::simd::Isa::Avx2 => return unsafe { dot_f32_fma(a, b) },
        crate::simd::Isa::Scalar => {}
    }
    dot_f32_scalar(a, b)
}

/// [`dot_f32`] in plain scalar steps (`f32::mul_add`): the twin every SIMD
/// float kernel is tested against.
pub fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    dot_f32_blocks(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_blocks(a, b)
}

#[inline(always)]
fn dot_f32_blocks(a: &[f32], b: &[f32]) -> f32 {
    let mut total = 0f32;
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        total += block_dot(ab, bb);
    }
    total
}

/// One block of [`dot_f32`].
#[inline(always)]
fn block_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let whole = a.len() / LANES * LANES;
    for (x, y) in a[..whole].chunks_exact(LANES).zip(b[..whole].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut sum = sum_in_halves(acc);
    for i in whole..a.len() {
        sum = a[i].mul_add(b[i], sum);
    }
    sum
}

/// A 16-lane accumulator's lanes added in halves (8, 4, 2, 1): the order of
/// every tile kernel's reduction.
#[inline]
pub fn sum_in_halves(mut acc: [f32; LANES]) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            acc[l] += acc[l + half];
        }
        half /= 2;
    }
    acc[0]
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
