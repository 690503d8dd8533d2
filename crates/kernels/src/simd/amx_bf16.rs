//! AMX-BF16 (`tdpbf16ps`) for prompts over f16 and bf16 weights: the f32
//! units' peak caps exact f32 products at ~0.23 TFLOP/s on two cores, while
//! the tile unit multiplies bf16 pairs several times faster.
//!
//! Each f16 weight is split exactly into two bf16 parts (`hi` = its top 8
//! significant bits, `lo` = the other 3; a bf16 weight is its own `hi`),
//! each f32 activation into three (`p0 + p1 + p2`, 8 + 8 + 8 significant
//! bits), and a bf16 × bf16 product is exact in f32. Σ w·x is taken as the
//! sum of the exact part products but `lo · p2`, which is below 2⁻²¹ of
//! `w·x` (typically 2⁻²⁵, under an f32 product's own rounding of 2⁻²⁴) and
//! would cost a sixth tile product for nothing: 5 products per step (bf16:
//! 3). Beyond that only the accumulation differs from the f32 kernels: the
//! tile unit adds inside each 32-pair step in an
//! order of its own (measured here: no sequential f32 order reproduces it),
//! with subnormal parts flushed. The result is therefore held to a bound,
//! not to bits (tests: within `(k/32 + 4) · 2⁻²⁴ · Σ|w·x|` of the exact
//! sum), and a prompt's products may differ from a one-token step's in the
//! last bits, as in every engine whose prompt and decode kernels differ.
//!
//! Layouts (Intel SDM, TDPBF16PS): the A tile is 16 weight rows × 32 bf16
//! of one part (row-major, as the rows are stored); the B tile is one
//! activation part of 16 tokens in pairs, `B[kk][2·token + e]` = part of
//! `x[token][2·kk + e]`; `C[row][token]` f32 accumulates over all of k.
//! One panel of 16 rows and two token tiles take four C tiles: the leading
//! products (`hi · p0`) of each token tile in one, the four smaller ones
//! (at most 2⁻⁷ of those) in another, added once at the end, so the tile
//! unit's own rounding falls mostly on small sums; with two A tiles (`hi`,
//! `lo`) and two B tiles that is all eight tile registers.

use std::arch::asm;
use std::arch::x86_64::*;

use super::amx::{store_transposed, TILE};
use super::float_tile::FloatWeight;
use crate::aligned::AlignedBytes;

/// Inner elements per tile product (32 bf16: 64 bytes per tile row).
pub const STEP: usize = 32;
/// Bytes of one tile (16 rows of 64 bytes).
const TILE_BYTES: usize = 1024;
/// bf16 parts of an activation.
const X_PARTS: usize = 3;

/// Whether this CPU has AMX-BF16 and the tile state is granted.
pub fn available() -> bool {
    // CPUID leaf 7: EDX bit 22 AMX-BF16
    let edx = __cpuid_count(7, 0).edx;
    edx & (1 << 22) != 0 && super::amx::available()
}

/// `v` with the low 16 bits of its encoding cleared (its top 8 significant bits).
#[inline(always)]
fn truncated(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0xFFFF_0000)
}

/// The bf16 encoding of an f32 whose low 16 bits are zero.
#[inline(always)]
fn top(v: f32) -> u16 {
    (v.to_bits() >> 16) as u16
}

/// The three bf16 parts of an activation, `a = p0 + p1 + p2` exactly
/// (each remainder is exact; each part takes 8 significant bits).
pub fn split_activation(a: f32) -> [u16; 3] {
    let p0 = truncated(a);
    let r = a - p0;
    let p1 = truncated(r);
    [top(p0), top(p1), top(r - p1)]
}

/// The two bf16 parts of a weight with at most 16 significant bits (an f16
/// or bf16 value), `w = hi + lo` exactly.
pub fn split_weight(w: f32) -> [u16; 2] {
    let hi = truncated(w);
    [top(hi), top(w - hi)]
}

/// Word indices that take the top halves of 32 f32 lanes (two registers).
static TOP_HALVES: [u16; 32] = {
    let mut idx = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        idx[i] = (2 * i + 1) as u16;
        i += 1;
    }
    idx
};

