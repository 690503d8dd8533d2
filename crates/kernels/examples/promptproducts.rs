//! A prompt's products with Q4_0 panels: each of a Phi-3-mini layer's
//! four matrices (random weights, repacked as the loader does) times `t`
//! tokens on all threads, the best of four, as time per 16 × 16 × 32 block
//! (tokens × rows × weights) and multiply-adds per second.
//!
//! `cargo run --release -p phi3-kernels --example promptproducts -- [t]` (default 300)

use phi3_kernels::quant::{q4_0_panels, QuantKind};
use phi3_kernels::{matmul, WeightRef};
use std::time::Instant;

fn main() {
    let threads = phi3_kernels::pool::global().threads() as f64;
    let t: usize = std::env::args().nth(1).map_or(300, |a| a.parse().unwrap());
    // qkv, o, gate_up, down
    for (n, k) in [(9216usize, 3072usize), (3072, 3072), (16384, 3072), (3072, 8192)] {
        let w32: Vec<f32> = (0..n * k)
            .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut w = vec![0u8; QuantKind::Q4_0.row_bytes(k) * n];
        QuantKind::Q4_0.quantize(&w32, &mut w).unwrap();
        let mut p = vec![0u8; q4_0_panels::packed_bytes(n, k)];
        assert!(q4_0_panels::pack(&w, n, k, &mut p));
        let x: Vec<f32> = (0..t * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let mut out = vec![0f32; t * n];
        let mut best = f64::MAX;
        for _ in 0..4 {
            let s = Instant::now();
            matmul(WeightRef::Q4_0Panels { k, bytes: &p }, n, k, &x, t, &mut out);
            best = best.min(s.elapsed().as_secs_f64());
        }
        let tiles = (t.div_ceil(16) * n / 16 * k / 32) as f64;
        println!(
            "{n}x{k} t={t}: {:.1} ms, {:.1} ns per 16x16x32 block ({threads} threads: {:.1} per thread), {:.0} GMAC/s",
            best * 1e3,
            best / tiles * 1e9,
            threads * best / tiles * 1e9,
            (n * k * t) as f64 / best / 1e9
        );
    }
}
