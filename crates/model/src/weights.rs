//! Binds a model file's tensors to the typed weights of the forward pass.
//! GGUF and Hugging Face names map to the same struct (DESIGN.md principle 3).

use std::path::Path;
use std::sync::Arc;

use half::{bf16, f16};
use phi3_formats::{DType, GgufFile, HfFolder, Tensor};
use phi3_kernels::quant::{q4_0_panels, KPanels, QuantKind};
use phi3_kernels::WeightRef;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// A weight matrix `[rows, cols]` (PyTorch order) used as `y = x · Wᵀ`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub rows: usize,
    pub cols: usize,
    pub tensor: Tensor,
    /// The Q4_0, Q4_K, Q5_K or Q6_K rows (as `tensor.dtype` says) repacked into panels
    /// of 16 ([`Linear::repack`]), which the products then read instead of
    /// `tensor`.
    pub panels: Option<Arc<PanelMemory>>,
}

/// Anonymous memory holding repacked weights, asked for in huge pages
/// (Linux `MADV_HUGEPAGE`, where transparent huge pages are on): 512× fewer
/// page faults while packing and fewer TLB misses while the products
/// stream the weights. Page-aligned, so every panel starts on a cache line.
pub struct PanelMemory(memmap2::MmapMut);

impl PanelMemory {
    fn new(len: usize) -> std::io::Result<PanelMemory> {
        let map = memmap2::MmapMut::map_anon(len)?;
        #[cfg(target_os = "linux")]
        {
            // only a hint: without huge pages the memory works the same
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Ok(PanelMemory(map))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for PanelMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PanelMemory({} bytes)", self.0.len())
    }
}

/// What [`Linear::repack`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repacked {
    /// Held as panels; every block scale was found finite on the way.
    Panels,
    /// Left in the file's layout (not Q4_0, another CPU's kernels, a shape
    /// panels cannot hold, or no memory for them); scales not checked.
    Unchanged,
    /// A block scale is NaN or infinite; the file's layout is kept.
    NonFiniteScales,
}

impl Linear {
    pub fn new(rows: usize, cols: usize, tensor: Tensor) -> Linear {
        Linear {
            rows,
            cols,
            tensor,
            panels: None,
        }
    }

    /// Repacks a Q4_0, Q4_K, Q5_K or Q6_K matrix into panels of 16 rows
    /// where this CPU's kernels read them (`phi3_kernels::packs_q4_0`,
    /// `packs_k_quants`; the layouts are explained in
    /// `phi3_kernels::quant::q4_0_panels`, `q4_k_panels` and
    /// `q6_k_panels`), then drops the file's pages of it from memory, so the
    /// weights are held once. Other matrices, and shapes panels cannot
    /// hold, stay as they are. The scales are checked on the way (see
    /// [`Repacked`]).
    pub fn repack(&mut self) -> Repacked {
        let (rows, cols) = (self.rows, self.cols);
        let kind = quant_kind(self.tensor.dtype);
        let q4_0 = kind == Some(QuantKind::Q4_0) && phi3_kernels::packs_q4_0() && q4_0_panels::can_pack(rows, cols);
        let k_panels = kind
            .and_then(KPanels::of)
            .filter(|_| phi3_kernels::packs_k_quants() && KPanels::can_pack(rows, cols));
        let bytes = match k_panels {
            Some(quant) => quant.packed_bytes(rows, cols),
            None if q4_0 => q4_0_panels::packed_bytes(rows, cols),
            None => return Repacked::Unchanged,
        };
        if self.panels.is_some() {
            return Repacked::Unchanged;
        }
        // without the memory, the file's layout serves as well (if slower)
        let Ok(mut panels) = PanelMemory::new(bytes) else {
            return Repacked::Unchanged;
        };
        let w = self.tensor.bytes();
        let finite = match k_panels {
            Some(quant) => quant.pack(w, rows, cols, &mut panels.0),
            None => q4_0_panels::pack(w, rows, cols, &mut panels.0),
        };
        if !finite {
            return Repacked::NonFiniteScales;
        }
        self.tensor.release_pages();
        self.panels = Some(Arc::new(panels));
        Repacked::Panels
    }