/// 32 f32 values (two registers) as 32 bf16 encodings of their top halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn tops(lo: __m512, hi: __m512) -> __m512i {
    let idx = _mm512_loadu_si512(TOP_HALVES.as_ptr() as *const __m512i);
    _mm512_permutex2var_epi16(_mm512_castps_si512(lo), idx, _mm512_castps_si512(hi))
}

/// The parts of 32 values: `[p0, p1, p2]` (activations, `PARTS` = 3) or
/// `[hi, lo]` (weights, `PARTS` = 2), each as 32 bf16 words.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn parts<const PARTS: usize>(v: [__m512; 2]) -> [__m512i; PARTS] {
    let mask = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let trunc = |x: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), mask));
    let p0 = v.map(trunc);
    let r = [_mm512_sub_ps(v[0], p0[0]), _mm512_sub_ps(v[1], p0[1])];
    let mut out = [_mm512_setzero_si512(); PARTS];
    out[0] = tops(p0[0], p0[1]);
    if PARTS == 2 {
        out[1] = tops(r[0], r[1]);
    } else {
        let p1 = r.map(trunc);
        out[1] = tops(p1[0], p1[1]);
        out[2] = tops(_mm512_sub_ps(r[0], p1[0]), _mm512_sub_ps(r[1], p1[1]));
    }
    out
}

/// 32 elements from `src` (fewer at the row's end: the rest are zero) as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn load32<T: FloatWeight>(src: &[T]) -> [__m512; 2] {
    if src.len() >= STEP {
        return [T::load16(src.as_ptr()), T::load16(src.as_ptr().add(16))];
    }
    let mut vals = [0f32; STEP];
    for (v, s) in vals.iter_mut().zip(src) {
        *v = s.widen();
    }
    [_mm512_loadu_ps(vals.as_ptr()), _mm512_loadu_ps(vals.as_ptr().add(16))]
}

/// Steps (of [`STEP`] elements) over inner size `k`.
fn steps(k: usize) -> usize {
    k.div_ceil(STEP)
}

/// Bytes of the prepared activations of `t` tokens: per tile of 16 tokens,
/// per step, the three parts' B tiles.
pub fn prepared_bytes(t: usize, k: usize) -> usize {
    t.div_ceil(TILE) * steps(k) * X_PARTS * TILE_BYTES
}

/// Writes token tile `tile` (tokens `16·tile..`, missing ones zero) of the
/// activations `x` (`t` rows of `k`) into `out` as B tiles.
pub fn prepare_tile(x: &[f32], t: usize, k: usize, tile: usize, out: &mut [u8]) {
    assert_eq!(out.len(), steps(k) * X_PARTS * TILE_BYTES, "prepared tile size");
    out.fill(0);
    let tokens = TILE.min(t.saturating_sub(tile * TILE));
    // SAFETY: the VNNI level (AVX-512 F/BW) is present wherever AMX is used;
    // every scatter lands in `out` (step · 3 KiB + part KiB + 64 · kk + 4 · token).
    unsafe { prepare_rows(x, k, tile * TILE, tokens, out) }
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn prepare_rows(x: &[f32], k: usize, first: usize, tokens: usize, out: &mut [u8]) {
    let rows = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(64),
    );
    for m in 0..tokens {
        let row = &x[(first + m) * k..][..k];
        for s in 0..steps(k) {
            let p = parts::<X_PARTS>(load32(&row[s * STEP..]));
            let base = out.as_mut_ptr().add(s * X_PARTS * TILE_BYTES + 4 * m);
            for (i, part) in p.into_iter().enumerate() {
                // dword kk (elements 2kk, 2kk + 1) goes to row kk, column m
                _mm512_i32scatter_epi32::<1>(base.add(i * TILE_BYTES) as *mut i32, rows, part);
            }
        }
    }
}

/// Per-thread buffers: converted weight panels and result tiles.
#[derive(Default)]
pub struct PanelBuffers {
    weights: AlignedBytes,
    results: AlignedBytes,
}

