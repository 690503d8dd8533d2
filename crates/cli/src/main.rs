//! `phi3`: run Phi-3 family models on phones and laptops.
//!
//! This is the only place that parses flags; each subcommand lives in its own
//! module and calls into the library crates.

mod bench;
mod chat;
mod convert;
mod inspect;
mod run;
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
    /// Write a model (GGUF or Hugging Face folder) as a GGUF file.
    Convert(convert::Args),
    /// Quantize a model to a GGUF file (same as convert with --type).
    Quantize(convert::Args),
    /// Measure prompt processing and generation speed, memory and bandwidth.
    Bench(bench::Args),
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
        Command::Convert(a) | Command::Quantize(a) => convert::main(a),
        Command::Bench(a) => bench::main(a),
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
