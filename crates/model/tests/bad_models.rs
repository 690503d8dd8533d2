//! Tier 6 at the model level: files that parse but do not describe a model
//! phi3 can run. Each gives a typed error naming the file and the problem.

mod common;

use std::path::Path;

use common::*;
use phi3_formats::gguf::Value;
use phi3_formats::{DType, GgufFile, GgufWriter};
use phi3_model::convert::write_gguf;
use phi3_model::{Logits, Model, ModelError, RopePolicy, Session, SessionOptions};

/// A copy of a fixture's HF folder with `config.json` edited by `edit`.
fn hf_copy(name: &str, dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let src = model_dir(name);
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dst.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dst.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    dst
}

fn open_err(path: &Path) -> ModelError {
    match Model::open(path) {
        Ok(_) => panic!("{} must be rejected", path.display()),
        Err(e) => e,
    }
}

#[test]
fn config_that_contradicts_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let p = hf_copy("phi-3-mini-4k", dir.path(), |c| c["intermediate_size"] = 256.into());
    let e = open_err(&p);
    assert!(
        matches!(&e, ModelError::TensorShape { name, .. } if name.contains("gate_up_proj")),
        "{e}"
    );
    assert!(e.to_string().contains("phi-3-mini-4k"), "{e}");
}

#[test]
fn unknown_or_unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let p = hf_copy("phi-3-mini-4k", dir.path(), |c| {
        c["model_type"] = "phi3small".into();
        c["architectures"] = serde_json::json!(["Phi3SmallForCausalLM"]);
    });
    let e = open_err(&p);
    assert!(
        matches!(&e, ModelError::UnsupportedArchitecture { arch, .. } if arch == "phi3small"),
        "{e}"
    );
    assert!(e.to_string().contains("Phi-3-small"), "{e}");
}

#[test]
fn config_field_errors() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "missing layers",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("num_hidden_layers");
            }),
            "num_hidden_layers",
        ),
        (
            "heads not divisible",
            Box::new(|c| c["num_key_value_heads"] = 3.into()),
            "num_key_value_heads",
        ),
        (
            "wrong type",
            Box::new(|c| c["hidden_size"] = "64".into()),
            "hidden_size",
        ),
        ("negative", Box::new(|c| c["vocab_size"] = (-5).into()), "vocab_size"),
        (
            "absurd",
            Box::new(|c| c["num_hidden_layers"] = 1_000_000_000u64.into()),
            "num_hidden_layers",
        ),
        (
            "factor count",
            Box::new(|c| {
                c["rope_scaling"]["short_factor"].as_array_mut().unwrap().pop();
            }),
            "short_factor",
        ),
        (
            "factor value",
            Box::new(|c| c["rope_scaling"]["long_factor"][0] = "x".into()),
            "long_factor",
        ),
        (
            "rope type",
            Box::new(|c| c["rope_scaling"]["type"] = "dynamic".into()),
            "rope_scaling.type",
        ),
        (
            "partial rotary",
            Box::new(|c| c["partial_rotary_factor"] = 1.5.into()),
            "partial_rotary_factor",
        ),
    ];
    for (what, edit, field) in cases {
        let dir = tempfile::tempdir().unwrap();
        let p = hf_copy("phi-3.5-mini", dir.path(), edit);
        let e = open_err(&p);
        assert!(
            matches!(&e, ModelError::Config { field: f, .. } if f.contains(field)),
            "{what}: {e}"
        );
        assert!(e.to_string().contains("config.json"), "{what}: {e}");
    }
}

#[test]
fn broken_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = hf_copy("phi-3-mini-4k", dir.path(), |_| {});
    std::fs::write(p.join("config.json"), b"{\"hidden_size\": 64,").unwrap();
    let e = open_err(&p);
    assert!(
        e.to_string().contains("config.json") && e.to_string().contains("JSON"),
        "{e}"
    );
}

