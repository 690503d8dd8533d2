//! AVX-512 VNNI tile kernels for the K-quants Q4_K, Q5_K and Q6_K × Q8_K
//! activations, reading the file's 256-weight superblocks in place (no
//! repacking).
//!
//! A superblock's weights are taken 64 at a time into one 512-bit register
//! of unsigned codes (Q4_K: nibbles 0..15; Q5_K: 0..31; Q6_K: 0..63), in the
//! activation order, so the Q8_K values are plain 64-byte loads. Per 64
//! weights, `vpmaddubsw` forms pairs of products (at most 2·63·128, inside
//! i16) and `vpdpwssd` multiplies them by the sub-block scales and adds them
//! into 16 i32 lanes. The integer sums are exact; per superblock and
//! (row, token) pair they are added up to the superblock's integers (Q4_K:
//! the scaled dot product and the minimum term; Q6_K: the total with its
//! −32 offset), converted to f32 and added with fused multiply-adds, one
//! chain per pair, superblock after superblock. The scalar twins
//! (`quant::dot::dot_q4_k_q8_k_blockwise_scalar`,
//! `dot_q6_k_q8_k_blockwise_scalar`) do the same float steps, so a token's
//! result does not depend on the tile shape, the batch, or whether the AMX
//! kernel ran instead.
//!
//! The minimums of Q4_K (−dmin·m_j·Σx) and the offset of Q6_K (−32·Σx) come
//! from the activations' per-16 sums (`bsums`) with one `vpmaddwd` per
//! superblock.

use std::arch::x86_64::*;

use crate::quant::{f16_table, q2_k, q3_k, q4_k, q5_k, q6_k, q8_k};

/// i32 lanes of a 512-bit register.
const K_LANES: usize = 16;

/// Lane i of register (64-weight chunk) m of a Q6_K superblock uses scale
/// 4m + i/4 (sub-blocks of 16); of a Q4_K superblock, chunk c uses scale
/// 2c + i/8 (sub-blocks of 32).
const fn scale_index(per_lane: usize, chunk_step: usize, m: usize) -> [i32; K_LANES] {
    let mut idx = [0i32; K_LANES];
    let mut i = 0;
    while i < K_LANES {
        idx[i] = (chunk_step * m + i / per_lane) as i32;
        i += 1;
    }
    idx
}

static Q4_K_SCALE_INDEX: [[i32; K_LANES]; 4] = [
    scale_index(8, 2, 0),
    scale_index(8, 2, 1),
    scale_index(8, 2, 2),
    scale_index(8, 2, 3),
];
static Q6_K_SCALE_INDEX: [[i32; K_LANES]; 4] = [
    scale_index(4, 4, 0),
    scale_index(4, 4, 1),
    scale_index(4, 4, 2),
    scale_index(4, 4, 3),
];

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn index(idx: &[i32; K_LANES]) -> __m512i {
    _mm512_loadu_si512(idx.as_ptr() as *const __m512i)
}

/// i32 lanes holding each of the 16 values `v` as a pair of equal i16s
/// (the form `vpdpwssd` multiplies pairs of products by).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pairs(v: __m512i) -> __m512i {
    _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi32(0xFFFF)), _mm512_slli_epi32(v, 16))
}

/// The eight scales then the eight minimums of a Q4_K superblock (bytes
/// 0-7 and 8-15), from its 12 packed bytes at `s`: the byte-parallel form
/// of `quant::dot::q4_k_scales_mins`, four 6-bit fields per 32-bit word.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q4_k_scales_mins_x86(s: *const u8) -> __m128i {
    let word = |i: usize| (s.add(4 * i) as *const u32).read_unaligned();
    let (a, b, c) = (word(0), word(1), word(2));
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    const TOP2: u32 = 0x0303_0303;
    // j < 4: sc = s[j] & 63, m = s[j+4] & 63; j ≥ 4: the low (sc) or high (m)
    // nibble of s[j+4] with the top two bits of s[j-4] (sc) or s[j] (m) above it
    let sc_lo = a & LOW6;
    let m_lo = b & LOW6;
    let sc_hi = (c & LOW4) | (((a >> 6) & TOP2) << 4);
    let m_hi = ((c >> 4) & LOW4) | (((b >> 6) & TOP2) << 4);
    _mm_set_epi32(m_hi as i32, m_lo as i32, sc_hi as i32, sc_lo as i32)
}

