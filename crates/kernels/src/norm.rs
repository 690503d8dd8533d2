//! Normalization layers.

/// RMSNorm of one row (PHI3_FAMILY.md §2.2.1): `y = x / sqrt(mean(x²) + eps) · w`,
/// with the mean accumulated in f64 to stay close to the reference's f32 sum
/// whatever the row length.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), weight.len());
    assert_eq!(x.len(), out.len());
    let mean_sq = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / ((mean_sq as f32) + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = (v * inv) * w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_constant_row_is_weight() {
        let x = [2.0f32; 8];
        let w = [0.5f32, 1.0, 1.5, 2.0, 0.5, 1.0, 1.5, 2.0];
        let mut out = [0f32; 8];
        rms_norm(&x, &w, 0.0, &mut out);
        for (o, w) in out.iter().zip(&w) {
            assert!((o - w).abs() < 1e-6);
        }
    }
}
