//! Typed errors for everything that reads model files. Every error names the
//! file it came from and, where there is one, the tensor or key.

use std::path::PathBuf;

/// An error about one model file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct FormatError {
    /// The file (or folder) that was being read.
    pub path: PathBuf,
    /// What was wrong with it.
    pub kind: ErrorKind,
}

/// What was wrong with a model file.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("file ends early: needed {needed} bytes at offset {offset} for {what}, file has {len}")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {0} (phi3 reads versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("metadata key {key:?} appears twice")]
    DuplicateKey { key: String },
    #[error("tensor {name:?} appears twice")]
    DuplicateTensor { name: String },
    #[error("unknown metadata value type {type_id} for key {key:?}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("tensor {name:?} has unknown ggml type id {type_id}")]
    UnknownTensorType { name: String, type_id: u32 },
    #[error("tensor {name:?} has unsupported dtype {dtype}")]
    UnsupportedDType { name: String, dtype: String },
    #[error("string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: u64 },
    #[error("tensor {name:?} has {n_dims} dimensions (at most 4 are allowed)")]
    TooManyDims { name: String, n_dims: u32 },
    #[error("tensor {name:?}: shape {shape:?} is invalid: {why}")]
    BadShape { name: String, shape: Vec<i64>, why: String },
    #[error("tensor {name:?}: element count of shape {shape:?} overflows")]
    ElementCountOverflow { name: String, shape: Vec<i64> },
    #[error("tensor {name:?}: data offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset { name: String, offset: u64, alignment: u64 },
    #[error("tensor {name:?}: data [{start}, {end}) lies past the end of the data ({len} bytes)")]
    DataPastEnd {
        name: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("tensors {a:?} and {b:?} overlap in the file")]
    OverlappingTensors { a: String, b: String },
    #[error("general.alignment = {0} is not a power of two")]
    BadAlignment(u64),
    #[error("{what} count {count} is larger than the file could hold")]
    ImplausibleCount { what: String, count: u64 },
    #[error("metadata arrays nest deeper than {0} levels")]
    NestingTooDeep(usize),
    #[error("invalid safetensors data: {0}")]
    Safetensors(String),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("metadata key {key:?}: {why}")]
    BadMetadata { key: String, why: String },
    #[error("tensor {name:?} is listed in the index but not present in shard {shard:?}")]
    MissingInShard { name: String, shard: String },
    #[error("no model found: {0}")]
    NotAModel(String),
}

impl FormatError {
    pub fn new(path: impl Into<PathBuf>, kind: ErrorKind) -> Self {
        FormatError {
            path: path.into(),
            kind,
        }
    }
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;
