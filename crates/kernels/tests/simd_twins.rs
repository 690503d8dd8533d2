//! Tier 1: every SIMD kernel against its scalar twin, and both against f64,
//! on random data, ggml's synthetic pattern and odd block counts.

use phi3_kernels::quant::dot::{
    dot_q4_0_q8_0_grouped_scalar, dot_q4_0_q8_0_scalar, dot_q8_0_q8_0_grouped_scalar, dot_q8_0_q8_0_scalar,
};
use phi3_kernels::quant::{q8_0, QuantKind};
use phi3_kernels::simd;

/// A small deterministic generator (no dependency needed for test data).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn f32(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 - 1.0
    }
}

/// ggml's synthetic test pattern (test-quantize-fns): 0.1 + 2·cos(i + offset).
fn synthetic(n: usize, offset: f32) -> Vec<f32> {
    (0..n).map(|i| 0.1 + 2.0 * (i as f32 + offset).cos()).collect()
}

fn quantize(kind: QuantKind, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; kind.row_bytes(x.len())];
    kind.quantize(x, &mut out).unwrap();
    out
}

fn exact_dot(kind: QuantKind, w: &[u8], x: &[u8], n: usize) -> (f64, f64) {
    let mut wf = vec![0f32; n];
    let mut xf = vec![0f32; n];
    kind.dequantize(w, &mut wf);
    QuantKind::Q8_0.dequantize(x, &mut xf);
    let dot = wf.iter().zip(&xf).map(|(a, b)| *a as f64 * *b as f64).sum();
    let mag = wf.iter().zip(&xf).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
    (dot, mag)
}

#[test]
fn q8_0_dot_products_simd_equal_scalar_and_f64() {
    let mut rng = Lcg(7);
    for kind in [QuantKind::Q4_0, QuantKind::Q8_0] {
        for blocks in [1usize, 2, 3, 7, 96, 257] {
            let n = blocks * 32;
            for pattern in 0..2 {
                let (wv, xv) = if pattern == 0 {
                    (
                        (0..n).map(|_| rng.f32() * 3.0).collect::<Vec<_>>(),
                        (0..n).map(|_| rng.f32()).collect::<Vec<_>>(),
                    )
                } else {
                    (synthetic(n, 0.0), synthetic(n, 1.0))
                };
                let w = quantize(kind, &wv);
                let x = quantize(QuantKind::Q8_0, &xv);
                let scalar = match kind {
                    QuantKind::Q4_0 => dot_q4_0_q8_0_scalar(&w, &x),
                    _ => dot_q8_0_q8_0_scalar(&w, &x),
                };
                let fast = match kind {
                    QuantKind::Q4_0 => simd::dot_q4_0_q8_0(&w, &x),
                    _ => simd::dot_q8_0_q8_0(&w, &x),
                };
                let (exact, mag) = exact_dot(kind, &w, &x, n);
                let tol = 1e-5 * mag.max(1.0);
                assert!(
                    ((scalar as f64) - exact).abs() <= tol,
                    "{kind:?} n={n}: scalar {scalar} vs f64 {exact}"
                );
                assert!(
                    ((fast as f64) - (scalar as f64)).abs() <= tol,
                    "{kind:?} n={n}: simd {fast} vs scalar {scalar}"
                );
            }
        }
    }
}

