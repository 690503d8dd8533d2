//! aarch64 kernels for Q4_0 and Q8_0 weights × Q8_0 activations on the
//! grouped arithmetic of the x86 tile kernels (`quant::dot::dot_q4_0_q8_0_grouped_scalar`,
//! `dot_q8_0_q8_0_grouped_scalar`): each block's exact integer sum, one
//! fused multiply-add per block into its group lane, lanes added in halves.
//! So a row's result is the same bits on a phone as on x86, and the same
//! whether it ran alone or in a tile.
//!
//! One pair: the block sums with SDOT (or widening multiplies). With i8mm,
//! [`tile_i8mm`] takes 2 weight rows × 2 activation rows per `smmla`, which
//! gives the four block sums of the 2 × 2 pairs at once.

use std::arch::aarch64::*;
use std::arch::asm;

use super::neon::dot16;
use crate::dot::sum_in_halves;
use crate::quant::dot::{q4_0_group_lane, Q4_0_GROUP};
use crate::quant::{f16_table, q4_0, q8_0};

/// A 32-weight block type read as two vectors of signed values (weights
/// 0-15 and 16-31, against the Q8_0 activation halves).
pub trait SignedBlock {
    const BYTES: usize;
    /// Byte offset of the f16 minimum m (w = d·u + m), or none.
    const M_AT: Option<usize> = None;
    /// # Safety
    /// `wb` valid for a block.
    unsafe fn values(wb: *const u8) -> [int8x16_t; 2];
}

pub struct Q4_0;
pub struct Q8_0;
pub struct Q4_1;
pub struct Q5_0;
pub struct Q5_1;

/// The low nibbles (weights 0-15) and high nibbles (16-31) of 16 bytes.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    let raw = vld1q_u8(p);
    [vandq_u8(raw, vdupq_n_u8(0x0F)), vshrq_n_u8(raw, 4)]
}

/// 16 added to the codes whose fifth bit is set in `qh` (bit j for weight j).
#[inline(always)]
unsafe fn with_fifth_bits(codes: [uint8x16_t; 2], qh: u32) -> [uint8x16_t; 2] {
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bits = vld1q_u8(BITS.as_ptr());
    let fifth = |shift: u32| {
        let bytes = vcombine_u8(vdup_n_u8((qh >> shift) as u8), vdup_n_u8((qh >> (shift + 8)) as u8));
        vandq_u8(vtstq_u8(bytes, bits), vdupq_n_u8(0x10))
    };
    [vorrq_u8(codes[0], fifth(0)), vorrq_u8(codes[1], fifth(16))]
}

#[inline(always)]
unsafe fn qh_at(wb: *const u8, at: usize) -> u32 {
    (wb.add(at) as *const u32).read_unaligned()
}

impl SignedBlock for Q4_1 {
    const BYTES: usize = crate::quant::q4_1::BYTES;
    const M_AT: Option<usize> = Some(2);
    #[inline(always)]
    unsafe fn values(wb: *const u8) -> [int8x16_t; 2] {
        nibbles(wb.add(4)).map(|v| vreinterpretq_s8_u8(v))
    }
}

impl SignedBlock for Q5_0 {
    const BYTES: usize = crate::quant::q5_0::BYTES;
    #[inline(always)]
    unsafe fn values(wb: *const u8) -> [int8x16_t; 2] {
        with_fifth_bits(nibbles(wb.add(6)), qh_at(wb, 2)).map(|v| vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(16)))
    }
}

impl SignedBlock for Q5_1 {
    const BYTES: usize = crate::quant::q5_1::BYTES;
    const M_AT: Option<usize> = Some(2);
    #[inline(always)]
    unsafe fn values(wb: *const u8) -> [int8x16_t; 2] {
        with_fifth_bits(nibbles(wb.add(8)), qh_at(wb, 4)).map(|v| vreinterpretq_s8_u8(v))
    }
}

