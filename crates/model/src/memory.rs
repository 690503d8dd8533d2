//! How much memory a model and a context will take, computed before loading.

use crate::config::ModelConfig;
use crate::session::KvType;

/// Bytes of each part, for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Weight bytes (memory-mapped from the file).
    pub weights: u64,
    /// KV cache for the requested context.
    pub kv_cache: u64,
    /// Activation buffers for a prefill batch of `batch` tokens.
    pub scratch: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.scratch
    }
}

/// KV cache positions a session of `context` tokens holds.
pub fn kv_positions(cfg: &ModelConfig, context: usize) -> usize {
    match cfg.attention_window() {
        Some(w) => context.min(w.saturating_sub(1)).max(1),
        None => context.max(1),
    }
}

/// Bytes of KV cache per held position (keys and values, all layers).
pub fn kv_bytes_per_position(cfg: &ModelConfig, kv: KvType) -> u64 {
    (2 * cfg.num_layers * kv.bytes(cfg.num_kv_heads * cfg.head_dim)) as u64
}

/// Estimate for `context` tokens processed in prefill batches of `batch`.
pub fn estimate(cfg: &ModelConfig, weight_bytes: u64, context: usize, batch: usize, kv: KvType) -> MemoryEstimate {
    let kv_cache = kv_positions(cfg, context) as u64 * kv_bytes_per_position(cfg, kv);
    let per_token =
        3 * cfg.hidden_size + cfg.qkv_dim() + cfg.num_heads * cfg.head_dim + 3 * cfg.intermediate_size + cfg.vocab_size;
    let scratch = (batch as u64 * per_token as u64 + cfg.vocab_size.max(cfg.intermediate_size) as u64) * 4;
    MemoryEstimate {
        weights: weight_bytes,
        kv_cache,
        scratch,
    }
}

/// Formats a byte count for people (binary units).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
