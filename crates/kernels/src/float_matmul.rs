//! The float path of [`crate::matmul`] on AVX-512: f32, f16 and bf16
//! weights (and block types, dequantized, should one ever lack an integer
//! kernel on this level; none does now) times f32 activations, in cache
//! tiles around [`crate::simd::float_tile::block`].
//!
//! Each task owns a range of weight rows, walked in tiles that stay in L2.
//! Within a tile, activations go by groups of 6 rows and blocks of
//! [`BLOCK`] elements (6 × 2 KiB, in L1) while every 4-row group of the
//! tile passes over them; block sums are added in order per pair, so every
//! result is [`crate::dot::dot_f32`] of its two rows, bit for bit, whatever
//! the number of tokens.

use half::{bf16, f16};

use crate::dot::BLOCK;
use crate::matmul::{for_row_ranges, SendPtr, WeightRef};
use crate::simd::float_tile::{block, widen, FloatWeight};

/// Activation rows per group (6 × 4 accumulators: 24 of the 32 registers).
const GROUP: usize = 6;

/// Bytes of widened weights a tile may hold (in L2 while every activation
/// group passes over it).
const TILE_BYTES: usize = 1 << 20;

/// The most weight rows in one tile.
const MAX_TILE_ROWS: usize = 256;

/// Weight rows per tile for inner size `k`: a multiple of 4, at least 4.
fn tile_rows(k: usize) -> usize {
    (TILE_BYTES / (4 * padded(k)) / 4 * 4).clamp(4, MAX_TILE_ROWS)
}

pub(crate) fn matmul_tiles(w: WeightRef, n: usize, k: usize, x: &[f32], t: usize, out: &mut [f32]) {
    let out_ptr = SendPtr(out.as_mut_ptr());
    let step = tile_rows(k);
    let product = Product {
        k,
        x,
        t,
        n,
        out: out_ptr,
    };
    for_row_ranges(n, n * k * t, &|rows| {
        WIDENED.with(|buf| {
            let tile_buf = &mut *buf.borrow_mut();
            for start in rows.clone().step_by(step) {
                let tile = start..(start + step).min(rows.end);
                let slice = tile.start * k..tile.end * k;
                // One activation group reads the weights as they are; more
                // groups share one widening of the tile.
                match w {
                    WeightRef::F32(w) if t <= GROUP => product.run(&w[slice], k, tile.start),
                    WeightRef::F16(w) if t <= GROUP => product.run::<f16>(&w[slice], k, tile.start),
                    WeightRef::BF16(w) if t <= GROUP => product.run::<bf16>(&w[slice], k, tile.start),
                    _ => {
                        let stride = padded(k);
                        tile_buf.resize(tile.len() * stride, 0.0);
                        for (j, row) in tile.clone().zip(tile_buf.chunks_exact_mut(stride)) {
                            widen_row(w, j, k, &mut row[..k]);
                        }
                        product.run::<f32>(&tile_buf[..tile.len() * stride], stride, tile.start);
                    }
                }
            }
        });
    });
}

/// A row stride of at least `len` floats that is an odd number of 64-byte
/// lines: rows a multiple of 4 KiB apart (3072 floats are 12 KiB) all map
/// to the same L1 sets, and the tile kernel's 4 weight rows would then
/// compete for them.
fn padded(len: usize) -> usize {
    let lines = len.div_ceil(16);
    16 * (lines | 1)
}

/// One product's activations and output.
struct Product<'a> {
    k: usize,
    x: &'a [f32],
    t: usize,
    n: usize,
    out: SendPtr<f32>,
}

impl Product<'_> {
    /// All activation rows times the tile `w` (rows `stride` apart, the
    /// first being weight row `row0`), written to `out` (`t` × `n`).
    fn run<W: FloatWeight>(&self, w: &[W], stride: usize, row0: usize) {
        let Product { k, x, t, n, out } = *self;
        let rows = w.len().div_ceil(stride.max(1));
        let mut totals = [[0f32; GROUP]; MAX_TILE_ROWS];
        let totals = &mut totals[..rows];
        for i0 in (0..t).step_by(GROUP) {
            let cols = (t - i0).min(GROUP);
            totals.iter_mut().for_each(|r| *r = [0.0; GROUP]);
            let one_group = cols == t;
            let blocks = || (0..k).step_by(BLOCK).map(move |b0| (b0, (k - b0).min(BLOCK)));
            let x_block = |b0: usize| -> [*const f32; GROUP] {
                std::array::from_fn(|c| x[(i0 + c.min(cols - 1)) * k + b0..].as_ptr())
            };
            let mut pass = |r0: usize, b0: usize, len: usize, xs: [*const f32; GROUP]| {
                let n_rows = (rows - r0).min(4);
                let ws: [*const W; 4] = std::array::from_fn(|r| w[(r0 + r.min(n_rows - 1)) * stride + b0..].as_ptr());
                // SAFETY: the caller checked AVX-512F (the VNNI level); every
                // pointer starts `len` elements inside its row.
                unsafe { block_shapes(ws, n_rows, xs, cols, len, &mut totals[r0..r0 + n_rows]) };
            };
            if one_group {
                // decode: the activations stay in L1 whatever the order, so
                // each 4-row group streams its rows from start to end
                for r0 in (0..rows).step_by(4) {
                    for (b0, len) in blocks() {
                        pass(r0, b0, len, x_block(b0));
                    }
                }
            } else {
                // prompts: a block of the group stays in L1 while the tile passes
                for (b0, len) in blocks() {
                    let xs = x_block(b0);
                    for r0 in (0..rows).step_by(4) {
                        pass(r0, b0, len, xs);
                    }
                }
            }
            for (r, sums) in totals.iter().enumerate() {
                for (c, &v) in sums[..cols].iter().enumerate() {
                    // SAFETY: tasks own disjoint ranges of weight rows, so these
                    // elements are disjoint across threads; `out` outlives the run.
                    unsafe { *out.get().add((i0 + c) * n + row0 + r) = v };
                }
            }
        }
    }
}

