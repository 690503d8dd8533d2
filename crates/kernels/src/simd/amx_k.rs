//! Intel AMX for prompt processing with Q4_K and Q6_K weights × Q8_K
//! activations: 16 weight rows × 16 tokens per tile multiply, one
//! `tdpbusd` per sub-block (32 weights for Q4_K, 16 for Q6_K).
//!
//! The arithmetic is the VNNI kernel's (`vnni_k`) and the scalar twin's
//! (`quant::dot::dot_q4_k_q8_k_blockwise_scalar`) step for step: the tile
//! products give each (row, token) pair's exact sub-block sums Σ q·x, which
//! are multiplied by the sub-block scales and added as integers (`vpmulld`),
//! the minimum term Σ_j m_j·(Σx)_j comes from the tokens' per-sub-block sums
//! (`vpmaddwd`), and both are converted and added with one fused
//! multiply-add each, superblock after superblock. So a token's result is
//! the same bits here as on the VNNI kernel.
//!
//! Layouts as in `amx` (Q4_0): the A tile is 16 rows × 32 nibbles (0..15,
//! unsigned), the B tile 16 tokens' 32 activation bytes in groups of four.

use std::arch::asm;
use std::arch::x86_64::*;

use super::amx::{configure, store_transposed, two_products, TILE};
use super::vnni_k::{SixteenSubBlocks, Q3K, Q6K};
use crate::aligned::AlignedBytes;
use crate::quant::dot::q4_k_scales_mins;
use crate::quant::{f16_table, q4_k, q5_k, q8_k, QuantKind};

/// Sub-blocks of 32 weights per superblock.
const SUBS: usize = 8;
/// Prepared bytes per (token tile, superblock): eight B tiles of 512
/// bytes, then four registers of per-sub-block sum pairs (token m's
/// (Σx)_{2i} and (Σx)_{2i+1} as i16 at 64·i + 4m), then 16 f32 scales.
const TOKEN_SUPER: usize = SUBS * 512 + 4 * 64 + 64;
const SUMS_AT: usize = SUBS * 512;
const SCALES_AT: usize = SUMS_AT + 4 * 64;
/// Unpacked weight bytes per superblock of a 16-row panel (eight A tiles).
const PANEL_SUPER: usize = SUBS * TILE * 32;

/// Bytes of `t` tokens' prepared activations for rows of `blocks` superblocks.
pub fn prepared_bytes(t: usize, blocks: usize) -> usize {
    t.div_ceil(TILE) * blocks * TOKEN_SUPER
}

/// Prepares token tile `tile` (16 tokens of the Q8_K rows `xq`, each
/// `blocks` superblocks; missing tokens are zero) into `out`.
pub fn prepare_tile(xq: &[u8], t: usize, blocks: usize, tile: usize, out: &mut [u8]) {
    let row = blocks * q8_k::BYTES;
    out.fill(0);
    for m in 0..TILE.min(t.saturating_sub(tile * TILE)) {
        let x = &xq[(tile * TILE + m) * row..][..row];
        for (xb, o) in x.chunks_exact(q8_k::BYTES).zip(out.chunks_exact_mut(TOKEN_SUPER)) {
            for j in 0..SUBS {
                for g in 0..8 {
                    o[512 * j + 64 * g + 4 * m..][..4].copy_from_slice(&xb[4 + 32 * j + 4 * g..][..4]);
                }
                let sum = (q8_k::bsum(xb, 2 * j) + q8_k::bsum(xb, 2 * j + 1)) as i16;
                o[SUMS_AT + 64 * (j / 2) + 4 * m + 2 * (j % 2)..][..2].copy_from_slice(&sum.to_le_bytes());
            }
            o[SCALES_AT + 4 * m..][..4].copy_from_slice(&xb[..4]);
        }
    }
}

/// Per-thread buffers: the unpacked panel and its scales.
#[derive(Default)]
pub struct PanelBuffers {
    weights: AlignedBytes,
    /// sc_j per (superblock, sub-block, row)
    scales: Vec<i32>,
    /// (m_{2i}, m_{2i+1}) as an i16 pair per (superblock, i, row)
    min_pairs: Vec<i32>,
    /// d and −dmin per (superblock, row)
    d: Vec<f32>,
    neg_dmin: Vec<f32>,
}

/// Superblock bytes and the offset of the nibbles: Q4_K, or Q5_K (`Q5`).
const fn q45_layout(q5: bool) -> (usize, usize) {
    if q5 {
        (q5_k::BYTES, 48)
    } else {
        (q4_k::BYTES, 16)
    }
}

