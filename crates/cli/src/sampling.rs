//! The sampling flags `run` and `chat` share.

use anyhow::Result;
use phi3_runtime::{Sampler, SamplerConfig};

#[derive(clap::Args, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temp: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the best.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Repetition penalty (1: none).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Random seed (default: from the clock; printed with the speed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pick the most likely token at each step (same as --temp 0).
    #[arg(long)]
    pub greedy: bool,
}

impl SamplingArgs {
    /// The sampler these flags describe (invalid values are refused by name).
    pub fn sampler(&self) -> Result<(Sampler, SamplerConfig)> {
        let cfg = SamplerConfig {
            temperature: if self.greedy { 0.0 } else { self.temp },
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            }),
            ..SamplerConfig::default()
        };
        let sampler = Sampler::new(cfg.clone()).map_err(|e| anyhow::anyhow!("--{e}"))?;
        Ok((sampler, cfg))
    }
}