/// Q8_K block pointers of the activation rows at superblock `b`.
#[inline]
fn x_blocks<const C: usize>(x: &[&[u8]], b: usize) -> [*const u8; C] {
    std::array::from_fn(|c| x[c][b * q8_k::BYTES..].as_ptr())
}

#[inline]
unsafe fn x_scale(xb: *const u8) -> f32 {
    (xb as *const f32).read_unaligned()
}

/// The sums of lanes 0-7 and of lanes 8-15 (exact).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn half_sums(v: __m512i) -> (i32, i32) {
    let v = _mm512_add_epi32(v, _mm512_shuffle_epi32::<0x4E>(v)); // swap 64-bit pairs
    let v = _mm512_add_epi32(v, _mm512_shuffle_epi32::<0xB1>(v)); // swap neighbours
    let v = _mm512_add_epi32(v, _mm512_shuffle_i32x4::<0xB1>(v, v)); // swap 128-bit quarters
    (
        _mm_cvtsi128_si32(_mm512_castsi512_si128(v)),
        _mm_cvtsi128_si32(_mm512_extracti32x4_epi32::<2>(v)),
    )
}

/// R Q4_K (`Q5` false) or Q5_K (`Q5` true) weight rows × C Q8_K
/// activation rows, written to `out` from row `row0` on.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // indexing const-size arrays keeps the tile in registers
unsafe fn tile_q45_k<const Q5: bool, const R: usize, const C: usize>(
    w: &[&[u8]],
    x: &[&[u8]],
    out: &mut [f32; 16],
    row0: usize,
) {
    let (super_bytes, qs_at) = if Q5 { (q5_k::BYTES, 48) } else { (q4_k::BYTES, 16) };
    let row_bytes = w[0].len();
    let blocks = row_bytes / super_bytes;
    for r in 0..R {
        assert_eq!(w[r].len(), blocks * super_bytes, "weight superblocks");
    }
    for c in 0..C {
        assert_eq!(x[c].len(), blocks * q8_k::BYTES, "activation superblocks");
    }
    let to_l2 = super::prefetch_to_l2();
    let table = f16_table();
    let half = |p: *const u8| table[u16::from_le_bytes([*p, *p.add(1)]) as usize];
    let nibble = _mm512_set1_epi8(0x0F);
    let fifth = _mm512_set1_epi8(0x10);
    let idx: [__m512i; 4] = std::array::from_fn(|m| index(&Q4_K_SCALE_INDEX[m]));
    let mut acc = [[0f32; C]; R];
    for b in 0..blocks {
        let xb = x_blocks::<C>(x, b);
        for r in 0..R {
            let wb = w[r].as_ptr().add(b * super_bytes);
            for line in 0..3 {
                super::prefetch_line(wb.wrapping_add(R * row_bytes + 64 * line), to_l2);
            }
            // Q5_K: the fifth bits, bit j of byte l for weight 32j + l, in both halves
            let qh = if Q5 {
                _mm512_broadcast_i64x4(_mm256_loadu_si256(wb.add(16) as *const __m256i))
            } else {
                _mm512_setzero_si512()
            };
            let (d, dmin) = (half(wb), half(wb.add(2)));
            // lanes 0-7 the scales, 8-15 the minimums, each as an i16 pair
            let scales = pairs(_mm512_cvtepu8_epi32(q4_k_scales_mins_x86(wb.add(4))));
            let mut dot = [_mm512_setzero_si512(); C];
            for chunk in 0..4 {
                // 32 bytes: low nibbles are weights 0-31 of the chunk, high 32-63
                let packed = _mm512_broadcast_i64x4(_mm256_loadu_si256(wb.add(qs_at + 32 * chunk) as *const __m256i));
                let mut codes = _mm512_and_si512(_mm512_mask_srli_epi16(packed, 0xFFFF_0000, packed, 4), nibble);
                if Q5 {
                    // bit 2·chunk to bit 4 in the low half, bit 2·chunk + 1 in the high half
                    let bits = _mm512_srl_epi16(qh, _mm_cvtsi32_si128(2 * chunk as i32));
                    let bits = _mm512_mask_srli_epi16(bits, 0xFFFF_0000, bits, 1);
                    codes = _mm512_or_si512(codes, _mm512_and_si512(_mm512_slli_epi16(bits, 4), fifth));
                }
                let s = _mm512_permutexvar_epi32(idx[chunk], scales);
                for c in 0..C {
                    let xv = _mm512_loadu_si512(xb[c].add(4 + 64 * chunk) as *const __m512i);
                    dot[c] = _mm512_dpwssd_epi32(dot[c], _mm512_maddubs_epi16(codes, xv), s);
                }
            }
            // m_j as i16 pairs against the pairs of 16-value sums of sub-block j
            let mins_pairs = _mm512_extracti64x4_epi64(scales, 1);
            for c in 0..C {
                let bsums = _mm256_loadu_si256(xb[c].add(260) as *const __m256i);
                let mins = _mm256_madd_epi16(mins_pairs, bsums);
                let folded = _mm256_add_epi32(_mm512_castsi512_si256(dot[c]), _mm512_extracti64x4_epi64::<1>(dot[c]));
                let (dot, mins) = half_sums(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(folded), mins));
                let dx = x_scale(xb[c]);
                acc[r][c] = (dot as f32).mul_add(d * dx, acc[r][c]);
                acc[r][c] = (mins as f32).mul_add(-dmin * dx, acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[(row0 + r) * 4 + c] = acc[r][c];
        }
    }
}

/// The 256 unsigned 6-bit codes of a Q6_K superblock at `wb`, 64 per
/// register in weight order.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
pub(super) unsafe fn q6_k_codes(wb: *const u8) -> [__m512i; 4] {
    let low4 = _mm512_set1_epi8(0x0F);
    let high2 = _mm512_set1_epi8(0x30);
    let mut codes = [_mm512_setzero_si512(); 4];
    for half in 0..2 {
        // ql: 64 bytes, their low nibbles weights 0-63 of this half, high
        // nibbles 64-127; qh: 32 bytes of four 2-bit fields
        let ql = _mm512_loadu_si512(wb.add(64 * half) as *const __m512i);
        let qh = _mm256_loadu_si256(wb.add(128 + 32 * half) as *const __m256i);
        // bytes 0-31 the fields at bits 0-1 / 4-5, bytes 32-63 at bits 2-3 / 6-7
        let qh = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        codes[2 * half] = _mm512_or_si512(
            _mm512_and_si512(ql, low4),
            _mm512_and_si512(_mm512_slli_epi16(qh, 4), high2),
        );
        codes[2 * half + 1] = _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
            _mm512_and_si512(qh, high2),
        );
    }
    codes
}

