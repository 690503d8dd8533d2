//! A model as the user holds it: a GGUF file, or a Hugging Face folder.

use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, FormatError, Result};
use crate::{json, GgufFile, SafetensorsModel};

/// The files of one model, opened and validated but not yet interpreted.
#[derive(Debug)]
pub enum ModelFiles {
    Gguf(GgufFile),
    HuggingFace(HfFolder),
}

/// A Hugging Face checkpoint folder.
#[derive(Debug)]
pub struct HfFolder {
    pub dir: PathBuf,
    /// `config.json`.
    pub config: serde_json::Value,
    /// `generation_config.json`, if present.
    pub generation_config: Option<serde_json::Value>,
    pub weights: SafetensorsModel,
}

impl ModelFiles {
    /// Opens a GGUF file, a Hugging Face folder, or a `.safetensors` file whose
    /// folder holds the `config.json`.
    pub fn open(path: impl AsRef<Path>) -> Result<ModelFiles> {
        let path = path.as_ref();
        if path.is_dir() {
            return HfFolder::open(path).map(ModelFiles::HuggingFace);
        }
        if !path.exists() {
            return Err(FormatError::new(
                path,
                ErrorKind::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or folder",
                )),
            ));
        }
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| FormatError::new(path, e.into()))?;
            let n = f.read(&mut magic).map_err(|e| FormatError::new(path, e.into()))?;
            if n < 4 {
                return Err(FormatError::new(
                    path,
                    ErrorKind::Truncated {
                        what: "magic".into(),
                        offset: 0,
                        needed: 4,
                        len: n as u64,
                    },
                ));
            }
        }
        if &magic == b"GGUF" || path.extension().is_some_and(|e| e == "gguf") {
            return GgufFile::open(path).map(ModelFiles::Gguf);
        }
        if path.extension().is_some_and(|e| e == "safetensors") || path.ends_with(crate::safetensors_dir::INDEX_NAME) {
            let dir = path.parent().unwrap_or(Path::new("."));
            return HfFolder::open(dir).map(ModelFiles::HuggingFace);
        }
        Err(FormatError::new(
            path,
            ErrorKind::NotAModel("expected a GGUF file or a Hugging Face folder".into()),
        ))
    }

    pub fn path(&self) -> &Path {
        match self {
            ModelFiles::Gguf(g) => &g.path,
            ModelFiles::HuggingFace(h) => &h.dir,
        }
    }
}

impl HfFolder {
    pub fn open(dir: &Path) -> Result<HfFolder> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(FormatError::new(
                dir,
                ErrorKind::NotAModel("no config.json in the folder".into()),
            ));
        }
        let config = json::read(&config_path)?;
        let generation_config = json::read_optional(&dir.join("generation_config.json"))?;
        let weights = SafetensorsModel::open_dir(dir)?;
        Ok(HfFolder {
            dir: dir.to_path_buf(),
            config,
            generation_config,
            weights,
        })
    }
}
