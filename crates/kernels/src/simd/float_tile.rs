//! AVX-512 tile kernel for float weights (f32, or f16 / bf16 widened as
//! they load) times f32 activations: up to 4 weight rows × 6 activation
//! rows over one block of the inner dimension, 24 accumulators of 16 lanes
//! in registers, one weight load and one activation load per 4 and 6
//! fused multiply-adds.
//!
//! The arithmetic is [`crate::dot::dot_f32`]'s, bit for bit, for every pair
//! whatever the tile's shape: per block of [`crate::dot::BLOCK`] elements,
//! one fused multiply-add per element into lane `e % 16`, the lanes summed
//! in halves (8, 4, 2, 1), the block's tail chained onto that sum, and the
//! block sums added in order. The caller adds the block sums (so that it can
//! keep a block of activations in L1 while many weight rows pass).

use std::arch::x86_64::*;

use half::{bf16, f16};

/// Weights that widen exactly to f32, 16 at a time.
pub trait FloatWeight: Copy {
    /// Whether these are f32 already (the assembly 4 × 6 block takes them).
    const IS_F32: bool = false;
    /// Elements `p[0..16]` as f32.
    ///
    /// # Safety
    /// `p` must be valid for 16 reads; AVX-512F must be present.
    unsafe fn load16(p: *const Self) -> __m512;
    /// One element as f32.
    fn widen(self) -> f32;
}

impl FloatWeight for f32 {
    const IS_F32: bool = true;
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl FloatWeight for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl FloatWeight for bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const bf16) -> __m512 {
        // bf16 is the top half of an f32: widen to 32 bits and shift
        let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// Lane sums (in halves) of 8 vectors: result `i` of `v[i]` lies in lane
/// `4 * (i % 4) + i / 4`.
#[inline(always)]
unsafe fn sum_halves_8(v: &[__m512; 8]) -> __m512 {
    // 16 -> 8: lanes l and l + 8 of a pair, the pair side by side
    let pair =
        |a: __m512, b: __m512| _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b));
    let s = [pair(v[0], v[1]), pair(v[2], v[3]), pair(v[4], v[5]), pair(v[6], v[7])];
    // 8 -> 4: each 128-bit quarter now holds one vector's four sums
    let quad =
        |a: __m512, b: __m512| _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b));
    let (u0, u1) = (quad(s[0], s[1]), quad(s[2], s[3]));
    // 4 -> 2 within quarters: [a0 + a2, a1 + a3, e0 + e2, e1 + e3]
    let w = _mm512_add_ps(_mm512_shuffle_ps::<0x44>(u0, u1), _mm512_shuffle_ps::<0xEE>(u0, u1));
    // 2 -> 1
    _mm512_add_ps(_mm512_shuffle_ps::<0x88>(w, w), _mm512_shuffle_ps::<0xDD>(w, w))
}

