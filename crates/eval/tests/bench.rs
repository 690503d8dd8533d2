//! The benchmark tools on small models (the real shapes are gigabytes).

use std::path::PathBuf;

use phi3_eval::bench::{run, BenchOptions};
use phi3_eval::synth::{shape_config, synthesize, synthesize_config, SHAPES};
use phi3_formats::DType;
use phi3_model::{Logits, Model, RopePolicy, Session, SessionOptions};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/models")
        .join(name)
}

#[test]
fn every_named_shape_has_the_published_parameter_count() {
    // PHI3_FAMILY.md §1: mini 3.82 B, medium 14.0 B, 4-mini 3.84 B
    for (name, _) in SHAPES {
        let p = shape_config(name).unwrap().parameter_count() as f64 / 1e9;
        let want = match name {
            "phi-3-medium-4k" => 13.96,
            "phi-4-mini" => 3.84,
            _ => 3.82,
        };
        assert!((p - want).abs() < 0.02, "{name}: {p} B");
    }
    assert!(shape_config("phi-9").is_err());
}

#[test]
fn synthesized_models_load_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Model::open(fixture("phi-3.5-mini")).unwrap().config;
    for dtype in [DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q5_1] {
        let out = dir.path().join(format!("{dtype}.gguf"));
        synthesize_config(&cfg, "tiny", dtype, &out).unwrap();
        let m = Model::open(&out).unwrap();
        assert_eq!(m.config.long_rope, cfg.long_rope);
        assert_eq!(m.weights.layers[1].down.tensor.dtype, dtype);
        let mut s = Session::new(
            &m,
            SessionOptions {
                context: 40,
                rope_policy: RopePolicy::Reference,
                kv_type: phi3_model::KvType::F32,
            },
        )
        .unwrap();
        let logits = s.feed(&(1..40).collect::<Vec<u32>>(), Logits::Last).unwrap();
        assert!(logits.iter().all(|v| v.is_finite()), "{dtype}");
        // random but not degenerate
        assert!(logits.iter().any(|&v| v != logits[0]), "{dtype}");
    }
    let e = synthesize("phi-3-mini-4k", DType::I8, &dir.path().join("x.gguf")).unwrap_err();
    assert!(e.to_string().contains("cannot synthesize"), "{e}");
}

#[test]
fn bench_reports_rates_memory_and_bandwidth() {
    let opts = BenchOptions {
        prompt_lens: vec![8, 16],
        gen_len: 4,
        reps: 2,
        measure_bandwidth: false,
        kv_type: phi3_model::KvType::F16,
    };
    let r = run(&fixture("phi-3-mini-4k"), &opts).unwrap();
    assert_eq!(
        r.results.iter().map(|x| x.test.as_str()).collect::<Vec<_>>(),
        ["pp8", "pp16", "tg4"]
    );
    for x in &r.results {
        assert!(x.min_tok_s <= x.median_tok_s && x.median_tok_s <= x.max_tok_s && x.min_tok_s > 0.0);
    }
    // every matrix once plus one embedding row (f32 fixture)
    let m = Model::open(fixture("phi-3-mini-4k")).unwrap();
    let c = &m.config;
    let per_layer =
        (c.qkv_dim() * c.hidden_size + c.hidden_size * c.hidden_size + 3 * c.intermediate_size * c.hidden_size) * 4;
    let want = (per_layer * c.num_layers + c.vocab_size * c.hidden_size * 4 + c.hidden_size * 4) as u64;
    assert_eq!(r.weight_bytes_per_token, want);
    assert!(r.decode_bandwidth_gb_s.unwrap() > 0.0);
    assert!(r.peak_rss_bytes.unwrap() > 0);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["results"][2]["median_tok_s"].as_f64().unwrap() > 0.0);
    assert!(r.table().contains("| tg4 | 4 |"));
}

/// The phi-3-mini-4k fixture widened so that rows are whole 256-weight
/// superblocks and heads whole Q8_0 blocks (head dim 64).
fn wide_config() -> phi3_model::ModelConfig {
    let mut cfg = Model::open(fixture("phi-3-mini-4k")).unwrap().config;
    cfg.hidden_size = 256;
    cfg.head_dim = 64;
    cfg.rotary_dim = 64;
    cfg.intermediate_size = 512;
    cfg
}

