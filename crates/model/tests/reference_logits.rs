//! Tier 2: the forward pass against transformers' logits for every fixture
//! model (tools/reference/make_model_fixtures.py).
//!
//! Bounds held:
//! * f32 weights, full sequence and token by token: max abs logit error
//!   ≤ 1e-5 · (1 + max |reference logit|), i.e. about 1e-4 for these logits
//!   (largest seen: 9.2e-5 on phi-4-mini, whose tied logits reach ~±40);
//! * f16 / bf16 copies of the weights (written by phi3's GGUF writer) against
//!   the f32 reference: normalised MSE ≤ 1e-5 (f16) and ≤ 1e-3 (bf16). These
//!   measure the rounding of the weights themselves; compute stays f32.

mod common;

use common::*;
use phi3_formats::DType;
use phi3_model::convert::write_gguf;
use phi3_model::{Model, SourceFormat};

const F16_NMSE: f64 = 1e-5;
const BF16_NMSE: f64 = 1e-3;

/// The f32 bound for logits `reference`.
fn f32_bound(reference: &[f32]) -> f32 {
    1e-5 * (1.0 + reference.iter().fold(0f32, |m, v| m.max(v.abs())))
}

fn check_full(model: &Model, name: &str, reference: &Reference, what: &str) -> f32 {
    let mut worst = 0f32;
    for seq in reference.sequences() {
        let got = full_logits(model, &seq.ids);
        let err = max_abs_diff(&got, &seq.logits);
        let bound = f32_bound(&seq.logits);
        assert!(err <= bound, "{name} {what} {}: max abs error {err} > {bound}", seq.key);
        worst = worst.max(err);
    }
    worst
}

fn nmse(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    num / den
}

#[test]
fn full_sequence_logits_match_transformers() {
    for name in MODELS {
        let model = Model::open(model_dir(name)).unwrap();
        assert_eq!(model.format, SourceFormat::HuggingFace);
        let err = check_full(&model, name, &Reference::load(name), "f32");
        eprintln!("{name}: full-sequence max abs error {err:e}");
    }
}

#[test]
fn token_by_token_logits_match_transformers() {
    for name in MODELS {
        let model = Model::open(model_dir(name)).unwrap();
        let reference = Reference::load(name);
        for seq in reference.sequences() {
            let got = incremental_logits(&model, &seq.ids);
            let want = seq.incremental.as_ref().unwrap_or(&seq.logits);
            let err = max_abs_diff(&got, want);
            assert!(err <= f32_bound(want), "{name} {}: token-by-token error {err}", seq.key);
            eprintln!("{name} {}: token-by-token max abs error {err:e}", seq.key);
        }
    }
}

#[test]
fn greedy_generation_matches_transformers_generate() {
    for name in MODELS {
        let model = Model::open(model_dir(name)).unwrap();
        let reference = Reference::load(name);
        let prompt = reference.ids("gen.prompt");
        let want = reference.ids("gen.output");
        let got = greedy(&model, &prompt, want.len());
        assert_eq!(got, want, "{name}: greedy tokens differ from transformers' generate()");
    }
}

#[test]
fn gguf_written_by_phi3_gives_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    for name in MODELS {
        let hf = Model::open(model_dir(name)).unwrap();
        let reference = Reference::load(name);
        let path = dir.path().join(format!("{name}.gguf"));
        write_gguf(&hf, &path, DType::F32).unwrap();
        let gguf = Model::open(&path).unwrap();
        assert_eq!(gguf.format, SourceFormat::Gguf);
        let factors = |m: &Model| {
            m.config
                .long_rope
                .as_ref()
                .map(|l| (l.short_factor.clone(), l.long_factor.clone(), l.attention_factor))
        };
        assert_eq!(factors(&gguf), factors(&hf), "{name}");
        assert_eq!(gguf.config.attention_window(), hf.config.attention_window(), "{name}");
        check_full(&gguf, name, &reference, "gguf f32");
        let prompt = reference.ids("gen.prompt");
        let want = reference.ids("gen.output");
        assert_eq!(greedy(&gguf, &prompt, want.len()), want, "{name} gguf greedy");
    }
}

