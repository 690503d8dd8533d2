//! A decoding session: a KV cache plus the tokens it holds, and the LongRoPE
//! policy that decides which factor table the cache uses (DESIGN.md,
//! "Decisions already taken"; PHI3_FAMILY.md §3.2).

pub use phi3_kernels::attention::KvType;

use crate::error::{ModelError, Result};
use crate::forward::{forward, forward_many, Logits, Scratch, SequenceInput};
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
            cfg.num_kv_heads,
            cfg.head_dim,
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

    /// Writes the session (tokens and KV cache) so that a long prompt is
    /// processed once: `load` restores it for the same model and options.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let io =
            |e: std::io::Error| ModelError::InvalidOption(format!("saving the session to {}: {e}", path.display()));
        let mut out = Vec::new();
        out.extend_from_slice(SESSION_MAGIC);
        out.extend_from_slice(&SESSION_VERSION.to_le_bytes());
        out.extend_from_slice(&fingerprint(&self.model.config).to_le_bytes());
        for v in [
            self.options.context as u64,
            self.options.kv_type as u64,
            self.cache.table as u64,
            self.tokens.len() as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend(self.tokens.iter().flat_map(|t| t.to_le_bytes()));
        for layer in self.cache.layer_bytes() {
            out.extend_from_slice(&(layer.len() as u64).to_le_bytes());
            out.extend_from_slice(&layer);
        }
        // write beside, then rename: never a half-written session file
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, &out).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Restores a session saved by `save` for this model. The options
    /// (context, KV type) are the saved ones.
    pub fn load(model: &'m Model, path: &std::path::Path, rope_policy: RopePolicy) -> Result<Session<'m>> {
        let bad =
            |why: &str| ModelError::InvalidOption(format!("{}: not a usable session file: {why}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| ModelError::InvalidOption(format!("{}: {e}", path.display())))?;
        let mut r = bytes.as_slice();
        let mut take = |n: usize| -> Result<&[u8]> {
            if r.len() < n {
                return Err(bad("it ends early"));
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        if take(8)? != SESSION_MAGIC {
            return Err(bad("wrong magic"));
        }
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
        let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        if u32_at(take(4)?) != SESSION_VERSION {
            return Err(bad("unsupported version"));
        }
        if u64_at(take(8)?) != fingerprint(&model.config) {
            return Err(bad("it was saved with a different model"));
        }
        let context = u64_at(take(8)?) as usize;
        let kv_type = match u64_at(take(8)?) {
            0 => KvType::F32,
            1 => KvType::F16,
            2 => KvType::Q8_0,
            _ => return Err(bad("unknown KV type")),
        };
        let table = match u64_at(take(8)?) {
            0 => RopeTable::Short,
            1 => RopeTable::Long,
            _ => return Err(bad("unknown rope table")),
        };
        let n = u64_at(take(8)?) as usize;
        if n > context {
            return Err(bad("more tokens than its context"));
        }
        let tokens: Vec<u32> = take(n.checked_mul(4).ok_or_else(|| bad("token count overflows"))?)?
            .chunks_exact(4)
            .map(u32_at)
            .collect();
        let mut session = Session::new(
            model,
            SessionOptions {
                context,
                rope_policy,
                kv_type,
            },
        )?;
        let mut layers = Vec::new();
        for _ in 0..2 * model.config.num_layers {
            let len = u64_at(take(8)?) as usize;
            layers.push(take(len)?.to_vec());
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        if !session.cache.restore(&layers, n) {
            return Err(bad("its KV cache does not fit this model"));
        }
        session.cache.table = table;
        session.tokens = tokens;
        Ok(session)
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
        let wanted = self.check(new)?;
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

    /// Checks that `new` may follow the tokens held: ids in the vocabulary
    /// and room in the context. Returns the rope table the whole sequence needs.
    fn check(&self, new: &[u32]) -> Result<RopeTable> {
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
        Ok(self.table_for(total))
    }

    /// Makes this session hold the first `n` tokens of `other` (same model and
    /// options) by copying their keys and values instead of recomputing them:
    /// prefix caching across sessions. False, with this session unchanged,
    /// when `other` does not hold them all or the shapes differ.
    pub fn copy_prefix_from(&mut self, other: &Session, n: usize) -> bool {
        if !std::ptr::eq(self.model, other.model) || n > other.tokens.len() || n > self.options.context {
            return false;
        }
        if !self.cache.copy_prefix_from(&other.cache, n) {
            return false;
        }
        self.tokens.clear();
        self.tokens.extend_from_slice(&other.tokens[..n]);
        true
    }

    fn run(&mut self, tokens: &[u32], which: Logits, out: &mut Vec<f32>) -> Result<()> {
        let rope = rope_of(self.cache.table, &self.short, &self.long);
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

/// Feeds several sessions of the same model in one forward pass
/// (continuous batching): `feeds[i]` goes to `sessions[i]`, and the result
/// for each is the logits of its last new position, or its own error (one
/// session's bad input never affects the others). A session that needs a
/// LongRoPE re-prefill runs on its own.
pub fn feed_many(sessions: &mut [&mut Session], feeds: &[&[u32]], scratch: &mut Scratch) -> Vec<Result<Vec<f32>>> {
    assert_eq!(sessions.len(), feeds.len(), "one feed per session");
    let mut results: Vec<Option<Result<Vec<f32>>>> = (0..sessions.len()).map(|_| None).collect();
    let mut together = Vec::new();
    for (i, (session, new)) in sessions.iter_mut().zip(feeds).enumerate() {
        match session.check(new) {
            Err(e) => results[i] = Some(Err(e)),
            Ok(_) if new.is_empty() => results[i] = Some(Ok(Vec::new())),
            Ok(table) if table != session.cache.table && !session.tokens.is_empty() => {
                results[i] = Some(session.feed(new, Logits::Last))
            }
            Ok(table) => {
                session.cache.table = table;
                together.push(i);
            }
        }
    }
    if let Some(&first) = together.first() {
        let model = sessions[first].model;
        let vocab = model.config.vocab_size;
        let mut inputs = Vec::with_capacity(together.len());
        let mut chosen: Vec<&mut &mut Session> = Vec::new();
        for (i, s) in sessions.iter_mut().enumerate() {
            if together.contains(&i) {
                chosen.push(s);
            }
        }
        for (s, &i) in chosen.iter_mut().zip(&together) {
            let s: &mut Session = s;
            inputs.push(SequenceInput {
                tokens: feeds[i],
                rope: rope_of(s.cache.table, &s.short, &s.long),
                cache: &mut s.cache,
                which: Logits::Last,
            });
        }
        let mut out = Vec::new();
        match forward_many(model, &mut inputs, scratch, &mut out) {
            Ok(()) => {
                drop(inputs);
                for (k, (s, &i)) in chosen.into_iter().zip(&together).enumerate() {
                    s.tokens.extend_from_slice(feeds[i]);
                    results[i] = Some(Ok(out[k * vocab..(k + 1) * vocab].to_vec()));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for &i in &together {
                    results[i] = Some(Err(ModelError::InvalidOption(msg.clone())));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every session answered"))
        .collect()
}

const SESSION_MAGIC: &[u8; 8] = b"PHI3SESS";
const SESSION_VERSION: u32 = 1;

/// Identifies a model's shapes and numbers (FNV-1a of the config), so a
/// session is never loaded into a different model.
fn fingerprint(cfg: &crate::ModelConfig) -> u64 {
    format!("{cfg:?}").bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The rotary embedding of `table`.
fn rope_of<'r>(table: RopeTable, short: &'r Rope, long: &'r Rope) -> &'r Rope {
    match table {
        RopeTable::Short => short,
        RopeTable::Long => long,
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
