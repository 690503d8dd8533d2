//! Products with Q4_0 weights held as panels of 16 rows
//! (`quant::q4_0_panels`, repacked at load time where [`packs_q4_0`] says
//! so): activations quantized to Q8_0 and prepared once per product, then
//! the panels shared out over the pool, each multiplied by every token on
//! AMX (from `AMX_MIN_TOKENS` tokens, where present), the VNNI kernel, or
//! the scalar twin. The three give the same bits (module doc of
//! `q4_0_panels`), so a token's result never depends on its batch.
//!
//! Q4_K, Q5_K and Q6_K weights held as panels (`quant::KPanels`, where
//! [`packs_k_quants`] says so) go the same way with Q8_K activations, read
//! in place.

use crate::matmul::{for_row_ranges, keep_quantized, quantize_rows, SendPtr};
use crate::quant::dot::Activations;
use crate::quant::q4_0_panels::{dot_scalar, packed_bytes, panel_bytes, PanelTokens, ROWS};
use crate::quant::KPanels;

/// Whether Q4_0 matrices should be repacked into panels on this CPU: where
/// the VNNI level runs (its panel kernel is the reason for the layout),
/// unless `PHI3_Q4_0_PANELS=off` keeps the file's layout (for comparisons).
/// Elsewhere the file's layout is kept, which the other levels' kernels read.
pub fn packs_q4_0() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::isa() == crate::simd::Isa::Avx512Vnni && std::env::var("PHI3_Q4_0_PANELS").as_deref() != Ok("off")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether Q4_K, Q5_K and Q6_K matrices should be repacked into panels on this
/// CPU: where the VNNI level runs without AMX (with AMX, prompts run on
/// `simd::amx_k`, which reads the file's layout), unless
/// `PHI3_K_PANELS=off` keeps the file's layout (for comparisons).
pub fn packs_k_quants() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::isa() == crate::simd::Isa::Avx512Vnni
            && !crate::simd::amx()
            && std::env::var("PHI3_K_PANELS").as_deref() != Ok("off")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out = x · Wᵀ` for the `n × k` K-quant matrix `w` held as panels.
pub(crate) fn matmul_k_panels(quant: KPanels, w: &[u8], n: usize, k: usize, x: &[f32], t: usize, out: &mut [f32]) {
    assert!(KPanels::can_pack(n, k), "{n} × {k} K-quant panels");
    assert_eq!(w.len(), quant.packed_bytes(n, k), "panel bytes");
    let panel_len = quant.panel_bytes(k);
    let xq = quantize_rows(Activations::Q8K, x, k, t);
    let xrow = Activations::Q8K.row_bytes(k);
    let out_ptr = SendPtr(out.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    let vnni = crate::simd::isa() == crate::simd::Isa::Avx512Vnni;
    let xq_ref = &xq;
    for_row_ranges(n / KPanels::ROWS, n * k * t, &|panels| {
        for p in panels {
            let panel = &w[p * panel_len..(p + 1) * panel_len];
            let row0 = p * KPanels::ROWS;
            #[cfg(target_arch = "x86_64")]
            if vnni {
                // SAFETY: the VNNI level has AVX-512 F/BW/VNNI and FMA; each
                // task owns its panels' rows of `out` (t · n floats), which
                // outlives the pool run.
                unsafe {
                    crate::simd::vnni_k_panels::panel(quant, panel.as_ptr(), k, xq_ref, t, out_ptr.get(), n, row0)
                };
                continue;
            }
            for r in 0..KPanels::ROWS {
                for m in 0..t {
                    let v = quant.dot_scalar(panel, k, r, &xq_ref[m * xrow..(m + 1) * xrow]);
                    // SAFETY: disjoint panels (rows) per task.
                    unsafe { *out_ptr.get().add(m * n + row0 + r) = v };
                }
            }
        }
    });
    keep_quantized(xq);
}

/// Tokens from which a panel product runs on AMX (where present): below
/// this the VNNI kernel is as fast or faster (`batchbench q4_0-panels`, 2
/// threads: 16 tokens 242-249 vs 204-207 G pair·weights/s, 32 tokens
/// 251-285 vs 198-214, 48 tokens 258 vs 245; 64 tokens 233-269 vs 317).
#[cfg(target_arch = "x86_64")]
const AMX_MIN_TOKENS: usize = 48;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Amx,
    #[cfg(target_arch = "x86_64")]
    Vnni,
    Scalar,
}

fn kernel(t: usize) -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if t >= AMX_MIN_TOKENS && crate::simd::amx() {
            return Kernel::Amx;
        }
        if crate::simd::isa() == crate::simd::Isa::Avx512Vnni {
            return Kernel::Vnni;
        }
    }
    let _ = t;
    Kernel::Scalar
}

/// `out = x · Wᵀ` for the `n × k` Q4_0 matrix `w` held as panels.
pub(crate) fn matmul_panels(w: &[u8], n: usize, k: usize, x: &[f32], t: usize, out: &mut [f32]) {
    assert!(crate::quant::q4_0_panels::can_pack(n, k), "{n} × {k} panels");
    assert_eq!(w.len(), packed_bytes(n, k), "panel bytes");
    let blocks = k / 32;
    let xq = quantize_rows(Activations::Q8_0, x, k, t);
    let mut tokens = TOKENS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    tokens.prepare(&xq, t, blocks);
    let kernel = kernel(t);
    let panel_len = panel_bytes(k);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let tokens_ref = &tokens;
    for_row_ranges(n / ROWS, n * k * t, &|panels| {
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Amx {
            // the token tiles by groups that stay in L2, each group taken
            // by every panel of the task before the next
            let tiles = t.div_ceil(ROWS);
            let groups = tiles.div_ceil(crate::simd::amx_panels::tiles_per_group(blocks));
            let per_group = tiles.div_ceil(groups);
            B_TILES.with(|buf| {
                let buf = &mut buf.borrow_mut();
                for first in (0..tiles).step_by(per_group) {
                    for p in panels.clone() {
                        // SAFETY: AMX was found usable (`simd::amx`) on a CPU
                        // with the VNNI level's AVX-512; each task owns its
                        // panels' rows of `out` (t · n floats), which
                        // outlives the pool run.
                        unsafe {
                            crate::simd::amx_panels::panel(
                                w[p * panel_len..(p + 1) * panel_len].as_ptr(),
                                k,
                                tokens_ref,
                                first..(first + per_group).min(tiles),
                                out_ptr.get(),
                                n,
                                p * ROWS,
                                buf,
                            )
                        }
                    }
                }
            });
            return;
        }
        for p in panels {
            let panel = &w[p * panel_len..(p + 1) * panel_len];
            let row0 = p * ROWS;
            match kernel {
                #[cfg(target_arch = "x86_64")]
                Kernel::Amx => unreachable!("taken above, by groups of tokens"),
                // SAFETY: the VNNI level has AVX-512 F/BW/VNNI and FMA; each
                // task owns its panels' rows of `out`, as above.
                #[cfg(target_arch = "x86_64")]
                Kernel::Vnni => unsafe {
                    crate::simd::vnni_panels::panel(panel.as_ptr(), k, tokens_ref, out_ptr.get(), n, row0)
                },
                Kernel::Scalar => {
                    for r in 0..ROWS {
                        for m in 0..t {
                            let v = dot_scalar(panel, k, r, tokens_ref, m);
                            // SAFETY: disjoint panels (rows) per task.
                            unsafe { *out_ptr.get().add(m * n + row0 + r) = v };
                        }
                    }
                }
            }
        }
    });
    keep_quantized(xq);
    TOKENS.with(|p| *p.borrow_mut() = tokens);
}

thread_local! {
    /// Per-thread buffer for the prepared tokens of a product.
    static TOKENS: std::cell::RefCell<PanelTokens> = std::cell::RefCell::new(PanelTokens::default());
    /// Per-thread B tiles of the panel being multiplied on AMX.
    #[cfg(target_arch = "x86_64")]
    static B_TILES: std::cell::RefCell<crate::aligned::AlignedBytes> =
        std::cell::RefCell::new(crate::aligned::AlignedBytes::default());
}
