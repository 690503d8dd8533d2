//! Dot products of a quantized weight row with an activation row quantized
//! to Q8_0 blocks (as ggml does on CPUs: integer multiply-adds per block,
//! one float scale per block pair). Each type has a scalar version, which is
//! the reference, and SIMD versions picked at run time (`crate::simd`).

use crate::dot::sum_in_halves;

use super::{f16_table, q2_k, q3_k, q4_0, q4_k, q5_k, q6_k, q8_0, q8_k, scale_min_k4, QuantKind};

/// The f16 scale at the start of a block (table fetched once per row).
#[inline]
fn scale(table: &[f32; 65536], b: &[u8]) -> f32 {
    table[u16::from_le_bytes([b[0], b[1]]) as usize]
}

/// The format activations are quantized to for `kind`'s integer dot
/// product, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    /// Blocks of 32 (Q8_0), for the 32-weight block types.
    Q8_0,
    /// Blocks of 256 with per-16 sums (Q8_K), for the K-quants.
    Q8K,
}

impl Activations {
    /// Bytes of a row of `n` activations.
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            Activations::Q8_0 => QuantKind::Q8_0.row_bytes(n),
            Activations::Q8K => n / q8_k::BLOCK * q8_k::BYTES,
        }
    }

    /// Quantizes a row of activations.
    pub fn quantize(self, x: &[f32], out: &mut [u8]) {
        match self {
            Activations::Q8_0 => crate::simd::quantize_row_q8_0(x, out),
            Activations::Q8K => {
                for (xb, ob) in x.chunks_exact(q8_k::BLOCK).zip(out.chunks_exact_mut(q8_k::BYTES)) {
                    crate::simd::quantize_block_q8_k(xb, ob);
                }
            }
        }
    }
}

/// The activation format of `kind`'s integer dot product, if it has one
/// on this CPU (Q4_1, Q5_0 and Q5_1 have one on every level but scalar,
/// where they take the float path).
pub fn activations_for(kind: QuantKind) -> Option<Activations> {
    match kind {
        QuantKind::Q4_0 | QuantKind::Q8_0 => Some(Activations::Q8_0),
        QuantKind::Q4_1 | QuantKind::Q5_0 | QuantKind::Q5_1 => crate::simd::nibble_tiles().then_some(Activations::Q8_0),
        QuantKind::Q2K | QuantKind::Q3K | QuantKind::Q4K | QuantKind::Q5K | QuantKind::Q6K => Some(Activations::Q8K),
    }
}

/// Σ w·x over one row: `w` in `kind`'s blocks, `x` quantized as
/// `activations_for(kind)`. Uses the best kernel this CPU has.
pub fn dot_quantized(kind: QuantKind, w: &[u8], x: &[u8]) -> f32 {
    match kind {
        QuantKind::Q4_0 => crate::simd::dot_q4_0_q8_0(w, x),
        QuantKind::Q8_0 => crate::simd::dot_q8_0_q8_0(w, x),
        QuantKind::Q4K => crate::simd::dot_q4_k_q8_k(w, x),
        QuantKind::Q4_1 | QuantKind::Q5_0 | QuantKind::Q5_1 => crate::simd::dot_nibbles(kind, w, x),
        QuantKind::Q2K => crate::simd::dot_q2_k_q8_k(w, x),
        QuantKind::Q3K => crate::simd::dot_q3_k_q8_k(w, x),
        QuantKind::Q5K => crate::simd::dot_q5_k_q8_k(w, x),
        QuantKind::Q6K => crate::simd::dot_q6_k_q8_k(w, x),
    }
}

/// Scalar twin of the Q4_K × Q8_K dot product. Per sub-block j of 32:
/// Σ w·x = dx·(d·sc_j·Σ q·xq − dmin·m_j·Σ xq), the last sum from bsums.
pub fn dot_q4_k_q8_k_scalar(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let mut sum = 0f32;
    for (wb, xb) in w.chunks_exact(q4_k::BYTES).zip(x.chunks_exact(q8_k::BYTES)) {
        let (d, dmin) = (scale(table, wb), scale(table, &wb[2..]));
        let (s, qs) = (&wb[4..16], &wb[16..144]);
        let (mut dot, mut mins) = (0i32, 0i32);
        for c in 0..4 {
            let (sc0, m0) = scale_min_k4(2 * c, s);
            let (sc1, m1) = scale_min_k4(2 * c + 1, s);
            let (mut a, mut b) = (0i32, 0i32);
            for l in 0..32 {
                a += (qs[32 * c + l] & 0xF) as i32 * q8_k::q(xb, 64 * c + l);
                b += (qs[32 * c + l] >> 4) as i32 * q8_k::q(xb, 64 * c + 32 + l);
            }
            dot += sc0 as i32 * a + sc1 as i32 * b;
            let xs0 = q8_k::bsum(xb, 4 * c) + q8_k::bsum(xb, 4 * c + 1);
            let xs1 = q8_k::bsum(xb, 4 * c + 2) + q8_k::bsum(xb, 4 * c + 3);
            mins += m0 as i32 * xs0 + m1 as i32 * xs1;
        }
        let dx = q8_k::d(xb);
        sum += dx * (d * dot as f32 - dmin * mins as f32);
    }
    sum
}

