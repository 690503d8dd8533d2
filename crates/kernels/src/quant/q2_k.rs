//! Q2_K: 256 weights in 16 sub-blocks of 16. 16 bytes of scales (low nibble:
//! scale, high nibble: min), 64 bytes of 2-bit values, f16 d, f16 dmin.
//! Byte l of each 32-byte half h holds weights h·128 + 32·s + l in bits 2s..2s+2.
//! w = d·scale·q − dmin·min.

use super::half_at;

pub const BYTES: usize = 84;

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (half_at(b, 80), half_at(b, 82));
    for half in 0..2 {
        for shift in 0..4 {
            for l in 0..32 {
                let e = half * 128 + shift * 32 + l;
                let sb = scales[e / 16];
                let q = (qs[half * 32 + l] >> (2 * shift)) & 3;
                out[e] = d * (sb & 0xF) as f32 * q as f32 - dmin * (sb >> 4) as f32;
            }
        }
    }
}
