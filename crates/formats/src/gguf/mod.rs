//! GGUF: llama.cpp's model container (GGUF_PHI3.md §1).

mod reader;
mod value;
mod writer;

pub use reader::{GgufFile, TensorInfo};
pub use value::Value;
pub use writer::{Generator, GgufWriter};

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub(crate) const MAGIC: [u8; 4] = *b"GGUF";