/// The eight 6-bit scales and eight 6-bit minimums of a Q4_K superblock
/// from its 12 packed bytes (GGUF_PHI3.md, Q4_K).
#[inline]
pub fn q4_k_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (sc[j], m[j]) = scale_min_k4(j, s);
    }
    (sc, m)
}

/// Scalar twin of the Q4_K tile kernels (VNNI and AMX), bit for bit: per
/// superblock the exact integers dot = Σ_j sc_j · Σ q·x and mins = Σ_j m_j ·
/// (bsum_{2j} + bsum_{2j+1}), then `acc = fma(dot, d·dx, acc)` and
/// `acc = fma(mins, (−dmin)·dx, acc)`, superblock after superblock. The
/// float steps depend on nothing but the pair, so a tile kernel of any
/// shape, and the AMX kernel, give the same bits.
#[inline]
pub fn dot_q4_k_q8_k_blockwise_scalar(w: &[u8], x: &[u8]) -> f32 {
    dot_k_blockwise::<false>(w, x)
}

/// Scalar twin of the Q5_K tile kernels: Q4_K's steps with 5-bit codes
/// (the nibble and bit j of `qh` for sub-block j).
#[inline]
pub fn dot_q5_k_q8_k_blockwise_scalar(w: &[u8], x: &[u8]) -> f32 {
    dot_k_blockwise::<true>(w, x)
}

/// Q4_K (`Q5` false) or Q5_K (`Q5` true) weights, as the blockwise twins say.
#[inline(always)]
fn dot_k_blockwise<const Q5: bool>(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let (bytes, qs_at) = if Q5 { (q5_k::BYTES, 48) } else { (q4_k::BYTES, 16) };
    let mut acc = 0f32;
    for (wb, xb) in w.chunks_exact(bytes).zip(x.chunks_exact(q8_k::BYTES)) {
        let (d, dmin) = (scale(table, wb), scale(table, &wb[2..]));
        let (sc, m) = q4_k_scales_mins(&wb[4..16]);
        let qs = &wb[qs_at..qs_at + 128];
        let (mut dot, mut mins) = (0i32, 0i32);
        for j in 0..8 {
            let chunk = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let sub: i32 = (0..32)
                .map(|l| {
                    let mut q = if j % 2 == 0 { chunk[l] & 0xF } else { chunk[l] >> 4 };
                    if Q5 {
                        q |= ((wb[16 + l] >> j) & 1) << 4;
                    }
                    q as i32 * q8_k::q(xb, 32 * j + l)
                })
                .sum();
            dot += sc[j] as i32 * sub;
            mins += m[j] as i32 * (q8_k::bsum(xb, 2 * j) + q8_k::bsum(xb, 2 * j + 1));
        }
        let dx = q8_k::d(xb);
        acc = (dot as f32).mul_add(d * dx, acc);
        acc = (mins as f32).mul_add(-dmin * dx, acc);
    }
    acc
}

/// Scalar twin of the Q6_K tile kernels, bit for bit: per superblock the
/// exact integer Σ_i sc_i · (Σ q·x − 32 · bsum_i) over the sub-blocks of 16
/// (q the unsigned 6-bit codes), then `acc = fma(total, d·dx, acc)`,
/// superblock after superblock.
pub fn dot_q6_k_q8_k_blockwise_scalar(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let mut acc = 0f32;
    for (wb, xb) in w.chunks_exact(q6_k::BYTES).zip(x.chunks_exact(q8_k::BYTES)) {
        let d = scale(table, &wb[208..]);
        let code = |weight: usize| {
            // weight 128n + 32a + l: ql nibble and qh field a (GGUF_PHI3.md, Q6_K)
            let (n, a, l) = (weight / 128, weight % 128 / 32, weight % 32);
            let ql = wb[64 * n + l + 32 * (a % 2)];
            let low = if a < 2 { ql & 0xF } else { ql >> 4 };
            let high = (wb[128 + 32 * n + l] >> (2 * a)) & 3;
            (low | high << 4) as i32
        };
        let mut total = 0i32;
        for i in 0..16 {
            let sub: i32 = (16 * i..16 * i + 16).map(|p| code(p) * q8_k::q(xb, p)).sum();
            total += (wb[192 + i] as i8) as i32 * (sub - 32 * q8_k::bsum(xb, i));
        }
        acc = (total as f32).mul_add(d * q8_k::d(xb), acc);
    }
    acc
}

