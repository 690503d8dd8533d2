//! ggml block-quantized weight formats (GGUF_PHI3.md §7), bit-compatible with
//! llama.cpp's files. One file per type: its block geometry, its scalar
//! dequantization (the reference every faster kernel is tested against) and,
//! for the types with a simple reference quantizer, quantization.

pub mod dot;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_k;

use half::f16;

/// The block-quantized types phi3 computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantKind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl QuantKind {
    pub const ALL: [QuantKind; 10] = [
        QuantKind::Q4_0,
        QuantKind::Q4_1,
        QuantKind::Q5_0,
        QuantKind::Q5_1,
        QuantKind::Q8_0,
        QuantKind::Q2K,
        QuantKind::Q3K,
        QuantKind::Q4K,
        QuantKind::Q5K,
        QuantKind::Q6K,
    ];

    /// Weights per block.
    pub fn block_len(self) -> usize {
        match self {
            QuantKind::Q4_0 | QuantKind::Q4_1 | QuantKind::Q5_0 | QuantKind::Q5_1 | QuantKind::Q8_0 => 32,
            _ => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantKind::Q4_0 => q4_0::BYTES,
            QuantKind::Q4_1 => q4_1::BYTES,
            QuantKind::Q5_0 => q5_0::BYTES,
            QuantKind::Q5_1 => q5_1::BYTES,
            QuantKind::Q8_0 => q8_0::BYTES,
            QuantKind::Q2K => q2_k::BYTES,
            QuantKind::Q3K => q3_k::BYTES,
            QuantKind::Q4K => q4_k::BYTES,
            QuantKind::Q5K => q5_k::BYTES,
            QuantKind::Q6K => q6_k::BYTES,
        }
    }

    /// ggml's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            QuantKind::Q4_0 => "Q4_0",
            QuantKind::Q4_1 => "Q4_1",
            QuantKind::Q5_0 => "Q5_0",
            QuantKind::Q5_1 => "Q5_1",
            QuantKind::Q8_0 => "Q8_0",
            QuantKind::Q2K => "Q2_K",
            QuantKind::Q3K => "Q3_K",
            QuantKind::Q4K => "Q4_K",
            QuantKind::Q5K => "Q5_K",
            QuantKind::Q6K => "Q6_K",
        }
    }

    /// Bytes of a row of `n` weights (`n` a multiple of the block length).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_len() * self.block_bytes()
    }

    /// Dequantizes whole blocks: `out.len()` weights from `blocks`.
    pub fn dequantize(self, blocks: &[u8], out: &mut [f32]) {
        let (bl, bb) = (self.block_len(), self.block_bytes());
        assert_eq!(out.len() % bl, 0, "whole blocks only");
        assert_eq!(blocks.len(), out.len() / bl * bb, "byte count");
        let f: fn(&[u8], &mut [f32]) = match self {
            QuantKind::Q4_0 => q4_0::dequantize,
            QuantKind::Q4_1 => q4_1::dequantize,
            QuantKind::Q5_0 => q5_0::dequantize,
            QuantKind::Q5_1 => q5_1::dequantize,
            QuantKind::Q8_0 => q8_0::dequantize,
            QuantKind::Q2K => q2_k::dequantize,
            QuantKind::Q3K => q3_k::dequantize,
            QuantKind::Q4K => q4_k::dequantize,
            QuantKind::Q5K => q5_k::dequantize,
            QuantKind::Q6K => q6_k::dequantize,
        };
        for (b, o) in blocks.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
            f(b, o);
        }
    }

    /// Quantizes whole blocks with ggml's reference quantizer, for the types
    /// that have a closed-form one; `None` for the K-quants (their search
    /// quantizers come with `phi3 quantize`).
    pub fn quantize(self, x: &[f32], out: &mut [u8]) -> Option<()> {
        let (bl, bb) = (self.block_len(), self.block_bytes());
        assert_eq!(x.len() % bl, 0, "whole blocks only");
        assert_eq!(out.len(), x.len() / bl * bb, "byte count");
        let f: fn(&[f32], &mut [u8]) = match self {
            QuantKind::Q4_0 => q4_0::quantize,
            QuantKind::Q4_1 => q4_1::quantize,
            QuantKind::Q5_0 => q5_0::quantize,
            QuantKind::Q5_1 => q5_1::quantize,
            QuantKind::Q8_0 => q8_0::quantize,
            _ => return None,
        };
        for (xb, o) in x.chunks_exact(bl).zip(out.chunks_exact_mut(bb)) {
            f(xb, o);
        }
        Some(())
    }

    /// Checks that every scale in `blocks` is finite (a NaN or infinite
    /// scale would silently poison every output it touches).
    pub fn scales_finite(self, blocks: &[u8]) -> bool {
        let fields: &[usize] = match self {
            QuantKind::Q4_0 | QuantKind::Q5_0 | QuantKind::Q8_0 => &[0],
            QuantKind::Q4_1 | QuantKind::Q5_1 | QuantKind::Q4K | QuantKind::Q5K => &[0, 2],
            QuantKind::Q2K => &[80, 82],
            QuantKind::Q3K => &[108],
            QuantKind::Q6K => &[208],
        };
        blocks
            .chunks_exact(self.block_bytes())
            .all(|b| fields.iter().all(|&f| half_at(b, f).is_finite()))
    }
}

/// The f16 stored at byte `at` of a block, as f32, through a 64 Ki-entry
/// table (as ggml does): cheaper than the portable conversion, and unlike
/// single-value F16C conversions it creates no false register dependency in
/// the block loops.
#[inline]
pub(crate) fn half_at(block: &[u8], at: usize) -> f32 {
    f16_table()[u16::from_le_bytes([block[at], block[at + 1]]) as usize]
}

/// f16 bits → f32 for all 65536 values.
pub fn f16_table() -> &'static [f32; 65536] {
    static TABLE: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0f32; 65536]);
        for (i, v) in t.iter_mut().enumerate() {
            *v = f16::from_bits(i as u16).to_f32();
        }
        t
    })
}

/// Stores `v` as f16 at byte `at`.
#[inline]
pub(crate) fn put_half(block: &mut [u8], at: usize, v: f32) {
    block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K / Q5_K block
/// (`get_scale_min_k4` in GGUF_PHI3.md §7).
#[inline]
pub(crate) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}