    /// The elements as a typed slice over the file mapping (or the panels).
    pub fn weight_ref(&self) -> WeightRef<'_> {
        if let Some(panels) = &self.panels {
            let (k, bytes) = (self.cols, panels.as_slice());
            return match quant_kind(self.tensor.dtype).and_then(KPanels::of) {
                Some(quant) => WeightRef::KPanels { quant, k, bytes },
                None => WeightRef::Q4_0Panels { k, bytes },
            };
        }
        let b = self.tensor.bytes();
        // Tensor guarantees alignment for its dtype; dtypes were checked at bind time.
        match self.tensor.dtype {
            DType::F32 => WeightRef::F32(bytemuck::cast_slice::<u8, f32>(b)),
            DType::F16 => WeightRef::F16(bytemuck::cast_slice::<u8, f16>(b)),
            DType::BF16 => WeightRef::BF16(bytemuck::cast_slice::<u8, bf16>(b)),
            other => WeightRef::Quant(quant_kind(other).expect("dtype checked when binding"), b),
        }
    }

    /// `out[t, rows] = x[t, cols] · Wᵀ`.
    pub fn forward(&self, x: &[f32], t: usize, out: &mut [f32]) {
        phi3_kernels::matmul(self.weight_ref(), self.rows, self.cols, x, t, out);
    }

    /// Row `r` as f32 (used for embedding lookups).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let range = r * self.cols..(r + 1) * self.cols;
        match self.weight_ref() {
            WeightRef::F32(w) => out.copy_from_slice(&w[range]),
            WeightRef::F16(w) => phi3_kernels::dot::f16_to_f32(&w[range], out),
            WeightRef::BF16(w) => phi3_kernels::dot::bf16_to_f32(&w[range], out),
            WeightRef::Quant(kind, b) => {
                let rb = kind.row_bytes(self.cols);
                kind.dequantize(&b[r * rb..(r + 1) * rb], out);
            }
            WeightRef::Q4_0Panels { k, bytes } => q4_0_panels::dequantize_row(bytes, k, r, out),
            WeightRef::KPanels { quant, k, bytes } => quant.dequantize_row(bytes, k, r, out),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub qkv: Linear,
    pub o_proj: Linear,
    pub ffn_norm: Vec<f32>,
    pub gate_up: Linear,
    pub down: Linear,
}

#[derive(Debug, Clone)]
pub struct Weights {
    /// `[vocab, hidden]`.
    pub embed: Linear,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// `[vocab, hidden]`; the embedding itself when tied.
    pub lm_head: Linear,
}

/// The tensor names of one file format.
pub struct NameMap {
    pub embed: &'static str,
    pub final_norm: &'static str,
    pub lm_head: &'static str,
    /// Per-layer names with `{}` for the layer index.
    pub attn_norm: &'static str,
    pub qkv: &'static str,
    pub o_proj: &'static str,
    pub ffn_norm: &'static str,
    pub gate_up: &'static str,
    pub down: &'static str,
}

/// Hugging Face `Phi3ForCausalLM` names (PHI3_FAMILY.md §2).
pub const HF_NAMES: NameMap = NameMap {
    embed: "model.embed_tokens.weight",
    final_norm: "model.norm.weight",
    lm_head: "lm_head.weight",
    attn_norm: "model.layers.{}.input_layernorm.weight",
    qkv: "model.layers.{}.self_attn.qkv_proj.weight",
    o_proj: "model.layers.{}.self_attn.o_proj.weight",
    ffn_norm: "model.layers.{}.post_attention_layernorm.weight",
    gate_up: "model.layers.{}.mlp.gate_up_proj.weight",
    down: "model.layers.{}.mlp.down_proj.weight",
};

/// llama.cpp `phi3` names (GGUF_PHI3.md §4.1).
pub const GGUF_NAMES: NameMap = NameMap {
    embed: "token_embd.weight",
    final_norm: "output_norm.weight",
    lm_head: "output.weight",
    attn_norm: "blk.{}.attn_norm.weight",
    qkv: "blk.{}.attn_qkv.weight",
    o_proj: "blk.{}.attn_output.weight",
    ffn_norm: "blk.{}.ffn_norm.weight",
    gate_up: "blk.{}.ffn_up.weight",
    down: "blk.{}.ffn_down.weight",
};

pub fn layer_name(pattern: &str, layer: usize) -> String {
    pattern.replace("{}", &layer.to_string())
}

/// Called with the bytes of each matrix once it is checked (for progress bars).
pub type Progress<'a> = &'a dyn Fn(u64);

/// How the weight matrices are held once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightLayout {
    /// Repacked where this CPU's kernels read another layout faster (Q4_0,
    /// Q4_K, Q5_K and Q6_K as panels of 16 rows, `Linear::repack`): for
    /// running the model.
    #[default]
    ForKernels,
    /// As the file stores them (only mapped): for reading the weights back,
    /// as `phi3 convert` does, without the memory and time of repacking.
    AsStored,
}

