//! Scaled dot-product attention of one query head over a run of keys.
//!
//! Keys and values arrive as one or two contiguous segments (the KV cache's
//! older entries and the current batch), so a ring-buffer cache never has to
//! be rearranged. Scores are computed one key at a time with an online
//! softmax, so no T×T matrix is ever materialised.

/// A run of keys and values for one KV head: `len` rows, each `stride` apart,
/// the head's `dim` values starting at `offset` in each row.
#[derive(Clone, Copy)]
pub struct KvSegment<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub stride: usize,
    pub offset: usize,
    pub len: usize,
}

/// `out = softmax(q·Kᵀ · scale) · V` over the concatenation of `segments`.
pub fn attend(q: &[f32], segments: &[KvSegment], scale: f32, out: &mut [f32]) {
    let dim = q.len();
    assert_eq!(out.len(), dim);
    out.fill(0.0);
    let mut max = f32::NEG_INFINITY;
    let mut denom = 0f32;
    for seg in segments {
        for r in 0..seg.len {
            let base = r * seg.stride + seg.offset;
            let k = &seg.keys[base..base + dim];
            let v = &seg.values[base..base + dim];
            let s = crate::dot::dot_f32(q, k) * scale;
            if s > max {
                // rescale what was accumulated under the old maximum
                let c = (max - s).exp();
                denom *= c;
                for o in out.iter_mut() {
                    *o *= c;
                }
                max = s;
            }
            let p = (s - max).exp();
            denom += p;
            for (o, &vv) in out.iter_mut().zip(v) {
                *o += p * vv;
            }
        }
    }
    if denom > 0.0 {
        let inv = 1.0 / denom;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::softmax;

    #[test]
    fn online_softmax_matches_two_pass() {
        let dim = 4;
        let n = 9;
        let keys: Vec<f32> = (0..n * dim).map(|i| ((i * 7 % 11) as f32 - 5.0) / 2.0).collect();
        let values: Vec<f32> = (0..n * dim).map(|i| ((i * 3 % 5) as f32 - 2.0) / 3.0).collect();
        let q = [0.3f32, -1.0, 0.7, 2.0];
        let mut scores: Vec<f32> = (0..n)
            .map(|r| (0..dim).map(|c| q[c] * keys[r * dim + c]).sum::<f32>() * 0.5)
            .collect();
        softmax(&mut scores);
        let mut expected = [0f32; 4];
        for r in 0..n {
            for c in 0..dim {
                expected[c] += scores[r] * values[r * dim + c];
            }
        }
        // split into two segments to exercise the ring-buffer path
        let a = KvSegment {
            keys: &keys,
            values: &values,
            stride: dim,
            offset: 0,
            len: 4,
        };
        let b = KvSegment {
            keys: &keys[4 * dim..],
            values: &values[4 * dim..],
            stride: dim,
            offset: 0,
            len: n - 4,
        };
        let mut out = [0f32; 4];
        attend(&q, &[a, b], 0.5, &mut out);
        for (o, e) in out.iter().zip(&expected) {
            assert!((o - e).abs() < 1e-5, "{o} vs {e}");
        }
    }
}
