//! AVX-512 VNNI tile kernel for Q8_0 weight rows × Q8_0 activation rows,
//! `vpdpbusd` on 512-bit registers (one instruction per two 32-weight block
//! pairs, where AVX2 needs sign + maddubs + madd per block). Q4_0 weights
//! have their own kernel (`vnni_q4_0`).
//!
//! Activation rows are prepared once per matrix product (`prepare`), two
//! blocks per 192-byte step: their 64 quant bytes, 64 bytes of zero start
//! lanes, and the 16 lanes of block scales; the kernel then only loads them.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so each pair's block sum
//! is formed from unsigned values and a correction, exactly (integers):
//! Σ w·x = Σ (x+128)·w − Σ 128·w; x+128 is prepared once per activation
//! block and −Σ 128·w computed once per weight block.

use std::arch::x86_64::*;

use crate::quant::{f16_table, q8_0};

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn quants(block: *const u8) -> __m256i {
    _mm256_loadu_si256(block.add(2) as *const __m256i)
}

/// Two consecutive 32-byte groups (of blocks `b` and `b + 1`) in one
/// 512-bit register; the second is zero when `two` is false (a row's last,
/// odd block).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn join(first: __m256i, second: __m256i, two: bool) -> __m512i {
    let second = if two { second } else { _mm256_setzero_si256() };
    _mm512_inserti64x4(_mm512_castsi256_si512(first), second, 1)
}

/// Lanes 0-7 `a`, lanes 8-15 `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn halves(a: f32, b: f32) -> __m512 {
    _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1)
}

/// Bytes of one prepared step (two blocks): quants, start lanes, scales.
pub const STEP_BYTES: usize = 192;

/// Prepares a Q8_0 activation row for the tile kernel (see the module doc).
///
/// # Safety
/// The CPU must support AVX2, FMA and AVX-512 F, BW, DQ, VL and VNNI.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn prepare(x: &[u8], out: &mut [u8]) {
    let blocks = x.len() / q8_0::BYTES;
    assert_eq!(out.len(), blocks.div_ceil(2) * STEP_BYTES, "prepared row size");
    let table = f16_table();
    let scale = |p: *const u8| table[u16::from_le_bytes([*p, *p.add(1)]) as usize];
    for (step, o) in out.chunks_exact_mut(STEP_BYTES).enumerate() {
        let b = 2 * step;
        let two = b + 1 < blocks;
        let xb = x.as_ptr().add(b * q8_0::BYTES);
        let second = if two {
            quants(xb.add(q8_0::BYTES))
        } else {
            _mm256_setzero_si256()
        };
        let (d0, d1) = (scale(xb), if two { scale(xb.add(q8_0::BYTES)) } else { 0.0 });
        // x + 128 as unsigned bytes (the weights carry the correction)
        let xv = _mm512_xor_si512(join(quants(xb), second, two), _mm512_set1_epi8(-128));
        let o = o.as_mut_ptr();
        _mm512_storeu_si512(o as *mut __m512i, xv);
        _mm512_storeu_si512(o.add(64) as *mut __m512i, _mm512_setzero_si512());
        _mm512_storeu_ps(o.add(128) as *mut f32, halves(d0, d1));
    }
}

/// R weight rows × C prepared activation rows, written to `out` from row
/// `row0` on. Two blocks per step in 512-bit registers: lanes 0-7 hold
/// block b's partial sums, lanes 8-15 block b+1's.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // indexing const-size arrays keeps the tile in registers
unsafe fn tile<const R: usize, const C: usize>(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16], row0: usize) {
    let wbytes = q8_0::BYTES;
    let blocks = w[0].len() / wbytes;
    let steps = blocks.div_ceil(2);
    for r in 0..R {
        assert_eq!(w[r].len(), blocks * wbytes, "weight blocks");
    }
    for c in 0..C {
        assert_eq!(x[c].len(), steps * STEP_BYTES, "prepared activation steps");
    }
    let table = f16_table();
    let scale = |p: *const u8| table[u16::from_le_bytes([*p, *p.add(1)]) as usize];
    let wp: [*const u8; R] = std::array::from_fn(|r| w[r].as_ptr());
    let xp: [*const u8; C] = std::array::from_fn(|c| x[c].as_ptr());
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let zero = _mm512_setzero_si512();
    for step in 0..steps {
        let b = 2 * step;
        let two = b + 1 < blocks;
        let wb: [*const u8; R] = std::array::from_fn(|r| wp[r].add(b * wbytes));
        // The rows that follow these in memory come next: fetch them now, a
        // tile ahead (rows are short, 1-2 KiB, too short for the hardware
        // prefetcher to ramp up on each). A prefetch never faults.
        for r in 0..R {
            _mm_prefetch::<_MM_HINT_T0>(wb[r].wrapping_add(R * blocks * wbytes) as *const i8);
        }
        let xs: [*const u8; C] = std::array::from_fn(|c| xp[c].add(step * STEP_BYTES));
        let xv: [__m512i; C] = std::array::from_fn(|c| _mm512_loadu_si512(xs[c] as *const __m512i));
        let dx: [__m512; C] = std::array::from_fn(|c| _mm512_loadu_ps(xs[c].add(128) as *const f32));
        for r in 0..R {
            // second block's scale 0 when there is none
            let (d0, d1) = (scale(wb[r]), if two { scale(wb[r].add(wbytes)) } else { 0.0 });
            let dw = halves(d0, d1);
            let second = if two {
                quants(wb[r].add(wbytes))
            } else {
                _mm256_setzero_si256()
            };
            let wv = join(quants(wb[r]), second, two);
            let w_start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, _mm512_set1_epi8(-128), wv));
            for c in 0..C {
                let s = _mm512_dpbusd_epi32(w_start, xv[c], wv);
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx[c]), _mm512_cvtepi32_ps(s), acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[(row0 + r) * 4 + c] = _mm512_reduce_add_ps(acc[r][c]);
        }
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and AVX-512 F, BW, DQ, VL and VNNI.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub unsafe fn dot_tile(w: &[&[u8]], x: &[&[u8]], out: &mut [f32; 16]) {
    tile_shapes!(tile, w, x, out)
}
