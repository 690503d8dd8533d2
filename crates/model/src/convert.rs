//! Writes a loaded model as a GGUF file with llama.cpp's `phi3` tensor names
//! and metadata keys (GGUF_PHI3.md §3, §4.1), so llama.cpp and phi3 read it alike.

use std::path::Path;

use half::{bf16, f16};
use phi3_formats::gguf::Value;
use phi3_formats::{DType, GgufWriter};

use crate::error::{ModelError, Result};
use crate::weights::{layer_name, quant_kind, Linear, GGUF_NAMES};
use crate::{Model, ModelConfig};

/// llama.cpp's `general.file_type` for a whole-file type
/// (`LlamaFileType` in gguf-py's constants).
pub fn file_type(dtype: DType) -> u32 {
    match dtype {
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q5_0 => 8,
        DType::Q5_1 => 9,
        DType::Q4K => 15, // llama.cpp has no pure Q4_K label; Q4_K_M is closest
        DType::Q5K => 17,
        DType::Q6K => 18,
        DType::BF16 => 32,
        _ => 0,
    }
}

/// The types `write_gguf` can store matrices in.
pub const WRITABLE: [DType; 11] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q6K,
    DType::Q5K,
    DType::Q5_1,
    DType::Q5_0,
    DType::Q4K,
    DType::Q4_1,
    DType::Q4_0,
];

/// What a matrix is, for the per-tensor choices of a quantization recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Embedding,
    Output,
    Qkv,
    AttnOutput,
    FfnUp,
    FfnDown,
}

/// How the matrices of a model are typed: one type for all, or one of
/// llama.cpp's mixes (GGUF_PHI3.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Uniform(DType),
    /// Q4_K, with Q6_K for the output matrix (and a tied embedding) and for
    /// attn_qkv and ffn_down in the layers `use_more_bits` picks.
    Q4KM,
    /// As Q4_K_M with Q5_K as the base type.
    Q5KM,
    /// Q4_K everywhere but the output (Q6_K). llama.cpp additionally gives
    /// a few early layers Q5_K; phi3 does not.
    Q4KS,
    /// Q4_0 with a Q6_K output matrix, as llama.cpp's Q4_0 files.
    Q4_0,
}

impl From<DType> for Plan {
    fn from(t: DType) -> Plan {
        Plan::Uniform(t)
    }
}

impl Plan {
    /// Parses `q4_k_m`, `q5_k_m`, `q4_k_s`, `q4_0` (a mix) or any single type
    /// in [`WRITABLE`] (`q6_k` and `q8_0` are uniform, as in llama.cpp).
    pub fn parse(name: &str) -> Option<Plan> {
        Some(match name.to_ascii_lowercase().as_str() {
            "q4_k_m" => Plan::Q4KM,
            "q5_k_m" => Plan::Q5KM,
            "q4_k_s" => Plan::Q4KS,
            "q4_0" => Plan::Q4_0,
            other => Plan::Uniform(DType::parse(other).filter(|t| WRITABLE.contains(t))?),
        })
    }

    /// Every name `parse` accepts, for messages.
    pub fn names() -> String {
        let mut v: Vec<String> = WRITABLE.iter().map(|t| t.name().to_lowercase()).collect();
        v.extend(["q4_k_m", "q4_k_s", "q5_k_m"].map(String::from));
        v.join(", ")
    }

    /// The type of matrix `role` in layer `layer` of `n_layers`.
    pub fn choose(self, role: Role, layer: usize, n_layers: usize, tied: bool) -> DType {
        // llama.cpp's use_more_bits: the first and last eighth, and every third layer between
        let more_bits = layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
        let output_like = role == Role::Output || (tied && role == Role::Embedding);
        match self {
            Plan::Uniform(t) => t,
            Plan::Q4_0 => {
                if output_like {
                    DType::Q6K
                } else {
                    DType::Q4_0
                }
            }
            Plan::Q4KS => {
                if output_like {
                    DType::Q6K
                } else {
                    DType::Q4K
                }
            }
            Plan::Q4KM | Plan::Q5KM => {
                let base = if self == Plan::Q4KM { DType::Q4K } else { DType::Q5K };
                match role {
                    _ if output_like => DType::Q6K,
                    Role::Qkv | Role::FfnDown if more_bits => DType::Q6K,
                    _ => base,
                }
            }
        }
    }

