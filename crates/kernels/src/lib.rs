//! Numeric kernels: slices in, slices out.
//!
//! This first set is plain portable Rust over f32 activations with f32, f16 or
//! bf16 weights, written so the compiler vectorizes the inner loops. The
//! quantized types, the hand-written SIMD paths (each with this scalar code as
//! its twin) and the thread pool come with the kernels issue.

pub mod activation;
pub mod attention;
pub mod dot;
#[cfg(target_arch = "x86_64")]
mod float_matmul;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod simd;

pub use matmul::{matmul, WeightRef};
