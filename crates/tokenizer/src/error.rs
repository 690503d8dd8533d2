//! Tokenizer errors.

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Format(#[from] phi3_formats::FormatError),
    #[error("{source_name}: vocabulary field {field:?}: {why}")]
    Vocab {
        source_name: String,
        field: String,
        why: String,
    },
    #[error("{source_name}: tokenizer model {model:?} is not supported yet (phi3 reads SentencePiece \"llama\" vocabularies)")]
    UnsupportedModel { source_name: String, model: String },
    #[error("chat template{}: {why}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Template { line: Option<usize>, why: String },
    #[error("token id {id} is outside the vocabulary (size {size})")]
    UnknownId { id: u32, size: usize },
}

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
