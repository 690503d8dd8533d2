//! `phi3 inspect MODEL`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use phi3_model::memory::{estimate, human_bytes, kv_bytes_per_position, kv_positions};
use phi3_model::variant::variant_name;
use phi3_model::SourceFormat;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a Hugging Face folder (config.json + *.safetensors).
    model: PathBuf,
    /// Context length for the memory estimate (default: the model's maximum).
    #[arg(long)]
    ctx: Option<usize>,
    /// KV cache storage for the estimate: f16 (default), f32 or q8_0.
    #[arg(long, default_value = "f16")]
    kv_type: String,
    /// Also show the largest context that fits in this much memory (e.g. 3G).
    #[arg(long)]
    max_memory: Option<String>,
}

/// Appends a formatted line to the report.
macro_rules! line {
    ($r:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($r, $($arg)*);
    }};
}

pub fn main(args: Args) -> Result<()> {
    let mut r = String::new();
    report(&args, &mut r)?;
    crate::print_stdout(&r)
}

fn report(args: &Args, r: &mut String) -> Result<()> {
    // only the configuration and the tensors are reported: nothing to repack
    let model = crate::open_model_as(&args.model, phi3_model::WeightLayout::AsStored)?;
    let cfg = &model.config;
    let format = match model.format {
        SourceFormat::Gguf => "GGUF",
        SourceFormat::HuggingFace => "Hugging Face safetensors folder",
    };
    line!(r, "model:          {} ({format})", args.model.display());
    if let Some(name) = &cfg.name {
        line!(r, "name:           {name}");
    }
    line!(r, "architecture:   phi3 (Phi3ForCausalLM)");
    line!(r, "variant:        {}", variant_name(cfg));
    line!(
        r,
        "parameters:     {:.3} B ({})",
        cfg.parameter_count() as f64 / 1e9,
        cfg.parameter_count()
    );
    line!(
        r,
        "shape:          {} layers, hidden {}, FFN {}, vocab {}",
        cfg.num_layers,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size
    );
    line!(
        r,
        "attention:      {} query heads, {} KV heads (group {}), head dim {}",
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.group_size(),
        cfg.head_dim
    );
    line!(
        r,
        "rotary:         {} of {} dims per head, theta {}",
        cfg.rotary_dim,
        cfg.head_dim,
        cfg.rope_theta
    );
    match &cfg.long_rope {
        None => line!(r, "rope scaling:   none"),
        Some(lr) => line!(
            r,
            "rope scaling:   LongRoPE (\"{}\"), original context {}, attention factor {:.10}, {} short / {} long factors",
            lr.type_name,
            cfg.original_max_position_embeddings,
            lr.attention_factor,
            lr.short_factor.len(),
            lr.long_factor.len()
        ),
    }
    line!(r, "context length: {}", cfg.max_position_embeddings);
    match (cfg.sliding_window, cfg.attention_window()) {
        (_, Some(w)) => line!(
            r,
            "sliding window: {w} keys per query (KV cache holds {} positions)",
            w - 1
        ),
        (Some(w), None) => line!(r, "sliding window: {w} (not narrower than the context: no effect)"),
        (None, None) => line!(r, "sliding window: none"),
    }
    line!(
        r,
        "tied embedding: {}",
        if cfg.tie_word_embeddings { "yes" } else { "no" }
    );
    if !model.eos_token_ids.is_empty() {
        line!(r, "stop token ids: {:?}", model.eos_token_ids);
    }

    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut weight_bytes = 0u64;
    for (_, dtype, _, bytes) in &model.tensor_summary {
        let e = by_type.entry(dtype.to_string()).or_default();
        e.0 += 1;
        e.1 += *bytes as u64;
        weight_bytes += *bytes as u64;
    }
    line!(r, "tensors:        {} in all", model.tensor_summary.len());
    for (t, (n, b)) in &by_type {
        line!(r, "  {t:>6}: {n:>4} tensors, {}", human_bytes(*b));
    }

    let ctx = args.ctx.unwrap_or(cfg.max_position_embeddings);
    anyhow::ensure!(ctx > 0, "--ctx must be positive");
    let kv = crate::parse_kv_type(&args.kv_type)?;
    let est = estimate(cfg, weight_bytes, ctx, 512.min(ctx), kv);
    line!(r, "memory at context {ctx}:");
    line!(r, "  weights:  {} (memory-mapped)", human_bytes(est.weights));
    line!(
        r,
        "  KV cache: {} ({} positions × {} per position, {})",
        human_bytes(est.kv_cache),
        kv_positions(cfg, ctx),
        human_bytes(kv_bytes_per_position(cfg, kv)),
        kv.name()
    );
    line!(
        r,
        "  scratch:  {} (prefill batches of {})",
        human_bytes(est.scratch),
        512.min(ctx)
    );
    line!(r, "  total:    {}", human_bytes(est.total()));
    if let Some(limit) = &args.max_memory {
        let budget = phi3_model::memory::parse_size(limit)
            .ok_or_else(|| anyhow::anyhow!("--max-memory {limit}: expected a size such as 4G or 512M"))?;
        match phi3_model::memory::fit_context(cfg, weight_bytes, budget, 512, kv, 1) {
            Some((c, k)) => line!(
                r,
                "in {limit}: up to {c} tokens of context with a {} KV cache",
                k.name()
            ),
            None => line!(
                r,
                "in {limit}: does not fit (the weights alone take {})",
                human_bytes(weight_bytes)
            ),
        }
    }
    Ok(())
}
