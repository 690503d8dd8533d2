//! Tier 3: llama.cpp's tokenizer test vectors (shared/testdata/tokenizer),
//! generated with the Hugging Face fast tokenizer: every case, exactly.

use std::path::PathBuf;

use phi3_formats::GgufFile;
use phi3_tokenizer::{EncodeOptions, Tokenizer};

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/tokenizer")
}

const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// The `.inp` strings and `.out` ids, read as llama.cpp's test-tokenizer-0 reads them.
fn cases(vocab: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(shared().join(format!("{vocab}.inp"))).unwrap();
    let out = std::fs::read_to_string(shared().join(format!("{vocab}.out"))).unwrap();
    let mut inputs = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(SEPARATOR) {
            Some(i) => {
                inputs.push(rest[..i].to_string());
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => {
                inputs.push(rest.to_string());
                rest = "";
            }
        }
    }
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(inputs.len(), expected.len());
    inputs.into_iter().zip(expected).collect()
}

fn check(vocab: &str) {
    let gguf = GgufFile::open(shared().join(vocab)).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let cases = cases(vocab);
    assert_eq!(cases.len(), 46);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, EncodeOptions::default());
        if &got != want {
            failures.push(format!("{text:?}\n  got  {got:?}\n  want {want:?}"));
        }
        // decoding is the exact inverse on all of these strings
        let back = tok.decode(&got, false).unwrap();
        if &back != text {
            failures.push(format!("decode {text:?} gave {back:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{vocab}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn phi3_vocabulary_matches_every_vector() {
    check("ggml-vocab-phi-3.gguf");
}

#[test]
fn llama_spm_vocabulary_matches_every_vector() {
    check("ggml-vocab-llama-spm.gguf");
}
