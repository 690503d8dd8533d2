//! Q5_1: 32 weights; f16 scale d, f16 minimum m, 4 bytes of fifth bits, 16
//! bytes of low nibbles (as Q5_0). w = q·d + m.

use super::{half_at, put_half};

pub const BYTES: usize = 24;

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        out[j] = ((b[8 + j] & 0xF) as u32 | h0) as f32 * d + m;
        out[j + 16] = ((b[8 + j] >> 4) as u32 | h1) as f32 * d + m;
    }
}

pub fn quantize(x: &[f32], b: &mut [u8]) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_half(b, 0, d);
    put_half(b, 2, min);
    let mut qh = 0u32;
    for j in 0..16 {
        let q0 = (((x[j] - min) * id + 0.5) as u8).min(31);
        let q1 = (((x[j + 16] - min) * id + 0.5) as u8).min(31);
        b[8 + j] = (q0 & 0xF) | ((q1 & 0xF) << 4);
        qh |= ((q0 as u32 >> 4) & 1) << j;
        qh |= ((q1 as u32 >> 4) & 1) << (j + 16);
    }
    b[4..8].copy_from_slice(&qh.to_le_bytes());
}
