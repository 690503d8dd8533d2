//! KV cache and LongRoPE policy behaviour of sessions.

mod common;

use common::*;
use phi3_model::memory::{estimate, kv_bytes_per_position};
use phi3_model::{Logits, Model, RopePolicy, RopeTable, Session, SessionOptions};

#[test]
fn windowed_cache_stops_growing_at_the_window() {
    let model = Model::open(model_dir("phi-3-mini-4k")).unwrap();
    let w = model.config.attention_window().expect("the 4k fixture has a window");
    let s = session(&model);
    // a session over the whole context holds only W-1 positions
    assert_eq!(
        s.kv_cache_bytes() as u64,
        (w as u64 - 1) * kv_bytes_per_position(&model.config, phi3_model::KvType::F32)
    );
    let est = estimate(
        &model.config,
        0,
        model.config.max_position_embeddings,
        1,
        phi3_model::KvType::F32,
    );
    assert_eq!(est.kv_cache, s.kv_cache_bytes() as u64);
    // and a model without a window holds the whole context
    let long = Model::open(model_dir("phi-3-mini-128k")).unwrap();
    let s = Session::new(
        &long,
        SessionOptions {
            context: 100,
            rope_policy: RopePolicy::Reference,
            kv_type: phi3_model::KvType::F32,
        },
    )
    .unwrap();
    assert_eq!(
        s.kv_cache_bytes() as u64,
        100 * kv_bytes_per_position(&long.config, phi3_model::KvType::F32)
    );
}

#[test]
fn chunked_prefill_equals_one_shot_across_the_window() {
    // prefill in uneven chunks that wrap the ring buffer, then compare
    let model = Model::open(model_dir("phi-3-medium-4k")).unwrap();
    let reference = Reference::load("phi-3-medium-4k");
    let seq = reference.sequences().into_iter().find(|s| s.key == "window").unwrap();
    let v = model.config.vocab_size;
    let mut s = session(&model);
    let mut got = Vec::new();
    let mut i = 0;
    for chunk in [3usize, 13, 1, 9, 14] {
        got.extend(s.feed(&seq.ids[i..i + chunk], Logits::All).unwrap());
        i += chunk;
    }
    assert_eq!(i, seq.ids.len());
    assert_eq!(got.len(), seq.ids.len() * v);
    let err = max_abs_diff(&got, &seq.logits);
    assert!(err < 1e-4, "chunked prefill error {err}");
}

#[test]
fn reference_policy_switches_once_and_re_prefills() {
    let model = Model::open(model_dir("phi-3.5-mini")).unwrap();
    let orig = model.config.original_max_position_embeddings;
    let mut s = session(&model);
    s.feed(&vec![5; orig], Logits::Last).unwrap();
    assert_eq!(s.rope_table(), RopeTable::Short);
    assert_eq!(s.reprefills, 0);
    s.feed(&[6], Logits::Last).unwrap();
    assert_eq!(s.rope_table(), RopeTable::Long);
    assert_eq!(s.reprefills, 1);
    s.feed(&[7, 8], Logits::Last).unwrap();
    assert_eq!(s.reprefills, 1, "the switch happens once");
    s.reset();
    assert_eq!(s.rope_table(), RopeTable::Short);
}

#[test]
fn fixed_policy_uses_one_table_for_the_whole_session() {
    // llama.cpp's choice: a context above the original length means long
    // factors from the first token; the prefix logits then equal the rows of
    // the full-sequence forward (which transformers runs with long factors).
    for name in ["phi-3-mini-128k", "phi-4-mini"] {
        let model = Model::open(model_dir(name)).unwrap();
        let reference = Reference::load(name);
        let seq = reference.sequences().into_iter().find(|s| s.key == "cross").unwrap();
        let opts = SessionOptions {
            context: model.config.max_position_embeddings,
            rope_policy: RopePolicy::FixedByContext,
            kv_type: phi3_model::KvType::F32,
        };
        let mut s = Session::new(&model, opts).unwrap();
        assert_eq!(s.rope_table(), RopeTable::Long);
        let mut got = Vec::new();
        for &id in &seq.ids {
            got.extend(s.feed(&[id], Logits::Last).unwrap());
        }
        assert_eq!(s.reprefills, 0);
        let err = max_abs_diff(&got, &seq.logits);
        assert!(err < 1e-4 * 4.0, "{name}: {err}");

        // a context within the original length keeps the short table
        let short = Reference::load(name)
            .sequences()
            .into_iter()
            .find(|s| s.key == "short")
            .unwrap();
        let opts = SessionOptions {
            context: model.config.original_max_position_embeddings,
            rope_policy: RopePolicy::FixedByContext,
            kv_type: phi3_model::KvType::F32,
        };
        let mut s = Session::new(&model, opts).unwrap();
        assert_eq!(s.rope_table(), RopeTable::Short);
        let got = s.feed(&short.ids, Logits::All).unwrap();
        assert!(max_abs_diff(&got, &short.logits) < 1e-4 * 4.0);
    }
}

