//! Turning logits into tokens: the sampler chain. The generator (prefill,
//! decode, stop tokens and strings, streaming), saved sessions and the
//! batch scheduler build on it.

pub mod chat;
pub mod generate;
pub mod rng;
pub mod sampler;
pub mod scheduler;

pub use chat::Chat;
pub use generate::{generate, FinishReason, GenerateError, GenerateOptions, Generation, ReplyState};
pub use sampler::{Sampler, SamplerConfig, SamplerError};
pub use scheduler::{Event, Job, Scheduler, SchedulerConfig, SubmitError};
