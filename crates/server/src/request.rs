//! Reading OpenAI requests: every field checked, with an error that names
//! it; fields phi3 cannot honour are refused rather than ignored.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use phi3_runtime::SamplerConfig;
use phi3_tokenizer::Message;

use crate::error::ApiError;

/// What a request asks of the generator, for both endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub sampler: SamplerConfig,
    /// `None`: until a stop or the end of the context (capped by the server).
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Log-probabilities of the chosen tokens and this many alternatives.
    pub logprobs: Option<usize>,
}

/// A `/v1/chat/completions` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub params: Params,
}

/// What a `/v1/completions` request gives as its prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// A `/v1/completions` request.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    pub params: Params,
}

/// Fields that change what the OpenAI API would return and that phi3 does
/// not do (yet): refused with a clear error.
const UNSUPPORTED: &[&str] = &[
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
    "web_search_options",
    "suffix",
];

/// Fields that do not change the answer: accepted and ignored.
const IGNORED: &[&str] = &["model", "user", "store", "metadata", "service_tier"];

/// The request object's fields, taken one at a time.
struct Fields(Map<String, Value>);

impl Fields {
    fn parse(body: &[u8]) -> Result<Fields, ApiError> {
        let text = std::str::from_utf8(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ))
        })?;
        if text.trim().is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; expected a JSON object",
            ));
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(format!(
                "the request body is not valid JSON: {e}"
            ))),
        }
    }

    /// Removes and converts a field; `null` counts as absent.
    fn take<T: DeserializeOwned>(&mut self, name: &str, expected: &str) -> Result<Option<T>, ApiError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|_| ApiError::invalid(name, format!("'{name}' must be {expected}"))),
        }
    }

    fn number(&mut self, name: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
        let v: Option<f64> = self.take(name, "a number")?;
        match v {
            Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::invalid(
                name,
                format!("'{name}' is {x}; it must be between {lo} and {hi}"),
            )),
            v => Ok(v.map(|x| x as f32)),
        }
    }

    fn count(&mut self, name: &str, lo: u64, hi: u64) -> Result<Option<usize>, ApiError> {
        let v: Option<u64> = self.take(name, "a non-negative integer")?;
        match v {
            Some(x) if !(lo..=hi).contains(&x) => {
                let range = if hi == u64::MAX {
                    format!("at least {lo}")
                } else {
                    format!("between {lo} and {hi}")
                };
                Err(ApiError::invalid(name, format!("'{name}' is {x}; it must be {range}")))
            }
            v => Ok(v.map(|x| x as usize)),
        }
    }

    /// Refuses fields phi3 does not honour and any it does not know.
    fn finish(mut self) -> Result<(), ApiError> {
        for name in IGNORED {
            self.0.remove(*name);
        }
        if let Some(name) = UNSUPPORTED.iter().find(|n| self.0.contains_key(**n)) {
            return Err(ApiError::invalid(
                name,
                format!("'{name}' is not supported by this server"),
            ));
        }
        match self.0.keys().next() {
            Some(name) => Err(ApiError::invalid(
                name,
                format!("Unrecognized request argument supplied: {name}"),
            )),
            None => Ok(()),
        }
    }
}

