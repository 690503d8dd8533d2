//! The validated model configuration: every model fact the forward pass uses,
//! read from a Hugging Face `config.json` or from GGUF metadata (DESIGN.md
//! principle 2: no model constants in code paths).

use std::path::Path;

use phi3_formats::gguf::Value;
use phi3_formats::GgufFile;
use serde_json::Value as Json;

use crate::error::{ModelError, Result};

/// Model families phi3 knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `Phi3ForCausalLM`: Phi-3-mini/medium (4k, 128k), Phi-3.5-mini, Phi-4-mini.
    Phi3,
}

/// LongRoPE parameters (PHI3_FAMILY.md §3).
#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    /// How the config spelled the type: `"su"` (April 2024) or `"longrope"`.
    pub type_name: String,
    pub short_factor: Vec<f32>,
    pub long_factor: Vec<f32>,
    /// The magnitude m multiplied into cos and sin (§3.1).
    pub attention_factor: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    /// A human name from the files (`_name_or_path`, `general.name`), if any.
    pub name: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Dimensions of each head that rotate (`partial_rotary_factor` · head_dim).
    pub rotary_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub long_rope: Option<LongRope>,
    pub max_position_embeddings: usize,
    pub original_max_position_embeddings: usize,
    /// `sliding_window` as configured (transformers semantics: a query sees
    /// this many keys, itself included).
    pub sliding_window: Option<usize>,
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// Size of the fused QKV projection output.
    pub fn qkv_dim(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }

    /// Query heads per KV head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Keys a query sees when the window is narrower than the context, else
    /// `None`. transformers masks keys j with j ≤ i − W, so W keys are visible
    /// including the query's own (PHI3_FAMILY.md §4).
    pub fn attention_window(&self) -> Option<usize> {
        self.sliding_window.filter(|&w| w < self.max_position_embeddings)
    }

    /// Parameter count (embedding and output counted separately unless tied).
    pub fn parameter_count(&self) -> u64 {
        let h = self.hidden_size as u64;
        let per_layer = 2 * h
            + self.qkv_dim() as u64 * h
            + (self.num_heads * self.head_dim) as u64 * h
            + 3 * self.intermediate_size as u64 * h;
        let embed = self.vocab_size as u64 * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + h + per_layer * self.num_layers as u64
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(json: &Json, path: &Path) -> Result<ModelConfig> {
        let r = JsonReader { json, path };
        let model_type = json.get("model_type").and_then(Json::as_str).unwrap_or("");
        let arch_list: Vec<&str> = json
            .get("architectures")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        if model_type != "phi3" && !arch_list.contains(&"Phi3ForCausalLM") {
            let arch = if model_type.is_empty() {
                arch_list.first().copied().unwrap_or("unknown").to_string()
            } else {
                model_type.to_string()
            };
            let why = match arch.as_str() {
                "phi3small" | "Phi3SmallForCausalLM" => "Phi-3-small is not supported yet",
                "phimoe" | "PhiMoEForCausalLM" => "Phi-3.5-MoE is not supported yet",
                _ => "phi3 runs the Phi-3 family (model_type \"phi3\")",
            };
            return Err(ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch,
                why: why.into(),
            });
        }
        let hidden_size = r.usize("hidden_size")?;
        let num_heads = r.usize("num_attention_heads")?;
        let num_kv_heads = r.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        let head_dim = match r.opt_usize("head_dim")? {
            Some(d) => d,
            None => hidden_size / num_heads.max(1),
        };
        let partial = r.opt_f64("partial_rotary_factor")?.unwrap_or(1.0);
        if !(partial > 0.0 && partial <= 1.0) {
            return Err(r.bad("partial_rotary_factor", "must be in (0, 1]"));
        }
        let rotary_dim = (head_dim as f64 * partial) as usize;
        let max_pos = r.usize("max_position_embeddings")?;
        let orig = r.opt_usize("original_max_position_embeddings")?.unwrap_or(max_pos);
        // transformers 5 writes rope_parameters (with rope_theta inside); real checkpoints
        // use rope_scaling + rope_theta. Both are read.
        let params = json.get("rope_parameters").filter(|v| v.is_object());
        let rope_theta = match r.opt_f64("rope_theta")? {
            Some(t) => t,
            None => params
                .and_then(|p| p.get("rope_theta"))
                .and_then(Json::as_f64)
                .unwrap_or(10000.0),
        };
        let scaling = json
            .get("rope_scaling")
            .filter(|v| !v.is_null())
            .or(params.filter(|p| p.get("long_factor").is_some()));
        let long_rope = match scaling {
            None => None,
            Some(s) => Some(parse_hf_long_rope(&r, s, rotary_dim, max_pos, orig)?),
        };
        let cfg = ModelConfig {
            architecture: Architecture::Phi3,
            name: json.get("_name_or_path").and_then(Json::as_str).map(str::to_string),
            vocab_size: r.usize("vocab_size")?,
            hidden_size,
            intermediate_size: r.usize("intermediate_size")?,
            num_layers: r.usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rotary_dim,
            rms_norm_eps: r.opt_f64("rms_norm_eps")?.unwrap_or(1e-5) as f32,
            rope_theta: rope_theta as f32,
            long_rope,
            max_position_embeddings: max_pos,
            original_max_position_embeddings: orig,
            sliding_window: r.opt_usize("sliding_window")?,
            tie_word_embeddings: json.get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads GGUF metadata with llama.cpp's `phi3` keys (GGUF_PHI3.md §3).
    pub fn from_gguf(gguf: &GgufFile) -> Result<ModelConfig> {
        let path = gguf.path.as_path();
        let arch = gguf.architecture().unwrap_or("");
        if arch != "phi3" {
            let why = match arch {
                "phimoe" => "Phi-3.5-MoE is not supported yet",
                "" => "general.architecture is missing",
                _ => "phi3 runs GGUF files with general.architecture = \"phi3\"",
            };
            return Err(ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: arch.to_string(),
                why: why.into(),
            });
        }
        let r = GgufReader { gguf, path, arch };
        let hidden_size = r.usize("embedding_length")?;
        let num_heads = r.usize("attention.head_count")?;
        let num_kv_heads = r.opt_usize("attention.head_count_kv")?.unwrap_or(num_heads);
        let head_dim = r
            .opt_usize("attention.key_length")?
            .unwrap_or(hidden_size / num_heads.max(1));
        let rotary_dim = r.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        let max_pos = r.usize("context_length")?;
        let orig = r.opt_usize("rope.scaling.original_context_length")?.unwrap_or(max_pos);
        let vocab_size = match gguf.info("token_embd.weight") {
            Some(info) if info.ne.len() == 2 => info.ne[1] as usize,
            Some(info) => {
                return Err(ModelError::TensorShape {
                    path: path.to_path_buf(),
                    name: info.name.clone(),
                    expected: vec![0, hidden_size],
                    found: info.shape(),
                })
            }
            None => {
                return Err(ModelError::MissingTensor {
                    path: path.to_path_buf(),
                    name: "token_embd.weight".into(),
                })
            }
        };
        let long_rope = match (
            gguf.tensor("rope_factors_long.weight"),
            gguf.tensor("rope_factors_short.weight"),
        ) {
            (None, None) => None,
            (Some(long), Some(short)) => {
                let to_vec = |t: phi3_formats::Tensor| {
                    t.to_f32_vec().ok_or_else(|| ModelError::UnsupportedDType {
                        path: path.to_path_buf(),
                        name: t.name.clone(),
                        dtype: t.dtype.to_string(),
                    })
                };
                let attention_factor = match r.opt_f64("rope.scaling.attn_factor")? {
                    Some(m) => m as f32,
                    None => default_attention_factor(max_pos, orig),
                };
                Some(LongRope {
                    type_name: "longrope".into(),
                    short_factor: to_vec(short)?,
                    long_factor: to_vec(long)?,
                    attention_factor,
                })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ModelError::MissingTensor {
                    path: path.to_path_buf(),
                    name: "rope_factors_long.weight and rope_factors_short.weight (only one is present)".into(),
                })
            }
        };
        let cfg = ModelConfig {
            architecture: Architecture::Phi3,
            name: gguf.get("general.name").and_then(Value::as_str).map(str::to_string),
            vocab_size,
            hidden_size,
            intermediate_size: r.usize("feed_forward_length")?,
            num_layers: r.usize("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rotary_dim,
            rms_norm_eps: r.f64("attention.layer_norm_rms_epsilon")? as f32,
            rope_theta: r.opt_f64("rope.freq_base")?.unwrap_or(10000.0) as f32,
            long_rope,
            max_position_embeddings: max_pos,
            original_max_position_embeddings: orig,
            // 0 means "no window" in llama.cpp's converter
            sliding_window: r.opt_usize("attention.sliding_window")?.filter(|&w| w > 0),
            tie_word_embeddings: gguf.info("output.weight").is_none(),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks that the numbers are consistent with each other.
    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, why: String| ModelError::Config {
            path: path.to_path_buf(),
            field: field.into(),
            why,
        };
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(bad(field, "must be positive".into()));
            }
        }
        // generous upper bounds that keep size arithmetic far from overflow
        for (field, v, max) in [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("hidden_size", self.hidden_size, 1 << 18),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("num_hidden_layers", self.num_layers, 1 << 12),
            ("num_attention_heads", self.num_heads, 1 << 12),
            ("max_position_embeddings", self.max_position_embeddings, 1 << 24),
            ("head_dim", self.head_dim, 1 << 14),
            ("num_attention_heads", self.num_heads * self.head_dim, 1 << 20),
        ] {
            if v > max {
                return Err(bad(field, format!("{v} is implausibly large")));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{} query heads cannot be grouped over {} KV heads",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if self.rotary_dim == 0 || !self.rotary_dim.is_multiple_of(2) || self.rotary_dim > self.head_dim {
            return Err(bad(
                "partial_rotary_factor",
                format!(
                    "rotary dimension {} must be even and at most the head dimension {}",
                    self.rotary_dim, self.head_dim
                ),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(bad("rms_norm_eps", "must be a non-negative number".into()));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(bad("rope_theta", "must be a number above 1".into()));
        }
        if self.sliding_window == Some(0) {
            return Err(bad("sliding_window", "must be positive".into()));
        }
        if let Some(lr) = &self.long_rope {
            for (field, f) in [("short_factor", &lr.short_factor), ("long_factor", &lr.long_factor)] {
                if f.len() != self.rotary_dim / 2 {
                    return Err(bad(
                        &format!("rope_scaling.{field}"),
                        format!(
                            "has {} values, the rotary dimension {} needs {}",
                            f.len(),
                            self.rotary_dim,
                            self.rotary_dim / 2
                        ),
                    ));
                }
                if f.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                    return Err(bad(
                        &format!("rope_scaling.{field}"),
                        "values must be positive numbers".into(),
                    ));
                }
            }
            if !(lr.attention_factor.is_finite() && lr.attention_factor > 0.0) {
                return Err(bad("rope_scaling.attention_factor", "must be positive".into()));
            }
            if self.original_max_position_embeddings == 0 {
                return Err(bad("original_max_position_embeddings", "must be positive".into()));
            }
        }
        Ok(())
    }
}

/// m = sqrt(1 + ln(s) / ln(original)) with s = max / original, 1 when s ≤ 1
/// (PHI3_FAMILY.md §3.1; computed in f64 as Python does, then rounded).
pub fn default_attention_factor(max_pos: usize, original: usize) -> f32 {
    let scale = max_pos as f64 / original as f64;
    if scale <= 1.0 || original <= 1 {
        1.0
    } else {
        (1.0 + scale.ln() / (original as f64).ln()).sqrt() as f32
    }
}

fn parse_hf_long_rope(r: &JsonReader, s: &Json, rotary_dim: usize, max_pos: usize, orig: usize) -> Result<LongRope> {
    let ty = s
        .get("type")
        .or_else(|| s.get("rope_type"))
        .and_then(Json::as_str)
        .ok_or_else(|| r.bad("rope_scaling.type", "missing"))?;
    if ty != "su" && ty != "longrope" {
        return Err(r.bad(
            "rope_scaling.type",
            &format!("{ty:?} is not supported (expected \"longrope\" or \"su\")"),
        ));
    }
    let factors = |key: &str| -> Result<Vec<f32>> {
        let arr = s
            .get(key)
            .and_then(Json::as_array)
            .ok_or_else(|| r.bad(&format!("rope_scaling.{key}"), "missing or not a list"))?;
        arr.iter()
            .map(|v| {
                v.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| r.bad(&format!("rope_scaling.{key}"), "holds a value that is not a number"))
            })
            .collect()
    };
    let attention_factor = match s.get("attention_factor").and_then(Json::as_f64) {
        Some(m) => m as f32,
        None => default_attention_factor(max_pos, orig),
    };
    let _ = rotary_dim; // lengths are checked in validate()
    Ok(LongRope {
        type_name: ty.to_string(),
        short_factor: factors("short_factor")?,
        long_factor: factors("long_factor")?,
        attention_factor,
    })
}

