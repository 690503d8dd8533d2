//! AVX-512 VNNI + VBMI tile kernels for Q4_0 and Q8_0 weight rows × Q8_0
//! activation rows, reading the weights in the file's own block layout (no
//! repacking, so no second copy of the weights). Q8_0 (at the end) gathers
//! its 34-byte blocks' halves the same way, as unsigned bytes w + 128, and
//! shares the activations and every float step.
//!
//! A row is taken 16 blocks (512 weights, 288 bytes) at a time. `vpermi2b`
//! gathers the 16-byte nibble runs of four 18-byte blocks into one register
//! and their f16 scales into one vector, so the loads are plain 64-byte
//! loads whatever the blocks' alignment. Two `vpdpbusd` per four blocks
//! (low nibbles, high nibbles) leave four i32 lanes per block; a transpose-
//! and-add turns four such registers into one register of 16 exact block
//! sums, which is scaled and accumulated in f32 once per block. The float
//! arithmetic is therefore the same for every instance of a pair, and the
//! scalar twin (`quant::dot::dot_q4_0_q8_0_grouped_scalar`) reproduces it
//! bit for bit.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes: the raw nibbles u (0..15)
//! are the unsigned side, and Σ (u−8)·x = Σ u·x − 8·Σ x, with 8·Σ x per block
//! prepared once per activation row.
//!
//! Activation rows are prepared once per matrix product ([`prepare`]), 640
//! bytes per group of 16 blocks: for each quarter i (blocks 4i..4i+4) the
//! first 16 values of its four blocks (64 bytes) then their last 16, the
//! 16 lanes of 8·Σ x and the 16 lanes of activation scales, both in the
//! order the block sums come out in ([`q4_0_group_lane`]).

use std::arch::x86_64::*;

use crate::quant::dot::{q4_0_group_lane, Q4_0_GROUP};
use crate::quant::{f16_table, q4_0, q4_1, q5_0, q5_1, q8_0, QuantKind};

/// Weight bytes of one group of 16 blocks, and of each half of it.
const GROUP_BYTES: usize = Q4_0_GROUP * q4_0::BYTES;
const HALF_BYTES: usize = GROUP_BYTES / 2;

/// Prepared activation bytes per group: 4 × 128 quant bytes, 64 bytes of
/// corrections, 64 bytes of scales.
pub const GROUP_PREPARED: usize = 640;
const CORR_AT: usize = 512;
const SCALES_AT: usize = 576;

/// Byte indices that gather the nibble runs of four consecutive blocks,
/// the first starting at byte `first` of a 128-byte window.
const fn quant_index(first: usize) -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut j = 0;
    while j < 4 {
        let mut m = 0;
        while m < 16 {
            idx[16 * j + m] = (first + q4_0::BYTES * j + 2 + m) as u8;
            m += 1;
        }
        j += 1;
    }
    idx
}

/// Blocks 0-3 of a half from its first 128 bytes; blocks 4-7 from the
/// window starting 64 bytes in (block 4 starts at byte 72).
static QUARTER_LOW: [u8; 64] = quant_index(0);
static QUARTER_HIGH: [u8; 64] = quant_index(4 * q4_0::BYTES - 64);

/// Byte indices (and the byte mask) that put the f16 scales of half `h`'s
/// eight blocks into their lanes of the group's scale vector.
const fn scale_index(h: usize) -> ([u8; 64], u64) {
    let mut idx = [0u8; 64];
    let mut mask = 0u64;
    let mut b = 0;
    while b < Q4_0_GROUP {
        if b / 8 == h {
            let lane = q4_0_group_lane(b);
            let at = q4_0::BYTES * (b % 8);
            idx[2 * lane] = at as u8;
            idx[2 * lane + 1] = (at + 1) as u8;
            mask |= 3u64 << (2 * lane);
        }
        b += 1;
    }
    (idx, mask)
}

static SCALES_FIRST: ([u8; 64], u64) = scale_index(0);
static SCALES_SECOND: ([u8; 64], u64) = scale_index(1);

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn index(bytes: &[u8; 64]) -> __m512i {
    _mm512_loadu_si512(bytes.as_ptr() as *const __m512i)
}

