//! Scaled dot-product attention of one query head over a run of keys.
//!
//! Keys and values arrive as one or two contiguous segments (the KV cache's
//! older entries and the current batch), so a ring-buffer cache never has to
//! be rearranged. Scores are computed one key at a time with an online
//! softmax, so no T×T matrix is ever materialised.

use half::f16;

use crate::quant::QuantKind;

/// How the KV cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Exact; used to compare against the reference.
    F32,
    /// Half the memory of f32; the default.
    #[default]
    F16,
    /// Q8_0 blocks of 32: a quarter of f32 (head dims must be multiples of 32).
    Q8_0,
}

impl KvType {
    /// Bytes of `n` stored values.
    pub fn bytes(self, n: usize) -> usize {
        match self {
            KvType::F32 => 4 * n,
            KvType::F16 => 2 * n,
            KvType::Q8_0 => n / 32 * 34,
        }
    }

    /// Replaces `v` by what storing and reading it back gives, so values
    /// used straight from the current batch equal those read from the cache.
    pub fn round_trip(self, v: &mut [f32]) {
        match self {
            KvType::F32 => {}
            KvType::F16 => v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32()),
            KvType::Q8_0 => {
                let mut q = vec![0u8; QuantKind::Q8_0.row_bytes(v.len())];
                QuantKind::Q8_0.quantize(v, &mut q).expect("Q8_0 has a quantizer");
                QuantKind::Q8_0.dequantize(&q, v);
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }
}

/// Stored rows of keys or values.
#[derive(Clone, Copy)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    /// Q8_0 blocks; offsets and strides (in values) are multiples of 32.
    Q8_0(&'a [u8]),
}

impl<'a> KvRows<'a> {
    /// `dim` values starting at value `base`, as f32 (converted into `buf`
    /// unless stored as f32).
    #[inline]
    fn get<'b>(&self, base: usize, dim: usize, buf: &'b mut [f32]) -> &'b [f32]
    where
        'a: 'b,
    {
        match *self {
            KvRows::F32(v) => &v[base..base + dim],
            KvRows::F16(v) => {
                crate::dot::f16_to_f32(&v[base..base + dim], &mut buf[..dim]);
                &buf[..dim]
            }
            KvRows::Q8_0(v) => {
                let start = base / 32 * 34;
                QuantKind::Q8_0.dequantize(&v[start..start + dim / 32 * 34], &mut buf[..dim]);
                &buf[..dim]
            }
        }
    }
}

/// A run of keys and values for one KV head: `len` rows, each `stride`
/// values apart, the head's `dim` values starting at `offset` in each row.
#[derive(Clone, Copy)]
pub struct KvSegment<'a> {
    pub keys: KvRows<'a>,
    pub values: KvRows<'a>,
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
    // head dims are 64-128 in the family: convert rows on the stack
    let mut kbuf = [0f32; 256];
    let mut vbuf = [0f32; 256];
    let (mut kheap, mut vheap) = (Vec::new(), Vec::new());
    let (kb, vb): (&mut [f32], &mut [f32]) = if dim <= 256 {
        (&mut kbuf, &mut vbuf)
    } else {
        kheap.resize(dim, 0.0);
        vheap.resize(dim, 0.0);
        (&mut kheap, &mut vheap)
    };
    for seg in segments {
        for r in 0..seg.len {
            let base = r * seg.stride + seg.offset;
            let k = seg.keys.get(base, dim, kb);
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
            let v = seg.values.get(base, dim, vb);
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
            keys: KvRows::F32(&keys),
            values: KvRows::F32(&values),
            stride: dim,
            offset: 0,
            len: 4,
        };
        let b = KvSegment {
            keys: KvRows::F32(&keys[4 * dim..]),
            values: KvRows::F32(&values[4 * dim..]),
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
