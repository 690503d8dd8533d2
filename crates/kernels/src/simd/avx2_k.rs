//! x86-64 AVX2 kernels for Q2_K, Q3_K and Q5_K × Q8_K activations
//! (`k_tile`), for CPUs without AVX-512 VNNI: the sub-block sums Σ code·x
//! with `vpmaddubsw` (unsigned codes × signed activations, pairs within
//! i16) and `vpmaddwd`. The same bits as the blockwise scalar twins and
//! the VNNI tiles. (Q4_K and Q6_K keep their own AVX2 kernels on this level.)

use std::arch::x86_64::*;

use super::k_tile;
use crate::dot::sum_in_halves;
use crate::quant::dot::{q4_0_group_lane, Q4_0_GROUP};
use crate::quant::{f16_table, q8_0, QuantKind};

/// The 16 sums Σ code·x over sub-blocks of 16 of one superblock.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sub_sums(codes: &[u8; 256], xb: &[u8]) -> [i32; 16] {
    let x = xb[4..260].as_ptr();
    let ones = _mm256_set1_epi16(1);
    let mut out = [0i32; 16];
    for i in 0..8 {
        // sub-blocks 2i (low 128 bits) and 2i + 1 (high)
        let c = _mm256_loadu_si256(codes.as_ptr().add(32 * i) as *const __m256i);
        let v = _mm256_loadu_si256(x.add(32 * i) as *const __m256i);
        let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(c, v), ones);
        let pairs = _mm256_hadd_epi32(lanes, lanes);
        let sums = _mm256_hadd_epi32(pairs, pairs);
        out[2 * i] = _mm256_extract_epi32::<0>(sums);
        out[2 * i + 1] = _mm256_extract_epi32::<4>(sums);
    }
    out
}

/// The codes of a Q3_K or Q5_K superblock in weight order, 32 at a time
/// (`k_tile::codes` for Q2_K).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn unpack(kind: QuantKind, wb: &[u8]) -> [u8; 256] {
    let mut codes = [0u8; 256];
    let base = codes.as_mut_ptr();
    let out = |i: usize| base.add(32 * i) as *mut __m256i;
    let load = |at: usize| _mm256_loadu_si256(wb.as_ptr().add(at) as *const __m256i);
    // bytes of `v` whose bit `bit` is set, as `value`, else 0
    let flag = |v: __m256i, bit: i8, value: i8| {
        let b = _mm256_set1_epi8(bit);
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, b), b), _mm256_set1_epi8(value))
    };
    match kind {
        QuantKind::Q5K => {
            let (low4, qh) = (_mm256_set1_epi8(0x0F), load(16));
            for c in 0..4 {
                let q = load(48 + 32 * c);
                let lo = _mm256_and_si256(q, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4);
                // sub-blocks 2c and 2c + 1: fifth bits 2c and 2c + 1 of qh
                _mm256_storeu_si256(out(2 * c), _mm256_or_si256(lo, flag(qh, (1u8 << (2 * c)) as i8, 16)));
                _mm256_storeu_si256(
                    out(2 * c + 1),
                    _mm256_or_si256(hi, flag(qh, (1u8 << (2 * c + 1)) as i8, 16)),
                );
            }
        }
        QuantKind::Q3K => {
            let (three, hmask) = (_mm256_set1_epi8(3), load(0));
            for n in 0..2 {
                let q = load(32 + 32 * n);
                let fields = [
                    q,
                    _mm256_srli_epi16::<2>(q),
                    _mm256_srli_epi16::<4>(q),
                    _mm256_srli_epi16::<6>(q),
                ];
                for (j, f) in fields.into_iter().enumerate() {
                    let low = _mm256_and_si256(f, three);
                    let high = flag(hmask, (1u8 << (4 * n + j)) as i8, 4);
                    _mm256_storeu_si256(out(4 * n + j), _mm256_or_si256(low, high));
                }
            }
        }
        _ => return k_tile::codes(kind, wb),
    }
    codes
}

