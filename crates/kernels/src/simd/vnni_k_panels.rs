//! AVX-512 VNNI kernels for Q4_K, Q5_K and Q6_K panels
//! (`quant::q4_k_panels`, `quant::q6_k_panels`) × Q8_K tokens: 16 weight
//! rows at a time, one row per 32-bit lane.
//!
//! Q4_K:
//! Per sub-block of 32 weights, eight code vectors (the low or the high
//! nibbles of a chunk's eight vectors) each hold four weights of all 16
//! rows; for each token, eight `vpdpbusd` against the token's activation
//! bytes (four at a time, broadcast, read in place from its Q8_K block)
//! leave the sub-block's sums Σ q·x in the row lanes, and one `vpmulld` by
//! the rows' 6-bit scales adds it into the superblock's integer dot. The
//! minimums' term takes one `vpdpwssd` per sub-block and token: the rows'
//! m_j as a pair of equal i16s against the token's two 16-value sums. Then,
//! as the twin (`quant::dot::dot_q4_k_q8_k_blockwise_scalar`) does, two
//! fused multiply-adds per superblock and token, bit for bit. No lane
//! shuffles and no sums across lanes. Q5_K: the same, each code vector
//! with its fifth bits put in from the superblock's `qh` vectors.
//!
//! Q6_K: the same with sub-blocks of 16 (four `vpdpbusd` and one `vpmulld`
//! by the rows' signed scales each), the 6-bit codes put together from the
//! `ql` nibbles and `qh` fields of four weights of all 16 rows at a time;
//! the −32 offset as −32·Σ_i sc_i·bsum_i, eight `vpdpwssd` per superblock
//! and token; then the twin's (`dot_q6_k_q8_k_blockwise_scalar`) one fused
//! multiply-add.

use std::arch::x86_64::*;

use crate::quant::q4_k_panels::{DMIN_AT, D_AT, Q5_SUPER_BYTES, QH_AT, SCALES_AT, SUPER_BYTES};
use crate::quant::{q6_k_panels, q8_k, KPanels};

/// How far ahead of the superblock being multiplied its panel is fetched
/// (as the Q4_0 panels: `vnni_panels::PREFETCH_AHEAD`).
const PREFETCH_AHEAD: usize = 4096;

/// Most tokens per pass over a panel (their accumulators stay in registers).
pub const MAX_TOKENS: usize = 8;

/// Sub-block `j`'s 6-bit field (scale or minimum) of every row, as i32
/// lanes, from the rows' unpacked fields of sub-blocks 0-3 (`lo`, one byte
/// each) and 4-7 (`hi`).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn field(lo: __m512i, hi: __m512i, j: usize) -> __m512i {
    let v = if j < 4 { lo } else { hi };
    _mm512_and_si512(
        _mm512_srlv_epi32(v, _mm512_set1_epi32(8 * (j % 4) as i32)),
        _mm512_set1_epi32(0xFF),
    )
}

