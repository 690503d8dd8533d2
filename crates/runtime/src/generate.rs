//! The generator: prefill the prompt, then decode token by token, streaming
//! text as soon as it is whole characters, and stopping at the model's stop
//! tokens, at user stop strings (even when one spans several tokens: nothing
//! after it is ever shown), at the token limit, or when the context is full.

use std::time::Instant;

use phi3_model::{Logits, ModelError, Session};
use phi3_tokenizer::{StreamDecoder, Tokenizer, TokenizerError};

use crate::sampler::{Sampler, SamplerError};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error("the prompt is empty")]
    EmptyPrompt,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The session's context is full: the model cannot take another token.
    /// (The Phi-3 models' attention does not allow sliding the context
    /// without recomputing it; phi3 stops instead, and says so.)
    ContextFull,
    /// Stopped through `GenerateOptions::cancel`.
    Cancelled,
}

#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// Token ids that end the reply (the model's and the vocabulary's).
    pub stop_ids: Vec<u32>,
    /// Texts that end the reply; the text is cut before them.
    pub stop_strings: Vec<String>,
    /// Set from another thread (a Ctrl-C handler, a client that left) to
    /// stop after the current token.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated token ids (the stop token excluded).
    pub tokens: Vec<u32>,
    /// The text shown (cut before any stop string).
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub prompt_seconds: f64,
    pub generation_seconds: f64,
}

/// Splits streamed text into what can be shown now and what must wait
/// because it could be the start of a stop string.
struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    /// Adds text; returns (text safe to show, whether a stop string was hit).
    fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            let shown = self.pending[..at].to_string();
            self.pending.clear();
            return (shown, true);
        }
        // hold back the longest suffix that is a prefix of some stop string
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in self.pending.char_indices() {
                let tail = &self.pending[i..];
                if s.starts_with(tail) {
                    keep = keep.max(tail.len());
                    break;
                }
            }
        }
        let cut = self.pending.len() - keep;
        let shown = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (shown, false)
    }

    fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Turns sampled tokens into the text shown and decides when a reply ends:
/// stop tokens, stop strings (text after one is never shown), the token
/// limit. Shared by [`generate`] and the server's scheduler.
pub struct ReplyState<'t> {
    decoder: StreamDecoder<'t>,
    filter: StopFilter,
    stop_ids: Vec<u32>,
    max_tokens: usize,
    hit_stop_string: bool,
    /// Tokens taken so far (a stop token excluded).
    pub tokens: Vec<u32>,
    /// Text shown so far.
    pub text: String,
}

impl<'t> ReplyState<'t> {
    pub fn new(tokenizer: &'t Tokenizer, opts: &GenerateOptions) -> Self {
        ReplyState {
            decoder: StreamDecoder::new(tokenizer, false),
            filter: StopFilter {
                stops: opts.stop_strings.iter().filter(|s| !s.is_empty()).cloned().collect(),
                pending: String::new(),
            },
            stop_ids: opts.stop_ids.clone(),
            max_tokens: opts.max_tokens,
            hit_stop_string: false,
            tokens: Vec::new(),
            text: String::new(),
        }
    }

    /// Whether the token limit is already reached (before sampling).
    pub fn full(&self) -> bool {
        self.tokens.len() >= self.max_tokens
    }

    /// Takes one sampled token: returns the text to show now and, when the
    /// reply ends with it, why. A stop token is not taken.
    pub fn push(&mut self, token: u32) -> Result<(String, Option<FinishReason>), GenerateError> {
        if self.stop_ids.contains(&token) {
            return Ok((String::new(), Some(FinishReason::Stop)));
        }
        self.tokens.push(token);
        let piece = self.decoder.push(token)?;
        let (shown, stopped) = self.filter.push(&piece);
        self.text.push_str(&shown);
        if stopped {
            self.hit_stop_string = true;
            return Ok((shown, Some(FinishReason::Stop)));
        }
        let done = self.full().then_some(FinishReason::Length);
        Ok((shown, done))
    }

    /// Ends the reply: returns the text still held back (a possible start
    /// of a stop string, an incomplete character), unless a stop string ended it.
    pub fn finish(&mut self) -> String {
        if self.hit_stop_string {
            return String::new();
        }
        let rest = format!("{}{}", self.filter.flush(), self.decoder.finish());
        self.text.push_str(&rest);
        rest
    }
}

/// Runs `prompt` through `session` (which may already hold earlier turns)
/// and generates until a stop, calling `on_text` with each piece of text.
pub fn generate(
    session: &mut Session,
    tokenizer: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_text: impl FnMut(&str),
) -> Result<Generation, GenerateError> {
    if prompt.is_empty() && session.tokens().is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let context = session.context();
    let t0 = Instant::now();
    for &t in prompt {
        sampler.accept(t);
    }
    let mut logits = session.feed(prompt, Logits::Last)?;
    let prompt_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut reply = ReplyState::new(tokenizer, opts);
    let finish = loop {
        if reply.full() {
            break FinishReason::Length;
        }
        let next = sampler.sample(&logits)?;
        let (shown, done) = reply.push(next)?;
        if !shown.is_empty() {
            on_text(&shown);
        }
        if let Some(reason) = done {
            break reason;
        }
        sampler.accept(next);
        if session.tokens().len() >= context {
            break FinishReason::ContextFull;
        }
        if opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            // the sampled token is shown but not fed: feed it so the session
            // holds exactly what was shown
            session.feed(&[next], Logits::Last)?;
            break FinishReason::Cancelled;
        }
        logits = session.feed(&[next], Logits::Last)?;
    };
    let rest = reply.finish();
    if !rest.is_empty() {
        on_text(&rest);
    }
    Ok(Generation {
        tokens: reply.tokens,
        text: reply.text,
        finish,
        prompt_tokens: prompt.len(),
        prompt_seconds,
        generation_seconds: t1.elapsed().as_secs_f64(),
    })
}
