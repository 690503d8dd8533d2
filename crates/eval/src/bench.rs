//! `phi3 bench`: prompt processing and generation speed with warm-up and
//! repetitions, load time, peak memory, and the memory bandwidth decoding
//! achieves beside the machine's own.

use std::path::Path;
use std::time::Instant;

use phi3_formats::DType;
use phi3_model::{KvType, Logits, Model, RopePolicy, Session, SessionOptions};
use phi3_runtime::{Sampler, SamplerConfig};
use serde::Serialize;

use crate::Result;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Prompt lengths to time (pp).
    pub prompt_lens: Vec<usize>,
    /// Tokens to generate (tg); 0 skips generation.
    pub gen_len: usize,
    /// Timed repetitions of each test (after one warm-up run).
    pub reps: usize,
    /// Measure the machine's read bandwidth (about a second).
    pub measure_bandwidth: bool,
    /// KV cache storage.
    pub kv_type: KvType,
}

/// Median and spread of a rate.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub test: String,
    pub tokens: usize,
    pub median_tok_s: f64,
    pub min_tok_s: f64,
    pub max_tok_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub file_bytes: u64,
    pub weight_types: Vec<String>,
    pub threads: usize,
    pub isa: String,
    pub kv_cache: String,
    pub load_s: f64,
    pub results: Vec<Rate>,
    /// Bytes of weights read to produce one token (every matrix once, one
    /// embedding row).
    pub weight_bytes_per_token: u64,
    /// Weight bytes per token × generation rate.
    pub decode_bandwidth_gb_s: Option<f64>,
    pub machine_read_bandwidth_gb_s: Option<f64>,
    /// Machine bandwidth ÷ weight bytes per token.
    pub decode_bound_tok_s: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    /// phi3's own estimate (weights + KV cache + buffers) for this run.
    pub memory_estimate_bytes: u64,
}

fn rate(test: String, tokens: usize, mut secs: Vec<f64>) -> Rate {
    secs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Rate {
        test,
        tokens,
        median_tok_s: tokens as f64 / secs[secs.len() / 2],
        min_tok_s: tokens as f64 / secs[secs.len() - 1],
        max_tok_s: tokens as f64 / secs[0],
    }
}