#[test]
fn half_precision_weights_stay_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    for name in MODELS {
        let hf = Model::open(model_dir(name)).unwrap();
        let reference = Reference::load(name);
        for (dtype, bound) in [(DType::F16, F16_NMSE), (DType::BF16, BF16_NMSE)] {
            let path = dir.path().join(format!("{name}-{dtype}.gguf"));
            write_gguf(&hf, &path, dtype).unwrap();
            let m = Model::open(&path).unwrap();
            assert_eq!(m.weights.layers[0].qkv.tensor.dtype, dtype);
            for seq in reference.sequences() {
                let err = nmse(&full_logits(&m, &seq.ids), &seq.logits);
                assert!(err <= bound, "{name} {dtype} {}: NMSE {err:e} > {bound:e}", seq.key);
                eprintln!("{name} {dtype} {}: NMSE {err:e}", seq.key);
            }
        }
    }
}

#[test]
fn gguf_written_by_the_gguf_package_matches_its_safetensors_twin() {
    // llama.cpp's own writer, llama.cpp's phi3 names and keys, with rope_factors_long/short.
    let path = testdata().join("models/phi-3.5-mini-gguf-py.gguf");
    let model = Model::open(&path).unwrap();
    let hf = Model::open(model_dir("phi-3.5-mini")).unwrap();
    assert_eq!(model.config.long_rope, hf.config.long_rope);
    let reference = Reference::load("phi-3.5-mini");
    check_full(&model, "gguf-py", &reference, "gguf-py");
    let prompt = reference.ids("gen.prompt");
    assert_eq!(greedy(&model, &prompt, 32), reference.ids("gen.output"));
}

/// Writes a copy of a fixture folder whose safetensors hold `dtype` (F16 or
/// BF16) weights, as Hugging Face checkpoints ship them.
fn half_precision_folder(name: &str, dtype: safetensors::Dtype, out: &std::path::Path) {
    let src = phi3_formats::SafetensorsModel::open_dir(model_dir(name)).unwrap();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (tname, t) in &src.tensors {
        let values = t.to_f32_vec().unwrap();
        let bytes: Vec<u8> = match dtype {
            safetensors::Dtype::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        };
        data.push((tname.clone(), t.shape.clone(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::create_dir_all(out).unwrap();
    safetensors::serialize_to_file(views, &None, &out.join("model.safetensors")).unwrap();
    for f in ["config.json", "generation_config.json"] {
        std::fs::copy(model_dir(name).join(f), out.join(f)).unwrap();
    }
}

#[test]
fn half_precision_safetensors_folders_load_mapped_and_match() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, bound) in [
        (safetensors::Dtype::BF16, BF16_NMSE),
        (safetensors::Dtype::F16, F16_NMSE),
    ] {
        let path = dir.path().join(format!("{dtype:?}"));
        half_precision_folder("phi-3-mini-128k", dtype, &path);
        let m = Model::open(&path).unwrap();
        let qkv = &m.weights.layers[0].qkv.tensor;
        assert_eq!(qkv.dtype.name(), format!("{dtype:?}"));
        assert!(qkv.is_mapped(), "weights must be used from the mapping, not copied");
        for seq in Reference::load("phi-3-mini-128k").sequences() {
            let err = nmse(&full_logits(&m, &seq.ids), &seq.logits);
            assert!(err <= bound, "{dtype:?} {}: NMSE {err:e}", seq.key);
        }
    }
}

#[test]
fn weights_are_memory_mapped_not_copied() {
    let hf = Model::open(model_dir("phi-3-medium-4k")).unwrap();
    let gguf = Model::open(testdata().join("models/phi-3.5-mini-gguf-py.gguf")).unwrap();
    for m in [&hf, &gguf] {
        assert!(m.weights.embed.tensor.is_mapped());
        for l in &m.weights.layers {
            for lin in [&l.qkv, &l.o_proj, &l.gate_up, &l.down] {
                assert!(lin.tensor.is_mapped(), "{}", lin.tensor.name);
            }
        }
    }
}