/// The lane sums of a 4 × 6 block of f32 weights and activations over
/// `whole` elements (a multiple of 16) into `acc[6 r + c]`: the same fused
/// multiply-adds as [`block`]'s loop, in assembly because the compiler
/// kept only 16 of the 24 accumulators in registers (the rest went through
/// the stack every step, with a rotation of register moves).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn lanes_4x6(w: [*const f32; 4], x: [*const f32; 6], whole: usize, acc: *mut [__m512; 24]) {
    if whole == 0 {
        *acc = [_mm512_setzero_ps(); 24];
        return;
    }
    // pointers at the end, one negative byte offset counting up to zero
    let bytes = whole * 4;
    let end = |p: *const f32| (p as *const u8).add(bytes);
    std::arch::asm!(
        "vpxord zmm8, zmm8, zmm8", "vpxord zmm9, zmm9, zmm9", "vpxord zmm10, zmm10, zmm10",
        "vpxord zmm11, zmm11, zmm11", "vpxord zmm12, zmm12, zmm12", "vpxord zmm13, zmm13, zmm13",
        "vpxord zmm14, zmm14, zmm14", "vpxord zmm15, zmm15, zmm15", "vpxord zmm16, zmm16, zmm16",
        "vpxord zmm17, zmm17, zmm17", "vpxord zmm18, zmm18, zmm18", "vpxord zmm19, zmm19, zmm19",
        "vpxord zmm20, zmm20, zmm20", "vpxord zmm21, zmm21, zmm21", "vpxord zmm22, zmm22, zmm22",
        "vpxord zmm23, zmm23, zmm23", "vpxord zmm24, zmm24, zmm24", "vpxord zmm25, zmm25, zmm25",
        "vpxord zmm26, zmm26, zmm26", "vpxord zmm27, zmm27, zmm27", "vpxord zmm28, zmm28, zmm28",
        "vpxord zmm29, zmm29, zmm29", "vpxord zmm30, zmm30, zmm30", "vpxord zmm31, zmm31, zmm31",
        "2:",
        "vmovups zmm0, [{x0} + {e}]",
        "vmovups zmm1, [{x1} + {e}]",
        "vmovups zmm2, [{x2} + {e}]",
        "vmovups zmm3, [{x3} + {e}]",
        "vmovups zmm4, [{x4} + {e}]",
        "vmovups zmm5, [{x5} + {e}]",
        "vmovups zmm6, [{w0} + {e}]",
        "vfmadd231ps zmm8, zmm6, zmm0", "vfmadd231ps zmm9, zmm6, zmm1", "vfmadd231ps zmm10, zmm6, zmm2",
        "vfmadd231ps zmm11, zmm6, zmm3", "vfmadd231ps zmm12, zmm6, zmm4", "vfmadd231ps zmm13, zmm6, zmm5",
        "vmovups zmm7, [{w1} + {e}]",
        "vfmadd231ps zmm14, zmm7, zmm0", "vfmadd231ps zmm15, zmm7, zmm1", "vfmadd231ps zmm16, zmm7, zmm2",
        "vfmadd231ps zmm17, zmm7, zmm3", "vfmadd231ps zmm18, zmm7, zmm4", "vfmadd231ps zmm19, zmm7, zmm5",
        "vmovups zmm6, [{w2} + {e}]",
        "vfmadd231ps zmm20, zmm6, zmm0", "vfmadd231ps zmm21, zmm6, zmm1", "vfmadd231ps zmm22, zmm6, zmm2",
        "vfmadd231ps zmm23, zmm6, zmm3", "vfmadd231ps zmm24, zmm6, zmm4", "vfmadd231ps zmm25, zmm6, zmm5",
        "vmovups zmm7, [{w3} + {e}]",
        "vfmadd231ps zmm26, zmm7, zmm0", "vfmadd231ps zmm27, zmm7, zmm1", "vfmadd231ps zmm28, zmm7, zmm2",
        "vfmadd231ps zmm29, zmm7, zmm3", "vfmadd231ps zmm30, zmm7, zmm4", "vfmadd231ps zmm31, zmm7, zmm5",
        "add {e}, 64",
        "jnz 2b",
        "vmovups [{acc}], zmm8", "vmovups [{acc} + 64], zmm9", "vmovups [{acc} + 128], zmm10",
        "vmovups [{acc} + 192], zmm11", "vmovups [{acc} + 256], zmm12", "vmovups [{acc} + 320], zmm13",
        "vmovups [{acc} + 384], zmm14", "vmovups [{acc} + 448], zmm15", "vmovups [{acc} + 512], zmm16",
        "vmovups [{acc} + 576], zmm17", "vmovups [{acc} + 640], zmm18", "vmovups [{acc} + 704], zmm19",
        "vmovups [{acc} + 768], zmm20", "vmovups [{acc} + 832], zmm21", "vmovups [{acc} + 896], zmm22",
        "vmovups [{acc} + 960], zmm23", "vmovups [{acc} + 1024], zmm24", "vmovups [{acc} + 1088], zmm25",
        "vmovups [{acc} + 1152], zmm26", "vmovups [{acc} + 1216], zmm27", "vmovups [{acc} + 1280], zmm28",
        "vmovups [{acc} + 1344], zmm29", "vmovups [{acc} + 1408], zmm30", "vmovups [{acc} + 1472], zmm31",
        x0 = in(reg) end(x[0]), x1 = in(reg) end(x[1]), x2 = in(reg) end(x[2]),
        x3 = in(reg) end(x[3]), x4 = in(reg) end(x[4]), x5 = in(reg) end(x[5]),
        w0 = in(reg) end(w[0]), w1 = in(reg) end(w[1]), w2 = in(reg) end(w[2]), w3 = in(reg) end(w[3]),
        e = inout(reg) -(bytes as isize) => _,
        acc = in(reg) acc,
        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _,
        out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
        out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _,
        out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
        out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _, out("zmm28") _, out("zmm29") _,
        out("zmm30") _, out("zmm31") _,
        options(nostack),
    );
}

