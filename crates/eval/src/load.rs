//! A load generator for OpenAI-compatible servers (`phi3 serve`, or any
//! other, for comparison): N concurrent streaming clients, each sending
//! chat requests one after another; measures time to first token, each
//! stream's decode speed and the aggregate generation throughput.

use std::io::{BufRead, BufReader};
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

use crate::EvalError;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The server's base URL, e.g. http://127.0.0.1:8080
    pub url: String,
    pub api_key: Option<String>,
    /// Concurrent clients.
    pub streams: usize,
    /// Requests each client sends, one after another.
    pub requests_per_stream: usize,
    pub max_tokens: usize,
    /// The user message; each request prefixes it with its own number and
    /// the stream count so that requests do not share a cached prompt.
    pub prompt: String,
    /// Token ids banned through logit_bias (the stop tokens, so that a
    /// random-weight model generates exactly `max_tokens`).
    pub ban_tokens: Vec<u32>,
    /// Which round of a repeated measurement this is (from 0): rounds after
    /// the first number their prompts too, so none is served from the
    /// cache an earlier round left.
    pub round: usize,
}

/// One request as a client saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestTiming {
    pub ttft_seconds: f64,
    pub total_seconds: f64,
    pub completion_tokens: usize,
    pub prompt_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub streams: usize,
    pub requests: usize,
    pub wall_seconds: f64,
    pub completion_tokens: usize,
    /// All generated tokens over the wall time.
    pub aggregate_tokens_per_second: f64,
    pub ttft_median_seconds: f64,
    pub ttft_p90_seconds: f64,
    /// Median over requests of (tokens after the first) / (time after the first).
    pub stream_decode_tokens_per_second: f64,
    /// That median times the number of streams: the generation rate while
    /// all of them decode together (prompt processing left out).
    pub decode_aggregate_tokens_per_second: f64,
    pub errors: Vec<String>,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Sends one streaming chat request and times it.
fn one_request(opts: &LoadOptions, n: usize) -> Result<RequestTiming, String> {
    let bias: serde_json::Map<String, Value> = opts.ban_tokens.iter().map(|id| (id.to_string(), json!(-100))).collect();
    let body = json!({
        "model": "bench",
        // numbered per request, stream count and round, so that no prompt
        // repeats one the server has cached from an earlier run
        "messages": [{"role": "user", "content": match opts.round {
            0 => format!("Request {n} of {}. {}", opts.streams, opts.prompt),
            round => format!("Round {round}. Request {n} of {}. {}", opts.streams, opts.prompt),
        }}],
        "max_tokens": opts.max_tokens,
        "temperature": 0,
        "logit_bias": bias,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let mut req = ureq::post(&format!("{}/v1/chat/completions", opts.url.trim_end_matches('/')));
    if let Some(k) = &opts.api_key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let t0 = Instant::now();
    let resp = req.send_json(body).map_err(|e| match e {
        ureq::Error::Status(code, r) => format!("HTTP {code}: {}", r.into_string().unwrap_or_default()),
        e => e.to_string(),
    })?;
    let mut ttft = None;
    let mut usage = None;
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| format!("bad chunk {data}: {e}"))?;
        if v.get("error").is_some() {
            return Err(v["error"]["message"].to_string());
        }
        let has_content = v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty());
        if has_content && ttft.is_none() {
            ttft = Some(t0.elapsed().as_secs_f64());
        }
        if v["usage"].is_object() {
            usage = Some(v["usage"].clone());
        }
    }
    let usage = usage.ok_or("no usage chunk (does the server honour stream_options.include_usage?)")?;
    let count = |k: &str| usage[k].as_u64().unwrap_or(0) as usize;
    Ok(RequestTiming {
        ttft_seconds: ttft.unwrap_or(f64::NAN),
        total_seconds: t0.elapsed().as_secs_f64(),
        completion_tokens: count("completion_tokens"),
        prompt_tokens: count("prompt_tokens"),
    })
}