/// The 144 bytes of half a group as three registers (the third holds 16
/// bytes); bytes past `avail` (a row's last, partial group) read as zero
/// and are never touched.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn load_half(p: *const u8, avail: usize) -> [__m512i; 3] {
    if avail >= HALF_BYTES {
        return [
            _mm512_loadu_si512(p as *const __m512i),
            _mm512_loadu_si512(p.add(64) as *const __m512i),
            _mm512_zextsi128_si512(_mm_loadu_si128(p.add(128) as *const __m128i)),
        ];
    }
    let mask = |from: usize, len: usize| -> u64 {
        let n = avail.saturating_sub(from).min(len);
        if n == 64 {
            !0
        } else {
            (1u64 << n) - 1
        }
    };
    // a zero mask loads nothing, so the pointers may lie past the row
    [
        _mm512_maskz_loadu_epi8(mask(0, 64), p as *const i8),
        _mm512_maskz_loadu_epi8(mask(64, 64), p.wrapping_add(64) as *const i8),
        _mm512_maskz_loadu_epi8(mask(128, 16), p.wrapping_add(128) as *const i8),
    ]
}

/// One weight row's group: the unsigned nibbles of each quarter (low
/// nibbles, then high) and the 16 block scales in lane order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn unpack_group(p: *const u8, avail: usize) -> ([__m512i; 8], __m512) {
    let a = load_half(p, avail);
    let b = load_half(p.wrapping_add(HALF_BYTES), avail.saturating_sub(HALF_BYTES));
    let (low, high) = (index(&QUARTER_LOW), index(&QUARTER_HIGH));
    let quarters = [
        _mm512_permutex2var_epi8(a[0], low, a[1]),
        _mm512_permutex2var_epi8(a[1], high, a[2]),
        _mm512_permutex2var_epi8(b[0], low, b[1]),
        _mm512_permutex2var_epi8(b[1], high, b[2]),
    ];
    let nibble = _mm512_set1_epi8(0x0F);
    let mut q = [_mm512_setzero_si512(); 8];
    for (i, v) in quarters.into_iter().enumerate() {
        q[2 * i] = _mm512_and_si512(v, nibble);
        q[2 * i + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
    }
    let scales = _mm512_or_si512(
        _mm512_maskz_permutex2var_epi8(SCALES_FIRST.1, a[0], index(&SCALES_FIRST.0), a[1]),
        _mm512_maskz_permutex2var_epi8(SCALES_SECOND.1, b[0], index(&SCALES_SECOND.0), b[1]),
    );
    (q, _mm512_cvtph_ps(_mm512_castsi512_si256(scales)))
}

/// Q8_0: bytes of each quarter of a group (4 blocks).
const QUARTER_BYTES_Q8: usize = 4 * q8_0::BYTES;

/// Byte indices that gather the 16-byte halves of four consecutive Q8_0
/// blocks from a 128-byte window: the first halves from the quarter's
/// start, the second halves from 16 bytes further (the same indices).
static HALVES_Q8: [u8; 64] = {
    let mut idx = [0u8; 64];
    let mut j = 0;
    while j < 4 {
        let mut m = 0;
        while m < 16 {
            idx[16 * j + m] = (q8_0::BYTES * j + 2 + m) as u8;
            m += 1;
        }
        j += 1;
    }
    idx
};

/// Byte indices (and byte mask) that put the f16 scales of quarter `i`'s
/// four blocks into their lanes of the group's scale vector.
const fn scale_index_q8(i: usize) -> ([u8; 64], u64) {
    let mut idx = [0u8; 64];
    let mut mask = 0u64;
    let mut j = 0;
    while j < 4 {
        let lane = q4_0_group_lane(4 * i + j);
        idx[2 * lane] = (q8_0::BYTES * j) as u8;
        idx[2 * lane + 1] = (q8_0::BYTES * j + 1) as u8;
        mask |= 3u64 << (2 * lane);
        j += 1;
    }
    (idx, mask)
}

static SCALES_Q8: [([u8; 64], u64); 4] = [
    scale_index_q8(0),
    scale_index_q8(1),
    scale_index_q8(2),
    scale_index_q8(3),
];

