//! The one thread pool every kernel uses (DESIGN.md: one pool, sized to the
//! physical cores, no nested parallelism).
//!
//! `run(n, f)` calls `f(0..n)` spread over the workers and the calling
//! thread, and returns when every call has finished. Workers sleep on a
//! condition variable between jobs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

/// A job as the workers see it: the task function with its lifetime erased.
/// `run` does not return before every worker is done with it, which is what
/// makes handing out the pointer sound.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n_tasks: usize,
}

// SAFETY: the pointee is `Sync` and outlives every use (see `run`).
unsafe impl Send for Job {}

struct State {
    job: Option<Job>,
    /// Bumped for every job so a worker never runs the same job twice.
    generation: u64,
    /// Workers that have not yet finished the current job.
    busy: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
    next_task: AtomicUsize,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises jobs: kernels never nest, but two threads may share a pool.
    submit: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `threads` threads in all (the caller counts as one).
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                busy: 0,
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            next_task: AtomicUsize::new(0),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("phi3-worker-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawn a worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            submit: Mutex::new(()),
        }
    }

    /// Threads in all, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Tasks to cut `items` equal pieces of work into: [`TASKS_PER_THREAD`]
    /// per thread, at most one per item, at least one.
    pub fn tasks_for(&self, items: usize) -> usize {
        (self.threads() * TASKS_PER_THREAD).min(items).max(1)
    }

    /// Calls `f(i, part)` for every `part` of `data` cut in pieces of
    /// `part_len` elements (the last may be shorter), in parallel
    /// ([`Self::tasks_for`] tasks).
    pub fn for_each_part<T: Send>(&self, data: &mut [T], part_len: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        let parts = data.len().div_ceil(part_len.max(1));
        let tasks = self.tasks_for(parts);
        let per_task = parts.div_ceil(tasks);
        let base = PartsPtr(data.as_mut_ptr());
        let len = data.len();
        self.run(tasks, &|task| {
            let base = &base;
            for i in task * per_task..((task + 1) * per_task).min(parts) {
                let start = i * part_len;
                let end = (start + part_len).min(len);
                // SAFETY: parts are disjoint ranges of `data`, each visited by
                // exactly one task, and `data` outlives `run`.
                let part = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
                f(i, part);
            }
        });
    }

    /// Calls `f(i, row)` for every row `i` of `data` (rows of `row_len`
    /// elements): over the pool ([`Self::for_each_part`]) from
    /// [`PARALLEL_ROWS`] rows, on this thread below (a decode step's few
    /// rows are not worth waking the others for).
    pub fn for_each_row<T: Send>(&self, data: &mut [T], row_len: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        if data.len() < PARALLEL_ROWS * row_len {
            for (i, row) in data.chunks_mut(row_len.max(1)).enumerate() {
                f(i, row);
            }
        } else {
            self.for_each_part(data, row_len, f);
        }
    }

    /// Calls `f(i)` for every `i` in `0..n_tasks`, in parallel.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _one_job_at_a_time = self.submit.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY (lifetime erasure): we wait below until `busy == 0`, i.e.
        // until no worker can touch `f` any more, before returning.
        let erased: *const (dyn Fn(usize) + Sync + '_) = f;
        let job = Job {
            f: unsafe {
                std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync + 'static)>(
                    erased,
                )
            },
            n_tasks,
        };
        self.shared.next_task.store(0, Ordering::SeqCst);
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.job = Some(job);
            st.generation += 1;
            st.busy = self.workers.len();
        }
        self.shared.work.notify_all();
        run_tasks(&self.shared, job);
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.busy > 0 {
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.job = None;
    }
}

