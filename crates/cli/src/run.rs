//! `phi3 run`: one prompt, streamed to stdout; speed on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use phi3_formats::ModelFiles;
use phi3_model::{Logits, RopePolicy, Session, SessionOptions};
use phi3_runtime::{generate, FinishReason, GenerateOptions, Sampler};
use phi3_tokenizer::{ChatTemplate, EncodeOptions, Message, Tokenizer, Vocab};

#[derive(clap::Args)]
pub struct Args {
    /// The prompt text (or use --prompt-ids).
    #[arg(conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// A GGUF file, a Hugging Face folder, or a hub file (owner/repo/file.gguf,
    /// downloaded into the cache on first use). Default: Phi-3-mini-4k-instruct, 4-bit GGUF.
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// The prompt as comma-separated token ids, e.g. 1,32010,450 (no chat template).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    prompt_ids: Option<Vec<u32>>,
    /// A system message for the chat template.
    #[arg(long)]
    system: Option<String>,
    /// Feed the prompt text as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 256)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: crate::sampling::SamplingArgs,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Print generated token ids (comma-separated) instead of text.
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
    /// Memory the session may use (weights + KV cache + buffers), e.g. 3G:
    /// the KV cache falls back to q8_0 if f16 does not fit.
    #[arg(long)]
    max_memory: Option<String>,
    /// Save the session (tokens and KV cache) to FILE at the end, so a long
    /// prompt (a system prompt, a document) is processed only once.
    #[arg(long)]
    save_session: Option<PathBuf>,
    /// Start from a session saved with --save-session: the part of the
    /// prompt it already holds is not processed again.
    #[arg(long)]
    load_session: Option<PathBuf>,
}

/// The tokenizer shipped with the model, if any.
pub(crate) fn model_tokenizer(path: &std::path::Path) -> Option<Tokenizer> {
    match ModelFiles::open(path).ok()? {
        ModelFiles::Gguf(g) => Tokenizer::from_gguf(&g).ok(),
        ModelFiles::HuggingFace(h) => Vocab::from_hf_dir(&h.dir).ok().map(Tokenizer::new),
    }
}

