//! Measurement tools: random-weight models with the exact shapes of the real
//! Phi-3 family members (speed does not depend on weight values), memory
//! bandwidth, and the `phi3 bench` harness.

pub mod bench;
pub mod load;
pub mod membw;
pub mod synth;

/// Errors of the measurement tools.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] phi3_model::ModelError),
    #[error(transparent)]
    Format(#[from] phi3_formats::FormatError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