#[test]
fn fixture_configs_are_read_from_files() {
    // every fixture loads with the config facts it was built with
    for name in MODELS {
        let model = Model::open(model_dir(name)).unwrap();
        let c = &model.config;
        assert_eq!(c.vocab_size, 256);
        assert_eq!(c.head_dim, 16, "{name}");
        match name {
            "phi-4-mini" => {
                assert_eq!((c.num_heads, c.num_kv_heads, c.rotary_dim), (6, 2, 12));
                assert!(c.tie_word_embeddings);
            }
            "phi-3-medium-4k" | "phi-3-medium-128k" => {
                assert_eq!((c.num_heads, c.num_kv_heads), (8, 2))
            }
            _ => assert_eq!(c.num_heads, c.num_kv_heads),
        }
        assert_eq!(c.long_rope.is_some(), !name.ends_with("4k"), "{name}");
        if name == "phi-3-mini-128k-su" {
            assert_eq!(c.long_rope.as_ref().unwrap().type_name, "su");
        }
    }
}

#[test]
fn f16_kv_cache_stays_close_to_f32() {
    for name in MODELS {
        let model = Model::open(model_dir(name)).unwrap();
        let reference = Reference::load(name);
        for seq in reference.sequences() {
            let run = |kv: phi3_model::KvType| {
                let opts = SessionOptions {
                    context: model.config.max_position_embeddings,
                    rope_policy: RopePolicy::Reference,
                    kv_type: kv,
                };
                let mut s = Session::new(&model, opts).unwrap();
                let mut out = Vec::new();
                for &id in &seq.ids {
                    out.extend(s.feed(&[id], Logits::Last).unwrap());
                }
                out
            };
            let (a, b) = (run(phi3_model::KvType::F16), run(phi3_model::KvType::F32));
            let num: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
            // largest seen 1.1e-6 (phi-3-mini-128k, crossing the LongRoPE switch)
            assert!(num / den <= 1e-5, "{name} {}: f16 KV NMSE {:e}", seq.key, num / den);
        }
    }
}

#[test]
fn q8_0_kv_cache_needs_head_dims_of_whole_blocks() {
    let model = Model::open(model_dir("phi-3-mini-4k")).unwrap();
    let opts = SessionOptions {
        context: 16,
        rope_policy: RopePolicy::Reference,
        kv_type: phi3_model::KvType::Q8_0,
    };
    let e = Session::new(&model, opts)
        .err()
        .expect("head dim 16 cannot hold Q8_0 blocks");
    assert!(e.to_string().contains("multiples of 32"), "{e}");
}

