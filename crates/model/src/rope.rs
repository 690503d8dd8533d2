//! Rotary position embeddings, "NeoX" half-split layout (PHI3_FAMILY.md §2.2.3),
//! with LongRoPE's short and long frequency tables (§3).

use crate::config::ModelConfig;

/// Which LongRoPE factor table a computation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeTable {
    /// Plain RoPE or LongRoPE's short factors.
    Short,
    /// LongRoPE's long factors.
    Long,
}

/// Inverse frequencies and magnitude for one table.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// m, multiplied into cos and sin (1 without LongRoPE).
    scale: f32,
    rotary_dim: usize,
}

impl Rope {
    /// The table `which` for `cfg` (short = plain RoPE when there is no LongRoPE).
    pub fn new(cfg: &ModelConfig, which: RopeTable) -> Rope {
        let r = cfg.rotary_dim;
        let (factors, scale) = match (&cfg.long_rope, which) {
            (None, _) => (None, 1.0),
            (Some(lr), RopeTable::Short) => (Some(&lr.short_factor), lr.attention_factor),
            (Some(lr), RopeTable::Long) => (Some(&lr.long_factor), lr.attention_factor),
        };
        // As transformers computes it, in f32: 1 / (f[i] · theta^(2i/R)).
        let inv_freq = (0..r / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / r as f32;
                let f = factors.map_or(1.0, |f| f[i]);
                1.0 / (f * cfg.rope_theta.powf(exponent))
            })
            .collect();
        Rope {
            inv_freq,
            scale,
            rotary_dim: r,
        }
    }

    /// cos and sin (already scaled by m) for position `pos`, `R/2` values each.
    pub fn cos_sin(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let angle = pos as f32 * f;
            cos[i] = angle.cos() * self.scale;
            sin[i] = angle.sin() * self.scale;
        }
    }

    /// Rotates the first R dims of one head in place; dims ≥ R are untouched.
    pub fn apply(&self, head: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = self.rotary_dim / 2;
        for i in 0..half {
            let a = head[i];
            let b = head[i + half];
            head[i] = a * cos[i] - b * sin[i];
            head[i + half] = b * cos[i] + a * sin[i];
        }
    }

    pub fn half_dim(&self) -> usize {
        self.rotary_dim / 2
    }
}