/// Σ x over a Q8_0 block's values.
#[inline(always)]
unsafe fn activation_sum(xb: *const u8) -> i32 {
    let [x0, x1] = activation_halves(xb);
    vaddlvq_s8(x0) as i32 + vaddlvq_s8(x1) as i32
}

/// One block of one pair as [`grouped`] takes it: the exact sum, d_w·d_x,
/// and for types with minimums Σx and m·d_x.
#[inline(always)]
unsafe fn block_terms<B: SignedBlock>(table: &[f32; 65536], wb: &[u8], xb: &[u8], sum: i32) -> Terms {
    let dx = half(table, xb);
    let (x_sum, m) = match B::M_AT {
        Some(at) => (activation_sum(xb.as_ptr()), half(table, &wb[at..]) * dx),
        None => (0, 0.0),
    };
    (sum, half(table, wb) * dx, x_sum, m)
}

/// (Σ u·x, d_w·d_x, Σx, m·d_x) of one block of one pair.
type Terms = (i32, f32, i32, f32);

impl SignedBlock for Q4_0 {
    const BYTES: usize = q4_0::BYTES;
    #[inline(always)]
    unsafe fn values(wb: *const u8) -> [int8x16_t; 2] {
        let raw = vld1q_u8(wb.add(2));
        let eight = vdupq_n_s8(8);
        [
            vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F))), eight),
            vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight),
        ]
    }
}

impl SignedBlock for Q8_0 {
    const BYTES: usize = q8_0::BYTES;
    #[inline(always)]
    unsafe fn values(wb: *const u8) -> [int8x16_t; 2] {
        [vld1q_s8(wb.add(2) as *const i8), vld1q_s8(wb.add(18) as *const i8)]
    }
}

#[inline(always)]
unsafe fn activation_halves(xb: *const u8) -> [int8x16_t; 2] {
    [vld1q_s8(xb.add(2) as *const i8), vld1q_s8(xb.add(18) as *const i8)]
}

#[inline(always)]
fn half(table: &[f32; 65536], p: &[u8]) -> f32 {
    table[u16::from_le_bytes([p[0], p[1]]) as usize]
}

/// The 16-lane group accumulators of `pairs` (weight row, activation row)
/// pairs over a row of `blocks` blocks: `terms(b)` gives block b's exact
/// sums and scale products for every pair (and with `MINS` the minimum
/// term, a second fused multiply-add). Blocks past the row's end add zero
/// times zero, as the twins' padding does.
#[inline(always)]
fn grouped<const P: usize, const MINS: bool>(blocks: usize, mut terms: impl FnMut(usize) -> [Terms; P]) -> [f32; P] {
    let mut acc = [[0f32; Q4_0_GROUP]; P];
    for g in 0..blocks.div_ceil(Q4_0_GROUP) {
        for b in 0..Q4_0_GROUP {
            let block = g * Q4_0_GROUP + b;
            let s = if block < blocks {
                terms(block)
            } else {
                [(0, 0.0, 0, 0.0); P]
            };
            let lane = q4_0_group_lane(b);
            for (a, (sum, d, x_sum, m)) in acc.iter_mut().zip(s) {
                a[lane] = (sum as f32).mul_add(d, a[lane]);
                if MINS {
                    a[lane] = (x_sum as f32).mul_add(m, a[lane]);
                }
            }
        }
    }
    acc.map(sum_in_halves)
}

/// One pair.
///
/// # Safety
/// With `DOT`, the CPU must support dotprod.
#[target_feature(enable = "neon")]
pub unsafe fn dot<B: SignedBlock, const DOT: bool>(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let blocks = w.len() / B::BYTES;
    assert_eq!(x.len(), blocks * q8_0::BYTES, "activation blocks");
    let terms = |b: usize| {
        let (wb, xb) = (&w[b * B::BYTES..], &x[b * q8_0::BYTES..]);
        let [w0, w1] = B::values(wb.as_ptr());
        let [x0, x1] = activation_halves(xb.as_ptr());
        let sum = vaddvq_s32(dot16::<DOT>(dot16::<DOT>(vdupq_n_s32(0), w0, x0), w1, x1));
        [block_terms::<B>(table, wb, xb, sum)]
    };
    let [r] = if B::M_AT.is_some() {
        grouped::<1, true>(blocks, terms)
    } else {
        grouped::<1, false>(blocks, terms)
    };
    r
}