/// Scalar twin of the Q2_K tile kernels, bit for bit: per superblock the
/// exact integers dot = Σ_i sc_i · Σ q·x and mins = Σ_i m_i · bsum_i over the
/// 16 sub-blocks of 16, then `acc = fma(dot, d·dx, acc)` and
/// `acc = fma(mins, (−dmin)·dx, acc)` (Q4_K's float steps).
#[inline]
pub fn dot_q2_k_q8_k_blockwise_scalar(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let mut acc = 0f32;
    for (wb, xb) in w.chunks_exact(q2_k::BYTES).zip(x.chunks_exact(q8_k::BYTES)) {
        let (d, dmin) = (scale(table, &wb[80..]), scale(table, &wb[82..]));
        let code = |e: usize| {
            // weight 128n + 32j + l: bits 2j of qs[32n + l] (GGUF_PHI3.md, Q2_K)
            let (n, j, l) = (e / 128, e % 128 / 32, e % 32);
            ((wb[16 + 32 * n + l] >> (2 * j)) & 3) as i32
        };
        let (mut dot, mut mins) = (0i32, 0i32);
        for (i, &sm) in wb[..16].iter().enumerate() {
            let sub: i32 = (16 * i..16 * i + 16).map(|e| code(e) * q8_k::q(xb, e)).sum();
            dot += (sm & 0xF) as i32 * sub;
            mins += (sm >> 4) as i32 * q8_k::bsum(xb, i);
        }
        let dx = q8_k::d(xb);
        acc = (dot as f32).mul_add(d * dx, acc);
        acc = (mins as f32).mul_add(-dmin * dx, acc);
    }
    acc
}

/// Scalar twin of the Q3_K tile kernels, bit for bit: Q6_K's steps with
/// the unsigned 3-bit codes u = low2 | hbit << 2 (q = u − 4), offset 4
/// instead of 32, and the 6-bit scales less 32: per superblock the exact
/// integer Σ_i sc_i · (Σ u·x − 4 · bsum_i), then `acc = fma(total, d·dx, acc)`.
#[inline]
pub fn dot_q3_k_q8_k_blockwise_scalar(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let mut acc = 0f32;
    for (wb, xb) in w.chunks_exact(q3_k::BYTES).zip(x.chunks_exact(q8_k::BYTES)) {
        let d = scale(table, &wb[108..]);
        let sc = q3_k::scales(&wb[96..108]);
        let code = |e: usize| {
            // weight 128n + 32j + l: bits 2j of qs[32n + l], bit 4n + j of hmask[l]
            let (n, j, l) = (e / 128, e % 128 / 32, e % 32);
            let low = (wb[32 + 32 * n + l] >> (2 * j)) & 3;
            let high = (wb[l] >> (4 * n + j)) & 1;
            (low | high << 2) as i32
        };
        let mut total = 0i32;
        for (i, &sc) in sc.iter().enumerate() {
            let sub: i32 = (16 * i..16 * i + 16).map(|e| code(e) * q8_k::q(xb, e)).sum();
            total += sc * (sub - 4 * q8_k::bsum(xb, i));
        }
        acc = (total as f32).mul_add(d * q8_k::d(xb), acc);
    }
    acc
}

/// Scalar twin of the Q6_K × Q8_K dot product:
/// Σ w·x = dx·d·Σ_i sc_i·(Σ q·xq − 32·Σ xq) over sub-blocks of 16.
pub fn dot_q6_k_q8_k_scalar(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let mut sum = 0f32;
    for (wb, xb) in w.chunks_exact(q6_k::BYTES).zip(x.chunks_exact(q8_k::BYTES)) {
        let d = scale(table, &wb[208..]);
        let mut total = 0i32;
        for n in 0..2 {
            let ql = &wb[64 * n..64 * n + 64];
            let qh = &wb[128 + 32 * n..128 + 32 * n + 32];
            let sc = &wb[192 + 8 * n..192 + 8 * n + 8];
            let mut sub = [0i32; 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32;
                sub[is] += q1 * q8_k::q(xb, 128 * n + l);
                sub[is + 2] += q2 * q8_k::q(xb, 128 * n + l + 32);
                sub[is + 4] += q3 * q8_k::q(xb, 128 * n + l + 64);
                sub[is + 6] += q4 * q8_k::q(xb, 128 * n + l + 96);
            }
            for (i, &s) in sub.iter().enumerate() {
                let xs = q8_k::bsum(xb, 8 * n + i);
                total += (sc[i] as i8) as i32 * (s - 32 * xs);
            }
        }
        sum += q8_k::d(xb) * d * total as f32;
    }
    sum
}

