//! A decoding session: a KV cache plus the tokens it holds, and the LongRoPE
//! policy that decides which factor table the cache uses (DESIGN.md,
//! "Decisions already taken"; PHI3_FAMILY.md §3.2).

pub use phi3_kernels::attention::KvType;

use crate::error::{ModelError, Result};
use crate::forward::{forward, Logits, Scratch};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::rope::{Rope, RopeTable};

/// How LongRoPE models choose between their short and long factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RopePolicy {
    /// As transformers' `generate`: short factors while the sequence fits
    /// `original_max_position_embeddings`; the first time it grows past it,
    /// the whole sequence is re-prefilled with the long factors.
    #[default]
    Reference,
    /// As llama.cpp: one table for the whole session, long if the session's
    /// context exceeds `original_max_position_embeddings`.
    FixedByContext,
}

#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Most tokens the session may hold (≤ `max_position_embeddings`).
    pub context: usize,
    pub rope_policy: RopePolicy,
    /// How the KV cache stores keys and values (f16 by default).
    pub kv_type: KvType,
}

impl SessionOptions {
    /// `context` tokens, the reference LongRoPE policy, an f16 KV cache.
    pub fn new(context: usize) -> SessionOptions {
        SessionOptions {
            context,
            rope_policy: RopePolicy::Reference,
            kv_type: KvType::F16,
        }
    }
}

pub struct Session<'m> {
    model: &'m Model,
    options: SessionOptions,
    cache: KvCache,
    tokens: Vec<u32>,
    scratch: Scratch,
    short: Rope,
    long: Rope,
    /// How many times the sequence was re-prefilled after a LongRoPE switch.
    pub reprefills: usize,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, options: SessionOptions) -> Result<Session<'m>> {
        let cfg = &model.config;
        if options.context == 0 || options.context > cfg.max_position_embeddings {
            return Err(ModelError::InvalidOption(format!(
                "context {} must be between 1 and the model's {}",
                options.context, cfg.max_position_embeddings
            )));
        }
        if options.kv_type == KvType::Q8_0 && !cfg.head_dim.is_multiple_of(32) {
            return Err(ModelError::InvalidOption(format!(
                "a Q8_0 KV cache needs head dimensions that are multiples of 32 (this model's is {})",
                cfg.head_dim
            )));
        }
        let capacity = model.kv_capacity(options.context);
        let mut cache = KvCache::new(
            cfg.num_layers,
            capacity,
            cfg.num_kv_heads * cfg.head_dim,
            options.kv_type,
        );
        cache.table = initial_table(model, &options);
        Ok(Session {
            model,
            options,
            cache,
            tokens: Vec::new(),
            scratch: Scratch::default(),
            short: Rope::new(cfg, RopeTable::Short),
            long: Rope::new(cfg, RopeTable::Long),
            reprefills: 0,
        })
    }

    /// Most tokens the session may hold.
    pub fn context(&self) -> usize {
        self.options.context
    }

    /// Tokens processed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The factor table the cache currently uses.
    pub fn rope_table(&self) -> RopeTable {
        self.cache.table
    }

    pub fn kv_cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Keeps only the first `n` tokens (to continue differently after them).
    /// Returns false, and resets instead, when the cache no longer holds
    /// what those tokens need (a sliding window already overwrote it).
    pub fn truncate(&mut self, n: usize) -> bool {
        if n >= self.tokens.len() {
            return true;
        }
        if self.cache.truncate(n) {
            self.tokens.truncate(n);
            true
        } else {
            self.reset();
            false
        }
    }

    /// Forgets all tokens.
    pub fn reset(&mut self) {
        self.tokens.clear();
        let table = initial_table(self.model, &self.options);
        self.cache.clear(table);
    }

    /// Processes `new` tokens after those already held and returns the
    /// logits of every new position (`Logits::All`, `[new.len(), vocab]`) or
    /// of the last one (`Logits::Last`).
    pub fn feed(&mut self, new: &[u32], which: Logits) -> Result<Vec<f32>> {
        // Validate before touching the cache, so a rejected call changes nothing.
        let vocab = self.model.config.vocab_size;
        if let Some(&id) = new.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { id, vocab });
        }
        let total = self.tokens.len() + new.len();
        if total > self.options.context {
            return Err(ModelError::ContextFull {
                needed: total,
                limit: self.options.context,
                why: "the session's context",
            });
        }
        let wanted = self.table_for(total);
        let mut out = Vec::new();
        if wanted != self.cache.table && !self.tokens.is_empty() {
            // Never mix tables in one cache: recompute everything with the new one.
            let mut all = std::mem::take(&mut self.tokens);
            all.extend_from_slice(new);
            self.cache.clear(wanted);
            self.run(&all, which, &mut out)?;
            if which == Logits::All {
                let v = self.model.config.vocab_size;
                out.drain(..(all.len() - new.len()) * v);
            }
            self.tokens = all;
            self.reprefills += 1;
            return Ok(out);
        }
        self.cache.table = wanted;
        self.run(new, which, &mut out)?;
        self.tokens.extend_from_slice(new);
        Ok(out)
    }

    fn run(&mut self, tokens: &[u32], which: Logits, out: &mut Vec<f32>) -> Result<()> {
        let rope = match self.cache.table {
            RopeTable::Short => &self.short,
            RopeTable::Long => &self.long,
        };
        forward(self.model, rope, tokens, &mut self.cache, &mut self.scratch, which, out)
    }

    fn table_for(&self, total: usize) -> RopeTable {
        let cfg = &self.model.config;
        match (self.options.rope_policy, &cfg.long_rope) {
            (_, None) => RopeTable::Short,
            (RopePolicy::FixedByContext, Some(_)) => initial_table(self.model, &self.options),
            (RopePolicy::Reference, Some(_)) => {
                if total > cfg.original_max_position_embeddings {
                    RopeTable::Long
                } else {
                    RopeTable::Short
                }
            }
        }
    }
}

fn initial_table(model: &Model, options: &SessionOptions) -> RopeTable {
    let cfg = &model.config;
    match (options.rope_policy, &cfg.long_rope) {
        (RopePolicy::FixedByContext, Some(_)) if options.context > cfg.original_max_position_embeddings => {
            RopeTable::Long
        }
        _ => RopeTable::Short,
    }
}
