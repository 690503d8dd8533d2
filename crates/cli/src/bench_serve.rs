//! `phi3 bench-serve`: a load test of the server. Starts `phi3 serve` on a
//! model (or on random weights with a real model's shapes) and drives it
//! with 1, 4, 16… concurrent streaming clients; or drives any running
//! OpenAI-compatible server given by --url, for comparison.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use phi3_eval::load::{run_load, table, LoadOptions, LoadResult, Rounds};

#[derive(clap::Args)]
pub struct Args {
    /// A running server to measure instead of starting one.
    #[arg(long, conflicts_with_all = ["model", "shape"])]
    url: Option<String>,
    /// The model to serve.
    #[command(flatten)]
    which: crate::bench::ModelArgs,
    /// A GGUF file whose tokenizer the synthesized model takes (random
    /// weights carry none), e.g. a Phi-3 GGUF or llama.cpp's ggml-vocab-phi-3.gguf.
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Concurrent clients to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    streams: Vec<usize>,
    /// Requests each client sends one after another.
    #[arg(long, default_value_t = 2)]
    requests: usize,
    /// Tokens generated per request (stop tokens are banned so every request makes them all).
    #[arg(short = 'n', long, default_value_t = 64)]
    max_tokens: usize,
    /// Server slots (default: the largest --streams).
    #[arg(long)]
    parallel: Option<usize>,
    /// Context of each slot.
    #[arg(long, default_value_t = 1024)]
    ctx: usize,
    /// Kernel threads of the server (default: physical cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    #[arg(long)]
    api_key: Option<String>,
    /// Measure the whole --streams list this many times, alternating, and
    /// report each figure's median: the machine's speed drifts from minute
    /// to minute, and alternating rounds expose every stream count to it alike.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

const PROMPT: &str = "Here is a short passage about rivers. Rivers carry water from high ground to the sea, \
shaping valleys, feeding lakes and wetlands, and supporting towns and farms along their banks. \
Summarize the passage in one sentence, then list three famous rivers and the countries they flow through.";

/// Phi-3's stop tokens: <|endoftext|>, <|end|> and </s>.
const PHI3_STOP_IDS: [u32; 3] = [32000, 32007, 2];

/// A `phi3 serve` child process, stopped when dropped.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(args: &Args, model: &std::path::Path) -> Result<(ServerProcess, String)> {
    let parallel = args.parallel.unwrap_or(*args.streams.iter().max().unwrap_or(&1));
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["serve", "--port", "0", "-m"])
        .arg(model)
        .args(["--parallel", &parallel.to_string(), "--ctx", &args.ctx.to_string()])
        .args(["--queue", &(parallel * 4).to_string()]);
    if let Some(t) = args.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    if let Some(k) = &args.api_key {
        cmd.args(["--api-key", k]);
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let stderr = child.stderr.take().context("the server's stderr")?;
    let child = ServerProcess(child);
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            bail!("phi3 serve stopped before listening:\n{seen}");
        };
        eprintln!("{line}");
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.to_string();
        }
        seen.push_str(&line);
        seen.push('\n');
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((child, addr))
}

pub fn main(args: Args) -> Result<()> {
    if args.streams.contains(&0) || args.requests == 0 || args.max_tokens == 0 || args.rounds == 0 {
        bail!("--streams, --requests, --max-tokens and --rounds must be at least 1");
    }
    let (_server, url) = match &args.url {
        Some(u) => (None, u.clone()),
        None => {
            let mut model = args.which.path()?;
            if args.which.shape.is_some() {
                let Some(vocab) = &args.vocab else {
                    bail!("random weights carry no tokenizer: give --vocab FILE.gguf (a GGUF with tokenizer.ggml.* metadata)");
                };
                let with_vocab = model.with_extension("chat.gguf");
                if !with_vocab.exists() {
                    phi3_eval::synth::with_vocabulary(&model, vocab, &with_vocab)?;
                }
                model = with_vocab;
            }
            let (server, url) = start_server(&args, &model)?;
            (Some(server), url)
        }
    };
    // by_streams[i]: every round of args.streams[i]
    let mut by_streams: Vec<Vec<LoadResult>> = vec![Vec::new(); args.streams.len()];
    let mut warmed = false;
    for round in 0..args.rounds {
        for (i, &streams) in args.streams.iter().enumerate() {
            let opts = LoadOptions {
                url: url.clone(),
                api_key: args.api_key.clone(),
                streams,
                requests_per_stream: args.requests,
                max_tokens: args.max_tokens,
                prompt: PROMPT.to_string(),
                ban_tokens: PHI3_STOP_IDS.to_vec(),
                round,
            };
            if !warmed {
                phi3_eval::load::warm_up(&opts)?;
                warmed = true;
            }
            eprintln!(
                "round {} of {}: {streams} concurrent streams ...",
                round + 1,
                args.rounds
            );
            let r = run_load(&opts)?;
            if let Some(e) = r.errors.first() {
                bail!(
                    "{} of {} requests failed, the first with: {e}",
                    r.errors.len(),
                    r.errors.len() + r.requests
                );
            }
            by_streams[i].push(r);
        }
    }
    let results: Vec<Rounds> = by_streams.into_iter().map(Rounds::of).collect();
    if args.json {
        return crate::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&results)?));
    }
    let mut text = String::new();
    if args.rounds > 1 {
        for round in 0..args.rounds {
            let each: Vec<LoadResult> = results.iter().map(|r| r.rounds[round].clone()).collect();
            text.push_str(&format!("round {}:\n\n{}\n", round + 1, table(&each)));
        }
        text.push_str(&format!("median of {} rounds:\n\n", args.rounds));
    }
    let medians: Vec<LoadResult> = results.iter().map(|r| r.median.clone()).collect();
    text.push_str(&table(&medians));
    if args.rounds > 1 {
        text.push_str("\neach row against the first row of the same round:\n\n");
        text.push_str(&phi3_eval::load::paired_ratios(&results));
    }
    crate::print_stdout(&text)
}
