//! Q4_0: 32 weights; f16 scale d, then 16 bytes of 4-bit values q (offset 8):
//! low nibbles are weights 0..16, high nibbles weights 16..32. w = (q − 8)·d.

use super::{half_at, put_half};

pub const BYTES: usize = 18;

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    for j in 0..16 {
        out[j] = ((b[2 + j] & 0xF) as i32 - 8) as f32 * d;
        out[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// ggml's reference: the signed value of largest magnitude maps to −8.
pub fn quantize(x: &[f32], b: &mut [u8]) {
    let mut max = 0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_half(b, 0, d);
    for j in 0..16 {
        let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        b[2 + j] = q0 | (q1 << 4);
    }
}
