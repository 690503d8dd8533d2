//! Quantized weights through the one forward pass: models quantized by phi3
//! against their dequantized-f32 run and against the f32 reference, and
//! GGUF files quantized by the `gguf` package (ggml's reference quantizer).
//!
//! Bounds: the quantized model and its dequantized-f32 copy compute the same
//! numbers (max abs error ≤ 1e-4·(1 + max|logit|)), except for the types on
//! the integer path (Q8_0, Q4_0; Q4_1, Q5_0, Q5_1 with VNNI), whose activations are quantized to Q8_0 as
//! in ggml: NMSE ≤ 4e-3 there (largest seen 1.6e-3). Against the f32
//! reference, NMSE stays under the per-type bounds below (about twice the
//! largest seen: Q8_0 4.0e-3, Q5_1 7.4e-2, Q5_0 1.3e-1, Q4_1 2.8e-1, Q4_0
//! 3.4e-1). These fixtures' unstructured random weights amplify quantization
//! noise far more than trained models do; quality on real models is for the
//! evaluation tools (perplexity, KL divergence) to measure.

mod common;

use common::*;
use phi3_formats::{DType, GgufFile};
use phi3_model::convert::write_gguf;
use phi3_model::Model;

/// Types whose matrix products run on integers with Q8_0 activations.
fn integer_path(dtype: DType) -> bool {
    use phi3_kernels::quant::{dot::activations_for, QuantKind};
    let kind = match dtype {
        DType::Q8_0 => QuantKind::Q8_0,
        DType::Q4_0 => QuantKind::Q4_0,
        DType::Q4_1 => QuantKind::Q4_1,
        DType::Q5_0 => QuantKind::Q5_0,
        DType::Q5_1 => QuantKind::Q5_1,
        _ => return false,
    };
    // Q4_1, Q5_0 and Q5_1 have integer kernels only with AVX-512 VNNI
    activations_for(kind).is_some()
}

/// Bound on the effect of quantizing activations to Q8_0.
const Q8_ACTIVATION_NMSE: f64 = 4e-3;

fn nmse(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    num / den
}

#[test]
fn quantized_models_match_their_dequantized_run_and_stay_near_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["phi-3-mini-4k", "phi-3.5-mini", "phi-4-mini"] {
        let hf = Model::open(model_dir(name)).unwrap();
        let reference = Reference::load(name);
        for (dtype, bound) in [
            (DType::Q8_0, 1e-2),
            (DType::Q5_1, 0.2),
            (DType::Q5_0, 0.25),
            (DType::Q4_1, 0.55),
            (DType::Q4_0, 0.7),
        ] {
            let qpath = dir.path().join(format!("{name}-{dtype}.gguf"));
            write_gguf(&hf, &qpath, dtype).unwrap();
            let q = Model::open(&qpath).unwrap();
            assert_eq!(q.weights.layers[0].gate_up.tensor.dtype, dtype);
            if dtype == DType::Q4_0 {
                // where the kernels read panels, every Q4_0 matrix is held as
                // panels (so the products above ran on them), the tied
                // embedding of phi-4-mini too (its lookups then read panels)
                let l = &q.weights.layers[0];
                for lin in [&l.qkv, &l.o_proj, &l.gate_up, &l.down, &q.weights.lm_head] {
                    let packable = phi3_kernels::quant::q4_0_panels::can_pack(lin.rows, lin.cols);
                    assert_eq!(lin.panels.is_some(), phi3_kernels::packs_q4_0() && packable);
                }
                // loaded to be read back (`phi3 convert`), nothing is repacked
                // and the matrices are the file's bytes
                let files = phi3_formats::ModelFiles::open(&qpath).unwrap();
                let stored = Model::load(files, phi3_model::WeightLayout::AsStored, &|_| {}).unwrap();
                let s = &stored.weights.layers[0];
                for (lin, kept) in [
                    (&s.qkv, &l.qkv),
                    (&s.down, &l.down),
                    (&stored.weights.lm_head, &q.weights.lm_head),
                ] {
                    assert!(lin.panels.is_none());
                    assert_eq!(lin.tensor.bytes(), kept.tensor.bytes());
                }
            }
            let fpath = dir.path().join(format!("{name}-{dtype}-deq.gguf"));
            write_gguf(&q, &fpath, DType::F32).unwrap();
            let deq = Model::open(&fpath).unwrap();
            for seq in reference.sequences() {
                let got = full_logits(&q, &seq.ids);
                let want = full_logits(&deq, &seq.ids);
                let scale = 1.0 + want.iter().fold(0f32, |m, v| m.max(v.abs()));
                if integer_path(dtype) {
                    // activations are quantized to Q8_0 too, as ggml does
                    let e = nmse(&got, &want);
                    eprintln!("{name} {dtype} {}: NMSE vs dequantized run {e:.2e}", seq.key);
                    assert!(
                        e <= Q8_ACTIVATION_NMSE,
                        "{name} {dtype} {}: vs dequantized {e:e}",
                        seq.key
                    );
                } else {
                    let err = max_abs_diff(&got, &want);
                    assert!(err <= 1e-4 * scale, "{name} {dtype} {}: vs dequantized {err}", seq.key);
                }
                let e = nmse(&got, &seq.logits);
                assert!(
                    e <= bound,
                    "{name} {dtype} {}: NMSE vs f32 reference {e:e} > {bound:e}",
                    seq.key
                );
                eprintln!("{name} {dtype} {}: NMSE vs f32 reference {e:.2e}", seq.key);
            }
        }
    }
}