/// Unpacks Q4_K or Q5_K (`Q5`) weight rows `row0..row0 + rows` (at most
/// 16; missing rows are zero) into A tiles of codes (0..15, or 0..31 with
/// Q5_K's fifth bits), one per sub-block, with their scales.
#[target_feature(enable = "avx2")]
unsafe fn unpack_panel<const Q5: bool>(w: &[u8], row_bytes: usize, row0: usize, rows: usize, buf: &mut PanelBuffers) {
    let (super_bytes, qs_at) = q45_layout(Q5);
    let blocks = row_bytes / super_bytes;
    buf.weights.resize(blocks * PANEL_SUPER);
    buf.weights.as_mut_slice().fill(0);
    for v in [&mut buf.scales, &mut buf.min_pairs] {
        v.clear();
        v.resize(blocks * SUBS * TILE, 0);
    }
    for v in [&mut buf.d, &mut buf.neg_dmin] {
        v.clear();
        v.resize(blocks * TILE, 0.0);
    }
    let table = f16_table();
    let half = |p: &[u8]| table[u16::from_le_bytes([p[0], p[1]]) as usize];
    let nibble = _mm256_set1_epi8(0x0F);
    let fifth = _mm256_set1_epi8(0x10);
    // bit `shift` of each byte of `qh`, moved to bit 4 (Q5_K)
    let fifth_bits = |qh: __m256i, shift: i32| {
        _mm256_and_si256(
            _mm256_slli_epi16(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift)), 4),
            fifth,
        )
    };
    let dst = buf.weights.as_mut_slice().as_mut_ptr();
    // superblock after superblock, so each one's tiles are written while in L1
    for b in 0..blocks {
        for r in 0..rows {
            let blk = &w[(row0 + r) * row_bytes + b * super_bytes..][..super_bytes];
            buf.d[b * TILE + r] = half(blk);
            buf.neg_dmin[b * TILE + r] = -half(&blk[2..]);
            let (sc, m) = q4_k_scales_mins(&blk[4..16]);
            for (j, &s) in sc.iter().enumerate() {
                buf.scales[(b * SUBS + j) * TILE + r] = s as i32;
            }
            for i in 0..4 {
                buf.min_pairs[(b * 4 + i) * TILE + r] = m[2 * i] as i32 | (m[2 * i + 1] as i32) << 16;
            }
            let qh = _mm256_loadu_si256(blk.as_ptr().add(16) as *const __m256i);
            for chunk in 0..4 {
                let packed = _mm256_loadu_si256(blk.as_ptr().add(qs_at + 32 * chunk) as *const __m256i);
                let mut low = _mm256_and_si256(packed, nibble);
                let mut high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
                if Q5 {
                    low = _mm256_or_si256(low, fifth_bits(qh, 2 * chunk as i32));
                    high = _mm256_or_si256(high, fifth_bits(qh, 2 * chunk as i32 + 1));
                }
                let at = dst.add(b * PANEL_SUPER + 2 * chunk * 512 + 32 * r);
                _mm256_storeu_si256(at as *mut __m256i, low);
                _mm256_storeu_si256(at.add(512) as *mut __m256i, high);
            }
        }
    }
}

/// One superblock's 16 × 16 tiles of sub-block sums (8 for Q4_K, 16 for Q6_K).
#[repr(C, align(64))]
struct SubSums<const N: usize>([[i32; TILE * TILE]; N]);

