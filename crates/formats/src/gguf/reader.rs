//! GGUF reader: parses and validates the header, then exposes tensors as
//! views into the memory-mapped file (nothing is copied).
//!
//! Every count and size in the header is checked against what the file can
//! hold before anything is allocated, so hostile files give an error, not a
//! huge allocation or a panic.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::value::{type_id, Value};
use super::{DEFAULT_ALIGNMENT, MAGIC};
use crate::error::{ErrorKind, FormatError, Result};
use crate::tensor::{Storage, Tensor};
use crate::DType;

/// Deepest array nesting accepted in metadata (real files use one level).
const MAX_NESTING: usize = 4;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;

/// Where one tensor sits in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// ggml order: `ne[0]` (the row length) first.
    pub ne: Vec<u64>,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Shape in row-major (PyTorch) order: `ne` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An opened GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    storage: Arc<Storage>,
}

impl GgufFile {
    /// Opens and validates a GGUF file, memory-mapping it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let err = |kind| FormatError::new(path, kind);
        let file = std::fs::File::open(path).map_err(|e| err(ErrorKind::Io(e)))?;
        // SAFETY: the mapping is read-only; phi3 never writes model files in
        // place. As with every mmap-based loader, truncating the file while it
        // is mapped is outside what we can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(ErrorKind::Io(e)))?;
        Self::from_storage(path, Arc::new(Storage::Mapped(map)))
    }

    /// Parses a GGUF image held in memory (used by tests and fuzzing).
    pub fn from_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<GgufFile> {
        Self::from_storage(path.as_ref(), Arc::new(Storage::owned(bytes)))
    }

    fn from_storage(path: &Path, storage: Arc<Storage>) -> Result<GgufFile> {
        let header = parse(storage.bytes()).map_err(|k| FormatError::new(path, k))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
            storage,
        })
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// `general.architecture`, if present.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// Looks up a tensor info by name.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A view of a tensor's data.
    pub fn tensor(&self, name: &str) -> Option<Tensor> {
        self.info(name).map(|info| self.view(info))
    }

    /// Views of all tensors, in file order.
    pub fn all_tensors(&self) -> Vec<Tensor> {
        self.tensors.iter().map(|i| self.view(i)).collect()
    }

    fn view(&self, info: &TensorInfo) -> Tensor {
        // Offsets were validated against the file length in `parse`.
        Tensor::new(
            info.name.clone(),
            info.dtype,
            info.shape(),
            self.storage.clone(),
            (self.data_offset + info.offset) as usize,
            info.size as usize,
        )
    }
}