/// Q4_K (`Q5` false) or Q5_K: rows of one panel × tokens `m0..m0 + C` of
/// `x` (Q8_K rows of `row_bytes`): `out[(m0 + c) · n + row0 + r]`.
///
/// # Safety
/// AVX-512 F/BW/VNNI and FMA present; `panel` holds a whole panel of
/// `supers` superblocks; `x` holds tokens `m0..m0 + C`, each `supers`
/// Q8_K blocks; `out` holds those elements and no other thread writes them.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn pass<const Q5: bool, const C: usize>(
    panel: *const u8,
    supers: usize,
    x: &[u8],
    row_bytes: usize,
    m0: usize,
    out: *mut f32,
    n: usize,
    row0: usize,
) {
    let nibble = _mm512_set1_epi8(0x0F);
    let fifth = _mm512_set1_epi8(0x10);
    let super_bytes = if Q5 { Q5_SUPER_BYTES } else { SUPER_BYTES };
    let (low6, low4, top2) = (
        _mm512_set1_epi32(0x3F3F_3F3F),
        _mm512_set1_epi32(0x0F0F_0F0F),
        _mm512_set1_epi32(0x0303_0303),
    );
    let xs: [*const u8; C] = std::array::from_fn(|c| x.as_ptr().add((m0 + c) * row_bytes));
    let to_l2 = super::prefetch_to_l2();
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..supers {
        let sb = panel.add(b * super_bytes);
        let xb: [*const u8; C] = std::array::from_fn(|c| xs[c].add(b * q8_k::BYTES));
        // the rows' packed scale words, unpacked as `q4_k_scales_mins_x86`
        // does for one row: bytes of sc_0..3, sc_4..7, m_0..3, m_4..7
        let word = |i: usize| _mm512_loadu_si512(sb.add(SCALES_AT + 64 * i) as *const __m512i);
        let (wa, wb, wc) = (word(0), word(1), word(2));
        let sc_lo = _mm512_and_si512(wa, low6);
        let m_lo = _mm512_and_si512(wb, low6);
        let sc_hi = _mm512_or_si512(
            _mm512_and_si512(wc, low4),
            _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(wa), top2)),
        );
        let m_hi = _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi32::<4>(wc), low4),
            _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(wb), top2)),
        );
        let mut dot = [_mm512_setzero_si512(); C];
        for chunk in 0..4 {
            let codes_at = sb.add(512 * chunk);
            // a quarter of the superblock ahead per chunk (nine lines of
            // Q4_K's 36, eleven of Q5_K's 44)
            let quarter = super_bytes / 4;
            let ahead = sb.wrapping_add(PREFETCH_AHEAD + quarter * chunk);
            for line in 0..quarter / 64 {
                super::prefetch_line(ahead.wrapping_add(64 * line), to_l2);
            }
            for half in 0..2 {
                let j = 2 * chunk + half;
                let codes: [__m512i; 8] = std::array::from_fn(|v| {
                    let packed = _mm512_loadu_si512(codes_at.add(64 * v) as *const __m512i);
                    let shifted = if half == 0 {
                        packed
                    } else {
                        _mm512_srli_epi16::<4>(packed)
                    };
                    if !Q5 {
                        return _mm512_and_si512(shifted, nibble);
                    }
                    // bit j of each qh byte to bit 4
                    let qh = _mm512_loadu_si512(sb.add(QH_AT + 64 * v) as *const __m512i);
                    let bit = if j <= 4 {
                        _mm512_sll_epi16(qh, _mm_cvtsi32_si128(4 - j as i32))
                    } else {
                        _mm512_srl_epi16(qh, _mm_cvtsi32_si128(j as i32 - 4))
                    };
                    nibble_or(shifted, _mm512_and_si512(bit, fifth), nibble)
                });
                let sc = field(sc_lo, sc_hi, j);
                for c in 0..C {
                    let xv = xb[c].add(4 + 32 * j);
                    let mut s = _mm512_setzero_si512();
                    for (v, &code) in codes.iter().enumerate() {
                        let x4 = _mm512_set1_epi32((xv.add(4 * v) as *const i32).read_unaligned());
                        s = _mm512_dpbusd_epi32(s, code, x4);
                    }
                    dot[c] = _mm512_add_epi32(dot[c], _mm512_mullo_epi32(s, sc));
                }
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(sb.add(D_AT) as *const __m256i));
        let neg_dmin = _mm512_sub_ps(
            _mm512_setzero_ps(),
            _mm512_cvtph_ps(_mm256_loadu_si256(sb.add(DMIN_AT) as *const __m256i)),
        );
        // m_j as a pair of equal i16s: vpdpwssd against (bsum_2j, bsum_2j+1)
        let m_pairs: [__m512i; 8] = std::array::from_fn(|j| {
            let m = field(m_lo, m_hi, j);
            _mm512_or_si512(m, _mm512_slli_epi32::<16>(m))
        });
        for c in 0..C {
            let mut mins = _mm512_setzero_si512();
            for (j, &pair) in m_pairs.iter().enumerate() {
                let sums = _mm512_set1_epi32((xb[c].add(260 + 4 * j) as *const i32).read_unaligned());
                mins = _mm512_dpwssd_epi32(mins, pair, sums);
            }
            let dx = _mm512_set1_ps((xb[c] as *const f32).read_unaligned());
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[c]), _mm512_mul_ps(d, dx), acc[c]);
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(neg_dmin, dx), acc[c]);
        }
    }
    for (c, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add((m0 + c) * n + row0), *a);
    }
}

