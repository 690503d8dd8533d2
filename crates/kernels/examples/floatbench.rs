//! Prompt-shaped throughput of the float path (f16 weights × f32
//! activations) on two Phi-3-mini layer shapes, best of 5.
//!
//! `cargo run --release -p phi3-kernels --example floatbench [tokens]`

use std::time::Instant;

use half::f16;
use phi3_kernels::{matmul, WeightRef};

fn main() {
    let t: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(128);
    for (n, k) in [(9216usize, 3072usize), (3072, 8192)] {
        let w: Vec<f16> = (0..n * k).map(|i| f16::from_f32((i % 7) as f32 * 0.1)).collect();
        let x: Vec<f32> = (0..t * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0f32; t * n];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            matmul(WeightRef::F16(&w), n, k, &x, t, &mut out);
            best = best.min(start.elapsed().as_secs_f64());
        }
        let gflops = 2.0 * (n * k * t) as f64 / best / 1e9;
        println!("f16 {n}x{k}, {t} tokens: {:.1} ms, {gflops:.1} GFLOP/s", best * 1e3);
    }
}