struct Header {
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], ErrorKind> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining {
            return Err(ErrorKind::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ErrorKind> {
        Ok(self.take(N as u64, what)?.try_into().expect("length checked"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ErrorKind> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, ErrorKind> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, ErrorKind> {
        let len = self.u64(what)?;
        let start = self.pos as u64;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| ErrorKind::InvalidUtf8 { offset: start })
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<(), ErrorKind> {
        match count.checked_mul(min_size) {
            Some(total) if total <= self.remaining() => Ok(()),
            _ => Err(ErrorKind::ImplausibleCount {
                what: what.to_string(),
                count,
            }),
        }
    }

    fn value(&mut self, key: &str, ty: u32, depth: usize) -> Result<Value, ErrorKind> {
        let what = || format!("value of {key:?}");
        Ok(match ty {
            type_id::U8 => Value::U8(self.array::<1>(&what())?[0]),
            type_id::I8 => Value::I8(self.array::<1>(&what())?[0] as i8),
            type_id::U16 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            type_id::I16 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            type_id::U32 => Value::U32(self.u32(&what())?),
            type_id::I32 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            type_id::F32 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            type_id::BOOL => {
                let b = self.array::<1>(&what())?[0];
                if b > 1 {
                    return Err(ErrorKind::BadMetadata {
                        key: key.to_string(),
                        why: format!("bool byte is {b}, expected 0 or 1"),
                    });
                }
                Value::Bool(b == 1)
            }
            type_id::STRING => Value::String(self.string(&what())?),
            type_id::U64 => Value::U64(self.u64(&what())?),
            type_id::I64 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            type_id::F64 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            type_id::ARRAY => {
                if depth >= MAX_NESTING {
                    return Err(ErrorKind::NestingTooDeep(MAX_NESTING));
                }
                let elem_ty = self.u32(&what())?;
                let count = self.u64(&what())?;
                self.check_count(count, min_value_size(elem_ty), &format!("array {key:?}"))?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(key, elem_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            other => {
                return Err(ErrorKind::UnknownValueType {
                    key: key.to_string(),
                    type_id: other,
                })
            }
        })
    }
}

/// Smallest encoded size of a value of type `ty` (used to bound counts).
fn min_value_size(ty: u32) -> u64 {
    match ty {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::STRING | type_id::U64 | type_id::I64 | type_id::F64 => 8,
        type_id::ARRAY => 12,
        _ => 1,
    }
}

fn parse(bytes: &[u8]) -> Result<Header, ErrorKind> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.array::<4>("magic")?;
    if magic != MAGIC {
        return Err(ErrorKind::BadMagic { found: magic });
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(ErrorKind::UnsupportedVersion(version));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // key (8+) + type (4) + smallest value (1)
    c.check_count(n_kv, 13, "metadata entry")?;

    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32("metadata value type")?;
        let value = c.value(&key, ty, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(ErrorKind::DuplicateKey { key });
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = v.as_u64().ok_or_else(|| ErrorKind::BadMetadata {
                key: "general.alignment".into(),
                why: "not an unsigned integer".into(),
            })?;
            if a == 0 || !a.is_power_of_two() {
                return Err(ErrorKind::BadAlignment(a));
            }
            a
        }
    };

    // name (8+) + n_dims (4) + type (4) + offset (8)
    c.check_count(n_tensors, 24, "tensor")?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for _ in 0..n_tensors {
        let info = tensor_info(&mut c, alignment)?;
        if !names.insert(info.name.clone()) {
            return Err(ErrorKind::DuplicateTensor { name: info.name });
        }
        tensors.push(info);
    }

    let header_end = c.pos as u64;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    let data_len = file_len.saturating_sub(data_offset);
    if data_offset > file_len && !tensors.is_empty() {
        return Err(ErrorKind::Truncated {
            what: "padding before tensor data".into(),
            offset: header_end,
            needed: data_offset - header_end,
            len: file_len,
        });
    }
    for t in &tensors {
        let end = t.offset.saturating_add(t.size);
        if end > data_len {
            return Err(ErrorKind::DataPastEnd {
                name: t.name.clone(),
                start: t.offset,
                end,
                len: data_len,
            });
        }
    }
    check_overlaps(&tensors)?;

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn tensor_info(c: &mut Cursor, alignment: u64) -> Result<TensorInfo, ErrorKind> {
    let name = c.string("tensor name")?;
    let n_dims = c.u32("tensor dimension count")?;
    if n_dims > MAX_DIMS {
        return Err(ErrorKind::TooManyDims { name, n_dims });
    }
    let mut raw = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        raw.push(i64::from_le_bytes(c.array("tensor dimension")?));
    }
    let type_id = c.u32("tensor type")?;
    let offset = c.u64("tensor offset")?;

    if let Some(&d) = raw.iter().find(|&&d| d < 0) {
        return Err(ErrorKind::BadShape {
            name,
            shape: raw.clone(),
            why: format!("negative dimension {d}"),
        });
    }
    let ne: Vec<u64> = raw.iter().map(|&d| d as u64).collect();
    let numel = ne
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| ErrorKind::ElementCountOverflow {
            name: name.clone(),
            shape: raw.clone(),
        })?;
    let dtype = DType::from_ggml_id(type_id).ok_or_else(|| ErrorKind::UnknownTensorType {
        name: name.clone(),
        type_id,
    })?;
    let row = ne.first().copied().unwrap_or(1);
    if row % dtype.block_len() as u64 != 0 {
        return Err(ErrorKind::BadShape {
            name,
            shape: raw,
            why: format!(
                "row length is not a multiple of the {dtype} block size {}",
                dtype.block_len()
            ),
        });
    }
    let size = dtype.bytes_for(numel).ok_or_else(|| ErrorKind::ElementCountOverflow {
        name: name.clone(),
        shape: raw.clone(),
    })?;
    if offset % alignment != 0 {
        return Err(ErrorKind::MisalignedOffset {
            name,
            offset,
            alignment,
        });
    }
    Ok(TensorInfo {
        name,
        dtype,
        ne,
        offset,
        size,
    })
}

fn check_overlaps(tensors: &[TensorInfo]) -> Result<(), ErrorKind> {
    let mut spans: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    spans.sort_by_key(|t| t.offset);
    for w in spans.windows(2) {
        if w[0].offset + w[0].size > w[1].offset {
            return Err(ErrorKind::OverlappingTensors {
                a: w[0].name.clone(),
                b: w[1].name.clone(),
            });
        }
    }
    Ok(())
}