/// `(a & mask) | b` in one instruction (the codes' low nibbles from `a`,
/// their high bits `b`, already masked).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn nibble_or(a: __m512i, b: __m512i, mask: __m512i) -> __m512i {
    // truth table of (a & c) | b, bit (a·4 + b·2 + c)
    _mm512_ternarylogic_epi32::<0xEC>(a, b, mask)
}

/// Byte `i` (0..4) of each lane of `v`, sign-extended to the lane.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn signed_byte(v: __m512i, i: usize) -> __m512i {
    _mm512_srai_epi32::<24>(_mm512_sllv_epi32(v, _mm512_set1_epi32(24 - 8 * i as i32)))
}

/// Q6_K: rows of one panel × tokens `m0..m0 + C` of `x`, as [`pass`].
///
/// # Safety
/// As [`pass`], `panel` a Q6_K panel of `supers` superblocks.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn pass_q6_k<const C: usize>(
    panel: *const u8,
    supers: usize,
    x: &[u8],
    row_bytes: usize,
    m0: usize,
    out: *mut f32,
    n: usize,
    row0: usize,
) {
    use q6_k_panels::{QH_AT, SCALES_AT, SUPER_BYTES};
    let (low4, high2) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    let ds = panel.add(supers * SUPER_BYTES);
    let xs: [*const u8; C] = std::array::from_fn(|c| x.as_ptr().add((m0 + c) * row_bytes));
    let to_l2 = super::prefetch_to_l2();
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..supers {
        let sb = panel.add(b * SUPER_BYTES);
        let xb: [*const u8; C] = std::array::from_fn(|c| xs[c].add(b * q8_k::BYTES));
        let scales = |q: usize| _mm512_loadu_si512(sb.add(SCALES_AT + 64 * q) as *const __m512i);
        let mut total = [_mm512_setzero_si512(); C];
        for h in 0..2 {
            for a in 0..4 {
                // eight steps per superblock, seven lines each (four the
                // last): the 52 lines of the superblock ahead
                let ahead = sb.wrapping_add(PREFETCH_AHEAD);
                let step = 4 * h + a;
                for line in 7 * step..(7 * step + 7).min(SUPER_BYTES / 64) {
                    super::prefetch_line(ahead.wrapping_add(64 * line), to_l2);
                }
                // weights 128h + 32a + 4g..+4 of the 16 rows (g in 0..8)
                let codes: [__m512i; 8] = std::array::from_fn(|g| {
                    let ql = _mm512_loadu_si512(sb.add(1024 * h + 64 * (8 * (a % 2) + g)) as *const __m512i);
                    let low = if a < 2 { ql } else { _mm512_srli_epi16::<4>(ql) };
                    let qh = _mm512_loadu_si512(sb.add(QH_AT + 512 * h + 64 * g) as *const __m512i);
                    // bits 2a, 2a + 1 of each byte to bits 4, 5
                    let high = match a {
                        0 => _mm512_slli_epi16::<4>(qh),
                        1 => _mm512_slli_epi16::<2>(qh),
                        2 => qh,
                        _ => _mm512_srli_epi16::<2>(qh),
                    };
                    nibble_or(low, _mm512_and_si512(high, high2), low4)
                });
                for half in 0..2 {
                    let i = 8 * h + 2 * a + half;
                    let sc = signed_byte(scales(i / 4), i % 4);
                    for c in 0..C {
                        let xv = xb[c].add(4 + 16 * i);
                        let mut s = _mm512_setzero_si512();
                        for q in 0..4 {
                            let x4 = _mm512_set1_epi32((xv.add(4 * q) as *const i32).read_unaligned());
                            s = _mm512_dpbusd_epi32(s, codes[4 * half + q], x4);
                        }
                        total[c] = _mm512_add_epi32(total[c], _mm512_mullo_epi32(s, sc));
                    }
                }
            }
        }
        // sc_2p and sc_2p+1 as the i16 halves of a lane: vpdpwssd against
        // (bsum_2p, bsum_2p+1) gives Σ_i sc_i·bsum_i
        let pairs: [__m512i; 8] = std::array::from_fn(|p| {
            let (lo, hi) = (
                signed_byte(scales(p / 2), 2 * p % 4),
                signed_byte(scales(p / 2), 2 * p % 4 + 1),
            );
            _mm512_or_si512(
                _mm512_and_si512(lo, _mm512_set1_epi32(0xFFFF)),
                _mm512_slli_epi32::<16>(hi),
            )
        });
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(ds.add(32 * b) as *const __m256i));
        for c in 0..C {
            let mut offsets = _mm512_setzero_si512();
            for (p, &pair) in pairs.iter().enumerate() {
                let sums = _mm512_set1_epi32((xb[c].add(260 + 4 * p) as *const i32).read_unaligned());
                offsets = _mm512_dpwssd_epi32(offsets, pair, sums);
            }
            let t = _mm512_sub_epi32(total[c], _mm512_slli_epi32::<5>(offsets));
            let dx = _mm512_set1_ps((xb[c] as *const f32).read_unaligned());
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_mul_ps(d, dx), acc[c]);
        }
    }
    for (c, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add((m0 + c) * n + row0), *a);
    }
}

