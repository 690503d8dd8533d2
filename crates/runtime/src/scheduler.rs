//! The batch scheduler behind the server (continuous batching).
//!
//! A fixed number of slots, each a [`Session`]. Requests wait in a bounded
//! queue, join the running batch at the next step and leave it as soon as
//! they finish or their client goes away; every step feeds all active slots
//! in one forward pass, so the weights are read once per step however many
//! requests run. Prompts are prefilled in chunks that share the step with
//! the decoding slots, so a long prompt does not stall the others.
//!
//! Prefix caching: a finished slot keeps its tokens and KV cache. A new
//! request takes the free slot whose tokens share the longest prefix with
//! its prompt, or copies that prefix's keys and values from any slot that
//! holds more of it (a system prompt shared by concurrent requests), and
//! only computes the rest. Because every row's arithmetic is independent of
//! what else is in the batch and of how the prompt was split (see
//! `phi3_model::forward_many`), an answer is bit-identical to the same
//! request run alone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use phi3_model::{feed_many, Model, Scratch, Session, SessionOptions};
use phi3_tokenizer::Tokenizer;

use crate::generate::{FinishReason, GenerateOptions, ReplyState};
use crate::sampler::{Sampler, SamplerConfig};

#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Requests decoded at once.
    pub slots: usize,
    /// Requests that may wait for a slot; more are refused.
    pub queue: usize,
    /// Each slot's session (its context is the most tokens one request may use).
    pub session: SessionOptions,
    /// Prompt tokens prefilled per step, across slots.
    pub step_tokens: usize,
    /// How long an idle scheduler waits, once a request arrives, for more
    /// to fill its free slots before it starts: requests sent together then
    /// read their prompts in one step (one pass over the weights, the
    /// prompt kernels at their most efficient) instead of the first alone
    /// and the rest after it. Zero starts at once.
    pub gather: std::time::Duration,
}

/// Where a request's events go: returns false once nobody listens (the
/// client left), which cancels the request. Called on the scheduler's
/// thread, so it must not block.
pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

/// One request.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    /// `max_tokens`, stop ids and strings, and the cancel flag (set it when
    /// the client goes away).
    pub options: GenerateOptions,
    /// Log-probabilities of each chosen token and of this many alternatives.
    pub logprobs: Option<usize>,
    pub sink: Sink,
}

/// The log-probability of a chosen token and of the most likely ones,
/// from the model's distribution (before sampling settings).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request has a slot; `cached_tokens` of its prompt were reused.
    Started { prompt_tokens: usize, cached_tokens: usize },
    /// One generated token and the text it lets the client see now (may be
    /// empty while a stop string or a character is incomplete).
    Token {
        token: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    /// The end: any text still held back, and the counts.
    Finished {
        finish: FinishReason,
        text: String,
        prompt_tokens: usize,
        completion_tokens: usize,
        cached_tokens: usize,
    },
    /// The request failed (its input, or the server shutting down).
    Failed(String),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the server is busy: {waiting} requests are already waiting (the queue holds {limit})")]
    QueueFull { waiting: usize, limit: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error(
        "the prompt has {prompt} tokens; the context holds {context}, and at least one must be left for the reply"
    )]
    PromptTooLong { prompt: usize, context: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error(transparent)]
    Sampler(#[from] crate::sampler::SamplerError),
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Job>,
    shutting_down: bool,
    active: usize,
    stats: Stats,
}

/// Counts since the scheduler started, for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub running: usize,
    pub waiting: usize,
    /// Requests that ended with a stop or a limit.
    pub finished: u64,
    /// Requests whose client left or that a shutdown cut short.
    pub cancelled: u64,
    /// Requests that failed or were refused once queued.
    pub failed: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens taken from the prefix cache instead of computed.
    pub cached_tokens: u64,
    pub generated_tokens: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Set to cancel every running request (a shutdown that cannot wait).
    abort: AtomicBool,
}