/// K-quants of 16 sub-blocks of 16 weights with signed scales, whose codes
/// are unsigned with a fixed offset (w = d · sc_i · (u − offset)): Q6_K and
/// Q3_K. The tile kernels (VNNI here, AMX in `amx_k`) take them alike.
pub(super) trait SixteenSubBlocks {
    /// Superblock bytes.
    const BYTES: usize;
    /// log2 of the codes' offset (32 for Q6_K, 4 for Q3_K).
    const OFFSET_SHIFT: u32;
    /// The 256 unsigned codes, 64 per register in weight order.
    ///
    /// # Safety
    /// `wb` valid for a superblock; AVX2 and AVX-512 F/BW present.
    unsafe fn codes(wb: *const u8) -> [__m512i; 4];
    /// The 16 scales as signed bytes.
    ///
    /// # Safety
    /// As [`Self::codes`].
    unsafe fn scales(wb: *const u8) -> __m128i;
    /// Byte offset of the f16 scale d.
    const D_AT: usize;
    /// Whether the type has sub-block minimums (Q2_K: w = d·sc_i·q −
    /// dmin·m_i) instead of an offset.
    const MINS: bool = false;
    /// Byte offset of the f16 dmin (with `MINS`).
    const DMIN_AT: usize = 0;
    /// The 16 minimums as bytes (with `MINS`).
    ///
    /// # Safety
    /// As [`Self::codes`].
    unsafe fn mins(_wb: *const u8) -> __m128i {
        _mm_setzero_si128()
    }
}

