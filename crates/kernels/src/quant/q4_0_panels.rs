//! Q4_0 weights repacked at load time into panels of 16 rows, and their
//! scalar twin.
//!
//! Why: in the file's layout (one row after another, 18-byte blocks) a
//! SIMD dot product holds 32-bit lanes of one row, so each block's partial
//! sums must be gathered across lanes before they can be scaled: per
//! (weight row, token) pair that costs more than the multiply-adds. In a
//! panel the 16 rows of a block are interleaved four bytes at a time, so
//! one 64-byte vector holds the same four weights of 16 rows: a `vpdpbusd`
//! with the token's four activation bytes broadcast leaves each row's sum
//! in its own lane, ready to scale, and the vector is the B tile of an AMX
//! product as it stands (weights as B, tokens as A). The bytes are the
//! file's, moved: a panel is exactly as large as its 16 rows (no second
//! copy of the weights is kept, see `phi3_model::weights`).
//!
//! Layout of a panel (rows `16p..16p + 16`) with `blocks` blocks per row:
//! first every block's codes, 256 bytes each: vector `j` (0..4) of block `b`
//! holds, for row `r`, the block's nibble bytes `4j..4j + 4` (low nibbles:
//! weights `4j..4j + 4`; high nibbles: weights `16 + 4j..16 + 4j + 4`); then
//! every block's 16 f16 scales (32 bytes per block). Panels start on
//! 64-byte boundaries ([`panel_bytes`] rounds up).
//!
//! The arithmetic of a (row, token) pair, shared bit for bit by the VNNI
//! kernel, the AMX kernel and [`dot_scalar`]: each block's integer sum
//! s = Σ u·x − 8·Σ x is exact (u the nibbles 0..15); blocks are added in
//! order into one f32 accumulator, `acc = fma(s, d_w · d_x, acc)`.

use super::{f16_table, q4_0, q8_0};

/// Rows per panel (the lanes of a 512-bit vector of i32).
pub const ROWS: usize = 16;

/// Code bytes of one block of a panel.
pub const BLOCK_CODES: usize = ROWS * 16;

/// Whether an `n × k` Q4_0 matrix can be held as panels.
pub fn can_pack(n: usize, k: usize) -> bool {
    n > 0 && n.is_multiple_of(ROWS) && k.is_multiple_of(32) && k > 0
}

/// Bytes of one panel of rows of `k` weights (a multiple of 64).
pub fn panel_bytes(k: usize) -> usize {
    (k / 32 * ROWS * q4_0::BYTES).next_multiple_of(64)
}

/// Bytes of an `n × k` matrix as panels.
pub fn packed_bytes(n: usize, k: usize) -> usize {
    n / ROWS * panel_bytes(k)
}

/// Offset of block `b`'s scales within a panel.
pub fn scales_at(k: usize, b: usize) -> usize {
    k / 32 * BLOCK_CODES + 2 * ROWS * b
}