/// 64 bytes at `p + at`, those at or past `avail` read as zero (a zero
/// mask loads nothing, so the pointer may lie past the row).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn load_upto(p: *const u8, at: usize, avail: usize) -> __m512i {
    if at + 64 <= avail {
        return _mm512_loadu_si512(p.add(at) as *const __m512i);
    }
    let n = avail.saturating_sub(at).min(64);
    let mask = if n == 64 { !0 } else { (1u64 << n) - 1 };
    _mm512_maskz_loadu_epi8(mask, p.wrapping_add(at) as *const i8)
}

/// One Q8_0 weight row's group: for each quarter the unsigned bytes w + 128
/// of its four blocks' first halves, then their second halves (the layout
/// of the Q4_0 nibbles, so the activations are prepared the same way), and
/// the 16 block scales in lane order. Blocks past `avail` bytes are zero
/// (their bytes become 128, against zero activations).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn unpack_group_q8(p: *const u8, avail: usize) -> ([__m512i; 8], __m512) {
    let halves = index(&HALVES_Q8);
    let flip = _mm512_set1_epi8(-128);
    let mut q = [_mm512_setzero_si512(); 8];
    let mut scales = _mm512_setzero_si512();
    for i in 0..4 {
        let at = QUARTER_BYTES_Q8 * i;
        let a = [load_upto(p, at, avail), load_upto(p, at + 64, avail)];
        let b = [load_upto(p, at + 16, avail), load_upto(p, at + 80, avail)];
        q[2 * i] = _mm512_xor_si512(_mm512_permutex2var_epi8(a[0], halves, a[1]), flip);
        q[2 * i + 1] = _mm512_xor_si512(_mm512_permutex2var_epi8(b[0], halves, b[1]), flip);
        let (idx, mask) = &SCALES_Q8[i];
        scales = _mm512_or_si512(scales, _mm512_maskz_permutex2var_epi8(*mask, a[0], index(idx), a[1]));
    }
    (q, _mm512_cvtph_ps(_mm512_castsi512_si256(scales)))
}

/// `acc` plus one group of one (weight row, activation row) pair. The
/// prepared correction is 8·Σx per block: the offset of `B`'s codes is that
/// times 2^`CORR_SHIFT` (Q4_0: 8, Q5_0: 16, Q8_0: 128); types with
/// minimums (`B::MINS`) take Σx = correction / 8 times m·dx instead.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn group_dot<B: GroupedBlock>(q: &[__m512i; 8], dw: __m512, mw: __m512, xg: *const u8, acc: __m512) -> __m512 {
    let zero = _mm512_setzero_si512();
    let load = |at: usize| _mm512_loadu_si512(xg.add(at) as *const __m512i);
    let s: [__m512i; 4] = std::array::from_fn(|i| {
        let lo = _mm512_dpbusd_epi32(zero, q[2 * i], load(128 * i));
        _mm512_dpbusd_epi32(lo, q[2 * i + 1], load(128 * i + 64))
    });
    // lane 4j+i ← the four lanes of block j in s[i]: the block sums, exact
    let t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(s[0], s[1]), _mm512_unpackhi_epi32(s[0], s[1]));
    let t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(s[2], s[3]), _mm512_unpackhi_epi32(s[2], s[3]));
    let sums = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
    let dx = _mm512_loadu_ps(xg.add(SCALES_AT) as *const f32);
    if B::MINS {
        let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(dw, dx), acc);
        let x_sums = _mm512_srai_epi32::<3>(load(CORR_AT));
        return _mm512_fmadd_ps(_mm512_cvtepi32_ps(x_sums), _mm512_mul_ps(mw, dx), acc);
    }
    let corr = _mm512_sll_epi32(load(CORR_AT), _mm_cvtsi32_si128(B::CORR_SHIFT as i32));
    let sums = _mm512_sub_epi32(sums, corr);
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(dw, dx), acc)
}

/// A 32-weight block type for the grouped tile kernel.
pub(super) trait GroupedBlock {
    const BYTES: usize;
    /// log2 of the codes' offset over 8 (without `MINS`).
    const CORR_SHIFT: u32 = 0;
    /// Whether the blocks have a minimum m (w = d·u + m).
    const MINS: bool = false;
    /// One row's group of 16 blocks at `p` (`avail` bytes left in the row):
    /// the unsigned codes by quarter (as [`unpack_group`]), the 16 scales d
    /// and the 16 minimums (zero without `MINS`) in lane order.
    ///
    /// # Safety
    /// AVX-512 F/BW/VBMI present; `p` valid for `avail` bytes.
    unsafe fn unpack(p: *const u8, avail: usize) -> ([__m512i; 8], __m512, __m512);
}

