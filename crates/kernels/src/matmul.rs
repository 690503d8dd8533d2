//! `out = x · Wᵀ`: activations `x` [t, k] times a weight matrix W [n, k]
//! stored row-major (one row per output feature, as in PyTorch and GGUF).

use half::{bf16, f16};

use crate::dot::{bf16_to_f32, dot_f32, f16_to_f32};
use crate::quant::QuantKind;

/// A weight matrix's elements, borrowed from the model file.
#[derive(Clone, Copy, Debug)]
pub enum WeightRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    /// Rows of ggml blocks.
    Quant(QuantKind, &'a [u8]),
    /// Q4_0 rows of `k` weights repacked into panels of 16
    /// (`quant::q4_0_panels`).
    Q4_0Panels {
        k: usize,
        bytes: &'a [u8],
    },
    /// Q4_K, Q5_K or Q6_K rows of `k` weights repacked into panels of 16
    /// (`quant::KPanels`).
    KPanels {
        quant: crate::quant::KPanels,
        k: usize,
        bytes: &'a [u8],
    },
}

impl WeightRef<'_> {
    /// Number of weights.
    pub fn len(&self) -> usize {
        match self {
            WeightRef::F32(w) => w.len(),
            WeightRef::F16(w) => w.len(),
            WeightRef::BF16(w) => w.len(),
            WeightRef::Quant(kind, b) => b.len() / kind.block_bytes() * kind.block_len(),
            WeightRef::Q4_0Panels { k, bytes } => {
                bytes.len() / crate::quant::q4_0_panels::panel_bytes(*k) * crate::quant::q4_0_panels::ROWS * k
            }
            WeightRef::KPanels { quant, k, bytes } => {
                bytes.len() / quant.panel_bytes(*k) * crate::quant::KPanels::ROWS * k
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `r` (of length `k`) widened to f32 into `buf`, or borrowed when
    /// the weights already are f32.
    pub fn row<'b>(&'b self, r: usize, k: usize, buf: &'b mut [f32]) -> &'b [f32] {
        let range = r * k..(r + 1) * k;
        match self {
            WeightRef::F32(w) => &w[range],
            WeightRef::F16(w) => {
                f16_to_f32(&w[range], &mut buf[..k]);
                &buf[..k]
            }
            WeightRef::BF16(w) => {
                bf16_to_f32(&w[range], &mut buf[..k]);
                &buf[..k]
            }
            WeightRef::Quant(kind, b) => {
                let rb = kind.row_bytes(k);
                kind.dequantize(&b[r * rb..(r + 1) * rb], &mut buf[..k]);
                &buf[..k]
            }
            WeightRef::Q4_0Panels { bytes, .. } => {
                crate::quant::q4_0_panels::dequantize_row(bytes, k, r, &mut buf[..k]);
                &buf[..k]
            }
            WeightRef::KPanels { quant, bytes, .. } => {
                quant.dequantize_row(bytes, k, r, &mut buf[..k]);
                &buf[..k]
            }
        }
    }
}

/// `out[i, j] = Σ_c x[i, c] · w[j, c]` for `t` rows of `x`, `n` rows of `w`
/// and inner size `k`. Each weight row is read once for all `t` activations;
/// the weight rows are shared out over the global thread pool.
pub fn matmul(w: WeightRef, n: usize, k: usize, x: &[f32], t: usize, out: &mut [f32]) {
    assert_eq!(w.len(), n * k, "weight size");
    assert_eq!(x.len(), t * k, "activation size");
    assert_eq!(out.len(), t * n, "output size");
    if let WeightRef::Q4_0Panels { bytes, .. } = w {
        return crate::panel_matmul::matmul_panels(bytes, n, k, x, t, out);
    }
    if let WeightRef::KPanels { quant, bytes, .. } = w {
        return crate::panel_matmul::matmul_k_panels(quant, bytes, n, k, x, t, out);
    }
    if let WeightRef::Quant(kind, bytes) = w {
        if let Some(act) = crate::quant::dot::activations_for(kind) {
            return matmul_quantized(kind, act, bytes, n, k, x, t, out);
        }
    }
    #[cfg(target_arch = "x86_64")]
    if t >= crate::simd::AMX_BF16_MIN_TOKENS && crate::simd::amx_bf16() {
        match w {
            WeightRef::F16(w) => return crate::float_matmul::matmul_amx_bf16::<f16, 2>(w, n, k, x, t, out),
            WeightRef::BF16(w) => return crate::float_matmul::matmul_amx_bf16::<bf16, 1>(w, n, k, x, t, out),
            _ => {}
        }
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::isa() == crate::simd::Isa::Avx512Vnni {
        return crate::float_matmul::matmul_tiles(w, n, k, x, t, out);
    }
    let out_ptr = SendPtr(out.as_mut_ptr());
    for_row_ranges(n, n * k * t, &|rows| {
        SCRATCH.with(|s| {
            let mut scratch = s.borrow_mut();
            if scratch.len() < k {
                scratch.resize(k, 0.0);
            }
            for j in rows {
                let row = w.row(j, k, &mut scratch);
                for i in 0..t {
                    let v = dot_f32(&x[i * k..(i + 1) * k], row);
                    // SAFETY: tasks own disjoint ranges of weight rows `j`, so
                    // the elements written here are disjoint across threads,
                    // and `out` outlives the pool run.
                    unsafe { *out_ptr.get().add(i * n + j) = v };
                }
            }
        });
    });
}

/// The integer path (as ggml's): activations quantized once (Q8_0 or Q8_K),
/// then block dot products against the quantized weight rows.
#[allow(clippy::too_many_arguments)]
fn matmul_quantized(
    kind: QuantKind,
    act: crate::quant::dot::Activations,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    t: usize,
    out: &mut [f32],
) {
    let xrow = act.row_bytes(k);
    let xq = quantize_rows(act, x, k, t);
    #[cfg(target_arch = "x86_64")]
    if matches!(
        kind,
        QuantKind::Q4_0 | QuantKind::Q8_0 | QuantKind::Q3K | QuantKind::Q4K | QuantKind::Q5K | QuantKind::Q6K
    ) && t >= AMX_MIN_TOKENS
        && crate::simd::amx()
    {
        matmul_amx(kind, w, n, k, &xq, t, out);
        keep_quantized(xq);
        return;
    }
    let wrow = kind.row_bytes(k);
    // the tile kernels of the 32-weight types take their activations prepared once per product
    let prepared = (act == crate::quant::dot::Activations::Q8_0).then(|| {
        let mut p = PREPARED.with(|p| std::mem::take(&mut *p.borrow_mut()));
        p.prepare(&xq, t);
        p
    });
    let x_row = |i: usize| match &prepared {
        Some(p) => p.row(i),
        None => &xq[i * xrow..(i + 1) * xrow],
    };
    let out_ptr = SendPtr(out.as_mut_ptr());
    for_row_ranges(n, n * k * t, &|rows: std::ops::Range<usize>| {
        // Tiles of ROW_TILE weight rows: a tile stays in L2 while every
        // activation row passes over it (each activation row in L1 across
        // the tile); weights are read from memory once per call, the
        // activations once per tile.
        for tile in (rows.start..rows.end).step_by(ROW_TILE) {
            let tile = tile..(tile + ROW_TILE).min(rows.end);
            // 4 × 4 register tiles of (weight row, activation row) pairs
            let mut res = [0f32; 16];
            for i0 in (0..t).step_by(4) {
                let cols = (t - i0).min(4);
                let xs: [&[u8]; 4] = std::array::from_fn(|c| x_row(i0 + c.min(cols - 1)));
                for j0 in tile.clone().step_by(4) {
                    let n_rows = (tile.end - j0).min(4);
                    let ws: [&[u8]; 4] = std::array::from_fn(|r| {
                        let j = j0 + r.min(n_rows - 1);
                        &w[j * wrow..(j + 1) * wrow]
                    });
                    crate::simd::dot_tile(kind, &ws[..n_rows], &xs[..cols], &mut res);
                    for r in 0..n_rows {
                        for c in 0..cols {
                            // SAFETY: as in `matmul`: disjoint rows `j` per task.
                            unsafe { *out_ptr.get().add((i0 + c) * n + j0 + r) = res[r * 4 + c] };
                        }
                    }
                }
            }
        }
    });
    keep_quantized(xq);
    if let Some(p) = prepared {
        PREPARED.with(|slot| *slot.borrow_mut() = p);
    }
}

/// The `t` rows of `x` (inner size `k`) quantized for `act`, in this
/// thread's buffer (no allocation per token): hand it back with
/// [`keep_quantized`] once the product is done.
pub(crate) fn quantize_rows(act: crate::quant::dot::Activations, x: &[f32], k: usize, t: usize) -> Vec<u8> {
    let xrow = act.row_bytes(k);
    let mut xq = QUANTIZED.with(|q| std::mem::take(&mut *q.borrow_mut()));
    xq.resize(t * xrow, 0);
    // a prompt's rows over the pool (each row on its own: same bytes)
    crate::pool::global().for_each_row(&mut xq, xrow, &|i, qi| act.quantize(&x[i * k..(i + 1) * k], qi));
    xq
}

/// Returns the buffer of [`quantize_rows`] to this thread for the next product.
pub(crate) fn keep_quantized(xq: Vec<u8>) {
    QUANTIZED.with(|q| *q.borrow_mut() = xq);
}

/// Tokens from which a product with an AMX kernel (Q4_0, Q8_0, Q3_K, Q4_K, Q5_K, Q6_K) runs on it (where present).
#[cfg(target_arch = "x86_64")]
const AMX_MIN_TOKENS: usize = 16;

/// Q4_0 or Q8_0 weights × Q8_0 activations, or the K-quants (Q3_K to Q6_K) × Q8_K, `xq` on AMX: the
/// tokens prepared once (tiles of 16 shared out over the pool), then panels
/// of 16 weight rows shared out, each multiplied by every token tile.
#[cfg(target_arch = "x86_64")]
fn matmul_amx(kind: QuantKind, w: &[u8], n: usize, k: usize, xq: &[u8], t: usize, out: &mut [f32]) {
    use crate::simd::{amx, amx_k};
    let blocks = k / kind.block_len();
    let row_bytes = kind.row_bytes(k);
    let prepared_bytes = |t| match kind {
        QuantKind::Q4K | QuantKind::Q5K => amx_k::prepared_bytes(t, blocks),
        QuantKind::Q3K | QuantKind::Q6K => amx_k::prepared_bytes_q6_k(t, blocks),
        _ => amx::prepared_bytes(t, blocks),
    };
    let pool = crate::pool::global();
    let mut buffer = AMX_TOKENS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    // on 64-byte boundaries, as the tile loads want them
    buffer.resize(prepared_bytes(t));
    let tokens = buffer.as_mut_slice();
    prepare_token_tiles(tokens, prepared_bytes(amx::TILE), &|tile, part| match kind {
        QuantKind::Q4K | QuantKind::Q5K => amx_k::prepare_tile(xq, t, blocks, tile, part),
        QuantKind::Q3K | QuantKind::Q6K => amx_k::prepare_tile_q6_k(xq, t, blocks, tile, part),
        _ => amx::prepare_tile(xq, t, blocks, tile, part),
    });
    let panels = n.div_ceil(amx::TILE);
    let tasks = pool.tasks_for(panels);
    let chunk = panels.div_ceil(tasks.max(1));
    let out_ptr = SendPtr(out.as_mut_ptr());
    pool.run(tasks, &|task| {
        AMX_PANEL.with(|buf| {
            let (q4_0_buf, k_buf) = &mut *buf.borrow_mut();
            for p in task * chunk..((task + 1) * chunk).min(panels) {
                let row0 = p * amx::TILE;
                let rows = amx::TILE.min(n - row0);
                // SAFETY: AMX was found usable (`simd::amx`) on a CPU with the
                // VNNI level's AVX-512; tasks own disjoint panels of rows, and
                // `out` (t · n floats) outlives the pool run.
                unsafe {
                    match kind {
                        QuantKind::Q4K => {
                            amx_k::panel::<false>(w, row_bytes, row0, rows, tokens, t, n, out_ptr.get(), k_buf)
                        }
                        QuantKind::Q5K => {
                            amx_k::panel::<true>(w, row_bytes, row0, rows, tokens, t, n, out_ptr.get(), k_buf)
                        }
                        QuantKind::Q3K | QuantKind::Q6K => amx_k::panel_sixteen_kind(
                            kind,
                            w,
                            row_bytes,
                            row0,
                            rows,
                            tokens,
                            t,
                            n,
                            out_ptr.get(),
                            k_buf,
                        ),
                        QuantKind::Q8_0 => {
                            amx::panel::<true>(w, row_bytes, row0, rows, tokens, t, n, out_ptr.get(), q4_0_buf)
                        }
                        _ => amx::panel::<false>(w, row_bytes, row0, rows, tokens, t, n, out_ptr.get(), q4_0_buf),
                    }
                };
            }
        });
    });
    AMX_TOKENS.with(|p| *p.borrow_mut() = buffer);
}

/// Fills `tokens`, tiles of `per_tile` bytes, over the pool: `prepare(tile,
/// bytes)` for each tile (the tokens of an AMX product, prepared once).
#[cfg(target_arch = "x86_64")]
pub(crate) fn prepare_token_tiles(tokens: &mut [u8], per_tile: usize, prepare: &(dyn Fn(usize, &mut [u8]) + Sync)) {
    let tiles = tokens.len().checked_div(per_tile).unwrap_or(0);
    let tokens_ptr = SendPtr(tokens.as_mut_ptr());
    crate::pool::global().run(tiles, &|tile| {
        // SAFETY: each task writes its own tile's bytes of `tokens`, which
        // outlives the pool run.
        let part = unsafe { std::slice::from_raw_parts_mut(tokens_ptr.get().add(tile * per_tile), per_tile) };
        prepare(tile, part);
    });
}

/// Splits weight rows `0..n` into `pool::TASKS_PER_THREAD` ranges per pool thread and runs
/// `f` on each; `work` (multiply-adds) below ~32k runs inline.
pub(crate) fn for_row_ranges(n: usize, work: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    let pool = crate::pool::global();
    let tasks = if work < 1 << 15 { 1 } else { pool.tasks_for(n) };
    let chunk = n.div_ceil(tasks.max(1));
    pool.run(tasks, &|task| f(task * chunk..((task + 1) * chunk).min(n)));
}

/// Weight rows per cache tile in prefill (64 rows of 3072 Q4_K weights:
/// 108 KiB). 16 rows took Q4_K_M pp512 from 15.9 down to 12.6 tok/s: the
/// 512 activation rows (1.8 MB of Q8_K) then stream from L2/L3 four times
/// as often.
const ROW_TILE: usize = 64;

/// A raw pointer that may cross to the pool's threads (see the SAFETY note
/// where it is written through).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

thread_local! {
    /// Per-thread buffer for widening one weight row.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread buffer for the quantized activations of a product.
    static QUANTIZED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread buffer for the activations as the tile kernels load them.
    static PREPARED: std::cell::RefCell<crate::simd::TileActivations> =
        std::cell::RefCell::new(crate::simd::TileActivations::default());
    /// Per-thread buffer for the tokens of an AMX product.
    #[cfg(target_arch = "x86_64")]
    static AMX_TOKENS: std::cell::RefCell<crate::aligned::AlignedBytes> =
        std::cell::RefCell::new(crate::aligned::AlignedBytes::default());
    /// Per-thread unpacked weight panels and accumulators of the AMX kernels (Q4_0, Q4_K).
    #[cfg(target_arch = "x86_64")]
    static AMX_PANEL: std::cell::RefCell<(crate::simd::amx::PanelBuffers, crate::simd::amx_k::PanelBuffers)> =
        std::cell::RefCell::new(Default::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_naive_for_every_weight_type() {
        let (n, k, t) = (5, 37, 3);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
        let x: Vec<f32> = (0..t * k).map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0).collect();
        let mut expected = vec![0f32; t * n];
        for i in 0..t {
            for j in 0..n {
                expected[i * n + j] = (0..k).map(|c| x[i * k + c] * w[j * k + c]).sum();
            }
        }
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        for weights in [WeightRef::F32(&w), WeightRef::F16(&w16), WeightRef::BF16(&wb16)] {
            let mut out = vec![0f32; t * n];
            matmul(weights, n, k, &x, t, &mut out);
            for (a, b) in out.iter().zip(&expected) {
                // these weights are exact in f16 and bf16
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }
}
