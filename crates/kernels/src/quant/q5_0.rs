//! Q5_0: 32 weights; f16 scale d, 4 bytes qh holding the fifth bit of each
//! weight (bit j for weight j), 16 bytes of low nibbles as Q4_0.
//! w = (q − 16)·d.

use super::{half_at, put_half};

pub const BYTES: usize = 22;

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        out[j] = (((b[6 + j] & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
        out[j + 16] = (((b[6 + j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

pub fn quantize(x: &[f32], b: &mut [u8]) {
    let mut max = 0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_half(b, 0, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
        let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
        b[6 + j] = (q0 & 0xF) | ((q1 & 0xF) << 4);
        qh |= ((q0 as u32 >> 4) & 1) << j;
        qh |= ((q1 as u32 >> 4) & 1) << (j + 16);
    }
    b[2..6].copy_from_slice(&qh.to_le_bytes());
}
