//! Q4_K: 256 weights in 8 sub-blocks of 32. f16 d, f16 dmin, 12 bytes of
//! packed 6-bit scales and mins, 128 bytes of nibbles: chunk c (bytes
//! 32c..32c+32) holds sub-block 2c in low nibbles, 2c+1 in high nibbles.
//! w = d·scale·q − dmin·min.

use super::{half_at, pack_scale_min_k4, put_half, quantize_k_superblock, scale_min_k4};

pub const BYTES: usize = 144;

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let (s, qs) = (&b[4..16], &b[16..144]);
    for c in 0..4 {
        let (sc0, m0) = scale_min_k4(2 * c, s);
        let (sc1, m1) = scale_min_k4(2 * c + 1, s);
        let (d0, dm0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, dm1) = (d * sc1 as f32, dmin * m1 as f32);
        for l in 0..32 {
            let q = qs[32 * c + l];
            out[64 * c + l] = d0 * (q & 0xF) as f32 - dm0;
            out[64 * c + 32 + l] = d1 * (q >> 4) as f32 - dm1;
        }
    }
}

pub fn quantize(x: &[f32], b: &mut [u8]) {
    let (d, dmin, sc, m, q) = quantize_k_superblock(x, 15);
    put_half(b, 0, d);
    put_half(b, 2, dmin);
    pack_scale_min_k4(&sc, &m, &mut b[4..16]);
    for c in 0..4 {
        for l in 0..32 {
            b[16 + 32 * c + l] = q[64 * c + l] | (q[64 * c + 32 + l] << 4);
        }
    }
}
