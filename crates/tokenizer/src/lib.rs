//! Text ↔ token ids for the Phi-3 family's SentencePiece vocabulary.
//!
//! * [`Vocab`]: pieces, scores and kinds from GGUF metadata.
//! * [`Tokenizer::encode`]: SentencePiece BPE with the dummy prefix and byte
//!   fallback, optionally matching special tokens written in the text.
//! * [`Tokenizer::decode`] and [`StreamDecoder`]: the exact inverse, and a
//!   streaming version that never emits a broken character.

mod chat;
mod error;
mod hf;
mod spm;
mod stream;
mod vocab;

pub use chat::{ChatTemplate, Message, BUILTIN_PHI3_TEMPLATE};
pub use error::{Result, TokenizerError};
pub use stream::StreamDecoder;
pub use vocab::{SpecialToken, TokenKind, Vocab};

use phi3_formats::GgufFile;

/// Encoding options.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions {
    /// Prepend BOS when the vocabulary asks for it (`add_bos_token`).
    pub add_special: bool,
    /// Recognise special tokens (`<|user|>`, ...) written in the text.
    pub parse_special: bool,
}

#[derive(Debug, Clone)]
pub struct Tokenizer {
    pub vocab: Vocab,
}

impl Tokenizer {
    pub fn new(vocab: Vocab) -> Tokenizer {
        Tokenizer { vocab }
    }

    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
        Vocab::from_gguf(gguf).map(Tokenizer::new)
    }

    /// Text to ids.
    pub fn encode(&self, text: &str, opts: EncodeOptions) -> Vec<u32> {
        let v = &self.vocab;
        let mut out = Vec::new();
        if opts.add_special && v.add_bos {
            out.extend(v.bos);
        }
        let mut prev_special = true;
        let mut normalized = String::new();
        for frag in self.split_specials(text, opts.parse_special) {
            match frag {
                Fragment::Special(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    if t.is_empty() {
                        continue;
                    }
                    normalized.clear();
                    if v.add_space_prefix && prev_special {
                        normalized.push(spm::SPACE);
                    }
                    normalized.extend(t.chars().map(|c| if c == ' ' { spm::SPACE } else { c }));
                    spm::encode_text(v, &normalized, &mut out);
                    prev_special = false;
                }
            }
        }
        if opts.add_special && v.add_eos {
            out.extend(v.eos);
        }
        out
    }

    /// The bytes one token stands for in decoded text (control tokens: none
    /// unless `render_special`).
    pub fn token_bytes(&self, id: u32, render_special: bool) -> Result<Vec<u8>> {
        let v = &self.vocab;
        let i = id as usize;
        if i >= v.len() {
            return Err(TokenizerError::UnknownId { id, size: v.len() });
        }
        let piece = &v.pieces[i];
        Ok(match v.kinds[i] {
            TokenKind::Normal => piece.replace(spm::SPACE, " ").into_bytes(),
            TokenKind::Byte => {
                let b = v.byte_ids.iter().position(|&x| x == Some(id));
                b.map(|b| vec![b as u8]).unwrap_or_default()
            }
            // Hugging Face's skip_special_tokens drops every added token,
            // user-defined ones (Phi-3's `</s>`) included
            TokenKind::UserDefined | TokenKind::Control | TokenKind::Unknown | TokenKind::Unused => {
                if render_special {
                    piece.clone().into_bytes()
                } else {
                    Vec::new()
                }
            }
        })
    }

    /// Ids to text. Invalid UTF-8 from byte tokens is replaced by U+FFFD, as
    /// Hugging Face does. The dummy-prefix space of the first piece is removed.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> Result<String> {
        let mut d = StreamDecoder::new(self, render_special);
        let mut s = String::new();
        for &id in ids {
            s.push_str(&d.push(id)?);
        }
        s.push_str(&d.finish());
        Ok(s)
    }

    fn split_specials<'t>(&self, text: &'t str, parse: bool) -> Vec<Fragment<'t>> {
        // Hugging Face's split_special_tokens=True treats every added token,
        // special or not, as plain text.
        if !parse || self.vocab.specials.is_empty() {
            return vec![Fragment::Text(text)];
        }
        let mut out = Vec::new();
        let mut rest_start = 0; // start of the pending text fragment
        let mut i = 0;
        let mut strip_next = false;
        let bytes = text.as_bytes();
        while i < text.len() {
            if !text.is_char_boundary(i) {
                i += 1;
                continue;
            }
            let hit = self
                .vocab
                .specials
                .iter()
                .find(|s| bytes[i..].starts_with(s.text.as_bytes()));
            let Some(special) = hit else {
                i += 1;
                continue;
            };
            let mut frag = &text[rest_start..i];
            if strip_next {
                frag = frag.trim_start();
            }
            if special.lstrip {
                frag = frag.trim_end();
            }
            out.push(Fragment::Text(frag));
            out.push(Fragment::Special(special.id));
            strip_next = special.rstrip;
            i += special.text.len();
            rest_start = i;
        }
        let mut frag = &text[rest_start..];
        if strip_next {
            frag = frag.trim_start();
        }
        out.push(Fragment::Text(frag));
        out
    }
}

enum Fragment<'t> {
    Text(&'t str),
    Special(u32),
}
