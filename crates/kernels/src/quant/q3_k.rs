//! Q3_K: 256 weights in 16 sub-blocks of 16. 32 bytes hmask (the third bit:
//! bit i of byte l for weight 32·i + l), 64 bytes of 2-bit values (laid out
//! as Q2_K), 12 bytes of 6-bit signed scales (offset 32), f16 d.
//! q = low2 − 4 when the hmask bit is clear; w = d·scale·q.

use super::half_at;

pub const BYTES: usize = 110;

/// The 16 six-bit scales: low nibbles from bytes 0..8 (two per byte), high
/// two bits from bytes 8..12 (four per byte).
pub fn scales(s: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (k, o) in out.iter_mut().enumerate() {
        let low = (s[k % 8] >> (4 * (k / 8))) & 0xF;
        let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        *o = (low | (high << 4)) as i32 - 32;
    }
    out
}

pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let sc = scales(&b[96..108]);
    let d = half_at(b, 108);
    for half in 0..2 {
        for shift in 0..4 {
            for l in 0..32 {
                let e = half * 128 + shift * 32 + l;
                let low = ((qs[half * 32 + l] >> (2 * shift)) & 3) as i32;
                let high_set = (hmask[l] >> (e / 32)) & 1 == 1;
                let q = if high_set { low } else { low - 4 };
                out[e] = d * sc[e / 16] as f32 * q as f32;
            }
        }
    }
}