/// Peak resident memory of this process (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(path: &Path, opts: &BenchOptions) -> Result<BenchReport> {
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let model = Model::open(path)?;
    let load_s = t.elapsed().as_secs_f64();
    let cfg = &model.config;
    let w = &model.weights;
    let mut per_token = w.embed.tensor.bytes().len() as u64 / cfg.vocab_size as u64;
    let mut types: Vec<DType> = Vec::new();
    let mut linears = vec![&w.lm_head];
    for l in &w.layers {
        linears.extend([&l.qkv, &l.o_proj, &l.gate_up, &l.down]);
    }
    for lin in linears {
        per_token += lin.tensor.bytes().len() as u64;
        if !types.contains(&lin.tensor.dtype) {
            types.push(lin.tensor.dtype);
        }
    }
    let longest = opts
        .prompt_lens
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1 + opts.gen_len);
    let session_opts = SessionOptions {
        context: longest.min(cfg.max_position_embeddings),
        rope_policy: RopePolicy::FixedByContext,
        kv_type: opts.kv_type,
    };
    let token = |i: usize| (i * 7919 % (cfg.vocab_size - 1)) as u32 + 1;
    let mut results = Vec::new();
    for &n in &opts.prompt_lens {
        let prompt: Vec<u32> = (0..n).map(token).collect();
        let mut secs = Vec::new();
        for rep in 0..opts.reps + 1 {
            let mut s = Session::new(&model, session_opts)?;
            let t = Instant::now();
            s.feed(&prompt, Logits::Last)?;
            if rep > 0 {
                secs.push(t.elapsed().as_secs_f64());
            }
        }
        results.push(rate(format!("pp{n}"), n, secs));
    }
    let mut decode_bandwidth = None;
    if opts.gen_len > 0 {
        let mut secs = Vec::new();
        for rep in 0..opts.reps + 1 {
            let mut s = Session::new(&model, session_opts)?;
            let mut logits = s.feed(&[token(0)], Logits::Last)?;
            let mut greedy = Sampler::new(SamplerConfig::greedy()).expect("greedy settings are valid");
            let t = Instant::now();
            for _ in 0..opts.gen_len {
                let next = greedy
                    .sample(&logits)
                    .map_err(|e| crate::EvalError::Invalid(e.to_string()))?;
                logits = s.feed(&[next], Logits::Last)?;
            }
            if rep > 0 {
                secs.push(t.elapsed().as_secs_f64());
            }
        }
        let r = rate(format!("tg{}", opts.gen_len), opts.gen_len, secs);
        decode_bandwidth = Some(r.median_tok_s * per_token as f64 / 1e9);
        results.push(r);
    }
    // the peak before the bandwidth test, whose 1 GiB buffer is not the model's
    let peak_rss_bytes = peak_rss();
    let estimate = phi3_model::memory::estimate(
        cfg,
        model.tensor_summary.iter().map(|t| t.3 as u64).sum(),
        session_opts.context,
        opts.prompt_lens.iter().copied().max().unwrap_or(1),
        opts.kv_type,
    )
    .total();
    let machine = opts.measure_bandwidth.then(|| crate::membw::read_bandwidth(1 << 30, 5));
    Ok(BenchReport {
        model: path.display().to_string(),
        file_bytes,
        weight_types: types.iter().map(|t| t.name().to_string()).collect(),
        threads: phi3_kernels::pool::global().threads(),
        isa: format!("{:?}", phi3_kernels::simd::isa()),
        kv_cache: opts.kv_type.name().to_string(),
        load_s,
        results,
        weight_bytes_per_token: per_token,
        decode_bandwidth_gb_s: decode_bandwidth,
        machine_read_bandwidth_gb_s: machine,
        decode_bound_tok_s: machine.map(|m| m * 1e9 / per_token as f64),
        peak_rss_bytes,
        memory_estimate_bytes: estimate,
    })
}

impl BenchReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let gb = |b: u64| b as f64 / 1e9;
        s.push_str(&format!(
            "model: {} ({:.2} GB, {})\nthreads: {}, kernels: {}, KV cache: {}, load: {:.2} s\n\n",
            self.model,
            gb(self.file_bytes),
            self.weight_types.join("+"),
            self.threads,
            self.isa,
            self.kv_cache,
            self.load_s
        ));
        s.push_str("| test | tokens | median tok/s | min | max |\n|---|---|---|---|---|\n");
        for r in &self.results {
            s.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} |\n",
                r.test, r.tokens, r.median_tok_s, r.min_tok_s, r.max_tok_s
            ));
        }
        s.push_str(&format!(
            "\nweights read per token: {:.3} GB\n",
            gb(self.weight_bytes_per_token)
        ));
        if let Some(b) = self.decode_bandwidth_gb_s {
            s.push_str(&format!("decode bandwidth achieved: {b:.1} GB/s\n"));
        }
        if let (Some(m), Some(bound)) = (self.machine_read_bandwidth_gb_s, self.decode_bound_tok_s) {
            s.push_str(&format!(
                "machine read bandwidth: {m:.1} GB/s → decode bound {bound:.2} tok/s\n"
            ));
        }
        if let Some(rss) = self.peak_rss_bytes {
            s.push_str(&format!(
                "peak RSS: {:.2} GB (estimate {:.2} GB, {:+.1}%)\n",
                gb(rss),
                gb(self.memory_estimate_bytes),
                (self.memory_estimate_bytes as f64 / rss as f64 - 1.0) * 100.0
            ));
        }
        s
    }
}
