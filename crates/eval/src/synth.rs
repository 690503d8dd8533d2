//! Random-weight models with the exact shapes of real Phi-3 family models,
//! written straight in the requested type (blocks of random codes with small,
//! finite scales), one tensor in memory at a time.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use phi3_formats::DType;
use phi3_model::convert::{gguf_header, Plan, Role};
use phi3_model::weights::{layer_name, GGUF_NAMES};
use phi3_model::ModelConfig;

use crate::{EvalError, Result};

/// The real configs (copied from the published checkpoints) whose shapes
/// `phi3 bench` can synthesize.
pub const SHAPES: [(&str, &str); 5] = [
    ("phi-3-mini-4k", include_str!("../configs/Phi-3-mini-4k-instruct.json")),
    (
        "phi-3-mini-128k",
        include_str!("../configs/Phi-3-mini-128k-instruct.json"),
    ),
    (
        "phi-3-medium-4k",
        include_str!("../configs/Phi-3-medium-4k-instruct.json"),
    ),
    ("phi-3.5-mini", include_str!("../configs/Phi-3.5-mini-instruct.json")),
    ("phi-4-mini", include_str!("../configs/Phi-4-mini-instruct.json")),
];

/// Weight types a random model can be made in (random blocks need no
/// quantizer, so the K-quants are here too).
pub const SYNTHESIZABLE: [DType; 13] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q5_1,
    DType::Q5_0,
    DType::Q4_1,
    DType::Q4_0,
    DType::Q6K,
    DType::Q5K,
    DType::Q4K,
    DType::Q3K,
    DType::Q2K,
];

/// The validated config of a named shape.
pub fn shape_config(name: &str) -> Result<ModelConfig> {
    let (_, text) = SHAPES.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        EvalError::Invalid(format!(
            "unknown model shape {name:?}: choose one of {}",
            SHAPES.map(|(n, _)| n).join(", ")
        ))
    })?;
    let json: serde_json::Value = serde_json::from_str(text).expect("embedded config is JSON");
    Ok(ModelConfig::from_hf_json(&json, Path::new(name))?)
}

/// What `--type` names: one of [`SYNTHESIZABLE`] for every matrix, or one
/// of llama.cpp's mixes `q4_k_m`, `q4_k_s`, `q5_k_m` (per-tensor types as
/// `phi3 quantize` gives them).
pub fn parse_plan(name: &str) -> Result<Plan> {
    if let Some(t) = DType::parse(name).filter(|t| SYNTHESIZABLE.contains(t)) {
        return Ok(Plan::Uniform(t));
    }
    match Plan::parse(name) {
        Some(plan @ (Plan::Q4KM | Plan::Q4KS | Plan::Q5KM)) => Ok(plan),
        _ => Err(EvalError::Invalid(format!(
            "cannot synthesize {name}: choose one of {}, q4_k_m, q4_k_s, q5_k_m",
            SYNTHESIZABLE.map(|t| t.name().to_lowercase()).join(", ")
        ))),
    }
}

/// Where a synthesized model is cached: `$PHI3_CACHE` or
/// `$XDG_CACHE_HOME/phi3` or `~/.cache/phi3`, under `bench/`.
pub fn cache_path(shape: &str, plan: Plan) -> PathBuf {
    let base = std::env::var_os("PHI3_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("phi3")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/phi3")))
        .unwrap_or_else(|| PathBuf::from(".phi3-cache"));
    base.join("bench").join(format!("{shape}-{}.gguf", plan.name()))
}

/// A small fast generator (xorshift64*); quality is irrelevant here.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545F4914F6CDD1D)
    }
}

