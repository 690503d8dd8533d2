//! Kernel checks that run on the main thread only, for qemu-user (see
//! `../shared/ARM64.md`): every SIMD kernel this CPU selects against its
//! scalar twin and f64, and the block formats against ggml's fixtures.
//! Runs as a normal test on x86-64 too. Exits non-zero on the first failure.

use std::path::PathBuf;
use std::process::ExitCode;

use phi3_kernels::quant::dot::{
    activations_for, dot_q2_k_q8_k_blockwise_scalar, dot_q3_k_q8_k_blockwise_scalar, dot_q4_0_q8_0_grouped_scalar,
    dot_q4_0_q8_0_scalar, dot_q4_1_q8_0_grouped_scalar, dot_q4_k_q8_k_blockwise_scalar, dot_q4_k_q8_k_scalar,
    dot_q5_0_q8_0_grouped_scalar, dot_q5_1_q8_0_grouped_scalar, dot_q5_k_q8_k_blockwise_scalar,
    dot_q6_k_q8_k_blockwise_scalar, dot_q6_k_q8_k_scalar, dot_q8_0_q8_0_grouped_scalar, dot_q8_0_q8_0_scalar,
    dot_quantized,
};
use phi3_kernels::quant::QuantKind;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/quant")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn check(ok: bool, what: String, failures: &mut Vec<String>) {
    if !ok {
        eprintln!("FAIL {what}");
        failures.push(what);
    }
}

/// A dot product of a weight row and an activation row.
type Dot = fn(&[u8], &[u8]) -> f32;

/// The K-quants and their blockwise scalar twins.
const K_TWINS: [(QuantKind, Dot); 5] = [
    (QuantKind::Q2K, dot_q2_k_q8_k_blockwise_scalar),
    (QuantKind::Q3K, dot_q3_k_q8_k_blockwise_scalar),
    (QuantKind::Q4K, dot_q4_k_q8_k_blockwise_scalar),
    (QuantKind::Q5K, dot_q5_k_q8_k_blockwise_scalar),
    (QuantKind::Q6K, dot_q6_k_q8_k_blockwise_scalar),
];

/// A K-quant result against its blockwise twin: the same bits, or within
/// `tolerance` (relative) for the Q4_K and Q6_K kernels of a level with its
/// own arithmetic for them (x86-64's AVX2).
fn k_twin_holds(kind: QuantKind, own_arithmetic: bool, got: f32, want: f32, tolerance: f32) -> bool {
    got.to_bits() == want.to_bits()
        || own_arithmetic
            && matches!(kind, QuantKind::Q4K | QuantKind::Q6K)
            && (got - want).abs() <= tolerance * want.abs().max(1.0)
}

/// A whole matrix product of `n` quantized weight rows (inner size `k`)
/// through `matmul`, each element checked against the pair's twin.
struct Product<'a> {
    kind: QuantKind,
    w: &'a [u8],
    n: usize,
    k: usize,
    twin: fn(&[u8], &[u8]) -> f32,
}

impl Product<'_> {
    /// For each batch size in `tokens`: random activations, the product,
    /// and `holds(got, twin)` for every element.
    fn check(
        &self,
        tokens: &[usize],
        rnd: &mut impl FnMut() -> f32,
        holds: impl Fn(f32, f32) -> bool,
        failures: &mut Vec<String>,
    ) {
        let (kind, n, k) = (self.kind, self.n, self.k);
        let act = activations_for(kind).unwrap();
        let rb = kind.row_bytes(k);
        for &t in tokens {
            let xv: Vec<f32> = (0..t * k).map(|_| rnd() * 3.0).collect();
            let mut out = vec![0f32; t * n];
            phi3_kernels::matmul(phi3_kernels::WeightRef::Quant(kind, self.w), n, k, &xv, t, &mut out);
            for i in 0..t {
                let mut x = vec![0u8; act.row_bytes(k)];
                act.quantize(&xv[i * k..(i + 1) * k], &mut x);
                for j in 0..n {
                    let (got, want) = (out[i * n + j], (self.twin)(&self.w[j * rb..(j + 1) * rb], &x));
                    check(
                        holds(got, want),
                        format!("{} product t={t} ({i},{j}): {got} vs {want}", kind.name()),
                        failures,
                    );
                }
            }
        }
    }
}

