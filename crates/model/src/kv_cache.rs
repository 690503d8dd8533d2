//! The key/value cache: a ring buffer per layer.
//!
//! Each layer's keys (and values) are stored head by head: one KV head's
//! slots lie next to each other, `head_dim` values apart. A query of that
//! head then reads its keys as one contiguous run, which the hardware
//! prefetchers follow, instead of `head_dim` values out of every
//! kilobytes-long position row (a decode step of several sequences spent
//! about twice its memory time in attention that way).
//!
//! For models with an attention window narrower than the context (the 4k
//! models, PHI3_FAMILY.md §4), a future query at position p sees keys
//! p−W+1 ..= p, of which only the W−1 older ones can come from the cache, so
//! the cache holds W−1 positions and stops growing there. Without a window it
//! holds the whole context.

use half::f16;
use half::slice::HalfFloatSliceExt;
use phi3_kernels::attention::{KvRows, KvSegment, KvType};
use phi3_kernels::quant::QuantKind;

use crate::rope::RopeTable;

/// One layer's stored keys or values.
#[derive(Debug, Clone)]
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// Q8_0 blocks, `width / 32` per position.
    Q8_0(Vec<u8>),
}

impl Store {
    fn new(kind: KvType, values: usize) -> Store {
        match kind {
            KvType::F32 => Store::F32(vec![0.0; values]),
            KvType::F16 => Store::F16(vec![f16::ZERO; values]),
            KvType::Q8_0 => Store::Q8_0(vec![0; KvType::Q8_0.bytes(values)]),
        }
    }

    /// Stores `src` at value position `at`.
    fn put(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            // the slice conversion uses F16C where present: the same
            // round-to-nearest-even as one value at a time
            Store::F16(v) => v[at..at + src.len()].convert_from_f32_slice(src),
            Store::Q8_0(v) => {
                let start = at / 32 * 34;
                QuantKind::Q8_0
                    .quantize(src, &mut v[start..start + src.len() / 32 * 34])
                    .expect("Q8_0 has a quantizer");
            }
        }
    }

    /// Copies `values` values of `other` from value position `from` to `at`
    /// (same storage type; positions multiples of 32 for Q8_0).
    fn copy_from(&mut self, at: usize, other: &Store, from: usize, values: usize) {
        match (self, other) {
            (Store::F32(a), Store::F32(b)) => a[at..at + values].copy_from_slice(&b[from..from + values]),
            (Store::F16(a), Store::F16(b)) => a[at..at + values].copy_from_slice(&b[from..from + values]),
            (Store::Q8_0(a), Store::Q8_0(b)) => {
                let (at, from, bytes) = (at / 32 * 34, from / 32 * 34, values / 32 * 34);
                a[at..at + bytes].copy_from_slice(&b[from..from + bytes])
            }
            _ => unreachable!("callers check that the storage types match"),
        }
    }

    /// The stored bytes (little-endian), for saving.
    fn bytes(&self) -> Vec<u8> {
        match self {
            Store::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Store::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Store::Q8_0(v) => v.clone(),
        }
    }

    /// Restores bytes written by `bytes`; false if the length is wrong.
    fn restore(&mut self, b: &[u8]) -> bool {
        match self {
            Store::F32(v) if b.len() == 4 * v.len() => {
                for (d, c) in v.iter_mut().zip(b.chunks_exact(4)) {
                    *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
                true
            }
            Store::F16(v) if b.len() == 2 * v.len() => {
                for (d, c) in v.iter_mut().zip(b.chunks_exact(2)) {
                    *d = f16::from_le_bytes([c[0], c[1]]);
                }
                true
            }
            Store::Q8_0(v) if b.len() == v.len() => {
                v.copy_from_slice(b);
                true
            }
            _ => false,
        }
    }

    /// A view starting at value position `at`.
    fn rows(&self, at: usize) -> KvRows<'_> {
        match self {
            Store::F32(v) => KvRows::F32(&v[at..]),
            Store::F16(v) => KvRows::F16(&v[at..]),
            Store::Q8_0(v) => KvRows::Q8_0(&v[at / 32 * 34..]),
        }
    }
}

