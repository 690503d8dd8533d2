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
    let mut decoder = StreamDecoder::new(tokenizer, false);
    let mut filter = StopFilter {
        stops: opts.stop_strings.iter().filter(|s| !s.is_empty()).cloned().collect(),
        pending: String::new(),
    };
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut emit = |s: &str, text: &mut String| {
        if !s.is_empty() {
            text.push_str(s);
            on_text(s);
        }
    };
    let mut hit_stop_string = false;
    let finish = loop {
        if tokens.len() >= opts.max_tokens {
            break FinishReason::Length;
        }
        let next = sampler.sample(&logits)?;
        if opts.stop_ids.contains(&next) {
            break FinishReason::Stop;
        }
        tokens.push(next);
        sampler.accept(next);
        let piece = decoder.push(next)?;
        let (shown, stopped) = filter.push(&piece);
        emit(&shown, &mut text);
        if stopped {
            hit_stop_string = true;
            break FinishReason::Stop;
        }
        if tokens.len() >= opts.max_tokens {
            break FinishReason::Length;
        }
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
    if !hit_stop_string {
        // text held back as a possible stop-string start, and any incomplete character
        let rest = format!("{}{}", filter.flush(), decoder.finish());
        emit(&rest, &mut text);
    }
    Ok(Generation {
        tokens,
        text,
        finish,
        prompt_tokens: prompt.len(),
        prompt_seconds,
        generation_seconds: t1.elapsed().as_secs_f64(),
    })
}