/// Random bytes of `rows × cols` weights in `dtype`, with every scale finite
/// and of the size trained weights have (about 1/sqrt(cols)).
fn random_matrix(dtype: DType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut next = rng(seed);
    let std = 1.0 / (cols as f32).sqrt();
    let n = rows * cols;
    let uniform = |r: u64| ((r >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * std * 1.7;
    match dtype {
        DType::F32 => (0..n).flat_map(|_| uniform(next()).to_le_bytes()).collect(),
        DType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(uniform(next())).to_le_bytes())
            .collect(),
        DType::BF16 => (0..n)
            .flat_map(|_| bf16::from_f32(uniform(next())).to_le_bytes())
            .collect(),
        _ => {
            let kind = phi3_model::weights::quant_kind(dtype).expect("a block type");
            let mut bytes = vec![0u8; kind.row_bytes(cols) * rows];
            for chunk in bytes.chunks_mut(8) {
                let r = next().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            // scale fields (GGUF_PHI3.md §7): d sized so that codes × d ≈ std
            let (fields, code_range): (&[usize], f32) = match dtype {
                DType::Q4_0 | DType::Q5_0 => (&[0], 8.0),
                DType::Q8_0 => (&[0], 127.0),
                DType::Q4_1 | DType::Q5_1 => (&[0, 2], 8.0),
                DType::Q4K | DType::Q5K => (&[0, 2], 8.0 * 32.0),
                DType::Q2K => (&[80, 82], 2.0 * 8.0),
                DType::Q3K => (&[108], 4.0 * 32.0),
                DType::Q6K => (&[208], 32.0 * 64.0),
                _ => (&[], 1.0),
            };
            let d = f16::from_f32(std / code_range).to_le_bytes();
            for block in bytes.chunks_exact_mut(kind.block_bytes()) {
                for &f in fields {
                    block[f..f + 2].copy_from_slice(&d);
                }
            }
            bytes
        }
    }
}

/// Writes a random-weight model of shape `shape` with its matrices typed
/// by `plan`.
pub fn synthesize(shape: &str, plan: impl Into<Plan>, out: &Path) -> Result<()> {
    synthesize_config(&shape_config(shape)?, &format!("{shape} random weights"), plan, out)
}

/// Writes a random-weight model with the shapes of `cfg`, its matrices
/// typed by `plan` (a single type, or a mix chosen per tensor as
/// `phi3 quantize` chooses).
pub fn synthesize_config(cfg: &ModelConfig, name: &str, plan: impl Into<Plan>, out: &Path) -> Result<()> {
    let plan = plan.into();
    if let Plan::Uniform(dtype) = plan {
        if !SYNTHESIZABLE.contains(&dtype) {
            return Err(EvalError::Invalid(format!(
                "cannot synthesize {dtype}: choose one of {}",
                SYNTHESIZABLE.map(|t| t.name().to_lowercase()).join(", ")
            )));
        }
    }
    let mut w = gguf_header(cfg, &[], DType::F32);
    w.set("general.file_type", phi3_formats::gguf::Value::U32(plan.file_type()));
    w.set("general.name", phi3_formats::gguf::Value::String(name.to_string()));
    let h = cfg.hidden_size;
    let (n_layers, tied) = (cfg.num_layers, cfg.tie_word_embeddings);
    let mut seed = 1u64;
    let mut matrix =
        |w: &mut phi3_formats::GgufWriter, name: String, role: Role, layer: usize, rows: usize, cols: usize| {
            seed += 1;
            let s = seed;
            let dtype = plan.pick(role, layer, n_layers, tied, cols);
            w.add_generated(
                name,
                dtype,
                vec![rows, cols],
                Box::new(move || random_matrix(dtype, rows, cols, s)),
            );
        };
    let ones = |n: usize| -> Vec<u8> { (0..n).flat_map(|_| 1f32.to_le_bytes()).collect() };
    matrix(
        &mut w,
        GGUF_NAMES.embed.to_string(),
        Role::Embedding,
        0,
        cfg.vocab_size,
        h,
    );
    for l in 0..cfg.num_layers {
        let n = |p: &str| layer_name(p, l);
        w.add_bytes(n(GGUF_NAMES.attn_norm), DType::F32, vec![h], ones(h));
        matrix(&mut w, n(GGUF_NAMES.qkv), Role::Qkv, l, cfg.qkv_dim(), h);
        let attn = cfg.num_heads * cfg.head_dim;
        matrix(&mut w, n(GGUF_NAMES.o_proj), Role::AttnOutput, l, h, attn);
        w.add_bytes(n(GGUF_NAMES.ffn_norm), DType::F32, vec![h], ones(h));
        matrix(
            &mut w,
            n(GGUF_NAMES.gate_up),
            Role::FfnUp,
            l,
            2 * cfg.intermediate_size,
            h,
        );
        matrix(&mut w, n(GGUF_NAMES.down), Role::FfnDown, l, h, cfg.intermediate_size);
    }
    w.add_bytes(GGUF_NAMES.final_norm, DType::F32, vec![h], ones(h));
    if !cfg.tie_word_embeddings {
        matrix(
            &mut w,
            GGUF_NAMES.lm_head.to_string(),
            Role::Output,
            0,
            cfg.vocab_size,
            h,
        );
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::Io(dir.display().to_string(), e))?;
    }
    w.write(out)?;
    Ok(())
}

/// Writes `out`: the model in `weights` with the vocabulary metadata
/// (`tokenizer.*`) of the GGUF file `vocab`, e.g. a random model that
/// speaks the real Phi-3 vocabulary, for end-to-end tests.
pub fn with_vocabulary(weights: &Path, vocab: &Path, out: &Path) -> Result<()> {
    let w = phi3_formats::GgufFile::open(weights)?;
    let v = phi3_formats::GgufFile::open(vocab)?;
    let mut writer = phi3_formats::GgufWriter::new();
    for (k, val) in w
        .metadata
        .iter()
        .chain(v.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")))
    {
        writer.set(k.clone(), val.clone());
    }
    for t in w.all_tensors() {
        writer.add_tensor(t.name.clone(), &t);
    }
    writer.write(out)?;
    Ok(())
}

/// A small random model (Q8_0) with `base`'s layers and heads, a 512-token
/// context without a window, and the vocabulary and chat template of the
/// GGUF file `vocab`: a model that speaks real text, for end-to-end tests of
/// generation and chat. Written as `dir/model.gguf`.
pub fn random_chat_model(base: &ModelConfig, vocab: &Path, dir: &Path) -> Result<PathBuf> {
    let tokens = phi3_formats::GgufFile::open(vocab)?
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array().map(<[_]>::len))
        .ok_or_else(|| EvalError::Invalid(format!("{}: no tokenizer.ggml.tokens", vocab.display())))?;
    let mut cfg = base.clone();
    cfg.vocab_size = tokens;
    cfg.max_position_embeddings = 512;
    cfg.original_max_position_embeddings = 512;
    cfg.sliding_window = None;
    let weights = dir.join("weights.gguf");
    synthesize_config(&cfg, "Phi3 tiny", DType::Q8_0, &weights)?;
    let out = dir.join("model.gguf");
    with_vocabulary(&weights, vocab, &out)?;
    Ok(out)
}
