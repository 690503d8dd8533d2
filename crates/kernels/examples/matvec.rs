//! Decode-shaped matrix-vector throughput of the current kernels on the
//! Phi-3-mini layer shapes, with the bytes of weights read per second.
//!
//! `cargo run --release -p phi3-kernels --example matvec [reps]`

use std::time::Instant;

use half::{bf16, f16};
use phi3_kernels::quant::QuantKind;
use phi3_kernels::{matmul, WeightRef};

/// (name, rows, cols) of one Phi-3-mini layer (PHI3_FAMILY.md §1).
const SHAPES: [(&str, usize, usize); 4] = [
    ("qkv 9216x3072", 9216, 3072),
    ("o 3072x3072", 3072, 3072),
    ("gate_up 16384x3072", 16384, 3072),
    ("down 3072x8192", 3072, 8192),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(7);
    println!("| weights | matrix | median ms | GB/s of weights |");
    println!("|---|---|---|---|");
    for dtype in ["f32", "f16", "bf16", "q8_0", "q4_0"] {
        let mut layer_ms = 0.0;
        let mut layer_bytes = 0usize;
        for (name, n, k) in SHAPES {
            let w32: Vec<f32> = (0..n * k)
                .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let w16: Vec<f16> = w32.iter().map(|&x| f16::from_f32(x)).collect();
            let wb: Vec<bf16> = w32.iter().map(|&x| bf16::from_f32(x)).collect();
            let quant = |kind: QuantKind| {
                let mut q = vec![0u8; kind.row_bytes(k) * n];
                kind.quantize(&w32, &mut q).unwrap();
                q
            };
            let q8 = if dtype == "q8_0" {
                quant(QuantKind::Q8_0)
            } else {
                Vec::new()
            };
            let q4 = if dtype == "q4_0" {
                quant(QuantKind::Q4_0)
            } else {
                Vec::new()
            };
            let (w, bytes) = match dtype {
                "f32" => (WeightRef::F32(&w32), n * k * 4),
                "f16" => (WeightRef::F16(&w16), n * k * 2),
                "bf16" => (WeightRef::BF16(&wb), n * k * 2),
                "q8_0" => (WeightRef::Quant(QuantKind::Q8_0, &q8), q8.len()),
                _ => (WeightRef::Quant(QuantKind::Q4_0, &q4), q4.len()),
            };
            let x: Vec<f32> = (0..k).map(|i| (i % 7) as f32 / 7.0).collect();
            let mut out = vec![0f32; n];
            let mut times = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                matmul(w, n, k, &x, 1, &mut out);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let ms = median(times);
            layer_ms += ms;
            layer_bytes += bytes;
            println!("| {dtype} | {name} | {ms:.2} | {:.1} |", bytes as f64 / ms / 1e6);
        }
        println!(
            "| {dtype} | one layer ({:.0} MB) | {layer_ms:.2} | {:.1} |",
            layer_bytes as f64 / 1e6,
            layer_bytes as f64 / layer_ms / 1e6
        );
    }
}