/// `sums[r][c]` = the block sum of weight row `w[r]` with activation row
/// `x[c]` over `len` elements (each pointer at the block's start; `len` at
/// most [`crate::dot::BLOCK`]).
///
/// # Safety
/// AVX-512F must be present; every pointer valid for `len` reads.
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn block<W: FloatWeight, const R: usize, const C: usize>(
    w: [*const W; R],
    x: [*const f32; C],
    len: usize,
    sums: &mut [[f32; C]; R],
) {
    let whole = len / 16 * 16;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut e = 0;
    if W::IS_F32 && R == 4 && C == 6 {
        lanes_4x6(
            std::array::from_fn(|r| w[r] as *const f32),
            std::array::from_fn(|c| x[c]),
            whole,
            acc.as_mut_ptr() as *mut [__m512; 24],
        );
        e = whole;
    }
    while e < whole {
        let xs: [__m512; C] = std::array::from_fn(|c| _mm512_loadu_ps(x[c].add(e)));
        for r in 0..R {
            let wv = W::load16(w[r].add(e));
            for c in 0..C {
                acc[r][c] = _mm512_fmadd_ps(wv, xs[c], acc[r][c]);
            }
        }
        e += 16;
    }
    // lane sums, eight accumulators at a time
    let mut lanes = [0f32; 16];
    let mut p0 = 0;
    while p0 < R * C {
        let group: [__m512; 8] = std::array::from_fn(|i| {
            let p = p0 + i;
            if p < R * C {
                acc[p / C][p % C]
            } else {
                _mm512_setzero_ps()
            }
        });
        _mm512_storeu_ps(lanes.as_mut_ptr(), sum_halves_8(&group));
        for i in 0..8.min(R * C - p0) {
            let p = p0 + i;
            sums[p / C][p % C] = lanes[4 * (i % 4) + i / 4];
        }
        p0 += 8;
    }
    // the tail (the last block only), chained onto the lane sum
    for r in 0..R {
        for c in 0..C {
            for t in whole..len {
                sums[r][c] = (*x[c].add(t)).mul_add((*w[r].add(t)).widen(), sums[r][c]);
            }
        }
    }
}

/// `dst[i] = src[i]` as f32, 16 at a time (the tiles' widening: the `half`
/// crate's converts 8 per call).
///
/// # Safety
/// AVX-512F must be present.
#[target_feature(enable = "avx512f")]
pub unsafe fn widen<W: FloatWeight>(src: &[W], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let whole = src.len() / 16 * 16;
    for e in (0..whole).step_by(16) {
        _mm512_storeu_ps(dst.as_mut_ptr().add(e), W::load16(src.as_ptr().add(e)));
    }
    for e in whole..src.len() {
        dst[e] = src[e].widen();
    }
}