fn main() -> ExitCode {
    phi3_kernels::pool::set_global_threads(1);
    let mut failures = Vec::new();
    println!("aarch64_checks: kernels = {:?}", phi3_kernels::simd::isa());

    // block formats against ggml
    for kind in QuantKind::ALL {
        let want = f32s(&fixture(&format!("{}.dequant.f32", kind.name())));
        let mut got = vec![0f32; want.len()];
        kind.dequantize(&fixture(&format!("{}.blocks", kind.name())), &mut got);
        let ok = got
            .iter()
            .zip(&want)
            .all(|(g, w)| (g - w).abs() <= 1e-6 * w.abs().max(1e-3));
        check(ok, format!("dequantize {}", kind.name()), &mut failures);
    }

    // dot products: the selected kernel against the scalar twin and f64
    let mut state = 99u64;
    let mut rnd = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 1.0
    };
    for kind in [QuantKind::Q4_0, QuantKind::Q8_0, QuantKind::Q4K, QuantKind::Q6K] {
        let act = activations_for(kind).unwrap();
        let w = match kind {
            QuantKind::Q4K | QuantKind::Q6K => fixture(&format!("{}.blocks", kind.name())),
            _ => {
                let v: Vec<f32> = (0..32 * 37).map(|_| rnd() * 2.0).collect();
                let mut q = vec![0u8; kind.row_bytes(v.len())];
                kind.quantize(&v, &mut q).unwrap();
                q
            }
        };
        let n = w.len() / kind.block_bytes() * kind.block_len();
        let xv: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 0.5).cos()).collect();
        let mut x = vec![0u8; act.row_bytes(n)];
        act.quantize(&xv, &mut x);
        let scalar = match kind {
            QuantKind::Q4_0 => dot_q4_0_q8_0_scalar(&w, &x),
            QuantKind::Q8_0 => dot_q8_0_q8_0_scalar(&w, &x),
            QuantKind::Q4K => dot_q4_k_q8_k_scalar(&w, &x),
            _ => dot_q6_k_q8_k_scalar(&w, &x),
        };
        let fast = dot_quantized(kind, &w, &x);
        let mut wf = vec![0f32; n];
        kind.dequantize(&w, &mut wf);
        let mag: f64 = wf.iter().zip(&xv).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
        check(
            (fast - scalar).abs() as f64 <= 1e-5 * mag.max(1e-3),
            format!("{} kernel {fast} vs scalar {scalar}", kind.name()),
            &mut failures,
        );
    }

    // the K-quant kernels against their blockwise twins, bit for bit (ggml's
    // fixture blocks, activations in ggml's synthetic pattern); x86-64's AVX2
    // level alone has its own Q4_K and Q6_K arithmetic, within rounding
    let own_arithmetic = format!("{:?}", phi3_kernels::simd::isa()) == "Avx2";
    for (kind, twin) in K_TWINS {
        let w = fixture(&format!("{}.blocks", kind.name()));
        let n = w.len() / kind.block_bytes() * kind.block_len();
        let act = activations_for(kind).unwrap();
        let xv: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 1.5).cos()).collect();
        let mut x = vec![0u8; act.row_bytes(n)];
        act.quantize(&xv, &mut x);
        let (fast, want) = (dot_quantized(kind, &w, &x), twin(&w, &x));
        check(
            k_twin_holds(kind, own_arithmetic, fast, want, 1e-5),
            format!("{} kernel {fast} vs blockwise twin {want}", kind.name()),
            &mut failures,
        );
    }

    // 32-weight block products (tiles: 2 x 2 pairs per SMMLA with i8mm)
    // against the grouped twins, bit for bit on the NEON levels (Q4_1, Q5_0
    // and Q5_1 on every level; x86-64 has its own Q4_0 and Q8_0 below VNNI)
    let neon = format!("{:?}", phi3_kernels::simd::isa()).starts_with("Neon");
    for (kind, twin) in [
        (QuantKind::Q4_0, dot_q4_0_q8_0_grouped_scalar as fn(&[u8], &[u8]) -> f32),
        (QuantKind::Q8_0, dot_q8_0_q8_0_grouped_scalar),
        (QuantKind::Q4_1, dot_q4_1_q8_0_grouped_scalar),
        (QuantKind::Q5_0, dot_q5_0_q8_0_grouped_scalar),
        (QuantKind::Q5_1, dot_q5_1_q8_0_grouped_scalar),
    ] {
        if activations_for(kind).is_none() {
            continue; // Q4_1, Q5_0, Q5_1 without an integer kernel: the float path
        }
        let (n, k) = (5, 32 * 21);
        let wv: Vec<f32> = (0..n * k).map(|_| rnd() * 2.0).collect();
        let mut w = vec![0u8; kind.row_bytes(k) * n];
        kind.quantize(&wv, &mut w).unwrap();
        let exact = neon || matches!(kind, QuantKind::Q4_1 | QuantKind::Q5_0 | QuantKind::Q5_1);
        let holds = |got: f32, want: f32| {
            if exact {
                got.to_bits() == want.to_bits()
            } else {
                (got - want).abs() <= 1e-4 * want.abs().max(1.0)
            }
        };
        let product = Product {
            kind,
            w: &w,
            n,
            k,
            twin,
        };
        product.check(&[1, 2, 3, 4, 5], &mut rnd, holds, &mut failures);
    }

    // K-quant whole products (tiles of up to 4 x 4 pairs) against the
    // blockwise twins, bit for bit but on x86-64's AVX2 level
    for (kind, twin) in K_TWINS {
        let blocks = fixture(&format!("{}.blocks", kind.name()));
        let (n, k) = (5, 256);
        let rb = kind.row_bytes(k);
        // five rows out of the fixture's superblocks (repeated as needed)
        let w: Vec<u8> = (0..n)
            .flat_map(|j| blocks.chunks_exact(rb).cycle().nth(j).unwrap().to_vec())
            .collect();
        let product = Product {
            kind,
            w: &w,
            n,
            k,
            twin,
        };
        let holds = |got, want| k_twin_holds(kind, own_arithmetic, got, want, 1e-4);
        product.check(&[1, 3, 4, 6], &mut rnd, holds, &mut failures);
    }

    // the thread pool with one thread and a whole matrix product
    let (n, k) = (7, 64);
    let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 - 2.0).collect();
    let x: Vec<f32> = (0..k).map(|i| (i % 3) as f32).collect();
    let mut out = vec![0f32; n];
    phi3_kernels::matmul(phi3_kernels::WeightRef::F32(&w), n, k, &x, 1, &mut out);
    for (j, o) in out.iter().enumerate() {
        let want: f32 = (0..k).map(|c| w[j * k + c] * x[c]).sum();
        check(
            (o - want).abs() < 1e-4,
            format!("matmul row {j}: {o} vs {want}"),
            &mut failures,
        );
    }

    if failures.is_empty() {
        println!("aarch64_checks: all passed");
        ExitCode::SUCCESS
    } else {
        eprintln!("aarch64_checks: {} failures", failures.len());
        ExitCode::FAILURE
    }
}
