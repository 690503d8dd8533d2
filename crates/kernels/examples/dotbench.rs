//! Single-thread throughput of the Q8_0-activation dot products (weights/s).
//! `cargo run --release -p phi3-kernels --example dotbench`

use std::time::Instant;

use phi3_kernels::quant::dot::{activations_for, dot_quantized};
use phi3_kernels::quant::QuantKind;

fn main() {
    tiles();
    let (rows, k) = (4096, 3072);
    let w32: Vec<f32> = (0..rows * k)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let x32: Vec<f32> = (0..k).map(|i| (i % 7) as f32 / 7.0).collect();
    for kind in QuantKind::ALL {
        let Some(act) = activations_for(kind) else { continue };
        let mut xq = vec![0u8; act.row_bytes(k)];
        act.quantize(&x32, &mut xq);
        let w = weights(kind, &w32);
        let rb = kind.row_bytes(k);
        let mut best = f64::MAX;
        let mut sink = 0f32;
        for _ in 0..5 {
            let t = Instant::now();
            for r in 0..rows {
                sink += dot_quantized(kind, &w[r * rb..(r + 1) * rb], &xq);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{}: {:.2} G weights/s, {:.1} GB/s of weights (one thread) [{sink}]",
            kind.name(),
            (rows * k) as f64 / best / 1e9,
            w.len() as f64 / best / 1e9
        );
    }
}

/// Single-thread matrix products with `t` activation rows (through the tile
/// kernels, and from 16 rows AMX where present): what batching t sequences or tokens costs.
/// The weights (256 rows) stay in cache, so this measures compute.
fn tiles() {
    phi3_kernels::pool::set_global_threads(1);
    let (rows, k) = (256, 3072);
    let w32: Vec<f32> = (0..rows * k)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    for kind in QuantKind::ALL {
        let w = weights(kind, &w32);
        let weights = phi3_kernels::matmul::WeightRef::Quant(kind, &w);
        let mut line = format!("{} tiles:", kind.name());
        for t in [1usize, 2, 4, 8, 16, 64, 256] {
            let x: Vec<f32> = (0..t * k).map(|i| (i % 7) as f32 / 7.0).collect();
            let mut out = vec![0f32; t * rows];
            let mut best = f64::MAX;
            for _ in 0..20 {
                let start = Instant::now();
                phi3_kernels::matmul::matmul(weights, rows, k, &x, t, &mut out);
                best = best.min(start.elapsed().as_secs_f64());
            }
            line.push_str(&format!(
                " t={t} {:.1} G pairs·weights/s",
                (rows * k * t) as f64 / best / 1e9
            ));
        }
        println!("{line}");
    }
}

/// `w32` quantized to `kind`, or (Q2_K, Q3_K: no quantizer) random codes
/// with finite scales.
fn weights(kind: QuantKind, w32: &[f32]) -> Vec<u8> {
    let k = kind.block_len();
    let mut w = vec![0u8; kind.row_bytes(k) * (w32.len() / k)];
    if kind.quantize(w32, &mut w).is_none() {
        for (i, b) in w.iter_mut().enumerate() {
            *b = (i.wrapping_mul(2654435761) >> 13) as u8;
        }
        let one = half::f16::from_f32(0.01).to_le_bytes();
        let scales: &[usize] = match kind {
            QuantKind::Q3K => &[108],
            QuantKind::Q2K => &[80, 82],
            _ => &[0, 2],
        };
        for blk in w.chunks_exact_mut(kind.block_bytes()) {
            for &at in scales {
                blk[at..at + 2].copy_from_slice(&one);
            }
        }
    }
    w
}
