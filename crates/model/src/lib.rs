//! The Phi-3 family model: configuration, weights binding, rotary embeddings
//! (with LongRoPE), KV cache and the forward pass, for GGUF and Hugging Face
//! checkpoints alike.

pub mod config;
pub mod convert;
mod error;
pub mod forward;
pub mod kv_cache;
pub mod memory;
mod model;
pub mod rope;
pub mod session;
pub mod variant;
pub mod weights;

pub use config::{Architecture, LongRope, ModelConfig};
pub use error::{ModelError, Result};
pub use forward::Logits;
pub use forward::Scratch;
pub use model::{Model, SourceFormat};
pub use rope::RopeTable;
pub use session::{feed_many, KvType, RopePolicy, Session, SessionOptions};
pub use weights::WeightLayout;
