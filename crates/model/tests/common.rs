//! Shared helpers for the fixture tests: reading testdata/ made by
//! tools/reference/make_model_fixtures.py.

#![allow(dead_code)]

use std::path::PathBuf;

use phi3_formats::SafetensorsModel;
use phi3_model::{Logits, Model, RopePolicy, Session, SessionOptions};

/// Every fixture model (testdata/models/<name>).
pub const MODELS: [&str; 7] = [
    "phi-3-mini-4k",
    "phi-3-medium-4k",
    "phi-3-mini-128k-su",
    "phi-3-mini-128k",
    "phi-3-medium-128k",
    "phi-3.5-mini",
    "phi-4-mini",
];

pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

pub fn model_dir(name: &str) -> PathBuf {
    testdata().join("models").join(name)
}

/// The transformers outputs recorded for one fixture model.
pub struct Reference {
    pub tensors: SafetensorsModel,
    pub meta: serde_json::Value,
}

pub struct Sequence {
    pub key: String,
    pub ids: Vec<u32>,
    /// `[len, vocab]` from one full-sequence forward.
    pub logits: Vec<f32>,
    /// `[len, vocab]`: last-token logits of every prefix, where they differ
    /// from `logits` (LongRoPE sequences crossing the original length).
    pub incremental: Option<Vec<f32>>,
}

impl Reference {
    pub fn load(name: &str) -> Reference {
        let dir = testdata().join("reference");
        let tensors =
            SafetensorsModel::open_files(&[dir.join(format!("{name}.safetensors"))]).expect("reference tensors");
        let meta = serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).expect("reference json"))
            .expect("json");
        Reference { tensors, meta }
    }

    fn f32s(&self, name: &str) -> Option<Vec<f32>> {
        self.tensors.tensor(name).map(|t| t.to_f32_vec().expect("f32 tensor"))
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        let t = self.tensors.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        t.bytes()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect()
    }

    pub fn sequences(&self) -> Vec<Sequence> {
        self.meta["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let key = s["key"].as_str().unwrap().to_string();
                Sequence {
                    ids: self.ids(&format!("{key}.ids")),
                    logits: self.f32s(&format!("{key}.logits")).unwrap(),
                    incremental: self.f32s(&format!("{key}.incremental")),
                    key,
                }
            })
            .collect()
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn session(model: &Model) -> Session<'_> {
    Session::new(
        model,
        SessionOptions {
            context: model.config.max_position_embeddings,
            rope_policy: RopePolicy::Reference,
            kv_type: phi3_model::KvType::F32,
        },
    )
    .unwrap()
}

/// Logits of a whole sequence in one forward call.
pub fn full_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    session(model).feed(ids, Logits::All).unwrap()
}

/// Last-token logits after feeding one token at a time through the cache.
pub fn incremental_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let mut s = session(model);
    let mut out = Vec::new();
    for &id in ids {
        out.extend(s.feed(&[id], Logits::Last).unwrap());
    }
    out
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy generation of `n` tokens after `prompt`.
pub fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = session(model);
    let mut logits = s.feed(prompt, Logits::Last).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let tok = argmax(&logits);
        out.push(tok);
        logits = s.feed(&[tok], Logits::Last).unwrap();
    }
    out
}
