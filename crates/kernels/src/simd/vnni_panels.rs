//! AVX-512 VNNI kernel for Q4_0 panels (`quant::q4_0_panels`) × Q8_0
//! tokens: 16 weight rows at a time, one row per 32-bit lane.
//!
//! Per block, the panel's four 64-byte code vectors give eight vectors of
//! unsigned nibbles (low, high), each holding four weights of all 16 rows.
//! For each token, eight `vpdpbusd` against the token's activation bytes
//! (four at a time, broadcast) leave the block sums Σ u·x in the row lanes,
//! starting from −8·Σ x; one conversion and one fused multiply-add by
//! d_w · d_x add the block into the token's accumulator. No lane shuffles:
//! per (block, token) 8 multiply-add instructions and 4 others, against ~14
//! shared by the tokens to unpack the block. The twin is
//! `quant::q4_0_panels::dot_scalar`, bit for bit.

use std::arch::x86_64::*;

use crate::quant::q4_0_panels::{scales_at, PanelTokens, BLOCK_CODES, ROWS};

/// How far ahead of the block being multiplied its panel is fetched (16
/// blocks). Measured on Phi-3-mini Q4_0 decode steps (`batchdecode`, 2
/// threads, Sapphire Rapids, L1 prefetches): 1 KiB ahead 117-118 ms for one
/// sequence, 162-164 ms for four; 4 KiB 106-108 and 154; 512 bytes or 8-16
/// KiB were slower. On Zen 4 with L2 prefetches (`simd::prefetch_to_l2`)
/// 4-6 KiB were best, 2 KiB slower (`batchbench q4_0-panels`).
const PREFETCH_AHEAD: usize = 4096;

/// Most tokens per pass over a panel (their accumulators stay in registers).
pub const MAX_TOKENS: usize = 8;

/// Rows of one panel × tokens `m0..m0 + C`: `out[(m0 + c) · n + row0 + r]`.
///
/// # Safety
/// AVX-512 F/BW/VNNI and FMA present; `panel` holds a whole panel of rows
/// of `k` weights; `x` holds tokens `m0..m0 + C` with `k / 32` blocks; `out`
/// holds those elements and no other thread writes them.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
unsafe fn pass<const C: usize>(
    panel: *const u8,
    k: usize,
    x: &PanelTokens,
    m0: usize,
    out: *mut f32,
    n: usize,
    row0: usize,
) {
    let blocks = k / 32;
    debug_assert_eq!(x.blocks, blocks);
    let scales = panel.add(scales_at(k, 0));
    let nibble = _mm512_set1_epi8(0x0F);
    // each token's block 0; its next block is ROWS entries on
    let at: [usize; C] = std::array::from_fn(|c| x.at(m0 + c, 0));
    let values: [*const i32; C] = std::array::from_fn(|c| x.values.as_ptr().add(32 * at[c]) as *const i32);
    let neg_corr: [*const i32; C] = std::array::from_fn(|c| x.neg_corr.as_ptr().add(at[c]));
    let dx: [*const f32; C] = std::array::from_fn(|c| x.scales.as_ptr().add(at[c]));
    let mut acc = [_mm512_setzero_ps(); C];
    let to_l2 = super::prefetch_to_l2();
    for b in 0..blocks {
        let codes = panel.add(b * BLOCK_CODES);
        // the codes a few blocks on (past the panel's end: the next panel's,
        // also read next); a prefetch never faults
        let ahead = codes.wrapping_add(PREFETCH_AHEAD);
        for line in 0..BLOCK_CODES / 64 {
            super::prefetch_line(ahead.wrapping_add(64 * line), to_l2);
        }
        let v: [__m512i; 4] = std::array::from_fn(|j| _mm512_loadu_si512(codes.add(64 * j) as *const __m512i));
        let lo = v.map(|v| _mm512_and_si512(v, nibble));
        let hi = v.map(|v| _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble));
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(scales.add(32 * b) as *const __m256i));
        for c in 0..C {
            let xb = values[c].add(8 * ROWS * b);
            let x4 = |i: usize| _mm512_set1_epi32(xb.add(i).read_unaligned());
            // two chains of four (low and high nibbles), added at the end
            let mut s0 = _mm512_set1_epi32(*neg_corr[c].add(ROWS * b));
            let mut s1 = _mm512_setzero_si512();
            for j in 0..4 {
                s0 = _mm512_dpbusd_epi32(s0, lo[j], x4(j));
                s1 = _mm512_dpbusd_epi32(s1, hi[j], x4(4 + j));
            }
            let s = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            acc[c] = _mm512_fmadd_ps(s, _mm512_mul_ps(dw, _mm512_set1_ps(*dx[c].add(ROWS * b))), acc[c]);
        }
    }
    for (c, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add((m0 + c) * n + row0), *a);
    }
}

/// Rows `16p..16p + 16` of the product (panel `p` at `panel`) for every
/// token of `x`: `out[m · n + 16p + r]`.
///
/// # Safety
/// As [`pass`], for all of `x`'s tokens.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
pub unsafe fn panel(panel: *const u8, k: usize, x: &PanelTokens, out: *mut f32, n: usize, row0: usize) {
    let mut m0 = 0;
    while m0 < x.tokens {
        let c = (x.tokens - m0).min(MAX_TOKENS);
        match c {
            1 => pass::<1>(panel, k, x, m0, out, n, row0),
            2 => pass::<2>(panel, k, x, m0, out, n, row0),
            3 => pass::<3>(panel, k, x, m0, out, n, row0),
            4 => pass::<4>(panel, k, x, m0, out, n, row0),
            5 => pass::<5>(panel, k, x, m0, out, n, row0),
            6 => pass::<6>(panel, k, x, m0, out, n, row0),
            7 => pass::<7>(panel, k, x, m0, out, n, row0),
            _ => pass::<8>(panel, k, x, m0, out, n, row0),
        }
        m0 += c;
    }
}