/// One short request, so that the first measurement does not pay for
/// reading the weights from disk.
pub fn warm_up(opts: &LoadOptions) -> Result<(), EvalError> {
    let short = LoadOptions {
        max_tokens: 2,
        ..opts.clone()
    };
    one_request(&short, usize::MAX).map(|_| ()).map_err(EvalError::Invalid)
}

/// Runs `opts.streams` clients at once and summarizes what they saw.
pub fn run_load(opts: &LoadOptions) -> Result<LoadResult, EvalError> {
    if opts.streams == 0 || opts.requests_per_stream == 0 {
        return Err(EvalError::Invalid(
            "streams and requests per stream must be at least 1".into(),
        ));
    }
    let t0 = Instant::now();
    let outcomes: Vec<Result<RequestTiming, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..opts.streams)
            .map(|s| {
                scope.spawn(move || {
                    (0..opts.requests_per_stream)
                        .map(|r| one_request(opts, s * opts.requests_per_stream + r))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err("client thread panicked".into())]))
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let (ok, errors): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    let ok: Vec<RequestTiming> = ok.into_iter().map(Result::unwrap).collect();
    let errors: Vec<String> = errors.into_iter().map(|e| e.unwrap_err()).collect();
    let tokens: usize = ok.iter().map(|r| r.completion_tokens).sum();
    let mut ttft: Vec<f64> = ok.iter().map(|r| r.ttft_seconds).filter(|t| t.is_finite()).collect();
    let mut decode: Vec<f64> = ok
        .iter()
        .filter(|r| r.completion_tokens > 1 && r.total_seconds > r.ttft_seconds)
        .map(|r| (r.completion_tokens - 1) as f64 / (r.total_seconds - r.ttft_seconds))
        .collect();
    let stream_decode = percentile(&mut decode, 0.5);
    Ok(LoadResult {
        streams: opts.streams,
        requests: ok.len(),
        wall_seconds: wall,
        completion_tokens: tokens,
        aggregate_tokens_per_second: tokens as f64 / wall,
        ttft_median_seconds: percentile(&mut ttft, 0.5),
        ttft_p90_seconds: percentile(&mut ttft, 0.9),
        stream_decode_tokens_per_second: stream_decode,
        decode_aggregate_tokens_per_second: stream_decode * opts.streams as f64,
        errors,
    })
}

/// One stream count measured over several rounds: each figure the median
/// over the rounds (`median` fields at the top level), and every round.
#[derive(Debug, Clone, Serialize)]
pub struct Rounds {
    #[serde(flatten)]
    pub median: LoadResult,
    pub rounds: Vec<LoadResult>,
}

impl Rounds {
    /// The medians of `rounds` (all of the same stream count).
    pub fn of(rounds: Vec<LoadResult>) -> Rounds {
        assert!(!rounds.is_empty(), "at least one round");
        let median = |f: fn(&LoadResult) -> f64| {
            let mut v: Vec<f64> = rounds.iter().map(f).collect();
            percentile(&mut v, 0.5)
        };
        let median = LoadResult {
            streams: rounds[0].streams,
            requests: median(|r| r.requests as f64) as usize,
            wall_seconds: median(|r| r.wall_seconds),
            completion_tokens: median(|r| r.completion_tokens as f64) as usize,
            aggregate_tokens_per_second: median(|r| r.aggregate_tokens_per_second),
            ttft_median_seconds: median(|r| r.ttft_median_seconds),
            ttft_p90_seconds: median(|r| r.ttft_p90_seconds),
            stream_decode_tokens_per_second: median(|r| r.stream_decode_tokens_per_second),
            decode_aggregate_tokens_per_second: median(|r| r.decode_aggregate_tokens_per_second),
            errors: rounds.iter().flat_map(|r| r.errors.clone()).collect(),
        };
        Rounds { median, rounds }
    }
}

