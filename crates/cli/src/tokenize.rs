//! `phi3 tokenize` and `phi3 detokenize`: see exactly what the model sees.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use phi3_formats::GgufFile;
use phi3_tokenizer::{EncodeOptions, Tokenizer, Vocab};

/// Loads the tokenizer of a GGUF file or a Hugging Face folder.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if path.is_dir() {
        return Ok(Tokenizer::new(Vocab::from_hf_dir(path)?));
    }
    let gguf = GgufFile::open(path)?;
    Ok(Tokenizer::from_gguf(&gguf)?)
}

#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// A GGUF file or a Hugging Face folder with tokenizer.json.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// The text to tokenize (or use --file).
    text: Option<String>,
    /// Read the text from a file (UTF-8).
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Do not add BOS.
    #[arg(long)]
    no_bos: bool,
    /// Treat special-token text such as <|user|> as plain text.
    #[arg(long)]
    no_parse_special: bool,
    /// Print one "id<TAB>piece" line per token instead of comma-separated ids.
    #[arg(long)]
    pieces: bool,
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let tok = load_tokenizer(&args.model)?;
    let text = match (&args.text, &args.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => bail!(
                    "{}: not valid UTF-8 at byte {}",
                    f.display(),
                    e.utf8_error().valid_up_to()
                ),
            }
        }
        (None, None) => bail!("give the text as an argument or with --file"),
    };
    let ids = tok.encode(
        &text,
        EncodeOptions {
            add_special: !args.no_bos,
            parse_special: !args.no_parse_special,
        },
    );
    let mut out = String::new();
    if args.pieces {
        for id in &ids {
            out.push_str(&format!("{id}\t{:?}\n", tok.vocab.pieces[*id as usize]));
        }
    } else {
        out.push_str(&ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    crate::print_stdout(&out)
}

#[derive(clap::Args)]
pub struct DetokenizeArgs {
    /// A GGUF file or a Hugging Face folder with tokenizer.json.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Comma-separated token ids.
    #[arg(value_delimiter = ',', num_args = 1.., required = true)]
    ids: Vec<u32>,
    /// Show special tokens (<|user|>, <s>, ...) as text.
    #[arg(long)]
    special: bool,
}

pub fn detokenize(args: DetokenizeArgs) -> Result<()> {
    let tok = load_tokenizer(&args.model)?;
    let text = tok.decode(&args.ids, args.special)?;
    crate::print_stdout(&format!("{text}\n"))
}