/// Rows `row0..row0 + 16` of the product (their panel at `panel`, `k`
/// weights a row, of type `quant`) for all `t` tokens of `x` (Q8_K rows
/// back to back): `out[m · n + row0 + r]`.
///
/// # Safety
/// As [`pass`], for all `t` tokens.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel(
    quant: KPanels,
    panel: *const u8,
    k: usize,
    x: &[u8],
    t: usize,
    out: *mut f32,
    n: usize,
    row0: usize,
) {
    let supers = k / crate::quant::q4_k_panels::SUPER;
    let row_bytes = supers * q8_k::BYTES;
    debug_assert_eq!(x.len(), t * row_bytes);
    // `$pass::<$($first,)? C>` over the tokens by passes of up to MAX_TOKENS
    macro_rules! passes {
        ($pass:ident $(, $first:literal)?) => {{
            let mut m0 = 0;
            while m0 < t {
                let c = (t - m0).min(MAX_TOKENS);
                match c {
                    1 => $pass::<$($first,)? 1>(panel, supers, x, row_bytes, m0, out, n, row0),
                    2 => $pass::<$($first,)? 2>(panel, supers, x, row_bytes, m0, out, n, row0),
                    3 => $pass::<$($first,)? 3>(panel, supers, x, row_bytes, m0, out, n, row0),
                    4 => $pass::<$($first,)? 4>(panel, supers, x, row_bytes, m0, out, n, row0),
                    5 => $pass::<$($first,)? 5>(panel, supers, x, row_bytes, m0, out, n, row0),
                    6 => $pass::<$($first,)? 6>(panel, supers, x, row_bytes, m0, out, n, row0),
                    7 => $pass::<$($first,)? 7>(panel, supers, x, row_bytes, m0, out, n, row0),
                    _ => $pass::<$($first,)? 8>(panel, supers, x, row_bytes, m0, out, n, row0),
                }
                m0 += c;
            }
        }};
    }
    match quant {
        KPanels::Q4K => passes!(pass, false),
        KPanels::Q5K => passes!(pass, true),
        KPanels::Q6K => passes!(pass_q6_k),
    }
}
