//! What one decode step costs with 1 to N sequences in the batch (the
//! server's continuous batching, without the server): each sequence first
//! takes a prompt of its own, then every step feeds one token to each.
//!
//! `cargo run --release -p phi3-model --example batchdecode -- MODEL.gguf [prompt] [steps] [batches…]`

use std::time::Instant;

use phi3_model::{feed_many, Model, Scratch, Session, SessionOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("a model file");
    let prompt: usize = args.get(1).map_or(75, |a| a.parse().expect("prompt length"));
    let steps: usize = args.get(2).map_or(32, |a| a.parse().expect("steps"));
    let batches: Vec<usize> = match args.get(3..) {
        Some(rest) if !rest.is_empty() => rest.iter().map(|a| a.parse().expect("batch size")).collect(),
        _ => vec![1, 2, 4, 8],
    };
    let model = Model::open(path).expect("model");
    let vocab = model.config.vocab_size as u32;
    let mut scratch = Scratch::default();
    for &batch in &batches {
        let mut sessions: Vec<Session> = (0..batch)
            .map(|_| Session::new(&model, SessionOptions::new(prompt + steps + 1)).expect("session"))
            .collect();
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|s| (0..prompt).map(|i| ((s * 7919 + i * 104729) as u32) % vocab).collect())
            .collect();
        let start = Instant::now();
        {
            let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
            let views: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
            for r in feed_many(&mut refs, &views, &mut scratch) {
                r.expect("prompt");
            }
        }
        let prefill = start.elapsed().as_secs_f64();
        let mut times = Vec::with_capacity(steps);
        for step in 0..steps {
            let tokens: Vec<[u32; 1]> = (0..batch).map(|s| [((s + step * 31) as u32) % vocab]).collect();
            let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
            let views: Vec<&[u32]> = tokens.iter().map(|t| t.as_slice()).collect();
            let start = Instant::now();
            for r in feed_many(&mut refs, &views, &mut scratch) {
                r.expect("step");
            }
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "batch {batch}: prompts {:.2} s ({:.1} tok/s), decode step median {:.1} ms ({:.2} tok/s per sequence, {:.2} together)",
            prefill,
            (batch * prompt) as f64 / prefill,
            median * 1e3,
            1.0 / median,
            batch as f64 / median
        );
    }
}