struct JsonReader<'a> {
    json: &'a Json,
    path: &'a Path,
}

impl JsonReader<'_> {
    fn bad(&self, field: &str, why: &str) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            field: field.into(),
            why: why.into(),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.json.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.bad(key, "must be a non-negative integer")),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.bad(key, "missing"))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.json.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad(key, "must be a number")),
        }
    }
}

struct GgufReader<'a> {
    gguf: &'a GgufFile,
    path: &'a Path,
    arch: &'a str,
}

impl GgufReader<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn bad(&self, k: &str, why: &str) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            field: self.key(k),
            why: why.into(),
        }
    }

    fn opt_usize(&self, k: &str) -> Result<Option<usize>> {
        match self.gguf.get(&self.key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.bad(k, "must be a non-negative integer")),
        }
    }

    fn usize(&self, k: &str) -> Result<usize> {
        self.opt_usize(k)?.ok_or_else(|| self.bad(k, "missing"))
    }

    fn opt_f64(&self, k: &str) -> Result<Option<f64>> {
        match self.gguf.get(&self.key(k)) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad(k, "must be a number")),
        }
    }

    fn f64(&self, k: &str) -> Result<f64> {
        self.opt_f64(k)?.ok_or_else(|| self.bad(k, "missing"))
    }
}
