//! Activation functions.

/// `silu(z) = z · sigmoid(z)`.
#[inline]
pub fn silu(z: f32) -> f32 {
    z / (1.0 + (-z).exp())
}

/// SwiGLU over a fused `[gate ‖ up]` row of length 2·I (PHI3_FAMILY.md §2.2.7:
/// gate is the first half): `out[i] = up[i] · silu(gate[i])`.
pub fn swiglu(gate_up: &[f32], out: &mut [f32]) {
    let i = out.len();
    assert_eq!(gate_up.len(), 2 * i);
    let (gate, up) = gate_up.split_at(i);
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = u * silu(g);
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
    fn softmax_sums_to_one() {
        let mut v = [1.0f32, 2.0, 3.0, -1e30];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(v[3], 0.0);
    }
}
