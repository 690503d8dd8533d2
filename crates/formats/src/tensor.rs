//! Named tensor views over memory-mapped (or, rarely, owned) bytes.

use std::sync::Arc;

use crate::DType;

/// The bytes a tensor lives in: a memory-mapped file, or an owned buffer for
/// the few cases where a mapping cannot be used directly (a tensor whose data
/// is not aligned for its element type, tensors built in memory).
#[derive(Debug)]
pub enum Storage {
    Mapped(memmap2::Mmap),
    /// Held as `u64` words so that every plain element type is aligned.
    Owned {
        words: Vec<u64>,
        len: usize,
    },
}

impl Storage {
    /// An owned, 8-byte aligned copy of `bytes`.
    pub fn owned(bytes: &[u8]) -> Storage {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        dst[..bytes.len()].copy_from_slice(bytes);
        Storage::Owned {
            words,
            len: bytes.len(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned { words, len } => &bytemuck::cast_slice(words)[..*len],
        }
    }
}

/// One tensor: element type, shape in row-major order (PyTorch order: the
/// last dimension varies fastest, so a weight is `[out, in]`), and its bytes.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    storage: Arc<Storage>,
    offset: usize,
    len: usize,
}

impl Tensor {
    /// A tensor over `storage[offset..offset + len]`. The caller has checked
    /// that the range lies inside the storage and matches shape and dtype.
    pub(crate) fn new(
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        storage: Arc<Storage>,
        offset: usize,
        len: usize,
    ) -> Tensor {
        debug_assert!(offset + len <= storage.bytes().len());
        let mut t = Tensor {
            name,
            dtype,
            shape,
            storage,
            offset,
            len,
        };
        t.ensure_aligned();
        t
    }

    /// A tensor that owns its bytes.
    pub fn from_bytes(name: impl Into<String>, dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Self {
        Tensor::new(
            name.into(),
            dtype,
            shape,
            Arc::new(Storage::owned(bytes)),
            0,
            bytes.len(),
        )
    }

    /// A tensor of f32 values.
    pub fn from_f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_bytes(name, DType::F32, shape, &bytes)
    }

    /// Raw bytes of the tensor, as stored.
    pub fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.offset..self.offset + self.len]
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Drops this tensor's pages of a file mapping from the process's
    /// resident memory (Unix), for a tensor whose bytes were copied into
    /// another layout: the file stays mapped and the bytes readable (a read
    /// faults them back in from the file), but they no longer count twice.
    /// Owned tensors are left alone.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        if let Storage::Mapped(m) = &*self.storage {
            // whole pages inside the tensor, on boundaries that suit any page size up to 64 KiB
            const PAGE: usize = 1 << 16;
            let start = self.offset.next_multiple_of(PAGE);
            let end = (self.offset + self.len) / PAGE * PAGE;
            if end > start {
                // SAFETY: the mapping is read-only and backed by the file, so
                // after MADV_DONTNEED every byte reads back unchanged: no
                // borrow of these bytes can observe a difference. Failure
                // (an unusual page size) only leaves the pages resident.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
    }

    /// Whether the tensor's bytes live in a file mapping (not copied).
    pub fn is_mapped(&self) -> bool {
        matches!(*self.storage, Storage::Mapped(_))
    }

    /// Values converted to f32 (plain float types only; `None` otherwise).
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        let b = self.bytes();
        Some(match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            _ => return None,
        })
    }

    /// Element alignment the kernels need to view the bytes as typed slices.
    fn required_alignment(&self) -> usize {
        match self.dtype {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            _ => 1,
        }
    }

    /// Files written by old tools may place tensor data at offsets that are not
    /// aligned for the element type; such a tensor is copied once into an
    /// aligned buffer (the only case where weights are copied).
    fn ensure_aligned(&mut self) {
        let align = self.required_alignment();
        if (self.bytes().as_ptr() as usize).is_multiple_of(align) {
            return;
        }
        self.storage = Arc::new(Storage::owned(self.bytes()));
        self.offset = 0;
    }
}
