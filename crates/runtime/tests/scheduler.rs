//! The batch scheduler: concurrent requests give the answers they get
//! alone, share prompt prefixes, and leave the batch when cancelled.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::model_with_vocab;
use phi3_formats::GgufFile;
use phi3_model::{KvType, Model, RopePolicy, Session, SessionOptions};
use phi3_runtime::scheduler::logprobs_of;
use phi3_runtime::{
    generate, Event, FinishReason, GenerateOptions, Job, Sampler, SamplerConfig, Scheduler, SchedulerConfig,
    SubmitError,
};
use phi3_tokenizer::{EncodeOptions, Tokenizer};

struct Fixture {
    _dir: tempfile::TempDir,
    model: Arc<Model>,
    tok: Arc<Tokenizer>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_vocab(dir.path());
    let model = Arc::new(Model::open(&path).unwrap());
    let tok = Arc::new(Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap());
    Fixture { _dir: dir, model, tok }
}

const CONTEXT: usize = 64;

fn session_options() -> SessionOptions {
    SessionOptions {
        context: CONTEXT,
        rope_policy: RopePolicy::Reference,
        kv_type: KvType::F16,
    }
}

fn scheduler(f: &Fixture, slots: usize, queue: usize, step_tokens: usize) -> Scheduler {
    gathering_scheduler(f, slots, queue, step_tokens, Duration::ZERO)
}

fn gathering_scheduler(f: &Fixture, slots: usize, queue: usize, step_tokens: usize, gather: Duration) -> Scheduler {
    let config = SchedulerConfig {
        slots,
        queue,
        session: session_options(),
        step_tokens,
        gather,
    };
    Scheduler::start(f.model.clone(), f.tok.clone(), config).unwrap()
}

fn prompt(f: &Fixture, text: &str) -> Vec<u32> {
    f.tok.encode(
        text,
        EncodeOptions {
            add_special: true,
            parse_special: true,
        },
    )
}

fn options(max_tokens: usize, stop_strings: &[&str]) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        stop_ids: vec![],
        stop_strings: stop_strings.iter().map(|s| s.to_string()).collect(),
        cancel: None,
    }
}

fn job(prompt: Vec<u32>, sampler: SamplerConfig, options: GenerateOptions) -> (Job, Receiver<Event>) {
    let (tx, rx) = channel();
    let job = Job {
        prompt,
        sampler,
        options,
        logprobs: Some(2),
        sink: Box::new(move |e| tx.send(e).is_ok()),
    };
    (job, rx)
}

/// What a request's events add up to.
#[derive(Debug, PartialEq)]
struct Answer {
    tokens: Vec<u32>,
    text: String,
    finish: FinishReason,
    cached: usize,
    logprobs: Vec<f32>,
}

fn collect(rx: Receiver<Event>) -> Answer {
    let mut a = Answer {
        tokens: vec![],
        text: String::new(),
        finish: FinishReason::Cancelled,
        cached: 0,
        logprobs: vec![],
    };
    for e in rx {
        match e {
            Event::Started { cached_tokens, .. } => a.cached = cached_tokens,
            Event::Token { token, text, logprobs } => {
                a.tokens.push(token);
                a.text.push_str(&text);
                let lp = logprobs.unwrap();
                assert!(lp.top.len() == 2 && lp.top[0].1 >= lp.top[1].1 && lp.logprob <= lp.top[0].1);
                a.logprobs.push(lp.logprob);
            }
            Event::Finished {
                finish,
                text,
                completion_tokens,
                ..
            } => {
                a.text.push_str(&text);
                a.finish = finish;
                assert_eq!(completion_tokens, a.tokens.len());
                return a;
            }
            Event::Failed(why) => panic!("failed: {why}"),
        }
    }
    panic!("the events ended without Finished")
}

/// The same request through `generate` on a fresh session.
fn alone(f: &Fixture, prompt: &[u32], sampler: SamplerConfig, opts: &GenerateOptions) -> (Vec<u32>, String, Vec<f32>) {
    let mut session = Session::new(&f.model, session_options()).unwrap();
    let mut s = Sampler::new(sampler).unwrap();
    let g = generate(&mut session, &f.tok, &mut s, prompt, opts, |_| {}).unwrap();
    // the logprobs of the chosen tokens, by re-running the sequence
    let mut check = Session::new(&f.model, session_options()).unwrap();
    let mut logits = check.feed(prompt, phi3_model::Logits::Last).unwrap();
    let mut lps = vec![];
    for &t in &g.tokens {
        lps.push(logprobs_of(&logits, t, 0).logprob);
        logits = check.feed(&[t], phi3_model::Logits::Last).unwrap();
    }
    (g.tokens, g.text, lps)
}

