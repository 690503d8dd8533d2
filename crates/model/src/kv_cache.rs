//! The key/value cache: a ring buffer per layer.
//!
//! For models with an attention window narrower than the context (the 4k
//! models, PHI3_FAMILY.md §4), a future query at position p sees keys
//! p−W+1 ..= p, of which only the W−1 older ones can come from the cache, so
//! the cache holds W−1 positions and stops growing there. Without a window it
//! holds the whole context.

use phi3_kernels::attention::KvSegment;

use crate::rope::RopeTable;

#[derive(Debug, Clone)]
pub struct KvCache {
    /// Slots per layer.
    capacity: usize,
    /// Floats per position: kv_heads · head_dim.
    width: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Positions ever appended (the next position to write).
    len: usize,
    /// The rope table the cached keys were rotated with (LongRoPE never
    /// mixes tables in one cache).
    pub table: RopeTable,
}

impl KvCache {
    pub fn new(layers: usize, capacity: usize, width: usize) -> KvCache {
        KvCache {
            capacity,
            width,
            keys: vec![vec![0.0; capacity * width]; layers],
            values: vec![vec![0.0; capacity * width]; layers],
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
        2 * self.keys.len() * self.capacity * self.width * std::mem::size_of::<f32>()
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
            let dst = slot * self.width..(slot + 1) * self.width;
            self.keys[layer][dst.clone()].copy_from_slice(&k[r * stride..r * stride + self.width]);
            self.values[layer][dst].copy_from_slice(&v[r * stride..r * stride + self.width]);
        }
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
            keys: &self.keys[layer][slot * self.width..],
            values: &self.values[layer][slot * self.width..],
            stride: self.width,
            offset: kv_head * head_dim,
            len,
        };
        [seg(start, first), seg(0, count - first)]
    }
}
