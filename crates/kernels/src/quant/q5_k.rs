//! Q5_K: Q4_K plus a fifth bit: f16 d, f16 dmin, 12 bytes of scales/mins,
//! 32 bytes qh (bit 2c of byte l for weight 64c + l, bit 2c+1 for 64c+32+l),
//! 128 bytes of nibbles laid out as Q4_K.

use super::{half_at, pack_scale_min_k4, put_half, quantize_k_superblock, scale_min_k4};

pub const BYTES: usize = 176;

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let (s, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for c in 0..4 {
        let (sc0, m0) = scale_min_k4(2 * c, s);
        let (sc1, m1) = scale_min_k4(2 * c + 1, s);
        let (d0, dm0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, dm1) = (d * sc1 as f32, dmin * m1 as f32);
        for l in 0..32 {
            let q = qs[32 * c + l];
            let h0 = ((qh[l] >> (2 * c)) & 1) << 4;
            let h1 = ((qh[l] >> (2 * c + 1)) & 1) << 4;
            out[64 * c + l] = d0 * ((q & 0xF) | h0) as f32 - dm0;
            out[64 * c + 32 + l] = d1 * ((q >> 4) | h1) as f32 - dm1;
        }
    }
}

pub fn quantize(x: &[f32], b: &mut [u8]) {
    let (d, dmin, sc, m, q) = quantize_k_superblock(x, 31);
    put_half(b, 0, d);
    put_half(b, 2, dmin);
    pack_scale_min_k4(&sc, &m, &mut b[4..16]);
    b[16..48].fill(0);
    for c in 0..4 {
        for l in 0..32 {
            let (q0, q1) = (q[64 * c + l], q[64 * c + 32 + l]);
            b[48 + 32 * c + l] = (q0 & 0xF) | ((q1 & 0xF) << 4);
            b[16 + l] |= ((q0 >> 4) << (2 * c)) | ((q1 >> 4) << (2 * c + 1));
        }
    }
}