#[test]
fn extreme_values_do_not_overflow() {
    // all weights at the ends of their range, activations at ±127
    let n = 64;
    let mut w = vec![0u8; QuantKind::Q8_0.row_bytes(n)];
    let mut x = vec![0u8; QuantKind::Q8_0.row_bytes(n)];
    for b in 0..2 {
        w[b * q8_0::BYTES..b * q8_0::BYTES + 2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        x[b * q8_0::BYTES..b * q8_0::BYTES + 2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        for j in 0..32 {
            w[b * q8_0::BYTES + 2 + j] = if j % 2 == 0 { 127 } else { (-127i8) as u8 };
            x[b * q8_0::BYTES + 2 + j] = if j % 2 == 0 { 127 } else { (-127i8) as u8 };
        }
    }
    let want = (64 * 127 * 127) as f32;
    assert_eq!(dot_q8_0_q8_0_scalar(&w, &x), want);
    assert_eq!(simd::dot_q8_0_q8_0(&w, &x), want);
}

#[test]
fn the_selected_instruction_set_is_reported() {
    let isa = simd::isa();
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::env::var("PHI3_ISA").is_err()
    {
        let want = if std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bw")
        {
            simd::Isa::Avx512Vnni
        } else {
            simd::Isa::Avx2
        };
        assert_eq!(isa, want);
    }
    let _ = isa;
}

/// Random K-quant blocks: random codes and scale bytes, finite f16 scales.
fn random_k_blocks(kind: QuantKind, blocks: usize, rng: &mut Lcg) -> Vec<u8> {
    let mut w: Vec<u8> = (0..blocks * kind.block_bytes()).map(|_| rng.next() as u8).collect();
    for b in w.chunks_exact_mut(kind.block_bytes()) {
        let fields: &[usize] = match kind {
            QuantKind::Q6K => &[208],
            QuantKind::Q3K => &[108],
            QuantKind::Q2K => &[80, 82],
            _ => &[0, 2],
        };
        for &f in fields {
            let v = half::f16::from_f32(rng.f32() * 0.05);
            b[f..f + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    w
}

#[test]
fn k_quant_dot_products_simd_equal_scalar_and_f64() {
    use phi3_kernels::quant::dot::{
        activations_for, dot_q2_k_q8_k_blockwise_scalar, dot_q3_k_q8_k_blockwise_scalar,
        dot_q4_k_q8_k_blockwise_scalar, dot_q4_k_q8_k_scalar, dot_q5_k_q8_k_blockwise_scalar,
        dot_q6_k_q8_k_blockwise_scalar, dot_q6_k_q8_k_scalar,
    };
    use phi3_kernels::quant::q8_k;
    let mut rng = Lcg(11);
    let fixture = |kind: QuantKind| {
        std::fs::read(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../testdata/quant/{}.blocks", kind.name())),
        )
        .unwrap()
    };
    for kind in [
        QuantKind::Q2K,
        QuantKind::Q3K,
        QuantKind::Q4K,
        QuantKind::Q5K,
        QuantKind::Q6K,
    ] {
        let act = activations_for(kind).unwrap();
        for (case, w) in [
            fixture(kind),
            random_k_blocks(kind, 1, &mut rng),
            random_k_blocks(kind, 12, &mut rng),
        ]
        .into_iter()
        .enumerate()
        {
            let blocks = w.len() / kind.block_bytes();
            let n = blocks * 256;
            for pattern in 0..2 {
                let xv: Vec<f32> = if pattern == 0 {
                    (0..n).map(|_| rng.f32() * 2.0).collect()
                } else {
                    synthetic(n, 0.5)
                };
                let mut x = vec![0u8; act.row_bytes(n)];
                act.quantize(&xv, &mut x);
                // (the level's own scalar twin, the kernel, the blockwise twin)
                type Dot = fn(&[u8], &[u8]) -> f32;
                let (scalar, fast, lanes): (Dot, Dot, Dot) = match kind {
                    QuantKind::Q2K => (
                        dot_q2_k_q8_k_blockwise_scalar,
                        simd::dot_q2_k_q8_k,
                        dot_q2_k_q8_k_blockwise_scalar,
                    ),
                    QuantKind::Q3K => (
                        dot_q3_k_q8_k_blockwise_scalar,
                        simd::dot_q3_k_q8_k,
                        dot_q3_k_q8_k_blockwise_scalar,
                    ),
                    QuantKind::Q4K => (
                        dot_q4_k_q8_k_scalar,
                        simd::dot_q4_k_q8_k,
                        dot_q4_k_q8_k_blockwise_scalar,
                    ),
                    QuantKind::Q5K => (
                        dot_q5_k_q8_k_blockwise_scalar,
                        simd::dot_q5_k_q8_k,
                        dot_q5_k_q8_k_blockwise_scalar,
                    ),
                    _ => (
                        dot_q6_k_q8_k_scalar,
                        simd::dot_q6_k_q8_k,
                        dot_q6_k_q8_k_blockwise_scalar,
                    ),
                };
                let (scalar, fast, lanes) = (scalar(&w, &x), fast(&w, &x), lanes(&w, &x));
                let mut wf = vec![0f32; n];
                let mut xf = vec![0f32; n];
                kind.dequantize(&w, &mut wf);
                for (xb, o) in x.chunks_exact(q8_k::BYTES).zip(xf.chunks_exact_mut(256)) {
                    q8_k::dequantize(xb, o);
                }
                let exact: f64 = wf.iter().zip(&xf).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = wf.iter().zip(&xf).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                let tol = 1e-5 * mag.max(1e-3);
                assert!(
                    ((scalar as f64) - exact).abs() <= tol,
                    "{kind:?} case {case}: scalar {scalar} vs f64 {exact}"
                );
                assert!(
                    ((fast as f64) - (scalar as f64)).abs() <= tol,
                    "{kind:?} case {case}: simd {fast} vs scalar {scalar}"
                );
                assert!(
                    ((lanes as f64) - exact).abs() <= tol,
                    "{kind:?} case {case}: blockwise twin {lanes} vs f64 {exact}"
                );
            }
        }
    }
}

#[test]
fn q8_k_activations_keep_their_sums() {
    use phi3_kernels::quant::q8_k;
    let x = synthetic(256, 0.0);
    let mut b = vec![0u8; q8_k::BYTES];
    q8_k::quantize(&x, &mut b);
    for k in 0..16 {
        let s: i32 = (0..16).map(|l| q8_k::q(&b, 16 * k + l)).sum();
        assert_eq!(q8_k::bsum(&b, k), s);
    }
    let mut y = vec![0f32; 256];
    q8_k::dequantize(&b, &mut y);
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, c) in x.iter().zip(&y) {
        assert!((a - c).abs() <= amax / 127.0 * 0.51, "{a} vs {c}");
    }
}

#[test]
fn tile_kernels_equal_scalar_whatever_the_tile_shape() {
    let mut rng = Lcg(11);
    for kind in [QuantKind::Q4_0, QuantKind::Q8_0] {
        let scalar = if kind == QuantKind::Q4_0 {
            dot_q4_0_q8_0_scalar
        } else {
            dot_q8_0_q8_0_scalar
        };
        for blocks in [1usize, 3, 17, 40, 96] {
            let n = blocks * 32;
            let ws: Vec<Vec<u8>> = (0..4)
                .map(|_| quantize(kind, &(0..n).map(|_| rng.f32() * 2.0).collect::<Vec<_>>()))
                .collect();
            let xs: Vec<Vec<u8>> = (0..4)
                .map(|_| quantize(QuantKind::Q8_0, &(0..n).map(|_| rng.f32()).collect::<Vec<_>>()))
                .collect();
            let mut full = [0f32; 16];
            let w_all: Vec<&[u8]> = ws.iter().map(|w| w.as_slice()).collect();
            let mut prepared = simd::TileActivations::default();
            prepared.prepare(&xs.concat(), 4);
            let x_all: Vec<&[u8]> = (0..4).map(|c| prepared.row(c)).collect();
            simd::dot_tile_q8_0(kind == QuantKind::Q4_0, &w_all, &x_all, &mut full);
            for r in 0..4 {
                for c in 0..4 {
                    let want = scalar(&ws[r], &xs[c]);
                    let (_, mag) = exact_dot(kind, &ws[r], &xs[c], n);
                    let got = full[r * 4 + c];
                    {
                        // the VNNI kernel's own arithmetic, reproduced by its twin
                        let twin = if kind == QuantKind::Q4_0 {
                            dot_q4_0_q8_0_grouped_scalar(&ws[r], &xs[c])
                        } else {
                            dot_q8_0_q8_0_grouped_scalar(&ws[r], &xs[c])
                        };
                        assert!(
                            ((twin - want) as f64).abs() <= 1e-5 * mag + 1e-6,
                            "grouped twin {twin} vs {want}"
                        );
                        #[cfg(target_arch = "x86_64")]
                        if simd::isa() == simd::Isa::Avx512Vnni {
                            assert_eq!(
                                got.to_bits(),
                                twin.to_bits(),
                                "{blocks} blocks ({r},{c}): {got} vs {twin}"
                            );
                        }
                    }
                    assert!(
                        ((got - want) as f64).abs() <= 1e-5 * mag + 1e-6,
                        "{kind:?} {blocks} blocks ({r},{c}): {got} vs scalar {want}"
                    );
                }
            }
            // every sub-tile gives each pair exactly the same number
            for rows in 1..=4 {
                for cols in 1..=4 {
                    let mut part = [0f32; 16];
                    simd::dot_tile_q8_0(kind == QuantKind::Q4_0, &w_all[4 - rows..], &x_all[..cols], &mut part);
                    for r in 0..rows {
                        for c in 0..cols {
                            assert_eq!(part[r * 4 + c], full[(4 - rows + r) * 4 + c], "{kind:?} {rows}x{cols}");
                        }
                    }
                }
            }
        }
    }
}

/// Whole products through `matmul`: with many tokens Q4_0 and Q8_0 run on
/// AMX tiles where the CPU has them, with few on the VNNI tiles (Q4_1, Q5_0
/// and Q5_1 on the VNNI tiles whatever the batch); either way
/// every element is its pair's grouped twin bit for bit (on CPUs with the
/// VNNI level), so a token's result never depends on how many share its batch.
#[test]
fn block_products_equal_the_grouped_twin_for_every_batch_size() {
    let mut rng = Lcg(23);
    for (kind, n, k) in [
        (QuantKind::Q4_0, 35usize, 96usize),
        (QuantKind::Q4_0, 48, 544),
        (QuantKind::Q4_0, 16, 32),
        (QuantKind::Q8_0, 35, 96),
        (QuantKind::Q8_0, 19, 544),
        (QuantKind::Q8_0, 16, 32),
        (QuantKind::Q4_1, 35, 96),
        (QuantKind::Q4_1, 19, 544),
        (QuantKind::Q5_0, 35, 96),
        (QuantKind::Q5_0, 19, 544),
        (QuantKind::Q5_1, 35, 96),
        (QuantKind::Q5_1, 19, 544),
    ] {
        use phi3_kernels::quant::dot::{
            activations_for, dot_q4_1_q8_0_grouped_scalar, dot_q5_0_q8_0_grouped_scalar, dot_q5_1_q8_0_grouped_scalar,
        };
        if activations_for(kind).is_none() {
            continue; // Q4_1, Q5_0 and Q5_1 without VNNI: the float path (tested below)
        }
        let grouped_twin = match kind {
            QuantKind::Q4_0 => dot_q4_0_q8_0_grouped_scalar,
            QuantKind::Q8_0 => dot_q8_0_q8_0_grouped_scalar,
            QuantKind::Q4_1 => dot_q4_1_q8_0_grouped_scalar,
            QuantKind::Q5_0 => dot_q5_0_q8_0_grouped_scalar,
            _ => dot_q5_1_q8_0_grouped_scalar,
        };
        let w32: Vec<f32> = (0..n * k).map(|_| rng.f32() * 2.0).collect();
        let w = quantize(kind, &w32);
        for t in [1usize, 5, 16, 17, 40] {
            let x: Vec<f32> = (0..t * k).map(|_| rng.f32()).collect();
            product_equals_twin(kind, &w, n, k, &x, t, grouped_twin, |got, twin, wr, xq| {
                let (_, mag) = exact_dot(kind, wr, xq, k);
                ((got - twin) as f64).abs() <= 1e-5 * mag + 1e-6
            });
        }
    }
}

/// The K-quant tile kernels through whole products (`matmul`), for many
/// batch sizes and partial tiles (and panels, on AMX): with the VNNI level every element is its
/// pair's blockwise twin bit for bit (so batching never changes a token's
/// result); otherwise within rounding of it.
#[test]
fn k_quant_products_equal_the_blockwise_twin_for_every_batch_size() {
    use phi3_kernels::quant::dot::{
        dot_q2_k_q8_k_blockwise_scalar, dot_q3_k_q8_k_blockwise_scalar, dot_q4_k_q8_k_blockwise_scalar,
        dot_q5_k_q8_k_blockwise_scalar, dot_q6_k_q8_k_blockwise_scalar,
    };
    let mut rng = Lcg(29);
    for kind in [
        QuantKind::Q2K,
        QuantKind::Q3K,
        QuantKind::Q4K,
        QuantKind::Q5K,
        QuantKind::Q6K,
    ] {
        let twin = match kind {
            QuantKind::Q2K => dot_q2_k_q8_k_blockwise_scalar,
            QuantKind::Q3K => dot_q3_k_q8_k_blockwise_scalar,
            QuantKind::Q4K => dot_q4_k_q8_k_blockwise_scalar,
            QuantKind::Q5K => dot_q5_k_q8_k_blockwise_scalar,
            _ => dot_q6_k_q8_k_blockwise_scalar,
        };
        for (n, k) in [(7usize, 256usize), (18, 768)] {
            let w = random_k_blocks(kind, n * k / 256, &mut rng);
            // from 16 tokens Q4_K and Q6_K run on AMX tiles where the CPU has them
            for t in [1usize, 3, 4, 6, 9, 16, 17, 40] {
                let x: Vec<f32> = (0..t * k).map(|_| rng.f32() * 3.0).collect();
                product_equals_twin(kind, &w, n, k, &x, t, twin, |got, want, _, _| {
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0)
                });
            }
        }
    }
}

/// The activation quantizers the products use (SIMD where the CPU has it)
/// give the scalar quantizers' bytes exactly: random rows, halves that
/// round away from zero (a block whose largest magnitude is 127 has scale
/// 1, so x·(1/d) = x), zero blocks, and a Q8_K block whose largest
/// magnitude comes with both signs (the first one sets the sign of the scale).
#[test]
fn activation_quantizers_equal_the_scalar_ones_byte_for_byte() {
    use phi3_kernels::quant::q8_k;
    let mut rng = Lcg(41);
    let mut rows: Vec<Vec<f32>> = (0..6).map(|_| (0..512).map(|_| rng.f32() * 4.0).collect()).collect();
    let halves: Vec<f32> = (0..512)
        .map(|i| {
            if i % 32 == 0 {
                127.0
            } else {
                (i % 254) as f32 / 2.0 - 63.5
            }
        })
        .collect();
    rows.push(halves.iter().map(|v| -v).collect());
    rows.push(halves);
    let mut ties = vec![0f32; 512];
    ties[3] = -2.5;
    ties[9] = 2.5;
    ties[300] = 1.25;
    rows.push(ties);
    rows.push(vec![0.0; 512]);
    let act = [
        phi3_kernels::quant::dot::Activations::Q8_0,
        phi3_kernels::quant::dot::Activations::Q8K,
    ];
    for x in &rows {
        for a in act {
            let mut fast = vec![0u8; a.row_bytes(512)];
            a.quantize(x, &mut fast);
            let mut scalar = vec![0u8; a.row_bytes(512)];
            match a {
                phi3_kernels::quant::dot::Activations::Q8_0 => {
                    for (xb, b) in x.chunks_exact(32).zip(scalar.chunks_exact_mut(q8_0::BYTES)) {
                        q8_0::quantize(xb, b);
                    }
                }
                phi3_kernels::quant::dot::Activations::Q8K => {
                    for (xb, b) in x.chunks_exact(256).zip(scalar.chunks_exact_mut(q8_k::BYTES)) {
                        q8_k::quantize(xb, b);
                    }
                }
            }
            assert_eq!(fast, scalar, "{a:?}");
        }
    }
}

/// Runs `matmul` of `t` rows of `x` against `n` rows of `w` (inner size `k`)
/// and holds every element to `twin` of its (weight row, quantized
/// activation row): bit for bit on CPUs with the VNNI level, else within
/// `close(got, twin, weight row, activation row)`.
#[allow(clippy::too_many_arguments)]
fn product_equals_twin(
    kind: QuantKind,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    t: usize,
    twin: fn(&[u8], &[u8]) -> f32,
    close: impl Fn(f32, f32, &[u8], &[u8]) -> bool,
) {
    let act = phi3_kernels::quant::dot::activations_for(kind).unwrap();
    let rb = kind.row_bytes(k);
    let mut out = vec![0f32; t * n];
    phi3_kernels::matmul(phi3_kernels::WeightRef::Quant(kind, w), n, k, x, t, &mut out);
    for i in 0..t {
        let mut xq = vec![0u8; act.row_bytes(k)];
        act.quantize(&x[i * k..(i + 1) * k], &mut xq);
        for j in 0..n {
            let wr = &w[j * rb..(j + 1) * rb];
            let (got, want) = (out[i * n + j], twin(wr, &xq));
            #[cfg(target_arch = "x86_64")]
            if simd::isa() == simd::Isa::Avx512Vnni {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{kind:?} n {n} k {k} t {t} ({i},{j}): {got} vs {want}"
                );
                continue;
            }
            assert!(
                close(got, want, wr, &xq),
                "{kind:?} n {n} k {k} t {t} ({i},{j}): {got} vs {want}"
            );
        }
    }
}

/// The float path (f32, f16 and bf16 weights, and, on CPUs where it has no
/// integer kernel, Q4_1 dequantized) against `dot_f32_scalar` of the widened
/// rows, bit for bit, for 1 to 14 tokens and 20 (partial 6-token groups),
/// partial 4-row groups, and inner sizes with a tail, one block, a partial
/// second block and several blocks. (f16 and bf16 products of 16 tokens or
/// more on AMX-BF16 are held to a bound instead: the next test.)
#[test]
fn float_products_equal_the_scalar_twin_for_every_batch_size() {
    use half::{bf16, f16};
    use phi3_kernels::dot::{dot_f32, dot_f32_scalar};
    use phi3_kernels::matmul::{matmul, WeightRef};
    let mut rng = Lcg(41);
    for k in [37usize, 512, 544, 1600] {
        let n = 11;
        let w32: Vec<f32> = (0..n * k).map(|_| rng.f32()).collect();
        let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
        // Q4_1 takes the float path where it has no integer kernel (no VNNI)
        let float_q4_1 = phi3_kernels::quant::dot::activations_for(QuantKind::Q4_1).is_none();
        let q4_1 = (k % 32 == 0 && float_q4_1).then(|| quantize(QuantKind::Q4_1, &w32));
        let mut weights = vec![
            ("f32", WeightRef::F32(&w32)),
            ("f16", WeightRef::F16(&w16)),
            ("bf16", WeightRef::BF16(&wb16)),
        ];
        if let Some(q) = &q4_1 {
            weights.push(("q4_1", WeightRef::Quant(QuantKind::Q4_1, q)));
        }
        for t in (1..=14).chain([20]) {
            let x: Vec<f32> = (0..t * k).map(|_| rng.f32()).collect();
            for (name, w) in &weights {
                let on_amx_bf16 = matches!(w, WeightRef::F16(_) | WeightRef::BF16(_))
                    && t >= phi3_kernels::simd::AMX_BF16_MIN_TOKENS
                    && phi3_kernels::simd::amx_bf16();
                if on_amx_bf16 {
                    continue;
                }
                let mut out = vec![0f32; t * n];
                matmul(*w, n, k, &x, t, &mut out);
                let mut row = vec![0f32; k];
                for j in 0..n {
                    let row = w.row(j, k, &mut row);
                    for i in 0..t {
                        let xi = &x[i * k..(i + 1) * k];
                        let want = dot_f32_scalar(xi, row);
                        assert_eq!(
                            out[i * n + j].to_bits(),
                            want.to_bits(),
                            "{name} k={k} t={t} ({i}, {j})"
                        );
                        assert_eq!(dot_f32(xi, row).to_bits(), want.to_bits(), "dot_f32 k={k}");
                    }
                }
            }
        }
    }
}

/// f16 and bf16 products on AMX-BF16 (prompts of 16 tokens or more, where
/// the CPU has it): every part product is exact (but the one below 2⁻²¹
/// of its product, left out), so each result must lie
/// within `(k/32 + 4) · 2⁻²⁴ · Σ|w·x|` of the exact sum (f64). Dropping any
/// part of a weight or an activation (errors of 2⁻⁸ to 2⁻¹⁵ of Σ|w·x|) is
/// far outside that. Shapes: partial panels and token tiles, odd pairs of
/// each, an inner size with a partial step, and one over a chunk of 1024.
#[test]
fn amx_bf16_products_lie_within_their_bound_of_the_exact_sum() {
    use half::{bf16, f16};
    use phi3_kernels::matmul::{matmul, WeightRef};
    if !phi3_kernels::simd::amx_bf16() {
        eprintln!("no AMX-BF16 here: f16/bf16 prompts take the exact f32 tiles (tested above)");
        return;
    }
    let mut rng = Lcg(43);
    for (n, k, t) in [
        (16usize, 64usize, 16usize),
        (33, 100, 17),
        (40, 20, 40),
        (5, 1100, 33),
        (70, 300, 64),
    ] {
        let w32: Vec<f32> = (0..n * k).map(|_| rng.f32() * 0.3).collect();
        // activations of mixed magnitude, so their low parts matter
        let x: Vec<f32> = (0..t * k)
            .map(|i| rng.f32() * if i % 3 == 0 { 3.0 } else { 0.01 })
            .collect();
        let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
        for (name, w) in [("f16", WeightRef::F16(&w16)), ("bf16", WeightRef::BF16(&wb16))] {
            let mut out = vec![0f32; t * n];
            matmul(w, n, k, &x, t, &mut out);
            let mut row = vec![0f32; k];
            for j in 0..n {
                let row = w.row(j, k, &mut row);
                for i in 0..t {
                    let (mut exact, mut magnitude) = (0f64, 0f64);
                    for (&a, &b) in x[i * k..(i + 1) * k].iter().zip(row) {
                        exact += a as f64 * b as f64;
                        magnitude += (a as f64 * b as f64).abs();
                    }
                    let bound = (k.div_ceil(32) + 4) as f64 * 2f64.powi(-24) * magnitude;
                    let got = out[i * n + j] as f64;
                    assert!(
                        (got - exact).abs() <= bound,
                        "{name} n={n} k={k} t={t} ({i}, {j}): {got} vs exact {exact} (bound {bound:e})"
                    );
                }
            }
        }
    }
}

/// The dequantizers the float path widens with (AVX-512 for Q4_1, Q5_0 and
/// Q5_1 where present) give the scalar reference's bits: random codes and
/// fifth bits, random finite scales and minimums, every type.
#[test]
fn dequantizers_equal_the_scalar_ones_bit_for_bit() {
    let mut rng = Lcg(53);
    for kind in QuantKind::ALL {
        let blocks = 9;
        let mut w: Vec<u8> = (0..blocks * kind.block_bytes()).map(|_| rng.next() as u8).collect();
        let scales: &[usize] = match kind {
            QuantKind::Q6K => &[208],
            QuantKind::Q3K => &[108],
            QuantKind::Q2K => &[80, 82],
            QuantKind::Q4_0 | QuantKind::Q5_0 | QuantKind::Q8_0 => &[0],
            _ => &[0, 2],
        };
        for b in w.chunks_exact_mut(kind.block_bytes()) {
            for &at in scales {
                b[at..at + 2].copy_from_slice(&half::f16::from_f32(rng.f32() * 3.0).to_le_bytes());
            }
        }
        let n = blocks * kind.block_len();
        let (mut fast, mut scalar) = (vec![0f32; n], vec![0f32; n]);
        kind.dequantize(&w, &mut fast);
        kind.dequantize_scalar(&w, &mut scalar);
        for (i, (a, b)) in fast.iter().zip(&scalar).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{kind:?} weight {i}: {a} vs {b}");
        }
    }
}

/// Q4_0 weights repacked into panels (`quant::q4_0_panels`), through whole
/// products for batch sizes on either side of the VNNI kernel's 8-token
/// passes and of the AMX threshold (48), partial 16-token tiles included:
/// every element is the panel twin bit for bit on every level (the VNNI
/// and AMX kernels, or the twin itself), so a token's result never depends
/// on its batch; and it lies within rounding of the file layout's product.
#[test]
fn q4_0_panel_products_equal_their_twin_for_every_batch_size() {
    use phi3_kernels::quant::dot::Activations;
    use phi3_kernels::quant::q4_0_panels::{dot_scalar, pack, packed_bytes, panel_bytes, PanelTokens, ROWS};
    use phi3_kernels::WeightRef;
    let mut rng = Lcg(57);
    let batches = [1usize, 2, 4, 7, 8, 9, 16, 17, 47, 48, 50, 64];
    // 35 blocks: two of the AMX kernel's 32-block chunks, the last one odd;
    // 1024 blocks: two token tiles per group on AMX (`tiles_per_group`), so
    // 48-64 tokens take two groups, the last one partial
    let shapes = [
        (16usize, 32usize, &batches[..]),
        (48, 96, &batches[..]),
        (32, 544, &batches[..]),
        (32, 1120, &batches[..]),
        (32, 32768, &batches[9..]),
    ];
    #[cfg(target_arch = "x86_64")]
    assert_eq!(phi3_kernels::simd::amx_panels::tiles_per_group(1024), 2);
    for (n, k, batches) in shapes {
        let w32: Vec<f32> = (0..n * k).map(|_| rng.f32() * 2.0).collect();
        let w = quantize(QuantKind::Q4_0, &w32);
        let mut packed = vec![0u8; packed_bytes(n, k)];
        assert!(pack(&w, n, k, &mut packed), "finite scales");
        for &t in batches {
            let x: Vec<f32> = (0..t * k).map(|_| rng.f32()).collect();
            let mut out = vec![0f32; t * n];
            phi3_kernels::matmul(WeightRef::Q4_0Panels { k, bytes: &packed }, n, k, &x, t, &mut out);
            let mut xq = vec![0u8; t * Activations::Q8_0.row_bytes(k)];
            for (xi, qi) in x
                .chunks_exact(k)
                .zip(xq.chunks_exact_mut(Activations::Q8_0.row_bytes(k)))
            {
                Activations::Q8_0.quantize(xi, qi);
            }
            let mut tokens = PanelTokens::default();
            tokens.prepare(&xq, t, k / 32);
            let mut file_layout = vec![0f32; t * n];
            phi3_kernels::matmul(WeightRef::Quant(QuantKind::Q4_0, &w), n, k, &x, t, &mut file_layout);
            for m in 0..t {
                for row in 0..n {
                    let panel = &packed[row / ROWS * panel_bytes(k)..][..panel_bytes(k)];
                    let want = dot_scalar(panel, k, row % ROWS, &tokens, m);
                    let got = out[m * n + row];
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "n {n} k {k} t {t} ({m},{row}): {got} vs {want}"
                    );
                    let wr = &w[row * k / 32 * 18..(row + 1) * k / 32 * 18];
                    let xr = &xq[m * k / 32 * q8_0::BYTES..(m + 1) * k / 32 * q8_0::BYTES];
                    let (_, mag) = exact_dot(QuantKind::Q4_0, wr, xr, k);
                    let other = file_layout[m * n + row];
                    assert!(((got - other) as f64).abs() <= 1e-5 * mag + 1e-6, "{got} vs {other}");
                }
            }
        }
    }
}

