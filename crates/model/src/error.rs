//! Errors of model loading and running.

use std::path::PathBuf;

use phi3_formats::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{}: config field {field:?}: {why}", path.display())]
    Config { path: PathBuf, field: String, why: String },
    #[error("{}: unsupported architecture {arch:?} ({why})", path.display())]
    UnsupportedArchitecture { path: PathBuf, arch: String, why: String },
    #[error("{}: tensor {name:?} is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("{}: tensor {name:?} has shape {found:?}, the config implies {expected:?}", path.display())]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: tensor {name:?} has type {dtype}, which phi3 cannot compute with (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)", path.display())]
    UnsupportedDType { path: PathBuf, name: String, dtype: String },
    #[error("{}: tensor {name:?} has a quantization block with a NaN or infinite scale", path.display())]
    BadQuantScales { path: PathBuf, name: String },
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("the sequence would reach {needed} tokens, more than the context of {limit} tokens ({why})")]
    ContextFull {
        needed: usize,
        limit: usize,
        why: &'static str,
    },
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
