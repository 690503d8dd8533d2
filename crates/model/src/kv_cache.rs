//! The key/value cache: a ring buffer per layer.
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

    /// Copies the first `values` values of `other` (same storage type).
    fn copy_prefix(&mut self, other: &Store, values: usize) {
        match (self, other) {
            (Store::F32(a), Store::F32(b)) => a[..values].copy_from_slice(&b[..values]),
            (Store::F16(a), Store::F16(b)) => a[..values].copy_from_slice(&b[..values]),
            (Store::Q8_0(a), Store::Q8_0(b)) => {
                let bytes = values / 32 * 34;
                a[..bytes].copy_from_slice(&b[..bytes])
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

#[derive(Debug, Clone)]
pub struct KvCache {
    /// Slots per layer.
    capacity: usize,
    /// Values per position: kv_heads · head_dim.
    width: usize,
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
    pub fn new(layers: usize, capacity: usize, width: usize, kind: KvType) -> KvCache {
        KvCache {
            capacity,
            width,
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
        for r in skip..t {
            let slot = (self.len + r) % self.capacity;
            self.keys[layer].put(slot * self.width, &k[r * stride..r * stride + self.width]);
            self.values[layer].put(slot * self.width, &v[r * stride..r * stride + self.width]);
        }
    }

    /// Every layer's keys then values, as stored (for saved sessions).
    pub fn layer_bytes(&self) -> Vec<Vec<u8>> {
        self.keys.iter().chain(&self.values).map(Store::bytes).collect()
    }

    /// Restores what `layer_bytes` gave, with `len` positions appended;
    /// false if the shapes do not match this cache.
    pub fn restore(&mut self, layers: &[Vec<u8>], len: usize) -> bool {
        if layers.len() != self.keys.len() * 2 {
            return false;
        }
        let (k, v) = layers.split_at(self.keys.len());
        let ok = self.keys.iter_mut().zip(k).all(|(s, b)| s.restore(b))
            && self.values.iter_mut().zip(v).all(|(s, b)| s.restore(b));
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
        let same_shape = self.width == other.width && self.kind == other.kind && self.keys.len() == other.keys.len();
        if !same_shape || n > other.len || other.first_held() > 0 || n > self.capacity || n > other.capacity {
            return false;
        }
        let values = n * self.width;
        for (mine, theirs) in self
            .keys
            .iter_mut()
            .zip(&other.keys)
            .chain(self.values.iter_mut().zip(&other.values))
        {
            mine.copy_prefix(theirs, values);
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
    pub fn segments(&self, layer: usize, kv_head: usize, head_dim: usize, from: usize) -> [KvSegment<'_>; 2] {
        debug_assert!(from >= self.first_held());
        let count = self.len.saturating_sub(from);
        let start = if self.capacity == 0 { 0 } else { from % self.capacity };
        let first = count.min(self.capacity - start);
        let seg = |slot: usize, len: usize| KvSegment {
            keys: self.keys[layer].rows(slot * self.width),
            values: self.values[layer].rows(slot * self.width),
            stride: self.width,
            offset: kv_head * head_dim,
            len,
        };
        [seg(start, first), seg(0, count - first)]
    }
}
