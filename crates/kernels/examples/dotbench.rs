//! Single-thread throughput of the Q8_0-activation dot products (weights/s).
//! `cargo run --release -p phi3-kernels --example dotbench`

use std::time::Instant;

use phi3_kernels::quant::dot::dot_q8_0;
use phi3_kernels::quant::QuantKind;

fn main() {
    let (rows, k) = (4096, 3072);
    let w32: Vec<f32> = (0..rows * k)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let x32: Vec<f32> = (0..k).map(|i| (i % 7) as f32 / 7.0).collect();
    let mut xq = vec![0u8; QuantKind::Q8_0.row_bytes(k)];
    QuantKind::Q8_0.quantize(&x32, &mut xq).unwrap();
    for kind in [QuantKind::Q4_0, QuantKind::Q8_0] {
        let mut w = vec![0u8; kind.row_bytes(k) * rows];
        kind.quantize(&w32, &mut w).unwrap();
        let rb = kind.row_bytes(k);
        let mut best = f64::MAX;
        let mut sink = 0f32;
        for _ in 0..5 {
            let t = Instant::now();
            for r in 0..rows {
                sink += dot_q8_0(kind, &w[r * rb..(r + 1) * rb], &xq);
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
