//! The generator on a small random model carrying the real Phi-3 vocabulary.

mod common;

use common::model_with_vocab;
use phi3_formats::GgufFile;
use phi3_model::{KvType, Model, RopePolicy, Session, SessionOptions};
use phi3_runtime::{generate, FinishReason, GenerateOptions, Sampler, SamplerConfig};
use phi3_tokenizer::{EncodeOptions, Tokenizer};

struct Fixture {
    _dir: tempfile::TempDir,
    model: Model,
    tok: Tokenizer,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_vocab(dir.path());
    let model = Model::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    Fixture { _dir: dir, model, tok }
}

fn run(
    f: &Fixture,
    cfg: SamplerConfig,
    opts: &GenerateOptions,
    context: usize,
) -> (phi3_runtime::Generation, Vec<String>) {
    let mut session = Session::new(
        &f.model,
        SessionOptions {
            context,
            rope_policy: RopePolicy::Reference,
            kv_type: KvType::F16,
        },
    )
    .unwrap();
    let mut sampler = Sampler::new(cfg).unwrap();
    let prompt = f.tok.encode(
        "Hello, how are you?",
        EncodeOptions {
            add_special: true,
            parse_special: true,
        },
    );
    let mut pieces = Vec::new();
    let g = generate(&mut session, &f.tok, &mut sampler, &prompt, opts, |s| {
        pieces.push(s.to_string())
    })
    .unwrap();
    (g, pieces)
}

#[test]
fn generation_is_deterministic_streams_and_honours_stops() {
    let f = fixture();
    let sampled = SamplerConfig {
        seed: 5,
        temperature: 1.0,
        ..Default::default()
    };
    let opts = GenerateOptions {
        max_tokens: 24,
        ..Default::default()
    };
    let (a, pieces) = run(&f, sampled.clone(), &opts, 64);
    let (b, _) = run(&f, sampled, &opts, 64);
    assert_eq!(a.tokens, b.tokens, "same seed, same tokens");
    assert_eq!(a.finish, FinishReason::Length);
    assert_eq!(a.tokens.len(), 24);
    assert_eq!(pieces.concat(), a.text, "the streamed pieces make the text");
    assert_eq!(a.text, f.tok.decode(&a.tokens, false).unwrap());

    // a stop string taken from the middle of that text, spanning tokens
    let chars: Vec<char> = a.text.chars().collect();
    assert!(chars.len() > 12, "{:?}", a.text);
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 4].iter().collect();
    let first = a.text.find(&stop).unwrap();
    let with_stop = GenerateOptions {
        stop_strings: vec![stop.clone()],
        ..opts.clone()
    };
    let (c, pieces) = run(
        &f,
        SamplerConfig {
            seed: 5,
            temperature: 1.0,
            ..Default::default()
        },
        &with_stop,
        64,
    );
    assert_eq!(c.finish, FinishReason::Stop);
    assert_eq!(c.text, a.text[..first], "cut before {stop:?}");
    assert_eq!(pieces.concat(), c.text, "nothing after the stop string was ever shown");

    // a stop token
    let stop_id = a.tokens[5];
    let at = a.tokens.iter().position(|&t| t == stop_id).unwrap();
    let with_id = GenerateOptions {
        stop_ids: vec![stop_id],
        ..opts.clone()
    };
    let (d, _) = run(
        &f,
        SamplerConfig {
            seed: 5,
            temperature: 1.0,
            ..Default::default()
        },
        &with_id,
        64,
    );
    assert_eq!(d.finish, FinishReason::Stop);
    assert_eq!(d.tokens, a.tokens[..at]);
}

#[test]
fn a_full_context_ends_generation_clearly() {
    let f = fixture();
    let opts = GenerateOptions {
        max_tokens: 100,
        ..Default::default()
    };
    let (g, _) = run(&f, SamplerConfig::greedy(), &opts, 16);
    assert_eq!(g.finish, FinishReason::ContextFull);
    assert_eq!(
        g.prompt_tokens + g.tokens.len(),
        17,
        "the last token is sampled but not fed"
    );
}

#[test]
fn chat_turns_reuse_the_kv_cache_and_cancel_cleanly() {
    use phi3_runtime::Chat;
    use phi3_tokenizer::ChatTemplate;
    let f = fixture();
    let session = Session::new(
        &f.model,
        SessionOptions {
            context: 256,
            rope_policy: RopePolicy::Reference,
            kv_type: KvType::F16,
        },
    )
    .unwrap();
    let mut chat = Chat::new(session, &f.tok, ChatTemplate::builtin_phi3());
    chat.system = Some("Be brief.".into());
    let mut sampler = Sampler::new(SamplerConfig::greedy()).unwrap();
    let opts = GenerateOptions {
        max_tokens: 8,
        ..Default::default()
    };
    chat.reply("Hello", &mut sampler, &opts, |_| {}).unwrap();
    let first = chat.last_fed;
    let held = chat.session.tokens().len();
    chat.reply("And again", &mut sampler, &opts, |_| {}).unwrap();
    // the second turn feeds far fewer tokens than the whole conversation
    assert!(
        chat.last_fed < held,
        "fed {} of a conversation of {}+ tokens",
        chat.last_fed,
        held
    );
    assert!(first > chat.last_fed / 2);
    assert_eq!(chat.messages.len(), 4);
    // the same conversation fed from scratch gives the same second reply
    let second = chat.messages[3].content.clone();
    let session = Session::new(
        &f.model,
        SessionOptions {
            context: 256,
            rope_policy: RopePolicy::Reference,
            kv_type: KvType::F16,
        },
    )
    .unwrap();
    let mut fresh = Chat::new(session, &f.tok, ChatTemplate::builtin_phi3());
    fresh.system = Some("Be brief.".into());
    fresh.messages = chat.messages[..2].to_vec();
    let mut sampler = Sampler::new(SamplerConfig::greedy()).unwrap();
    fresh.reply("And again", &mut sampler, &opts, |_| {}).unwrap();
    assert!(
        fresh.last_fed > chat.last_fed,
        "from scratch feeds the whole conversation"
    );
    assert_eq!(fresh.messages[3].content, second);

    // cancellation stops after the current token, and the chat goes on
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let opts = GenerateOptions {
        max_tokens: 50,
        cancel: Some(cancel),
        ..Default::default()
    };
    let g = chat.reply("Stop me", &mut sampler, &opts, |_| {}).unwrap();
    assert_eq!(g.finish, FinishReason::Cancelled);
    assert_eq!(g.tokens.len(), 1);
    chat.reset();
    assert!(chat.messages.is_empty() && chat.session.tokens().is_empty());
}
