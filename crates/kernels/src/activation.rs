//! Activation functions.

/// `silu(z) = z · sigmoid(z) = z / (1 + e^−z)`, with our exponential
/// (`crate::exp`: the same bits on every path).
#[inline]
pub fn silu(z: f32) -> f32 {
    z / (1.0 + crate::exp::exp(-z))
}

/// SwiGLU over a fused `[gate ‖ up]` row of length 2·I (PHI3_FAMILY.md §2.2.7:
/// gate is the first half): `out[i] = up[i] · silu(gate[i])`.
pub fn swiglu(gate_up: &[f32], out: &mut [f32]) {
    let i = out.len();
    assert_eq!(gate_up.len(), 2 * i);
    let (gate, up) = gate_up.split_at(i);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::isa() == crate::simd::Isa::Avx512Vnni {
        // SAFETY: the VNNI level implies AVX-512 F and FMA; the three slices
        // have `i` values each.
        return unsafe { swiglu16(gate, up, out) };
    }
    swiglu_scalar(gate, up, out);
}

/// The twin of [`swiglu`]'s SIMD path.
pub fn swiglu_scalar(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = u * silu(g);
    }
}

/// [`swiglu_scalar`] sixteen values at a time, the same operations per lane.
///
/// # Safety
/// AVX-512 F and FMA must be available; `gate`, `up` and `out` have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn swiglu16(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len();
    let one = _mm512_set1_ps(1.0);
    for i in (0..n).step_by(16) {
        let mask = crate::simd::tail_mask16(n - i);
        let g = _mm512_maskz_loadu_ps(mask, gate.as_ptr().add(i));
        let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(i));
        let e = crate::exp::x86::exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        let silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask, _mm512_mul_ps(u, silu));
    }
}

/// In-place softmax, computed in f32 with the maximum subtracted first.
pub fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0f32;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in v.iter_mut() {
        *x *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_takes_gate_from_first_half() {
        let gu = [1.0f32, 0.0, 2.0, 3.0];
        let mut out = [0f32; 2];
        swiglu(&gu, &mut out);
        assert!((out[0] - 2.0 * silu(1.0)).abs() < 1e-7);
        assert_eq!(out[1], 0.0);
    }

    #[test]
    fn swiglu_gives_its_twins_bits_and_stays_near_the_exact_value() {
        for n in [1usize, 15, 16, 17, 100, 8192] {
            let gu: Vec<f32> = (0..2 * n)
                .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / (1 << 24) as f32 * 40.0 - 20.0)
                .collect();
            let (mut simd, mut twin) = (vec![0f32; n], vec![0f32; n]);
            swiglu(&gu, &mut simd);
            swiglu_scalar(&gu[..n], &gu[n..], &mut twin);
            for ((s, t), (&g, &u)) in simd.iter().zip(&twin).zip(gu[..n].iter().zip(&gu[n..])) {
                assert_eq!(s.to_bits(), t.to_bits(), "silu({g}) · {u}");
                let exact = u as f64 * g as f64 / (1.0 + (-(g as f64)).exp());
                assert!(
                    (*s as f64 - exact).abs() <= 4e-7 * exact.abs() + 1e-30,
                    "{s} vs {exact}"
                );
            }
        }
        // far out: silu(z) → z above, → -0 below
        assert_eq!(silu(100.0), 100.0);
        assert_eq!(silu(-100.0), 0.0);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut v = [1.0f32, 2.0, 3.0, -1e30];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(v[3], 0.0);
    }
}
