//! Tier 3: chat templates render exactly as transformers' apply_chat_template
//! (testdata/tokenizer/chat_cases.json), and the rendered prompts tokenize to
//! the same ids.

use std::path::PathBuf;

use phi3_formats::GgufFile;
use phi3_tokenizer::{ChatTemplate, EncodeOptions, Message, Tokenizer, TokenizerError};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn template_source(file: &str) -> String {
    let path = root().join("../shared/reference/configs").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    if file.ends_with(".json") {
        let v: Value = serde_json::from_str(&text).unwrap();
        v["chat_template"].as_str().unwrap().to_string()
    } else {
        text
    }
}

#[test]
fn templates_render_like_transformers() {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(root().join("testdata/tokenizer/chat_cases.json")).unwrap()).unwrap();
    let g = GgufFile::open(root().join("../shared/testdata/tokenizer/ggml-vocab-phi-3.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 24);
    for case in cases {
        let tmpl = ChatTemplate::new(&template_source(case["template_file"].as_str().unwrap())).unwrap();
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let text = tmpl
            .render(
                &messages,
                case["add_generation_prompt"].as_bool().unwrap(),
                case["bos_token"].as_str().unwrap(),
                case["eos_token"].as_str().unwrap(),
            )
            .unwrap();
        let label = format!(
            "{} / {} / gen={}",
            case["template"], case["conversation"], case["add_generation_prompt"]
        );
        assert_eq!(text, case["text"].as_str().unwrap(), "{label}");
        let ids = tok.encode(
            &text,
            EncodeOptions {
                add_special: false,
                parse_special: true,
            },
        );
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want, "{label}");
    }
}

#[test]
fn the_early_template_drops_the_system_message_and_the_builtin_keeps_it() {
    // The first Phi-3-mini-4k template silently drops system messages (a
    // pitfall users hit); phi3's built-in format keeps them.
    let early = ChatTemplate::new(&template_source(
        "Phi-3-mini-4k-instruct/chat_template.from-ggml-vocab-phi-3.jinja",
    ))
    .unwrap();
    let msgs = [Message::new("system", "Be brief."), Message::new("user", "Hi")];
    let a = early.render(&msgs, true, "<s>", "<|endoftext|>").unwrap();
    assert!(!a.contains("Be brief."));
    let b = ChatTemplate::builtin_phi3()
        .render(&msgs, true, "<s>", "<|endoftext|>")
        .unwrap();
    assert_eq!(b, "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n");
}

#[test]
fn template_errors_are_reported() {
    let e = ChatTemplate::new("{% for m in messages %}{{ m.content }").unwrap_err();
    assert!(matches!(e, TokenizerError::Template { .. }), "{e}");
    let t = ChatTemplate::new("{% if messages|length == 0 %}{{ raise_exception('no messages') }}{% endif %}").unwrap();
    let e = t.render(&[], true, "", "").unwrap_err();
    assert!(e.to_string().contains("no messages"), "{e}");
}