/// Writes the A tiles of weight rows `row0..row0 + rows` (at most 16,
/// missing rows zero), steps `steps` of the row, into `out`: per step,
/// `W_PARTS` tiles. Kept out of line: inlined into [`product_rows`] it
/// halved the tile loop's speed (measured, one thread).
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn convert_panel<T: FloatWeight, const W_PARTS: usize>(
    w: &[T],
    k: usize,
    row0: usize,
    rows: usize,
    steps: std::ops::Range<usize>,
    out: &mut [u8],
) {
    let step_bytes = W_PARTS * TILE_BYTES;
    assert!(out.len() >= steps.len() * step_bytes, "panel buffer");
    // step by step, each step's tiles written whole (16 rows read side by side)
    for (i, s) in steps.enumerate() {
        for r in 0..TILE {
            let dst = out.as_mut_ptr().add(i * step_bytes + 64 * r);
            let p = if r < rows {
                let row = &w[(row0 + r) * k..][..k];
                parts::<2>(load32(&row[s * STEP..]))
            } else {
                [_mm512_setzero_si512(); 2]
            };
            for (q, part) in p.into_iter().take(W_PARTS).enumerate() {
                _mm512_storeu_si512(dst.add(q * TILE_BYTES) as *mut __m512i, part);
            }
        }
    }
}

/// Eight tiles of 16 rows × 64 bytes.
unsafe fn configure() {
    super::amx::load_tile_config(&[(16, 64); 8]);
}

/// The four C tiles of one panel and two token tiles (without `TWO`, one:
/// `tmm1` and `tmm3` then go unused) (`tmm0`, `tmm1`: the
/// leading products `hi · p0` of tokens 0 and 1; `tmm2`, `tmm3`: all the
/// smaller part products, at most 2⁻⁷ of those, so the tile unit's
/// rounding there costs little), loaded from `c` (4 KiB; zeroed when
/// `fresh`), advanced over `steps` steps and stored back: `a` the panel's
/// converted weights, `b` the two token tiles' prepared activations at the
/// first of these steps.
#[inline]
unsafe fn four_tiles<const W_PARTS: usize, const TWO: bool>(
    a: *const u8,
    b: [*const u8; 2],
    steps: usize,
    c: *mut u8,
    fresh: bool,
) {
    if fresh {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
    } else {
        asm!(
            "tileloadd tmm0, [{c} + {stride}]",
            "tileloadd tmm1, [{c} + {stride} + 1024]",
            "tileloadd tmm2, [{c} + {stride} + 2048]",
            "tileloadd tmm3, [{c} + {stride} + 3072]",
            c = in(reg) c,
            stride = in(reg) 64usize,
            options(nostack, readonly),
        );
    }
    for s in 0..steps {
        let a = a.add(s * W_PARTS * TILE_BYTES);
        asm!("tileloadd tmm4, [{a} + {stride}]", a = in(reg) a, stride = in(reg) 64usize, options(nostack, readonly));
        if W_PARTS == 2 {
            asm!("tileloadd tmm5, [{a} + {stride}]", a = in(reg) a.add(TILE_BYTES), stride = in(reg) 64usize, options(nostack, readonly));
        }
        for p in 0..X_PARTS {
            let at = (s * X_PARTS + p) * TILE_BYTES;
            asm!("tileloadd tmm6, [{b} + {stride}]", b = in(reg) b[0].add(at), stride = in(reg) 64usize, options(nostack, readonly));
            if TWO {
                asm!("tileloadd tmm7, [{b} + {stride}]", b = in(reg) b[1].add(at), stride = in(reg) 64usize, options(nostack, readonly));
            }
            // hi · p0 into the leading tiles, every other product into the
            // small ones; lo · p2 (below 2⁻²¹ of w·x, typically 2⁻²⁵) is left out
            let lo = W_PARTS == 2 && p < 2;
            match (p == 0, TWO) {
                (true, true) => asm!(
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    options(nostack, nomem)
                ),
                (true, false) => asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem)),
                (false, true) => asm!(
                    "tdpbf16ps tmm2, tmm4, tmm6",
                    "tdpbf16ps tmm3, tmm4, tmm7",
                    options(nostack, nomem)
                ),
                (false, false) => asm!("tdpbf16ps tmm2, tmm4, tmm6", options(nostack, nomem)),
            }
            match (lo, TWO) {
                (true, true) => asm!(
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    options(nostack, nomem)
                ),
                (true, false) => asm!("tdpbf16ps tmm2, tmm5, tmm6", options(nostack, nomem)),
                _ => {}
            }
        }
    }
    asm!(
        "tilestored [{c} + {stride}], tmm0",
        "tilestored [{c} + {stride} + 1024], tmm1",
        "tilestored [{c} + {stride} + 2048], tmm2",
        "tilestored [{c} + {stride} + 3072], tmm3",
        c = in(reg) c,
        stride = in(reg) 64usize,
        options(nostack),
    );
}

