//! Q6_K: 256 weights in 16 sub-blocks of 16 with signed 8-bit scales:
//! 128 bytes ql (low nibbles), 64 bytes qh (two high bits each), 16 scales,
//! then f16 d (last). w = d·scale·(q − 32).

use super::{half_at, put_half};

pub const BYTES: usize = 210;

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let o = &mut out[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            o[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            o[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            o[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            o[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// 16 sub-blocks of 16: each gets the scale mapping its largest-magnitude
/// value to −32 (as Q4_0 does), the scales are stored as i8 times d.
pub fn quantize(x: &[f32], b: &mut [u8]) {
    let mut scales = [0f32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let mut max = 0f32;
        for &v in &x[16 * i..16 * i + 16] {
            if v.abs() > max.abs() {
                max = v;
            }
        }
        *s = max / -32.0;
    }
    let amax = scales.iter().fold(0f32, |m, s| m.max(s.abs()));
    let d = half::f16::from_f32(amax / 127.0).to_f32();
    put_half(b, 208, d);
    let mut q = [0u8; 256];
    for i in 0..16 {
        let sc = if d > 0.0 {
            (scales[i] / d).round().clamp(-128.0, 127.0) as i8
        } else {
            0
        };
        b[192 + i] = sc as u8;
        let s = d * sc as f32;
        for l in 0..16 {
            let e = 16 * i + l;
            q[e] = if s != 0.0 {
                ((x[e] / s).round() + 32.0).clamp(0.0, 63.0) as u8
            } else {
                32
            };
        }
    }
    b[..192].fill(0);
    for n in 0..2 {
        for l in 0..32 {
            let (q1, q2, q3, q4) = (
                q[128 * n + l],
                q[128 * n + l + 32],
                q[128 * n + l + 64],
                q[128 * n + l + 96],
            );
            b[64 * n + l] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            b[64 * n + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            b[128 + 32 * n + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}