#[test]
fn gguf_package_quantized_files_equal_phi3_quantization() {
    let dir = tempfile::tempdir().unwrap();
    let hf = Model::open(model_dir("phi-3.5-mini")).unwrap();
    for dtype in [DType::Q8_0, DType::Q4_0] {
        let py_path = testdata().join(format!(
            "models/phi-3.5-mini-gguf-py-{}.gguf",
            dtype.name().to_lowercase()
        ));
        let ours_path = dir.path().join("ours.gguf");
        write_gguf(&hf, &ours_path, dtype).unwrap();
        let (py, ours) = (GgufFile::open(&py_path).unwrap(), GgufFile::open(&ours_path).unwrap());
        for info in &py.tensors {
            let a = py.tensor(&info.name).unwrap();
            let b = ours
                .tensor(&info.name)
                .unwrap_or_else(|| panic!("{} missing in ours", info.name));
            assert_eq!(a.dtype, b.dtype, "{}", info.name);
            assert_eq!(a.shape, b.shape, "{}", info.name);
            assert!(
                a.bytes() == b.bytes(),
                "{dtype}: {} bytes differ from ggml's quantizer",
                info.name
            );
        }
        let m = Model::open(&py_path).unwrap();
        let reference = Reference::load("phi-3.5-mini");
        let ours = Model::open(&ours_path).unwrap();
        for seq in reference.sequences() {
            assert_eq!(full_logits(&m, &seq.ids), full_logits(&ours, &seq.ids));
        }
    }
}

#[test]
fn unsupported_quantization_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hf = Model::open(model_dir("phi-3-mini-4k")).unwrap();
    for dtype in [DType::Q2K, DType::Q3K, DType::I8] {
        let e = write_gguf(&hf, &dir.path().join("x.gguf"), dtype).unwrap_err();
        assert!(e.to_string().contains("cannot write matrices as"), "{e}");
    }
    // K-quants need rows of whole 256-weight superblocks; these rows have 64
    let e = write_gguf(&hf, &dir.path().join("x.gguf"), DType::Q4K).unwrap_err();
    assert!(e.to_string().contains("not a multiple of the block size 256"), "{e}");
    assert!(!dir.path().join("x.gguf").exists(), "nothing is written on refusal");
}