pub(super) struct Q6K;
pub(super) struct Q3K;
pub(super) struct Q2K;

impl SixteenSubBlocks for Q2K {
    const BYTES: usize = q2_k::BYTES;
    const OFFSET_SHIFT: u32 = 0; // unused: minimums instead
    const D_AT: usize = 80;
    const MINS: bool = true;
    const DMIN_AT: usize = 82;
    #[inline(always)]
    unsafe fn codes(wb: *const u8) -> [__m512i; 4] {
        std::array::from_fn(|m| two_bit_codes(wb.add(16), m))
    }
    #[inline(always)]
    unsafe fn scales(wb: *const u8) -> __m128i {
        _mm_and_si128(_mm_loadu_si128(wb as *const __m128i), _mm_set1_epi8(0x0F))
    }
    #[inline(always)]
    unsafe fn mins(wb: *const u8) -> __m128i {
        _mm_and_si128(
            _mm_srli_epi16(_mm_loadu_si128(wb as *const __m128i), 4),
            _mm_set1_epi8(0x0F),
        )
    }
}

impl SixteenSubBlocks for Q6K {
    const BYTES: usize = q6_k::BYTES;
    const OFFSET_SHIFT: u32 = 5;
    const D_AT: usize = 208;
    #[inline(always)]
    unsafe fn codes(wb: *const u8) -> [__m512i; 4] {
        q6_k_codes(wb)
    }
    #[inline(always)]
    unsafe fn scales(wb: *const u8) -> __m128i {
        _mm_loadu_si128(wb.add(192) as *const __m128i)
    }
}

impl SixteenSubBlocks for Q3K {
    const BYTES: usize = q3_k::BYTES;
    const OFFSET_SHIFT: u32 = 2;
    const D_AT: usize = 108;
    #[inline(always)]
    unsafe fn codes(wb: *const u8) -> [__m512i; 4] {
        q3_k_codes(wb)
    }
    #[inline(always)]
    unsafe fn scales(wb: *const u8) -> __m128i {
        q3_k_scales_x86(wb.add(96))
    }
}

/// Register m (weights 64m..64m + 64) of the 2-bit fields laid out as in
/// Q2_K and Q3_K at `qs` (64 bytes): weight 128n + 32j + l is bits 2j of
/// byte 32n + l, so register m takes n = m / 2 and j = 2(m % 2), 2(m % 2) + 1.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn two_bit_codes(qs: *const u8, m: usize) -> __m512i {
    let (n, j) = (m / 2, 2 * (m % 2));
    let bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(qs.add(32 * n) as *const __m256i));
    // low half: bits 2j; high half: the next field
    let low = _mm512_srl_epi16(bytes, _mm_cvtsi32_si128(2 * j as i32));
    _mm512_and_si512(_mm512_mask_srli_epi16(low, 0xFFFF_0000, low, 2), _mm512_set1_epi8(3))
}