/// `data` as `[outer][inner]` chunks of `chunk` bytes, returned as
/// `[inner][outer]` (a layer's head-by-head bytes position by position,
/// and back).
fn swap_order(data: &[u8], outer: usize, inner: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for i in 0..inner {
        for o in 0..outer {
            let at = (o * inner + i) * chunk;
            out.extend_from_slice(&data[at..at + chunk]);
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct KvCache {
    /// Slots per layer.
    capacity: usize,
    /// Values per position: kv_heads · head_dim.
    width: usize,
    /// Values per position of one KV head.
    head_dim: usize,
    kind: KvType,
    keys: Vec<Store>,
    values: Vec<Store>,
    /// Positions ever appended (the next position to write).
    len: usize,
    /// The rope table the cached keys were rotated with (LongRoPE never
    /// mixes tables in one cache).
    pub table: RopeTable,
}

impl KvCache {
    /// A cache of `capacity` positions of `kv_heads` heads of `head_dim`
    /// values (a multiple of 32 for Q8_0 storage).
    pub fn new(layers: usize, capacity: usize, kv_heads: usize, head_dim: usize, kind: KvType) -> KvCache {
        assert!(
            kind != KvType::Q8_0 || head_dim.is_multiple_of(32),
            "Q8_0 rows of whole blocks"
        );
        let width = kv_heads * head_dim;
        KvCache {
            capacity,
            width,
            head_dim,
            kind,
            keys: (0..layers).map(|_| Store::new(kind, capacity * width)).collect(),
            values: (0..layers).map(|_| Store::new(kind, capacity * width)).collect(),
            len: 0,
            table: RopeTable::Short,
        }
    }

    /// Number of positions processed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Oldest position still held.
    pub fn first_held(&self) -> usize {
        self.len.saturating_sub(self.capacity)
    }

    /// Bytes of cache memory.
    pub fn bytes(&self) -> usize {
        2 * self.keys.len() * self.kind.bytes(self.capacity * self.width)
    }

    /// How keys and values are stored.
    pub fn kind(&self) -> KvType {
        self.kind
    }

    pub fn clear(&mut self, table: RopeTable) {
        self.len = 0;
        self.table = table;
    }

    /// Stores keys and values of positions `len .. len + t` for `layer`
    /// (rows of `width` floats each, `stride` apart in `k` and `v`). Only the
    /// last `capacity` positions are kept.
    pub fn write(&mut self, layer: usize, k: &[f32], v: &[f32], stride: usize, t: usize) {
        let skip = t.saturating_sub(self.capacity);
        let d = self.head_dim;
        for r in skip..t {
            let slot = (self.len + r) % self.capacity;
            for head in 0..self.width / d {
                let at = self.value_at(head, slot);
                let from = r * stride + head * d;
                self.keys[layer].put(at, &k[from..from + d]);
                self.values[layer].put(at, &v[from..from + d]);
            }
        }
    }

    /// Where a head's slot starts in a layer's store, in values.
    fn value_at(&self, head: usize, slot: usize) -> usize {
        (head * self.capacity + slot) * self.head_dim
    }

    /// Bytes of one head's slot as stored.
    fn slot_bytes(&self) -> usize {
        self.kind.bytes(self.head_dim)
    }

    /// Every layer's keys then values, position by position (each position's
    /// heads in order), as stored (for saved sessions: the file keeps one
    /// position's values together whatever the layout in memory).
    pub fn layer_bytes(&self) -> Vec<Vec<u8>> {
        let (heads, chunk) = (self.width / self.head_dim, self.slot_bytes());
        self.keys
            .iter()
            .chain(&self.values)
            .map(|s| swap_order(&s.bytes(), heads, self.capacity, chunk))
            .collect()
    }

    /// Restores what `layer_bytes` gave, with `len` positions appended;
    /// false if the shapes do not match this cache.
    pub fn restore(&mut self, layers: &[Vec<u8>], len: usize) -> bool {
        if layers.len() != self.keys.len() * 2 {
            return false;
        }
        let (heads, chunk) = (self.width / self.head_dim, self.slot_bytes());
        let expected = self.capacity * heads * chunk;
        if layers.iter().any(|b| b.len() != expected) {
            return false;
        }
        let by_head = |saved: &Vec<u8>| swap_order(saved, self.capacity, heads, chunk);
        let (k, v) = layers.split_at(self.keys.len());
        let ok = self.keys.iter_mut().zip(k).all(|(s, b)| s.restore(&by_head(b)))
            && self.values.iter_mut().zip(v).all(|(s, b)| s.restore(&by_head(b)));
        if ok {
            self.len = len;
        }
        ok
    }

    /// Forgets positions from `n` on. Only possible while the ring buffer has
    /// not wrapped (every position below `n` is still held).
    pub fn truncate(&mut self, n: usize) -> bool {
        if self.len <= self.capacity {
            self.len = self.len.min(n);
            true
        } else {
            false
        }
    }

    /// Makes this cache hold `other`'s first `n` positions (a copy, for
    /// prefix sharing). False, with this cache unchanged, when the shapes or
    /// storage types differ or `other` no longer holds all of them.
    pub fn copy_prefix_from(&mut self, other: &KvCache, n: usize) -> bool {
        let same_shape = self.width == other.width
            && self.head_dim == other.head_dim
            && self.kind == other.kind
            && self.keys.len() == other.keys.len();
        if !same_shape || n > other.len || other.first_held() > 0 || n > self.capacity || n > other.capacity {
            return false;
        }
        // each head's first n slots (the caches' capacities may differ)
        let heads = self.width / self.head_dim;
        let at: Vec<(usize, usize)> = (0..heads)
            .map(|head| (self.value_at(head, 0), other.value_at(head, 0)))
            .collect();
        for (mine, theirs) in self
            .keys
            .iter_mut()
            .zip(&other.keys)
            .chain(self.values.iter_mut().zip(&other.values))
        {
            for &(to, from) in &at {
                mine.copy_from(to, theirs, from, n * self.head_dim);
            }
        }
        self.len = n;
        self.table = other.table;
        true
    }

    /// Marks `t` positions as appended (after every layer has written them).
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// The cached positions `[from, len)` of one KV head as at most two
    /// contiguous segments. `from` must be ≥ [`first_held`](Self::first_held).
    pub fn segments(&self, layer: usize, kv_head: usize, from: usize) -> [KvSegment<'_>; 2] {
        debug_assert!(from >= self.first_held());
        let count = self.len.saturating_sub(from);
        let start = if self.capacity == 0 { 0 } else { from % self.capacity };
        let first = count.min(self.capacity - start);
        let seg = |slot: usize, len: usize| KvSegment {
            keys: self.keys[layer].rows(self.value_at(kv_head, slot)),
            values: self.values[layer].rows(self.value_at(kv_head, slot)),
            stride: self.head_dim,
            offset: 0,
            len,
        };
        [seg(start, first), seg(0, count - first)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADS: usize = 2;
    const DIM: usize = 4;

    /// A recognizable value: position, head and index within the head.
    fn value(pos: usize, head: usize, i: usize) -> f32 {
        (100 * pos + 10 * head + i) as f32
    }

    /// Writes positions `from..from + t` to every layer (values negated).
    fn append(cache: &mut KvCache, from: usize, t: usize) {
        let rows: Vec<f32> = (from..from + t)
            .flat_map(|p| (0..HEADS).flat_map(move |h| (0..DIM).map(move |i| value(p, h, i))))
            .collect();
        let negated: Vec<f32> = rows.iter().map(|v| -v).collect();
        for layer in 0..cache.keys.len() {
            cache.write(layer, &rows, &negated, HEADS * DIM, t);
        }
        cache.advance(t);
    }

    fn f32_rows(rows: KvRows<'_>) -> &[f32] {
        match rows {
            KvRows::F32(v) => v,
            _ => unreachable!("f32 cache"),
        }
    }

    /// The positions a head's segments hold, read back through the stride.
    fn positions(cache: &KvCache, head: usize, from: usize) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        for seg in cache.segments(1, head, from) {
            assert_eq!((seg.stride, seg.offset), (DIM, 0), "one head's slots back to back");
            let (k, v) = (f32_rows(seg.keys), f32_rows(seg.values));
            for r in 0..seg.len {
                let key = &k[r * DIM..(r + 1) * DIM];
                assert!(key.iter().zip(&v[r * DIM..(r + 1) * DIM]).all(|(k, v)| *k == -v));
                out.push(key.to_vec());
            }
        }
        out
    }

    fn expected(head: usize, range: std::ops::Range<usize>) -> Vec<Vec<f32>> {
        range.map(|p| (0..DIM).map(|i| value(p, head, i)).collect()).collect()
    }

    #[test]
    fn a_heads_positions_are_one_contiguous_run_until_the_ring_wraps() {
        let mut cache = KvCache::new(2, 5, HEADS, DIM, KvType::F32);
        append(&mut cache, 0, 3);
        for head in 0..HEADS {
            assert_eq!(positions(&cache, head, 0), expected(head, 0..3));
            assert_eq!(positions(&cache, head, 1), expected(head, 1..3));
        }
        // seven positions in five slots: the oldest two overwritten
        append(&mut cache, 3, 4);
        assert_eq!(cache.first_held(), 2);
        let [a, b] = cache.segments(1, 1, 2);
        assert_eq!((a.len, b.len), (3, 2), "slots 2..5, then 0..2");
        for head in 0..HEADS {
            assert_eq!(positions(&cache, head, 2), expected(head, 2..7));
        }
    }

    #[test]
    fn saved_bytes_keep_each_positions_heads_together() {
        let mut cache = KvCache::new(2, 4, HEADS, DIM, KvType::F32);
        append(&mut cache, 0, 4);
        let saved = cache.layer_bytes();
        assert_eq!(saved.len(), 4, "two layers' keys, then values");
        let keys: Vec<f32> = saved[1]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let by_position: Vec<f32> = (0..4)
            .flat_map(|p| (0..HEADS).flat_map(move |h| (0..DIM).map(move |i| value(p, h, i))))
            .collect();
        assert_eq!(keys, by_position);

        let mut restored = KvCache::new(2, 4, HEADS, DIM, KvType::F32);
        assert!(restored.restore(&saved, 4));
        for head in 0..HEADS {
            assert_eq!(positions(&restored, head, 0), expected(head, 0..4));
        }
        assert!(!restored.restore(&saved[..3], 4), "a layer missing");
        let mut short = saved.clone();
        short[2].pop();
        assert!(!restored.restore(&short, 4), "a layer one byte short");
    }

    #[test]
    fn a_prefix_copies_between_caches_of_different_capacities() {
        let mut long = KvCache::new(2, 8, HEADS, DIM, KvType::F32);
        append(&mut long, 0, 6);
        let mut short = KvCache::new(2, 4, HEADS, DIM, KvType::F32);
        assert!(short.copy_prefix_from(&long, 3));
        assert_eq!(short.len(), 3);
        for head in 0..HEADS {
            assert_eq!(positions(&short, head, 0), expected(head, 0..3));
        }
        // and from the short one back into a longer one
        let mut again = KvCache::new(2, 6, HEADS, DIM, KvType::F32);
        assert!(again.copy_prefix_from(&short, 2));
        for head in 0..HEADS {
            assert_eq!(positions(&again, head, 0), expected(head, 0..2));
        }
    }

    #[test]
    fn q8_0_heads_copy_whole_blocks() {
        let (heads, dim) = (2, 64);
        let mut a = KvCache::new(1, 6, heads, dim, KvType::Q8_0);
        let rows: Vec<f32> = (0..3 * heads * dim).map(|i| (i % 97) as f32 - 48.0).collect();
        a.write(0, &rows, &rows, heads * dim, 3);
        a.advance(3);
        let mut b = KvCache::new(1, 4, heads, dim, KvType::Q8_0);
        assert!(b.copy_prefix_from(&a, 3));
        let block_bytes = 3 * dim / 32 * 34;
        for head in 0..heads {
            let [sa, _] = a.segments(0, head, 0);
            let [sb, _] = b.segments(0, head, 0);
            assert_eq!((sa.stride, sb.stride), (dim, dim));
            let bytes = |s: KvSegment| match s.keys {
                KvRows::Q8_0(v) => v[..block_bytes].to_vec(),
                _ => unreachable!("q8_0 cache"),
            };
            assert_eq!(bytes(sa), bytes(sb));
            // the head's first value is the row's value at its offset, as quantized
            let first = match sb.keys {
                KvRows::Q8_0(v) => {
                    let mut out = [0f32; 32];
                    QuantKind::Q8_0.dequantize(&v[..34], &mut out);
                    out[0]
                }
                _ => unreachable!(),
            };
            let want = rows[head * dim];
            assert!((first - want).abs() <= 48.0 / 127.0, "{first} vs {want}");
        }
    }
}
