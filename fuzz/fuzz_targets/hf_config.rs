//! Any JSON given as config.json must give a validated config or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(cfg) = phi3_model::ModelConfig::from_hf_json(&json, "fuzz/config.json".as_ref()) {
            let _ = cfg.parameter_count();
            let _ = phi3_model::memory::estimate(&cfg, 0, cfg.max_position_embeddings, 1);
        }
    }
});
