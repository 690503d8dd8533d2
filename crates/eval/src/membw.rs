//! The machine's memory read bandwidth, measured with the kernels' thread pool.

use std::time::Instant;

/// Median GB/s of summing a `bytes`-sized buffer with all pool threads.
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    let words = bytes / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let pool = phi3_kernels::pool::global();
    let tasks = pool.threads();
    let chunk = words.div_ceil(tasks);
    let mut samples = Vec::new();
    for _ in 0..reps.max(1) + 1 {
        let sums: Vec<std::sync::atomic::AtomicU64> = (0..tasks).map(|_| Default::default()).collect();
        let t = Instant::now();
        pool.run(tasks, &|i| {
            let part = &buf[(i * chunk).min(words)..((i + 1) * chunk).min(words)];
            // eight independent lanes so the loop is bound by loads, not adds
            let mut acc = [0u64; 8];
            for c in part.chunks_exact(8) {
                for l in 0..8 {
                    acc[l] = acc[l].wrapping_add(c[l]);
                }
            }
            sums[i].store(
                acc.iter().fold(0, |a, b| a.wrapping_add(*b)),
                std::sync::atomic::Ordering::Relaxed,
            );
        });
        samples.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
        std::hint::black_box(&sums);
    }
    samples.remove(0); // the first pass also faults the pages in
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}
