//! A small random model carrying the real Phi-3 vocabulary, for the
//! generator and scheduler tests.

use std::path::{Path, PathBuf};

use phi3_model::Model;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A 2-layer random model with the Phi-3 vocabulary (32064 tokens).
pub fn model_with_vocab(dir: &Path) -> PathBuf {
    let base = Model::open(root().join("testdata/models/phi-3-mini-4k"))
        .unwrap()
        .config;
    let vocab = root().join("../shared/testdata/tokenizer/ggml-vocab-phi-3.gguf");
    phi3_eval::synth::random_chat_model(&base, &vocab, dir).unwrap()
}
