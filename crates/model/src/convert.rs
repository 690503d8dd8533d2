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
        DType::BF16 => 32,
        _ => 0,
    }
}

/// The types `write_gguf` can store matrices in.
pub const WRITABLE: [DType; 8] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q5_1,
    DType::Q5_0,
    DType::Q4_1,
    DType::Q4_0,
];

/// Writes `model` to `out` with every matrix stored as `dtype` (F32, F16,
/// BF16, or a block type with a reference quantizer: Q8_0, Q5_1, Q5_0, Q4_1,
/// Q4_0); norms and rope factors stay F32, as llama.cpp keeps them.
pub fn write_gguf(model: &Model, out: &Path, dtype: DType) -> Result<()> {
    if !WRITABLE.contains(&dtype) {
        return Err(ModelError::InvalidOption(format!(
            "cannot write matrices as {dtype}: supported types are {}",
            WRITABLE.map(|t| t.name()).join(", ")
        )));
    }
    if let Some(kind) = quant_kind(dtype) {
        let block = kind.block_len();
        for lin in all_linears(model) {
            if lin.cols % block != 0 {
                return Err(ModelError::InvalidOption(format!(
                    "cannot quantize {} to {dtype}: its rows of {} weights are not a multiple of the block size {block}",
                    lin.tensor.name, lin.cols
                )));
            }
        }
    }
    let cfg = &model.config;
    let mut w = gguf_header(cfg, &model.eos_token_ids, dtype);

    let wts = &model.weights;
    add_linear(&mut w, GGUF_NAMES.embed, &wts.embed, dtype);
    for (l, lw) in wts.layers.iter().enumerate() {
        let n = |p: &str| layer_name(p, l);
        add_vector(&mut w, &n(GGUF_NAMES.attn_norm), &lw.attn_norm);
        add_linear(&mut w, &n(GGUF_NAMES.qkv), &lw.qkv, dtype);
        add_linear(&mut w, &n(GGUF_NAMES.o_proj), &lw.o_proj, dtype);
        add_vector(&mut w, &n(GGUF_NAMES.ffn_norm), &lw.ffn_norm);
        add_linear(&mut w, &n(GGUF_NAMES.gate_up), &lw.gate_up, dtype);
        add_linear(&mut w, &n(GGUF_NAMES.down), &lw.down, dtype);
    }
    add_vector(&mut w, GGUF_NAMES.final_norm, &wts.final_norm);
    if !cfg.tie_word_embeddings {
        add_linear(&mut w, GGUF_NAMES.lm_head, &wts.lm_head, dtype);
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

fn all_linears(model: &Model) -> Vec<&Linear> {
    let w = &model.weights;
    let mut v = vec![&w.embed, &w.lm_head];
    for l in &w.layers {
        v.extend([&l.qkv, &l.o_proj, &l.gate_up, &l.down]);
    }
    v
}
