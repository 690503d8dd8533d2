//! Tier 1: block formats against ggml's Python reference (the `gguf`
//! package): dequantization of random blocks of every type, and the bytes of
//! the reference quantizers (testdata/quant, made by
//! tools/reference/make_quant_fixtures.py).

use std::path::PathBuf;

use phi3_kernels::quant::QuantKind;

fn read(name: &str) -> Option<Vec<u8>> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/quant")
            .join(name),
    )
    .ok()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn dequantization_matches_ggml_for_every_type() {
    for kind in QuantKind::ALL {
        let blocks = read(&format!("{}.blocks", kind.name())).unwrap();
        let want = f32s(&read(&format!("{}.dequant.f32", kind.name())).unwrap());
        let mut got = vec![0f32; want.len()];
        kind.dequantize(&blocks, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                "{} weight {i}: {g} vs {w}",
                kind.name()
            );
        }
        assert!(kind.scales_finite(&blocks));
    }
}

#[test]
fn reference_quantizers_match_ggml_bytes() {
    let mut checked = 0;
    for kind in QuantKind::ALL {
        let (Some(input), Some(want)) = (
            read(&format!("{}.input.f32", kind.name())),
            read(&format!("{}.quant", kind.name())),
        ) else {
            assert!(matches!(
                kind,
                QuantKind::Q2K | QuantKind::Q3K | QuantKind::Q4K | QuantKind::Q5K | QuantKind::Q6K
            ));
            continue;
        };
        let x = f32s(&input);
        let mut got = vec![0u8; want.len()];
        kind.quantize(&x, &mut got).expect("has a reference quantizer");
        assert_eq!(got, want, "{}", kind.name());
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn quantize_dequantize_error_is_within_the_format_bound() {
    // Error per weight: half a step d/2, except for the symmetric Q4_0/Q5_0
    // whose largest value maps to −8/−16 so the other sign clips at +7/+15:
    // one full step d there. (Plus the f16 rounding of the scale.)
    let n = 32 * 64;
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
    // (type, step as a fraction of max|x| (or of max−min), steps of error allowed)
    for (kind, step, allowed) in [
        (QuantKind::Q4_0, 1.0 / 8.0, 1.0),
        (QuantKind::Q4_1, 2.0 / 15.0, 0.5),
        (QuantKind::Q5_0, 1.0 / 16.0, 1.0),
        (QuantKind::Q5_1, 2.0 / 31.0, 0.5),
        (QuantKind::Q8_0, 1.0 / 127.0, 0.5),
    ] {
        let mut q = vec![0u8; kind.row_bytes(n)];
        kind.quantize(&x, &mut q).unwrap();
        let mut y = vec![0f32; n];
        kind.dequantize(&q, &mut y);
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let bound = amax * step * allowed * 1.01 + 2e-3 * amax;
            for (a, c) in xb.iter().zip(yb) {
                assert!(
                    (a - c).abs() <= bound,
                    "{} block {b}: {a} → {c} (bound {bound})",
                    kind.name()
                );
            }
        }
    }
}

#[test]
fn non_finite_scales_are_detected() {
    let mut block = vec![0u8; QuantKind::Q6K.block_bytes()];
    assert!(QuantKind::Q6K.scales_finite(&block));
    block[208..210].copy_from_slice(&half::f16::NAN.to_le_bytes());
    assert!(!QuantKind::Q6K.scales_finite(&block));
    let mut block = vec![0u8; QuantKind::Q4_0.block_bytes()];
    block[0..2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    assert!(!QuantKind::Q4_0.scales_finite(&block));
}

/// ggml's synthetic data (test-quantize-fns): 0.1 + 2·cos(i + offset).
fn synthetic(n: usize, offset: f32) -> Vec<f32> {
    (0..n).map(|i| 0.1 + 2.0 * (i as f32 + offset).cos()).collect()
}

/// ggml's error measure: sqrt(Σ diff²) / n.
fn ggml_rmse(a: &[f32], b: &[f32]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>()).sqrt() / a.len() as f64
}

#[test]
fn quantization_error_within_ggml_bounds() {
    // test-quantize-fns: MAX_QUANTIZATION_TOTAL_ERROR 0.002 (2-bit 0.0075, 3-bit 0.004)
    let n = 32 * 128;
    let x = synthetic(n, 0.0);
    for kind in QuantKind::ALL {
        let mut q = vec![0u8; kind.row_bytes(n)];
        if kind.quantize(&x, &mut q).is_none() {
            assert!(matches!(kind, QuantKind::Q2K | QuantKind::Q3K));
            continue;
        }
        let mut y = vec![0f32; n];
        kind.dequantize(&q, &mut y);
        let err = ggml_rmse(&x, &y);
        assert!(err <= 0.002, "{}: total error {err}", kind.name());
    }
}

#[test]
fn quantized_dot_products_within_ggml_bounds() {
    // test-quantize-fns: MAX_DOT_PRODUCT_ERROR 0.02, |dot − reference| / n
    use phi3_kernels::quant::dot::{activations_for, dot_quantized};
    let n = 32 * 128;
    let (a, b) = (synthetic(n, 0.0), synthetic(n, 1.0));
    let reference: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
    for kind in [QuantKind::Q4_0, QuantKind::Q8_0, QuantKind::Q4K, QuantKind::Q6K] {
        let mut w = vec![0u8; kind.row_bytes(n)];
        kind.quantize(&a, &mut w).unwrap();
        let act = activations_for(kind).unwrap();
        let mut x = vec![0u8; act.row_bytes(n)];
        act.quantize(&b, &mut x);
        let err = (dot_quantized(kind, &w, &x) as f64 - reference).abs() / n as f64;
        assert!(err <= 0.02, "{}: dot error {err}", kind.name());
    }
}
