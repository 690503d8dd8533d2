//! `phi3 chat`: an interactive conversation. Each turn feeds only the new
//! tokens (the KV cache keeps the conversation); Ctrl-C stops the current
//! reply without leaving; `/help` lists the commands.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use phi3_model::{RopePolicy, Session, SessionOptions};
use phi3_runtime::{Chat, FinishReason, GenerateOptions};
use phi3_tokenizer::{ChatTemplate, Message};

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, a Hugging Face folder, or a hub file (owner/repo/file.gguf,
    /// downloaded into the cache on first use). Default: Phi-3-mini-4k-instruct, 4-bit GGUF.
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// A system message.
    #[arg(long)]
    system: Option<String>,
    /// Tokens per reply at most.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 512)]
    max_tokens: usize,
    /// Context length of the conversation (default: the largest that fits in
    /// --max-memory, or in 80% of the memory available now, at most the model's).
    #[arg(long)]
    ctx: Option<usize>,
    /// Memory the chat may use (weights + KV cache + buffers), e.g. 3G.
    #[arg(long)]
    max_memory: Option<String>,
    #[command(flatten)]
    sampling: crate::sampling::SamplingArgs,
    /// Stop a reply when this text appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// KV cache storage: f16 (default), f32 or q8_0.
    #[arg(long, default_value = "f16")]
    kv_type: String,
    #[arg(long, short = 't')]
    threads: Option<usize>,
}

const HELP: &str = "commands:
  /reset         forget the conversation (the system message stays)
  /system TEXT   set the system message (empty TEXT removes it)
  /save FILE     save the conversation as JSON
  /load FILE     load a conversation saved with /save
  /help          this list
  /quit          leave (or Ctrl-D)
end a line with \\ to continue the message on the next line; Ctrl-C stops a reply";

