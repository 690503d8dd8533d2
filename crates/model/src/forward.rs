//! The Phi-3 decoder forward pass (PHI3_FAMILY.md §2), for a batch of new
//! tokens at consecutive positions after what the KV cache already holds.

use phi3_kernels::activation::swiglu;
use phi3_kernels::attention::{attend, KvRows, KvSegment};
use phi3_kernels::norm::rms_norm;

use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::rope::Rope;
use crate::Model;

/// Which positions' logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every new position: `[t, vocab]`.
    All,
    /// Only the last position: `[vocab]`.
    Last,
}

/// Activation buffers, grown on demand and reused across calls so that
/// decoding does not allocate per token.
#[derive(Default, Debug)]
pub struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
}

/// Calls `f(i, row)` for every row `i` of `data` (rows of `width` values),
/// a prompt's rows over the pool (`ThreadPool::for_each_row`). Each row's
/// result depends on that row alone, so the bits are the same either way.
fn each_row(data: &mut [f32], width: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    phi3_kernels::pool::global().for_each_row(data, width, f);
}

/// Most rotary frequencies (half the rotary dimensions) of any model.
const MAX_HALF_ROTARY: usize = 128;

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// One sequence's part of a batched forward call: its new tokens, its own
/// KV cache and rotary table, and which of its logits to return.
pub struct SequenceInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub rope: &'a Rope,
    pub which: Logits,
}

/// Runs `tokens` through the model, appending their keys and values to
/// `cache`, and writes the requested logits into `out`.
pub fn forward(
    model: &Model,
    rope: &Rope,
    tokens: &[u32],
    cache: &mut KvCache,
    s: &mut Scratch,
    which: Logits,
    out: &mut Vec<f32>,
) -> Result<()> {
    let mut seq = [SequenceInput {
        tokens,
        cache,
        rope,
        which,
    }];
    forward_many(model, &mut seq, s, out)
}