/// Weight rows per block: its converted chunk (~512 KiB) and its result
/// tiles stay in L2 while the token tiles pass over them.
const BLOCK_PANELS: usize = 8;
/// Steps per chunk of k (1024 elements): a block's converted chunk is
/// `BLOCK_PANELS · CHUNK_STEPS · W_PARTS` KiB.
const CHUNK_STEPS: usize = 32;

/// `out[token · n + row]` for weight rows `rows` (a range of whole panels
/// but the matrix's last) and every token, from f16 or bf16 weights `w`
/// (`n` rows of `k`) and the prepared tokens (`prepared_bytes(t, k)`).
///
/// Blocks of [`BLOCK_PANELS`] panels go one after another; within a block,
/// k goes by chunks of [`CHUNK_STEPS`] steps (the chunk of weights
/// converted once), and every pair of token tiles passes over the block's
/// pairs of panels, the result tiles kept in L2 between chunks. So the
/// tokens stream from memory once per block and chunk, the weights once.
///
/// # Safety
/// [`available`] must have returned true; AVX-512 F/BW/DQ present; `out`
/// must hold `t · n` floats, and no other thread may write these rows of it.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn product_rows<T: FloatWeight, const W_PARTS: usize>(
    w: &[T],
    n: usize,
    k: usize,
    rows: std::ops::Range<usize>,
    tokens: &[u8],
    t: usize,
    out: *mut f32,
    buf: &mut PanelBuffers,
) {
    assert!(rows.end <= n && w.len() >= n * k, "weight rows");
    assert_eq!(tokens.len(), prepared_bytes(t, k), "prepared tokens");
    let steps = steps(k);
    let step_bytes = W_PARTS * TILE_BYTES;
    let chunk_bytes = CHUNK_STEPS * step_bytes;
    let tile_bytes = steps * X_PARTS * TILE_BYTES;
    let token_tiles = t.div_ceil(TILE);
    let token_pairs = token_tiles.div_ceil(2);
    let panels = rows.len().div_ceil(TILE);
    buf.weights.resize(BLOCK_PANELS * chunk_bytes);
    // four result tiles per (pair of panels, pair of token tiles)
    buf.results.resize(BLOCK_PANELS * token_pairs * 4 * TILE_BYTES);
    configure();
    for block0 in (0..panels).step_by(BLOCK_PANELS) {
        let block = block0..(block0 + BLOCK_PANELS).min(panels);
        for chunk0 in (0..steps).step_by(CHUNK_STEPS) {
            let chunk = chunk0..(chunk0 + CHUNK_STEPS).min(steps);
            for p in block.clone() {
                let row0 = rows.start + p * TILE;
                let count = TILE.min(rows.end - row0);
                let dst = &mut buf.weights.as_mut_slice()[(p - block0) * chunk_bytes..][..chunk_bytes];
                convert_panel::<T, W_PARTS>(w, k, row0, count, chunk.clone(), dst);
            }
            for pair in 0..token_pairs {
                let tiles = [2 * pair, (2 * pair + 1).min(token_tiles - 1)];
                let b = tiles.map(|i| tokens.as_ptr().add(i * tile_bytes + chunk0 * X_PARTS * TILE_BYTES));
                for p in block.clone() {
                    let a = buf.weights.as_slice().as_ptr().add((p - block0) * chunk_bytes);
                    let c = result_tiles(buf, p - block0, pair, token_pairs);
                    // a last token tile without a partner goes alone
                    if tiles[1] != tiles[0] {
                        four_tiles::<W_PARTS, true>(a, b, chunk.len(), c, chunk0 == 0);
                    } else {
                        four_tiles::<W_PARTS, false>(a, b, chunk.len(), c, chunk0 == 0);
                    }
                }
            }
        }
        for pair in 0..token_pairs {
            for p in block.clone() {
                let c = result_tiles(buf, p - block0, pair, token_pairs) as *const f32;
                let row0 = rows.start + p * TILE;
                for (ti, tile) in [2 * pair, 2 * pair + 1].into_iter().enumerate() {
                    if tile >= token_tiles {
                        break;
                    }
                    // the leading products plus the smaller ones, one rounding
                    let (lead, rest) = (c.add(ti * TILE * TILE), c.add((2 + ti) * TILE * TILE));
                    let acc: [__m512; TILE] = std::array::from_fn(|r| {
                        _mm512_add_ps(_mm512_loadu_ps(lead.add(16 * r)), _mm512_loadu_ps(rest.add(16 * r)))
                    });
                    let first = tile * TILE;
                    store_transposed(
                        &acc,
                        out,
                        n,
                        first,
                        TILE.min(t - first),
                        row0,
                        TILE.min(rows.end - row0),
                    );
                }
            }
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// The four result tiles of a block's `panel` and token pair `pair`.
fn result_tiles(buf: &mut PanelBuffers, panel: usize, pair: usize, token_pairs: usize) -> *mut u8 {
    let at = (panel * token_pairs + pair) * 4 * TILE_BYTES;
    buf.results.as_mut_slice()[at..][..4 * TILE_BYTES].as_mut_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widen(b: u16) -> f64 {
        f32::from_bits((b as u32) << 16) as f64
    }

    /// The parts add up to the value exactly: f32 activations of every
    /// magnitude and sign, and every finite f16 and bf16 weight.
    #[test]
    fn parts_add_up_exactly() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let a = f32::from_bits(state as u32);
            if !a.is_finite() || a.abs() < 1e-30 {
                continue;
            }
            let [p0, p1, p2] = split_activation(a);
            assert_eq!(widen(p0) + widen(p1) + widen(p2), a as f64, "{a:e}");
        }
        for bits in 0..=u16::MAX {
            for w in [
                half::f16::from_bits(bits).to_f32(),
                half::bf16::from_bits(bits).to_f32(),
            ] {
                if w.is_finite() {
                    let [hi, lo] = split_weight(w);
                    assert_eq!(widen(hi) + widen(lo), w as f64, "{w:e}");
                }
            }
        }
    }

    /// The vector split gives the scalar split's words.
    #[test]
    fn vector_parts_match_the_scalar_split() {
        if !crate::simd::amx_bf16() {
            return;
        }
        let vals: Vec<f32> = (0..32)
            .map(|i| (i as f32 - 15.3) * 0.377 + 1e-3 / (i as f32 + 1.0))
            .collect();
        // SAFETY: AMX-BF16 implies the AVX-512 the split uses.
        let (x3, w2) = unsafe {
            let v = [_mm512_loadu_ps(vals.as_ptr()), _mm512_loadu_ps(vals.as_ptr().add(16))];
            (parts::<3>(v), parts::<2>(v))
        };
        let words = |v: __m512i| unsafe { std::mem::transmute::<__m512i, [u16; 32]>(v) };
        for (i, &a) in vals.iter().enumerate() {
            let want = split_activation(a);
            for p in 0..3 {
                assert_eq!(words(x3[p])[i], want[p], "activation part {p} of {a}");
            }
            let want = split_weight(a);
            for q in 0..2 {
                assert_eq!(words(w2[q])[i], want[q], "weight part {q} of {a}");
            }
        }
    }
}
