//! Loading a vocabulary from Hugging Face tokenizer files: `tokenizer.json`
//! (BPE model with byte fallback, added tokens, normalizer), plus
//! `tokenizer_config.json` (BOS/EOS flags, chat template),
//! `chat_template.jinja` and `added_tokens.json` when present.

use rustc_hash::FxHashMap as HashMap;
use std::path::Path;

use serde_json::Value;

use crate::error::{Result, TokenizerError};
use crate::vocab::{parse_byte_piece, TokenKind, Vocab};

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read(path).map_err(|e| TokenizerError::Vocab {
        source_name: path.display().to_string(),
        field: "(file)".into(),
        why: e.to_string(),
    })?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| TokenizerError::Vocab {
            source_name: path.display().to_string(),
            field: "(json)".into(),
            why: e.to_string(),
        })
}

/// A token name in tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Vocab {
    /// Reads the tokenizer files of a Hugging Face folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Vocab> {
        let tj_path = dir.join("tokenizer.json");
        let name = tj_path.display().to_string();
        let bad = |field: &str, why: &str| TokenizerError::Vocab {
            source_name: name.clone(),
            field: field.to_string(),
            why: why.to_string(),
        };
        let tj = read_json(&tj_path)?.ok_or_else(|| bad("(file)", "missing"))?;
        let model = tj.get("model").ok_or_else(|| bad("model", "missing"))?;
        let mtype = model.get("type").and_then(Value::as_str).unwrap_or("");
        let byte_fallback = model.get("byte_fallback").and_then(Value::as_bool).unwrap_or(false);
        if mtype != "BPE" || !byte_fallback {
            return Err(TokenizerError::UnsupportedModel {
                source_name: name.clone(),
                model: format!("{mtype} (byte_fallback {byte_fallback})"),
            });
        }
        let vocab_map = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("model.vocab", "missing or not an object"))?;
        let added: Vec<&Value> = tj
            .get("added_tokens")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let mut size = 0usize;
        for (piece, id) in vocab_map {
            let id = id
                .as_u64()
                .ok_or_else(|| bad("model.vocab", &format!("id of {piece:?} is not an integer")))?;
            size = size.max(id as usize + 1);
        }
        for a in &added {
            if let Some(id) = a.get("id").and_then(Value::as_u64) {
                size = size.max(id as usize + 1);
            }
        }
        // added_tokens.json (older checkpoints): must agree with tokenizer.json
        let at_path = dir.join("added_tokens.json");
        let added_json = read_json(&at_path)?;
        if let Some(map) = added_json.as_ref().and_then(Value::as_object) {
            for id in map.values().filter_map(Value::as_u64) {
                size = size.max(id as usize + 1);
            }
        }
        if size > 1 << 24 {
            return Err(bad("model.vocab", "ids are implausibly large"));
        }
        let mut pieces: Vec<Option<String>> = vec![None; size];
        let mut kinds = vec![TokenKind::Normal; size];
        for (piece, id) in vocab_map {
            let id = id.as_u64().unwrap_or_default() as usize;
            if pieces[id].is_some() {
                return Err(bad("model.vocab", &format!("id {id} is used twice")));
            }
            if parse_byte_piece(piece).is_some() {
                kinds[id] = TokenKind::Byte;
            }
            pieces[id] = Some(piece.clone());
        }
        let mut rstrip = HashMap::default();
        for a in &added {
            let id = a
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("added_tokens", "entry without an id"))? as usize;
            let content = a
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("added_tokens", "entry without content"))?;
            let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
            pieces[id] = Some(content.to_string());
            kinds[id] = if special {
                TokenKind::Control
            } else {
                TokenKind::UserDefined
            };
            let flag = |k: &str| a.get(k).and_then(Value::as_bool).unwrap_or(false);
            rstrip.insert(id as u32, (flag("rstrip"), flag("lstrip")));
        }
        apply_added_tokens_json(&at_path, added_json.as_ref(), &mut pieces, &mut kinds)?;
        if let Some(unk) = token_text(model.get("unk_token")) {
            if let Some(id) = vocab_map.get(&unk).and_then(Value::as_u64) {
                if kinds[id as usize] == TokenKind::Normal {
                    kinds[id as usize] = TokenKind::Unknown;
                }
            }
        }
        let missing = pieces.iter().position(Option::is_none);
        if let Some(id) = missing {
            return Err(bad("model.vocab", &format!("no token has id {id}")));
        }
        let pieces: Vec<String> = pieces.into_iter().map(Option::unwrap_or_default).collect();
        let scores = vec![0.0; size];
        let mut vocab = Vocab::new(&name, pieces, scores, kinds)?;
        for s in &mut vocab.specials {
            if let Some(&(r, l)) = rstrip.get(&s.id) {
                s.rstrip = r;
                s.lstrip = l;
            }
        }

        // merges: ["a b", ...] (older files) or [["a", "b"], ...]
        let mut merges = HashMap::default();
        let list = model
            .get("merges")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("model.merges", "missing"))?;
        for (rank, m) in list.iter().enumerate() {
            let (a, b) = match m {
                Value::String(s) => match s.split_once(' ') {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => return Err(bad("model.merges", &format!("entry {rank} is not \"a b\""))),
                },
                Value::Array(p) if p.len() == 2 => (
                    p[0].as_str().unwrap_or_default().to_string(),
                    p[1].as_str().unwrap_or_default().to_string(),
                ),
                _ => return Err(bad("model.merges", &format!("entry {rank} is malformed"))),
            };
            let id_of = |t: &str| vocab_map.get(t).and_then(Value::as_u64).map(|x| x as u32);
            let (Some(ia), Some(ib), Some(im)) = (id_of(&a), id_of(&b), id_of(&format!("{a}{b}"))) else {
                return Err(bad(
                    "model.merges",
                    &format!("entry {rank} ({a:?} {b:?}) names pieces that are not in the vocabulary"),
                ));
            };
            merges.entry((ia, ib)).or_insert((rank as u32, im));
        }
        vocab.merges = Some(merges);

        // the dummy prefix: a Prepend("▁") normalizer, or a Metaspace pre-tokenizer
        let normalizer = tj.get("normalizer").map(Value::to_string).unwrap_or_default();
        let pre = tj.get("pre_tokenizer").map(Value::to_string).unwrap_or_default();
        vocab.add_space_prefix =
            normalizer.contains("\"Prepend\"") || (pre.contains("\"Metaspace\"") && !pre.contains("\"never\""));

        let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let lookup = |field: &str| -> Option<u32> { token_text(cfg.get(field)).and_then(|t| vocab.id_of(&t)) };
        let (bos, eos, unk) = (lookup("bos_token"), lookup("eos_token"), lookup("unk_token"));
        vocab.bos = bos;
        vocab.eos = eos;
        vocab.unk = unk;
        let post = tj.get("post_processor").map(Value::to_string).unwrap_or_default();
        let bos_in_template = vocab
            .bos
            .map(|b| post.contains(&format!("\"{}\"", vocab.pieces[b as usize])))
            .unwrap_or(false);
        vocab.add_bos = cfg
            .get("add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(bos_in_template);
        vocab.add_eos = cfg.get("add_eos_token").and_then(Value::as_bool).unwrap_or(false);
        vocab.chat_template = match cfg.get("chat_template") {
            Some(Value::String(t)) => Some(t.clone()),
            // a list of named templates: take "default"
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        let jinja = dir.join("chat_template.jinja");
        if vocab.chat_template.is_none() && jinja.is_file() {
            vocab.chat_template = Some(std::fs::read_to_string(&jinja).map_err(|e| TokenizerError::Vocab {
                source_name: jinja.display().to_string(),
                field: "(file)".into(),
                why: e.to_string(),
            })?);
        }
        Ok(vocab)
    }
}

/// Merges `added_tokens.json` (token → id) into the table; an id that names a
/// different token in tokenizer.json is an error.
fn apply_added_tokens_json(
    path: &Path,
    json: Option<&Value>,
    pieces: &mut [Option<String>],
    kinds: &mut [TokenKind],
) -> Result<()> {
    let Some(json) = json else { return Ok(()) };
    let bad = |field: &str, why: String| TokenizerError::Vocab {
        source_name: path.display().to_string(),
        field: field.to_string(),
        why,
    };
    let map = json
        .as_object()
        .ok_or_else(|| bad("(json)", "not an object of token → id".into()))?;
    for (content, id) in map {
        let id = id
            .as_u64()
            .map(|i| i as usize)
            .filter(|&i| i < pieces.len())
            .ok_or_else(|| bad(content, "id is not a non-negative integer".into()))?;
        match &pieces[id] {
            Some(p) if p == content => {}
            Some(p) => return Err(bad(content, format!("id {id} is {p:?} in tokenizer.json"))),
            None => {
                pieces[id] = Some(content.clone());
                kinds[id] = TokenKind::UserDefined;
            }
        }
    }
    Ok(())
}
