//! Q4_1: 32 weights; f16 scale d, f16 minimum m, 16 bytes of 4-bit values
//! (layout as Q4_0). w = q·d + m.

use super::{half_at, put_half};

pub const BYTES: usize = 20;

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for j in 0..16 {
        out[j] = (b[4 + j] & 0xF) as f32 * d + m;
        out[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
    }
}

pub fn quantize(x: &[f32], b: &mut [u8]) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_half(b, 0, d);
    put_half(b, 2, min);
    for j in 0..16 {
        let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
        b[4 + j] = q0 | (q1 << 4);
    }
}