/// Scalar twin of the Q4_0 × Q8_0 dot product.
pub fn dot_q4_0_q8_0_scalar(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let mut sum = 0f32;
    for (wb, xb) in w.chunks_exact(q4_0::BYTES).zip(x.chunks_exact(q8_0::BYTES)) {
        let mut acc = 0i32;
        for j in 0..16 {
            let lo = (wb[2 + j] & 0xF) as i32 - 8;
            let hi = (wb[2 + j] >> 4) as i32 - 8;
            acc += lo * (xb[2 + j] as i8) as i32 + hi * (xb[18 + j] as i8) as i32;
        }
        sum += scale(table, wb) * scale(table, xb) * acc as f32;
    }
    sum
}

/// Blocks per group in the grouped Q4_0 × Q8_0 dot product.
pub const Q4_0_GROUP: usize = 16;

/// The lane of a group's 16-lane accumulator that block `b` (0..16 within
/// its group) adds into: lane `4j + i` holds block `4i + j`, the order in
/// which the VNNI kernel's reduction leaves the block sums.
pub const fn q4_0_group_lane(b: usize) -> usize {
    4 * (b % 4) + b / 4
}

/// Scalar twin of the VNNI Q4_0 tile kernel, bit for bit: each block's
/// integer sum is exact; block `b` of group `g` adds `sum · (d_w · d_x)`
/// (one fused multiply-add) into lane [`q4_0_group_lane`]`(b)` of a
/// 16-lane accumulator (a row's last group padded with zero blocks); the
/// lanes are then added in halves (8, 4, 2, 1).
pub fn dot_q4_0_q8_0_grouped_scalar(w: &[u8], x: &[u8]) -> f32 {
    grouped_scalar(w, x, q4_0::BYTES, |wb, xb| {
        (0..16)
            .map(|j| {
                let lo = (wb[2 + j] & 0xF) as i32 - 8;
                let hi = (wb[2 + j] >> 4) as i32 - 8;
                lo * (xb[2 + j] as i8) as i32 + hi * (xb[18 + j] as i8) as i32
            })
            .sum()
    })
}

/// Scalar twin of the VNNI (and AMX) Q8_0 tile kernels, bit for bit: the
/// float steps of [`dot_q4_0_q8_0_grouped_scalar`] over Q8_0 blocks.
pub fn dot_q8_0_q8_0_grouped_scalar(w: &[u8], x: &[u8]) -> f32 {
    grouped_scalar(w, x, q8_0::BYTES, |wb, xb| {
        (0..32)
            .map(|j| (wb[2 + j] as i8) as i32 * (xb[2 + j] as i8) as i32)
            .sum()
    })
}

/// Scalar twin of the Q5_0 tile kernels: Q4_0's steps with the 5-bit
/// codes u (nibble, and bit j of `qh` for weight j) and offset 16.
pub fn dot_q5_0_q8_0_grouped_scalar(w: &[u8], x: &[u8]) -> f32 {
    nibbles_grouped_scalar(QuantKind::Q5_0, w, x)
}

/// Scalar twin of the Q4_1 tile kernels: per block the exact Σ u·x (u the
/// nibbles 0..15) and Σ x; `acc = fma(Σ u·x, d·dx, acc)` then
/// `acc = fma(Σ x, m·dx, acc)` into the block's group lane; lanes added in
/// halves.
pub fn dot_q4_1_q8_0_grouped_scalar(w: &[u8], x: &[u8]) -> f32 {
    nibbles_grouped_scalar(QuantKind::Q4_1, w, x)
}

/// Scalar twin of the Q5_1 tile kernels: Q4_1's steps with 5-bit codes.
pub fn dot_q5_1_q8_0_grouped_scalar(w: &[u8], x: &[u8]) -> f32 {
    nibbles_grouped_scalar(QuantKind::Q5_1, w, x)
}

