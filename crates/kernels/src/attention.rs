//! Scaled dot-product attention of one query head over a run of keys.
//!
//! Keys and values arrive as one or two contiguous segments (the KV cache's
//! older entries and the current batch), so a ring-buffer cache never has to
//! be rearranged. One query's scores are kept (a row of T floats, never a
//! T×T matrix), then exponentiated against their maximum and used to weigh
//! the values: exact softmax, no rescaling per key. On x86-64 with AVX2,
//! FMA and F16C the key dot products and the value sums read f16 and f32
//! rows directly, eight lanes at a time (`rows_x86`).

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
            KvType::F16 => {
                // by slices (F16C where present), the same rounding as one at a time
                use half::slice::HalfFloatSliceExt;
                let mut half = [f16::ZERO; 64];
                for chunk in v.chunks_mut(64) {
                    let half = &mut half[..chunk.len()];
                    half.convert_from_f32_slice(chunk);
                    half.convert_to_f32_slice(chunk);
                }
            }
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
    SCRATCH.with(|cell| {
        let (scores, row) = &mut *cell.borrow_mut();
        scores.clear();
        row.resize(dim, 0.0);
        for seg in segments {
            push_scores(q, seg, scale, scores, row);
        }
        // exp(s − max), the far ones flushed to zero (`softmax_weights`)
        let denom = crate::softmax_weights::weights(scores);
        out.fill(0.0);
        // a slice of the output at a time, kept in registers across the keys
        for part in (0..dim).step_by(VALUE_SLICE) {
            let len = VALUE_SLICE.min(dim - part);
            let out = &mut out[part..part + len];
            let mut at = 0;
            for seg in segments {
                add_rows(&scores[at..at + seg.len], seg, part, out, row);
                at += seg.len;
            }
        }
        if denom > 0.0 {
            let inv = 1.0 / denom;
            out.iter_mut().for_each(|o| *o *= inv);
        }
    });
}

/// Output values summed per pass over the value rows.
#[cfg(target_arch = "x86_64")]
const VALUE_SLICE: usize = rows_x86::SLICE;
#[cfg(not(target_arch = "x86_64"))]
const VALUE_SLICE: usize = 96;

