//! Run-time selection of SIMD kernels. Every function here has a scalar twin
//! in `quant::dot` and a test tying the two together (`tests/simd_twins.rs`).

use crate::quant::dot::{
    dot_q2_k_q8_k_blockwise_scalar, dot_q3_k_q8_k_blockwise_scalar, dot_q4_0_q8_0_scalar,
    dot_q4_k_q8_k_blockwise_scalar, dot_q5_k_q8_k_blockwise_scalar, dot_q6_k_q8_k_blockwise_scalar,
    dot_q8_0_q8_0_scalar,
};
use crate::quant::QuantKind;

/// Which instruction set the kernels use on this CPU (decided once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2 plus AVX-512 with VNNI and VBMI (Ice Lake, Sapphire Rapids,
    /// Zen 4 and later): tile kernels for every quant type and for float
    /// weights (and AMX for prompts where `amx()` says so).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// aarch64 NEON (every aarch64 CPU has it).
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// NEON with the dot-product instructions (SDOT), ARMv8.2 and later.
    #[cfg(target_arch = "aarch64")]
    NeonDotprod,
    /// SDOT plus the int8 matrix multiply (i8mm: SMMLA), ARMv8.6 and later
    /// (and many ARMv8.2 phone cores): 2 × 2 tiles of the 32-weight types'
    /// products.
    #[cfg(target_arch = "aarch64")]
    NeonI8mm,
}

/// The best instruction set available, or `PHI3_ISA=scalar` (`avx2` on
/// x86-64 to leave out VNNI, `neon` on aarch64 to leave out SDOT, `dotprod`
/// to leave out i8mm) to force a lesser one for comparisons.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let forced = std::env::var("PHI3_ISA").unwrap_or_default();
        if forced == "scalar" {
            return Isa::Scalar;
        }
        best_isa(&forced)
    })
}

#[cfg(target_arch = "aarch64")]
fn best_isa(forced: &str) -> Isa {
    let dotprod = forced != "neon" && std::arch::is_aarch64_feature_detected!("dotprod");
    if dotprod && forced != "dotprod" && std::arch::is_aarch64_feature_detected!("i8mm") {
        Isa::NeonI8mm
    } else if dotprod {
        Isa::NeonDotprod
    } else {
        Isa::Neon
    }
}

#[cfg(target_arch = "x86_64")]
fn best_isa(forced: &str) -> Isa {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return Isa::Scalar;
    }
    let vnni = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vbmi");
    if vnni && forced != "avx2" {
        Isa::Avx512Vnni
    } else {
        Isa::Avx2
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn best_isa(_forced: &str) -> Isa {
    Isa::Scalar
}

pub fn dot_q4_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA were detected at run time.
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { avx2::dot_q4_0_q8_0(w, x) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of aarch64.
        Isa::Neon => unsafe { neon_tiles::dot::<neon_tiles::Q4_0, false>(w, x) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: dotprod was detected at run time.
        Isa::NeonDotprod | Isa::NeonI8mm => unsafe { neon_tiles::dot::<neon_tiles::Q4_0, true>(w, x) },
        Isa::Scalar => dot_q4_0_q8_0_scalar(w, x),
    }
}

pub fn dot_q8_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA were detected at run time.
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { avx2::dot_q8_0_q8_0(w, x) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of aarch64.
        Isa::Neon => unsafe { neon_tiles::dot::<neon_tiles::Q8_0, false>(w, x) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: dotprod was detected at run time.
        Isa::NeonDotprod | Isa::NeonI8mm => unsafe { neon_tiles::dot::<neon_tiles::Q8_0, true>(w, x) },
        Isa::Scalar => dot_q8_0_q8_0_scalar(w, x),
    }
}

/// Q4_K × Q8_K: with AVX2 alone its own kernel (twin
/// `quant::dot::dot_q4_k_q8_k_scalar`); on every other level the blockwise
/// arithmetic of the tile kernels ([`dot_q5_k_q8_k`]).
pub fn dot_q4_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::dot_q4_k_q8_k(w, x) };
    }
    dot_via_tile(QuantKind::Q4K, w, x, dot_q4_k_q8_k_blockwise_scalar)
}

/// Q5_K × Q8_K: the VNNI tile kernel for one pair, the AVX2 or NEON kernel,
/// or the blockwise scalar twin, all the same bits.
pub fn dot_q5_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    dot_via_tile(QuantKind::Q5K, w, x, dot_q5_k_q8_k_blockwise_scalar)
}