impl Weights {
    pub fn from_gguf(cfg: &ModelConfig, gguf: &GgufFile, layout: WeightLayout, progress: Progress) -> Result<Weights> {
        bind(cfg, &gguf.path, &GGUF_NAMES, |n| gguf.tensor(n), layout, progress)
    }

    pub fn from_hf(cfg: &ModelConfig, folder: &HfFolder, layout: WeightLayout, progress: Progress) -> Result<Weights> {
        bind(
            cfg,
            &folder.dir,
            &HF_NAMES,
            |n| folder.weights.tensor(n).cloned(),
            layout,
            progress,
        )
    }
}

fn bind(
    cfg: &ModelConfig,
    path: &Path,
    names: &NameMap,
    get: impl Fn(&str) -> Option<Tensor>,
    layout: WeightLayout,
    progress: Progress,
) -> Result<Weights> {
    let fetch = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let t = get(name).ok_or_else(|| ModelError::MissingTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
        })?;
        if t.shape != shape {
            return Err(ModelError::TensorShape {
                path: path.to_path_buf(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(t)
    };
    // `repack`: whether the matrix is used in products (so held as panels
    // where the kernels read them)
    let linear = |name: &str, rows: usize, cols: usize, repack: bool| -> Result<Linear> {
        let tensor = fetch(name, &[rows, cols])?;
        let kind = match tensor.dtype {
            DType::F32 | DType::F16 | DType::BF16 => None,
            other => Some(quant_kind(other).ok_or_else(|| ModelError::UnsupportedDType {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: other.to_string(),
            })?),
        };
        let bytes = tensor.bytes().len() as u64;
        let mut m = Linear::new(rows, cols, tensor);
        // a NaN or infinite block scale would poison every output it touches;
        // repacking checks the scales as it reads them (the weights are then
        // read once), otherwise they are checked here
        let scales_ok = match if repack { m.repack() } else { Repacked::Unchanged } {
            Repacked::Panels => true,
            Repacked::NonFiniteScales => false,
            Repacked::Unchanged => kind.is_none_or(|k| k.scales_finite(m.tensor.bytes())),
        };
        if !scales_ok {
            return Err(ModelError::BadQuantScales {
                path: path.to_path_buf(),
                name: name.to_string(),
            });
        }
        progress(bytes);
        Ok(m)
    };
    let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
        let t = fetch(name, &[len])?;
        t.to_f32_vec().ok_or_else(|| ModelError::UnsupportedDType {
            path: path.to_path_buf(),
            name: name.to_string(),
            dtype: t.dtype.to_string(),
        })
    };
    let h = cfg.hidden_size;
    // matrices used in products are repacked; the embedding only when it is
    // also the output matrix (tied): otherwise it is only read row by row
    let for_kernels = layout == WeightLayout::ForKernels;
    let embed = linear(names.embed, cfg.vocab_size, h, for_kernels && cfg.tie_word_embeddings)?;
    let matrix = |name: &str, rows: usize, cols: usize| linear(name, rows, cols, for_kernels);
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for l in 0..cfg.num_layers {
        let n = |p: &str| layer_name(p, l);
        layers.push(LayerWeights {
            attn_norm: vector(&n(names.attn_norm), h)?,
            qkv: matrix(&n(names.qkv), cfg.qkv_dim(), h)?,
            o_proj: matrix(&n(names.o_proj), h, cfg.num_heads * cfg.head_dim)?,
            ffn_norm: vector(&n(names.ffn_norm), h)?,
            gate_up: matrix(&n(names.gate_up), 2 * cfg.intermediate_size, h)?,
            down: matrix(&n(names.down), h, cfg.intermediate_size)?,
        });
    }
    let lm_head = if cfg.tie_word_embeddings {
        embed.clone()
    } else {
        matrix(names.lm_head, cfg.vocab_size, h)?
    };
    Ok(Weights {
        embed,
        layers,
        final_norm: vector(names.final_norm, h)?,
        lm_head,
    })
}

/// The kernels' block type for a file dtype, if phi3 computes with it.
pub fn quant_kind(dtype: DType) -> Option<QuantKind> {
    Some(match dtype {
        DType::Q4_0 => QuantKind::Q4_0,
        DType::Q4_1 => QuantKind::Q4_1,
        DType::Q5_0 => QuantKind::Q5_0,
        DType::Q5_1 => QuantKind::Q5_1,
        DType::Q8_0 => QuantKind::Q8_0,
        DType::Q2K => QuantKind::Q2K,
        DType::Q3K => QuantKind::Q3K,
        DType::Q4K => QuantKind::Q4K,
        DType::Q5K => QuantKind::Q5K,
        DType::Q6K => QuantKind::Q6K,
        _ => return None,
    })
}