/// Weight row `j` as f32 (exact for f16 and bf16; the scalar dequantization
/// for block types).
fn widen_row(w: WeightRef, j: usize, k: usize, row: &mut [f32]) {
    let range = j * k..(j + 1) * k;
    match w {
        WeightRef::F32(w) => row.copy_from_slice(&w[range]),
        // SAFETY: this module runs on the VNNI level, which has AVX-512F.
        WeightRef::F16(w) => unsafe { widen(&w[range], row) },
        // SAFETY: as above.
        WeightRef::BF16(w) => unsafe { widen(&w[range], row) },
        WeightRef::Quant(kind, b) => {
            let rb = kind.row_bytes(k);
            kind.dequantize(&b[j * rb..(j + 1) * rb], row);
        }
        WeightRef::Q4_0Panels { bytes, .. } => crate::quant::q4_0_panels::dequantize_row(bytes, k, j, row),
        WeightRef::KPanels { quant, bytes, .. } => quant.dequantize_row(bytes, k, j, row),
    }
}

/// Runs [`block`] for `n_rows` (1-4) weight rows and `cols` (1-6)
/// activation rows, adding each pair's block sum to `totals[r][c]`.
///
/// # Safety
/// As [`block`].
unsafe fn block_shapes<W: FloatWeight>(
    w: [*const W; 4],
    n_rows: usize,
    x: [*const f32; GROUP],
    cols: usize,
    len: usize,
    totals: &mut [[f32; GROUP]],
) {
    macro_rules! shape {
        ($r:literal, $c:literal, $w:expr, $totals:expr) => {{
            let mut sums = [[0f32; $c]; $r];
            block::<W, $r, $c>(
                std::array::from_fn(|r| $w[r]),
                std::array::from_fn(|c| x[c]),
                len,
                &mut sums,
            );
            for (total, sum) in $totals.iter_mut().zip(&sums) {
                for c in 0..$c {
                    total[c] += sum[c];
                }
            }
        }};
    }
    macro_rules! columns {
        ($r:literal, $w:expr, $totals:expr) => {
            match cols {
                1 => shape!($r, 1, $w, $totals),
                2 => shape!($r, 2, $w, $totals),
                3 => shape!($r, 3, $w, $totals),
                4 => shape!($r, 4, $w, $totals),
                5 => shape!($r, 5, $w, $totals),
                _ => shape!($r, 6, $w, $totals),
            }
        };
    }
    if n_rows == 4 {
        columns!(4, w, totals);
    } else {
        for (r, total) in totals.iter_mut().enumerate().take(n_rows) {
            columns!(1, [w[r]], std::slice::from_mut(total));
        }
    }
}

/// f16 (`W_PARTS` = 2) or bf16 (1) weights × f32 activations on AMX-BF16
/// (`simd::amx_bf16`): the tokens split into bf16 parts once (tiles of 16
/// shared out over the pool), then ranges of 16-row panels shared out.
pub(crate) fn matmul_amx_bf16<T: FloatWeight + Sync, const W_PARTS: usize>(
    w: &[T],
    n: usize,
    k: usize,
    x: &[f32],
    t: usize,
    out: &mut [f32],
) {
    use crate::simd::amx::TILE;
    use crate::simd::amx_bf16;
    let pool = crate::pool::global();
    let mut tokens = AMX_BF16_TOKENS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    tokens.resize(amx_bf16::prepared_bytes(t, k));
    crate::matmul::prepare_token_tiles(
        tokens.as_mut_slice(),
        amx_bf16::prepared_bytes(TILE, k),
        &|tile, part| amx_bf16::prepare_tile(x, t, k, tile, part),
    );
    let panels = n.div_ceil(TILE);
    let tasks = (pool.threads() * 2).min(panels);
    let chunk = panels.div_ceil(tasks.max(1));
    let out_ptr = SendPtr(out.as_mut_ptr());
    let prepared = tokens.as_slice();
    pool.run(tasks, &|task| {
        let rows = (task * chunk * TILE).min(n)..((task + 1) * chunk * TILE).min(n);
        if rows.is_empty() {
            return;
        }
        AMX_BF16_PANELS.with(|buf| {
            // SAFETY: `simd::amx_bf16()` found AMX-BF16 usable on a CPU with
            // the VNNI level's AVX-512; tasks own disjoint rows, and `out`
            // (t · n floats) outlives the pool run.
            unsafe {
                amx_bf16::product_rows::<T, W_PARTS>(w, n, k, rows, prepared, t, out_ptr.get(), &mut buf.borrow_mut())
            }
        });
    });
    AMX_BF16_TOKENS.with(|p| *p.borrow_mut() = tokens);
}

thread_local! {
    /// Per-thread buffer for a tile of widened weights.
    static WIDENED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread buffer for the tokens of an AMX-BF16 product.
    static AMX_BF16_TOKENS: std::cell::RefCell<crate::aligned::AlignedBytes> =
        std::cell::RefCell::new(crate::aligned::AlignedBytes::default());
    /// Per-thread converted weight panels of the AMX-BF16 kernel.
    static AMX_BF16_PANELS: std::cell::RefCell<crate::simd::amx_bf16::PanelBuffers> =
        std::cell::RefCell::new(Default::default());
}