pub(super) struct Q4_0;
pub(super) struct Q8_0;
pub(super) struct Q4_1;
pub(super) struct Q5_0;
pub(super) struct Q5_1;

impl GroupedBlock for Q4_0 {
    const BYTES: usize = q4_0::BYTES;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, avail: usize) -> ([__m512i; 8], __m512, __m512) {
        let (q, d) = unpack_group(p, avail);
        (q, d, _mm512_setzero_ps())
    }
}

impl GroupedBlock for Q8_0 {
    const BYTES: usize = q8_0::BYTES;
    const CORR_SHIFT: u32 = 4;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, avail: usize) -> ([__m512i; 8], __m512, __m512) {
        let (q, d) = unpack_group_q8(p, avail);
        (q, d, _mm512_setzero_ps())
    }
}

impl GroupedBlock for Q4_1 {
    const BYTES: usize = q4_1::BYTES;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, avail: usize) -> ([__m512i; 8], __m512, __m512) {
        unpack_nibbles::<{ q4_1::BYTES }, 4, 0, 2>(p, avail)
    }
}

impl GroupedBlock for Q5_0 {
    const BYTES: usize = q5_0::BYTES;
    const CORR_SHIFT: u32 = 1;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, avail: usize) -> ([__m512i; 8], __m512, __m512) {
        unpack_nibbles::<{ q5_0::BYTES }, 6, 2, 0>(p, avail)
    }
}

impl GroupedBlock for Q5_1 {
    const BYTES: usize = q5_1::BYTES;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, avail: usize) -> ([__m512i; 8], __m512, __m512) {
        unpack_nibbles::<{ q5_1::BYTES }, 8, 4, 2>(p, avail)
    }
}

/// Byte indices that gather the 16 nibble bytes (at `qs_at` in each block)
/// of four consecutive `bytes`-byte blocks from a 128-byte window.
const fn nibble_index(bytes: usize, qs_at: usize) -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut j = 0;
    while j < 4 {
        let mut m = 0;
        while m < 16 {
            idx[16 * j + m] = (bytes * j + qs_at + m) as u8;
            m += 1;
        }
        j += 1;
    }
    idx
}

/// Byte indices (and byte mask) that put the f16 at byte `off` of quarter
/// `i`'s four `bytes`-byte blocks into their lanes of a group's vector.
const fn half_lanes(bytes: usize, off: usize, i: usize) -> ([u8; 64], u64) {
    let mut idx = [0u8; 64];
    let mut mask = 0u64;
    let mut j = 0;
    while j < 4 {
        let lane = q4_0_group_lane(4 * i + j);
        idx[2 * lane] = (bytes * j + off) as u8;
        idx[2 * lane + 1] = (bytes * j + off + 1) as u8;
        mask |= 3u64 << (2 * lane);
        j += 1;
    }
    (idx, mask)
}

/// [`half_lanes`] for the four quarters.
const fn half_lanes_all(bytes: usize, off: usize) -> [([u8; 64], u64); 4] {
    [
        half_lanes(bytes, off, 0),
        half_lanes(bytes, off, 1),
        half_lanes(bytes, off, 2),
        half_lanes(bytes, off, 3),
    ]
}

/// Byte indices that gather the fifth bits (the u32 at `qh` of four
/// `bytes`-byte blocks): bytes 0-7 the low halves (weights 0-15 of each
/// block), bytes 8-15 the high halves, so each is a 64-bit byte mask in
/// the quarter's code order.
const fn fifth_bit_index(bytes: usize, qh: usize) -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut j = 0;
    while j < 4 {
        idx[2 * j] = (bytes * j + qh) as u8;
        idx[2 * j + 1] = (bytes * j + qh + 1) as u8;
        idx[8 + 2 * j] = (bytes * j + qh + 2) as u8;
        idx[9 + 2 * j] = (bytes * j + qh + 3) as u8;
        j += 1;
    }
    idx
}