/// The grouped arithmetic of Q4_1, Q5_0 and Q5_1 (`kind`) from each block's
/// exact Σ u·x and Σ x (u the unsigned codes): Q5_0 takes Σ (u − 16)·x,
/// the types with a minimum add Σ x · m·dx as a second fused multiply-add.
fn nibbles_grouped_scalar(kind: QuantKind, w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    grouped_lanes(w, x, kind.block_bytes(), |wb, xb, d, lane| {
        let (qs, qh) = match kind {
            QuantKind::Q4_1 => (&wb[4..20], 0),
            QuantKind::Q5_0 => (&wb[6..22], u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]])),
            _ => (&wb[8..24], u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]])),
        };
        let (dot, x_sum) = (five_bit_sum(qs, qh, xb), activation_sum(xb));
        if kind == QuantKind::Q5_0 {
            return ((dot - 16 * x_sum) as f32).mul_add(d, lane);
        }
        let lane = (dot as f32).mul_add(d, lane);
        (x_sum as f32).mul_add(scale(table, &wb[2..]) * scale(table, xb), lane)
    })
}

/// Σ u·x over a block whose 16 nibble bytes are `qs` (weights 0-15 low,
/// 16-31 high) with fifth bits `qh` (bit j for weight j; 0 for 4 bits).
fn five_bit_sum(qs: &[u8], qh: u32, xb: &[u8]) -> i32 {
    (0..16)
        .map(|j| {
            let lo = (qs[j] & 0xF) as i32 | (((qh >> j) & 1) << 4) as i32;
            let hi = (qs[j] >> 4) as i32 | (((qh >> (j + 16)) & 1) << 4) as i32;
            lo * (xb[2 + j] as i8) as i32 + hi * (xb[18 + j] as i8) as i32
        })
        .sum()
}

/// Σ x over a Q8_0 block's values.
fn activation_sum(xb: &[u8]) -> i32 {
    xb[2..34].iter().map(|&v| v as i8 as i32).sum()
}

/// The grouped arithmetic of the 32-weight block kernels: exact block sums
/// (`block_sum`), one fused multiply-add per block into its group lane,
/// lanes added in halves.
fn grouped_scalar(w: &[u8], x: &[u8], block_bytes: usize, block_sum: impl Fn(&[u8], &[u8]) -> i32) -> f32 {
    grouped_lanes(w, x, block_bytes, |wb, xb, d, lane| {
        (block_sum(wb, xb) as f32).mul_add(d, lane)
    })
}

/// The 16 group lanes over a row: `step(wb, xb, d_w·d_x, lane)` for each
/// block; a row's last group is padded with blocks whose every step
/// multiplies zero by zero.
fn grouped_lanes(w: &[u8], x: &[u8], block_bytes: usize, step: impl Fn(&[u8], &[u8], f32, f32) -> f32) -> f32 {
    let table = f16_table();
    let blocks = w.len() / block_bytes;
    assert_eq!(x.len(), blocks * q8_0::BYTES, "activation blocks");
    // the padding blocks (no block is longer than Q8_0's)
    let zero_w = [0u8; q8_0::BYTES];
    let zero_x = [0u8; q8_0::BYTES];
    let mut acc = [0f32; Q4_0_GROUP];
    for g in 0..blocks.div_ceil(Q4_0_GROUP) {
        for b in 0..Q4_0_GROUP {
            let block = g * Q4_0_GROUP + b;
            let (wb, xb) = if block < blocks {
                (
                    &w[block * block_bytes..(block + 1) * block_bytes],
                    &x[block * q8_0::BYTES..(block + 1) * q8_0::BYTES],
                )
            } else {
                (&zero_w[..block_bytes], &zero_x[..])
            };
            let lane = q4_0_group_lane(b);
            acc[lane] = step(wb, xb, scale(table, wb) * scale(table, xb), acc[lane]);
        }
    }
    sum_in_halves(acc)
}

/// Scalar twin of the Q8_0 × Q8_0 dot product.
pub fn dot_q8_0_q8_0_scalar(w: &[u8], x: &[u8]) -> f32 {
    let table = f16_table();
    let mut sum = 0f32;
    for (wb, xb) in w.chunks_exact(q8_0::BYTES).zip(x.chunks_exact(q8_0::BYTES)) {
        let mut acc = 0i32;
        for j in 0..32 {
            acc += (wb[2 + j] as i8) as i32 * (xb[2 + j] as i8) as i32;
        }
        sum += scale(table, wb) * scale(table, xb) * acc as f32;
    }
    sum
}
