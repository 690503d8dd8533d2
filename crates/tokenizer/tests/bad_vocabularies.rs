//! Broken vocabularies give an error that names the file and the field.

use phi3_formats::gguf::Value;
use phi3_formats::{GgufFile, GgufWriter};
use phi3_tokenizer::{Tokenizer, TokenizerError, Vocab};

fn gguf_with(dir: &std::path::Path, edit: impl Fn(&mut GgufWriter)) -> GgufFile {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("phi3".into()));
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(
            ["<unk>", "<s>", "▁a", "b"]
                .iter()
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
    );
    w.set("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0); 4]));
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(vec![Value::I32(3), Value::I32(3), Value::I32(1), Value::I32(1)]),
    );
    w.set("tokenizer.ggml.bos_token_id", Value::U32(1));
    edit(&mut w);
    let path = dir.join("vocab.gguf");
    w.write(&path).unwrap();
    GgufFile::open(path).unwrap()
}

#[test]
fn the_baseline_loads() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tokenizer::from_gguf(&gguf_with(dir.path(), |_| {})).unwrap();
    assert_eq!(t.vocab.len(), 4);
}

#[test]
fn broken_fields_are_named() {
    type Edit = Box<dyn Fn(&mut GgufWriter)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "tokenizer.ggml.tokens",
            Box::new(|w| {
                w.set("tokenizer.ggml.tokens", Value::U32(3));
            }),
        ),
        (
            "scores",
            Box::new(|w| {
                w.set("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0); 3]));
            }),
        ),
        (
            "tokenizer.ggml.token_type",
            Box::new(|w| {
                w.set("tokenizer.ggml.token_type", Value::Array(vec![Value::I32(9); 4]));
            }),
        ),
        (
            "tokenizer.ggml.bos_token_id",
            Box::new(|w| {
                w.set("tokenizer.ggml.bos_token_id", Value::U32(99));
            }),
        ),
        (
            "tokenizer.ggml.tokens",
            Box::new(|w| {
                w.set("tokenizer.ggml.tokens", Value::Array(vec![Value::U32(1); 4]));
            }),
        ),
    ];
    for (field, edit) in cases {
        let dir = tempfile::tempdir().unwrap();
        let e = Tokenizer::from_gguf(&gguf_with(dir.path(), edit)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(field) && msg.contains("vocab.gguf"), "{field}: {msg}");
    }
}

#[test]
fn other_tokenizer_models_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let g = gguf_with(dir.path(), |w| {
        w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    });
    let e = Tokenizer::from_gguf(&g).unwrap_err();
    assert!(matches!(e, TokenizerError::UnsupportedModel { .. }), "{e}");
}

#[test]
fn broken_hugging_face_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = Vocab::from_hf_dir(d).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    std::fs::write(d.join("tokenizer.json"), "{\"model\": ").unwrap();
    let e = Vocab::from_hf_dir(d).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    std::fs::write(
        d.join("tokenizer.json"),
        r#"{"model": {"type": "WordPiece", "vocab": {}}}"#,
    )
    .unwrap();
    assert!(matches!(
        Vocab::from_hf_dir(d).unwrap_err(),
        TokenizerError::UnsupportedModel { .. }
    ));
    std::fs::write(
        d.join("tokenizer.json"),
        r#"{"model": {"type": "BPE", "byte_fallback": true, "vocab": {"a": 0, "b": 2}, "merges": []}}"#,
    )
    .unwrap();
    let e = Vocab::from_hf_dir(d).unwrap_err();
    assert!(e.to_string().contains("no token has id 1"), "{e}");
    std::fs::write(
        d.join("tokenizer.json"),
        r#"{"model": {"type": "BPE", "byte_fallback": true, "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}}"#,
    )
    .unwrap();
    let e = Vocab::from_hf_dir(d).unwrap_err();
    assert!(e.to_string().contains("model.merges"), "{e}");
}

#[test]
fn added_tokens_json_must_agree_with_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("tokenizer.json"),
        r#"{"model": {"type": "BPE", "byte_fallback": true, "vocab": {"a": 0, "b": 1}, "merges": []}}"#,
    )
    .unwrap();
    std::fs::write(d.join("added_tokens.json"), r#"{"<|end|>": 2}"#).unwrap();
    let v = Vocab::from_hf_dir(d).unwrap();
    assert_eq!(v.id_of("<|end|>"), Some(2));
    std::fs::write(d.join("added_tokens.json"), r#"{"<|end|>": 1}"#).unwrap();
    let e = Vocab::from_hf_dir(d).unwrap_err();
    assert!(
        e.to_string().contains("added_tokens.json") && e.to_string().contains("\"b\""),
        "{e}"
    );
}
