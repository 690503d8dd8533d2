//! `phi3 convert IN OUT.gguf` and `phi3 quantize IN OUT --type TYPE`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use phi3_formats::DType;
use phi3_model::convert::{write_gguf_plan, Plan, WRITABLE};

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a Hugging Face folder.
    input: PathBuf,
    /// The GGUF file to write.
    output: PathBuf,
    /// Type of the weight matrices: f32, f16, bf16, q8_0, q6_k, q5_k, q5_1,
    /// q5_0, q4_k, q4_1, q4_0, or a mix: q4_k_m, q4_k_s, q5_k_m (default: the
    /// type of the first layer's matrices, or f32).
    #[arg(long = "type")]
    dtype: Option<String>,
}

pub fn main(args: Args) -> Result<()> {
    // the weights are only read back: no repacking for this CPU's kernels
    let model = crate::open_model_as(&args.input, phi3_model::WeightLayout::AsStored)?;
    let plan = match &args.dtype {
        None => Plan::Uniform(
            model
                .weights
                .layers
                .first()
                .map(|l| l.qkv.tensor.dtype)
                .filter(|t| WRITABLE.contains(t))
                .unwrap_or(DType::F32),
        ),
        Some(name) => Plan::parse(name).ok_or_else(|| anyhow!("--type {name}: expected one of {}", Plan::names()))?,
    };
    write_gguf_plan(&model, &args.output, plan)?;
    eprintln!("wrote {} ({plan:?})", args.output.display());
    Ok(())
}
