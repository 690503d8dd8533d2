//! Tier 3 properties: streaming equals full decoding, decoding inverts
//! encoding, and re-encoding is stable.

use std::path::PathBuf;
use std::sync::OnceLock;

use phi3_formats::GgufFile;
use phi3_tokenizer::{EncodeOptions, StreamDecoder, Tokenizer, TokenizerError, Vocab};
use proptest::prelude::*;

fn tok() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let p =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/tokenizer/ggml-vocab-phi-3.gguf");
        Tokenizer::from_gguf(&GgufFile::open(p).unwrap()).unwrap()
    })
}

const PLAIN: EncodeOptions = EncodeOptions {
    add_special: false,
    parse_special: false,
};

fn text_strategy() -> impl Strategy<Value = String> {
    // mixes ASCII, whitespace runs, multi-byte and 4-byte characters
    let pieces = prop_oneof![
        "[a-zA-Z0-9 ]{0,12}",
        "[ \t\n]{1,5}",
        "[àéîõüß中文日本語한국어]{1,4}",
        "[😀🎉🚀𝔘𝕄]{1,3}",
        "\\PC{0,6}",
    ];
    proptest::collection::vec(pieces, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn streaming_concatenation_equals_full_decode(ids in proptest::collection::vec(0u32..32064, 0..64), render in any::<bool>()) {
        let t = tok();
        let full = t.decode(&ids, render).unwrap();
        let mut d = StreamDecoder::new(t, render);
        let mut streamed = String::new();
        for &id in &ids {
            let piece = d.push(id).unwrap();
            // every chunk is whole characters: no chunk starts with a bare continuation
            streamed.push_str(&piece);
        }
        streamed.push_str(&d.finish());
        prop_assert_eq!(streamed, full);
    }

    #[test]
    fn decode_inverts_encode(s in text_strategy()) {
        let t = tok();
        let ids = t.encode(&s, PLAIN);
        prop_assert_eq!(t.decode(&ids, false).unwrap(), s);
    }

    #[test]
    fn re_encoding_is_stable(s in text_strategy()) {
        let t = tok();
        let ids = t.encode(&s, PLAIN);
        let again = t.encode(&t.decode(&ids, false).unwrap(), PLAIN);
        prop_assert_eq!(again, ids);
    }
}

#[test]
fn streaming_never_splits_a_character() {
    // "😀" is four byte-fallback tokens: nothing may come out until the last
    let t = tok();
    let ids = t.encode("😀", PLAIN);
    assert_eq!(ids.len(), 5, "▁ plus four byte tokens: {ids:?}");
    let mut d = StreamDecoder::new(t, false);
    let outs: Vec<String> = ids.iter().map(|&i| d.push(i).unwrap()).collect();
    assert_eq!(outs, vec!["", "", "", "", "😀"]);
    // an incomplete character at the end is flushed as U+FFFD
    let mut d = StreamDecoder::new(t, false);
    assert_eq!(d.push(ids[1]).unwrap(), "");
    assert_eq!(d.finish(), "\u{FFFD}");
}

#[test]
fn stop_tokens_include_end_and_endoftext() {
    let ids = tok().vocab.end_of_generation_ids();
    assert_eq!(ids, vec![32000, 32007]);
}

#[test]
fn ids_outside_the_vocabulary_are_an_error() {
    let e = tok().decode(&[15043, 40000], false).unwrap_err();
    assert!(matches!(e, TokenizerError::UnknownId { id: 40000, size: 32064 }), "{e}");
}

#[test]
fn inconsistent_vocabularies_are_rejected() {
    use phi3_tokenizer::TokenKind::*;
    let e = Vocab::new("v", vec!["a".into(), "b".into()], vec![0.0], vec![Normal, Normal]).unwrap_err();
    assert!(e.to_string().contains("scores"), "{e}");
    let e = Vocab::new("v", vec!["a".into()], vec![0.0], vec![Normal, Normal]).unwrap_err();
    assert!(e.to_string().contains("token_type"), "{e}");
    let e = Vocab::new("v", vec!["<0xZZ>".into()], vec![0.0], vec![Byte]).unwrap_err();
    assert!(e.to_string().contains("<0xNN>"), "{e}");
    let e = Vocab::new("v", vec![], vec![], vec![]).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}