/// Each stream count's throughput against the first's within each round
/// (the two measured minutes apart, not an hour), and the median of those
/// paired ratios: the figure to compare with a target, where the machine's
/// speed drifts between rounds.
pub fn paired_ratios(results: &[Rounds]) -> String {
    let Some(first) = results.first() else {
        return String::new();
    };
    let mut s = String::from(
        "| streams | wall ratio per round | median | decode ratio per round | median |\n|---:|---|---:|---|---:|\n",
    );
    for r in results {
        let ratios = |f: fn(&LoadResult) -> f64| -> (String, f64) {
            let mut v: Vec<f64> = r
                .rounds
                .iter()
                .zip(&first.rounds)
                .map(|(x, base)| f(x) / f(base))
                .collect();
            let list = v.iter().map(|x| format!("{x:.2}×")).collect::<Vec<_>>().join(", ");
            (list, percentile(&mut v, 0.5))
        };
        let (wall, wall_median) = ratios(|x| x.aggregate_tokens_per_second);
        let (decode, decode_median) = ratios(|x| x.decode_aggregate_tokens_per_second);
        s.push_str(&format!(
            "| {} | {wall} | {wall_median:.2}× | {decode} | {decode_median:.2}× |\n",
            r.median.streams
        ));
    }
    s.push('\n');
    s
}

/// A table of results, with each row's throughput relative to the first.
pub fn table(results: &[LoadResult]) -> String {
    let mut s = String::from(
        "| streams | requests | gen tokens | wall s | aggregate tok/s | vs 1st row | TTFT median s | TTFT p90 s | per-stream decode tok/s | decode aggregate tok/s | vs 1st row |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let base = results.first().map_or(1.0, |r| r.aggregate_tokens_per_second);
    let decode_base = results.first().map_or(1.0, |r| r.decode_aggregate_tokens_per_second);
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.2} | {:.2}× | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}× |\n",
            r.streams,
            r.requests,
            r.completion_tokens,
            r.wall_seconds,
            r.aggregate_tokens_per_second,
            r.aggregate_tokens_per_second / base,
            r.ttft_median_seconds,
            r.ttft_p90_seconds,
            r.stream_decode_tokens_per_second,
            r.decode_aggregate_tokens_per_second,
            r.decode_aggregate_tokens_per_second / decode_base
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(streams: usize, aggregate: f64, decode: f64) -> LoadResult {
        LoadResult {
            streams,
            requests: streams,
            wall_seconds: 1.0,
            completion_tokens: 64 * streams,
            aggregate_tokens_per_second: aggregate,
            ttft_median_seconds: 1.0,
            ttft_p90_seconds: 1.0,
            stream_decode_tokens_per_second: decode / streams as f64,
            decode_aggregate_tokens_per_second: decode,
            errors: Vec::new(),
        }
    }

    #[test]
    fn ratios_are_paired_within_each_round() {
        // the machine twice as fast in round 2, half as fast in round 3:
        // each round's own ratios are 3.5, 2.0, 3.0 (median 3.0), while the
        // ratio of the medians would be 28 / 8 = 3.5
        let one = Rounds::of(vec![result(1, 8.0, 10.0), result(1, 16.0, 20.0), result(1, 4.0, 5.0)]);
        let four = Rounds::of(vec![
            result(4, 28.0, 30.0),
            result(4, 32.0, 40.0),
            result(4, 12.0, 15.0),
        ]);
        assert_eq!(one.median.aggregate_tokens_per_second, 8.0);
        assert_eq!(four.median.aggregate_tokens_per_second, 28.0);
        let text = paired_ratios(&[one, four]);
        let row = text.lines().find(|l| l.starts_with("| 4 |")).unwrap();
        assert_eq!(row, "| 4 | 3.50×, 2.00×, 3.00× | 3.00× | 3.00×, 2.00×, 3.00× | 3.00× |");
    }
}