    /// [`Plan::choose`] for a matrix with rows of `cols` weights: a mix
    /// falls back, as llama.cpp does, where its K-quant does not fit a row
    /// (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0); a uniform type never does.
    pub fn pick(self, role: Role, layer: usize, n_layers: usize, tied: bool, cols: usize) -> DType {
        let t = self.choose(role, layer, n_layers, tied);
        let fits = quant_kind(t).is_none_or(|k| cols.is_multiple_of(k.block_len()));
        match (self, t) {
            (Plan::Uniform(_), _) => t,
            (_, DType::Q4K) if !fits => DType::Q5_0,
            (_, DType::Q5K) if !fits => DType::Q5_1,
            (_, DType::Q6K) if !fits => DType::Q8_0,
            _ => t,
        }
    }

    /// The name `parse` takes for this plan (lowercase).
    pub fn name(self) -> String {
        match self {
            Plan::Uniform(t) => t.name().to_lowercase(),
            Plan::Q4KM => "q4_k_m".into(),
            Plan::Q5KM => "q5_k_m".into(),
            Plan::Q4KS => "q4_k_s".into(),
            Plan::Q4_0 => "q4_0".into(),
        }
    }

    /// The `general.file_type` of the mix.
    pub fn file_type(self) -> u32 {
        match self {
            Plan::Uniform(t) => file_type(t),
            Plan::Q4_0 => 2,
            Plan::Q4KS => 14,
            Plan::Q4KM => 15,
            Plan::Q5KM => 17,
        }
    }
}

/// Writes `model` to `out` with every matrix stored as `dtype` (see
/// [`write_gguf_plan`]).
pub fn write_gguf(model: &Model, out: &Path, dtype: DType) -> Result<()> {
    if !WRITABLE.contains(&dtype) {
        return Err(ModelError::InvalidOption(format!(
            "cannot write matrices as {dtype}: supported types are {}",
            WRITABLE.map(|t| t.name()).join(", ")
        )));
    }
    write_gguf_plan(model, out, Plan::Uniform(dtype))
}

/// Writes `model` to `out` with its matrices typed by `plan`; norms and rope
/// factors stay F32, as llama.cpp keeps them.
pub fn write_gguf_plan(model: &Model, out: &Path, plan: Plan) -> Result<()> {
    let n_layers = model.config.num_layers;
    let tied = model.config.tie_word_embeddings;
    let check = |lin: &Linear, dtype: DType| -> Result<()> {
        if let Some(kind) = quant_kind(dtype) {
            if !lin.cols.is_multiple_of(kind.block_len()) {
                return Err(ModelError::InvalidOption(format!(
                    "cannot quantize {} to {dtype}: its rows of {} weights are not a multiple of the block size {}",
                    lin.tensor.name,
                    lin.cols,
                    kind.block_len()
                )));
            }
        }
        Ok(())
    };
    let wts = &model.weights;
    let pick = |role: Role, layer: usize| {
        let cols = match role {
            Role::AttnOutput => model.config.num_heads * model.config.head_dim,
            Role::FfnDown => model.config.intermediate_size,
            _ => model.config.hidden_size,
        };
        plan.pick(role, layer, n_layers, tied, cols)
    };
    check(&wts.embed, pick(Role::Embedding, 0))?;
    check(&wts.lm_head, pick(Role::Output, 0))?;
    for (l, lw) in wts.layers.iter().enumerate() {
        check(&lw.qkv, pick(Role::Qkv, l))?;
        check(&lw.o_proj, pick(Role::AttnOutput, l))?;
        check(&lw.gate_up, pick(Role::FfnUp, l))?;
        check(&lw.down, pick(Role::FfnDown, l))?;
    }
    let cfg = &model.config;
    let mut w = gguf_header(cfg, &model.eos_token_ids, DType::F32);
    w.set("general.file_type", Value::U32(plan.file_type()));

    add_linear(&mut w, GGUF_NAMES.embed, &wts.embed, pick(Role::Embedding, 0));
    for (l, lw) in wts.layers.iter().enumerate() {
        let n = |p: &str| layer_name(p, l);
        add_vector(&mut w, &n(GGUF_NAMES.attn_norm), &lw.attn_norm);
        add_linear(&mut w, &n(GGUF_NAMES.qkv), &lw.qkv, pick(Role::Qkv, l));
        add_linear(&mut w, &n(GGUF_NAMES.o_proj), &lw.o_proj, pick(Role::AttnOutput, l));
        add_vector(&mut w, &n(GGUF_NAMES.ffn_norm), &lw.ffn_norm);
        add_linear(&mut w, &n(GGUF_NAMES.gate_up), &lw.gate_up, pick(Role::FfnUp, l));
        add_linear(&mut w, &n(GGUF_NAMES.down), &lw.down, pick(Role::FfnDown, l));
    }
    add_vector(&mut w, GGUF_NAMES.final_norm, &wts.final_norm);
    if !cfg.tie_word_embeddings {
        add_linear(&mut w, GGUF_NAMES.lm_head, &wts.lm_head, pick(Role::Output, 0));
    }
    w.write(out)?;
    Ok(())
}

