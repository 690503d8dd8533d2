//! Intel AMX (Sapphire Rapids and later) for prompt processing: Q4_0
//! weights × Q8_0 activations, 16 weight rows × 16 tokens per tile
//! multiply (`tdpbusd`, 8192 multiply-adds in one instruction).
//!
//! The arithmetic is the VNNI tile kernel's, element for element (see
//! `vnni_q4_0` and its scalar twin `dot_q4_0_q8_0_grouped_scalar`): the
//! tile product gives each (row, token) pair's exact integer block sums,
//! which are scaled (`d_w · d_x`) and added with one fused multiply-add into
//! the block's lane of a 16-lane accumulator, and the lanes are added in
//! halves at the end. So a token's logits are the same bits whether its
//! product ran here or on the VNNI kernel (batch size never changes them).
//!
//! Layouts (Intel SDM, "Intel AMX Instruction Set Reference", TDPBUSD):
//! the A tile is the weights, 16 rows × 32 unsigned bytes (one block: the
//! 16 low nibbles, then the 16 high ones, in weight order); the B tile is 16
//! tokens' 32 activation bytes in groups of four (`B[k/4][4·token + k%4]`);
//! C\[row\]\[token\] += Σ_k A\[row\]\[k\] · B\[k/4\]\[4·token + k%4\]. The
//! nibbles are unsigned (0..15), so as in the VNNI kernel the block sum is
//! Σ u·x − 8·Σ x, with −8·Σ x prepared per token and block.
//!
//! Each lane's sums are added group after group, as the VNNI kernel adds
//! them; the loop runs lane by lane so a lane's 16 rows of accumulators
//! stay in registers, two blocks in flight on the tile unit while the previous two are
//! scaled.

use std::arch::asm;
use std::arch::x86_64::*;

use crate::aligned::AlignedBytes;
use crate::quant::dot::{q4_0_group_lane, Q4_0_GROUP};
use crate::quant::{f16_table, q4_0, q8_0};

/// Tokens per tile (the B tile's columns) and weight rows per tile.
pub const TILE: usize = 16;

/// Prepared bytes per (token tile, block): the B tile (8 rows of 64
/// bytes), 16 lanes of −8·Σ x (added to each row of the result tile) and
/// 16 lanes of activation scales.
const TOKEN_BLOCK: usize = 640;
const NEG_CORR_AT: usize = 512;
const SCALES_AT: usize = 576;
/// Unpacked weight bytes per block of a 16-row panel (the A tile).
const PANEL_BLOCK: usize = TILE * 32;

/// Whether this CPU has AMX-INT8 and the kernel lets this process use it
/// (Linux asks each process to request the tile state once).
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8
        let edx = __cpuid_count(7, 0).edx;
        edx & (1 << 24) != 0 && edx & (1 << 25) != 0 && request_tile_state()
    })
}

/// Asks Linux for the tile state with `arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)` (0 when granted). Other systems are not asked, and
/// AMX stays unused there.
#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: a Linux system call that only changes this process's
    // permission to use the AMX state; it touches no memory of ours.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// The 64-byte tile configuration (palette 1), twice over (tmm0-2 and
/// tmm3-5): the 16 × 16 i32 result, the 16 × K-byte weights, the
/// K/4 × 64-byte tokens.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Loads the tile configuration on this thread for products over `k`
/// bytes per tile (32: Q4_0 blocks and Q4_K sub-blocks; 16: Q6_K's).
///
/// # Safety
/// [`available`] must have returned true.
pub(super) unsafe fn configure(k: u8) {
    load_tile_config(&[(16, 64), (16, k as u16), (k / 4, 64)].repeat(2));
}

/// Loads a tile configuration (palette 1) on this thread: tile `t` gets
/// `shapes[t]` = (rows, bytes per row), the rest none.
///
/// # Safety
/// [`available`] must have returned true.
pub(super) unsafe fn load_tile_config(shapes: &[(u8, u16)]) {
    let mut cfg = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [0; 16],
        rows: [0; 16],
    };
    for (t, &(rows, colsb)) in shapes.iter().enumerate() {
        cfg.rows[t] = rows;
        cfg.colsb[t] = colsb;
    }
    asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly));
}

