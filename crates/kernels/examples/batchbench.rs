//! Decode-shaped products with 1 to 4 activation rows on the pool (all
//! threads), the weights streaming from memory: what a decode step of 1-4
//! sequences costs per layer matrix, against the bytes read.
//!
//! `cargo run --release -p phi3-kernels --example batchbench [q4_0|q8_0|q4_k|q5_k|q6_k|q4_0-panels|q4_k-panels|q5_k-panels|q6_k-panels]`
//! (`…-panels`: repacked into panels of 16 rows, as the model
//! loader does on the VNNI level).

use std::time::Instant;

use phi3_kernels::quant::{self, QuantKind};
use phi3_kernels::{matmul, WeightRef};

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let panels = arg.ends_with("-panels");
    let kind = match arg.as_str() {
        "q8_0" => QuantKind::Q8_0,
        "q4_k" | "q4_k-panels" => QuantKind::Q4K,
        "q5_k" | "q5_k-panels" => QuantKind::Q5K,
        "q6_k" | "q6_k-panels" => QuantKind::Q6K,
        _ => QuantKind::Q4_0,
    };
    // a layer's four matrices, repeated so the set (~0.4 GB for Q4_0) is far larger than the caches
    let shapes = [(9216usize, 3072usize), (3072, 3072), (16384, 3072), (3072, 8192)];
    let layers = 6;
    let mats: Vec<(usize, usize, Vec<u8>)> = (0..layers)
        .flat_map(|l| shapes.iter().map(move |&(n, k)| (l, n, k)))
        .map(|(l, n, k)| {
            let w32: Vec<f32> = (0..n * k)
                .map(|i| (((i + l) * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let mut w = vec![0u8; kind.row_bytes(k) * n];
            kind.quantize(&w32, &mut w).unwrap();
            if let Some(quant) = quant::KPanels::of(kind).filter(|_| panels) {
                let mut p = vec![0u8; quant.packed_bytes(n, k)];
                assert!(quant.pack(&w, n, k, &mut p), "finite scales");
                return (n, k, p);
            }
            if panels {
                let mut p = vec![0u8; quant::q4_0_panels::packed_bytes(n, k)];
                assert!(quant::q4_0_panels::pack(&w, n, k, &mut p), "finite scales");
                return (n, k, p);
            }
            (n, k, w)
        })
        .collect();
    let bytes: usize = mats.iter().map(|m| m.2.len()).sum();
    for t in [1, 2, 3, 4, 8, 16] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for (n, k, w) in &mats {
                let x: Vec<f32> = (0..t * k).map(|i| (i % 7) as f32 / 7.0).collect();
                let mut out = vec![0f32; t * n];
                let weights = match quant::KPanels::of(kind) {
                    Some(quant) if panels => WeightRef::KPanels { quant, k: *k, bytes: w },
                    _ if panels => WeightRef::Q4_0Panels { k: *k, bytes: w },
                    _ => WeightRef::Quant(kind, w),
                };
                matmul(weights, *n, *k, &x, t, &mut out);
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{} t={t}: {:.1} ms for {:.2} GB ({:.1} GB/s, {:.1} G pair·weights/s)",
            kind.name(),
            best * 1e3,
            bytes as f64 / 1e9,
            bytes as f64 / best / 1e9,
            (mats.iter().map(|m| m.0 * m.1).sum::<usize>() * t) as f64 / best / 1e9
        );
    }
}