#[test]
fn saved_sessions_continue_exactly_and_refuse_other_models() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.phi3session");
    let model = Model::open(model_dir("phi-3.5-mini")).unwrap();
    let reference = Reference::load("phi-3.5-mini");
    let seq = reference.sequences().into_iter().find(|s| s.key == "cross").unwrap();
    let (head, tail) = seq.ids.split_at(20);
    let mut s = session(&model);
    s.feed(head, Logits::Last).unwrap();
    s.save(&path).unwrap();
    drop(s);
    let mut restored = Session::load(&model, &path, RopePolicy::Reference).unwrap();
    assert_eq!(restored.tokens(), head);
    let mut got = Vec::new();
    for &id in tail {
        got.extend(restored.feed(&[id], Logits::Last).unwrap());
    }
    let want = &seq.incremental.as_ref().unwrap()[20 * model.config.vocab_size..];
    assert!(
        max_abs_diff(&got, want) < 1e-4,
        "a restored session continues as the reference does"
    );

    // another model, a damaged file, a file that is not a session
    let other = Model::open(model_dir("phi-3-mini-128k")).unwrap();
    let e = Session::load(&other, &path, RopePolicy::Reference).err().unwrap();
    assert!(e.to_string().contains("different model"), "{e}");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let e = Session::load(&model, &path, RopePolicy::Reference).err().unwrap();
    assert!(e.to_string().contains("ends early"), "{e}");
    std::fs::write(&path, b"GGUF and more bytes").unwrap();
    let e = Session::load(&model, &path, RopePolicy::Reference).err().unwrap();
    assert!(e.to_string().contains("wrong magic"), "{e}");
}

#[test]
fn memory_budgets_pick_the_largest_context_that_fits() {
    use phi3_model::memory::{estimate, fit_context, parse_size};
    use phi3_model::KvType;
    let model = Model::open(model_dir("phi-3-mini-128k")).unwrap();
    let cfg = &model.config;
    let w = 1_000_000u64;
    // a budget of exactly the estimate for 300 tokens gives 300 tokens
    let budget = estimate(cfg, w, 300, 64, KvType::F16).total();
    assert_eq!(
        fit_context(cfg, w, budget, 64, KvType::F16, 1),
        Some((300, KvType::F16))
    );
    assert_eq!(fit_context(cfg, w, budget - 1, 64, KvType::F16, 1).unwrap().0, 299);
    // everything fits: the model's whole context
    assert_eq!(
        fit_context(cfg, w, u64::MAX / 4, 64, KvType::F16, 1),
        Some((cfg.max_position_embeddings, KvType::F16))
    );
    // not even the minimum: none
    assert_eq!(fit_context(cfg, w, 1000, 64, KvType::F16, 16), None);
    assert_eq!(parse_size("4G"), Some(4 << 30));
    assert_eq!(parse_size("3.5GiB"), Some((3.5 * (1u64 << 30) as f64) as u64));
    assert_eq!(parse_size("512mb"), Some(512 << 20));
    assert_eq!(parse_size("1000"), Some(1000));
    assert_eq!(parse_size("-1G"), None);
    assert_eq!(parse_size("lots"), None);
}

#[test]
fn a_tight_budget_falls_back_to_a_q8_0_kv_cache() {
    use phi3_model::memory::{estimate, fit_context};
    use phi3_model::KvType;
    let mut cfg = Model::open(model_dir("phi-3-mini-128k")).unwrap().config;
    cfg.head_dim = 64; // whole Q8_0 blocks
    let w = 1_000_000u64;
    let q8 = estimate(&cfg, w, 1000, 64, KvType::Q8_0).total();
    let f16 = estimate(&cfg, w, 1000, 64, KvType::F16).total();
    assert!(q8 < f16);
    let (ctx, kv) = fit_context(&cfg, w, q8, 64, KvType::F16, 1000).unwrap();
    assert_eq!((ctx, kv), (1000, KvType::Q8_0));
}

#[test]
fn loading_reports_progress_over_every_matrix() {
    let files = phi3_formats::ModelFiles::open(model_dir("phi-3-medium-4k")).unwrap();
    let total = Model::tensor_bytes(&files);
    let seen = std::cell::Cell::new(0u64);
    let model = Model::from_files_with_progress(files, &|n| seen.set(seen.get() + n)).unwrap();
    let c = &model.config;
    // every matrix once (norm vectors are not reported); lm_head is separate here
    let norms = ((2 * c.num_layers + 1) * c.hidden_size * 4) as u64;
    assert_eq!(seen.get(), total - norms);
}

/// Pseudo-random token ids below `vocab`.
fn ids(seed: u32, n: usize, vocab: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % vocab as u32)
        .collect()
}