fn run_tasks(shared: &Shared, job: Job) {
    loop {
        let i = shared.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= job.n_tasks {
            break;
        }
        // SAFETY: `run` keeps the function alive until all workers report done.
        unsafe { (*job.f)(i) };
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while !st.shutdown && st.generation == seen {
                st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            st.job
        };
        if let Some(job) = job {
            run_tasks(shared, job);
        }
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.busy -= 1;
        if st.busy == 0 {
            shared.done.notify_all();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).shutdown = true;
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Tasks per thread when work is shared out. The threads take tasks as they
/// free up, so the finer the tasks, the less one thread waits for the other
/// at the end of a product: on this project's shared 2-core machine the
/// cores' speeds differ from moment to moment (as big and little cores do
/// on a phone). Phi-3-mini Q4_0 steps (`batchdecode`, alternating runs):
/// four sequences 148.5 ms with 4 tasks per thread, 124 with 8, 123.8 with
/// 16, 134 with 32; one sequence 106.4, 100.7, 103.3, 107.8; four 75-token
/// prompts 4.68, 4.08, 3.90, 4.36 s. Taking a task costs one atomic add.
pub const TASKS_PER_THREAD: usize = 16;

/// Rows from which [`ThreadPool::for_each_row`] shares rows out: a prompt's
/// per-row work between the products (norms, rotary embedding, activation,
/// residual adds, the activations' quantization) otherwise ran on one
/// thread while the others waited, ~15% of a 300-token prefill.
pub const PARALLEL_ROWS: usize = 8;

static GLOBAL: OnceLock<ThreadPool> = OnceLock::new();
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// Sets the size of the global pool; only effective before its first use.
/// Returns false if the pool already exists with another size.
pub fn set_global_threads(threads: usize) -> bool {
    REQUESTED.store(threads.max(1), Ordering::SeqCst);
    GLOBAL.get().is_none_or(|p| p.threads() == threads.max(1))
}

/// The pool every kernel uses: `PHI3_THREADS`, or `set_global_threads`, or
/// the number of physical cores.
pub fn global() -> &'static ThreadPool {
    GLOBAL.get_or_init(|| {
        let requested = REQUESTED.load(Ordering::SeqCst);
        let from_env = std::env::var("PHI3_THREADS").ok().and_then(|v| v.parse().ok());
        ThreadPool::new(if requested > 0 {
            requested
        } else {
            from_env.unwrap_or_else(physical_cores)
        })
    })
}

/// Physical cores (hyper-threads share a core's execution units, which
/// memory-bound kernels gain nothing from), from Linux's topology files;
/// the logical count elsewhere.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cores = std::collections::HashSet::new();
    for cpu in 0..logical.max(1) * 2 {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let (Ok(pkg), Ok(core)) = (
            std::fs::read_to_string(format!("{base}/physical_package_id")),
            std::fs::read_to_string(format!("{base}/core_id")),
        ) else {
            continue;
        };
        cores.insert((pkg.trim().to_string(), core.trim().to_string()));
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

/// The start of a slice whose disjoint parts go to different threads.
struct PartsPtr<T>(*mut T);
// SAFETY: only used by `for_each_part`, which hands out disjoint parts.
unsafe impl<T: Send> Sync for PartsPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 4] {
            let pool = ThreadPool::new(threads);
            for n in [0usize, 1, 3, 100] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::SeqCst);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
            }
        }
    }

    #[test]
    fn many_jobs_in_a_row() {
        let pool = ThreadPool::new(3);
        let total = AtomicUsize::new(0);
        for _ in 0..2000 {
            pool.run(7, &|i| {
                total.fetch_add(i, Ordering::Relaxed);
            });
        }
        assert_eq!(total.load(Ordering::SeqCst), 2000 * 21);
    }

    #[test]
    fn parts_are_disjoint_and_cover_everything() {
        let pool = ThreadPool::new(3);
        for (len, part) in [(0usize, 4usize), (1, 4), (10, 3), (1000, 7), (64, 64)] {
            let mut data = vec![0u32; len];
            pool.for_each_part(&mut data, part, &|i, p| {
                for (k, v) in p.iter_mut().enumerate() {
                    *v += (i * part + k) as u32 + 1;
                }
            });
            assert!(
                data.iter().enumerate().all(|(k, &v)| v == k as u32 + 1),
                "{len} by {part}"
            );
        }
    }
}
