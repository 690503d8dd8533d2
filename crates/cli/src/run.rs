//! `phi3 run`: generate from token ids (text in and out arrive with the tokenizer).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use phi3_model::{Logits, Model, RopePolicy, Session, SessionOptions};

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a Hugging Face folder.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Prompt as comma-separated token ids, e.g. 1,32010,450.
    #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
    prompt_ids: Vec<u32>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 32)]
    max_tokens: usize,
    /// Pick the most likely token at each step (the only decoding mode until
    /// the sampler lands).
    #[arg(long)]
    greedy: bool,
    /// Print generated token ids (comma-separated) on stdout.
    #[arg(long)]
    print_ids: bool,
    /// Keep generating after a stop token.
    #[arg(long)]
    ignore_eos: bool,
    /// Context length of the session (default: prompt + max tokens, capped
    /// at the model's maximum).
    #[arg(long)]
    ctx: Option<usize>,
    /// LongRoPE factor choice: "reference" (short factors until the sequence
    /// passes the original context, then re-prefill with long factors, as
    /// transformers) or "fixed" (one table for the session from --ctx, as llama.cpp).
    #[arg(long, default_value = "reference", value_parser = ["reference", "fixed"])]
    rope_policy: String,
    /// Threads (default: physical cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// KV cache storage: f16 (default), f32 (exact) or q8_0 (a quarter of f32).
    #[arg(long, default_value = "f16")]
    kv_type: String,
}

pub fn main(args: Args) -> Result<()> {
    if !args.greedy {
        bail!("only greedy decoding is available so far: pass --greedy");
    }
    if !args.print_ids {
        bail!("text output needs the tokenizer, which is not in this build yet: pass --print-ids");
    }
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        phi3_kernels::pool::set_global_threads(t);
    }
    let load_start = Instant::now();
    let model = Model::open(&args.model)?;
    let load_time = load_start.elapsed();
    let cfg = &model.config;
    let needed = args.prompt_ids.len() + args.max_tokens;
    let context = args.ctx.unwrap_or(needed.min(cfg.max_position_embeddings));
    if context > cfg.max_position_embeddings {
        bail!(
            "--ctx {context} is larger than the model's context length {}",
            cfg.max_position_embeddings
        );
    }
    let rope_policy = match args.rope_policy.as_str() {
        "fixed" => RopePolicy::FixedByContext,
        _ => RopePolicy::Reference,
    };
    let kv_type = crate::parse_kv_type(&args.kv_type)?;
    let mut session = Session::new(
        &model,
        SessionOptions {
            context,
            rope_policy,
            kv_type,
        },
    )?;

    let t0 = Instant::now();
    let mut logits = session
        .feed(&args.prompt_ids, Logits::Last)
        .context("processing the prompt")?;
    let prompt_time = t0.elapsed();

    let t1 = Instant::now();
    let mut generated = Vec::new();
    let mut stdout = std::io::stdout().lock();
    let mut stop_reason = "max tokens";
    while generated.len() < args.max_tokens {
        let next = argmax(&logits);
        if !args.ignore_eos && model.eos_token_ids.contains(&next) {
            stop_reason = "stop token";
            break;
        }
        write!(stdout, "{}{next}", if generated.is_empty() { "" } else { "," })?;
        stdout.flush()?;
        generated.push(next);
        if generated.len() == args.max_tokens {
            break;
        }
        if session.tokens().len() == context {
            stop_reason = "context full";
            break;
        }
        logits = session.feed(&[next], Logits::Last)?;
    }
    writeln!(stdout)?;
    let gen_time = t1.elapsed();
    eprintln!(
        "load {:.2}s | prompt {} tokens, {:.1} tok/s | generated {} tokens, {:.1} tok/s | stopped: {stop_reason}{}",
        load_time.as_secs_f64(),
        args.prompt_ids.len(),
        args.prompt_ids.len() as f64 / prompt_time.as_secs_f64().max(1e-9),
        generated.len(),
        generated.len() as f64 / gen_time.as_secs_f64().max(1e-9),
        if session.reprefills > 0 {
            format!(" | LongRoPE switch: re-prefilled {} time(s)", session.reprefills)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}