pub fn main(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        phi3_kernels::pool::set_global_threads(t);
    }
    let (mut sampler, sampler_cfg) = args.sampling.sampler()?;
    let mut kv_type = crate::parse_kv_type(&args.kv_type)?;
    let rope_policy = match args.rope_policy.as_str() {
        "fixed" => RopePolicy::FixedByContext,
        _ => RopePolicy::Reference,
    };

    let load_start = Instant::now();
    let model_path = crate::hub::resolve(args.model.as_deref())?;
    let model = crate::open_model(&model_path)?;
    let tokenizer = model_tokenizer(&model_path);
    let load_time = load_start.elapsed();
    let cfg = &model.config;

    let prompt: Vec<u32> = match (&args.prompt_ids, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) => {
            let Some(tok) = &tokenizer else {
                bail!("{} has no tokenizer (no tokenizer.ggml.* metadata or tokenizer.json): give the prompt with --prompt-ids", model_path.display());
            };
            let text = if args.raw {
                text.clone()
            } else {
                let template = match &tok.vocab.chat_template {
                    Some(t) => ChatTemplate::new(t)?,
                    None => ChatTemplate::builtin_phi3(),
                };
                let mut messages = Vec::new();
                if let Some(s) = &args.system {
                    messages.push(Message::new("system", s.clone()));
                }
                messages.push(Message::new("user", text.clone()));
                let piece = |id: Option<u32>| id.map(|i| tok.vocab.pieces[i as usize].clone()).unwrap_or_default();
                template.render(&messages, true, &piece(tok.vocab.bos), &piece(tok.vocab.eos))?
            };
            // templates write BOS themselves where the model wants it
            tok.encode(
                &text,
                EncodeOptions {
                    add_special: args.raw,
                    parse_special: true,
                },
            )
        }
        (None, None) => bail!("give a prompt (text) or --prompt-ids"),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let needed = prompt.len() + args.max_tokens;
    // a session saved for later prompts gets room to grow
    let context = args.ctx.unwrap_or(if args.save_session.is_some() {
        cfg.max_position_embeddings
            .min(4096)
            .max(needed.min(cfg.max_position_embeddings))
    } else {
        needed.min(cfg.max_position_embeddings)
    });
    if context > cfg.max_position_embeddings {
        bail!(
            "--ctx {context} is larger than the model's context length {}",
            cfg.max_position_embeddings
        );
    }
    if prompt.len() > context {
        bail!(
            "the prompt has {} tokens, more than the context of {context}",
            prompt.len()
        );
    }
    if let Some(limit) = &args.max_memory {
        kv_type = crate::check_budget(&model, limit, context, kv_type)?;
    }
    let mut session = match &args.load_session {
        Some(path) => {
            let s = Session::load(&model, path, rope_policy)?;
            if prompt.len() > s.context() {
                bail!(
                    "the prompt has {} tokens, more than the saved session's context of {}",
                    prompt.len(),
                    s.context()
                );
            }
            s
        }
        None => Session::new(
            &model,
            SessionOptions {
                context,
                rope_policy,
                kv_type,
            },
        )?,
    };
    // a loaded session feeds only what it does not hold yet
    let mut held = session.tokens().iter().zip(&prompt).take_while(|(a, b)| a == b).count();
    if held == prompt.len() {
        held -= 1; // the last prompt token is fed again to get its logits
    }
    session.truncate(held);
    let reused = session.tokens().len();
    let prompt_delta = prompt[reused..].to_vec();
    let mut stop_ids = model.eos_token_ids.clone();
    if let Some(tok) = &tokenizer {
        stop_ids.extend(tok.vocab.end_of_generation_ids());
    }
    if args.ignore_eos {
        stop_ids.clear();
    }
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        stop_ids,
        stop_strings: args.stop.clone(),
        cancel: None,
    };

    let mut stdout = std::io::stdout().lock();
    let (generated, finish, prompt_s, gen_s) = match (&tokenizer, args.print_ids) {
        (Some(tok), false) => {
            let g = generate(&mut session, tok, &mut sampler, &prompt_delta, &opts, |piece| {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            })?;
            (g.tokens.len(), g.finish, g.prompt_seconds, g.generation_seconds)
        }
        _ => ids_only(&mut session, &mut sampler, &prompt_delta, &opts, &mut stdout)?,
    };
    writeln!(stdout)?;
    if let Some(path) = &args.save_session {
        session.save(path)?;
    }
    if reused > 0 {
        eprintln!(
            "session: {reused} prompt tokens reused from {}",
            args.load_session
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        );
    }
    let rate = |n: usize, s: f64| n as f64 / s.max(1e-9);
    eprintln!(
        "load {:.2}s | prompt {} tokens, {:.1} tok/s | generated {generated} tokens, {:.1} tok/s | stopped: {} | seed {}{}",
        load_time.as_secs_f64(),
        prompt.len(),
        rate(prompt.len(), prompt_s),
        rate(generated, gen_s),
        match finish {
            FinishReason::Stop => "stop token",
            FinishReason::Length => "max tokens",
            FinishReason::ContextFull => "context full",
            FinishReason::Cancelled => "cancelled",
        },
        sampler_cfg.seed,
        if session.reprefills > 0 {
            format!(" | LongRoPE switch: re-prefilled {} time(s)", session.reprefills)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Generation that prints ids (for models without a tokenizer, or --print-ids).
fn ids_only(
    session: &mut Session,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenerateOptions,
    out: &mut impl Write,
) -> Result<(usize, FinishReason, f64, f64)> {
    let t0 = Instant::now();
    let mut logits = session.feed(prompt, Logits::Last).context("processing the prompt")?;
    let prompt_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut n = 0;
    let finish = loop {
        if n >= opts.max_tokens {
            break FinishReason::Length;
        }
        let next = sampler.sample(&logits)?;
        if opts.stop_ids.contains(&next) {
            break FinishReason::Stop;
        }
        write!(out, "{}{next}", if n == 0 { "" } else { "," })?;
        out.flush()?;
        n += 1;
        sampler.accept(next);
        if n >= opts.max_tokens {
            break FinishReason::Length;
        }
        if session.tokens().len() >= session.context() {
            break FinishReason::ContextFull;
        }
        logits = session.feed(&[next], Logits::Last)?;
    };
    Ok((n, finish, prompt_s, t1.elapsed().as_secs_f64()))
}