/// A handle to the scheduler thread; cheap to share between handlers.
pub struct Scheduler {
    shared: Arc<Shared>,
    config: SchedulerConfig,
    vocab: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Scheduler {
    /// Starts the scheduler thread. Fails if a slot's session cannot be made
    /// (a context the model does not allow).
    pub fn start(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        config: SchedulerConfig,
    ) -> Result<Scheduler, phi3_model::ModelError> {
        // make the slots here so that a bad option fails the caller, not the thread
        Session::new(&model, config.session)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            abort: AtomicBool::new(false),
        });
        let vocab = model.config.vocab_size;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("phi3-scheduler".into())
            .spawn(move || run(&model, &tokenizer, config, &thread_shared))
            .expect("spawning the scheduler thread");
        Ok(Scheduler {
            shared,
            config,
            vocab,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a request, or refuses it at once (full queue, bad input).
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        if job.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        let context = self.config.session.context;
        if job.prompt.len() >= context {
            return Err(SubmitError::PromptTooLong {
                prompt: job.prompt.len(),
                context,
            });
        }
        let vocab = self.vocab;
        let out_of_range = job.prompt.iter().chain(job.sampler.logit_bias.iter().map(|(id, _)| id));
        if let Some(&id) = out_of_range.into_iter().find(|&&id| id as usize >= vocab) {
            return Err(SubmitError::TokenOutOfRange { id, vocab });
        }
        job.sampler.validate()?;
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        let free = self.config.slots.saturating_sub(q.active);
        if q.waiting.len() >= self.config.queue + free {
            return Err(SubmitError::QueueFull {
                waiting: q.waiting.len(),
                limit: self.config.queue,
            });
        }
        q.waiting.push_back(job);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// (requests running, requests waiting)
    pub fn load(&self) -> (usize, usize) {
        let s = self.stats();
        (s.running, s.waiting)
    }

    pub fn stats(&self) -> Stats {
        let q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        Stats {
            running: q.active,
            waiting: q.waiting.len(),
            ..q.stats
        }
    }

    /// Stops taking requests: waiting ones fail, running ones go on.
    pub fn close(&self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.shutting_down = true;
        let refused: Vec<Job> = q.waiting.drain(..).collect();
        q.stats.failed += refused.len() as u64;
        for mut job in refused {
            (job.sink)(Event::Failed(SubmitError::ShuttingDown.to_string()));
        }
        self.shared.wake.notify_all();
    }

    /// Ends every running request as cancelled at the next step.
    pub fn abort(&self) {
        self.shared.abort.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
    }

    /// Closes, lets running requests finish (or, with `abort`, end as
    /// cancelled at the next step), and returns when the thread has ended.
    pub fn shutdown(&self, abort: bool) {
        self.close();
        if abort {
            self.abort();
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown(true);
    }
}

/// A request that holds a slot.
struct Active<'t> {
    job: Job,
    sampler: Sampler,
    reply: ReplyState<'t>,
    /// Prompt tokens not yet fed.
    pending: Vec<u32>,
    /// The last sampled token, fed at the next step.
    next: Option<u32>,
    cached: usize,
}

struct Slot<'m, 't> {
    session: Session<'m>,
    active: Option<Active<'t>>,
}

fn run(model: &Model, tokenizer: &Tokenizer, config: SchedulerConfig, shared: &Shared) {
    let mut slots: Vec<Slot> = (0..config.slots.max(1))
        .map(|_| Slot {
            session: Session::new(model, config.session).expect("checked in start"),
            active: None,
        })
        .collect();
    let mut scratch = Scratch::default();
    loop {
        let arrived = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let before = q.waiting.len();
                q.waiting.retain(|job| !cancelled(job));
                q.stats.cancelled += (before - q.waiting.len()) as u64;
                let running = slots.iter().filter(|s| s.active.is_some()).count();
                let free = slots.len() - running;
                if running == 0 && !q.waiting.is_empty() {
                    q = gather(q, free, config.gather, shared);
                }
                let take = free.min(q.waiting.len());
                let arrived: Vec<Job> = q.waiting.drain(..take).collect();
                q.active = running + arrived.len();
                if q.active > 0 {
                    break arrived;
                }
                if q.shutting_down {
                    return;
                }
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        // A bug must not leave every client waiting forever: a panic in a
        // step fails the requests of that step, and the slots start afresh.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for job in arrived {
                admit(&mut slots, job, tokenizer, shared);
            }
            step(&mut slots, config.step_tokens, &mut scratch, shared);
        }));
        if stepped.is_err() {
            for slot in slots.iter_mut() {
                let why = "internal error while generating; the request was stopped";
                let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fail(slot, why.into(), shared)));
                if failed.is_err() {
                    // its sink panicked again: drop the request without telling it
                    slot.active = None;
                    slot.session.reset();
                }
            }
            scratch = Scratch::default();
        }
    }
}

