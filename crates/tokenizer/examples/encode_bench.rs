//! Encoding throughput on whole files (BENCHMARKS.md, tokenizer section).
//!
//! `cargo run --release -p phi3-tokenizer --example encode_bench -- VOCAB FILE... [--reps N] [--lines]`
//! (`--lines`: encode each line separately, one thread)
//! VOCAB: a GGUF file or a Hugging Face folder with tokenizer.json.

use std::path::Path;
use std::time::Instant;

use phi3_formats::GgufFile;
use phi3_tokenizer::{EncodeOptions, Tokenizer, Vocab};

/// As the reference is timed: no BOS, no special-token parsing.
const PLAIN: EncodeOptions = EncodeOptions {
    add_special: false,
    parse_special: false,
};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut reps = 7;
    let lines = args.iter().any(|a| a == "--lines");
    args.retain(|a| a != "--lines");
    if let Some(i) = args.iter().position(|a| a == "--reps") {
        reps = args[i + 1].parse().expect("--reps N");
        args.drain(i..i + 2);
    }
    let vocab = Path::new(&args[0]);
    let tok = if vocab.is_dir() {
        Tokenizer::new(Vocab::from_hf_dir(vocab).expect("vocabulary"))
    } else {
        Tokenizer::from_gguf(&GgufFile::open(vocab).expect("gguf")).expect("vocabulary")
    };
    for file in &args[1..] {
        let text = std::fs::read_to_string(file).expect("UTF-8 text file");
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..reps {
            let t = Instant::now();
            n = if lines {
                text.split('\n').map(|l| tok.encode(l, PLAIN).len()).sum()
            } else {
                tok.encode(&text, PLAIN).len()
            };
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        println!(
            "{file}: {} bytes, {n} tokens, median {:.1} ms, {:.2} MB/s (min {:.1}, max {:.1})",
            text.len(),
            med * 1e3,
            text.len() as f64 / med / 1e6,
            times[0] * 1e3,
            times[times.len() - 1] * 1e3
        );
    }
}
