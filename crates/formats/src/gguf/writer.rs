//! GGUF writer (version 3). Writes to a temporary file beside the target and
//! renames it into place, so a failed write never leaves a half file behind.

use std::io::{BufWriter, Write};
use std::path::Path;

use super::value::{type_id, Value};
use super::{DEFAULT_ALIGNMENT, MAGIC};
use crate::error::{ErrorKind, FormatError, Result};
use crate::{DType, Tensor};

/// Produces a tensor's bytes when the file is written (one tensor in memory
/// at a time: used to synthesize multi-gigabyte benchmark models).
pub type Generator = Box<dyn Fn() -> Vec<u8> + Send + Sync>;

/// Bytes of one tensor to be written.
enum Data {
    Owned(Vec<u8>),
    View(Tensor),
    Generated(Generator),
}

impl Data {
    fn bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Data::Owned(v) => std::borrow::Cow::Borrowed(v),
            Data::View(t) => std::borrow::Cow::Borrowed(t.bytes()),
            Data::Generated(f) => std::borrow::Cow::Owned(f()),
        }
    }
}

struct Entry {
    name: String,
    dtype: DType,
    /// Row-major shape (written reversed, as ggml's `ne`).
    shape: Vec<usize>,
    data: Data,
}

/// Collects metadata and tensors, then writes a GGUF file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Entry>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a metadata entry.
    pub fn set(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        self.metadata.retain(|(k, _)| *k != key);
        self.metadata.push((key, value));
        self
    }

    /// Adds a tensor from raw bytes in `dtype`'s layout, shape row-major.
    pub fn add_bytes(&mut self, name: impl Into<String>, dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) {
        self.tensors.push(Entry {
            name: name.into(),
            dtype,
            shape,
            data: Data::Owned(bytes),
        });
    }

    /// Adds an existing tensor view under `name` (no copy until written).
    pub fn add_tensor(&mut self, name: impl Into<String>, tensor: &Tensor) {
        self.tensors.push(Entry {
            name: name.into(),
            dtype: tensor.dtype,
            shape: tensor.shape.clone(),
            data: Data::View(tensor.clone()),
        });
    }

    /// Adds a tensor whose bytes `generate` produces at write time.
    pub fn add_generated(&mut self, name: impl Into<String>, dtype: DType, shape: Vec<usize>, generate: Generator) {
        self.tensors.push(Entry {
            name: name.into(),
            dtype,
            shape,
            data: Data::Generated(generate),
        });
    }

    /// Bytes each tensor must have.
    fn expected_len(e: &Entry) -> Option<u64> {
        let numel: usize = e.shape.iter().product();
        e.dtype.bytes_for(numel as u64)
    }

    /// Writes the file at `path` atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| FormatError::new(path, ErrorKind::Io(e));
        for e in &self.tensors {
            if matches!(e.data, Data::Generated(_)) {
                continue;
            }
            let expected = Self::expected_len(e);
            if expected != Some(e.data.bytes().len() as u64) {
                return Err(FormatError::new(
                    path,
                    ErrorKind::BadShape {
                        name: e.name.clone(),
                        shape: e.shape.iter().map(|&d| d as i64).collect(),
                        why: format!(
                            "{} bytes given, {dtype} needs {expected:?}",
                            e.data.bytes().len(),
                            dtype = e.dtype
                        ),
                    },
                ));
            }
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile_in(dir).map_err(io)?;
        {
            let mut w = BufWriter::new(tmp.as_file());
            self.write_to(&mut w).map_err(io)?;
            w.flush().map_err(io)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Serializes the whole file to `w`.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let alignment = self
            .metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT);
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut header, k);
            header.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut header, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for e in &self.tensors {
            put_string(&mut header, &e.name);
            header.extend_from_slice(&(e.shape.len() as u32).to_le_bytes());
            for &d in e.shape.iter().rev() {
                header.extend_from_slice(&(d as u64).to_le_bytes());
            }
            header.extend_from_slice(&e.dtype.ggml_id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            let len = Self::expected_len(e).unwrap_or(0);
            offset = (offset + len).div_ceil(alignment) * alignment;
        }
        let pad = |pos: u64| (pos.div_ceil(alignment) * alignment - pos) as usize;
        let zeros = vec![0u8; alignment as usize];
        w.write_all(&header)?;
        w.write_all(&zeros[..pad(header.len() as u64)])?;
        let mut pos = 0u64;
        for (e, off) in self.tensors.iter().zip(offsets) {
            debug_assert_eq!(pos, off);
            let bytes = e.data.bytes();
            if Some(bytes.len() as u64) != Self::expected_len(e) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "tensor {:?}: generated {} bytes, its type and shape need {:?}",
                        e.name,
                        bytes.len(),
                        Self::expected_len(e)
                    ),
                ));
            }
            w.write_all(&bytes)?;
            pos += bytes.len() as u64;
            let p = pad(pos);
            w.write_all(&zeros[..p])?;
            pos += p as u64;
        }
        Ok(())
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new().prefix(".phi3-partial-").tempfile_in(dir)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_string(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(items) => {
            // An empty array is written with element type u8 (as gguf-py does
            // for lists it cannot type).
            let elem = items.first().map_or(type_id::U8, Value::type_id);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}
