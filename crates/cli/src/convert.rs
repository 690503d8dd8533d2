//! `phi3 convert IN OUT.gguf` (also `phi3 quantize IN OUT --type TYPE`).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use phi3_formats::DType;
use phi3_model::convert::{write_gguf, WRITABLE};
use phi3_model::Model;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a Hugging Face folder.
    input: PathBuf,
    /// The GGUF file to write.
    output: PathBuf,
    /// Type of the weight matrices: f32, f16, bf16, q8_0, q5_1, q5_0, q4_1 or
    /// q4_0 (default: the type of the first layer's matrices, or f32).
    #[arg(long = "type")]
    dtype: Option<String>,
}

pub fn main(args: Args) -> Result<()> {
    let model = Model::open(&args.input)?;
    let dtype = match &args.dtype {
        None => model
            .weights
            .layers
            .first()
            .map(|l| l.qkv.tensor.dtype)
            .filter(|t| WRITABLE.contains(t))
            .unwrap_or(DType::F32),
        Some(name) => DType::parse(name).filter(|t| WRITABLE.contains(t)).ok_or_else(|| {
            anyhow!(
                "--type {name}: expected one of {}",
                WRITABLE.map(|t| t.name().to_lowercase()).join(", ")
            )
        })?,
    };
    write_gguf(&model, &args.output, dtype)?;
    eprintln!("wrote {} ({dtype})", args.output.display());
    Ok(())
}