/// Q4_K, Q5_K and Q6_K weights repacked into panels (`quant::q4_k_panels`,
/// `q6_k_panels`), through whole products for batch sizes on either side
/// of the VNNI kernels' 8-token passes: every element is the panel twin bit
/// for bit (the VNNI kernels, or the twin itself on the lesser levels), and
/// so the file layout's product too (same arithmetic; but for the AVX2
/// level's own Q4_K and Q6_K arithmetic, where panels are never made), so
/// a token's result depends neither on its batch nor on the layout. Codes
/// and sub-block scales (and Q4_K's minimums) are random bytes, so every
/// value of every field occurs, both signs of Q6_K's scales included.
#[test]
fn k_quant_panel_products_equal_the_file_layout_for_every_batch_size() {
    use phi3_kernels::quant::dot::Activations;
    use phi3_kernels::quant::KPanels;
    use phi3_kernels::WeightRef;
    let mut rng = Lcg(91);
    #[cfg(target_arch = "x86_64")]
    let avx2_alone = phi3_kernels::simd::isa() == phi3_kernels::simd::Isa::Avx2;
    #[cfg(not(target_arch = "x86_64"))]
    let avx2_alone = false;
    // (panels, random bytes of each superblock: all but d, and dmin)
    for (quant, random) in [(KPanels::Q4K, 4..144), (KPanels::Q5K, 4..176), (KPanels::Q6K, 0..208)] {
        let kind = quant.kind();
        for (n, k) in [(16usize, 256usize), (48, 768), (32, 3072)] {
            let mut w = quantize(kind, &(0..n * k).map(|_| rng.f32() * 2.0).collect::<Vec<_>>());
            for block in w.chunks_exact_mut(kind.block_bytes()) {
                for b in &mut block[random.clone()] {
                    *b = rng.next() as u8;
                }
            }
            let mut packed = vec![0u8; quant.packed_bytes(n, k)];
            assert!(quant.pack(&w, n, k, &mut packed), "finite scales");
            let panel_bytes = quant.panel_bytes(k);
            for t in [1usize, 2, 3, 4, 5, 7, 8, 9, 16, 17] {
                let x: Vec<f32> = (0..t * k).map(|_| rng.f32()).collect();
                let mut out = vec![0f32; t * n];
                let panels = WeightRef::KPanels {
                    quant,
                    k,
                    bytes: &packed,
                };
                phi3_kernels::matmul(panels, n, k, &x, t, &mut out);
                let mut file_layout = vec![0f32; t * n];
                phi3_kernels::matmul(WeightRef::Quant(kind, &w), n, k, &x, t, &mut file_layout);
                let xrow = Activations::Q8K.row_bytes(k);
                let mut xq = vec![0u8; t * xrow];
                for (xi, qi) in x.chunks_exact(k).zip(xq.chunks_exact_mut(xrow)) {
                    Activations::Q8K.quantize(xi, qi);
                }
                for m in 0..t {
                    for row in 0..n {
                        let panel = &packed[row / 16 * panel_bytes..][..panel_bytes];
                        let want = quant.dot_scalar(panel, k, row % 16, &xq[m * xrow..(m + 1) * xrow]);
                        let (got, other) = (out[m * n + row], file_layout[m * n + row]);
                        let at = format!("{kind:?} n {n} k {k} t {t} ({m},{row})");
                        assert_eq!(got.to_bits(), want.to_bits(), "{at}: {got} vs {want}");
                        if !avx2_alone {
                            assert_eq!(got.to_bits(), other.to_bits(), "{at}: {got} vs file layout {other}");
                        }
                    }
                }
            }
        }
    }
}