/// Waits, with nothing running, until `free` requests wait, the scheduler
/// shuts down, or `window` has passed since the call (see
/// [`SchedulerConfig::gather`]).
fn gather<'q>(
    mut q: std::sync::MutexGuard<'q, Queue>,
    free: usize,
    window: std::time::Duration,
    shared: &'q Shared,
) -> std::sync::MutexGuard<'q, Queue> {
    let start = std::time::Instant::now();
    while q.waiting.len() < free && !q.shutting_down {
        let left = window.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        q = shared.wake.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
    }
    q
}

fn cancelled(job: &Job) -> bool {
    job.options.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Puts a job in the free slot that reuses most of its prompt.
fn admit<'m, 't>(slots: &mut [Slot<'m, 't>], mut job: Job, tokenizer: &'t Tokenizer, shared: &Shared) {
    let prompt = &job.prompt;
    let in_common = |s: &Slot| common_prefix(s.session.tokens(), prompt);
    let chosen = (0..slots.len())
        .filter(|&i| slots[i].active.is_none())
        .max_by_key(|&i| in_common(&slots[i]))
        .expect("admitted only with a free slot");
    // the last prompt token is always fed: its logits choose the first reply token
    let limit = prompt.len() - 1;
    let mut reuse = in_common(&slots[chosen]).min(limit);
    if let Some(donor) = (0..slots.len()).max_by_key(|&i| in_common(&slots[i])) {
        let offered = in_common(&slots[donor]).min(limit);
        if offered > reuse {
            let (a, b) = (chosen.min(donor), chosen.max(donor));
            let (left, right) = slots.split_at_mut(b);
            let (dst, src) = if chosen < donor {
                (&mut left[a], &right[0])
            } else {
                (&mut right[0], &left[a])
            };
            if dst.session.copy_prefix_from(&src.session, offered) {
                reuse = offered;
            }
        }
    }
    let session = &mut slots[chosen].session;
    session.truncate(reuse); // or, where a ring buffer has wrapped, a reset
    let cached = session.tokens().len();
    let mut sampler = match Sampler::new(job.sampler.clone()) {
        Ok(s) => s,
        Err(e) => {
            left_before_starting(shared, false);
            (job.sink)(Event::Failed(e.to_string()));
            return;
        }
    };
    for &t in prompt {
        sampler.accept(t);
    }
    let pending = prompt[cached..].to_vec();
    let started = Event::Started {
        prompt_tokens: prompt.len(),
        cached_tokens: cached,
    };
    if !(job.sink)(started) {
        left_before_starting(shared, true);
        return;
    }
    let reply = ReplyState::new(tokenizer, &job.options);
    slots[chosen].active = Some(Active {
        job,
        sampler,
        reply,
        pending,
        next: None,
        cached,
    });
}

/// Counts a request that never got to run in its slot.
fn left_before_starting(shared: &Shared, cancelled: bool) {
    let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
    if cancelled {
        q.stats.cancelled += 1;
    } else {
        q.stats.failed += 1;
    }
    q.active = q.active.saturating_sub(1);
}

/// One forward pass over every active slot, then sampling for each.
fn step(slots: &mut [Slot], step_tokens: usize, scratch: &mut Scratch, shared: &Shared) {
    let abort = shared.abort.load(Ordering::Relaxed);
    // what each active slot feeds now
    let mut budget = step_tokens.max(1);
    let mut feeds: Vec<(usize, Vec<u32>)> = Vec::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        let Some(a) = slot.active.as_mut() else { continue };
        if abort || cancelled(&a.job) {
            finish(slot, FinishReason::Cancelled, shared);
            continue;
        }
        if let Some(t) = a.next {
            feeds.push((i, vec![t]));
        } else if budget > 0 {
            let n = a.pending.len().min(budget);
            budget -= n;
            feeds.push((i, a.pending.drain(..n).collect()));
        }
    }
    if feeds.is_empty() {
        return;
    }
    let results = {
        let wanted: Vec<usize> = feeds.iter().map(|(i, _)| *i).collect();
        let mut sessions: Vec<&mut Session> = slots
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| wanted.contains(i))
            .map(|(_, s)| &mut s.session)
            .collect();
        let views: Vec<&[u32]> = feeds.iter().map(|(_, f)| f.as_slice()).collect();
        feed_many(&mut sessions, &views, scratch)
    };
    for ((i, _), result) in feeds.into_iter().zip(results) {
        let slot = &mut slots[i];
        match result {
            Err(e) => fail(slot, e.to_string(), shared),
            Ok(logits) => {
                let prefilling = slot
                    .active
                    .as_ref()
                    .is_some_and(|a| a.next.is_none() && !a.pending.is_empty());
                if !prefilling {
                    sample(slot, &logits, shared);
                }
            }
        }
    }
}