/// Rewrites a GGUF with its metadata and tensors passed through `edit`.
fn gguf_variant(src: &GgufFile, out: &Path, edit: impl Fn(&mut Vec<(String, Value)>, &mut Vec<phi3_formats::Tensor>)) {
    let mut meta: Vec<(String, Value)> = src.metadata.clone().into_iter().collect();
    let mut tensors = src.all_tensors();
    edit(&mut meta, &mut tensors);
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.set(k, v);
    }
    for t in &tensors {
        w.add_tensor(t.name.clone(), t);
    }
    w.write(out).unwrap();
}

fn fixture_gguf(dir: &Path, name: &str) -> GgufFile {
    let path = dir.join(format!("{name}-src.gguf"));
    write_gguf(&Model::open(model_dir(name)).unwrap(), &path, DType::F32).unwrap();
    GgufFile::open(path).unwrap()
}

#[test]
fn gguf_model_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture_gguf(dir.path(), "phi-3.5-mini");
    let out = dir.path().join("variant.gguf");

    gguf_variant(&src, &out, |_, t| t.retain(|t| t.name != "blk.1.ffn_down.weight"));
    let e = open_err(&out);
    assert!(
        matches!(&e, ModelError::MissingTensor { name, .. } if name == "blk.1.ffn_down.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("variant.gguf"), "{e}");

    gguf_variant(&src, &out, |m, _| {
        m.retain(|(k, _)| k != "general.architecture");
        m.push(("general.architecture".into(), Value::String("llama".into())));
    });
    let e = open_err(&out);
    assert!(
        matches!(&e, ModelError::UnsupportedArchitecture { arch, .. } if arch == "llama"),
        "{e}"
    );

    gguf_variant(&src, &out, |m, _| {
        m.retain(|(k, _)| k != "phi3.attention.layer_norm_rms_epsilon")
    });
    let e = open_err(&out);
    assert!(
        matches!(&e, ModelError::Config { field, .. } if field == "phi3.attention.layer_norm_rms_epsilon"),
        "{e}"
    );

    gguf_variant(&src, &out, |m, _| {
        m.retain(|(k, _)| k != "phi3.block_count");
        m.push(("phi3.block_count".into(), Value::String("two".into())));
    });
    let e = open_err(&out);
    assert!(
        matches!(&e, ModelError::Config { field, .. } if field == "phi3.block_count"),
        "{e}"
    );

    gguf_variant(&src, &out, |_, t| t.retain(|t| t.name != "rope_factors_short.weight"));
    let e = open_err(&out);
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{e}");

    // a misshaped tensor: the qkv matrix with one row too few
    gguf_variant(&src, &out, |_, t| {
        let i = t.iter().position(|t| t.name == "blk.0.attn_qkv.weight").unwrap();
        let old = &t[i];
        let cols = old.shape[1];
        let rows = old.shape[0] - 1;
        t[i] = phi3_formats::Tensor::from_bytes(
            old.name.clone(),
            DType::F32,
            vec![rows, cols],
            &old.bytes()[..rows * cols * 4],
        );
    });
    let e = open_err(&out);
    assert!(
        matches!(&e, ModelError::TensorShape { name, .. } if name == "blk.0.attn_qkv.weight"),
        "{e}"
    );

    // a weight type phi3 does not compute with (Q8_1 is an activation format)
    gguf_variant(&src, &out, |_, t| {
        let i = t.iter().position(|t| t.name == "blk.0.attn_output.weight").unwrap();
        let shape = t[i].shape.clone();
        let n: usize = shape.iter().product();
        t[i] = phi3_formats::Tensor::from_bytes(t[i].name.clone(), DType::Q8_1, shape, &vec![0u8; n / 32 * 36]);
    });
    let e = open_err(&out);
    assert!(
        matches!(&e, ModelError::UnsupportedDType { dtype, .. } if dtype == "Q8_1"),
        "{e}"
    );

    // a Q8_0 matrix with one NaN block scale
    gguf_variant(&src, &out, |_, t| {
        let i = t.iter().position(|t| t.name == "blk.1.ffn_down.weight").unwrap();
        let shape = t[i].shape.clone();
        let n: usize = shape.iter().product();
        let mut bytes = vec![0u8; n / 32 * 34];
        bytes[34 * 5..34 * 5 + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
        t[i] = phi3_formats::Tensor::from_bytes(t[i].name.clone(), DType::Q8_0, shape, &bytes);
    });
    let e = open_err(&out);
    assert!(
        matches!(&e, ModelError::BadQuantScales { name, .. } if name == "blk.1.ffn_down.weight"),
        "{e}"
    );

    // Q4_0 matrices with one infinite block scale, the last block of the
    // matrix or one in its middle: on CPUs whose kernels read Q4_0 as
    // panels the check is made while repacking, elsewhere on its own
    for (name, block) in [("blk.0.ffn_up.weight", usize::MAX), ("blk.1.attn_qkv.weight", 7)] {
        gguf_variant(&src, &out, |_, t| {
            let i = t.iter().position(|t| t.name == name).unwrap();
            let shape = t[i].shape.clone();
            let blocks = shape.iter().product::<usize>() / 32;
            let mut bytes = vec![0x11u8; blocks * 18];
            for b in bytes.chunks_exact_mut(18) {
                b[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
            let at = 18 * block.min(blocks - 1);
            bytes[at..at + 2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
            t[i] = phi3_formats::Tensor::from_bytes(t[i].name.clone(), DType::Q4_0, shape, &bytes);
        });
        let e = open_err(&out);
        assert!(
            matches!(&e, ModelError::BadQuantScales { name: n, .. } if n == name),
            "{name}: {e}"
        );
    }
}

#[test]
fn unsupported_safetensors_weight_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let p = hf_copy("phi-3-mini-4k", dir.path(), |_| {});
    // replace the weights with one whose embedding is stored as I32
    let model = phi3_formats::SafetensorsModel::open_dir(&p).unwrap();
    let mut entries: Vec<(String, String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in &model.tensors {
        let dtype = if name == "model.embed_tokens.weight" {
            "I32"
        } else {
            "F32"
        };
        entries.push((name.clone(), dtype.into(), t.shape.clone(), t.bytes().to_vec()));
    }
    drop(model);
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in &entries {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend(h);
    for (_, _, _, b) in &entries {
        file.extend_from_slice(b);
    }
    std::fs::write(p.join("model.safetensors"), file).unwrap();
    let e = open_err(&p);
    assert!(
        matches!(&e, ModelError::UnsupportedDType { name, .. } if name == "model.embed_tokens.weight"),
        "{e}"
    );
}

#[test]
fn token_ids_outside_the_vocabulary() {
    let model = Model::open(model_dir("phi-3-mini-4k")).unwrap();
    let mut s = session(&model);
    let e = s.feed(&[1, 256], Logits::Last).unwrap_err();
    assert!(matches!(e, ModelError::TokenOutOfRange { id: 256, vocab: 256 }), "{e}");
    assert!(s.tokens().is_empty(), "a rejected call leaves the session unchanged");
}

#[test]
fn context_limits() {
    let model = Model::open(model_dir("phi-3-mini-4k")).unwrap();
    let too_big = SessionOptions {
        context: model.config.max_position_embeddings + 1,
        rope_policy: RopePolicy::Reference,
        kv_type: phi3_model::KvType::F32,
    };
    assert!(matches!(
        Session::new(&model, too_big),
        Err(ModelError::InvalidOption(_))
    ));
    let mut s = Session::new(
        &model,
        SessionOptions {
            context: 8,
            rope_policy: RopePolicy::Reference,
            kv_type: phi3_model::KvType::F32,
        },
    )
    .unwrap();
    s.feed(&[3; 6], Logits::Last).unwrap();
    let e = s.feed(&[3; 3], Logits::Last).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::ContextFull {
                needed: 9,
                limit: 8,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(s.tokens().len(), 6);
}
