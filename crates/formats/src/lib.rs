//! Model file formats: bytes in, named tensor views and metadata out.
//!
//! * [`gguf`]: llama.cpp's GGUF container, reader and writer.
//! * [`SafetensorsModel`]: Hugging Face safetensors checkpoints (sharded or not).
//! * [`ModelFiles`]: whichever of the two a user points phi3 at.
//!
//! Nothing here knows about Phi-3; interpreting names and metadata is the
//! model crate's job.

mod dtype;
mod error;
pub mod gguf;
pub mod json;
mod safetensors_dir;
mod source;
mod tensor;

pub use dtype::DType;
pub use error::{ErrorKind, FormatError, Result};
pub use gguf::{GgufFile, GgufWriter};
pub use safetensors_dir::{SafetensorsModel, INDEX_NAME};
pub use source::{HfFolder, ModelFiles};
pub use tensor::{Storage, Tensor};
