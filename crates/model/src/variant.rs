//! Names the family member a config describes, for `phi3 inspect`.

use crate::config::ModelConfig;

/// Best guess of the published model this config's shapes belong to.
pub fn variant_name(cfg: &ModelConfig) -> String {
    let long = cfg.long_rope.is_some();
    let first_long = cfg.long_rope.as_ref().and_then(|l| l.long_factor.first().copied());
    let shape = (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads);
    let name = match shape {
        (3072, 32, 32, 32) if !long => "Phi-3-mini-4k",
        (3072, 32, 32, 32) => match first_long {
            // first long factor of each published generation (PHI3_FAMILY.md §3.3)
            Some(f) if (f - 1.03).abs() < 1e-3 => "Phi-3-mini-128k (April 2024 factors)",
            Some(f) if (f - 1.07).abs() < 1e-3 => "Phi-3-mini-128k (July 2024 factors)",
            Some(f) if (f - 1.08).abs() < 1e-3 => "Phi-3.5-mini",
            _ => "Phi-3-mini-128k or Phi-3.5-mini",
        },
        (5120, 40, 40, 10) if !long => "Phi-3-medium-4k",
        (5120, 40, 40, 10) => "Phi-3-medium-128k",
        (3072, 32, 24, 8) if cfg.rotary_dim < cfg.head_dim => "Phi-4-mini",
        _ => "",
    };
    if name.is_empty() {
        format!(
            "Phi-3 architecture, custom shape ({} layers, hidden {})",
            cfg.num_layers, cfg.hidden_size
        )
    } else {
        name.to_string()
    }
}
