//! ggml block-quantized weight formats (GGUF_PHI3.md §7), bit-compatible with
//! llama.cpp's files. One file per type: its block geometry, its scalar
//! dequantization (the reference every faster kernel is tested against) and,
//! for the types with a simple reference quantizer, quantization.

pub mod dot;
mod k_panels;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_0_panels;
pub mod q4_1;
pub mod q4_k;
pub mod q4_k_panels;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q6_k_panels;
pub mod q8_0;
pub mod q8_k;

use half::f16;

pub use k_panels::KPanels;

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

    /// Dequantizes whole blocks: `out.len()` weights from `blocks` (with
    /// AVX-512 for Q4_1, Q5_0 and Q5_1 where present: the same bits as
    /// [`Self::dequantize_scalar`]).
    pub fn dequantize(self, blocks: &[u8], out: &mut [f32]) {
        let (bl, bb) = (self.block_len(), self.block_bytes());
        assert_eq!(out.len() % bl, 0, "whole blocks only");
        assert_eq!(blocks.len(), out.len() / bl * bb, "byte count");
        if crate::simd::dequantize(self, blocks, out) {
            return;
        }
        self.dequantize_scalar(blocks, out)
    }

    /// Dequantizes whole blocks with the scalar reference code.
    pub fn dequantize_scalar(self, blocks: &[u8], out: &mut [f32]) {
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

    /// Quantizes whole blocks: ggml's reference quantizer for the 32-weight
    /// types (bit-identical), a least-squares search for Q4_K, Q5_K and Q6_K
    /// (format-compatible, not bit-identical with llama.cpp's); `None` for
    /// Q2_K and Q3_K.
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
            QuantKind::Q4K => q4_k::quantize,
            QuantKind::Q5K => q5_k::quantize,
            QuantKind::Q6K => q6_k::quantize,
            QuantKind::Q2K | QuantKind::Q3K => return None,
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
        let block = self.block_bytes();
        let finite = |part: &[u8]| {
            part.chunks_exact(block).all(|b| {
                fields
                    .iter()
                    .all(|&f| half_bits_finite(u16::from_le_bytes([b[f], b[f + 1]])))
            })
        };
        // a whole model's weights are read here once when loading: in parts
        // of about 1 MiB over the pool
        let part = (1 << 20) / block * block;
        if blocks.len() <= part {
            return finite(blocks);
        }
        let parts: Vec<&[u8]> = blocks.chunks(part).collect();
        let non_finite = std::sync::atomic::AtomicBool::new(false);
        crate::pool::global().run(parts.len(), &|i| {
            if !non_finite.load(std::sync::atomic::Ordering::Relaxed) && !finite(parts[i]) {
                non_finite.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        !non_finite.into_inner()
    }
}

/// Whether the f16 with these bits is finite (its exponent bits are not
/// all ones, which mark infinities and NaNs).
#[inline]
pub(crate) fn half_bits_finite(bits: u16) -> bool {
    bits & 0x7C00 != 0x7C00
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

/// Fits `x ≈ scale·q − min_off` with q in 0..=nmax for one sub-block, by
/// trying a range of scales around (max−min)/nmax and refitting scale and
/// offset by least squares for each rounding, keeping the best (the approach
/// of ggml's `make_qkx2_quants`, weighted by |x| so large weights count more).
/// Returns (scale ≥ 0, offset ≥ 0) with x ≈ scale·q − offset.
pub(crate) fn fit_scale_min(x: &[f32], nmax: u8) -> (f32, f32) {
    let (mut lo, hi) = (
        x.iter().copied().fold(f32::INFINITY, f32::min),
        x.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    );
    lo = lo.min(0.0);
    if hi <= lo {
        return (0.0, -lo);
    }
    let nm = nmax as f32;
    let weights: Vec<f32> = x.iter().map(|v| v.abs() + 1e-6).collect();
    let err_of = |scale: f32, off: f32| -> f32 {
        if scale <= 0.0 {
            return f32::INFINITY;
        }
        x.iter()
            .zip(&weights)
            .map(|(&v, &w)| {
                let q = ((v + off) / scale).round().clamp(0.0, nm);
                let e = scale * q - off - v;
                w * e * e
            })
            .sum()
    };
    let mut best = ((hi - lo) / nm, -lo);
    let mut best_err = err_of(best.0, best.1);
    for step in -10..=10 {
        let iscale = (nm + 0.1 * step as f32) / (hi - lo);
        // round with this scale, then refit scale and offset by weighted least squares
        let (mut sw, mut swq, mut swq2, mut swx, mut swqx) = (0f32, 0f32, 0f32, 0f32, 0f32);
        for (&v, &w) in x.iter().zip(&weights) {
            let q = (iscale * (v - lo)).round().clamp(0.0, nm);
            sw += w;
            swq += w * q;
            swq2 += w * q * q;
            swx += w * v;
            swqx += w * q * v;
        }
        let det = sw * swq2 - swq * swq;
        if det <= 0.0 {
            continue;
        }
        let scale = (sw * swqx - swq * swx) / det;
        let mut min = (swq2 * swx - swq * swqx) / det;
        if min > 0.0 {
            min = 0.0;
        }
        let e = err_of(scale, -min);
        if e < best_err {
            best_err = e;
            best = (scale, -min);
        }
    }
    best
}

/// Packs eight 6-bit scales and mins into the 12 bytes that
/// [`scale_min_k4`] reads.
pub(crate) fn pack_scale_min_k4(sc: &[u8; 8], m: &[u8; 8], out: &mut [u8]) {
    for j in 0..4 {
        out[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        out[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        out[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
    }
}

/// Quantizes one K-quant superblock's 8 sub-blocks of 32 (Q4_K: nmax 15,
/// Q5_K: 31): returns d, dmin, the 6-bit scales and mins, and the codes.
pub(crate) fn quantize_k_superblock(x: &[f32], nmax: u8) -> (f32, f32, [u8; 8], [u8; 8], [u8; 256]) {
    let mut scales = [0f32; 8];
    let mut offs = [0f32; 8];
    for j in 0..8 {
        let (s, o) = fit_scale_min(&x[32 * j..32 * j + 32], nmax);
        scales[j] = s;
        offs[j] = o;
    }
    let max_scale = scales.iter().copied().fold(0f32, f32::max);
    let max_off = offs.iter().copied().fold(0f32, f32::max);
    // the stored (f16-rounded) super-scales, so codes are fitted to what is read back
    let d = f16::from_f32(max_scale / 63.0).to_f32();
    let dmin = f16::from_f32(max_off / 63.0).to_f32();
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    let mut q = [0u8; 256];
    for j in 0..8 {
        sc[j] = if d > 0.0 {
            (scales[j] / d).round().clamp(0.0, 63.0) as u8
        } else {
            0
        };
        m[j] = if dmin > 0.0 {
            (offs[j] / dmin).round().clamp(0.0, 63.0) as u8
        } else {
            0
        };
        let (s, o) = (d * sc[j] as f32, dmin * m[j] as f32);
        for l in 0..32 {
            q[32 * j + l] = if s > 0.0 {
                ((x[32 * j + l] + o) / s).round().clamp(0.0, nmax as f32) as u8
            } else {
                0
            };
        }
    }
    (d, dmin, sc, m, q)
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

/// A random `n × k` matrix quantized to `kind` (deterministic per `seed`),
/// for the layouts' unit tests.
#[cfg(test)]
pub(crate) fn random_matrix(kind: QuantKind, n: usize, k: usize, seed: u32) -> Vec<u8> {
    let x: Vec<f32> = (0..n * k)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5)
        .collect();
    let mut w = vec![0u8; kind.row_bytes(k) * n];
    kind.quantize(&x, &mut w).expect("quantizes");
    w
}