/// Reads the user's lines: with line editing and history on a terminal,
/// plain lines otherwise (scripts, tests).
enum Input {
    Editor(Box<rustyline::DefaultEditor>),
    Plain(std::io::StdinLock<'static>),
}

impl Input {
    fn line(&mut self, prompt: &str) -> Result<Option<String>> {
        match self {
            Input::Editor(ed) => loop {
                match ed.readline(prompt) {
                    Ok(l) => {
                        let _ = ed.add_history_entry(l.as_str());
                        return Ok(Some(l));
                    }
                    // Ctrl-C at the prompt clears the line, as shells do
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(rustyline::error::ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            },
            Input::Plain(stdin) => {
                let mut l = String::new();
                if stdin.read_line(&mut l)? == 0 {
                    return Ok(None);
                }
                Ok(Some(l.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }

    /// A whole message: lines ending in `\` continue it.
    fn message(&mut self) -> Result<Option<String>> {
        let mut msg = String::new();
        let mut prompt = "> ";
        loop {
            let Some(line) = self.line(prompt)? else {
                return Ok(if msg.is_empty() { None } else { Some(msg) });
            };
            match line.strip_suffix('\\') {
                Some(part) => {
                    msg.push_str(part);
                    msg.push('\n');
                    prompt = ". ";
                }
                None => {
                    msg.push_str(&line);
                    return Ok(Some(msg));
                }
            }
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    system: Option<String>,
    messages: Vec<SavedMessage>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedMessage {
    role: String,
    content: String,
}

pub fn main(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        phi3_kernels::pool::set_global_threads(t);
    }
    let model_path = crate::hub::resolve(args.model.as_deref())?;
    let ChatModel {
        model,
        tokenizer,
        template,
        stop_ids,
    } = ChatModel::open(&model_path)?;
    let mut kv_type = crate::parse_kv_type(&args.kv_type)?;
    let context = match args.ctx {
        Some(c) => {
            if let Some(limit) = &args.max_memory {
                kv_type = crate::check_budget(&model, limit, c, kv_type)?;
            }
            c
        }
        None => {
            use phi3_model::memory::{available_memory, fit_context, human_bytes, parse_size};
            let budget = match &args.max_memory {
                Some(l) => {
                    parse_size(l).ok_or_else(|| anyhow::anyhow!("--max-memory {l}: expected a size such as 4G"))?
                }
                None => available_memory().map_or(u64::MAX / 4, |a| a / 10 * 8),
            };
            let weights: u64 = model.tensor_summary.iter().map(|t| t.3 as u64).sum();
            let min = 256.min(model.config.max_position_embeddings);
            let Some((ctx, kv)) = fit_context(&model.config, weights, budget, 512, kv_type, min) else {
                bail!(
                    "not even {min} tokens of context fit in {} with these weights ({})",
                    human_bytes(budget),
                    human_bytes(weights)
                );
            };
            kv_type = kv;
            ctx
        }
    };
    eprintln!("context: {context} tokens, KV cache {}", kv_type.name());
    let session = Session::new(
        &model,
        SessionOptions {
            context,
            rope_policy: RopePolicy::Reference,
            kv_type,
        },
    )?;
    let mut chat = Chat::new(session, &tokenizer, template);
    chat.system = args.system.clone().filter(|s| !s.is_empty());
    let (mut sampler, _) = args.sampling.sampler()?;
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // Ctrl-C while a reply is streaming stops that reply only
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::SeqCst));
    }
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        stop_ids,
        stop_strings: args.stop.clone(),
        cancel: Some(cancel.clone()),
    };

    let mut input = if std::io::stdin().is_terminal() {
        Input::Editor(Box::new(rustyline::DefaultEditor::new()?))
    } else {
        Input::Plain(std::io::stdin().lock())
    };
    eprintln!(
        "phi3 chat: {} — /help for commands, Ctrl-D to leave",
        model_path.display()
    );
    while let Some(msg) = input.message()? {
        let trimmed = msg.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(cmd) = trimmed.strip_prefix('/') {
            let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
            let rest = rest.trim();
            match name {
                "quit" | "exit" => break,
                "help" => println!("{HELP}"),
                "reset" => {
                    chat.reset();
                    println!("(conversation cleared)");
                }
                "system" => {
                    chat.system = (!rest.is_empty()).then(|| rest.to_string());
                    println!("(system message {})", if rest.is_empty() { "removed" } else { "set" });
                }
                "save" if !rest.is_empty() => {
                    let saved = Saved {
                        system: chat.system.clone(),
                        messages: chat
                            .messages
                            .iter()
                            .map(|m| SavedMessage {
                                role: m.role.clone(),
                                content: m.content.clone(),
                            })
                            .collect(),
                    };
                    std::fs::write(rest, serde_json::to_vec_pretty(&saved)?)
                        .with_context(|| format!("saving {rest}"))?;
                    println!("(saved {} messages to {rest})", chat.messages.len());
                }
                "load" if !rest.is_empty() => match std::fs::read(rest)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| Ok(serde_json::from_slice::<Saved>(&b)?))
                {
                    Ok(saved) => {
                        chat.reset();
                        chat.system = saved.system;
                        chat.messages = saved
                            .messages
                            .into_iter()
                            .map(|m| Message::new(m.role, m.content))
                            .collect();
                        println!("(loaded {} messages from {rest})", chat.messages.len());
                    }
                    Err(e) => println!("(cannot load {rest}: {e})"),
                },
                _ => println!("(unknown command /{name}; /help lists them)"),
            }
            continue;
        }
        cancel.store(false, Ordering::SeqCst);
        let mut out = std::io::stdout().lock();
        let result = chat.reply(&msg, &mut sampler, &opts, |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        });
        drop(out);
        match result {
            Ok(g) => {
                println!();
                let note = match g.finish {
                    FinishReason::Cancelled => " (stopped)",
                    FinishReason::ContextFull => " (context full: /reset to continue)",
                    _ => "",
                };
                eprintln!(
                    "[{} new prompt tokens, {} generated, {:.1} tok/s{note}]",
                    chat.last_fed,
                    g.tokens.len(),
                    g.tokens.len() as f64 / g.generation_seconds.max(1e-9)
                );
            }
            // the conversation no longer fits: say what to do, keep the chat
            Err(phi3_runtime::GenerateError::Model(e @ phi3_model::ModelError::ContextFull { .. })) => {
                println!("({e}: /reset starts over, or restart with a larger --ctx)")
            }
            Err(e) => println!("(error: {e})"),
        }
    }
    Ok(())
}

/// A model with what a conversation needs: its tokenizer, chat template
/// (its own or the built-in Phi-3 one) and stop tokens.
pub(crate) struct ChatModel {
    pub model: phi3_model::Model,
    pub tokenizer: phi3_tokenizer::Tokenizer,
    pub template: ChatTemplate,
    /// The model's end-of-sequence ids and the vocabulary's end-of-turn tokens.
    pub stop_ids: Vec<u32>,
}

impl ChatModel {
    pub fn open(path: &std::path::Path) -> Result<ChatModel> {
        let model = crate::open_model(path)?;
        let Some(tokenizer) = crate::run::model_tokenizer(path) else {
            bail!(
                "{} has no tokenizer (no tokenizer.ggml.* metadata or tokenizer.json)",
                path.display()
            );
        };
        let template = match &tokenizer.vocab.chat_template {
            Some(t) => ChatTemplate::new(t)?,
            None => ChatTemplate::builtin_phi3(),
        };
        let mut stop_ids = model.eos_token_ids.clone();
        stop_ids.extend(tokenizer.vocab.end_of_generation_ids());
        Ok(ChatModel {
            model,
            tokenizer,
            template,
            stop_ids,
        })
    }
}
