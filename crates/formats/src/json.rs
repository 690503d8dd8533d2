//! Reading the JSON side files of Hugging Face checkpoints.

use std::path::Path;

use crate::error::{ErrorKind, FormatError, Result};

/// Reads and parses a JSON file; errors name the file and the position.
pub fn read(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read(path).map_err(|e| FormatError::new(path, e.into()))?;
    serde_json::from_slice(&text).map_err(|e| FormatError::new(path, ErrorKind::Json(e.to_string())))
}

/// Reads a JSON file if it exists.
pub fn read_optional(path: &Path) -> Result<Option<serde_json::Value>> {
    if path.exists() {
        read(path).map(Some)
    } else {
        Ok(None)
    }
}
