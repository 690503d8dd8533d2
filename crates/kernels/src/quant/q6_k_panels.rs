//! Q6_K weights repacked at load time into panels of 16 rows, and their
//! scalar twin (the Q4_K panels' reasons: `quant::q4_k_panels`). Q6_K is
//! the other half of the common Q4_K_M files (their output matrix and
//! some of the down projections), and whole Q6_K files.
//!
//! Layout of one superblock of a panel (3328 bytes, 52 cache lines; the
//! superblocks back to back, then every superblock's 16 f16 d, 32 bytes
//! each, the panel rounded up to a cache line with zeros):
//! - bytes 0..2048, the low nibbles `ql`: for half h (0..2) and group g
//!   (0..16), at 1024h + 64g + 4r, row r's `ql` bytes 64h + 4g..64h + 4g + 4;
//! - 2048..3072, the high bits `qh`: for half h and group g (0..8), at
//!   2048 + 512h + 64g + 4r, row r's `qh` bytes 32h + 4g..32h + 4g + 4;
//! - 3072..3328, the 16 signed scales: for q (0..4), at 3072 + 64q + 4r,
//!   row r's scales 4q..4q + 4.
//!
//! Weight 128h + 32a + l (l in 0..32) is the nibble of `ql` byte 64h + 32(a
//! mod 2) + l (low for a < 2, high otherwise) below bits 2a..2a + 2 of `qh`
//! byte 32h + l (GGUF_PHI3.md, Q6_K). The arithmetic of a (row, token) pair
//! is the file layout's twin `quant::dot::dot_q6_k_q8_k_blockwise_scalar`,
//! bit for bit: per superblock the exact integer Σ_i sc_i·(Σ q·x −
//! 32·bsum_i), then `acc = fma(total, d·dx, acc)`.

use super::q6_k;

/// Rows per panel (the lanes of a 512-bit vector of i32).
pub const ROWS: usize = 16;

/// Weights per superblock.
pub const SUPER: usize = 256;

/// Bytes of one superblock of a panel, without its d.
pub const SUPER_BYTES: usize = 3328;

/// Offset of the high bits in a superblock.
pub const QH_AT: usize = 2048;
/// Offset of the scales in a superblock.
pub const SCALES_AT: usize = 3072;

/// Offset of the superblocks' d within a panel of rows of `k` weights.
pub fn d_at(k: usize) -> usize {
    k / SUPER * SUPER_BYTES
}

/// Bytes of one panel of rows of `k` weights (a multiple of 64).
pub fn panel_bytes(k: usize) -> usize {
    (k / SUPER * ROWS * q6_k::BYTES).next_multiple_of(64)
}

/// Where each run of four bytes of a row's superblock goes in the panel's
/// superblock, for row 0 (row r adds 4r): (file offset, panel offset).
fn runs() -> impl Iterator<Item = (usize, usize)> {
    let ql = (0..2).flat_map(|h| (0..16).map(move |g| (64 * h + 4 * g, 1024 * h + 64 * g)));
    let qh = (0..2).flat_map(|h| (0..8).map(move |g| (128 + 32 * h + 4 * g, QH_AT + 512 * h + 64 * g)));
    let scales = (0..4).map(|q| (192 + 4 * q, SCALES_AT + 64 * q));
    ql.chain(qh).chain(scales)
}