/// `out[token · n + row]` for rows `row0..row0 + rows` (a panel of at most
/// 16) and every token, from the Q4_K matrix `w` (rows of `row_bytes`) and
/// the prepared tokens.
///
/// # Safety
/// AMX must be usable (`amx::available`), the CPU must support AVX-512 F,
/// BW and DQ, `out` must hold `t · n` floats, and no other thread may write
/// these rows of it.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq")]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::needless_range_loop)] // constant-bound indexing keeps the accumulators in registers
pub unsafe fn panel<const Q5: bool>(
    w: &[u8],
    row_bytes: usize,
    row0: usize,
    rows: usize,
    tokens: &[u8],
    t: usize,
    n: usize,
    out: *mut f32,
    buf: &mut PanelBuffers,
) {
    let blocks = row_bytes / q45_layout(Q5).0;
    assert!(rows <= TILE && w.len() >= (row0 + rows) * row_bytes, "panel rows");
    assert_eq!(tokens.len(), prepared_bytes(t, blocks), "prepared tokens");
    unpack_panel::<Q5>(w, row_bytes, row0, rows, buf);
    configure(32);
    // two sets, alternating by superblock: the tile unit fills one while the
    // other is still being read
    let mut sum_sets = [
        SubSums::<SUBS>([[0; TILE * TILE]; SUBS]),
        SubSums::<SUBS>([[0; TILE * TILE]; SUBS]),
    ];
    for tile in 0..t.div_ceil(TILE) {
        let mut acc = [_mm512_setzero_ps(); TILE];
        for b in 0..blocks {
            let x = tokens.as_ptr().add((tile * blocks + b) * TOKEN_SUPER);
            let a = buf.weights.as_slice().as_ptr().add(b * PANEL_SUPER);
            let sums = &mut sum_sets[b % 2];
            for j in (0..SUBS).step_by(2) {
                two_products::<false>(
                    [a.add(512 * j), a.add(512 * (j + 1))],
                    32,
                    [x.add(512 * j), x.add(512 * (j + 1))],
                    [sums.0[j].as_mut_ptr(), sums.0[j + 1].as_mut_ptr()],
                );
            }
            let dx = _mm512_loadu_ps(x.add(SCALES_AT) as *const f32);
            let pair_sums: [__m512i; 4] =
                std::array::from_fn(|i| _mm512_loadu_si512(x.add(SUMS_AT + 64 * i) as *const __m512i));
            for r in 0..TILE {
                let mut dot = _mm512_setzero_si512();
                for j in 0..SUBS {
                    let s = _mm512_loadu_si512(sums.0[j][TILE * r..].as_ptr() as *const __m512i);
                    let sc = _mm512_set1_epi32(buf.scales[(b * SUBS + j) * TILE + r]);
                    dot = _mm512_add_epi32(dot, _mm512_mullo_epi32(s, sc));
                }
                let mut mins = _mm512_setzero_si512();
                for (i, &xs) in pair_sums.iter().enumerate() {
                    let m = _mm512_set1_epi32(buf.min_pairs[(b * 4 + i) * TILE + r]);
                    mins = _mm512_add_epi32(mins, _mm512_madd_epi16(xs, m));
                }
                let d = _mm512_mul_ps(_mm512_set1_ps(buf.d[b * TILE + r]), dx);
                let neg_dmin = _mm512_mul_ps(_mm512_set1_ps(buf.neg_dmin[b * TILE + r]), dx);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), d, acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mins), neg_dmin, acc[r]);
            }
        }
        store_transposed(&acc, out, n, tile * TILE, TILE.min(t - tile * TILE), row0, rows);
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// Q6_K: sub-blocks of 16 per superblock, and prepared bytes per (token
/// tile, superblock): 16 B tiles of 256 bytes, then 16 f32 scales. The
/// weights go to the tile unit as signed codes q − 32 (`tdpbssd`), so no
/// offset term is needed.
const SUBS6: usize = 16;
const TOKEN_SUPER6: usize = SUBS6 * 256 + 64;
const SCALES_AT6: usize = SUBS6 * 256;
const PANEL_SUPER6: usize = SUBS6 * TILE * 16;

/// [`prepared_bytes`] for Q6_K weights.
pub fn prepared_bytes_q6_k(t: usize, blocks: usize) -> usize {
    t.div_ceil(TILE) * blocks * TOKEN_SUPER6
}

/// [`prepare_tile`] for Q6_K weights.
pub fn prepare_tile_q6_k(xq: &[u8], t: usize, blocks: usize, tile: usize, out: &mut [u8]) {
    let row = blocks * q8_k::BYTES;
    out.fill(0);
    for m in 0..TILE.min(t.saturating_sub(tile * TILE)) {
        let x = &xq[(tile * TILE + m) * row..][..row];
        for (xb, o) in x.chunks_exact(q8_k::BYTES).zip(out.chunks_exact_mut(TOKEN_SUPER6)) {
            for i in 0..SUBS6 {
                for g in 0..4 {
                    o[256 * i + 64 * g + 4 * m..][..4].copy_from_slice(&xb[4 + 16 * i + 4 * g..][..4]);
                }
            }
            o[SCALES_AT6 + 4 * m..][..4].copy_from_slice(&xb[..4]);
        }
    }
}

