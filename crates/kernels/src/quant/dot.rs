//! Dot products of a quantized weight row with an activation row quantized
//! to Q8_0 blocks (as ggml does on CPUs: integer multiply-adds per block,
//! one float scale per block pair). Each type has a scalar version, which is
//! the reference, and SIMD versions picked at run time (`crate::simd`).

use super::{f16_table, q4_0, q8_0, QuantKind};

/// The f16 scale at the start of a block (table fetched once per row).
#[inline]
fn scale(table: &[f32; 65536], b: &[u8]) -> f32 {
    table[u16::from_le_bytes([b[0], b[1]]) as usize]
}

/// Whether `kind` has an integer dot product against Q8_0 activations.
pub fn has_q8_0_dot(kind: QuantKind) -> bool {
    matches!(kind, QuantKind::Q4_0 | QuantKind::Q8_0)
}

/// Σ w·x over one row: `w` in `kind`'s blocks, `x` in Q8_0 blocks of the
/// same length. Uses the best kernel this CPU has.
pub fn dot_q8_0(kind: QuantKind, w: &[u8], x: &[u8]) -> f32 {
    match kind {
        QuantKind::Q4_0 => crate::simd::dot_q4_0_q8_0(w, x),
        QuantKind::Q8_0 => crate::simd::dot_q8_0_q8_0(w, x),
        _ => panic!("{} has no Q8_0 dot product", kind.name()),
    }
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
