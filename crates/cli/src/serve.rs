//! `phi3 serve`: the OpenAI-compatible HTTP server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use phi3_model::memory::{available_memory, fit_sessions, human_bytes, parse_size, ContextLimits};
use phi3_model::{RopePolicy, SessionOptions};
use phi3_runtime::SchedulerConfig;
use phi3_server::{AppState, ServerConfig};

#[derive(Parser)]
pub struct Args {
    /// A GGUF file, a Hugging Face folder, or a hub file (owner/repo/file.gguf).
    /// Default: Phi-3-mini-4k-instruct, 4-bit GGUF.
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// Address to listen on. The default serves this machine only; use
    /// 0.0.0.0 (with --api-key) to serve the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` (default: the PHI3_API_KEY variable, if set).
    #[arg(long)]
    api_key: Option<String>,
    /// Requests generated at once (each has its own KV cache).
    #[arg(long, short = 'p', default_value_t = 4)]
    parallel: usize,
    /// Requests that may wait for a free slot; more get 503.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Context of each slot in tokens (default: the largest that fits in
    /// --max-memory or 80% of the memory available, at most 4096 and the model's).
    #[arg(long)]
    ctx: Option<usize>,
    /// Memory the server may use (weights + every slot's KV cache + buffers), e.g. 6G.
    #[arg(long)]
    max_memory: Option<String>,
    /// KV cache storage: f16 (default), f32 or q8_0.
    #[arg(long, default_value = "f16")]
    kv_type: String,
    /// Largest max_tokens a request may ask for (also the limit of requests that give none).
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
    /// Largest request body, e.g. 1M.
    #[arg(long, default_value = "4M")]
    max_body: String,
    /// Prompt tokens processed per step, shared by the slots that are reading prompts.
    #[arg(long, default_value_t = 512)]
    batch_tokens: usize,
    /// Milliseconds an idle server waits, once a request arrives, for more
    /// to start with it (requests sent together then read their prompts in
    /// one step); 0 starts at once.
    #[arg(long, default_value_t = 20)]
    batch_wait_ms: u64,
    /// The model name clients see (default: the file or folder name).
    #[arg(long)]
    alias: Option<String>,
    /// Seconds running requests may go on after SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    #[arg(long, short = 't')]
    threads: Option<usize>,
}

/// Longest `--batch-wait-ms`: a lone request waits this long before it starts.
const MAX_BATCH_WAIT_MS: u64 = 10_000;

pub fn main(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        phi3_kernels::pool::set_global_threads(t);
    }
    if args.parallel == 0 || args.max_tokens == 0 || args.batch_tokens == 0 {
        bail!("--parallel, --max-tokens and --batch-tokens must be at least 1");
    }
    if args.batch_wait_ms > MAX_BATCH_WAIT_MS {
        bail!(
            "--batch-wait-ms {} is too long: at most {MAX_BATCH_WAIT_MS} (a few tens of milliseconds gather requests sent together)",
            args.batch_wait_ms
        );
    }
    let max_body = parse_size(&args.max_body)
        .with_context(|| format!("--max-body {}: expected a size such as 1M", args.max_body))?;
    let host: std::net::IpAddr = args
        .host
        .parse()
        .with_context(|| format!("--host {}: expected an IP address such as 127.0.0.1", args.host))?;
    let api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("PHI3_API_KEY").ok())
        .filter(|k| !k.is_empty());
    if !host.is_loopback() && api_key.is_none() {
        eprintln!("warning: serving {host} without --api-key: anyone who can reach it may use it");
    }

    let model_path = crate::hub::resolve(args.model.as_deref())?;
    let crate::chat::ChatModel {
        model,
        tokenizer,
        template,
        stop_ids,
    } = crate::chat::ChatModel::open(&model_path)?;

    let (context, kv_type) = slot_context(&model, &args)?;
    let model_id = args.alias.clone().unwrap_or_else(|| {
        let name = model_path.file_stem().unwrap_or(model_path.as_os_str());
        name.to_string_lossy().into_owned()
    });
    let config = ServerConfig {
        addr: std::net::SocketAddr::new(host, args.port),
        api_key,
        model_id: model_id.clone(),
        max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
        max_tokens_cap: args.max_tokens,
        scheduler: SchedulerConfig {
            slots: args.parallel,
            queue: args.queue,
            session: SessionOptions {
                context,
                rope_policy: RopePolicy::Reference,
                kv_type,
            },
            step_tokens: args.batch_tokens,
            gather: std::time::Duration::from_millis(args.batch_wait_ms),
        },
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
    };
    let state = AppState::new(config, Arc::new(model), Arc::new(tokenizer), template, stop_ids)?;
    let slots = args.parallel;
    phi3_server::serve_blocking(state, phi3_server::shutdown_signal(), |addr| {
        eprintln!(
            "phi3 serve: {model_id}, {slots} slots × {context} tokens (KV cache {})",
            kv_type.name()
        );
        eprintln!("listening on http://{addr}");
    })?;
    eprintln!("phi3 serve: stopped");
    Ok(())
}

/// Each slot's context and KV type: as asked, or the largest that fits.
fn slot_context(model: &phi3_model::Model, args: &Args) -> Result<(usize, phi3_model::KvType)> {
    let cfg = &model.config;
    let kv = crate::parse_kv_type(&args.kv_type)?;
    let weights: u64 = model.tensor_summary.iter().map(|t| t.3 as u64).sum();
    let budget = match &args.max_memory {
        Some(l) => parse_size(l).with_context(|| format!("--max-memory {l}: expected a size such as 6G"))?,
        None if args.ctx.is_some() => u64::MAX / 4,
        None => available_memory().map_or(u64::MAX / 4, |a| a / 10 * 8),
    };
    let batch = args.batch_tokens + args.parallel;
    let (min, max) = match args.ctx {
        Some(c) if c == 0 || c > cfg.max_position_embeddings => {
            bail!(
                "--ctx {c}: must be between 1 and the model's {}",
                cfg.max_position_embeddings
            )
        }
        Some(c) => (c, c),
        None => (256.min(cfg.max_position_embeddings), 4096),
    };
    let limits = ContextLimits {
        sessions: args.parallel,
        min,
        max,
    };
    fit_sessions(cfg, weights, budget, batch, kv, limits).with_context(|| {
        format!(
            "{} slots of {min} tokens do not fit in {} with these weights ({}); use fewer --parallel slots or a smaller --ctx",
            args.parallel,
            human_bytes(budget),
            human_bytes(weights)
        )
    })
}
