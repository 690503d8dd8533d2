//! `phi3`: run Phi-3 family models on phones and laptops.
//!
//! This is the only place that parses flags; each subcommand lives in its own
//! module and calls into the library crates.

mod bench;
mod bench_serve;
mod chat;
mod convert;
mod hub;
mod inspect;
mod run;
mod sampling;
mod serve;
mod tokenize;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "phi3", version, about = "Run Microsoft's Phi-3 family of models on CPUs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's architecture, size, tensor types and memory needs.
    Inspect(inspect::Args),
    /// Answer one prompt, streaming the reply.
    Run(run::Args),
    /// Talk with the model interactively.
    Chat(chat::Args),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::Args),
    /// Write a model (GGUF or Hugging Face folder) as a GGUF file.
    Convert(convert::Args),
    /// Quantize a model to a GGUF file (same as convert with --type).
    Quantize(convert::Args),
    /// Measure prompt processing and generation speed, memory and bandwidth.
    Bench(bench::Args),
    /// Load-test the server: concurrent streaming clients, time to first token, throughput.
    BenchServe(bench_serve::Args),
    /// Download a model from the hub into the cache (resumable, verified).
    Pull(hub::PullArgs),
    /// List the models in the cache.
    List,
    /// Show the token ids (and pieces) of a text.
    Tokenize(tokenize::TokenizeArgs),
    /// Turn token ids back into text.
    Detokenize(tokenize::DetokenizeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect::main(a),
        Command::Run(a) => run::main(a),
        Command::Chat(a) => chat::main(a),
        Command::Serve(a) => serve::main(a),
        Command::Convert(a) | Command::Quantize(a) => convert::main(a),
        Command::Bench(a) => bench::main(a),
        Command::BenchServe(a) => bench_serve::main(a),
        Command::Pull(a) => hub::pull_main(a),
        Command::List => hub::list_main(),
        Command::Tokenize(a) => tokenize::tokenize(a),
        Command::Detokenize(a) => tokenize::detokenize(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout; a closed pipe (`phi3 inspect … | head`) is not an error.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Parses a `--kv-type` value.
pub(crate) fn parse_kv_type(s: &str) -> anyhow::Result<phi3_model::KvType> {
    use phi3_model::KvType;
    Ok(match s.to_ascii_lowercase().as_str() {
        "f16" => KvType::F16,
        "f32" => KvType::F32,
        "q8_0" => KvType::Q8_0,
        other => anyhow::bail!("--kv-type {other}: expected f16, f32 or q8_0"),
    })
}

/// Checks that `context` tokens fit in the `--max-memory` budget, falling
/// back to a Q8_0 KV cache if that is what makes them fit.
pub(crate) fn check_budget(
    model: &phi3_model::Model,
    limit: &str,
    context: usize,
    kv: phi3_model::KvType,
) -> anyhow::Result<phi3_model::KvType> {
    use phi3_model::memory::{estimate, fit_context, human_bytes, parse_size};
    let budget =
        parse_size(limit).ok_or_else(|| anyhow::anyhow!("--max-memory {limit}: expected a size such as 4G or 512M"))?;
    let weights: u64 = model.tensor_summary.iter().map(|t| t.3 as u64).sum();
    match fit_context(&model.config, weights, budget, 512, kv, context) {
        Some((_, kv)) => Ok(kv),
        None => anyhow::bail!(
            "{context} tokens need {} (weights {} + KV cache + buffers), more than --max-memory {limit}",
            human_bytes(estimate(&model.config, weights, context, 512.min(context), kv).total()),
            human_bytes(weights)
        ),
    }
}

/// Opens a model, with a progress bar on a terminal for large files (the
/// check of every quant block's scale reads the whole file once).
pub(crate) fn open_model(path: &std::path::Path) -> anyhow::Result<phi3_model::Model> {
    open_model_as(path, phi3_model::WeightLayout::ForKernels)
}

/// [`open_model`] with the weight matrices held in `layout`.
pub(crate) fn open_model_as(
    path: &std::path::Path,
    layout: phi3_model::WeightLayout,
) -> anyhow::Result<phi3_model::Model> {
    use std::io::IsTerminal;
    let files = phi3_formats::ModelFiles::open(path)?;
    let total = phi3_model::Model::tensor_bytes(&files);
    if total < 256 << 20 || !std::io::stderr().is_terminal() {
        return Ok(phi3_model::Model::load(files, layout, &|_| {})?);
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let model = phi3_model::Model::load(files, layout, &|n| bar.inc(n));
    bar.finish_and_clear();
    Ok(model?)
}