/// Q2_K × Q8_K, as [`dot_q5_k_q8_k`].
pub fn dot_q2_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    dot_via_tile(QuantKind::Q2K, w, x, dot_q2_k_q8_k_blockwise_scalar)
}

/// Q3_K × Q8_K, as [`dot_q5_k_q8_k`].
pub fn dot_q3_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    dot_via_tile(QuantKind::Q3K, w, x, dot_q3_k_q8_k_blockwise_scalar)
}

/// One pair of a K-quant `kind` on the tile kernel this level has for it
/// (a 1 × 1 tile: VNNI, AVX2 for Q2_K / Q3_K / Q5_K, NEON), else its
/// blockwise scalar `twin`: the same bits on every level. (Q4_K and Q6_K
/// on AVX2 alone never come here: that level keeps its own kernels, so
/// [`dot_tile`] never falls back to this function for a K-quant.)
fn dot_via_tile(kind: QuantKind, w: &[u8], x: &[u8], twin: impl Fn(&[u8], &[u8]) -> f32) -> f32 {
    if isa() == Isa::Scalar {
        return twin(w, x);
    }
    let mut out = [0f32; 16];
    dot_tile(kind, &[w], &[x], &mut out);
    out[0]
}

/// Q6_K × Q8_K, as [`dot_q4_k_q8_k`] (AVX2 alone: twin `dot_q6_k_q8_k_scalar`).
pub fn dot_q6_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::dot_q6_k_q8_k(w, x) };
    }
    dot_via_tile(QuantKind::Q6K, w, x, dot_q6_k_q8_k_blockwise_scalar)
}

/// Quantizes a row of activations to Q8_0 blocks (`quant::q8_0::quantize`
/// per block, byte for byte).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512Vnni {
        // SAFETY: the VNNI level includes AVX-512 F, BW and DQ (detected at run time).
        return unsafe { act_quant::quantize_q8_0(x, out) };
    }
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(crate::quant::q8_0::BYTES)) {
        crate::quant::q8_0::quantize(xb, b);
    }
}

/// Quantizes 256 activations to a Q8_K block (`quant::q8_k::quantize`,
/// byte for byte).
pub fn quantize_block_q8_k(x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512Vnni {
        // SAFETY: as in `quantize_row_q8_0`.
        return unsafe { act_quant::quantize_q8_k(x, out) };
    }
    crate::quant::q8_k::quantize(x, out)
}

/// Dequantizes whole blocks of `kind` with AVX-512 where this CPU has it and
/// `kind` has such a kernel (Q4_1, Q5_0, Q5_1; the scalar dequantizer's bits);
/// false otherwise.
pub fn dequantize(kind: QuantKind, blocks: &[u8], out: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512Vnni {
        // SAFETY: the VNNI level includes AVX-512F (detected at run time).
        return unsafe { dequant::dequantize(kind, blocks, out) };
    }
    let _ = (kind, blocks, out);
    false
}

/// Whether Q4_1, Q5_0 and Q5_1 products run on integer kernels (AVX-512
/// VNNI tiles, AVX2, NEON); the scalar level dequantizes to the float path.
pub fn nibble_tiles() -> bool {
    isa() != Isa::Scalar
}