/// Runs several independent sequences in one pass (continuous batching):
/// their new tokens are stacked into one activation matrix, so every weight
/// matrix is read once for all of them, while each row attends only to its
/// own sequence's cache and earlier rows. Each row's arithmetic is the same
/// as when its sequence runs alone. `out` receives the requested logits of
/// every sequence in order, `[rows, vocab]`.
pub fn forward_many(model: &Model, seqs: &mut [SequenceInput], s: &mut Scratch, out: &mut Vec<f32>) -> Result<()> {
    let (cfg, w) = (&model.config, &model.weights);
    out.clear();
    for seq in seqs.iter() {
        if let Some(&id) = seq.tokens.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(ModelError::TokenOutOfRange {
                id,
                vocab: cfg.vocab_size,
            });
        }
    }
    // every row's sequence, that sequence's first row, and its position
    let mut rows = Vec::new();
    for (n, seq) in seqs.iter().enumerate() {
        let first = rows.len();
        let start = seq.cache.len();
        rows.extend((0..seq.tokens.len()).map(|i| Row {
            seq: n,
            first,
            pos: start + i,
        }));
    }
    let t = rows.len();
    if t == 0 {
        return Ok(());
    }
    let (h, d) = (cfg.hidden_size, cfg.head_dim);
    let (nh, nkv) = (cfg.num_heads, cfg.num_kv_heads);
    let qkv_dim = cfg.qkv_dim();
    let ffn = cfg.intermediate_size;
    let window = cfg.attention_window();
    let scale = 1.0 / (d as f32).sqrt();

    let x = grow(&mut s.x, t * h);
    for (i, &id) in seqs.iter().flat_map(|q| q.tokens).enumerate() {
        w.embed.row_f32(id as usize, &mut x[i * h..(i + 1) * h]);
    }
    let x = &mut s.x[..t * h];
    grow(&mut s.xn, t * h);
    grow(&mut s.qkv, t * qkv_dim);
    grow(&mut s.attn, t * nh * d);
    grow(&mut s.proj, t * h);
    grow(&mut s.gate_up, t * 2 * ffn);
    grow(&mut s.act, t * ffn);
    let half = seqs[0].rope.half_dim();
    assert!(half <= MAX_HALF_ROTARY, "rotary dimensions");
    let kv_kinds: Vec<_> = seqs.iter().map(|q| q.cache.kind()).collect();
    let ropes: Vec<&Rope> = seqs.iter().map(|q| q.rope).collect();

    for (l, lw) in w.layers.iter().enumerate() {
        // attention block
        let xn = &mut s.xn[..t * h];
        let x_in = &*x;
        each_row(xn, h, &|i, out| {
            rms_norm(&x_in[i * h..(i + 1) * h], &lw.attn_norm, cfg.rms_norm_eps, out)
        });
        let qkv = &mut s.qkv[..t * qkv_dim];
        lw.qkv.forward(xn, t, qkv);
        each_row(qkv, qkv_dim, &|i, row| {
            let r = &rows[i];
            let rope = ropes[r.seq];
            let (mut cos, mut sin) = ([0f32; MAX_HALF_ROTARY], [0f32; MAX_HALF_ROTARY]);
            let (cos, sin) = (&mut cos[..half], &mut sin[..half]);
            rope.cos_sin(r.pos, cos, sin);
            // Q heads then K heads are contiguous at the start of the row
            for head in row[..(nh + nkv) * d].chunks_exact_mut(d) {
                rope.apply(head, cos, sin);
            }
            // this batch's keys and values as the cache will give them back,
            // so a token sees the same numbers whether it came in this call or earlier
            for head in row[nh * d..].chunks_exact_mut(d) {
                kv_kinds[r.seq].round_trip(head);
            }
        });
        // every (row, head) pair on its own, spread over the thread pool head
        // by head, so one head's keys and values stay in cache while its rows
        // pass over them; written head-major into `proj` (free until the
        // output projection), then put back in row order
        let attn = &mut s.attn[..t * nh * d];
        let by_head = grow(&mut s.proj, t * nh * d);
        // This batch's keys and values, one contiguous run of rows per KV
        // head (in `gate_up`, free until the MLP): read in place from the qkv
        // rows, whose stride is a multiple of 4 KiB, every row of a head would
        // fall in the same few cache sets.
        let kv_batch = grow(&mut s.gate_up, 2 * nkv * t * d);
        let (k_batch, v_batch) = kv_batch.split_at_mut(nkv * t * d);
        for (i, row) in s.qkv[..t * qkv_dim].chunks_exact(qkv_dim).enumerate() {
            for kvh in 0..nkv {
                let k = &row[(nh + kvh) * d..(nh + kvh + 1) * d];
                let v = &row[(nh + nkv + kvh) * d..(nh + nkv + kvh + 1) * d];
                k_batch[(kvh * t + i) * d..(kvh * t + i + 1) * d].copy_from_slice(k);
                v_batch[(kvh * t + i) * d..(kvh * t + i + 1) * d].copy_from_slice(v);
            }
        }
        let (k_batch, v_batch) = (&*k_batch, &*v_batch);
        let qkv = &s.qkv[..t * qkv_dim];
        let caches: Vec<&KvCache> = seqs.iter().map(|q| &*q.cache).collect();
        // short contexts: too little work to wake the pool for
        let keys: usize = rows.iter().map(|r| r.pos + 1).sum();
        let pairs_per_part = if keys * nh * d < 1 << 16 { t * nh } else { 1 };
        let attend_pair = |pair: usize, o: &mut [f32]| {
            let (head, i) = (pair / t, pair % t);
            let r = &rows[i];
            let cache = caches[r.seq];
            let start = cache.len();
            let lo = window.map_or(0, |wk| (r.pos + 1).saturating_sub(wk));
            let past_from = lo.max(cache.first_held()).min(start);
            let batch_from = r.first + (lo.max(start) - start); // first visible row of this batch
            let kvh = head / cfg.group_size();
            let [a, b] = cache.segments(l, kvh, past_from);
            let from = (kvh * t + batch_from) * d;
            let current = KvSegment {
                keys: KvRows::F32(&k_batch[from..]),
                values: KvRows::F32(&v_batch[from..]),
                stride: d,
                offset: 0,
                len: i + 1 - batch_from,
            };
            let q = &qkv[i * qkv_dim + head * d..i * qkv_dim + (head + 1) * d];
            attend(q, &[a, b, current], scale, o);
        };
        phi3_kernels::pool::global().for_each_part(by_head, pairs_per_part * d, &|part, pairs| {
            for (p, o) in pairs.chunks_exact_mut(d).enumerate() {
                attend_pair(part * pairs_per_part + p, o);
            }
        });
        for (head, rows_of_head) in by_head.chunks_exact(t * d).enumerate() {
            for (i, o) in rows_of_head.chunks_exact(d).enumerate() {
                attn[(i * nh + head) * d..(i * nh + head + 1) * d].copy_from_slice(o);
            }
        }
        drop(caches);
        let mut first = 0;
        for seq in seqs.iter_mut() {
            let n = seq.tokens.len();
            let own = &qkv[first * qkv_dim..(first + n) * qkv_dim];
            seq.cache.write(l, &own[nh * d..], &own[(nh + nkv) * d..], qkv_dim, n);
            first += n;
        }
        let proj = &mut s.proj[..t * h];
        lw.o_proj.forward(attn, t, proj);
        add_rows(x, proj, h);

        // MLP block
        let xn = &mut s.xn[..t * h];
        let x_in = &*x;
        each_row(xn, h, &|i, out| {
            rms_norm(&x_in[i * h..(i + 1) * h], &lw.ffn_norm, cfg.rms_norm_eps, out)
        });
        let gate_up = &mut s.gate_up[..t * 2 * ffn];
        lw.gate_up.forward(xn, t, gate_up);
        let act = &mut s.act[..t * ffn];
        let gate_up = &*gate_up;
        each_row(act, ffn, &|i, out| {
            swiglu(&gate_up[i * 2 * ffn..(i + 1) * 2 * ffn], out)
        });
        let proj = &mut s.proj[..t * h];
        lw.down.forward(act, t, proj);
        add_rows(x, proj, h);
    }
    for seq in seqs.iter_mut() {
        seq.cache.advance(seq.tokens.len());
    }

    // the rows whose logits were asked for
    let wanted: Vec<usize> = (0..t)
        .filter(|&i| {
            let r = &rows[i];
            let seq = &seqs[r.seq];
            seq.which == Logits::All || i + 1 == r.first + seq.tokens.len()
        })
        .collect();
    let xn = &mut s.xn[..wanted.len() * h];
    for (o, &i) in wanted.iter().enumerate() {
        rms_norm(
            &x[i * h..(i + 1) * h],
            &w.final_norm,
            cfg.rms_norm_eps,
            &mut xn[o * h..(o + 1) * h],
        );
    }
    out.resize(wanted.len() * cfg.vocab_size, 0.0);
    w.lm_head.forward(xn, wanted.len(), out);
    Ok(())
}

/// The residual connection: `x += p`, row by row (`each_row`).
fn add_rows(x: &mut [f32], p: &[f32], width: usize) {
    each_row(x, width, &|i, row| {
        for (xv, pv) in row.iter_mut().zip(&p[i * width..(i + 1) * width]) {
            *xv += pv;
        }
    });
}

/// Where one row of a batched call belongs.
struct Row {
    /// Index of its sequence.
    seq: usize,
    /// Its sequence's first row in the batch.
    first: usize,
    /// Its position in its sequence.
    pos: usize,
}