/// A group of Q4_1 / Q5_0 / Q5_1 blocks (`BYTES` each, nibbles at `QS`,
/// fifth bits at `QH` (0: none), minimum at `M` (0: none)), as
/// [`GroupedBlock::unpack`] gives it: codes u = nibble + 16·fifth bit.
/// Blocks past `avail` are zero.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn unpack_nibbles<const BYTES: usize, const QS: usize, const QH: usize, const M: usize>(
    p: *const u8,
    avail: usize,
) -> ([__m512i; 8], __m512, __m512) {
    let qs_idx = index(const { &nibble_index(BYTES, QS) });
    let qh_idx = index(const { &fifth_bit_index(BYTES, QH) });
    let d_lanes = const { &half_lanes_all(BYTES, 0) };
    let m_lanes = const { &half_lanes_all(BYTES, M) };
    let (nibble, fifth) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x10));
    let mut q = [_mm512_setzero_si512(); 8];
    let (mut d, mut m) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    for i in 0..4 {
        let at = 4 * BYTES * i;
        let (a0, a1) = (load_upto(p, at, avail), load_upto(p, at + 64, avail));
        let bytes = _mm512_permutex2var_epi8(a0, qs_idx, a1);
        let mut lo = _mm512_and_si512(bytes, nibble);
        let mut hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
        if QH != 0 {
            let bits = _mm512_castsi512_si128(_mm512_permutex2var_epi8(a0, qh_idx, a1));
            let (lo_bits, hi_bits) = (_mm_cvtsi128_si64(bits) as u64, _mm_extract_epi64::<1>(bits) as u64);
            lo = _mm512_mask_add_epi8(lo, lo_bits, lo, fifth);
            hi = _mm512_mask_add_epi8(hi, hi_bits, hi, fifth);
        }
        q[2 * i] = lo;
        q[2 * i + 1] = hi;
        let (idx, mask) = &d_lanes[i];
        d = _mm512_or_si512(d, _mm512_maskz_permutex2var_epi8(*mask, a0, index(idx), a1));
        if M != 0 {
            let (idx, mask) = &m_lanes[i];
            m = _mm512_or_si512(m, _mm512_maskz_permutex2var_epi8(*mask, a0, index(idx), a1));
        }
    }
    (
        q,
        _mm512_cvtph_ps(_mm512_castsi512_si256(d)),
        _mm512_cvtph_ps(_mm512_castsi512_si256(m)),
    )
}

/// The lanes added in halves (8, 4, 2, 1), as the scalar twin adds them.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn reduce(v: __m512) -> f32 {
    let a8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    let a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
    let a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
    _mm_cvtss_f32(_mm_add_ss(a2, _mm_movehdup_ps(a2)))
}

/// Prepares a Q8_0 activation row for the Q4_0 and Q8_0 tile kernels (module doc).
pub fn prepare(x: &[u8], out: &mut [u8]) {
    let blocks = x.len() / q8_0::BYTES;
    assert_eq!(out.len(), prepared_bytes(blocks), "prepared row size");
    let table = f16_table();
    for (g, o) in out.chunks_exact_mut(GROUP_PREPARED).enumerate() {
        o.fill(0);
        for b in 0..Q4_0_GROUP {
            let block = g * Q4_0_GROUP + b;
            if block >= blocks {
                break;
            }
            let xb = &x[block * q8_0::BYTES..(block + 1) * q8_0::BYTES];
            let (i, j) = (b / 4, b % 4);
            o[128 * i + 16 * j..][..16].copy_from_slice(&xb[2..18]);
            o[128 * i + 64 + 16 * j..][..16].copy_from_slice(&xb[18..34]);
            let lane = q4_0_group_lane(b);
            let sum: i32 = xb[2..].iter().map(|&v| v as i8 as i32).sum();
            o[CORR_AT + 4 * lane..][..4].copy_from_slice(&(8 * sum).to_le_bytes());
            let dx = table[u16::from_le_bytes([xb[0], xb[1]]) as usize];
            o[SCALES_AT + 4 * lane..][..4].copy_from_slice(&dx.to_le_bytes());
        }
    }
}