/// One pair of Q4_1, Q5_0 or Q5_1 weights × Q8_0 activations on the tile
/// kernels' grouped arithmetic: NEON or AVX2 where present, else the scalar
/// twins; all give the VNNI tiles' bits.
pub fn dot_nibbles(kind: QuantKind, w: &[u8], x: &[u8]) -> f32 {
    #[cfg(target_arch = "aarch64")]
    if isa() != Isa::Scalar {
        use neon_tiles::{dot, Q4_1, Q5_0, Q5_1};
        let sdot = isa() != Isa::Neon;
        // SAFETY: NEON is part of aarch64; SDOT only where detected.
        return unsafe {
            match (kind, sdot) {
                (QuantKind::Q4_1, true) => dot::<Q4_1, true>(w, x),
                (QuantKind::Q4_1, false) => dot::<Q4_1, false>(w, x),
                (QuantKind::Q5_0, true) => dot::<Q5_0, true>(w, x),
                (QuantKind::Q5_0, false) => dot::<Q5_0, false>(w, x),
                (QuantKind::Q5_1, true) => dot::<Q5_1, true>(w, x),
                _ => dot::<Q5_1, false>(w, x),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2_k::dot_nibbles(kind, w, x) };
    }
    match kind {
        QuantKind::Q4_1 => crate::quant::dot::dot_q4_1_q8_0_grouped_scalar(w, x),
        QuantKind::Q5_0 => crate::quant::dot::dot_q5_0_q8_0_grouped_scalar(w, x),
        _ => crate::quant::dot::dot_q5_1_q8_0_grouped_scalar(w, x),
    }
}

/// Whether products with many tokens run on AMX tiles (`simd::amx`,
/// `simd::amx_k`; Sapphire Rapids and later, with the VNNI kernels'
/// arithmetic bit for bit).
/// `PHI3_ISA=vnni` leaves AMX out, as the lesser levels do.
pub fn amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AMX.get_or_init(|| {
            isa() == Isa::Avx512Vnni && std::env::var("PHI3_ISA").as_deref() != Ok("vnni") && amx::available()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the weight kernels fetch the lines ahead into L2 (`prefetcht1`)
/// rather than L1 (`prefetcht0`), decided once per CPU: on AMD (Zen 4
/// here) an L1 prefetch ties up one of the core's few L1 miss buffers for
/// a line only needed a few hundred nanoseconds later, and the two-core
/// Phi-3-mini Q4_0 decode step went 83 → 78 ms for one sequence and
/// 103 → 87 ms for four with L2 prefetches (`batchdecode`, alternating
/// runs); Intel keeps L1, where it was measured best (`vnni_panels`).
/// `PHI3_PREFETCH=l1` or `l2` forces either, for comparisons.
pub fn prefetch_to_l2() -> bool {
    static L2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *L2.get_or_init(|| match std::env::var("PHI3_PREFETCH").as_deref() {
        Ok("l1") => false,
        Ok("l2") => true,
        _ => cpu_is_amd(),
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_is_amd() -> bool {
    let id = std::arch::x86_64::__cpuid(0);
    // "AuthenticAMD" in EBX, EDX, ECX
    [id.ebx, id.edx, id.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163]
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_is_amd() -> bool {
    false
}

/// Fetches the cache line at `p` ahead of its use, into L2 or L1 as
/// [`prefetch_to_l2`] decided (`to_l2`, read once by the caller). A
/// prefetch never faults, whatever the address.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8, to_l2: bool) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
    // SAFETY: prefetches are hints; SSE is part of x86-64.
    unsafe {
        if to_l2 {
            _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
        } else {
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
        }
    }
}

/// Whether prompts over f16 and bf16 weights run on AMX-BF16 tiles
/// (`simd::amx_bf16`: exact bf16 part products, the result held to a bound).
/// Off wherever [`amx`] is (`PHI3_ISA=vnni` included); used from
/// [`AMX_BF16_MIN_TOKENS`] tokens on.
pub fn amx_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AMX_BF16: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AMX_BF16.get_or_init(|| amx() && amx_bf16::available())
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Tokens from which f16 and bf16 products run on AMX-BF16 where present
/// (fewer run on the exact f32 tiles, which read the weights as stored).
pub const AMX_BF16_MIN_TOKENS: usize = 16;

/// Activation rows prepared for [`dot_tile_q8_0`]: each Q8_0 row turned
/// once per matrix product into what the tile kernels of this CPU load
/// (with VNNI: groups of 16 blocks, their halves gathered by quarter, with
/// correction and scale lanes, the same for Q4_0 and Q8_0 weights;
/// otherwise the Q8_0 row itself).
#[derive(Debug, Default, Clone)]
pub struct TileActivations {
    bytes: Vec<u8>,
    row_bytes: usize,
}

impl TileActivations {
    /// Prepares `rows` Q8_0 rows (`xq`, back to back) for Q4_0 or Q8_0
    /// weights, reusing this buffer.
    pub fn prepare(&mut self, xq: &[u8], rows: usize) {
        let q8_row = xq.len().checked_div(rows).unwrap_or(0);
        self.row_bytes = tile_row_bytes(q8_row / crate::quant::q8_0::BYTES);
        self.bytes.resize(rows * self.row_bytes, 0);
        for (x, out) in xq
            .chunks_exact(q8_row.max(1))
            .zip(self.bytes.chunks_exact_mut(self.row_bytes.max(1)))
        {
            #[cfg(target_arch = "x86_64")]
            if isa() == Isa::Avx512Vnni {
                vnni_q4_0::prepare(x, out);
                continue;
            }
            out.copy_from_slice(x);
        }
    }

    /// Prepared row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.row_bytes..(i + 1) * self.row_bytes]
    }
}

/// Bytes of a prepared row of `blocks` Q8_0 blocks on this CPU.
fn tile_row_bytes(blocks: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512Vnni {
        return vnni_q4_0::prepared_bytes(blocks);
    }
    blocks * crate::quant::q8_0::BYTES
}

/// Dot products of up to 4 weight rows with up to 4 prepared activation
/// rows (`out[r * 4 + c] = w_rows[r] · x_rows[c]`) for Q4_0 or Q8_0 weights.
/// Each weight block is unpacked once for all activation rows, each
/// activation block loaded once for all weight rows. Every pair's
/// arithmetic is the same whatever the tile's shape, so a row's result does
/// not depend on how many others share its tile (continuous batching relies
/// on this). Without VNNI: one `dot_quantized` per pair.
pub fn dot_tile_q8_0(q4: bool, w_rows: &[&[u8]], x_rows: &[&[u8]], out: &mut [f32; 16]) {
    assert!(w_rows.len() <= 4 && x_rows.len() <= 4, "tiles are at most 4 × 4");
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512Vnni {
        // SAFETY: AVX-512 F/BW/DQ/VL/VNNI/VBMI and AVX2/FMA were detected at run time.
        unsafe {
            if q4 {
                vnni_q4_0::dot_tile(w_rows, x_rows, out)
            } else {
                vnni_q4_0::dot_tile_q8_0(w_rows, x_rows, out)
            }
        };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if isa() == Isa::NeonI8mm {
        // SAFETY: dotprod and i8mm were detected at run time.
        unsafe {
            if q4 {
                neon_tiles::tile_i8mm::<neon_tiles::Q4_0>(w_rows, x_rows, out)
            } else {
                neon_tiles::tile_i8mm::<neon_tiles::Q8_0>(w_rows, x_rows, out)
            }
        };
        return;
    }
    let dot = if q4 { dot_q4_0_q8_0 } else { dot_q8_0_q8_0 };
    for (r, w) in w_rows.iter().enumerate() {
        for (c, x) in x_rows.iter().enumerate() {
            out[r * 4 + c] = dot(w, x);
        }
    }
}

/// Dot products of up to 4 weight rows of `kind` with up to 4 activation
/// rows (`out[r * 4 + c] = w_rows[r] · x_rows[c]`), the activations as
/// [`crate::quant::dot::activations_for`] gives them: Q4_0 and Q8_0 rows
/// prepared ([`TileActivations`]), Q8_K rows as quantized. As with
/// [`dot_tile_q8_0`], a pair's result does not depend on the tile's shape.
pub fn dot_tile(kind: QuantKind, w_rows: &[&[u8]], x_rows: &[&[u8]], out: &mut [f32; 16]) {
    assert!(w_rows.len() <= 4 && x_rows.len() <= 4, "tiles are at most 4 × 4");
    match kind {
        QuantKind::Q4_0 | QuantKind::Q8_0 => return dot_tile_q8_0(kind == QuantKind::Q4_0, w_rows, x_rows, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 F/BW/DQ/VL/VNNI/VBMI and AVX2/FMA were detected at run time.
        QuantKind::Q4_1 | QuantKind::Q5_0 | QuantKind::Q5_1 if isa() == Isa::Avx512Vnni => {
            return unsafe { vnni_q4_0::dot_tile_nibbles(kind, w_rows, x_rows, out) }
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: dotprod and i8mm were detected at run time.
        QuantKind::Q4_1 if isa() == Isa::NeonI8mm => {
            return unsafe { neon_tiles::tile_i8mm::<neon_tiles::Q4_1>(w_rows, x_rows, out) }
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        QuantKind::Q5_0 if isa() == Isa::NeonI8mm => {
            return unsafe { neon_tiles::tile_i8mm::<neon_tiles::Q5_0>(w_rows, x_rows, out) }
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        QuantKind::Q5_1 if isa() == Isa::NeonI8mm => {
            return unsafe { neon_tiles::tile_i8mm::<neon_tiles::Q5_1>(w_rows, x_rows, out) }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 F/BW/DQ/VL/VNNI and AVX2/FMA were detected at run time.
        QuantKind::Q4K if isa() == Isa::Avx512Vnni => return unsafe { vnni_k::dot_tile_q4_k(w_rows, x_rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        QuantKind::Q2K if isa() == Isa::Avx512Vnni => return unsafe { vnni_k::dot_tile_q2_k(w_rows, x_rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        QuantKind::Q3K if isa() == Isa::Avx512Vnni => return unsafe { vnni_k::dot_tile_q3_k(w_rows, x_rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        QuantKind::Q5K if isa() == Isa::Avx512Vnni => return unsafe { vnni_k::dot_tile_q5_k(w_rows, x_rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        QuantKind::Q6K if isa() == Isa::Avx512Vnni => return unsafe { vnni_k::dot_tile_q6_k(w_rows, x_rows, out) },
        _ => {}
    }
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 && matches!(kind, QuantKind::Q2K | QuantKind::Q3K | QuantKind::Q5K) {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe { avx2_k::tile_k(kind, w_rows, x_rows, out) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if isa() != Isa::Scalar
        && matches!(
            kind,
            QuantKind::Q2K | QuantKind::Q3K | QuantKind::Q4K | QuantKind::Q5K | QuantKind::Q6K
        )
    {
        // SAFETY: NEON is part of aarch64; SDOT only above plain NEON
        // (detected at run time).
        unsafe {
            if isa() == Isa::Neon {
                neon_k::tile_k::<false>(kind, w_rows, x_rows, out)
            } else {
                neon_k::tile_k::<true>(kind, w_rows, x_rows, out)
            }
        };
        return;
    }
    for (r, w) in w_rows.iter().enumerate() {
        for (c, x) in x_rows.iter().enumerate() {
            out[r * 4 + c] = crate::quant::dot::dot_quantized(kind, w, x);
        }
    }
}

/// The mask of the 16-lane step that starts with `left` values still to
/// go: all lanes, or the first `left` of them at a row's end.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn tail_mask16(left: usize) -> std::arch::x86_64::__mmask16 {
    ((1u32 << left.min(16)) - 1) as std::arch::x86_64::__mmask16
}

/// Calls the tile kernel `$tile::<R, C>(w, x, out, row0)` for `x.len()`
/// (1-4) activation rows and a whole tile of 4 weight rows, or single rows
/// one at a time: the per-pair arithmetic is the same in every instance.
#[cfg(target_arch = "x86_64")]
macro_rules! tile_shapes {
    ($tile:ident, $w:expr, $x:expr, $out:expr) => {{
        let (w, x, out): (&[&[u8]], &[&[u8]], &mut [f32; 16]) = ($w, $x, $out);
        let one = |wr: &[&[u8]], row0: usize, out: &mut [f32; 16]| match x.len() {
            1 => $tile::<1, 1>(wr, x, out, row0),
            2 => $tile::<1, 2>(wr, x, out, row0),
            3 => $tile::<1, 3>(wr, x, out, row0),
            4 => $tile::<1, 4>(wr, x, out, row0),
            _ => {}
        };
        match (w.len(), x.len()) {
            (4, 1) => $tile::<4, 1>(w, x, out, 0),
            (4, 2) => $tile::<4, 2>(w, x, out, 0),
            (4, 3) => $tile::<4, 3>(w, x, out, 0),
            (4, 4) => $tile::<4, 4>(w, x, out, 0),
            _ => (0..w.len()).for_each(|r| one(&w[r..r + 1], r, out)),
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod act_quant;
#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
pub mod amx_bf16;
#[cfg(target_arch = "x86_64")]
pub mod amx_k;
#[cfg(target_arch = "x86_64")]
pub mod amx_panels;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod dequant;
#[cfg(target_arch = "x86_64")]
pub mod float_tile;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod k_tile;
#[cfg(target_arch = "aarch64")]
mod neon_k;
#[cfg(target_arch = "aarch64")]
mod neon_tiles;
#[cfg(target_arch = "x86_64")]
mod vnni_k;
#[cfg(target_arch = "x86_64")]
pub mod vnni_k_panels;
#[cfg(target_arch = "x86_64")]
pub mod vnni_panels;
#[cfg(target_arch = "x86_64")]
mod vnni_q4_0;

#[cfg(target_arch = "x86_64")]
pub mod avx2;

#[cfg(target_arch = "aarch64")]
pub mod neon;

#[cfg(test)]
mod tests {
    /// The vendor read from CPUID is the one the kernel reports.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn the_cpu_vendor_is_read_from_cpuid() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
        let vendor = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("vendor_id")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']))
            })
            .expect("a vendor_id line");
        assert_eq!(super::cpu_is_amd(), vendor == "AuthenticAMD", "{vendor}");
    }
}