/// `acc += A · Bᵀ` for A and B two rows of 8 signed bytes each.
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    asm!("smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b", acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
         options(pure, nomem, nostack));
    acc
}

/// The 8-byte slices k = 0..4 of two rows' 32 values, paired for `smmla`
/// (row 0's slice in the low half, row 1's in the high half).
#[inline(always)]
unsafe fn paired(r0: [int8x16_t; 2], r1: [int8x16_t; 2]) -> [int8x16_t; 4] {
    let z = |a: int8x16_t, b: int8x16_t, high: bool| {
        let (a, b) = (vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b));
        vreinterpretq_s8_s64(if high { vzip2q_s64(a, b) } else { vzip1q_s64(a, b) })
    };
    [
        z(r0[0], r1[0], false),
        z(r0[0], r1[0], true),
        z(r0[1], r1[1], false),
        z(r0[1], r1[1], true),
    ]
}

/// Up to 4 × 4 (weight row, activation row) pairs, `out[r * 4 + c]`: 2 × 2
/// pairs per `smmla`, leftover rows or columns one pair at a time; every
/// pair takes the grouped arithmetic, so the bits are [`dot`]'s.
///
/// # Safety
/// The CPU must support dotprod and i8mm.
#[target_feature(enable = "neon,dotprod,i8mm")]
pub unsafe fn tile_i8mm<B: SignedBlock>(w_rows: &[&[u8]], x_rows: &[&[u8]], out: &mut [f32; 16]) {
    let table = f16_table();
    let blocks = w_rows[0].len() / B::BYTES;
    let (rows, cols) = (w_rows.len(), x_rows.len());
    for r0 in (0..rows).step_by(2) {
        for c0 in (0..cols).step_by(2) {
            if r0 + 1 == rows || c0 + 1 == cols {
                for r in r0..(r0 + 2).min(rows) {
                    for c in c0..(c0 + 2).min(cols) {
                        out[r * 4 + c] = dot::<B, true>(w_rows[r], x_rows[c]);
                    }
                }
                continue;
            }
            let (w0, w1) = (w_rows[r0], w_rows[r0 + 1]);
            let (x0, x1) = (x_rows[c0], x_rows[c0 + 1]);
            assert!(w0.len() == w1.len() && x0.len() == blocks * q8_0::BYTES && x1.len() == x0.len());
            let terms = |b: usize| {
                let (wb0, wb1) = (&w0[b * B::BYTES..], &w1[b * B::BYTES..]);
                let (xb0, xb1) = (&x0[b * q8_0::BYTES..], &x1[b * q8_0::BYTES..]);
                let a = paired(B::values(wb0.as_ptr()), B::values(wb1.as_ptr()));
                let t = paired(activation_halves(xb0.as_ptr()), activation_halves(xb1.as_ptr()));
                let mut s = vdupq_n_s32(0);
                for k in 0..4 {
                    s = smmla(s, a[k], t[k]);
                }
                [
                    block_terms::<B>(table, wb0, xb0, vgetq_lane_s32::<0>(s)),
                    block_terms::<B>(table, wb0, xb1, vgetq_lane_s32::<1>(s)),
                    block_terms::<B>(table, wb1, xb0, vgetq_lane_s32::<2>(s)),
                    block_terms::<B>(table, wb1, xb1, vgetq_lane_s32::<3>(s)),
                ]
            };
            let sums = if B::M_AT.is_some() {
                grouped::<4, true>(blocks, terms)
            } else {
                grouped::<4, false>(blocks, terms)
            };
            out[r0 * 4 + c0] = sums[0];
            out[r0 * 4 + c0 + 1] = sums[1];
            out[(r0 + 1) * 4 + c0] = sums[2];
            out[(r0 + 1) * 4 + c0 + 1] = sums[3];
        }
    }
}