/// Bytes of a prepared row of `blocks` Q8_0 blocks.
pub fn prepared_bytes(blocks: usize) -> usize {
    blocks.div_ceil(Q4_0_GROUP) * GROUP_PREPARED
}

/// R weight rows × C prepared activation rows, written to `out` from row
/// `row0` on.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
#[allow(clippy::needless_range_loop)] // indexing const-size arrays keeps the tile in registers
unsafe fn tile<B: GroupedBlock, const R: usize, const C: usize>(
    w: &[&[u8]],
    x: &[&[u8]],
    out: &mut [f32; 16],
    row0: usize,
) {
    let (block_bytes, group_bytes) = (B::BYTES, B::BYTES * Q4_0_GROUP);
    let row_bytes = w[0].len();
    let blocks = row_bytes / block_bytes;
    let groups = blocks.div_ceil(Q4_0_GROUP);
    for r in 0..R {
        assert_eq!(w[r].len(), blocks * block_bytes, "weight blocks");
    }
    for c in 0..C {
        assert_eq!(x[c].len(), groups * GROUP_PREPARED, "prepared activation groups");
    }
    let wp: [*const u8; R] = std::array::from_fn(|r| w[r].as_ptr());
    let xp: [*const u8; C] = std::array::from_fn(|c| x[c].as_ptr());
    let to_l2 = super::prefetch_to_l2();
    // Row after row, each row's groups in order: only this row's C
    // accumulators live across the groups, so they stay in registers (the
    // activation groups are reloaded from L1 per row). Each pair's chain of
    // operations is the same in either loop order.
    for r in 0..R {
        let mut acc = [_mm512_setzero_ps(); C];
        for g in 0..groups {
            let at = g * group_bytes;
            let p = wp[r].add(at);
            // The rows that follow these in memory come next: fetch them now,
            // a tile ahead (rows are short, 1-5 KiB, too short for the
            // hardware prefetcher to ramp up on each). A prefetch never faults.
            let ahead = p.wrapping_add(R * row_bytes);
            for line in (0..group_bytes).step_by(64) {
                super::prefetch_line(ahead.wrapping_add(line), to_l2);
            }
            let (q, dw, mw) = B::unpack(p, row_bytes - at);
            for c in 0..C {
                acc[c] = group_dot::<B>(&q, dw, mw, xp[c].add(g * GROUP_PREPARED), acc[c]);
            }
        }
        for c in 0..C {
            out[(row0 + r) * 4 + c] = reduce(acc[c]);
        }
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and AVX-512 F, BW, DQ, VL, VNNI and VBMI.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
pub unsafe fn dot_tile(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16]) {
    tile_shapes!(tile_q4_0, w, x, out)
}

/// The Q8_0 weight rows' kernel (the same activations and float steps).
///
/// # Safety
/// As [`dot_tile`].
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
pub unsafe fn dot_tile_q8_0(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16]) {
    tile_shapes!(tile_q8_0, w, x, out)
}

#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn tile_q4_0<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile::<Q4_0, R, C>(w, x, out, row0)
}

#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn tile_q8_0<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile::<Q8_0, R, C>(w, x, out, row0)
}

/// The Q4_1, Q5_0 and Q5_1 weight rows' kernels (the same activations).
///
/// # Safety
/// As [`dot_tile`].
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
pub unsafe fn dot_tile_nibbles(kind: QuantKind, w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16]) {
    match kind {
        QuantKind::Q4_1 => tile_shapes!(tile_q4_1, w, x, out),
        QuantKind::Q5_0 => tile_shapes!(tile_q5_0, w, x, out),
        QuantKind::Q5_1 => tile_shapes!(tile_q5_1, w, x, out),
        _ => panic!("{} is not a Q4_1 / Q5_0 / Q5_1 type", kind.name()),
    }
}

#[inline(always)]
unsafe fn tile_q4_1<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile::<Q4_1, R, C>(w, x, out, row0)
}

#[inline(always)]
unsafe fn tile_q5_0<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile::<Q5_0, R, C>(w, x, out, row0)
}

#[inline(always)]
unsafe fn tile_q5_1<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    tile::<Q5_1, R, C>(w, x, out, row0)
}
