//! Tier 3: encode and decode exactly as the Hugging Face tokenizer does, over
//! hard strings (testdata/tokenizer/hf_cases.json, made by
//! tools/reference/make_tokenizer_fixtures.py), for the vocabulary loaded from
//! GGUF metadata and from Hugging Face files alike.

use std::path::PathBuf;

use phi3_formats::GgufFile;
use phi3_tokenizer::{EncodeOptions, TokenKind, Tokenizer, Vocab};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gguf_tokenizer() -> Tokenizer {
    let g = GgufFile::open(root().join("../shared/testdata/tokenizer/ggml-vocab-phi-3.gguf")).unwrap();
    Tokenizer::from_gguf(&g).unwrap()
}

fn hf_tokenizer() -> Tokenizer {
    Tokenizer::new(Vocab::from_hf_dir(&root().join("testdata/tokenizer/phi-3-hf")).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check(tok: &Tokenizer, which: &str) {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(root().join("testdata/tokenizer/hf_cases.json")).unwrap()).unwrap();
    let mut failures = Vec::new();
    for case in doc["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let mut expect = |what: &str, got: Vec<u32>, want: Vec<u32>| {
            if got != want {
                failures.push(format!("{what} {text:?}\n   got  {got:?}\n   want {want:?}"));
            }
        };
        let parse = EncodeOptions {
            add_special: false,
            parse_special: true,
        };
        let plain = EncodeOptions {
            add_special: false,
            parse_special: false,
        };
        let bos = EncodeOptions {
            add_special: true,
            parse_special: true,
        };
        expect(
            "parse_special",
            tok.encode(text, parse),
            ids(&case["ids_parse_special"]),
        );
        expect(
            "no_parse_special",
            tok.encode(text, plain),
            ids(&case["ids_no_parse_special"]),
        );
        expect("with_bos", tok.encode(text, bos), ids(&case["ids_with_bos"]));
        let special_ids = ids(&case["ids_parse_special"]);
        for (render, key) in [(true, "decode_keep_special"), (false, "decode_skip_special")] {
            let got = tok.decode(&special_ids, render).unwrap();
            let want = case[key].as_str().unwrap();
            if got != want {
                failures.push(format!("{key} {text:?}\n   got  {got:?}\n   want {want:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{which}: {} failures\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gguf_vocabulary_matches_hugging_face() {
    check(&gguf_tokenizer(), "gguf");
}

#[test]
fn hugging_face_files_match_hugging_face() {
    check(&hf_tokenizer(), "hf");
}

#[test]
fn both_sources_give_the_same_vocabulary() {
    let (a, b) = (gguf_tokenizer(), hf_tokenizer());
    assert_eq!(a.vocab.len(), b.vocab.len());
    for id in 0..a.vocab.len() {
        assert_eq!(a.vocab.pieces[id], b.vocab.pieces[id], "piece {id}");
        // GGUF marks the padding rows [PAD32011].. as unknown; Hugging Face
        // lists them as ordinary vocabulary entries that no merge produces
        let padding = a.vocab.kinds[id] == TokenKind::Unknown && b.vocab.kinds[id] == TokenKind::Normal;
        assert!(a.vocab.kinds[id] == b.vocab.kinds[id] || padding, "kind of {id}");
    }
    assert_eq!(
        (a.vocab.bos, a.vocab.eos, a.vocab.add_bos),
        (b.vocab.bos, b.vocab.eos, b.vocab.add_bos)
    );
    assert_eq!(a.vocab.chat_template, b.vocab.chat_template);
}