/// Up to 4 × 4 (weight row, activation row) pairs, `out[r * 4 + c]`
/// (`k_tile::tile_k`).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_k(kind: QuantKind, w_rows: &[&[u8]], x_rows: &[&[u8]], out: &mut [f32; 16]) {
    k_tile::tile_k(
        kind,
        w_rows,
        x_rows,
        out,
        |kind, wb| unpack(kind, wb),
        |codes, xb| sub_sums(codes, xb),
    )
}

/// (Σ u·x, Σ x) of one Q4_1 / Q5_0 / Q5_1 block (`kind`) against a Q8_0
/// block: the codes u (nibble + 16 · fifth bit) in weight order in one
/// register, `vpmaddubsw` against the activations and against ones.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibble_sums(kind: QuantKind, wb: &[u8], xb: &[u8]) -> (i32, i32) {
    let (qs_at, qh_at) = match kind {
        QuantKind::Q4_1 => (4, None),
        QuantKind::Q5_0 => (6, Some(2)),
        _ => (8, Some(4)),
    };
    let raw = _mm_loadu_si128(wb.as_ptr().add(qs_at) as *const __m128i);
    let low4 = _mm_set1_epi8(0x0F);
    let mut codes = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), low4), _mm_and_si128(raw, low4));
    if let Some(at) = qh_at {
        // byte i of the broadcast bits is qh's byte i / 8; its bit i % 8 marks weight i
        let qh = (wb.as_ptr().add(at) as *const i32).read_unaligned();
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh),
            _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        codes = _mm256_or_si256(codes, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
    }
    let x = _mm256_loadu_si256(xb.as_ptr().add(2) as *const __m256i);
    let ones16 = _mm256_set1_epi16(1);
    let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(codes, x), ones16);
    let x_sum = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), x), ones16);
    // lanes 0-3 the dot product's partial sums, 4-7 the activation sum's
    let both = _mm256_hadd_epi32(dot, x_sum);
    let both = _mm_add_epi32(_mm256_castsi256_si128(both), _mm256_extracti128_si256::<1>(both));
    let both = _mm_hadd_epi32(both, both);
    (_mm_cvtsi128_si32(both), _mm_extract_epi32::<1>(both))
}

/// One Q4_1 / Q5_0 / Q5_1 row × one Q8_0 row on the grouped arithmetic of
/// the twins (`quant::dot::dot_q4_1_q8_0_grouped_scalar` and the others),
/// written out here so that every step compiles for this level (fused
/// multiply-adds inline).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_nibbles(kind: QuantKind, w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let half = |p: &[u8]| table[u16::from_le_bytes([p[0], p[1]]) as usize];
    let bytes = kind.block_bytes();
    let blocks = w.len() / bytes;
    assert_eq!(x.len(), blocks * q8_0::BYTES, "activation blocks");
    let mut acc = [0f32; Q4_0_GROUP];
    for g in 0..blocks.div_ceil(Q4_0_GROUP) {
        for b in 0..Q4_0_GROUP {
            let block = g * Q4_0_GROUP + b;
            // blocks past the row's end: zero sums times zero scales, as the twin's padding
            let (dot, x_sum, d, m) = if block < blocks {
                let (wb, xb) = (&w[block * bytes..][..bytes], &x[block * q8_0::BYTES..][..q8_0::BYTES]);
                let (dot, x_sum) = nibble_sums(kind, wb, xb);
                let dx = half(xb);
                (dot, x_sum, half(wb) * dx, half(&wb[2..]) * dx)
            } else {
                (0, 0, 0.0, 0.0)
            };
            let lane = &mut acc[q4_0_group_lane(b)];
            if kind == QuantKind::Q5_0 {
                *lane = ((dot - 16 * x_sum) as f32).mul_add(d, *lane);
            } else {
                *lane = (dot as f32).mul_add(d, *lane);
                *lane = (x_sum as f32).mul_add(m, *lane);
            }
        }
    }
    sum_in_halves(acc)
}
