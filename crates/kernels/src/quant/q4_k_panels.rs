//! Q4_K (and Q5_K) weights repacked at load time into panels of 16 rows:
//! the Q4_0 panels' idea (`quant::q4_0_panels`) for the K-quant that most
//! Phi-3 GGUF files use (Q4_K_M), and for Q5_K (Q5_K_M), which is Q4_K with
//! a fifth bit per weight.
//!
//! Why: the file-layout kernels (`simd::vnni_k`) hold one row's weights
//! across the lanes of a register, so each superblock's sums must be
//! gathered across lanes before they can be scaled, per (row, token) pair;
//! with several tokens that costs more than the multiply-adds
//! (`batchbench q4_k` on Zen 4: 4 tokens 35 ms against 15 for one). In a
//! panel the 16 rows of a superblock are interleaved four code bytes at a
//! time, so a `vpdpbusd` with the token's four activation bytes broadcast
//! leaves each row's sum in its own lane, and the sub-block scales,
//! minimums and superblock scales are vectors over the rows. The bytes are
//! the file's, moved: a panel is exactly as large as its 16 rows.
//!
//! Layout of one superblock of a panel (2304 bytes, 36 cache lines; the
//! panel is its superblocks back to back):
//! - bytes 0..2048, the codes: for chunk c (0..4) and vector v (0..8), at
//!   512c + 64v + 4r, row r's code bytes 32c + 4v..32c + 4v + 4 (their low
//!   nibbles are weights 4v..4v + 4 of sub-block 2c, their high nibbles the
//!   same weights of sub-block 2c + 1);
//! - 2048..2080 the 16 rows' f16 d, 2080..2112 their f16 dmin;
//! - 2112..2304 the packed 6-bit scales and minimums, 12 bytes per row as
//!   three 32-bit words: word i of row r at 2112 + 64i + 4r;
//! - Q5_K only, 2304..2816, the fifth bits `qh`: for v (0..8), at 2304 +
//!   64v + 4r, row r's `qh` bytes 4v..4v + 4 (bit j of byte l is weight
//!   32j + l's), so a Q5_K superblock is 2816 bytes (44 lines).
//!
//! The arithmetic of a (row, token) pair is the file layout's twin
//! `quant::dot::dot_q4_k_q8_k_blockwise_scalar` (`dot_q5_k_…` for Q5_K),
//! bit for bit: per
//! superblock the exact integers dot = Σ_j sc_j·Σ q·x and mins = Σ_j m_j ·
//! (bsum_2j + bsum_2j+1), then `acc = fma(dot, d·dx, acc)` and `acc =
//! fma(mins, (−dmin)·dx, acc)`. So a matrix gives the same bits as panels
//! or in the file's layout, on every kernel.

use super::{q4_k, q5_k};

/// Rows per panel (the lanes of a 512-bit vector of i32).
pub const ROWS: usize = 16;

/// Weights per superblock.
pub const SUPER: usize = 256;

/// Bytes of one superblock of a Q4_K panel.
pub const SUPER_BYTES: usize = ROWS * q4_k::BYTES;
/// Bytes of one superblock of a Q5_K panel.
pub const Q5_SUPER_BYTES: usize = ROWS * q5_k::BYTES;
/// Offset of a Q5_K superblock's fifth bits.
pub const QH_AT: usize = SUPER_BYTES;

/// Bytes of one superblock (`Q5`: of Q5_K) in a panel and in a file row.
const fn sizes(q5: bool) -> (usize, usize) {
    if q5 {
        (Q5_SUPER_BYTES, q5_k::BYTES)
    } else {
        (SUPER_BYTES, q4_k::BYTES)
    }
}

/// Offset of the codes' end (the f16 d of the 16 rows) in a superblock.
pub const D_AT: usize = 2048;
/// Offset of the f16 dmin of the 16 rows.
pub const DMIN_AT: usize = 2080;
/// Offset of the packed scale words (three vectors of 16 words).
pub const SCALES_AT: usize = 2112;

/// Bytes of one Q4_K panel of rows of `k` weights (a multiple of 64).
pub fn panel_bytes(k: usize) -> usize {
    k / SUPER * SUPER_BYTES
}

/// Bytes of one Q5_K panel of rows of `k` weights (a multiple of 64).
pub fn q5_panel_bytes(k: usize) -> usize {
    k / SUPER * Q5_SUPER_BYTES
}

/// Repacks the `n × k` Q4_K matrix `w` (file layout) into panels in `out`
/// (as `KPanels::pack`, the way in); returns whether every d and dmin is
/// finite.
pub(super) fn pack(w: &[u8], n: usize, k: usize, out: &mut [u8]) -> bool {
    pack_as::<false>(w, n, k, out)
}

/// [`pack`] for a Q5_K matrix.
pub(super) fn pack_q5_k(w: &[u8], n: usize, k: usize, out: &mut [u8]) -> bool {
    pack_as::<true>(w, n, k, out)
}

