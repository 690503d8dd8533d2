//! AMX for prompts over Q4_0 panels (`quant::q4_0_panels`): tokens as the
//! A tile (16 tokens × one block's 32 activation bytes, read in place from
//! the prepared tokens), the panel's block as the B tile (its code vectors
//! are already in the B layout `B[k/4][4·row + k%4]`; only the nibbles are
//! split, once per panel, as signed u − 8), `tdpbssd` per block.
//!
//! Each C tile row is one token's exact block sums Σ (u − 8)·x for the 16
//! rows (the same integers as the VNNI kernel's Σ u·x − 8·Σ x), scaled and
//! added block after block with one fused multiply-add per block, as the
//! VNNI kernel and the twin `quant::q4_0_panels::dot_scalar` add them: a
//! token's logits are the same bits whichever kernel ran its product. The
//! rows of the result are the lanes of each accumulator, so they are
//! stored without a transpose.

use std::arch::asm;
use std::arch::x86_64::*;

use super::amx::{configure, two_products, TILE};
use crate::aligned::AlignedBytes;
use crate::quant::q4_0_panels::{scales_at, PanelTokens, BLOCK_CODES};

/// Bytes of one block's B tile (8 rows of 64 bytes).
const B_TILE: usize = 512;

/// Blocks whose B tiles every token tile takes in turn (32: 16 KiB, in L1).
const CHUNK_BLOCKS: usize = 32;

/// Splits a panel's codes into B tiles of signed weights u − 8, one per block.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn unpack(panel: *const u8, blocks: usize, buf: &mut AlignedBytes) {
    buf.resize(blocks * B_TILE);
    let dst = buf.as_mut_slice().as_mut_ptr();
    let (nibble, eight) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(8));
    for b in 0..blocks {
        let codes = panel.add(b * BLOCK_CODES);
        let tile = dst.add(b * B_TILE);
        for j in 0..4 {
            let v = _mm512_loadu_si512(codes.add(64 * j) as *const __m512i);
            let lo = _mm512_sub_epi8(_mm512_and_si512(v, nibble), eight);
            let hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble), eight);
            _mm512_store_si512(tile.add(64 * j) as *mut __m512i, lo);
            _mm512_store_si512(tile.add(64 * (4 + j)) as *mut __m512i, hi);
        }
    }
}

/// Bytes of prepared tokens (A tiles) a group of token tiles may take, so
/// that the group stays in L2 while every panel of a product passes over it.
const GROUP_BYTES: usize = 1 << 20;

/// Token tiles per group for rows of `blocks` blocks (at least one): the
/// product walks the panels once per group. Without groups a 300-token
/// prompt's down projection (8192 weights per row: 2.4 MB of tokens)
/// streamed every token from L3 once per panel, 75 against 50 ns per block
/// for the 3072-weight rows.
pub fn tiles_per_group(blocks: usize) -> usize {
    (GROUP_BYTES / (blocks * TILE * 32)).max(1)
}

/// Rows `row0..row0 + 16` (the panel at `panel`, rows of `k` weights) of
/// the product for the token tiles `tiles` of `x` (16 tokens each, the
/// last one possibly partial): `out[m · n + row0 + r]`.
///
/// # Safety
/// `simd::amx()` must have returned true (AMX usable, AVX-512 F/BW/DQ
/// present); `panel` holds a whole panel; `out` holds `x.tokens · n`
/// floats, and no other thread writes these rows of it.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq")]
#[allow(clippy::too_many_arguments)] // one product's pieces, each used once
pub unsafe fn panel(
    panel: *const u8,
    k: usize,
    x: &PanelTokens,
    tiles: std::ops::Range<usize>,
    out: *mut f32,
    n: usize,
    row0: usize,
    buf: &mut AlignedBytes,
) {
    let blocks = k / 32;
    assert_eq!(x.blocks, blocks, "token blocks");
    assert!(
        x.values.len() >= x.tokens.next_multiple_of(TILE) * blocks * 32,
        "padded tokens"
    );
    assert!(tiles.end <= x.tokens.div_ceil(TILE), "token tiles");
    unpack(panel, blocks, buf);
    // then each token tile's accumulators, kept between chunks of blocks
    let weights_bytes = blocks * B_TILE;
    buf.resize(weights_bytes + tiles.len() * TILE * 64);
    let weights = buf.as_slice().as_ptr();
    let saved = buf.as_mut_slice().as_mut_ptr().add(weights_bytes) as *mut __m512;
    configure(32);
    let scales = panel.add(scales_at(k, 0));
    // a token tile's block is 16 rows of 32 bytes, the next block 512 bytes on
    let row_stride = 32;
    // [slot][block of the round][token]: the two rounds in flight
    let mut c = [[[_mm512_setzero_si512(); TILE]; 2]; 2];
    // Blocks go by chunks whose B tiles (16 KiB) stay in L1 while every
    // token tile passes over them, instead of coming from L2 per tile.
    for chunk in (0..blocks).step_by(CHUNK_BLOCKS) {
        let end = (chunk + CHUNK_BLOCKS).min(blocks);
        for (slot, tile) in tiles.clone().enumerate() {
            let first = tile * TILE;
            let a = (x.values.as_ptr() as *const u8).add(32 * x.at(first, 0));
            let dx = x.scales.as_ptr().add(x.at(first, 0));
            let mut acc: [__m512; TILE] = if chunk == 0 {
                [_mm512_setzero_ps(); TILE]
            } else {
                std::array::from_fn(|m| *saved.add(slot * TILE + m))
            };
            // Two blocks per round on the tile unit; a round's sums are
            // scaled during the next round, once its tile stores have
            // landed. The accumulators take the blocks in order.
            let mut pending: Option<(usize, usize, usize)> = None;
            let mut b = chunk;
            loop {
                let round = (b < end).then(|| {
                    let pair = [b, (b + 1).min(end - 1)];
                    let slot = (b / 2) % 2;
                    let out = &mut c[slot];
                    two_products::<true>(
                        pair.map(|b| a.add(32 * TILE * b)),
                        row_stride,
                        pair.map(|b| weights.add(b * B_TILE)),
                        [out[0].as_mut_ptr() as *mut i32, out[1].as_mut_ptr() as *mut i32],
                    );
                    (b, slot, if b + 1 < end { 2 } else { 1 })
                });
                if let Some((b0, slot, count)) = pending {
                    for (kk, sums) in c[slot].iter().enumerate().take(count) {
                        let b = b0 + kk;
                        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(scales.add(32 * b) as *const __m256i));
                        for m in 0..TILE {
                            let d = _mm512_mul_ps(dw, _mm512_set1_ps(*dx.add(TILE * b + m)));
                            acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[m]), d, acc[m]);
                        }
                    }
                }
                pending = round;
                if pending.is_none() {
                    break;
                }
                b += 2;
            }
            if end < blocks {
                for (m, a) in acc.iter().enumerate() {
                    *saved.add(slot * TILE + m) = *a;
                }
            } else {
                for (m, a) in acc.iter().enumerate().take(TILE.min(x.tokens - first)) {
                    _mm512_storeu_ps(out.add((first + m) * n + row0), *a);
                }
            }
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}