/// The generation settings both endpoints share. `max_tokens_cap` is the
/// server's limit; `legacy` selects the completions API's `logprobs` integer.
fn params(f: &mut Fields, max_tokens_cap: usize, legacy: bool) -> Result<Params, ApiError> {
    let n = f.count("n", 0, u64::MAX)?;
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "n",
            "only n = 1 is supported (one choice per request)",
        ));
    }
    if legacy {
        let best_of = f.count("best_of", 0, u64::MAX)?;
        if best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::invalid("best_of", "only best_of = 1 is supported"));
        }
        let echo: Option<bool> = f.take("echo", "a boolean")?;
        if echo == Some(true) {
            return Err(ApiError::invalid("echo", "'echo' is not supported by this server"));
        }
    } else if let Some(format) = f.take::<Value>("response_format", "an object")? {
        if format.get("type").and_then(Value::as_str) != Some("text") {
            return Err(ApiError::invalid(
                "response_format",
                "only {\"type\": \"text\"} is supported (no JSON mode yet)",
            ));
        }
    }
    let mut max_tokens = f.count("max_tokens", 1, u64::MAX)?;
    if !legacy {
        if let Some(m) = f.count("max_completion_tokens", 1, u64::MAX)? {
            max_tokens = Some(m);
        }
    }
    if let Some(m) = max_tokens {
        if m > max_tokens_cap {
            return Err(ApiError::invalid(
                "max_tokens",
                format!("max_tokens is {m}; this server allows at most {max_tokens_cap}"),
            ));
        }
    }
    let temperature = f.number("temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = f.number("top_p", 0.0, 1.0)?.unwrap_or(1.0);
    let presence_penalty = f.number("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let frequency_penalty = f.number("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let top_k = f.count("top_k", 0, u64::MAX)?.unwrap_or(0);
    let min_p = f.number("min_p", 0.0, 1.0)?.unwrap_or(0.0);
    let repeat_penalty = f.number("repeat_penalty", 0.0, 10.0)?.unwrap_or(1.0);
    if repeat_penalty == 0.0 {
        return Err(ApiError::invalid("repeat_penalty", "'repeat_penalty' must be above 0"));
    }
    let seed = match f.take::<Value>("seed", "an integer")? {
        None => fresh_seed(),
        Some(v) => v
            .as_i64()
            .map(|s| s as u64)
            .or_else(|| v.as_u64())
            .ok_or_else(|| ApiError::invalid("seed", "'seed' must be an integer"))?,
    };
    let stop = match f.take::<Value>("stop", "a string or a list of strings")? {
        None => vec![],
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => {
            if items.len() > 4 {
                return Err(ApiError::invalid("stop", "'stop' may hold at most 4 sequences"));
            }
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(ApiError::invalid(
                        "stop",
                        "'stop' must be a string or a list of strings",
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "'stop' must be a string or a list of strings",
            ))
        }
    };
    let logit_bias = match f.take::<Map<String, Value>>("logit_bias", "an object of token ids to numbers")? {
        None => vec![],
        Some(m) => {
            m.into_iter()
                .map(|(k, v)| {
                    let id: u32 = k.trim().parse().map_err(|_| {
                        ApiError::invalid("logit_bias", format!("logit_bias key '{k}' is not a token id"))
                    })?;
                    match v.as_f64() {
                        Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                        _ => Err(ApiError::invalid(
                            "logit_bias",
                            format!("logit_bias for token {id} must be a number between -100 and 100"),
                        )),
                    }
                })
                .collect::<Result<_, _>>()?
        }
    };
    let logprobs = if legacy {
        f.count("logprobs", 0, 5)?
    } else {
        let wanted: Option<bool> = f.take("logprobs", "a boolean")?;
        let top = f.count("top_logprobs", 0, 20)?;
        match (wanted.unwrap_or(false), top) {
            (true, top) => Some(top.unwrap_or(0)),
            (false, Some(_)) => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "'top_logprobs' needs 'logprobs': true",
                ));
            }
            (false, None) => None,
        }
    };
    let stream: bool = f.take("stream", "a boolean")?.unwrap_or(false);
    let include_usage = match f.take::<Map<String, Value>>("stream_options", "an object")? {
        None => false,
        Some(_) if !stream => {
            return Err(ApiError::invalid(
                "stream_options",
                "'stream_options' needs 'stream': true",
            ));
        }
        Some(mut o) => {
            let v = o.remove("include_usage").unwrap_or(Value::Bool(false));
            if let Some(k) = o.keys().next() {
                return Err(ApiError::invalid(
                    "stream_options",
                    format!("unknown stream option '{k}'"),
                ));
            }
            v.as_bool()
                .ok_or_else(|| ApiError::invalid("stream_options", "'include_usage' must be a boolean"))?
        }
    };
    let sampler = SamplerConfig {
        temperature,
        top_k,
        top_p,
        min_p,
        repeat_penalty,
        presence_penalty,
        frequency_penalty,
        penalty_last_n: 64,
        logit_bias,
        seed,
    };
    Ok(Params {
        sampler,
        max_tokens,
        stop,
        stream,
        include_usage,
        logprobs,
    })
}

