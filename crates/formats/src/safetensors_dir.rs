//! Hugging Face safetensors checkpoints: a single `model.safetensors`, or
//! shards listed in `model.safetensors.index.json`. Each shard is mapped once;
//! tensors are views into the mappings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ErrorKind, FormatError, Result};
use crate::tensor::{Storage, Tensor};
use crate::{json, DType};

/// All tensors of a safetensors checkpoint, by name.
#[derive(Debug)]
pub struct SafetensorsModel {
    /// Files the tensors came from.
    pub files: Vec<PathBuf>,
    pub tensors: BTreeMap<String, Tensor>,
}

const SINGLE: &str = "model.safetensors";
const INDEX: &str = INDEX_NAME;
/// File name of the shard index.
pub const INDEX_NAME: &str = "model.safetensors.index.json";

impl SafetensorsModel {
    /// Opens the checkpoint in folder `dir` (sharded or not).
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<SafetensorsModel> {
        let dir = dir.as_ref();
        let index = dir.join(INDEX);
        if index.is_file() {
            return Self::open_index(&index);
        }
        let single = dir.join(SINGLE);
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        Err(FormatError::new(
            dir,
            ErrorKind::NotAModel(format!("neither {SINGLE} nor {INDEX} in the folder")),
        ))
    }

    /// Opens the shards named by an index file's `weight_map`, checking that
    /// every listed tensor is in the shard the index names.
    pub fn open_index(index: &Path) -> Result<SafetensorsModel> {
        let doc = json::read(index)?;
        let map = doc
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| FormatError::new(index, ErrorKind::Json("missing object \"weight_map\"".into())))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<String> = Vec::new();
        for (name, shard) in map {
            let shard = shard.as_str().ok_or_else(|| {
                FormatError::new(index, ErrorKind::Json(format!("weight_map[{name:?}] is not a string")))
            })?;
            if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                return Err(FormatError::new(
                    index,
                    ErrorKind::Json(format!("shard name {shard:?} is not a plain file name")),
                ));
            }
            if !shards.iter().any(|s| s == shard) {
                shards.push(shard.to_string());
            }
        }
        let files: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
        let model = Self::open_files(&files)?;
        for (name, shard) in map {
            let shard = shard.as_str().unwrap_or_default();
            if !model.tensors.contains_key(name) {
                return Err(FormatError::new(
                    dir.join(shard),
                    ErrorKind::MissingInShard {
                        name: name.clone(),
                        shard: shard.to_string(),
                    },
                ));
            }
        }
        Ok(model)
    }

    /// Opens and merges the given safetensors files; a tensor name that
    /// appears in two files is an error.
    pub fn open_files(files: &[PathBuf]) -> Result<SafetensorsModel> {
        let mut tensors = BTreeMap::new();
        for file in files {
            let f = std::fs::File::open(file).map_err(|e| FormatError::new(file, e.into()))?;
            // SAFETY: read-only mapping of a file phi3 does not modify.
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| FormatError::new(file, e.into()))?;
            for t in parse(Arc::new(Storage::Mapped(map))).map_err(|k| FormatError::new(file, k))? {
                let name = t.name.clone();
                if tensors.insert(name.clone(), t).is_some() {
                    return Err(FormatError::new(file, ErrorKind::DuplicateTensor { name }));
                }
            }
        }
        Ok(SafetensorsModel {
            files: files.to_vec(),
            tensors,
        })
    }

    /// Parses one safetensors image held in memory (tests and fuzzing).
    pub fn from_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<SafetensorsModel> {
        let tensors = parse(Arc::new(Storage::owned(bytes)))
            .map_err(|k| FormatError::new(path.as_ref(), k))?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        Ok(SafetensorsModel {
            files: vec![path.as_ref().to_path_buf()],
            tensors,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
}

/// Validates a safetensors image (the `safetensors` crate checks the header,
/// offsets and sizes) and returns views of its tensors.
fn parse(storage: Arc<Storage>) -> Result<Vec<Tensor>, ErrorKind> {
    let bytes = storage.bytes();
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| ErrorKind::Safetensors(e.to_string()))?;
    let base = bytes.as_ptr() as usize;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = DType::from_safetensors(view.dtype()).ok_or_else(|| ErrorKind::UnsupportedDType {
            name: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let data = view.data();
        let offset = data.as_ptr() as usize - base;
        out.push(Tensor::new(
            name,
            dtype,
            view.shape().to_vec(),
            storage.clone(),
            offset,
            data.len(),
        ));
    }
    Ok(out)
}
