//! Q8_K: the activation format of the K-quant dot products (ggml's
//! `block_q8_K`): f32 scale d, 256 signed bytes, and the sums of each run
//! of 16 values as i16 (used to apply the sub-block minimums without
//! touching every value again). Never stored in model files.

pub const BYTES: usize = 292;
pub const BLOCK: usize = 256;

/// Quantizes 256 activations (scale from the value of largest magnitude).
pub fn quantize(x: &[f32], b: &mut [u8]) {
    let mut max = 0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    if max == 0.0 {
        b.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    for j in 0..BLOCK {
        b[4 + j] = ((iscale * x[j]).round().clamp(-127.0, 127.0) as i8) as u8;
    }
    for k in 0..16 {
        let s: i32 = (0..16).map(|l| (b[4 + 16 * k + l] as i8) as i32).sum();
        b[260 + 2 * k..262 + 2 * k].copy_from_slice(&(s as i16).to_le_bytes());
    }
    b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

/// The block's scale.
#[inline]
pub fn d(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Value `j` of the block.
#[inline]
pub fn q(b: &[u8], j: usize) -> i32 {
    (b[4 + j] as i8) as i32
}

/// Sum of values 16k..16k+16.
#[inline]
pub fn bsum(b: &[u8], k: usize) -> i32 {
    i16::from_le_bytes([b[260 + 2 * k], b[261 + 2 * k]]) as i32
}

/// Dequantizes (for tests).
pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = d(b);
    for (j, o) in out.iter_mut().enumerate().take(BLOCK) {
        *o = q(b, j) as f32 * d;
    }
}