/// A seed for requests that give none, different per request.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The text of a message's `content`: a string or a list of text parts.
fn content(v: Value, at: usize) -> Result<String, ApiError> {
    let param = format!("messages[{at}].content");
    match v {
        Value::String(s) => Ok(s),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (Some("text"), _) => {
                        return Err(ApiError::invalid(&param, "a text part needs a 'text' string"));
                    }
                    (Some(other), _) => {
                        return Err(ApiError::invalid(
                            &param,
                            format!("content parts of type '{other}' are not supported (text only)"),
                        ));
                    }
                    (None, _) => return Err(ApiError::invalid(&param, "each content part needs a 'type'")),
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid(
            &param,
            "'content' must be a string or a list of text parts",
        )),
    }
}

fn message(v: Value, at: usize) -> Result<Message, ApiError> {
    let Value::Object(mut m) = v else {
        return Err(ApiError::invalid(
            &format!("messages[{at}]"),
            "each message must be an object",
        ));
    };
    let param = |f: &str| format!("messages[{at}].{f}");
    let role = match m.remove("role") {
        Some(Value::String(r)) => r,
        Some(_) => return Err(ApiError::invalid(&param("role"), "'role' must be a string")),
        None => return Err(ApiError::invalid(&param("role"), "each message needs a 'role'")),
    };
    let role = match role.as_str() {
        "system" | "user" | "assistant" => role,
        // OpenAI's newer name for system instructions
        "developer" => "system".to_string(),
        "tool" | "function" => {
            return Err(ApiError::invalid(
                &param("role"),
                format!("'{role}' messages are not supported (no tools yet)"),
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                &param("role"),
                format!("unknown role '{role}': expected system, user or assistant"),
            ));
        }
    };
    let text = match m.remove("content") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(&param("content"), "each message needs a 'content'"));
        }
        Some(c) => content(c, at)?,
    };
    m.remove("name");
    if let Some(k) = m.keys().next() {
        let why = if k == "tool_calls" || k == "function_call" {
            format!("'{k}' is not supported (no tools yet)")
        } else {
            format!("unknown message field '{k}'")
        };
        return Err(ApiError::invalid(&param(k), why));
    }
    Ok(Message::new(role, text))
}

impl ChatRequest {
    pub fn parse(body: &[u8], max_tokens_cap: usize) -> Result<ChatRequest, ApiError> {
        let mut f = Fields::parse(body)?;
        let messages: Vec<Value> = f
            .take("messages", "a list of messages")?
            .ok_or_else(|| ApiError::invalid("messages", "'messages' is required"))?;
        if messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "'messages' must hold at least one message",
            ));
        }
        let messages = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| message(m, i))
            .collect::<Result<Vec<_>, _>>()?;
        let params = params(&mut f, max_tokens_cap, false)?;
        f.finish()?;
        Ok(ChatRequest { messages, params })
    }
}

impl CompletionRequest {
    pub fn parse(body: &[u8], max_tokens_cap: usize) -> Result<CompletionRequest, ApiError> {
        let mut f = Fields::parse(body)?;
        let bad = || {
            ApiError::invalid(
                "prompt",
                "'prompt' must be a string or a list of token ids (one prompt)",
            )
        };
        let prompt = match f.take::<Value>("prompt", "a string")? {
            None => return Err(ApiError::invalid("prompt", "'prompt' is required")),
            Some(Value::String(s)) => Prompt::Text(s),
            Some(Value::Array(items)) => match items.as_slice() {
                [Value::String(s)] => Prompt::Text(s.clone()),
                [Value::Array(_), ..] | [Value::String(_), ..] => {
                    return Err(ApiError::invalid(
                        "prompt",
                        "one prompt per request (batches are not supported)",
                    ));
                }
                _ => Prompt::Tokens(
                    items
                        .iter()
                        .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(bad))
                        .collect::<Result<_, _>>()?,
                ),
            },
            Some(_) => return Err(bad()),
        };
        let mut params = params(&mut f, max_tokens_cap, true)?;
        // the completions API's default
        params.max_tokens.get_or_insert(16.min(max_tokens_cap));
        f.finish()?;
        Ok(CompletionRequest { prompt, params })
    }
}