thread_local! {
    /// One query's scores, and room to widen one stored row to f32, kept
    /// per thread (no allocation per call).
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Appends `scale · q · key` for each of the segment's keys to `scores`.
fn push_scores(q: &[f32], seg: &KvSegment, scale: f32, scores: &mut Vec<f32>, buf: &mut [f32]) {
    let dim = q.len();
    let at = scores.len();
    scores.resize(at + seg.len, 0.0);
    let out = &mut scores[at..];
    #[cfg(target_arch = "x86_64")]
    if rows_x86::available() && seg.len > 0 {
        let end = (seg.len - 1) * seg.stride + seg.offset + dim;
        // SAFETY: AVX2, FMA and F16C were detected at run time, and every
        // row read lies inside the stored keys (`end` checked).
        match seg.keys {
            KvRows::F32(k) => {
                assert!(end <= k.len(), "key rows");
                let rows = k[seg.offset..].as_ptr() as *const u8;
                return unsafe { rows_x86::scores::<{ rows_x86::F32 }>(q, rows, seg.stride, scale, out) };
            }
            KvRows::F16(k) => {
                assert!(end <= k.len(), "key rows");
                let rows = k[seg.offset..].as_ptr() as *const u8;
                return unsafe { rows_x86::scores::<{ rows_x86::F16 }>(q, rows, seg.stride, scale, out) };
            }
            KvRows::Q8_0(k) => {
                // read in place, each value as the dequantizer gives it
                assert!(end.div_ceil(32) * 34 <= k.len(), "key rows");
                let rows = k[seg.offset / 32 * 34..].as_ptr();
                return unsafe { rows_x86::scores::<{ rows_x86::Q8 }>(q, rows, seg.stride, scale, out) };
            }
        }
    }
    for (r, o) in out.iter_mut().enumerate() {
        let key = seg.keys.get(r * seg.stride + seg.offset, dim, buf);
        *o = crate::dot::dot_f32(q, key) * scale;
    }
}

/// `out += Σ_r weights[r] · values[r]` over the segment's rows, for the
/// output slice starting at value `part` of the head.
fn add_rows(weights: &[f32], seg: &KvSegment, part: usize, out: &mut [f32], buf: &mut [f32]) {
    let n = out.len();
    assert!(weights.len() == seg.len && out.len() <= VALUE_SLICE);
    #[cfg(target_arch = "x86_64")]
    if rows_x86::available() && seg.len > 0 {
        let start = seg.offset + part;
        let end = (seg.len - 1) * seg.stride + start + n;
        // SAFETY: AVX2, FMA and F16C were detected at run time, and every
        // row read lies inside the stored values (`end` checked).
        match seg.values {
            KvRows::F32(v) => {
                assert!(end <= v.len(), "value rows");
                return unsafe {
                    rows_x86::weighted_sum::<{ rows_x86::F32 }>(
                        weights,
                        v[start..].as_ptr() as *const u8,
                        seg.stride,
                        out,
                    )
                };
            }
            KvRows::F16(v) => {
                assert!(end <= v.len(), "value rows");
                return unsafe {
                    rows_x86::weighted_sum::<{ rows_x86::F16 }>(
                        weights,
                        v[start..].as_ptr() as *const u8,
                        seg.stride,
                        out,
                    )
                };
            }
            KvRows::Q8_0(v) => {
                // read in place, each value as the dequantizer gives it; the
                // same fused multiply-add per value in key order
                assert!(end.div_ceil(32) * 34 <= v.len(), "value rows");
                let rows = v[start / 32 * 34..].as_ptr();
                return unsafe { rows_x86::weighted_sum::<{ rows_x86::Q8 }>(weights, rows, seg.stride, out) };
            }
        }
    }
    // one fused multiply-add per value in key order, as the SIMD path does
    for (r, &p) in weights.iter().enumerate() {
        let row = seg.values.get(r * seg.stride + seg.offset + part, n, buf);
        for (o, &v) in out.iter_mut().zip(row) {
            *o = p.mul_add(v, *o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod rows_x86 {
    //! Attention's row operations on AVX2 + FMA + F16C, reading f16 rows
    //! without widening them into a buffer first. Each key's score and each
    //! output lane's sum is computed by the same operations in the same
    //! order however the keys are split into segments (cache, current
    //! batch), so a token's attention does not depend on how its context
    //! arrived (batching, chunked prefill, prefix reuse).

    use half::f16;
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            crate::simd::isa() != crate::simd::Isa::Scalar
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }

    /// Row formats: f32, f16, or Q8_0 blocks (a row then starts at a block).
    pub const F32: u8 = 0;
    pub const F16: u8 = 1;
    pub const Q8: u8 = 2;

    /// Bytes from one row to the next, `stride` values apart (a multiple of
    /// 32 for Q8_0 rows).
    fn row_bytes<const FMT: u8>(stride: usize) -> usize {
        match FMT {
            F32 => 4 * stride,
            F16 => 2 * stride,
            _ => stride / 32 * 34,
        }
    }

    /// Bytes of `n` stored values of a row.
    fn value_bytes<const FMT: u8>(n: usize) -> usize {
        match FMT {
            F32 => 4 * n,
            F16 => 2 * n,
            _ => n.div_ceil(32) * 34,
        }
    }

    /// Asks for the cache lines of `bytes` bytes at `p`, which need not be
    /// valid: a prefetch never faults. A head's rows lie a whole KV row
    /// apart (kilobytes: a page or more), too far for the hardware
    /// prefetchers to follow, so each row is fetched a few rows ahead.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn prefetch(p: *const u8, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut at = 0;
        while at < bytes {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at) as *const i8);
            at += 64;
        }
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(bytes - 1) as *const i8);
    }

    /// Eight values of a stored row, widened (a Q8_0 value as its
    /// dequantizer gives it, `q · d`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8<const FMT: u8>(row: *const u8, i: usize) -> __m256 {
        match FMT {
            F16 => _mm256_cvtph_ps(_mm_loadu_si128((row as *const f16).add(i) as *const __m128i)),
            F32 => _mm256_loadu_ps((row as *const f32).add(i)),
            _ => {
                let block = row.add(i / 32 * 34);
                let q = _mm_loadl_epi64(block.add(2 + i % 32) as *const __m128i);
                let d = (*(block as *const f16)).to_f32();
                _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(d))
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn at<const FMT: u8>(row: *const u8, i: usize) -> f32 {
        match FMT {
            F16 => (*(row as *const f16).add(i)).to_f32(),
            F32 => *(row as *const f32).add(i),
            _ => {
                let block = row.add(i / 32 * 34);
                (*block.add(2 + i % 32) as i8) as f32 * (*(block as *const f16)).to_f32()
            }
        }
    }

    /// The lanes of one key's accumulator added as ((0+1)+(2+3))+((4+5)+(6+7)),
    /// the order the eight-key transpose below adds them in.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lane_sum(v: __m256) -> f32 {
        let p = _mm256_hadd_ps(v, v); // 0+1, 2+3, .., 4+5, 6+7
        let q = _mm256_hadd_ps(p, p); // (0+1)+(2+3), .., (4+5)+(6+7)
        _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1)))
    }

    /// `scale · (q · row)`: one accumulator over the 8-lane chunks, its lanes
    /// added, then the tail (head dims that are not multiples of 8).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn score<const FMT: u8>(q: &[f32], row: *const u8, scale: f32) -> f32 {
        let chunks = q.len() / 8;
        let mut acc = _mm256_setzero_ps();
        for c in 0..chunks {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(8 * c)), load8::<FMT>(row, 8 * c), acc);
        }
        let mut sum = lane_sum(acc);
        for (j, qj) in q.iter().enumerate().skip(8 * chunks) {
            sum += qj * at::<FMT>(row, j);
        }
        sum * scale
    }

    /// `out[r] = scale · q · row_r` for rows `r · stride` values after
    /// `rows`, eight keys at a time (each q chunk loaded once for eight
    /// rows, eight independent accumulators), each key's arithmetic exactly
    /// [`score`]'s.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available and every row's `q.len()`
    /// values must be readable.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::needless_range_loop)] // constant-bound indexing keeps the accumulators in registers
    pub unsafe fn scores<const FMT: u8>(q: &[f32], rows: *const u8, stride: usize, scale: f32, out: &mut [f32]) {
        let row = |r: usize| rows.add(r * row_bytes::<FMT>(stride));
        let chunks = q.len() / 8;
        let mut r = 0;
        while r + 8 <= out.len() {
            for k in 0..8 {
                prefetch(
                    rows.wrapping_add((r + 8 + k) * row_bytes::<FMT>(stride)),
                    value_bytes::<FMT>(q.len()),
                );
            }
            let mut acc = [_mm256_setzero_ps(); 8];
            for c in 0..chunks {
                let qv = _mm256_loadu_ps(q.as_ptr().add(8 * c));
                for k in 0..8 {
                    acc[k] = _mm256_fmadd_ps(qv, load8::<FMT>(row(r + k), 8 * c), acc[k]);
                }
            }
            // transpose-and-add: lane k of the result is key k's lane sum
            let t: [__m256; 4] = std::array::from_fn(|i| _mm256_hadd_ps(acc[2 * i], acc[2 * i + 1]));
            let u0 = _mm256_hadd_ps(t[0], t[1]);
            let u1 = _mm256_hadd_ps(t[2], t[3]);
            let sums = _mm256_add_ps(
                _mm256_permute2f128_ps(u0, u1, 0x20),
                _mm256_permute2f128_ps(u0, u1, 0x31),
            );
            let mut s = [0f32; 8];
            _mm256_storeu_ps(s.as_mut_ptr(), sums);
            for k in 0..8 {
                for (j, qj) in q.iter().enumerate().skip(8 * chunks) {
                    s[k] += qj * at::<FMT>(row(r + k), j);
                }
                out[r + k] = s[k] * scale;
            }
            r += 8;
        }
        for k in r..out.len() {
            out[k] = score::<FMT>(q, row(k), scale);
        }
    }

    /// Output values summed per call: twelve 8-lane registers.
    pub const SLICE: usize = 96;

    /// `out += Σ_r weights[r] · row_r`, row r starting `r · stride` values
    /// after `rows`, one row after another, `out` (at most [`SLICE`]
    /// values) held in registers across the rows: each lane is one chain of
    /// multiply-adds in key order, continued from one segment to the next.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available and every row's `out.len()`
    /// values must be readable.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum<const FMT: u8>(weights: &[f32], rows: *const u8, stride: usize, out: &mut [f32]) {
        assert!(out.len() <= SLICE);
        if crate::simd::isa() == crate::simd::Isa::Avx512Vnni {
            return weighted_sum_16::<FMT>(weights, rows, stride, out);
        }
        weighted_sum_8::<FMT>(weights, rows, stride, out)
    }

    /// [`weighted_sum`] eight lanes to a register.
    ///
    /// # Safety
    /// As [`weighted_sum`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum_8<const FMT: u8>(
        weights: &[f32],
        rows: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        // a constant number of registers, so they stay registers
        macro_rules! widths {
            ($($n:literal)*) => {
                match out.len() / 8 {
                    $($n => weighted_sum_n::<FMT, $n>(weights, rows, stride, out),)*
                    _ => unreachable!("at most twelve registers"),
                }
            };
        }
        widths!(0 1 2 3 4 5 6 7 8 9 10 11 12)
    }

    /// [`weighted_sum`] sixteen lanes to a register (AVX-512).
    ///
    /// # Safety
    /// As [`weighted_sum`], and AVX-512F must be available.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub(super) unsafe fn weighted_sum_16<const FMT: u8>(
        weights: &[f32],
        rows: *const u8,
        stride: usize,
        out: &mut [f32],
    ) {
        macro_rules! widths {
            ($($n:literal)*) => {
                match out.len() / 16 {
                    $($n => weighted_sum16_n::<FMT, $n>(weights, rows, stride, out),)*
                    _ => unreachable!("at most six registers"),
                }
            };
        }
        widths!(0 1 2 3 4 5 6)
    }

    /// Sixteen values of a stored row, widened as [`load8`] widens eight.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    unsafe fn load16<const FMT: u8>(row: *const u8, i: usize) -> __m512 {
        match FMT {
            F16 => _mm512_cvtph_ps(_mm256_loadu_si256((row as *const f16).add(i) as *const __m256i)),
            F32 => _mm512_loadu_ps((row as *const f32).add(i)),
            _ => {
                let block = row.add(i / 32 * 34);
                let q = _mm_loadu_si128(block.add(2 + i % 32) as *const __m128i);
                let d = (*(block as *const f16)).to_f32();
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(d))
            }
        }
    }

    /// One output slice's value sums, `FULL` registers of `$width` lanes
    /// held across the rows, the values past them one at a time: every
    /// output value is one chain of fused multiply-adds in key order, so the
    /// eight- and sixteen-lane versions give the same bits.
    macro_rules! value_sums {
        ($name:ident, $features:literal, $width:literal, $vec:ty, $load:ident, $loadu:ident, $storeu:ident, $set1:ident, $fmadd:ident) => {
            #[inline]
            #[target_feature(enable = $features)]
            #[allow(clippy::needless_range_loop)] // constant-bound indexing keeps the accumulators in registers
            unsafe fn $name<const FMT: u8, const FULL: usize>(
                weights: &[f32],
                rows: *const u8,
                stride: usize,
                out: &mut [f32],
            ) {
                let n = out.len();
                let o = out.as_mut_ptr();
                let mut acc: [$vec; FULL] = std::array::from_fn(|c| $loadu(o.add($width * c)));
                for (r, &p) in weights.iter().enumerate() {
                    let row = rows.add(r * row_bytes::<FMT>(stride));
                    prefetch(
                        rows.wrapping_add((r + 8) * row_bytes::<FMT>(stride)),
                        value_bytes::<FMT>(n),
                    );
                    let pv = $set1(p);
                    for c in 0..FULL {
                        acc[c] = $fmadd(pv, $load::<FMT>(row, $width * c), acc[c]);
                    }
                    for j in $width * FULL..n {
                        out[j] = p.mul_add(at::<FMT>(row, j), out[j]);
                    }
                }
                for c in 0..FULL {
                    $storeu(o.add($width * c), acc[c]);
                }
            }
        };
    }

    value_sums!(
        weighted_sum_n,
        "avx2,fma,f16c",
        8,
        __m256,
        load8,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps
    );
    value_sums!(
        weighted_sum16_n,
        "avx2,fma,f16c,avx512f",
        16,
        __m512,
        load16,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::softmax;

    #[test]
    fn attention_matches_softmax_then_weighted_sum() {
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

    /// The SIMD row paths (f16 and f32 rows, head dims with and without a
    /// tail of fewer than 8) against a plain softmax over the same values.
    #[test]
    fn stored_rows_of_every_width_match_plain_softmax() {
        for dim in [20usize, 96, 128] {
            let n = 37;
            let keys: Vec<f32> = (0..n * dim).map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0).collect();
            let values: Vec<f32> = (0..n * dim).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
            let q: Vec<f32> = (0..dim).map(|i| ((i * 3 % 7) as f32 - 3.0) / 5.0).collect();
            // f16-exact values, so both storages hold the same numbers
            let k16: Vec<f16> = keys.iter().map(|&v| f16::from_f32(v)).collect();
            let v16: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            let mut scores: Vec<f32> = (0..n)
                .map(|r| (0..dim).map(|c| q[c] * keys[r * dim + c]).sum::<f32>() * 0.3)
                .collect();
            softmax(&mut scores);
            let mut expected = vec![0f32; dim];
            for r in 0..n {
                for c in 0..dim {
                    expected[c] += scores[r] * values[r * dim + c];
                }
            }
            for (keys, values) in [
                (KvRows::F32(&keys), KvRows::F32(&values)),
                (KvRows::F16(&k16), KvRows::F16(&v16)),
            ] {
                let seg = KvSegment {
                    keys,
                    values,
                    stride: dim,
                    offset: 0,
                    len: n,
                };
                let mut out = vec![0f32; dim];
                attend(&q, &[seg], 0.3, &mut out);
                for (o, e) in out.iter().zip(&expected) {
                    assert!((o - e).abs() < 1e-4, "dim {dim}: {o} vs {e}");
                }
            }
        }
    }

    /// A key whose softmax weight would be subnormal is left out entirely
    /// (the weight is flushed to zero), even against a huge value.
    #[test]
    fn subnormal_weights_are_flushed_to_zero() {
        let dim = 8;
        let q = [1f32; 8];
        // scores 0 and -92 (scale 1): exp(-92) ≈ 1.1e-40 is subnormal
        let mut keys = vec![0f32; 2 * dim];
        keys[dim..].fill(-11.5);
        let mut values = vec![1f32; 2 * dim];
        values[dim..].fill(1e35);
        let seg = KvSegment {
            keys: KvRows::F32(&keys),
            values: KvRows::F32(&values),
            stride: dim,
            offset: 0,
            len: 2,
        };
        let mut out = [0f32; 8];
        attend(&q, &[seg], 1.0, &mut out);
        // kept, the second key would add 1.1e-40 · 1e35 ≈ 1e-5 to every lane
        assert_eq!(out, [1f32; 8]);
    }

    /// A token's attention is the same bits however its keys are split into
    /// segments (cache and current batch, chunked prefill, reused prefixes),
    /// and whether a row is stored as Q8_0 or arrives as the f32 it reads as.
    #[test]
    fn segmentation_and_storage_do_not_change_a_single_bit() {
        let (n, dim) = (45usize, 96usize);
        let keys: Vec<f32> = (0..n * dim).map(|i| ((i * 7 % 23) as f32 - 11.0) / 9.0).collect();
        let values: Vec<f32> = (0..n * dim).map(|i| ((i * 5 % 13) as f32 - 6.0) / 7.0).collect();
        let q: Vec<f32> = (0..dim).map(|i| ((i * 3 % 7) as f32 - 3.0) / 5.0).collect();
        let k16: Vec<f16> = keys.iter().map(|&v| f16::from_f32(v)).collect();
        let v16: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let seg = |k: KvRows<'static>, v: KvRows<'static>, from: usize, to: usize| KvSegment {
            keys: k,
            values: v,
            stride: dim,
            offset: from * dim,
            len: to - from,
        };
        let leak = |v: Vec<f32>| -> &'static [f32] { Box::leak(v.into_boxed_slice()) };
        let leak16 = |v: Vec<f16>| -> &'static [f16] { Box::leak(v.into_boxed_slice()) };
        let (k32, v32, k16, v16) = (leak(keys.clone()), leak(values.clone()), leak16(k16), leak16(v16));
        for (k, v) in [
            (KvRows::F32(k32), KvRows::F32(v32)),
            (KvRows::F16(k16), KvRows::F16(v16)),
        ] {
            let mut whole = vec![0f32; dim];
            attend(&q, &[seg(k, v, 0, n)], 0.2, &mut whole);
            for cuts in [[0usize, 5, n], [0, 16, n], [3, 27, n], [0, 0, n], [13, 14, 40]] {
                let parts = [
                    seg(k, v, 0, cuts[0]),
                    seg(k, v, cuts[0], cuts[1]),
                    seg(k, v, cuts[1], cuts[2]),
                ];
                let mut split = vec![0f32; dim];
                attend(&q, &parts, 0.2, &mut split);
                if cuts[2] == n {
                    assert_eq!(split, whole, "cut at {cuts:?}");
                }
            }
        }
        // Q8_0 rows and the f32 rows they read as
        let mut kq = vec![0u8; QuantKind::Q8_0.row_bytes(n * dim)];
        let mut vq = vec![0u8; QuantKind::Q8_0.row_bytes(n * dim)];
        QuantKind::Q8_0.quantize(&keys, &mut kq).unwrap();
        QuantKind::Q8_0.quantize(&values, &mut vq).unwrap();
        let (mut kd, mut vd) = (vec![0f32; n * dim], vec![0f32; n * dim]);
        QuantKind::Q8_0.dequantize(&kq, &mut kd);
        QuantKind::Q8_0.dequantize(&vq, &mut vd);
        let (kq, vq, kd, vd): (&'static [u8], &'static [u8], _, _) = (
            Box::leak(kq.into_boxed_slice()),
            Box::leak(vq.into_boxed_slice()),
            leak(kd),
            leak(vd),
        );
        let mut stored = vec![0f32; dim];
        attend(&q, &[seg(KvRows::Q8_0(kq), KvRows::Q8_0(vq), 0, n)], 0.2, &mut stored);
        let mut mixed = vec![0f32; dim];
        let parts = [
            seg(KvRows::Q8_0(kq), KvRows::Q8_0(vq), 0, 20),
            seg(KvRows::F32(kd), KvRows::F32(vd), 20, n),
        ];
        attend(&q, &parts, 0.2, &mut mixed);
        assert_eq!(stored, mixed);
    }

    /// The f16 round trip by slices rounds every value as one at a time
    /// does (nearest even; subnormals, overflow to infinity, the tail of
    /// a row that is not a multiple of the slice width).
    #[test]
    fn f16_round_trip_by_slices_rounds_as_one_value_at_a_time() {
        let mut v: Vec<f32> = (0..1000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) >> 1) * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        v.extend([0.0, -0.0, 65504.0, 65520.0, 1e-8, 6.0e-8, 2.9802322e-8, f32::INFINITY]);
        for len in [v.len(), 63, 64, 65, 1] {
            let mut got = v[..len].to_vec();
            KvType::F16.round_trip(&mut got);
            for (g, &x) in got.iter().zip(&v[..len]) {
                let want = f16::from_f32(x).to_f32();
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "{x}: {g} vs {want}"
                );
            }
        }
    }

    /// The sixteen-lane value sums give the eight-lane ones' bits (each
    /// lane is one chain of fused multiply-adds in key order either way),
    /// for every stored format and output widths with and without a tail.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn value_sums_are_the_same_bits_at_either_width() {
        use rows_x86::{F16, F32, Q8};
        if !rows_x86::available() || !is_x86_feature_detected!("avx512f") {
            return;
        }
        let (keys, stride) = (37, 128);
        let values: Vec<f32> = (0..keys * stride)
            .map(|i| ((i * 7919 % 2003) as f32 - 1000.0) / 311.0)
            .collect();
        let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let mut q8 = vec![0u8; QuantKind::Q8_0.row_bytes(values.len())];
        QuantKind::Q8_0.quantize(&values, &mut q8).unwrap();
        let weights: Vec<f32> = (0..keys).map(|i| ((i * 31 % 17) as f32 + 0.3) / 17.0).collect();
        for n in [8usize, 16, 40, 96] {
            let formats: [(u8, *const u8); 3] = [
                (F32, values.as_ptr() as *const u8),
                (F16, halves.as_ptr() as *const u8),
                (Q8, q8.as_ptr()),
            ];
            for (format, rows) in formats {
                let start: Vec<f32> = (0..n).map(|i| i as f32 / 8.0).collect();
                let (mut narrow, mut wide) = (start.clone(), start);
                // SAFETY: AVX2, FMA, F16C and AVX-512F were detected; every
                // row holds `stride` ≥ n values.
                unsafe {
                    match format {
                        F32 => {
                            rows_x86::weighted_sum_8::<F32>(&weights, rows, stride, &mut narrow);
                            rows_x86::weighted_sum_16::<F32>(&weights, rows, stride, &mut wide);
                        }
                        F16 => {
                            rows_x86::weighted_sum_8::<F16>(&weights, rows, stride, &mut narrow);
                            rows_x86::weighted_sum_16::<F16>(&weights, rows, stride, &mut wide);
                        }
                        _ => {
                            rows_x86::weighted_sum_8::<Q8>(&weights, rows, stride, &mut narrow);
                            rows_x86::weighted_sum_16::<Q8>(&weights, rows, stride, &mut wide);
                        }
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&narrow), bits(&wide), "format {format}, {n} values");
            }
        }
    }
}
