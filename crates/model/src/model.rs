//! A loaded model: validated config plus bound weights, from either format.

use std::path::Path;

use phi3_formats::{DType, ModelFiles};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::{WeightLayout, Weights};

/// Where a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Gguf,
    HuggingFace,
}

pub struct Model {
    pub config: ModelConfig,
    pub weights: Weights,
    pub format: SourceFormat,
    /// Stop token ids from the model's files (generation_config.json
    /// `eos_token_id`, or GGUF eos/eot ids), in file order.
    pub eos_token_ids: Vec<u32>,
    /// Every tensor of the file: (name, dtype, shape, bytes), for `inspect`.
    pub tensor_summary: Vec<(String, DType, Vec<usize>, usize)>,
}

impl Model {
    /// Loads a GGUF file or a Hugging Face folder (memory-mapped).
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        Self::from_files(ModelFiles::open(path)?)
    }

    pub fn from_files(files: ModelFiles) -> Result<Model> {
        Self::from_files_with_progress(files, &|_| {})
    }

    /// Total bytes of the tensors in `files` (the `progress` callback of
    /// `from_files_with_progress` adds up to about this).
    pub fn tensor_bytes(files: &ModelFiles) -> u64 {
        match files {
            ModelFiles::Gguf(g) => g.tensors.iter().map(|t| t.size).sum(),
            ModelFiles::HuggingFace(h) => h.weights.tensors.values().map(|t| t.bytes().len() as u64).sum(),
        }
    }

    /// As `from_files`, reporting the bytes of each weight matrix once it
    /// has been checked (every quant block's scale is read).
    pub fn from_files_with_progress(files: ModelFiles, progress: &dyn Fn(u64)) -> Result<Model> {
        Self::load(files, WeightLayout::ForKernels, progress)
    }

    /// Loads `files` with the weight matrices held in `layout`, reporting
    /// progress as [`Model::from_files_with_progress`] does.
    pub fn load(files: ModelFiles, layout: WeightLayout, progress: &dyn Fn(u64)) -> Result<Model> {
        match files {
            ModelFiles::Gguf(g) => {
                let config = ModelConfig::from_gguf(&g)?;
                let weights = Weights::from_gguf(&config, &g, layout, progress)?;
                let mut eos = Vec::new();
                for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
                    if let Some(id) = g.get(key).and_then(|v| v.as_u64()) {
                        if !eos.contains(&(id as u32)) {
                            eos.push(id as u32);
                        }
                    }
                }
                let tensor_summary = g
                    .all_tensors()
                    .into_iter()
                    .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.bytes().len()))
                    .collect();
                Ok(Model {
                    config,
                    weights,
                    format: SourceFormat::Gguf,
                    eos_token_ids: eos,
                    tensor_summary,
                })
            }
            ModelFiles::HuggingFace(hf) => {
                let config = ModelConfig::from_hf_json(&hf.config, &hf.dir.join("config.json"))?;
                let weights = Weights::from_hf(&config, &hf, layout, progress)?;
                let eos_value = hf
                    .generation_config
                    .as_ref()
                    .and_then(|g| g.get("eos_token_id"))
                    .or_else(|| hf.config.get("eos_token_id"));
                let eos_token_ids = match eos_value {
                    Some(serde_json::Value::Array(a)) => {
                        a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect()
                    }
                    Some(v) => v.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
                    None => Vec::new(),
                };
                let tensor_summary = hf
                    .weights
                    .tensors
                    .values()
                    .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.bytes().len()))
                    .collect();
                Ok(Model {
                    config,
                    weights,
                    format: SourceFormat::HuggingFace,
                    eos_token_ids,
                    tensor_summary,
                })
            }
        }
    }

    /// KV cache slots a session of `context` tokens needs (W−1 for windowed
    /// models: see `kv_cache`).
    pub fn kv_capacity(&self, context: usize) -> usize {
        crate::memory::kv_positions(&self.config, context)
    }
}
