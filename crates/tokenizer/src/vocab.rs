//! The vocabulary: pieces, scores and kinds, loaded from GGUF metadata
//! (`tokenizer.ggml.*`, GGUF_PHI3.md §6).

use rustc_hash::FxHashMap as HashMap;

use phi3_formats::gguf::Value;
use phi3_formats::GgufFile;

use crate::error::{Result, TokenizerError};

/// Token kinds, as llama.cpp's `token_type` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_gguf(v: i64) -> Option<TokenKind> {
        Some(match v {
            1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => return None,
        })
    }
}

/// A token matched as a whole in text when special tokens are parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    pub id: u32,
    pub text: String,
    /// Whitespace right after the token is swallowed.
    pub rstrip: bool,
    /// Whitespace right before the token is swallowed.
    pub lstrip: bool,
}

#[derive(Debug, Clone)]
pub struct Vocab {
    pub pieces: Vec<String>,
    pub scores: Vec<f32>,
    pub kinds: Vec<TokenKind>,
    /// Piece text → id, for normal pieces (the ones BPE merges may form).
    pub(crate) normal: HashMap<String, u32>,
    /// Byte value → id of its `<0xNN>` token.
    pub(crate) byte_ids: [Option<u32>; 256],
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// SentencePiece's dummy prefix: a space before each run of text (the
    /// start of the input and every fragment after a special token, as both
    /// llama.cpp and the Hugging Face `Prepend("▁")` normalizer do).
    pub add_space_prefix: bool,
    /// Hugging Face BPE merges: (left id, right id) → (rank, merged id).
    /// When present, pairs merge by rank (lowest first) instead of by the
    /// merged piece's score.
    pub merges: Option<HashMap<(u32, u32), (u32, u32)>>,
    /// A Jinja chat template shipped with the vocabulary, if any.
    pub chat_template: Option<String>,
    /// No normal piece has a ▁ right after another character, so no merge
    /// can cross the start of a ▁-led word: text may be encoded word by word
    /// (and repeated words from a cache) with identical results.
    pub(crate) word_split_safe: bool,
    /// Control and user-defined tokens, longest text first.
    pub specials: Vec<SpecialToken>,
}

impl Vocab {
    /// Builds a vocabulary from parallel arrays; `source_name` is used in errors.
    pub fn new(source_name: &str, pieces: Vec<String>, scores: Vec<f32>, kinds: Vec<TokenKind>) -> Result<Vocab> {
        let bad = |field: &str, why: String| TokenizerError::Vocab {
            source_name: source_name.to_string(),
            field: field.to_string(),
            why,
        };
        if pieces.is_empty() {
            return Err(bad("tokens", "is empty".into()));
        }
        if scores.len() != pieces.len() {
            return Err(bad(
                "scores",
                format!("has {} entries for {} tokens", scores.len(), pieces.len()),
            ));
        }
        if kinds.len() != pieces.len() {
            return Err(bad(
                "token_type",
                format!("has {} entries for {} tokens", kinds.len(), pieces.len()),
            ));
        }
        let mut normal = HashMap::default();
        let mut byte_ids = [None; 256];
        let mut specials = Vec::new();
        for (id, (piece, kind)) in pieces.iter().zip(&kinds).enumerate() {
            let id = id as u32;
            match kind {
                TokenKind::Normal => {
                    // the first id wins for duplicated texts, as in SentencePiece
                    normal.entry(piece.clone()).or_insert(id);
                }
                TokenKind::Byte => {
                    let b = parse_byte_piece(piece)
                        .ok_or_else(|| bad("tokens", format!("byte token {id} is {piece:?}, expected <0xNN>")))?;
                    byte_ids[b as usize].get_or_insert(id);
                }
                TokenKind::Control | TokenKind::UserDefined if !piece.is_empty() => specials.push(SpecialToken {
                    id,
                    text: piece.clone(),
                    rstrip: false,
                    lstrip: false,
                }),
                _ => {}
            }
        }
        specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        let word_split_safe = pieces_split_safe(&pieces, &kinds);
        Ok(Vocab {
            pieces,
            scores,
            kinds,
            normal,
            byte_ids,
            bos: None,
            eos: None,
            unk: None,
            add_bos: false,
            add_eos: false,
            add_space_prefix: true,
            merges: None,
            chat_template: None,
            word_split_safe,
            specials,
        })
    }

