//! The portable part of the K-quant kernels that take the blockwise
//! arithmetic one superblock at a time (aarch64 NEON, x86-64 AVX2): the
//! unsigned codes of a superblock in weight order (plain loops over the
//! bytes, which the compiler vectorizes), and the type's exact integer
//! combination and fused multiply-adds from the 16 sub-block sums Σ code·x,
//! which each instruction set takes its own way. The steps are the blockwise
//! scalar twins' (`quant::dot::dot_q*_k_q8_k_blockwise_scalar`), so results
//! are the same bits as theirs and as the x86 tile kernels'.

use crate::quant::dot::q4_k_scales_mins;
use crate::quant::{f16_table, q3_k, q8_k, QuantKind};

/// Codes of a Q4_K (`Q5` false) or Q5_K superblock in weight order.
#[inline(always)]
fn codes_q45<const Q5: bool>(wb: &[u8]) -> [u8; 256] {
    let mut codes = [0u8; 256];
    let qs = if Q5 { &wb[48..176] } else { &wb[16..144] };
    for c in 0..4 {
        for l in 0..32 {
            codes[64 * c + l] = qs[32 * c + l] & 0xF;
            codes[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
    }
    if Q5 {
        for j in 0..8 {
            let run = &mut codes[32 * j..][..32];
            let bit = 1u8 << j;
            for (c, &h) in run.iter_mut().zip(&wb[16..48]) {
                *c |= if h & bit != 0 { 16 } else { 0 };
            }
        }
    }
    codes
}

/// The 2-bit fields laid out as in Q2_K and Q3_K (64 bytes at `qs`): weight
/// 128n + 32j + l is bits 2j of byte 32n + l.
#[inline(always)]
fn codes_two_bit(qs: &[u8]) -> [u8; 256] {
    let mut codes = [0u8; 256];
    for n in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                codes[128 * n + 32 * j + l] = (qs[32 * n + l] >> (2 * j)) & 3;
            }
        }
    }
    codes
}

/// Codes of a Q6_K superblock (6-bit, unsigned) in weight order.
#[inline(always)]
fn codes_q6(wb: &[u8]) -> [u8; 256] {
    let mut codes = [0u8; 256];
    for n in 0..2 {
        let (ql, qh) = (&wb[64 * n..64 * n + 64], &wb[128 + 32 * n..128 + 32 * n + 32]);
        for l in 0..32 {
            codes[128 * n + l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            codes[128 * n + 32 + l] = (ql[32 + l] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            codes[128 * n + 64 + l] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            codes[128 * n + 96 + l] = (ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    codes
}

/// The unsigned codes of one `kind` superblock in weight order.
#[inline(always)]
pub(super) fn codes(kind: QuantKind, wb: &[u8]) -> [u8; 256] {
    match kind {
        QuantKind::Q4K => codes_q45::<false>(wb),
        QuantKind::Q5K => codes_q45::<true>(wb),
        QuantKind::Q2K => codes_two_bit(&wb[16..80]),
        QuantKind::Q3K => {
            // the third bits: bit 4n + j of hmask[l] for weight 128n + 32j + l
            let mut codes = codes_two_bit(&wb[32..96]);
            for n in 0..2 {
                for j in 0..4 {
                    let run = &mut codes[128 * n + 32 * j..][..32];
                    let bit = 1u8 << (4 * n + j);
                    for (c, &h) in run.iter_mut().zip(&wb[..32]) {
                        // a compare, not a shift by a variable: it vectorizes
                        *c |= if h & bit != 0 { 4 } else { 0 };
                    }
                }
            }
            codes
        }
        QuantKind::Q6K => codes_q6(wb),
        _ => panic!("{} is not a K-quant with a NEON kernel", kind.name()),
    }
}

/// `acc` plus one superblock of one pair, from its sub-block sums `s`:
/// the blockwise twin's integer combination and fused multiply-adds.
#[inline(always)]
fn step(kind: QuantKind, table: &[f32; 65536], wb: &[u8], s: &[i32; 16], xb: &[u8], acc: f32) -> f32 {
    let half = |at: usize| table[u16::from_le_bytes([wb[at], wb[at + 1]]) as usize];
    let dx = q8_k::d(xb);
    let bsum = |i: usize| q8_k::bsum(xb, i);
    match kind {
        QuantKind::Q4K | QuantKind::Q5K => {
            let (sc, m) = q4_k_scales_mins(&wb[4..16]);
            let (mut dot, mut mins) = (0i32, 0i32);
            for j in 0..8 {
                dot += sc[j] as i32 * (s[2 * j] + s[2 * j + 1]);
                mins += m[j] as i32 * (bsum(2 * j) + bsum(2 * j + 1));
            }
            let acc = (dot as f32).mul_add(half(0) * dx, acc);
            (mins as f32).mul_add(-half(2) * dx, acc)
        }
        QuantKind::Q2K => {
            let (mut dot, mut mins) = (0i32, 0i32);
            for (i, &sm) in wb[..16].iter().enumerate() {
                dot += (sm & 0xF) as i32 * s[i];
                mins += (sm >> 4) as i32 * bsum(i);
            }
            let acc = (dot as f32).mul_add(half(80) * dx, acc);
            (mins as f32).mul_add(-half(82) * dx, acc)
        }
        QuantKind::Q3K => {
            let sc = q3_k::scales(&wb[96..108]);
            let total: i32 = (0..16).map(|i| sc[i] * (s[i] - 4 * bsum(i))).sum();
            (total as f32).mul_add(half(108) * dx, acc)
        }
        _ => {
            let total: i32 = (0..16)
                .map(|i| (wb[192 + i] as i8) as i32 * (s[i] - 32 * bsum(i)))
                .sum();
            (total as f32).mul_add(half(208) * dx, acc)
        }
    }
}

/// Up to 4 × 4 (weight row, activation row) pairs, `out[r * 4 + c]`: each
/// weight superblock is unpacked once (`unpack`: [`codes`] or an
/// instruction set's own) for all activation rows, its 16 sub-block sums
/// with each activation block taken by `sub_sums`.
#[inline(always)]
pub(super) fn tile_k(
    kind: QuantKind,
    w_rows: &[&[u8]],
    x_rows: &[&[u8]],
    out: &mut [f32; 16],
    unpack: impl Fn(QuantKind, &[u8]) -> [u8; 256],
    sub_sums: impl Fn(&[u8; 256], &[u8]) -> [i32; 16],
) {
    let table = f16_table();
    let bytes = kind.block_bytes();
    for x in x_rows {
        assert_eq!(w_rows[0].len() / bytes, x.len() / q8_k::BYTES, "superblocks");
    }
    for (r, w) in w_rows.iter().enumerate() {
        assert_eq!(w.len(), w_rows[0].len(), "weight rows");
        let mut acc = [0f32; 4];
        for (b, wb) in w.chunks_exact(bytes).enumerate() {
            let codes = unpack(kind, wb);
            for (c, x) in x_rows.iter().enumerate() {
                let xb = &x[b * q8_k::BYTES..(b + 1) * q8_k::BYTES];
                acc[c] = step(kind, table, wb, &sub_sums(&codes, xb), xb, acc[c]);
            }
        }
        for (c, a) in acc.iter().enumerate().take(x_rows.len()) {
            out[r * 4 + c] = *a;
        }
    }
}