#[test]
#[allow(clippy::needless_range_loop)] // `step` indexes the steps of every sequence
fn batched_sequences_give_each_the_logits_it_gets_alone() {
    // a windowed model (the ring buffer wraps) and a LongRoPE one (the switch re-prefills)
    for name in ["phi-3-mini-4k", "phi-3-mini-128k", "phi-4-mini"] {
        let model = Model::open(model_dir(name)).unwrap();
        let vocab = model.config.vocab_size;
        let ctx = model.config.max_position_embeddings.min(80);
        // three sequences with different prompt lengths, then decoding together
        let prompts = [ids(1, 5, vocab), ids(2, 17, vocab), ids(3, 1, vocab)];
        let steps = ctx - 18;
        let alone: Vec<Vec<Vec<f32>>> = prompts
            .iter()
            .map(|p| {
                let mut s = session(&model);
                let mut all = vec![s.feed(p, Logits::Last).unwrap()];
                for step in 0..steps {
                    let next = argmax(all.last().unwrap()) ^ (step as u32 % 2);
                    all.push(s.feed(&[next], Logits::Last).unwrap());
                }
                all
            })
            .collect();
        let mut sessions: Vec<Session> = prompts.iter().map(|_| session(&model)).collect();
        let mut scratch = phi3_model::Scratch::default();
        let mut last: Vec<Vec<f32>> = Vec::new();
        for step in 0..=steps {
            let feeds: Vec<Vec<u32>> = if step == 0 {
                prompts.to_vec()
            } else {
                last.iter().map(|l| vec![argmax(l) ^ ((step - 1) as u32 % 2)]).collect()
            };
            let views: Vec<&[u32]> = feeds.iter().map(|f| f.as_slice()).collect();
            let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
            last = phi3_model::feed_many(&mut refs, &views, &mut scratch)
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            for (k, l) in last.iter().enumerate() {
                assert_eq!(l, &alone[k][step], "{name}: sequence {k}, step {step}");
            }
        }
        if model.config.long_rope.is_some() {
            assert!(
                sessions.iter().all(|s| s.reprefills == 1),
                "{name}: the LongRoPE switch happened"
            );
        }
    }
}

#[test]
fn one_sessions_bad_feed_leaves_the_batch_alone() {
    let model = Model::open(model_dir("phi-3-mini-128k")).unwrap();
    let vocab = model.config.vocab_size as u32;
    let (mut a, mut b) = (session(&model), session(&model));
    let want = session(&model).feed(&[5, 6], Logits::Last).unwrap();
    let mut scratch = phi3_model::Scratch::default();
    let out = phi3_model::feed_many(&mut [&mut a, &mut b], &[&[vocab + 1], &[5, 6]], &mut scratch);
    assert!(matches!(out[0], Err(phi3_model::ModelError::TokenOutOfRange { .. })));
    assert_eq!(out[1].as_ref().unwrap(), &want);
    assert!(a.tokens().is_empty());
}

#[test]
fn a_copied_prefix_continues_like_the_original() {
    // (the tiny models' 16-wide heads allow no Q8_0 cache)
    for kv_type in [phi3_model::KvType::F32, phi3_model::KvType::F16] {
        let model = Model::open(model_dir("phi-3-mini-128k")).unwrap();
        let opts = SessionOptions {
            context: 48,
            rope_policy: RopePolicy::Reference,
            kv_type,
        };
        let prompt = ids(9, 20, model.config.vocab_size);
        let mut original = Session::new(&model, opts).unwrap();
        original.feed(&prompt, Logits::Last).unwrap();
        let mut alone = Session::new(&model, opts).unwrap();
        alone.feed(&prompt[..12], Logits::Last).unwrap();
        let want = alone.feed(&[7, 8], Logits::Last).unwrap();
        let mut copy = Session::new(&model, opts).unwrap();
        assert!(copy.copy_prefix_from(&original, 12));
        assert_eq!(copy.tokens(), &prompt[..12]);
        assert_eq!(copy.feed(&[7, 8], Logits::Last).unwrap(), want, "{kv_type:?}");
        assert!(!copy.copy_prefix_from(&original, 21), "more than it holds");
    }
    // a wrapped ring buffer no longer holds the start of its sequence
    let model = Model::open(model_dir("phi-3-mini-4k")).unwrap();
    let mut long = session(&model);
    long.feed(&ids(4, 30, model.config.vocab_size), Logits::Last).unwrap();
    assert!(!session(&model).copy_prefix_from(&long, 5));
}