    /// Reads `tokenizer.ggml.*` from a GGUF file.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Vocab> {
        let name = gguf.path.display().to_string();
        let bad = |field: &str, why: &str| TokenizerError::Vocab {
            source_name: name.clone(),
            field: format!("tokenizer.ggml.{field}"),
            why: why.to_string(),
        };
        let model = gguf
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("model", "missing"))?;
        if model != "llama" {
            return Err(TokenizerError::UnsupportedModel {
                source_name: name.clone(),
                model: model.to_string(),
            });
        }
        let array = |field: &str| -> Result<&[Value]> {
            gguf.get(&format!("tokenizer.ggml.{field}"))
                .and_then(Value::as_array)
                .ok_or_else(|| bad(field, "missing or not an array"))
        };
        let pieces = array("tokens")?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("tokens", "holds a non-string"))
            })
            .collect::<Result<Vec<_>>>()?;
        let scores = match gguf.get("tokenizer.ggml.scores") {
            None => vec![0.0; pieces.len()],
            Some(_) => array("scores")?
                .iter()
                .map(|v| {
                    v.as_f64()
                        .map(|x| x as f32)
                        .ok_or_else(|| bad("scores", "holds a non-number"))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let kinds = match gguf.get("tokenizer.ggml.token_type") {
            None => vec![TokenKind::Normal; pieces.len()],
            Some(_) => array("token_type")?
                .iter()
                .map(|v| {
                    v.as_f64()
                        .and_then(|x| TokenKind::from_gguf(x as i64))
                        .ok_or_else(|| bad("token_type", "holds an unknown token type"))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let mut vocab = Vocab::new(&name, pieces, scores, kinds)?;
        let n = vocab.pieces.len();
        let id = |field: &str| -> Result<Option<u32>> {
            match gguf.get(&format!("tokenizer.ggml.{field}")) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(x) if (x as usize) < n => Ok(Some(x as u32)),
                    _ => Err(bad(field, "is not an id inside the vocabulary")),
                },
            }
        };
        vocab.bos = id("bos_token_id")?;
        vocab.eos = id("eos_token_id")?;
        vocab.unk = id("unknown_token_id")?;
        let flag = |field: &str, default: bool| {
            gguf.get(&format!("tokenizer.ggml.{field}"))
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        vocab.add_bos = flag("add_bos_token", true);
        vocab.add_eos = flag("add_eos_token", false);
        vocab.add_space_prefix = flag("add_space_prefix", true);
        vocab.chat_template = gguf
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);
        // GGUF holds no rstrip/lstrip flags: like the Hugging Face tokenizer that
        // transformers builds from the same file, no whitespace is swallowed.
        // `apply_llama_cpp_phi3_rstrip` gives llama.cpp's behaviour instead.
        Ok(vocab)
    }

    /// llama.cpp's rule for models named Phi-3 (GGUF_PHI3.md §6): whitespace
    /// after a special token is swallowed, except after `<unk>`, `<s>` and
    /// `<|endoftext|>`; `</s>` swallows it too.
    pub fn apply_llama_cpp_phi3_rstrip(&mut self) {
        for s in &mut self.specials {
            s.rstrip = !matches!(s.text.as_str(), "<unk>" | "<s>" | "<|endoftext|>");
        }
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Ids that end a reply: the vocabulary's eos, plus the tokens whose text
    /// is `<|end|>` or `<|endoftext|>`, which files often fail to list
    /// (PHI3_FAMILY.md §9 P3). A model's generation_config adds to these.
    pub fn end_of_generation_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos.into_iter().collect();
        for text in ["<|end|>", "<|endoftext|>"] {
            if let Some(id) = self.specials.iter().find(|s| s.text == text).map(|s| s.id) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// The id of a token by its exact text (any kind).
    pub fn id_of(&self, text: &str) -> Option<u32> {
        self.pieces.iter().position(|p| p == text).map(|i| i as u32)
    }
}

/// Whether no normal piece contains a ▁ preceded by a non-▁ character.
fn pieces_split_safe(pieces: &[String], kinds: &[TokenKind]) -> bool {
    pieces.iter().zip(kinds).all(|(p, k)| {
        *k != TokenKind::Normal || {
            let mut prev_other = false;
            p.chars().all(|c| {
                let ok = !(c == crate::spm::SPACE && prev_other);
                prev_other = c != crate::spm::SPACE;
                ok
            })
        }
    })
}

/// `<0x41>` → 0x41.
pub(crate) fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