/// Writes a tile of results, `acc[row]` holding 16 tokens' values, as
/// `out[(first + m) · n + row0 + row]` for the first `tokens` tokens and
/// `rows` rows: transposed in registers (16 × 16 floats), then one masked
/// 64-byte store per token.
///
/// # Safety
/// AVX-512 F must be available; `out` must hold those elements.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store_transposed(
    acc: &[__m512; TILE],
    out: *mut f32,
    n: usize,
    first: usize,
    tokens: usize,
    row0: usize,
    rows: usize,
) {
    // pairs of rows interleaved by element, then pairs of pairs: u[4g + e]
    // holds, in 128-bit quarter q, rows 4g..4g+4 of element 4q + e
    let t: [__m512; TILE] = std::array::from_fn(|i| {
        let (a, b) = (acc[i / 2 * 2], acc[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    let u: [__m512; TILE] = std::array::from_fn(|i| {
        let (g, e) = (i / 4, i % 4);
        let (a, b) = (
            _mm512_castps_pd(t[4 * g + e / 2]),
            _mm512_castps_pd(t[4 * g + 2 + e / 2]),
        );
        _mm512_castpd_ps(if e % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    let mask = ((1u32 << rows) - 1) as u16;
    for e in 0..4 {
        // quarters 0 and 2 / 1 and 3 of row groups (0, 1) and (2, 3)
        let even = [
            _mm512_shuffle_f32x4::<0x88>(u[e], u[4 + e]),
            _mm512_shuffle_f32x4::<0x88>(u[8 + e], u[12 + e]),
        ];
        let odd = [
            _mm512_shuffle_f32x4::<0xDD>(u[e], u[4 + e]),
            _mm512_shuffle_f32x4::<0xDD>(u[8 + e], u[12 + e]),
        ];
        let columns = [
            (e, _mm512_shuffle_f32x4::<0x88>(even[0], even[1])),
            (4 + e, _mm512_shuffle_f32x4::<0x88>(odd[0], odd[1])),
            (8 + e, _mm512_shuffle_f32x4::<0xDD>(even[0], even[1])),
            (12 + e, _mm512_shuffle_f32x4::<0xDD>(odd[0], odd[1])),
        ];
        for (m, column) in columns {
            if m < tokens {
                _mm512_mask_storeu_ps(out.add((first + m) * n + row0), mask, column);
            }
        }
    }
}

/// Two tile products on the tile unit, `c[i] = a[i] · x[i]` (16 × 16 i32
/// results, rows 64 bytes apart): `a[i]` 16 rows of weights `a_stride`
/// bytes apart (unsigned bytes, or signed with `SIGNED`: `tdpbusd` /
/// `tdpbssd`), `x[i]` the tokens' B tile (rows 64 bytes apart). The
/// configuration (`configure`) must match `a_stride`.
#[inline(always)]
pub(super) unsafe fn two_products<const SIGNED: bool>(
    a: [*const u8; 2],
    a_stride: usize,
    x: [*const u8; 2],
    c: [*mut i32; 2],
) {
    macro_rules! products {
        ($op:literal) => {
            asm!(
                "tilezero tmm0",
                "tileloadd tmm1, [{a0} + {a_stride}]",
                "tileloadd tmm2, [{x0} + {x_stride}]",
                concat!($op, " tmm0, tmm1, tmm2"),
                "tilezero tmm3",
                "tileloadd tmm4, [{a1} + {a_stride}]",
                "tileloadd tmm5, [{x1} + {x_stride}]",
                concat!($op, " tmm3, tmm4, tmm5"),
                "tilestored [{c0} + {c_stride}], tmm0",
                "tilestored [{c1} + {c_stride}], tmm3",
                a0 = in(reg) a[0],
                a1 = in(reg) a[1],
                x0 = in(reg) x[0],
                x1 = in(reg) x[1],
                a_stride = in(reg) a_stride,
                x_stride = in(reg) 64usize,
                c0 = in(reg) c[0],
                c1 = in(reg) c[1],
                c_stride = in(reg) 64usize,
                options(nostack),
            )
        };
    }
    if SIGNED {
        products!("tdpbssd")
    } else {
        products!("tdpbusd")
    }
}

/// Bytes of `t` tokens' prepared activations for rows of `blocks` blocks.
pub fn prepared_bytes(t: usize, blocks: usize) -> usize {
    t.div_ceil(TILE) * blocks * TOKEN_BLOCK
}

/// Prepares token tile `tile` (16 tokens of the Q8_0 rows `xq`, each
/// `blocks` blocks; missing tokens are zero) into `out`
/// ([`TOKEN_BLOCK`] bytes per block).
pub fn prepare_tile(xq: &[u8], t: usize, blocks: usize, tile: usize, out: &mut [u8]) {
    let row = blocks * q8_0::BYTES;
    let table = f16_table();
    out.fill(0);
    for m in 0..TILE.min(t.saturating_sub(tile * TILE)) {
        let x = &xq[(tile * TILE + m) * row..][..row];
        for (b, o) in out.chunks_exact_mut(TOKEN_BLOCK).enumerate() {
            let xb = &x[b * q8_0::BYTES..(b + 1) * q8_0::BYTES];
            for k4 in 0..8 {
                o[64 * k4 + 4 * m..][..4].copy_from_slice(&xb[2 + 4 * k4..][..4]);
            }
            let sum: i32 = xb[2..].iter().map(|&v| v as i8 as i32).sum();
            o[NEG_CORR_AT + 4 * m..][..4].copy_from_slice(&(-8 * sum).to_le_bytes());
            let dx = table[u16::from_le_bytes([xb[0], xb[1]]) as usize];
            o[SCALES_AT + 4 * m..][..4].copy_from_slice(&dx.to_le_bytes());
        }
    }
}

/// Per-thread buffers: the unpacked panel, its scales, the accumulators.
#[derive(Default)]
pub struct PanelBuffers {
    weights: AlignedBytes,
    scales: Vec<f32>,
    acc: Vec<__m512>,
}

/// Unpacks weight rows `row0..row0 + rows` (at most 16; missing rows are
/// zero) into A tiles, one per block, and their scales (`scales[b·16 + r]`).
/// Q8_0 weights (`Q8`) become unsigned bytes w + 128 (the tokens' −8·Σx is
/// then taken 16 times: −128·Σx); Q4_0 weights their nibbles.
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn unpack_panel<const Q8: bool>(w: &[u8], row_bytes: usize, row0: usize, rows: usize, buf: &mut PanelBuffers) {
    let block_bytes = if Q8 { q8_0::BYTES } else { q4_0::BYTES };
    let blocks = row_bytes / block_bytes;
    // every byte is written below, rows past `rows` with zeros
    buf.weights.resize(blocks * PANEL_BLOCK);
    buf.scales.resize(blocks * TILE, 0.0);
    if rows < TILE {
        for b in 0..blocks {
            buf.weights.as_mut_slice()[b * PANEL_BLOCK + 32 * rows..(b + 1) * PANEL_BLOCK].fill(0);
            buf.scales[b * TILE + rows..(b + 1) * TILE].fill(0.0);
        }
    }
    let nibble = _mm_set1_epi8(0x0F);
    // each row's offset; rows past `rows` are left out of the scale gathers
    let offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(row_bytes as i32),
    );
    let present: __mmask16 = if rows >= TILE { !0 } else { (1 << rows) - 1 };
    let base = w[row0 * row_bytes..].as_ptr();
    // block after block, so each block's 512 bytes are written in order
    for b in 0..blocks {
        let first = base.add(b * block_bytes);
        // the 16 rows' f16 scales in one gather, widened as the table would
        let d = _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), present, offsets, first as *const i32);
        _mm512_storeu_ps(
            buf.scales.as_mut_ptr().add(b * TILE),
            _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d)),
        );
        let dst = buf.weights.as_mut_slice().as_mut_ptr().add(b * PANEL_BLOCK);
        for r in 0..rows {
            let blk = first.add(r * row_bytes);
            let dst = dst.add(32 * r);
            if Q8 {
                let q = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                _mm256_storeu_si256(dst as *mut __m256i, _mm256_xor_si256(q, _mm256_set1_epi8(-128)));
                continue;
            }
            let packed = _mm_loadu_si128(blk.add(2) as *const __m128i);
            _mm_storeu_si128(dst as *mut __m128i, _mm_and_si128(packed, nibble));
            _mm_storeu_si128(
                dst.add(16) as *mut __m128i,
                _mm_and_si128(_mm_srli_epi16(packed, 4), nibble),
            );
        }
    }
}

/// `out[token · n + row]` for rows `row0..row0 + rows` (a panel of at most
/// 16) and every token, from the Q4_0 (or, `Q8`, Q8_0) weight matrix `w`
/// (rows of `row_bytes`) and the prepared tokens.
///
/// # Safety
/// [`available`] must have returned true, the CPU must support AVX-512 F,
/// BW and DQ, `out` must hold `t · n` floats, and no other thread may write
/// these rows of it.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel<const Q8: bool>(
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
    let blocks = row_bytes / if Q8 { q8_0::BYTES } else { q4_0::BYTES };
    assert!(rows <= TILE && w.len() >= (row0 + rows) * row_bytes, "panel rows");
    assert_eq!(tokens.len(), prepared_bytes(t, blocks), "prepared tokens");
    unpack_panel::<Q8>(w, row_bytes, row0, rows, buf);
    configure(32);
    buf.acc.resize(Q4_0_GROUP * TILE, _mm512_setzero_ps());
    let mut c = [[[_mm512_setzero_si512(); TILE]; 2]; 2];
    for tile in 0..t.div_ceil(TILE) {
        // each lane is written whole below; lanes without a block stay zero
        if blocks < Q4_0_GROUP {
            buf.acc.fill(_mm512_setzero_ps());
        }
        let tb = tokens.as_ptr().add(tile * blocks * TOKEN_BLOCK);
        for first in 0..Q4_0_GROUP.min(blocks) {
            let mut acc = [_mm512_setzero_ps(); TILE];
            // This lane's blocks, group after group, two per round on the
            // tile unit; a round's results are scaled during the next round,
            // once its tile stores have landed.
            let mut pending: Option<([usize; 2], usize, usize)> = None;
            let mut b = first;
            loop {
                let round = (b < blocks).then(|| {
                    let pair = [b, (b + Q4_0_GROUP).min(blocks - 1)];
                    let x = pair.map(|b| tb.add(b * TOKEN_BLOCK));
                    let a = pair.map(|b| buf.weights.as_slice().as_ptr().add(b * PANEL_BLOCK));
                    let slot = (b / (2 * Q4_0_GROUP)) % 2;
                    let out = &mut c[slot];
                    two_products::<false>(
                        a,
                        32,
                        x,
                        [out[0].as_mut_ptr() as *mut i32, out[1].as_mut_ptr() as *mut i32],
                    );
                    // the second block of a lane's last round may not exist
                    (pair, slot, if b + Q4_0_GROUP < blocks { 2 } else { 1 })
                });
                if let Some((pair, slot, count)) = pending {
                    for (k, &b) in pair.iter().enumerate().take(count) {
                        let x = tb.add(b * TOKEN_BLOCK);
                        let mut neg_corr = _mm512_loadu_si512(x.add(NEG_CORR_AT) as *const __m512i);
                        if Q8 {
                            neg_corr = _mm512_slli_epi32::<4>(neg_corr);
                        }
                        let dx = _mm512_loadu_ps(x.add(SCALES_AT) as *const f32);
                        let dw = &buf.scales[b * TILE..][..TILE];
                        for r in 0..TILE {
                            let sums = _mm512_cvtepi32_ps(_mm512_add_epi32(c[slot][k][r], neg_corr));
                            let d = _mm512_mul_ps(_mm512_set1_ps(dw[r]), dx);
                            acc[r] = _mm512_fmadd_ps(sums, d, acc[r]);
                        }
                    }
                }
                pending = round;
                if pending.is_none() {
                    break;
                }
                b += 2 * Q4_0_GROUP;
            }
            let lane = q4_0_group_lane(first);
            buf.acc[lane * TILE..][..TILE].copy_from_slice(&acc);
        }
        // the lanes added in halves (8, 4, 2, 1), as the VNNI kernel adds them
        let sums: [__m512; TILE] = std::array::from_fn(|r| {
            let lane = |l: usize| buf.acc[l * TILE + r];
            let a8: [__m512; 8] = std::array::from_fn(|l| _mm512_add_ps(lane(l), lane(l + 8)));
            let a4: [__m512; 4] = std::array::from_fn(|l| _mm512_add_ps(a8[l], a8[l + 4]));
            let a2: [__m512; 2] = std::array::from_fn(|l| _mm512_add_ps(a4[l], a4[l + 2]));
            _mm512_add_ps(a2[0], a2[1])
        });
        store_transposed(&sums, out, n, tile * TILE, TILE.min(t - tile * TILE), row0, rows);
    }
    asm!("tilerelease", options(nostack, nomem));
}
