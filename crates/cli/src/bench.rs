//! `phi3 bench`: speed and memory on a model file, or on a cached
//! random-weight model with the exact shapes of a named real model.

use std::path::PathBuf;

use anyhow::{bail, Result};
use phi3_eval::bench::{run, BenchOptions};
use phi3_eval::synth::{cache_path, parse_plan, synthesize, SHAPES};

/// The model a benchmark runs on: a file, or random weights with a real
/// model's shapes.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A model file or folder (or use --shape).
    #[arg(long, short = 'm', conflicts_with = "shape")]
    pub model: Option<PathBuf>,
    /// Synthesize (once, then cached) random weights with the shapes of:
    /// phi-3-mini-4k, phi-3-mini-128k, phi-3-medium-4k, phi-3.5-mini, phi-4-mini.
    #[arg(long)]
    pub shape: Option<String>,
    /// Weight type of the synthesized model: f32, f16, bf16, q8_0, q6_k,
    /// q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k, q2_k, or a llama.cpp mix:
    /// q4_k_m, q4_k_s, q5_k_m.
    #[arg(long = "type", default_value = "q4_0")]
    pub dtype: String,
}

impl ModelArgs {
    /// The model file (synthesized into the cache on first use for --shape).
    pub fn path(&self) -> Result<PathBuf> {
        model_or_shape(self.model.as_ref(), self.shape.as_deref(), &self.dtype)
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    which: ModelArgs,
    /// Prompt lengths to time, comma-separated (pp).
    #[arg(short = 'p', long, value_delimiter = ',', default_value = "128,512")]
    prompt: Vec<usize>,
    /// Tokens to generate (tg); 0 skips.
    #[arg(short = 'n', long, default_value_t = 128)]
    gen: usize,
    /// Timed repetitions per test, after one warm-up.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Threads (default: physical cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Skip measuring the machine's read bandwidth.
    #[arg(long)]
    no_bandwidth: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// KV cache storage: f16 (default), f32 or q8_0.
    #[arg(long, default_value = "f16")]
    kv_type: String,
}

pub fn main(args: Args) -> Result<()> {
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        phi3_kernels::pool::set_global_threads(t);
    }
    let path = args.which.path()?;
    let report = run(
        &path,
        &BenchOptions {
            prompt_lens: args.prompt.clone(),
            gen_len: args.gen,
            reps: args.reps,
            measure_bandwidth: !args.no_bandwidth,
            kv_type: crate::parse_kv_type(&args.kv_type)?,
        },
    )?;
    if args.json {
        crate::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))
    } else {
        crate::print_stdout(&report.table())
    }
}

/// The model to measure: a file, or random weights with a named model's
/// shapes (synthesized once into the cache).
fn model_or_shape(model: Option<&PathBuf>, shape: Option<&str>, dtype: &str) -> Result<PathBuf> {
    Ok(match (model, shape) {
        (Some(m), _) => m.clone(),
        (None, Some(shape)) => {
            let plan = parse_plan(dtype)?;
            let path = cache_path(shape, plan);
            if !path.exists() {
                eprintln!(
                    "synthesizing {shape} ({}, random weights) at {} ...",
                    plan.name(),
                    path.display()
                );
                synthesize(shape, plan, &path)?;
            }
            path
        }
        (None, None) => bail!(
            "give --model FILE or --shape NAME (one of {})",
            SHAPES.map(|(n, _)| n).join(", ")
        ),
    })
}