/// Repacks the `n × k` Q4_0 matrix `w` (file layout) into panels in `out`
/// ([`packed_bytes`] long; padding bytes are zeroed), panels shared out
/// over the pool. Returns whether every block scale is finite (the check
/// `QuantKind::scales_finite` makes, done here on the way, so that loading
/// reads the weights once).
#[must_use = "a matrix with a NaN or infinite scale must be refused"]
pub fn pack(w: &[u8], n: usize, k: usize, out: &mut [u8]) -> bool {
    assert!(can_pack(n, k), "{n} × {k} Q4_0 cannot be held as panels");
    let row_bytes = k / 32 * q4_0::BYTES;
    assert_eq!(w.len(), n * row_bytes, "Q4_0 matrix size");
    assert_eq!(out.len(), packed_bytes(n, k), "panel buffer size");
    let (panels, len) = (n / ROWS, panel_bytes(k));
    let tasks = crate::pool::global().tasks_for(panels);
    let chunk = panels.div_ceil(tasks);
    let out_ptr = crate::matmul::SendPtr(out.as_mut_ptr());
    let non_finite = std::sync::atomic::AtomicBool::new(false);
    crate::pool::global().run(tasks, &|task| {
        for p in task * chunk..((task + 1) * chunk).min(panels) {
            // SAFETY: each task writes its own panels of `out`, which
            // outlives the pool run.
            let panel = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(p * len), len) };
            if !pack_panel(&w[p * ROWS * row_bytes..(p + 1) * ROWS * row_bytes], k, panel) {
                non_finite.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    !non_finite.into_inner()
}

/// Repacks 16 rows (file layout) into one panel; returns whether every
/// block scale is finite.
pub fn pack_panel(rows: &[u8], k: usize, panel: &mut [u8]) -> bool {
    let (blocks, row_bytes) = (k / 32, k / 32 * q4_0::BYTES);
    assert!(
        rows.len() >= ROWS * row_bytes && panel.len() >= panel_bytes(k),
        "panel sizes"
    );
    let (codes, scales) = panel.split_at_mut(blocks * BLOCK_CODES);
    let mut finite = true;
    // block after block, so each block's 256 bytes of codes are written together
    for (b, block_codes) in codes.chunks_exact_mut(BLOCK_CODES).enumerate() {
        for r in 0..ROWS {
            let block = &rows[r * row_bytes + b * q4_0::BYTES..][..q4_0::BYTES];
            finite &= super::half_bits_finite(u16::from_le_bytes([block[0], block[1]]));
            scales[2 * (ROWS * b + r)..][..2].copy_from_slice(&block[..2]);
            for j in 0..4 {
                block_codes[64 * j + 4 * r..][..4].copy_from_slice(&block[2 + 4 * j..][..4]);
            }
        }
    }
    // the padding up to the next 64-byte boundary
    scales[2 * ROWS * blocks..].fill(0);
    finite
}

/// Block `b` of row `r` (0..16) of a panel, in the file's 18-byte layout.
fn file_block(panel: &[u8], k: usize, r: usize, b: usize, block: &mut [u8]) {
    let at = scales_at(k, b) + 2 * r;
    block[..2].copy_from_slice(&panel[at..at + 2]);
    for j in 0..4 {
        let at = b * BLOCK_CODES + 64 * j + 4 * r;
        block[2 + 4 * j..][..4].copy_from_slice(&panel[at..at + 4]);
    }
}

/// Row `r` (0..16) of a panel back in the file's Q4_0 layout.
pub fn unpack_row(panel: &[u8], k: usize, r: usize, out: &mut [u8]) {
    for (b, block) in out.chunks_exact_mut(q4_0::BYTES).take(k / 32).enumerate() {
        file_block(panel, k, r, b, block);
    }
}

/// Row `row` of a packed `n × k` matrix as f32 (embedding lookups, the
/// float fallback).
pub fn dequantize_row(packed: &[u8], k: usize, row: usize, out: &mut [f32]) {
    let panel = &packed[row / ROWS * panel_bytes(k)..][..panel_bytes(k)];
    let mut block = [0u8; q4_0::BYTES];
    for (b, o) in out.chunks_exact_mut(32).take(k / 32).enumerate() {
        file_block(panel, k, row % ROWS, b, &mut block);
        q4_0::dequantize(&block, o);
    }
}

/// Q8_0 activation rows as the panel kernels read them: for each token
/// and block, the block's values (32 signed bytes, in the row's order), its
/// −8·Σ x and its scale d_x, by tiles of 16 tokens: within a tile, block
/// after block, the 16 tokens' entries next to each other ([`Self::at`]),
/// so that a tile's block is one 512-byte AMX A tile (rows 32 bytes apart)
/// and its 16 scales one cache line. Room is kept for a multiple of 16
/// tokens; the padding holds whatever an earlier product left there (only
/// the padding tokens' own results read it, and those are never stored).
#[derive(Debug, Default, Clone)]
pub struct PanelTokens {
    pub tokens: usize,
    pub blocks: usize,
    /// `values[32 · at(m, b) + j]`.
    pub values: Vec<i8>,
    /// `neg_corr[at(m, b)]` = −8·Σ x of that block.
    pub neg_corr: Vec<i32>,
    /// `scales[at(m, b)]` = d_x.
    pub scales: Vec<f32>,
}

impl PanelTokens {
    /// Prepares `t` Q8_0 rows (`xq`, back to back, `blocks` blocks each),
    /// reusing the buffers.
    pub fn prepare(&mut self, xq: &[u8], t: usize, blocks: usize) {
        assert_eq!(xq.len(), t * blocks * q8_0::BYTES, "Q8_0 activation rows");
        let padded = t.next_multiple_of(ROWS);
        self.tokens = t;
        self.blocks = blocks;
        // every entry of the `t` tokens is written below: no clearing (a
        // decode step would otherwise zero 16 tokens' room per product)
        self.values.resize(padded * blocks * 32, 0);
        self.neg_corr.resize(padded * blocks, 0);
        self.scales.resize(padded * blocks, 0.0);
        if t <= ROWS {
            return prepare_tile(xq, blocks, &mut self.values, &mut self.neg_corr, &mut self.scales);
        }
        // each tile of 16 tokens is one run of entries of its own: the
        // tiles of a prompt are prepared over the pool
        let entries = ROWS * blocks;
        let mut tiles: Vec<_> = self
            .values
            .chunks_exact_mut(32 * entries)
            .zip(self.neg_corr.chunks_exact_mut(entries))
            .zip(self.scales.chunks_exact_mut(entries))
            .map(|((values, neg_corr), scales)| (values, neg_corr, scales))
            .collect();
        let row_bytes = blocks * q8_0::BYTES;
        crate::pool::global().for_each_part(&mut tiles, 1, &|tile, part| {
            let (values, neg_corr, scales) = &mut part[0];
            let first = tile * ROWS;
            let rows = &xq[first * row_bytes..(first + ROWS).min(t) * row_bytes];
            prepare_tile(rows, blocks, values, neg_corr, scales);
        });
    }

    /// Where token `m`'s block `b` lies (in entries: 32 values, or one
    /// correction or scale). The next block of a token is [`ROWS`] entries on.
    pub fn at(&self, m: usize, b: usize) -> usize {
        (m / ROWS * self.blocks + b) * ROWS + m % ROWS
    }

    /// Token `m`'s block `b` values.
    pub fn block(&self, m: usize, b: usize) -> &[i8] {
        let at = self.at(m, b);
        &self.values[32 * at..32 * (at + 1)]
    }
}

/// One tile's entries (`PanelTokens::at` within the tile) from its up to
/// 16 Q8_0 rows.
fn prepare_tile(rows: &[u8], blocks: usize, values: &mut [i8], neg_corr: &mut [i32], scales: &mut [f32]) {
    let table = f16_table();
    for (i, xb) in rows.chunks_exact(q8_0::BYTES).enumerate() {
        let at = (i % blocks) * ROWS + i / blocks;
        let values = &mut values[32 * at..32 * (at + 1)];
        for (v, &b) in values.iter_mut().zip(&xb[2..]) {
            *v = b as i8;
        }
        neg_corr[at] = -8 * values.iter().map(|&v| v as i32).sum::<i32>();
        scales[at] = table[u16::from_le_bytes([xb[0], xb[1]]) as usize];
    }
}

/// Scalar twin of the panel kernels: row `r` (0..16) of `panel` times
/// token `m` of `x` (module doc).
pub fn dot_scalar(panel: &[u8], k: usize, r: usize, x: &PanelTokens, m: usize) -> f32 {
    let table = f16_table();
    let mut acc = 0f32;
    for b in 0..k / 32 {
        let xv = x.block(m, b);
        let mut s = x.neg_corr[x.at(m, b)];
        for j in 0..4 {
            let codes = &panel[b * BLOCK_CODES + 64 * j + 4 * r..][..4];
            for (i, &c) in codes.iter().enumerate() {
                s += (c & 0xF) as i32 * xv[4 * j + i] as i32 + (c >> 4) as i32 * xv[16 + 4 * j + i] as i32;
            }
        }
        let at = scales_at(k, b) + 2 * r;
        let dw = table[u16::from_le_bytes([panel[at], panel[at + 1]]) as usize];
        acc = (s as f32).mul_add(dw * x.scales[x.at(m, b)], acc);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_q4_0(n: usize, k: usize, seed: u32) -> Vec<u8> {
        crate::quant::random_matrix(crate::quant::QuantKind::Q4_0, n, k, seed)
    }

    #[test]
    fn packing_finds_a_non_finite_scale_in_any_row_and_block() {
        use crate::quant::QuantKind;
        let (n, k) = (48, 96);
        let w = random_q4_0(n, k, 3);
        let mut packed = vec![0u8; packed_bytes(n, k)];
        assert!(pack(&w, n, k, &mut packed));
        for (row, block, bad) in [
            (0, 0, half::f16::NAN),
            (47, 2, half::f16::INFINITY),
            (21, 1, half::f16::NEG_INFINITY),
        ] {
            let mut w = w.clone();
            let at = (row * k / 32 + block) * q4_0::BYTES;
            w[at..at + 2].copy_from_slice(&bad.to_le_bytes());
            assert!(!pack(&w, n, k, &mut packed), "row {row} block {block}");
            assert!(!QuantKind::Q4_0.scales_finite(&w));
        }
    }

    #[test]
    fn panels_hold_the_rows_unchanged() {
        let (n, k) = (48, 96);
        let w = random_q4_0(n, k, 7);
        let mut packed = vec![0u8; packed_bytes(n, k)];
        assert!(pack(&w, n, k, &mut packed), "finite scales");
        let row_bytes = k / 32 * q4_0::BYTES;
        let mut back = vec![0u8; row_bytes];
        let (mut want, mut got) = (vec![0f32; k], vec![0f32; k]);
        for row in 0..n {
            unpack_row(&packed[row / ROWS * panel_bytes(k)..], k, row % ROWS, &mut back);
            assert_eq!(back, w[row * row_bytes..(row + 1) * row_bytes], "row {row}");
            crate::quant::QuantKind::Q4_0.dequantize(&w[row * row_bytes..(row + 1) * row_bytes], &mut want);
            dequantize_row(&packed, k, row, &mut got);
            assert_eq!(want, got, "row {row}");
        }
        // 3 blocks: 864 bytes per panel, rounded up to 896
        assert_eq!(panel_bytes(k), 896);
        assert!(!can_pack(40, 96) && !can_pack(48, 80) && can_pack(48, 96));
    }

    #[test]
    fn the_scalar_twin_is_the_block_dot_product_in_order() {
        let (n, k, t) = (16, 160, 3);
        let w = random_q4_0(n, k, 3);
        let mut packed = vec![0u8; packed_bytes(n, k)];
        assert!(pack(&w, n, k, &mut packed), "finite scales");
        let xf: Vec<f32> = (0..t * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let mut xq = vec![0u8; t * k / 32 * q8_0::BYTES];
        for (xi, qi) in xf.chunks_exact(32).zip(xq.chunks_exact_mut(q8_0::BYTES)) {
            q8_0::quantize(xi, qi);
        }
        let mut tokens = PanelTokens::default();
        tokens.prepare(&xq, t, k / 32);
        let table = f16_table();
        let row_bytes = k / 32 * q4_0::BYTES;
        for r in 0..n {
            for m in 0..t {
                // the same sums from the file layout, written out directly
                let mut acc = 0f32;
                for b in 0..k / 32 {
                    let wb = &w[r * row_bytes + b * q4_0::BYTES..][..q4_0::BYTES];
                    let xb = &xq[(m * k / 32 + b) * q8_0::BYTES..][..q8_0::BYTES];
                    let s: i32 = (0..16)
                        .map(|j| {
                            ((wb[2 + j] & 0xF) as i32 - 8) * (xb[2 + j] as i8) as i32
                                + ((wb[2 + j] >> 4) as i32 - 8) * (xb[18 + j] as i8) as i32
                        })
                        .sum();
                    let d = table[u16::from_le_bytes([wb[0], wb[1]]) as usize]
                        * table[u16::from_le_bytes([xb[0], xb[1]]) as usize];
                    acc = (s as f32).mul_add(d, acc);
                }
                assert_eq!(dot_scalar(&packed, k, r, &tokens, m).to_bits(), acc.to_bits());
            }
        }
    }
}