/// A GGUF writer holding llama.cpp's `phi3` metadata for `cfg` (and the
/// LongRoPE factor tensors); the caller adds the weight tensors.
pub fn gguf_header(cfg: &ModelConfig, eos_token_ids: &[u32], dtype: DType) -> GgufWriter {
    let mut w = GgufWriter::new();
    let arch = "phi3";
    let key = |k: &str| format!("{arch}.{k}");
    w.set("general.architecture", Value::String(arch.into()));
    w.set(
        "general.name",
        Value::String(cfg.name.clone().unwrap_or_else(|| "Phi3".into())),
    );
    w.set("general.file_type", Value::U32(file_type(dtype)));
    w.set(key("context_length"), Value::U32(cfg.max_position_embeddings as u32));
    w.set(key("embedding_length"), Value::U32(cfg.hidden_size as u32));
    w.set(key("feed_forward_length"), Value::U32(cfg.intermediate_size as u32));
    w.set(key("block_count"), Value::U32(cfg.num_layers as u32));
    w.set(key("attention.head_count"), Value::U32(cfg.num_heads as u32));
    w.set(key("attention.head_count_kv"), Value::U32(cfg.num_kv_heads as u32));
    w.set(key("attention.layer_norm_rms_epsilon"), Value::F32(cfg.rms_norm_eps));
    w.set(key("rope.dimension_count"), Value::U32(cfg.rotary_dim as u32));
    w.set(key("rope.freq_base"), Value::F32(cfg.rope_theta));
    w.set(
        key("rope.scaling.original_context_length"),
        Value::U32(cfg.original_max_position_embeddings as u32),
    );
    w.set(
        key("attention.sliding_window"),
        Value::U32(cfg.sliding_window.unwrap_or(0) as u32),
    );
    if let Some(&eos) = eos_token_ids.first() {
        // the first id is the one llama.cpp's single eos key can hold
        w.set("tokenizer.ggml.eos_token_id", Value::U32(eos));
    }
    if let Some(lr) = &cfg.long_rope {
        w.set(key("rope.scaling.attn_factor"), Value::F32(lr.attention_factor));
        w.add_bytes(
            "rope_factors_long.weight",
            DType::F32,
            vec![lr.long_factor.len()],
            f32_bytes(&lr.long_factor),
        );
        w.add_bytes(
            "rope_factors_short.weight",
            DType::F32,
            vec![lr.short_factor.len()],
            f32_bytes(&lr.short_factor),
        );
    }
    w
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn add_vector(w: &mut GgufWriter, name: &str, v: &[f32]) {
    w.add_bytes(name, DType::F32, vec![v.len()], f32_bytes(v));
}

fn add_linear(w: &mut GgufWriter, name: &str, lin: &Linear, dtype: DType) {
    if lin.tensor.dtype == dtype {
        w.add_tensor(name, &lin.tensor);
        return;
    }
    let values = dequantized(lin);
    let bytes: Vec<u8> = match dtype {
        DType::F32 => f32_bytes(&values),
        DType::F16 => values.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
        other => {
            let kind = quant_kind(other).expect("checked in write_gguf");
            let mut out = vec![0u8; kind.row_bytes(lin.cols) * lin.rows];
            kind.quantize(&values, &mut out)
                .expect("WRITABLE types have quantizers");
            out
        }
    };
    w.add_bytes(name, dtype, vec![lin.rows, lin.cols], bytes);
}

/// All weights of a matrix as f32, whatever their stored type.
fn dequantized(lin: &Linear) -> Vec<f32> {
    let mut out = vec![0f32; lin.rows * lin.cols];
    for (r, row) in out.chunks_exact_mut(lin.cols).enumerate() {
        lin.row_f32(r, row);
    }
    out
}