fn sampling(k: usize) -> SamplerConfig {
    if k.is_multiple_of(2) {
        SamplerConfig::greedy()
    } else {
        SamplerConfig {
            seed: k as u64,
            ..SamplerConfig::default()
        }
    }
}

#[test]
fn concurrent_requests_get_the_answers_they_get_alone() {
    let f = fixture();
    // 3 slots for 8 requests: they queue, join and leave the batch; a small
    // prefill chunk makes prompts share steps with decoding slots
    let s = scheduler(&f, 3, 8, 5);
    let texts = [
        "Hello, how are you?",
        "Tell me about rivers",
        "Hello, how are you today?",
        "x",
        "A much longer prompt that takes several prefill chunks to get through",
        "Tell me about lakes",
        "1 2 3 4",
        "Hello",
    ];
    let mut waiting = vec![];
    for (k, text) in texts.iter().enumerate() {
        let p = prompt(&f, text);
        let opts = options(6 + k * 3, if k == 5 { &["e"] } else { &[] });
        let (j, rx) = job(p.clone(), sampling(k), opts.clone());
        s.submit(j).unwrap();
        waiting.push((p, k, opts, rx));
    }
    for (p, k, opts, rx) in waiting {
        let got = collect(rx);
        let (tokens, text, lps) = alone(&f, &p, sampling(k), &opts);
        assert_eq!(got.tokens, tokens, "request {k}");
        assert_eq!(got.text, text, "request {k}");
        assert_eq!(got.logprobs, lps, "request {k}: logprobs");
        let want = if tokens.len() == opts.max_tokens {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        assert_eq!(got.finish, want, "request {k}");
    }
    assert_eq!(s.load(), (0, 0));
}

/// Each request's events into one channel, in the order they happened:
/// (request, 'S'tarted / 'T'oken / 'F'inished).
fn tagged_job(f: &Fixture, text: &str, n: usize, tx: &std::sync::mpsc::Sender<(usize, char)>) -> Job {
    let tx = tx.clone();
    Job {
        prompt: prompt(f, text),
        sampler: sampling(0),
        options: options(3, &[]),
        logprobs: None,
        sink: Box::new(move |e| {
            let tag = match e {
                Event::Started { .. } => 'S',
                Event::Token { .. } => 'T',
                Event::Finished { .. } => 'F',
                Event::Failed(why) => panic!("failed: {why}"),
            };
            tx.send((n, tag)).is_ok()
        }),
    }
}

#[test]
fn requests_sent_together_start_in_one_step() {
    let f = fixture();
    // a window far longer than the test: the idle scheduler starts as soon
    // as its three slots are taken, not when the window ends
    let sched = gathering_scheduler(&f, 3, 4, 512, Duration::from_secs(30));
    let (tx, rx) = channel();
    let start = Instant::now();
    sched.submit(tagged_job(&f, "The first", 0, &tx)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    sched.submit(tagged_job(&f, "The second one", 1, &tx)).unwrap();
    sched.submit(tagged_job(&f, "And a third", 2, &tx)).unwrap();
    drop(tx);
    let events: Vec<(usize, char)> = rx.iter().collect();
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "it did not wait out the window"
    );
    assert_eq!(events.iter().filter(|e| e.1 == 'F').count(), 3);
    let first_token = events.iter().position(|e| e.1 == 'T').unwrap();
    let started: Vec<usize> = events[..first_token]
        .iter()
        .filter(|e| e.1 == 'S')
        .map(|e| e.0)
        .collect();
    assert_eq!(started, [0, 1, 2], "all three began before any token: {events:?}");
}

#[test]
fn a_lone_request_waits_no_longer_than_the_window() {
    let f = fixture();
    let window = Duration::from_millis(300);
    let sched = gathering_scheduler(&f, 2, 4, 512, window);
    let (tx, rx) = channel();
    let start = Instant::now();
    sched.submit(tagged_job(&f, "Alone", 0, &tx)).unwrap();
    drop(tx);
    let events: Vec<(usize, char)> = rx.iter().collect();
    let took = start.elapsed();
    assert_eq!(events.last(), Some(&(0, 'F')));
    assert!(took >= window, "it gave others the window ({took:?})");
    assert!(took < window + Duration::from_secs(10), "{took:?}");
    // a scheduler with no window starts the same request at once
    let sched = scheduler(&f, 2, 4, 512);
    let (tx, rx) = channel();
    let start = Instant::now();
    sched.submit(tagged_job(&f, "Alone", 0, &tx)).unwrap();
    drop(tx);
    assert_eq!(rx.iter().last(), Some((0, 'F')));
    assert!(start.elapsed() < took, "no window: no wait");
}

#[test]
fn a_shared_prefix_is_computed_once() {
    let f = fixture();
    let s = scheduler(&f, 2, 4, 64);
    let system = "<|system|>\nYou are a helpful assistant who answers briefly.<|end|>\n<|user|>\n";
    let first = prompt(&f, &format!("{system}Hi<|end|>\n<|assistant|>\n"));
    let (j, rx) = job(first.clone(), SamplerConfig::greedy(), options(3, &[]));
    s.submit(j).unwrap();
    assert_eq!(collect(rx).cached, 0);
    // the second request shares the system prompt with the finished first one
    let second = prompt(&f, &format!("{system}What is a lake?<|end|>\n<|assistant|>\n"));
    let shared = first.iter().zip(&second).take_while(|(a, b)| a == b).count();
    assert!(shared > 10);
    let (j, rx) = job(second.clone(), SamplerConfig::greedy(), options(5, &[]));
    s.submit(j).unwrap();
    let got = collect(rx);
    assert_eq!(got.cached, shared);
    assert_eq!(
        got.tokens,
        alone(&f, &second, SamplerConfig::greedy(), &options(5, &[])).0
    );
    // the same prompt again reuses all but its last token
    let (j, rx) = job(second.clone(), SamplerConfig::greedy(), options(5, &[]));
    s.submit(j).unwrap();
    assert_eq!(collect(rx).cached, second.len() - 1);
}

#[test]
fn a_prefix_is_copied_from_a_busy_slot() {
    let f = fixture();
    let s = scheduler(&f, 2, 4, 64);
    let system = "<|system|>\nAlways answer in French, and keep it short.<|end|>\n<|user|>\n";
    let long = prompt(&f, &format!("{system}Tell me a story<|end|>\n<|assistant|>\n"));
    // a long, slowly read reply keeps its slot busy (each token takes the
    // scheduler 5 ms), and its first token shows that it holds the slot
    let (tx, rx_long) = channel();
    let sink = Box::new(move |e: Event| {
        if matches!(e, Event::Token { .. }) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        tx.send(e).is_ok()
    });
    let max = CONTEXT - long.len() - 1;
    let j = Job {
        prompt: long.clone(),
        sampler: SamplerConfig::greedy(),
        options: options(max, &[]),
        logprobs: Some(2),
        sink,
    };
    s.submit(j).unwrap();
    let first = rx_long.iter().find(|e| matches!(e, Event::Token { .. }));
    assert!(first.is_some());
    let other = prompt(&f, &format!("{system}Hi<|end|>\n<|assistant|>\n"));
    let (j, rx) = job(other.clone(), SamplerConfig::greedy(), options(4, &[]));
    s.submit(j).unwrap();
    let got = collect(rx);
    let shared = long.iter().zip(&other).take_while(|(a, b)| a == b).count();
    assert_eq!(got.cached, shared, "copied from the busy slot");
    assert_eq!(
        got.tokens,
        alone(&f, &other, SamplerConfig::greedy(), &options(4, &[])).0
    );
    let rest: Vec<Event> = rx_long.iter().collect();
    assert!(matches!(rest.last(), Some(Event::Finished { completion_tokens, .. }) if *completion_tokens == max));
}

#[test]
fn cancelled_and_abandoned_requests_leave_at_once() {
    let f = fixture();
    let s = scheduler(&f, 2, 4, 64);
    let p = prompt(&f, "Hello");
    // a client that stops listening after its first token
    let (tx, rx) = channel();
    let mut left = false;
    let sink = Box::new(move |e: Event| {
        if left {
            return false;
        }
        left = matches!(e, Event::Token { .. });
        tx.send(e).is_ok()
    });
    let j = Job {
        prompt: p.clone(),
        sampler: SamplerConfig::greedy(),
        options: options(50, &[]),
        logprobs: None,
        sink,
    };
    s.submit(j).unwrap();
    // a request cancelled through its flag
    let flag = Arc::new(AtomicBool::new(false));
    let mut opts = options(CONTEXT, &[]);
    opts.cancel = Some(flag.clone());
    let (j, rx2) = job(p.clone(), SamplerConfig::greedy(), opts);
    s.submit(j).unwrap();
    let mut tokens = 0;
    for e in rx2.iter() {
        if matches!(e, Event::Token { .. }) {
            tokens += 1;
            if tokens == 3 {
                flag.store(true, Ordering::Relaxed);
            }
        }
        if let Event::Finished { finish, .. } = e {
            assert_eq!(finish, FinishReason::Cancelled);
            break;
        }
    }
    assert!(tokens <= 4, "stopped within a step of the flag: {tokens}");
    let got: Vec<Event> = rx.iter().collect();
    assert_eq!(got.iter().filter(|e| matches!(e, Event::Token { .. })).count(), 1);
    // both slots are free again: two more requests run at once
    let (j1, r1) = job(p.clone(), SamplerConfig::greedy(), options(3, &[]));
    let (j2, r2) = job(p.clone(), SamplerConfig::greedy(), options(3, &[]));
    s.submit(j1).unwrap();
    s.submit(j2).unwrap();
    assert_eq!(collect(r1).tokens, collect(r2).tokens);
}

#[test]
fn requests_the_scheduler_cannot_take_are_refused() {
    let f = fixture();
    let s = scheduler(&f, 1, 1, 64);
    let greedy = SamplerConfig::greedy;
    let (j, _) = job(vec![], greedy(), options(3, &[]));
    assert_eq!(s.submit(j).unwrap_err(), SubmitError::EmptyPrompt);
    let (j, _) = job(vec![1; CONTEXT], greedy(), options(3, &[]));
    assert!(matches!(s.submit(j).unwrap_err(), SubmitError::PromptTooLong { .. }));
    let (j, _) = job(vec![1, 99_999], greedy(), options(3, &[]));
    assert!(matches!(
        s.submit(j).unwrap_err(),
        SubmitError::TokenOutOfRange { id: 99_999, .. }
    ));
    let bias = SamplerConfig {
        logit_bias: vec![(40_000, 1.0)],
        ..greedy()
    };
    let (j, _) = job(vec![1], bias, options(3, &[]));
    assert!(matches!(
        s.submit(j).unwrap_err(),
        SubmitError::TokenOutOfRange { id: 40_000, .. }
    ));
    let bad = SamplerConfig {
        temperature: -1.0,
        ..greedy()
    };
    let (j, _) = job(vec![1], bad, options(3, &[]));
    assert!(matches!(s.submit(j).unwrap_err(), SubmitError::Sampler(_)));
    // one running, one waiting, the third is refused
    let long = options(CONTEXT, &[]);
    let mut held = vec![];
    let mut refused = 0;
    for _ in 0..6 {
        let (j, rx) = job(vec![1, 2, 3], greedy(), long.clone());
        match s.submit(j) {
            Ok(()) => held.push(rx),
            Err(SubmitError::QueueFull { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 3, "a bounded queue: {refused} refused");
    s.shutdown(true);
    for rx in held {
        let last = rx.iter().last().unwrap();
        assert!(
            matches!(
                last,
                Event::Finished {
                    finish: FinishReason::Cancelled,
                    ..
                } | Event::Failed(_)
            ),
            "{last:?}"
        );
    }
    let (j, _) = job(vec![1], greedy(), options(3, &[]));
    assert_eq!(s.submit(j).unwrap_err(), SubmitError::ShuttingDown);
}

#[test]
fn a_panic_in_a_step_fails_its_requests_and_the_scheduler_goes_on() {
    let f = fixture();
    let s = scheduler(&f, 2, 4, 64);
    let p = prompt(&f, "Hello");
    // a sink that panics on its first token (a stand-in for any bug in a step)
    let j = Job {
        prompt: p.clone(),
        sampler: SamplerConfig::greedy(),
        options: options(5, &[]),
        logprobs: None,
        sink: Box::new(|e: Event| {
            if matches!(e, Event::Token { .. }) {
                panic!("a bug in a sink");
            }
            true
        }),
    };
    s.submit(j).unwrap();
    let t0 = std::time::Instant::now();
    while s.stats().failed == 0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the failure was not counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // the next request is served as if nothing happened
    let (j, rx) = job(p.clone(), SamplerConfig::greedy(), options(5, &[]));
    s.submit(j).unwrap();
    assert_eq!(
        collect(rx).tokens,
        alone(&f, &p, SamplerConfig::greedy(), &options(5, &[])).0
    );
}
