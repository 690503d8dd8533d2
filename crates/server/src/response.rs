//! OpenAI response bodies: whole responses and streamed chunks for both
//! endpoints, usage counts and log-probabilities.

use phi3_runtime::scheduler::TokenLogprobs;
use phi3_runtime::FinishReason;
use phi3_tokenizer::Tokenizer;
use serde_json::{json, Value};

/// Which API a response speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
}

/// OpenAI's `finish_reason`. A full context ends a reply as a token limit
/// does; a request cancelled by a shutdown reads "abort" (as vLLM says).
pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::ContextFull => "length",
        FinishReason::Cancelled => "abort",
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

impl Usage {
    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

/// The fields every response and chunk of one request shares.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
}

pub const FINGERPRINT: &str = concat!("phi3-", env!("CARGO_PKG_VERSION"));

impl Envelope {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Completions, _) => "text_completion",
        }
    }

    fn wrap(&self, chunk: bool, choices: Value, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "usage": usage,
        })
    }

    /// A whole (non-streamed) response.
    pub fn response(&self, text: &str, logprobs: Option<Value>, finish: &str, usage: Usage) -> Value {
        let choice = match self.api {
            Api::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
            Api::Completions => json!({
                "index": 0,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
        };
        self.wrap(false, json!([choice]), usage.json())
    }

    /// A streamed chunk carrying `text` (the first chat chunk also gives
    /// the role), its tokens' log-probabilities and, at the end, the reason.
    pub fn chunk(&self, first: bool, text: Option<&str>, logprobs: Option<Value>, finish: Option<&str>) -> Value {
        let choice = match self.api {
            Api::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Api::Completions => json!({
                "index": 0,
                "text": text.unwrap_or(""),
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
        };
        self.wrap(true, json!([choice]), Value::Null)
    }

    /// The last streamed chunk when the client asked for usage: no choices.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        self.wrap(true, json!([]), usage.json())
    }
}

/// Log-probabilities gathered for a response, in the shape of its API.
#[derive(Debug, Default)]
pub struct Logprobs {
    entries: Vec<Value>,
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top: Vec<Value>,
    offsets: Vec<usize>,
    offset: usize,
}

fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.token_bytes(id, true).unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

impl Logprobs {
    pub fn push(&mut self, api: Api, tok: &Tokenizer, token: u32, lp: &TokenLogprobs) {
        let (text, bytes) = token_text(tok, token);
        match api {
            Api::Chat => {
                let top: Vec<Value> = lp
                    .top
                    .iter()
                    .map(|&(id, l)| {
                        let (t, b) = token_text(tok, id);
                        json!({"token": t, "logprob": l, "bytes": b})
                    })
                    .collect();
                self.entries
                    .push(json!({"token": text, "logprob": lp.logprob, "bytes": bytes, "top_logprobs": top}));
            }
            Api::Completions => {
                let top: serde_json::Map<String, Value> = lp
                    .top
                    .iter()
                    .map(|&(id, l)| (token_text(tok, id).0, json!(l)))
                    .collect();
                self.offsets.push(self.offset);
                self.offset += text.len();
                self.tokens.push(text);
                self.token_logprobs.push(lp.logprob);
                self.top.push(Value::Object(top));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.tokens.is_empty()
    }

    /// The gathered entries as the API's `logprobs` object, emptying self
    /// (text offsets keep counting, for the next streamed chunk).
    pub fn take(&mut self, api: Api) -> Value {
        match api {
            Api::Chat => json!({"content": std::mem::take(&mut self.entries), "refusal": null}),
            Api::Completions => json!({
                "tokens": std::mem::take(&mut self.tokens),
                "token_logprobs": std::mem::take(&mut self.token_logprobs),
                "top_logprobs": std::mem::take(&mut self.top),
                "text_offset": std::mem::take(&mut self.offsets),
            }),
        }
    }
}
