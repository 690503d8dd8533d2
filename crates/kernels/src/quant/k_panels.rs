//! What the K-quant panel layouts (`q4_k_panels`, `q6_k_panels`) share:
//! which type a packed matrix holds, its sizes and packer, and the row work
//! every layout does the same way (back to the file's layout, to f32, the
//! scalar twin). Callers go through [`KPanels`] rather than the layouts.

use super::{dot, q4_k_panels, q6_k, q6_k_panels, q8_k, QuantKind};

/// Weights per superblock, the same in both layouts (as are the rows per
/// panel, [`KPanels::ROWS`]).
const SUPER: usize = q4_k_panels::SUPER;
const _: () = assert!(q6_k_panels::ROWS == KPanels::ROWS && q6_k_panels::SUPER == SUPER);

/// The K-quants held as panels of 16 rows (`q4_k_panels` for Q4_K and
/// Q5_K, `q6_k_panels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KPanels {
    Q4K,
    /// In the Q4_K layout, with the fifth bits after each superblock.
    Q5K,
    Q6K,
}

impl KPanels {
    /// Rows per panel.
    pub const ROWS: usize = q4_k_panels::ROWS;

    /// The panels for matrices of `kind`, if it has them.
    pub fn of(kind: QuantKind) -> Option<KPanels> {
        match kind {
            QuantKind::Q4K => Some(KPanels::Q4K),
            QuantKind::Q5K => Some(KPanels::Q5K),
            QuantKind::Q6K => Some(KPanels::Q6K),
            _ => None,
        }
    }

    /// Whether an `n × k` matrix can be held as panels (whole panels of
    /// rows, whole superblocks).
    pub fn can_pack(n: usize, k: usize) -> bool {
        n > 0 && n.is_multiple_of(Self::ROWS) && k > 0 && k.is_multiple_of(SUPER)
    }

    /// Bytes of an `n × k` matrix as panels.
    pub fn packed_bytes(self, n: usize, k: usize) -> usize {
        n / Self::ROWS * self.panel_bytes(k)
    }

    /// Repacks the `n × k` matrix `w` (file layout) into panels in `out`
    /// ([`Self::packed_bytes`] long), over the pool. Returns whether every
    /// superblock scale is finite (the check `QuantKind::scales_finite`
    /// makes, done on the way so that loading reads the weights once).
    #[must_use = "a matrix with a NaN or infinite scale must be refused"]
    pub fn pack(self, w: &[u8], n: usize, k: usize, out: &mut [u8]) -> bool {
        match self {
            KPanels::Q4K => q4_k_panels::pack(w, n, k, out),
            KPanels::Q5K => q4_k_panels::pack_q5_k(w, n, k, out),
            KPanels::Q6K => q6_k_panels::pack(w, n, k, out),
        }
    }

    /// Bytes of one panel of rows of `k` weights.
    pub fn panel_bytes(self, k: usize) -> usize {
        match self {
            KPanels::Q4K => q4_k_panels::panel_bytes(k),
            KPanels::Q5K => q4_k_panels::q5_panel_bytes(k),
            KPanels::Q6K => q6_k_panels::panel_bytes(k),
        }
    }

    /// The type the panels hold.
    pub fn kind(self) -> QuantKind {
        match self {
            KPanels::Q4K => QuantKind::Q4K,
            KPanels::Q5K => QuantKind::Q5K,
            KPanels::Q6K => QuantKind::Q6K,
        }
    }

    /// Superblock `b` of row `r` (0..16) of a panel in the file's layout.
    fn file_block(self, panel: &[u8], k: usize, r: usize, b: usize, block: &mut [u8]) {
        match self {
            KPanels::Q4K => q4_k_panels::file_block::<false>(panel, r, b, block),
            KPanels::Q5K => q4_k_panels::file_block::<true>(panel, r, b, block),
            KPanels::Q6K => q6_k_panels::file_block(panel, k, r, b, block),
        }
    }

    /// Row `r` (0..16) of a panel back in the file's layout.
    pub fn unpack_row(self, panel: &[u8], k: usize, r: usize, out: &mut [u8]) {
        let bytes = self.kind().block_bytes();
        for (b, block) in out.chunks_exact_mut(bytes).take(k / SUPER).enumerate() {
            self.file_block(panel, k, r, b, block);
        }
    }

    /// Row `row` of a packed `n × k` matrix as f32 (embedding lookups, the
    /// float fallback).
    pub fn dequantize_row(self, packed: &[u8], k: usize, row: usize, out: &mut [f32]) {
        let len = self.panel_bytes(k);
        let panel = &packed[row / Self::ROWS * len..][..len];
        let mut block = [0u8; q6_k::BYTES];
        let block = &mut block[..self.kind().block_bytes()];
        for (b, o) in out.chunks_exact_mut(SUPER).take(k / SUPER).enumerate() {
            self.file_block(panel, k, row % Self::ROWS, b, block);
            self.kind().dequantize(block, o);
        }
    }

    /// Scalar twin of the panel kernels: row `r` (0..16) of `panel` times
    /// the Q8_K activation row `x`, the file layout's twin
    /// (`dot::dot_q{4,5,6}_k_q8_k_blockwise_scalar`)
    /// on the row as the file held it.
    pub fn dot_scalar(self, panel: &[u8], k: usize, r: usize, x: &[u8]) -> f32 {
        assert_eq!(x.len(), k / SUPER * q8_k::BYTES, "Q8_K activation row");
        let mut row = vec![0u8; k / SUPER * self.kind().block_bytes()];
        self.unpack_row(panel, k, r, &mut row);
        match self {
            KPanels::Q4K => dot::dot_q4_k_q8_k_blockwise_scalar(&row, x),
            KPanels::Q5K => dot::dot_q5_k_q8_k_blockwise_scalar(&row, x),
            KPanels::Q6K => dot::dot_q6_k_q8_k_blockwise_scalar(&row, x),
        }
    }
}
