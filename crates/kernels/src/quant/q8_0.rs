//! Q8_0: 32 weights; f16 scale d, then 32 signed bytes q. w = q·d.

use super::{half_at, put_half};

pub const BYTES: usize = 34;

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    for j in 0..32 {
        out[j] = (b[2 + j] as i8) as f32 * d;
    }
}

pub fn quantize(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_half(b, 0, d);
    for j in 0..32 {
        // round half away from zero, as C's roundf
        b[2 + j] = (x[j] * id).round() as i8 as u8;
    }
}
