//! `phi3 convert IN OUT.gguf`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use phi3_formats::DType;
use phi3_model::convert::write_gguf;
use phi3_model::Model;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a Hugging Face folder.
    input: PathBuf,
    /// The GGUF file to write.
    output: PathBuf,
    /// Type of the weight matrices: f32, f16 or bf16 (default: keep each
    /// matrix's type where it is one of these, otherwise f32).
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
            .map_or(DType::F32, |l| l.qkv.tensor.dtype),
        Some(name) => DType::parse(name)
            .filter(|t| matches!(t, DType::F32 | DType::F16 | DType::BF16))
            .ok_or_else(|| anyhow!("--type {name}: expected f32, f16 or bf16"))?,
    };
    write_gguf(&model, &args.output, dtype)?;
    eprintln!("wrote {} ({dtype})", args.output.display());
    Ok(())
}