/// Unpacks Q6_K or Q3_K rows `row0..row0 + rows` into A tiles (16 rows ×
/// 16 signed codes u − offset: q − 32, or the Q3_K values −4..3), one per
/// sub-block, with their scales sc_i and d.
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn unpack_panel_sixteen<K: SixteenSubBlocks>(
    w: &[u8],
    row_bytes: usize,
    row0: usize,
    rows: usize,
    buf: &mut PanelBuffers,
) {
    assert!(!K::MINS, "the AMX panel has no minimum term");
    let blocks = row_bytes / K::BYTES;
    buf.weights.resize(blocks * PANEL_SUPER6);
    buf.weights.as_mut_slice().fill(0);
    buf.scales.clear();
    buf.scales.resize(blocks * SUBS6 * TILE, 0);
    buf.d.clear();
    buf.d.resize(blocks * TILE, 0.0);
    let table = f16_table();
    let dst = buf.weights.as_mut_slice().as_mut_ptr();
    let offset = _mm512_set1_epi8(1 << K::OFFSET_SHIFT);
    // superblock after superblock, so each one's tiles are written while in L1
    for b in 0..blocks {
        for r in 0..rows {
            let blk = &w[(row0 + r) * row_bytes + b * K::BYTES..][..K::BYTES];
            buf.d[b * TILE + r] = table[u16::from_le_bytes([blk[K::D_AT], blk[K::D_AT + 1]]) as usize];
            let mut sc = [0i8; 16];
            _mm_storeu_si128(sc.as_mut_ptr() as *mut __m128i, K::scales(blk.as_ptr()));
            for (i, &s) in sc.iter().enumerate() {
                buf.scales[(b * SUBS6 + i) * TILE + r] = s as i32;
            }
            for (m, codes) in K::codes(blk.as_ptr()).iter().enumerate() {
                let codes = &_mm512_sub_epi8(*codes, offset);
                // register m holds sub-blocks 4m..4m+4, 16 codes each
                let at = |q: usize| dst.add(b * PANEL_SUPER6 + (4 * m + q) * 256 + 16 * r) as *mut __m128i;
                _mm_storeu_si128(at(0), _mm512_extracti32x4_epi32::<0>(*codes));
                _mm_storeu_si128(at(1), _mm512_extracti32x4_epi32::<1>(*codes));
                _mm_storeu_si128(at(2), _mm512_extracti32x4_epi32::<2>(*codes));
                _mm_storeu_si128(at(3), _mm512_extracti32x4_epi32::<3>(*codes));
            }
        }
    }
}

/// [`panel`] for Q6_K or Q3_K weights (`kind`; tokens prepared by
/// [`prepare_tile_q6_k`] for both).
///
/// # Safety
/// As [`panel`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel_sixteen_kind(
    kind: QuantKind,
    w: &[u8],
    row_bytes: usize,
    row0: usize,
    rows: usize,
    tokens: &[u8],
    t: usize,
    n: usize,
    out: *mut f32,
    buf: &mut PanelBuffers,
) {
    match kind {
        QuantKind::Q6K => panel_sixteen::<Q6K>(w, row_bytes, row0, rows, tokens, t, n, out, buf),
        QuantKind::Q3K => panel_sixteen::<Q3K>(w, row_bytes, row0, rows, tokens, t, n, out, buf),
        _ => panic!("{} has no 16-weight sub-block AMX panel", kind.name()),
    }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq")]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::needless_range_loop)] // constant-bound indexing keeps the accumulators in registers
unsafe fn panel_sixteen<K: SixteenSubBlocks>(
    w: &[u8],
    row_bytes: usize,
    row0: usize,
    rows: usize,
    tokens: &[u8],
    t: usize,
    n: usize,
    out: *mut f32,
    buf: &mut PanelBuffers,
) {
    let blocks = row_bytes / K::BYTES;
    assert!(rows <= TILE && w.len() >= (row0 + rows) * row_bytes, "panel rows");
    assert_eq!(tokens.len(), prepared_bytes_q6_k(t, blocks), "prepared tokens");
    unpack_panel_sixteen::<K>(w, row_bytes, row0, rows, buf);
    configure(16);
    let mut sum_sets = [
        SubSums::<SUBS6>([[0; TILE * TILE]; SUBS6]),
        SubSums::<SUBS6>([[0; TILE * TILE]; SUBS6]),
    ];
    for tile in 0..t.div_ceil(TILE) {
        let mut acc = [_mm512_setzero_ps(); TILE];
        for b in 0..blocks {
            let x = tokens.as_ptr().add((tile * blocks + b) * TOKEN_SUPER6);
            let a = buf.weights.as_slice().as_ptr().add(b * PANEL_SUPER6);
            let sums = &mut sum_sets[b % 2];
            for i in (0..SUBS6).step_by(2) {
                two_products::<true>(
                    [a.add(256 * i), a.add(256 * (i + 1))],
                    16,
                    [x.add(256 * i), x.add(256 * (i + 1))],
                    [sums.0[i].as_mut_ptr(), sums.0[i + 1].as_mut_ptr()],
                );
            }
            let dx = _mm512_loadu_ps(x.add(SCALES_AT6) as *const f32);
            for r in 0..TILE {
                let mut dot = _mm512_setzero_si512();
                for i in 0..SUBS6 {
                    let s = _mm512_loadu_si512(sums.0[i][TILE * r..].as_ptr() as *const __m512i);
                    let sc = _mm512_set1_epi32(buf.scales[(b * SUBS6 + i) * TILE + r]);
                    dot = _mm512_add_epi32(dot, _mm512_mullo_epi32(s, sc));
                }
                let d = _mm512_mul_ps(_mm512_set1_ps(buf.d[b * TILE + r]), dx);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), d, acc[r]);
            }
        }
        store_transposed(&acc, out, n, tile * TILE, TILE.min(t - tile * TILE), row0, rows);
    }
    asm!("tilerelease", options(nostack, nomem));
}
