//! Numeric kernels: slices in, slices out.
//!
//! `matmul` is the one entry point for weights of every type (`WeightRef`);
//! `quant` holds the ggml block formats and the scalar twins, `simd` the
//! kernels picked at run time (x86-64 AVX2 / AVX-512 VNNI / AMX, aarch64
//! NEON / SDOT / i8mm), each tested against its twin; `pool` is the one
//! thread pool. See docs/kernels.md.

pub mod activation;
pub mod aligned;
pub mod attention;
pub mod dot;
pub mod exp;
#[cfg(target_arch = "x86_64")]
mod float_matmul;
pub mod matmul;
pub mod norm;
mod panel_matmul;
pub mod pool;
pub mod quant;
pub mod simd;
pub mod softmax_weights;

pub use matmul::{matmul, WeightRef};
pub use panel_matmul::{packs_k_quants, packs_q4_0};