/// The 256 unsigned 3-bit codes (low2 | hbit << 2) of a Q3_K superblock at
/// `wb`, 64 per register in weight order (hmask bit 4n + j for the weights
/// of [`two_bit_codes`]' field j of half n).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
pub(super) unsafe fn q3_k_codes(wb: *const u8) -> [__m512i; 4] {
    let hmask = _mm512_broadcast_i64x4(_mm256_loadu_si256(wb as *const __m256i));
    let four = _mm512_set1_epi8(4);
    std::array::from_fn(|m| {
        let (n, j) = (m / 2, 2 * (m % 2));
        let high = _mm512_srl_epi16(hmask, _mm_cvtsi32_si128((4 * n + j) as i32));
        let high = _mm512_mask_srli_epi16(high, 0xFFFF_0000, high, 1);
        _mm512_or_si512(
            two_bit_codes(wb.add(32), m),
            _mm512_and_si512(_mm512_slli_epi16(high, 2), four),
        )
    })
}

/// The 16 scales of a Q3_K superblock (less 32) as signed bytes, from its
/// 12 packed bytes at `s`: the byte-parallel form of `quant::q3_k::scales`
/// (low nibbles from bytes 0-7, high two bits from bytes 8-11).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q3_k_scales_x86(s: *const u8) -> __m128i {
    let word = |i: usize| (s.add(4 * i) as *const u32).read_unaligned();
    let (a, b, c) = (word(0), word(1), word(2));
    const LOW4: u32 = 0x0F0F_0F0F;
    const TOP2: u32 = 0x0303_0303;
    let sc = _mm_set_epi32(
        (((b >> 4) & LOW4) | (((c >> 6) & TOP2) << 4)) as i32,
        (((a >> 4) & LOW4) | (((c >> 4) & TOP2) << 4)) as i32,
        ((b & LOW4) | (((c >> 2) & TOP2) << 4)) as i32,
        ((a & LOW4) | ((c & TOP2) << 4)) as i32,
    );
    _mm_sub_epi8(sc, _mm_set1_epi8(32))
}

/// R weight rows of a [`SixteenSubBlocks`] type × C Q8_K activation rows,
/// written to `out` from row `row0` on.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // indexing const-size arrays keeps the tile in registers
unsafe fn tile_sixteen<K: SixteenSubBlocks, const R: usize, const C: usize>(
    w: &[&[u8]],
    x: &[&[u8]],
    out: &mut [f32; 16],
    row0: usize,
) {
    let row_bytes = w[0].len();
    let blocks = row_bytes / K::BYTES;
    for r in 0..R {
        assert_eq!(w[r].len(), blocks * K::BYTES, "weight superblocks");
    }
    for c in 0..C {
        assert_eq!(x[c].len(), blocks * q8_k::BYTES, "activation superblocks");
    }
    let to_l2 = super::prefetch_to_l2();
    let table = f16_table();
    let idx: [__m512i; 4] = std::array::from_fn(|m| index(&Q6_K_SCALE_INDEX[m]));
    let mut acc = [[0f32; C]; R];
    for b in 0..blocks {
        let xb = x_blocks::<C>(x, b);
        for r in 0..R {
            let wb = w[r].as_ptr().add(b * K::BYTES);
            for line in 0..K::BYTES.div_ceil(64) {
                super::prefetch_line(wb.wrapping_add(R * row_bytes + 64 * line), to_l2);
            }
            let d = table[u16::from_le_bytes([*wb.add(K::D_AT), *wb.add(K::D_AT + 1)]) as usize];
            let sc_bytes = K::scales(wb);
            let scales = pairs(_mm512_cvtepi8_epi32(sc_bytes));
            let mut dot = [_mm512_setzero_si512(); C];
            for (m, &codes) in K::codes(wb).iter().enumerate() {
                let s = _mm512_permutexvar_epi32(idx[m], scales);
                for c in 0..C {
                    let xv = _mm512_loadu_si512(xb[c].add(4 + 64 * m) as *const __m512i);
                    dot[c] = _mm512_dpwssd_epi32(dot[c], _mm512_maddubs_epi16(codes, xv), s);
                }
            }
            if K::MINS {
                // Σ sc_i·Σ q·x and the minimum term Σ m_i·Σ x, side by side
                let dmin = table[u16::from_le_bytes([*wb.add(K::DMIN_AT), *wb.add(K::DMIN_AT + 1)]) as usize];
                let m16 = _mm256_cvtepu8_epi16(K::mins(wb));
                for c in 0..C {
                    let bsums = _mm256_loadu_si256(xb[c].add(260) as *const __m256i);
                    let mins = _mm256_madd_epi16(m16, bsums);
                    let folded =
                        _mm256_add_epi32(_mm512_castsi512_si256(dot[c]), _mm512_extracti64x4_epi64::<1>(dot[c]));
                    let (dot, mins) = half_sums(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(folded), mins));
                    let dx = x_scale(xb[c]);
                    acc[r][c] = (dot as f32).mul_add(d * dx, acc[r][c]);
                    acc[r][c] = (mins as f32).mul_add(-dmin * dx, acc[r][c]);
                }
                continue;
            }
            // the codes' offset: Σ sc_i·(Σ u·x − offset·Σ x) per sub-block of 16
            let sc16 = _mm256_cvtepi8_epi16(sc_bytes);
            for c in 0..C {
                let bsums = _mm256_loadu_si256(xb[c].add(260) as *const __m256i);
                let offset = _mm512_zextsi256_si512(_mm256_madd_epi16(sc16, bsums));
                let shifted = _mm512_sll_epi32(offset, _mm_cvtsi32_si128(K::OFFSET_SHIFT as i32));
                let (low, high) = half_sums(_mm512_sub_epi32(dot[c], shifted));
                acc[r][c] = ((low + high) as f32).mul_add(d * x_scale(xb[c]), acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[(row0 + r) * 4 + c] = acc[r][c];
        }
    }
}

#[inline(always)]
unsafe fn tile_q6_k<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile_sixteen::<Q6K, R, C>(w, x, out, row0)
}

