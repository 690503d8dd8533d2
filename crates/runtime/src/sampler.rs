//! The sampler: a chain of small steps over candidate tokens, in llama.cpp's
//! order: logit bias, penalties (repetition, presence, frequency, over the
//! last `penalty_last_n` tokens), top-k, top-p, min-p, temperature, then a
//! seeded draw, or the most likely token when the temperature is 0.

use crate::rng::SplitMix64;

/// Sampling settings, with the meanings users know from llama.cpp and the
/// OpenAI API.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one (0: none).
    pub min_p: f32,
    /// CTRL-style repetition penalty: positive logits of recent tokens are
    /// divided by it, negative ones multiplied (1: none).
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every recent token (OpenAI).
    pub presence_penalty: f32,
    /// Subtracted per occurrence of a recent token (OpenAI).
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Added to the logits of the given tokens (−inf bans a token).
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error("{name} = {value}: {why}")]
    BadValue {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("logit_bias names token {id}, outside the vocabulary of {vocab}")]
    BiasOutOfRange { id: u32, vocab: usize },
    #[error("no token is left to sample: every candidate was banned")]
    NothingLeft,
}

impl SamplerConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Rejects nonsensical values with a message naming the setting.
    pub fn validate(&self) -> Result<(), SamplerError> {
        let bad = |name, value: f32, why| {
            Err(SamplerError::BadValue {
                name,
                value: value.to_string(),
                why,
            })
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", self.temperature, "must be a number ≥ 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "must be in [0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty", self.repeat_penalty, "must be a number > 0");
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(v.is_finite() && (-2.0..=2.0).contains(&v)) {
                return bad(name, v, "must be in [-2, 2]");
            }
        }
        for &(_, b) in &self.logit_bias {
            if b.is_nan() {
                return bad("logit_bias", b, "must be a number");
            }
        }
        Ok(())
    }
}

/// A candidate token and its (adjusted) logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

pub struct Sampler {
    cfg: SamplerConfig,
    rng: SplitMix64,
    recent: Vec<u32>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Result<Sampler, SamplerError> {
        cfg.validate()?;
        Ok(Sampler {
            rng: SplitMix64::new(cfg.seed),
            cfg,
            recent: Vec::new(),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Records a token as generated (or part of the prompt), for the penalties.
    pub fn accept(&mut self, token: u32) {
        self.recent.push(token);
        let keep = self.cfg.penalty_last_n.max(1) * 4;
        if self.recent.len() > keep {
            self.recent.drain(..self.recent.len() - self.cfg.penalty_last_n);
        }
    }

    /// Forgets the recorded tokens.
    pub fn reset(&mut self) {
        self.recent.clear();
    }

    /// Picks the next token from `logits`. Does not record it (see `accept`).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        let mut c: Vec<Candidate> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| Candidate { id: i as u32, logit: l })
            .collect();
        apply_logit_bias(&mut c, &self.cfg.logit_bias)?;
        let window = &self.recent[self.recent.len().saturating_sub(self.cfg.penalty_last_n)..];
        apply_penalties(&mut c, window, &self.cfg);
        c.retain(|x| !x.logit.is_nan() && x.logit > f32::NEG_INFINITY);
        if c.is_empty() {
            return Err(SamplerError::NothingLeft);
        }
        if self.cfg.temperature == 0.0 {
            return Ok(argmax(&c));
        }
        sort_descending(&mut c);
        top_k(&mut c, self.cfg.top_k);
        top_p(&mut c, self.cfg.top_p);
        min_p(&mut c, self.cfg.min_p);
        let probs = softmax(&c, self.cfg.temperature);
        Ok(draw(&c, &probs, self.rng.next_f64()))
    }
}

pub fn apply_logit_bias(c: &mut [Candidate], bias: &[(u32, f32)]) -> Result<(), SamplerError> {
    let vocab = c.len();
    for &(id, b) in bias {
        let cand = c
            .get_mut(id as usize)
            .ok_or(SamplerError::BiasOutOfRange { id, vocab })?;
        cand.logit += b;
    }
    Ok(())
}

/// Repetition (CTRL), presence and frequency penalties over `recent`.
pub fn apply_penalties(c: &mut [Candidate], recent: &[u32], cfg: &SamplerConfig) {
    if recent.is_empty() {
        return;
    }
    let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for &t in recent {
        *counts.entry(t).or_default() += 1;
    }
    for (&id, &n) in &counts {
        let Some(x) = c.get_mut(id as usize) else { continue };
        if cfg.repeat_penalty != 1.0 {
            x.logit = if x.logit > 0.0 {
                x.logit / cfg.repeat_penalty
            } else {
                x.logit * cfg.repeat_penalty
            };
        }
        x.logit -= cfg.presence_penalty + cfg.frequency_penalty * n as f32;
    }
}

fn argmax(c: &[Candidate]) -> u32 {
    // the lowest id wins ties, so greedy decoding is deterministic
    let mut best = c[0];
    for x in &c[1..] {
        if x.logit > best.logit {
            best = *x;
        }
    }
    best.id
}

fn sort_descending(c: &mut [Candidate]) {
    c.sort_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
}

/// Keeps the `k` most likely (k = 0 keeps all). `c` is sorted.
pub fn top_k(c: &mut Vec<Candidate>, k: usize) {
    if k > 0 && c.len() > k {
        c.truncate(k);
    }
}

/// Keeps the most likely tokens until their probability reaches `p` (at
/// least one). `c` is sorted.
pub fn top_p(c: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 {
        return;
    }
    let probs = softmax(c, 1.0);
    let mut sum = 0f64;
    for (i, &q) in probs.iter().enumerate() {
        sum += q as f64;
        if sum >= p as f64 {
            c.truncate(i + 1);
            return;
        }
    }
}

/// Drops tokens whose probability is below `min_p` × the largest. `c` is sorted.
pub fn min_p(c: &mut Vec<Candidate>, min_p: f32) {
    if min_p <= 0.0 || c.is_empty() {
        return;
    }
    // p_i / p_max = exp(l_i − l_max)
    let threshold = c[0].logit + min_p.ln();
    let keep = c.iter().take_while(|x| x.logit >= threshold).count().max(1);
    c.truncate(keep);
}

/// Probabilities of `c` at `temperature` (computed in f64 for stability).
pub fn softmax(c: &[Candidate], temperature: f32) -> Vec<f32> {
    let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max);
    let t = temperature as f64;
    let e: Vec<f64> = c.iter().map(|x| ((x.logit - max) as f64 / t).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| (v / sum) as f32).collect()
}

/// The candidate whose cumulative probability first passes `u` in [0, 1).
fn draw(c: &[Candidate], probs: &[f32], u: f64) -> u32 {
    let mut acc = 0f64;
    for (x, &p) in c.iter().zip(probs) {
        acc += p as f64;
        if u < acc {
            return x.id;
        }
    }
    c[c.len() - 1].id
}