#[test]
fn k_quant_models_run_on_the_integer_path_close_to_their_dequantized_copy() {
    // a small config whose rows are whole 256-weight superblocks
    let cfg = wide_config();
    let dir = tempfile::tempdir().unwrap();
    for dtype in [DType::Q4K, DType::Q5K, DType::Q6K, DType::Q4_0, DType::Q8_0] {
        let qpath = dir.path().join(format!("{dtype}.gguf"));
        synthesize_config(&cfg, "k", dtype, &qpath).unwrap();
        let q = Model::open(&qpath).unwrap();
        let fpath = dir.path().join(format!("{dtype}-f32.gguf"));
        phi3_model::convert::write_gguf(&q, &fpath, DType::F32).unwrap();
        let f = Model::open(&fpath).unwrap();
        let ids: Vec<u32> = (1..30).collect();
        let run = |m: &Model| {
            let mut s = Session::new(
                m,
                SessionOptions {
                    context: 40,
                    rope_policy: RopePolicy::Reference,
                    kv_type: phi3_model::KvType::F32,
                },
            )
            .unwrap();
            s.feed(&ids, Logits::All).unwrap()
        };
        let (a, b) = (run(&q), run(&f));
        if matches!(dtype, DType::Q4K | DType::Q5K | DType::Q6K) {
            // where the kernels read the K-quants as panels every matrix is
            // held so, and gives the file layout's logits bit for bit (one
            // arithmetic)
            let l = &q.weights.layers[0];
            for lin in [&l.qkv, &l.o_proj, &l.gate_up, &l.down] {
                assert_eq!(
                    lin.panels.is_some(),
                    phi3_kernels::packs_k_quants(),
                    "{}",
                    lin.tensor.name
                );
            }
            let files = phi3_formats::ModelFiles::open(&qpath).unwrap();
            let stored = Model::load(files, phi3_model::WeightLayout::AsStored, &|_| {}).unwrap();
            assert!(stored.weights.layers[0].down.panels.is_none());
            #[cfg(target_arch = "x86_64")]
            let own_arithmetic = phi3_kernels::simd::isa() == phi3_kernels::simd::Isa::Avx2;
            #[cfg(not(target_arch = "x86_64"))]
            let own_arithmetic = false;
            if !own_arithmetic {
                let as_stored = run(&stored);
                assert!(a.iter().zip(&as_stored).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
        let num: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        // only the activations' 8-bit quantization separates the two runs
        assert!(num / den < 1e-3, "{dtype}: NMSE {:e}", num / den);
    }
}

#[test]
fn k_quant_recipes_type_each_tensor_as_llama_cpp_and_run() {
    use phi3_model::convert::{write_gguf_plan, Plan, Role};
    let mut cfg = wide_config();
    cfg.num_layers = 8;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f32.gguf");
    synthesize_config(&cfg, "k", DType::F32, &src).unwrap();
    let f = Model::open(&src).unwrap();
    let ids: Vec<u32> = (1..30).collect();
    let run = |m: &Model| {
        let mut s = Session::new(
            m,
            SessionOptions {
                context: 40,
                rope_policy: RopePolicy::Reference,
                kv_type: phi3_model::KvType::F32,
            },
        )
        .unwrap();
        s.feed(&ids, Logits::All).unwrap()
    };
    let want = run(&f);
    // n = 8: use_more_bits picks layers 0, 3, 6, 7 (first and last eighth, and
    // (i − n/8) % 3 == 2 between); for n = 32 GGUF_PHI3.md §8 lists 0-3, 6, 9, ..., 28-31
    let more = [true, false, false, true, false, false, true, true];
    let n32: Vec<usize> = (0..32)
        .filter(|&l| Plan::Q4KM.choose(Role::FfnDown, l, 32, false) == DType::Q6K)
        .collect();
    assert_eq!(n32, [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    let nmse = |got: &[f32]| -> f64 {
        let num: f64 = got.iter().zip(&want).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        num / want.iter().map(|y| (*y as f64).powi(2)).sum::<f64>()
    };
    let uniform = |t: DType| {
        let p = dir.path().join(format!("{t}.gguf"));
        phi3_model::convert::write_gguf(&f, &p, t).unwrap();
        nmse(&run(&Model::open(&p).unwrap()))
    };
    for (name, base, rival) in [("q4_k_m", DType::Q4K, DType::Q4_0), ("q5_k_m", DType::Q5K, DType::Q5_0)] {
        let plan = Plan::parse(name).unwrap();
        for (l, &m) in more.iter().enumerate() {
            assert_eq!(
                plan.choose(Role::Qkv, l, 8, false),
                if m { DType::Q6K } else { base },
                "{name} layer {l}"
            );
            assert_eq!(plan.choose(Role::FfnUp, l, 8, false), base);
        }
        assert_eq!(plan.choose(Role::Output, 0, 8, false), DType::Q6K);
        assert_eq!(plan.choose(Role::Embedding, 0, 8, false), base);
        assert_eq!(
            plan.choose(Role::Embedding, 0, 8, true),
            DType::Q6K,
            "tied embeddings are output-like"
        );
        let out = dir.path().join(format!("{name}.gguf"));
        write_gguf_plan(&f, &out, plan).unwrap();
        let q = Model::open(&out).unwrap();
        assert_eq!(q.weights.layers[0].qkv.tensor.dtype, DType::Q6K);
        assert_eq!(q.weights.layers[1].qkv.tensor.dtype, base);
        assert_eq!(q.weights.lm_head.tensor.dtype, DType::Q6K);
        // the mix (K-quant search quantizer, Q6_K where it counts) must beat
        // the plain format of the same size
        let (mix, plain) = (nmse(&run(&q)), uniform(rival));
        assert!(mix < plain, "{name}: NMSE {mix:e} not below {rival}'s {plain:e}");
    }
}

#[test]
fn kv_cache_types_stay_close_to_f32() {
    // head dim 64: whole Q8_0 blocks
    let cfg = wide_config();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f32.gguf");
    synthesize_config(&cfg, "kv", DType::F32, &path).unwrap();
    let m = Model::open(&path).unwrap();
    let ids: Vec<u32> = (1..40).collect();
    let run = |kv: phi3_model::KvType| {
        let opts = SessionOptions {
            context: 64,
            rope_policy: RopePolicy::Reference,
            kv_type: kv,
        };
        let mut s = Session::new(&m, opts).unwrap();
        let mut out = s.feed(&ids[..20], Logits::All).unwrap();
        for &id in &ids[20..] {
            out.extend(s.feed(&[id], Logits::Last).unwrap());
        }
        (out, s.kv_cache_bytes())
    };
    let (exact, f32_bytes) = run(phi3_model::KvType::F32);
    for (kv, bound, ratio) in [(phi3_model::KvType::F16, 1e-5, 2), (phi3_model::KvType::Q8_0, 1e-3, 4)] {
        let (got, bytes) = run(kv);
        let num: f64 = got.iter().zip(&exact).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = exact.iter().map(|y| (*y as f64).powi(2)).sum();
        assert!(num / den <= bound, "{kv:?}: NMSE {:e}", num / den);
        // f16 halves the cache; Q8_0 stores 34 bytes per 32 values
        assert!(
            bytes * ratio <= f32_bytes * 34 / 32 && bytes * ratio >= f32_bytes,
            "{kv:?}: {bytes} vs {f32_bytes}"
        );
    }
}

/// `phi3 bench --type q4_k_m` synthesizes llama.cpp's mix, tensor by
/// tensor as `phi3 quantize` types them, and runs it (Q4_K and Q6_K
/// matrices side by side in one forward pass).
#[test]
fn synthesized_mixes_type_each_tensor_as_the_recipe() {
    use phi3_eval::synth::{cache_path, parse_plan};
    use phi3_model::convert::{Plan, Role};
    let mut cfg = wide_config();
    cfg.num_layers = 8;
    let dir = tempfile::tempdir().unwrap();
    let plan = parse_plan("q4_k_m").unwrap();
    assert_eq!(plan, Plan::Q4KM);
    assert_eq!(
        parse_plan("q4_0").unwrap(),
        Plan::Uniform(DType::Q4_0),
        "a single type stays uniform"
    );
    assert_eq!(parse_plan("q3_k").unwrap(), Plan::Uniform(DType::Q3K));
    assert!(parse_plan("q9_z").unwrap_err().to_string().contains("q4_k_m"));
    assert!(cache_path("phi-3-mini-4k", plan).ends_with("bench/phi-3-mini-4k-q4_k_m.gguf"));
    let out = dir.path().join("mix.gguf");
    synthesize_config(&cfg, "mix", plan, &out).unwrap();
    let m = Model::open(&out).unwrap();
    for (l, layer) in m.weights.layers.iter().enumerate() {
        assert_eq!(layer.qkv.tensor.dtype, plan.choose(Role::Qkv, l, 8, false), "layer {l}");
        assert_eq!(
            layer.down.tensor.dtype,
            plan.choose(Role::FfnDown, l, 8, false),
            "layer {l}"
        );
        assert_eq!(layer.gate_up.tensor.dtype, DType::Q4K);
    }
    assert_eq!(m.weights.lm_head.tensor.dtype, DType::Q6K);
    assert_eq!(m.weights.embed.tensor.dtype, DType::Q4K);
    let mut s = Session::new(
        &m,
        SessionOptions {
            context: 40,
            rope_policy: RopePolicy::Reference,
            kv_type: phi3_model::KvType::F16,
        },
    )
    .unwrap();
    let logits = s.feed(&(1..33).collect::<Vec<u32>>(), Logits::Last).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()) && logits.iter().any(|&v| v != logits[0]));
}