/// Repacks the `n × k` Q6_K matrix `w` (file layout) into panels in `out`
/// (as `KPanels::pack`, the way in; padding bytes are zeroed); returns
/// whether every d is finite.
pub(super) fn pack(w: &[u8], n: usize, k: usize, out: &mut [u8]) -> bool {
    assert!(
        super::KPanels::can_pack(n, k),
        "{n} × {k} Q6_K cannot be held as panels"
    );
    let row_bytes = k / SUPER * q6_k::BYTES;
    assert_eq!(w.len(), n * row_bytes, "Q6_K matrix size");
    assert_eq!(out.len(), n / ROWS * panel_bytes(k), "panel buffer size");
    let non_finite = std::sync::atomic::AtomicBool::new(false);
    crate::pool::global().for_each_row(out, panel_bytes(k), &|p, panel| {
        if !pack_panel(&w[p * ROWS * row_bytes..(p + 1) * ROWS * row_bytes], k, panel) {
            non_finite.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    !non_finite.into_inner()
}

/// Repacks 16 rows (file layout) into one panel; returns whether every d
/// is finite.
fn pack_panel(rows: &[u8], k: usize, panel: &mut [u8]) -> bool {
    let (supers, row_bytes) = (k / SUPER, k / SUPER * q6_k::BYTES);
    assert!(
        rows.len() >= ROWS * row_bytes && panel.len() >= panel_bytes(k),
        "panel sizes"
    );
    let (blocks, ds) = panel.split_at_mut(d_at(k));
    let mut finite = true;
    for (b, sb) in blocks.chunks_exact_mut(SUPER_BYTES).enumerate() {
        for r in 0..ROWS {
            let block = &rows[r * row_bytes + b * q6_k::BYTES..][..q6_k::BYTES];
            finite &= super::half_bits_finite(u16::from_le_bytes([block[208], block[209]]));
            ds[32 * b + 2 * r..][..2].copy_from_slice(&block[208..210]);
            for (from, to) in runs() {
                sb[to + 4 * r..][..4].copy_from_slice(&block[from..from + 4]);
            }
        }
    }
    // the padding up to the next 64-byte boundary
    ds[32 * supers..].fill(0);
    finite
}

/// Superblock `b` of row `r` (0..16) of a panel, in the file's 210-byte layout.
pub(super) fn file_block(panel: &[u8], k: usize, r: usize, b: usize, block: &mut [u8]) {
    let sb = &panel[b * SUPER_BYTES..][..SUPER_BYTES];
    for (from, to) in runs() {
        block[from..from + 4].copy_from_slice(&sb[to + 4 * r..][..4]);
    }
    block[208..210].copy_from_slice(&panel[d_at(k) + 32 * b + 2 * r..][..2]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{KPanels, QuantKind};

    #[test]
    fn panels_hold_the_rows_unchanged() {
        // 3 superblocks: 10080 bytes per panel, rounded up to 10112
        let (n, k) = (32, 768);
        let w = crate::quant::random_matrix(QuantKind::Q6K, n, k, 5);
        let mut packed = vec![0u8; KPanels::Q6K.packed_bytes(n, k)];
        assert!(KPanels::Q6K.pack(&w, n, k, &mut packed), "finite scales");
        assert_eq!(panel_bytes(k), 10112);
        let row_bytes = QuantKind::Q6K.row_bytes(k);
        let mut back = vec![0u8; row_bytes];
        let (mut want, mut got) = (vec![0f32; k], vec![0f32; k]);
        for row in 0..n {
            KPanels::Q6K.unpack_row(&packed[row / ROWS * panel_bytes(k)..], k, row % ROWS, &mut back);
            assert_eq!(back, w[row * row_bytes..(row + 1) * row_bytes], "row {row}");
            QuantKind::Q6K.dequantize(&w[row * row_bytes..(row + 1) * row_bytes], &mut want);
            KPanels::Q6K.dequantize_row(&packed, k, row, &mut got);
            assert_eq!(want, got, "row {row}");
        }
        // every byte of a superblock but d has one place in the panel
        let mut places: Vec<usize> = runs().flat_map(|(_, to)| to..to + 4).collect();
        places.sort();
        assert_eq!(places.len(), 208);
        assert!(places.windows(2).all(|p| p[0] < p[1]));
    }

    #[test]
    fn packing_finds_a_non_finite_d_in_any_row_and_superblock() {
        let (n, k) = (32, 512);
        let w = crate::quant::random_matrix(QuantKind::Q6K, n, k, 9);
        let mut packed = vec![0u8; KPanels::Q6K.packed_bytes(n, k)];
        assert!(KPanels::Q6K.pack(&w, n, k, &mut packed));
        for (row, block, bad) in [
            (0, 0, half::f16::NAN),
            (31, 1, half::f16::INFINITY),
            (17, 0, half::f16::NEG_INFINITY),
        ] {
            let mut w = w.clone();
            let at = (row * k / SUPER + block) * q6_k::BYTES + 208;
            w[at..at + 2].copy_from_slice(&bad.to_le_bytes());
            assert!(!pack(&w, n, k, &mut packed), "row {row} superblock {block}");
            assert!(!QuantKind::Q6K.scales_finite(&w));
        }
    }
}