#[inline(always)]
unsafe fn tile_q2_k<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile_sixteen::<Q2K, R, C>(w, x, out, row0)
}

/// Q2_K weight rows × Q8_K activation rows (up to 4 × 4).
///
/// # Safety
/// As [`dot_tile_q4_k`].
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn dot_tile_q2_k(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16]) {
    tile_shapes!(tile_q2_k, w, x, out)
}

#[inline(always)]
unsafe fn tile_q3_k<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile_sixteen::<Q3K, R, C>(w, x, out, row0)
}

/// Q3_K weight rows × Q8_K activation rows (up to 4 × 4).
///
/// # Safety
/// As [`dot_tile_q4_k`].
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn dot_tile_q3_k(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16]) {
    tile_shapes!(tile_q3_k, w, x, out)
}

/// Q4_K weight rows × Q8_K activation rows (up to 4 × 4).
///
/// # Safety
/// The CPU must support AVX2, FMA and AVX-512 F, BW, DQ, VL and VNNI.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn dot_tile_q4_k(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16]) {
    tile_shapes!(tile_q4_k, w, x, out)
}

/// Q5_K weight rows × Q8_K activation rows (up to 4 × 4).
///
/// # Safety
/// As [`dot_tile_q4_k`].
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn dot_tile_q5_k(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16]) {
    tile_shapes!(tile_q5_k, w, x, out)
}

#[inline(always)]
unsafe fn tile_q4_k<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile_q45_k::<false, R, C>(w, x, out, row0)
}

#[inline(always)]
unsafe fn tile_q5_k<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile_q45_k::<true, R, C>(w, x, out, row0)
}

/// Q6_K weight rows × Q8_K activation rows (up to 4 × 4).
///
/// # Safety
/// As [`dot_tile_q4_k`].
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn dot_tile_q6_k(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16]) {
    tile_shapes!(tile_q6_k, w, x, out)
}