fn pack_as<const Q5: bool>(w: &[u8], n: usize, k: usize, out: &mut [u8]) -> bool {
    assert!(
        super::KPanels::can_pack(n, k),
        "{n} × {k} K-quant cannot be held as panels"
    );
    let (super_bytes, block_bytes) = sizes(Q5);
    let row_bytes = k / SUPER * block_bytes;
    assert_eq!(w.len(), n * row_bytes, "K-quant matrix size");
    let len = k / SUPER * super_bytes;
    assert_eq!(out.len(), n / ROWS * len, "panel buffer size");
    let non_finite = std::sync::atomic::AtomicBool::new(false);
    crate::pool::global().for_each_row(out, len, &|p, panel| {
        if !pack_panel::<Q5>(&w[p * ROWS * row_bytes..(p + 1) * ROWS * row_bytes], k, panel) {
            non_finite.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    !non_finite.into_inner()
}

/// Repacks 16 rows (file layout) into one panel; returns whether every d
/// and dmin is finite.
fn pack_panel<const Q5: bool>(rows: &[u8], k: usize, panel: &mut [u8]) -> bool {
    let (super_bytes, block_bytes) = sizes(Q5);
    let (supers, row_bytes) = (k / SUPER, k / SUPER * block_bytes);
    assert!(
        rows.len() >= ROWS * row_bytes && panel.len() >= supers * super_bytes,
        "panel sizes"
    );
    let qs_at = if Q5 { 48 } else { 16 };
    let mut finite = true;
    for (b, sb) in panel.chunks_exact_mut(super_bytes).take(supers).enumerate() {
        for r in 0..ROWS {
            let block = &rows[r * row_bytes + b * block_bytes..][..block_bytes];
            finite &= super::half_bits_finite(u16::from_le_bytes([block[0], block[1]]))
                && super::half_bits_finite(u16::from_le_bytes([block[2], block[3]]));
            sb[D_AT + 2 * r..][..2].copy_from_slice(&block[0..2]);
            sb[DMIN_AT + 2 * r..][..2].copy_from_slice(&block[2..4]);
            for i in 0..3 {
                sb[SCALES_AT + 64 * i + 4 * r..][..4].copy_from_slice(&block[4 + 4 * i..][..4]);
            }
            for c in 0..4 {
                for v in 0..8 {
                    sb[512 * c + 64 * v + 4 * r..][..4].copy_from_slice(&block[qs_at + 32 * c + 4 * v..][..4]);
                }
            }
            if Q5 {
                for v in 0..8 {
                    sb[QH_AT + 64 * v + 4 * r..][..4].copy_from_slice(&block[16 + 4 * v..][..4]);
                }
            }
        }
    }
    finite
}

/// Superblock `b` of row `r` (0..16) of a panel, in the file's layout
/// (`Q5`: of Q5_K, 176 bytes; else 144).
pub(super) fn file_block<const Q5: bool>(panel: &[u8], r: usize, b: usize, block: &mut [u8]) {
    let super_bytes = sizes(Q5).0;
    let sb = &panel[b * super_bytes..][..super_bytes];
    let qs_at = if Q5 { 48 } else { 16 };
    block[0..2].copy_from_slice(&sb[D_AT + 2 * r..][..2]);
    block[2..4].copy_from_slice(&sb[DMIN_AT + 2 * r..][..2]);
    for i in 0..3 {
        block[4 + 4 * i..][..4].copy_from_slice(&sb[SCALES_AT + 64 * i + 4 * r..][..4]);
    }
    for c in 0..4 {
        for v in 0..8 {
            block[qs_at + 32 * c + 4 * v..][..4].copy_from_slice(&sb[512 * c + 64 * v + 4 * r..][..4]);
        }
    }
    if Q5 {
        for v in 0..8 {
            block[16 + 4 * v..][..4].copy_from_slice(&sb[QH_AT + 64 * v + 4 * r..][..4]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{KPanels, QuantKind};

    fn random_q4_k(n: usize, k: usize, seed: u32) -> Vec<u8> {
        crate::quant::random_matrix(QuantKind::Q4K, n, k, seed)
    }

    #[test]
    fn panels_hold_the_rows_unchanged() {
        let (n, k) = (32, 512);
        for quant in [KPanels::Q4K, KPanels::Q5K] {
            let kind = quant.kind();
            let w = crate::quant::random_matrix(kind, n, k, 5);
            let mut packed = vec![0u8; quant.packed_bytes(n, k)];
            assert!(quant.pack(&w, n, k, &mut packed), "finite scales");
            assert_eq!(packed.len(), w.len(), "a panel is its rows' size");
            let row_bytes = kind.row_bytes(k);
            let mut back = vec![0u8; row_bytes];
            let (mut want, mut got) = (vec![0f32; k], vec![0f32; k]);
            for row in 0..n {
                quant.unpack_row(&packed[row / ROWS * quant.panel_bytes(k)..], k, row % ROWS, &mut back);
                assert_eq!(back, w[row * row_bytes..(row + 1) * row_bytes], "{kind:?} row {row}");
                kind.dequantize(&w[row * row_bytes..(row + 1) * row_bytes], &mut want);
                quant.dequantize_row(&packed, k, row, &mut got);
                assert_eq!(want, got, "{kind:?} row {row}");
            }
        }
        assert!(KPanels::can_pack(16, 256) && !KPanels::can_pack(8, 256) && !KPanels::can_pack(16, 128));
    }

    #[test]
    fn packing_finds_a_non_finite_d_or_dmin_in_any_row_and_superblock() {
        let (n, k) = (32, 512);
        let w = random_q4_k(n, k, 9);
        let mut packed = vec![0u8; KPanels::Q4K.packed_bytes(n, k)];
        assert!(pack(&w, n, k, &mut packed));
        for (row, block, field, bad) in [
            (0, 0, 0, half::f16::NAN),
            (31, 1, 2, half::f16::INFINITY),
            (17, 0, 2, half::f16::NEG_INFINITY),
        ] {
            let mut w = w.clone();
            let at = (row * k / 256 + block) * q4_k::BYTES + field;
            w[at..at + 2].copy_from_slice(&bad.to_le_bytes());
            assert!(
                !pack(&w, n, k, &mut packed),
                "row {row} superblock {block} field {field}"
            );
            assert!(!QuantKind::Q4K.scales_finite(&w));
        }
    }
}
