//! Streaming detokenizer: emits text as soon as it is valid UTF-8.

use crate::{Result, Tokenizer};

/// Turns ids into text one at a time. Bytes of a character split across
/// byte-fallback tokens are held back until the character is complete;
/// bytes that can never form a character become U+FFFD.
pub struct StreamDecoder<'t> {
    tok: &'t Tokenizer,
    render_special: bool,
    pending: Vec<u8>,
    /// Still at the start of the text: the dummy-prefix space is dropped.
    at_start: bool,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tok: &'t Tokenizer, render_special: bool) -> Self {
        StreamDecoder {
            tok,
            render_special,
            pending: Vec::new(),
            at_start: true,
        }
    }

    /// Adds one id; returns the text that became complete.
    pub fn push(&mut self, id: u32) -> Result<String> {
        let mut bytes = self.tok.token_bytes(id, self.render_special)?;
        if self.at_start && !bytes.is_empty() {
            self.at_start = false;
            if self.tok.vocab.add_space_prefix && bytes[0] == b' ' && self.pending.is_empty() {
                bytes.remove(0);
            }
        }
        self.pending.extend_from_slice(&bytes);
        Ok(self.drain_valid())
    }

    /// Flushes what is left (incomplete characters become U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    fn drain_valid(&mut self) -> String {
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).expect("valid prefix"));
                    match e.error_len() {
                        // an invalid sequence: replace it and go on
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                        // an incomplete character at the end: wait for more
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                    }
                }
            }
        }
    }
}
