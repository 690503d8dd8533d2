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
    // activations per prefill token; logits for the last position only
    let per_token = 3 * cfg.hidden_size + cfg.qkv_dim() + cfg.num_heads * cfg.head_dim + 3 * cfg.intermediate_size;
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

/// The largest context (and the KV type that allows it) whose estimate fits
/// in `budget` bytes, trying `preferred` first and then Q8_0 (half of f16's
/// cache) where the head size allows it. `None` if not even `min_context`
/// tokens fit.
pub fn fit_context(
    cfg: &ModelConfig,
    weight_bytes: u64,
    budget: u64,
    batch: usize,
    preferred: KvType,
    min_context: usize,
) -> Option<(usize, KvType)> {
    let limits = ContextLimits {
        sessions: 1,
        min: min_context,
        max: cfg.max_position_embeddings,
    };
    fit_sessions(cfg, weight_bytes, budget, batch, preferred, limits)
}

/// How many sessions share the weights and the bounds of each one's context.
#[derive(Debug, Clone, Copy)]
pub struct ContextLimits {
    pub sessions: usize,
    pub min: usize,
    pub max: usize,
}

/// As [`fit_context`], for `limits.sessions` sessions (a server's slots) of
/// the same context, each with its own KV cache, sharing the weights and
/// one batch's buffers.
pub fn fit_sessions(
    cfg: &ModelConfig,
    weight_bytes: u64,
    budget: u64,
    batch: usize,
    preferred: KvType,
    limits: ContextLimits,
) -> Option<(usize, KvType)> {
    let mut kinds = vec![preferred];
    if preferred != KvType::Q8_0 && cfg.head_dim.is_multiple_of(32) {
        kinds.push(KvType::Q8_0);
    }
    let max = limits.max.clamp(1, cfg.max_position_embeddings);
    let min = limits.min.clamp(1, max);
    for kv in kinds {
        let fits = |ctx: usize| {
            let e = estimate(cfg, weight_bytes, ctx, batch.min(ctx), kv);
            e.weights + e.scratch + e.kv_cache * limits.sessions.max(1) as u64 <= budget
        };
        if !fits(min) {
            continue;
        }
        // the estimate grows with the context: binary search the largest that fits
        let (mut lo, mut hi) = (min, max);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return Some((lo, kv));
    }
    None
}

/// Memory the system can give without swapping (`MemAvailable`), if known.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Parses sizes such as `4G`, `3.5GiB`, `512M`, `2048MB` or a byte count.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.trim_end_matches("IB").trim_end_matches('B');
    let (num, unit) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1u64 << 10),
        'M' => (&t[..t.len() - 1], 1 << 20),
        'G' => (&t[..t.len() - 1], 1 << 30),
        'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then_some((v * unit as f64) as u64)
}