/// Chooses the slot's next token from `logits` and tells its client.
fn sample(slot: &mut Slot, logits: &[f32], shared: &Shared) {
    let context = slot.session.context();
    let held = slot.session.tokens().len();
    let a = slot.active.as_mut().expect("an active slot");
    if a.reply.full() {
        return finish(slot, FinishReason::Length, shared);
    }
    let token = match a.sampler.sample(logits) {
        Ok(t) => t,
        Err(e) => return fail(slot, e.to_string(), shared),
    };
    let logprobs = a.job.logprobs.map(|n| logprobs_of(logits, token, n));
    let taken_before = a.reply.tokens.len();
    let (text, done) = match a.reply.push(token) {
        Ok(r) => r,
        Err(e) => return fail(slot, e.to_string(), shared),
    };
    if a.reply.tokens.len() > taken_before {
        // a stop token is not part of the reply
        let event = Event::Token { token, text, logprobs };
        if !(a.job.sink)(event) {
            return finish(slot, FinishReason::Cancelled, shared);
        }
    }
    if let Some(reason) = done {
        return finish(slot, reason, shared);
    }
    a.sampler.accept(token);
    if held >= context {
        return finish(slot, FinishReason::ContextFull, shared);
    }
    a.next = Some(token);
}

fn finish(slot: &mut Slot, finish: FinishReason, shared: &Shared) {
    let Some(mut a) = slot.active.take() else { return };
    {
        let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut q.stats;
        if finish == FinishReason::Cancelled {
            s.cancelled += 1;
        } else {
            s.finished += 1;
        }
        s.prompt_tokens += a.job.prompt.len() as u64;
        s.cached_tokens += a.cached as u64;
        s.generated_tokens += a.reply.tokens.len() as u64;
        q.active = q.active.saturating_sub(1);
    }
    let text = a.reply.finish();
    (a.job.sink)(Event::Finished {
        finish,
        text,
        prompt_tokens: a.job.prompt.len(),
        completion_tokens: a.reply.tokens.len(),
        cached_tokens: a.cached,
    });
}

fn fail(slot: &mut Slot, why: String, shared: &Shared) {
    if let Some(mut a) = slot.active.take() {
        {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.stats.failed += 1;
            q.active = q.active.saturating_sub(1);
        }
        (a.job.sink)(Event::Failed(why));
    }
    // what the session holds may be half-fed: start the slot afresh
    slot.session.reset();
}

/// log-softmax of the model's logits at `token`, and the `n` most likely tokens.
pub fn logprobs_of(logits: &[f32], token: u32, n: usize) -> TokenLogprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    let lp = |id: u32| (logits[id as usize] as f64 - log_z) as f32;
    let mut top: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(top.len());
    if n > 0 && n < top.len() {
        top.select_nth_unstable_by(n - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    }
    top.truncate(n);
    top.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    TokenLogprobs {
        logprob: lp(token),
        top: top.into_iter().map(|id| (id, lp(id))).collect(),
    }
}
