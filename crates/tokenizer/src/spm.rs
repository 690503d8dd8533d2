//! SentencePiece BPE over a piece vocabulary with scores, with byte fallback
//! (shared/testdata/tokenizer/README.md, "How Phi-3 handles spaces").
//!
//! Start from single characters; repeatedly merge the adjacent pair whose
//! concatenation is a normal piece with the highest score (ties: leftmost);
//! characters that end up as no piece become their UTF-8 bytes' `<0xNN>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::vocab::Vocab;

/// U+2581, SentencePiece's visible space.
pub const SPACE: char = '\u{2581}';

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    end: usize,
    /// The symbol's token id when it is a piece (needed for rank merges).
    id: Option<u32>,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and `right`.
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    /// Combined byte length when queued; a different length now means stale.
    len: usize,
    /// The merged token.
    id: u32,
}

impl PartialEq for Pair {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pair {
    fn cmp(&self, o: &Self) -> Ordering {
        // higher score first, then the leftmost pair
        self.score.total_cmp(&o.score).then_with(|| o.left.cmp(&self.left))
    }
}

/// Encodes already-normalised text (spaces replaced by ▁, prefix added).
/// When the vocabulary allows it, the text is cut before every ▁ that follows
/// another character and each word is encoded once (repeats come from a cache).
pub fn encode_text<'t>(vocab: &Vocab, text: &'t str, out: &mut Vec<u32>) {
    if !vocab.word_split_safe || text.len() < 256 {
        return encode_normalized(vocab, text, out);
    }
    let mut cache: FxHashMap<&str, (usize, usize)> = FxHashMap::default();
    let mut store: Vec<u32> = Vec::new();
    let mut start = 0;
    let mut prev_other = false;
    let mut emit = |word: &'t str, out: &mut Vec<u32>| {
        let (a, b) = *cache.entry(word).or_insert_with(|| {
            let a = store.len();
            encode_normalized(vocab, word, &mut store);
            (a, store.len())
        });
        out.extend_from_slice(&store[a..b]);
    };
    for (i, c) in text.char_indices() {
        if c == SPACE && prev_other {
            emit(&text[start..i], out);
            start = i;
        }
        prev_other = c != SPACE;
    }
    emit(&text[start..], out);
}

/// Encodes one run of normalised text with the merge loop.
pub fn encode_normalized(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    if text.is_empty() {
        return;
    }
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (start, c) in text.char_indices() {
        let i = symbols.len();
        let end = start + c.len_utf8();
        symbols.push(Symbol {
            start,
            end,
            id: vocab.normal.get(&text[start..end]).copied(),
            prev: i.checked_sub(1),
            next: None,
        });
        if i > 0 {
            symbols[i - 1].next = Some(i);
        }
    }
    let mut heap = BinaryHeap::new();
    let try_pair = |heap: &mut BinaryHeap<Pair>, symbols: &[Symbol], left: usize, right: usize| {
        let (s, e) = (symbols[left].start, symbols[right].end);
        let found = match &vocab.merges {
            // Hugging Face BPE: the pair's merge rank decides (lower first)
            Some(merges) => match (symbols[left].id, symbols[right].id) {
                (Some(a), Some(b)) => merges.get(&(a, b)).map(|&(rank, id)| (-(rank as f32), id)),
                _ => None,
            },
            // SentencePiece: the merged piece's score decides (higher first)
            None => vocab.normal.get(&text[s..e]).map(|&id| (vocab.scores[id as usize], id)),
        };
        if let Some((score, id)) = found {
            heap.push(Pair {
                score,
                left,
                right,
                len: e - s,
                id,
            });
        }
    };
    for i in 1..symbols.len() {
        try_pair(&mut heap, &symbols, i - 1, i);
    }
    while let Some(p) = heap.pop() {
        let (l, r) = (symbols[p.left], symbols[p.right]);
        // stale: one side was merged away or grew since this pair was queued
        if l.end == l.start || r.end == r.start || l.next != Some(p.right) || r.end - l.start != p.len {
            continue;
        }
        symbols[p.left].end = r.end;
        symbols[p.left].next = r.next;
        symbols[p.left].id = Some(p.id);
        symbols[p.right].end = symbols[p.right].start; // mark as merged away
        if let Some(n) = r.next {
            symbols[n].prev = Some(p.left);
        }
        if let Some(prev) = symbols[p.left].prev {
            try_pair(&mut heap, &symbols, prev, p.left);
        }
        if let Some(next) = symbols[p.left].next {
            try_pair(&mut heap, &symbols, p.left, next);
        }
    }
    let mut i = Some(0);
    while let Some(k) = i {
        let s = symbols[k];
        let piece = &text[s.start..s.end];
        match s.id.or_else(|| vocab.normal.get(piece).copied()) {
            Some(id) => out.push(id),
            None => {
                for b in piece.bytes() {
                    match (vocab.byte_ids[b as usize], vocab.unk) {
                        (Some(id), _) | (None, Some(id)) => out.push(id),
                        (None, None) => {}
                    }
                }
            }
        }
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/tokenizer/ggml-vocab-phi-3.gguf");
        Vocab::from_gguf(&phi3_formats::GgufFile::open(p).unwrap()).unwrap()
    }

    #[test]
    fn word_by_word_equals_one_merge_loop_on_long_text() {
        let v = vocab();
        assert!(v.word_split_safe, "the Phi-3 vocabulary has no piece with an inner ▁");
        let mut text = String::new();
        let words = [
            "the",
            "  Hello",
            "世界",
            "😀",
            "\n\n",
            "   ",
            "don't",
            "x",
            "42",
            "▁▁",
            "ünïcödé",
        ];
        let mut state = 12345u32;
        while text.len() < 5000 {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            text.push_str(words[(state >> 16) as usize % words.len()]);
            if state & 1 == 0 {
                text.push(' ');
            }
        }
        let normalized: String = std::iter::once(SPACE)
            .chain(text.chars().map(|c| if c == ' ' { SPACE } else { c }))
            .collect();
        let (mut split, mut whole) = (Vec::new(), Vec::new());
        encode_text(&v, &normalized, &mut split);
        encode_normalized(&v, &normalized, &mut whole);
        assert_eq!(split, whole);
    }
}
