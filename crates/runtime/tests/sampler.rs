//! Every step of the sampler chain on fixed logits, and seeded determinism.

use phi3_runtime::sampler::{apply_logit_bias, apply_penalties, min_p, softmax, top_k, top_p, Candidate};
use phi3_runtime::{Sampler, SamplerConfig, SamplerError};

fn cands(logits: &[f32]) -> Vec<Candidate> {
    logits
        .iter()
        .enumerate()
        .map(|(i, &l)| Candidate { id: i as u32, logit: l })
        .collect()
}

fn ids(c: &[Candidate]) -> Vec<u32> {
    c.iter().map(|x| x.id).collect()
}

/// Sorted by logit, descending.
fn sorted(logits: &[f32]) -> Vec<Candidate> {
    let mut c = cands(logits);
    c.sort_by(|a, b| b.logit.total_cmp(&a.logit));
    c
}

#[test]
fn greedy_picks_the_largest_and_the_lowest_id_on_ties() {
    let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
    assert_eq!(s.sample(&[0.1, 2.0, -1.0, 2.0]).unwrap(), 1);
}

#[test]
fn top_k_keeps_the_k_largest() {
    let mut c = sorted(&[1.0, 4.0, 3.0, 2.0]);
    top_k(&mut c, 2);
    assert_eq!(ids(&c), [1, 2]);
    let mut c = sorted(&[1.0, 4.0]);
    top_k(&mut c, 0);
    assert_eq!(c.len(), 2, "0 keeps all");
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    // probabilities 0.5, 0.25, 0.125, 0.125
    let l = [2f32.ln() * 2.0, 2f32.ln(), 0.0, 0.0];
    let mut c = sorted(&l);
    top_p(&mut c, 0.7);
    assert_eq!(ids(&c), [0, 1]);
    let mut c = sorted(&l);
    top_p(&mut c, 0.5);
    assert_eq!(ids(&c), [0]);
    let mut c = sorted(&l);
    top_p(&mut c, 0.01);
    assert_eq!(ids(&c), [0], "at least one token");
}

#[test]
fn min_p_drops_tokens_far_below_the_best() {
    // relative probabilities 1, 0.5, 0.1, 0.01
    let l = [0.0, 0.5f32.ln(), 0.1f32.ln(), 0.01f32.ln()];
    let mut c = sorted(&l);
    min_p(&mut c, 0.2);
    assert_eq!(ids(&c), [0, 1]);
    let mut c = sorted(&l);
    min_p(&mut c, 0.05);
    assert_eq!(ids(&c), [0, 1, 2]);
}

#[test]
fn temperature_sharpens_and_flattens() {
    let c = cands(&[1.0, 0.0]);
    let cold = softmax(&c, 0.5);
    let hot = softmax(&c, 2.0);
    let plain = softmax(&c, 1.0);
    assert!(cold[0] > plain[0] && plain[0] > hot[0]);
    assert!((plain[0] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
}

#[test]
fn penalties_follow_ctrl_and_openai() {
    let cfg = SamplerConfig {
        repeat_penalty: 2.0,
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        ..Default::default()
    };
    let mut c = cands(&[4.0, -4.0, 1.0]);
    // token 0 seen twice, token 1 once, token 2 never
    apply_penalties(&mut c, &[0, 1, 0], &cfg);
    assert_eq!(c[0].logit, 4.0 / 2.0 - 0.5 - 0.25 * 2.0);
    assert_eq!(c[1].logit, -4.0 * 2.0 - 0.5 - 0.25);
    assert_eq!(c[2].logit, 1.0);
}

#[test]
fn logit_bias_adds_and_bans() {
    let mut c = cands(&[1.0, 2.0, 3.0]);
    apply_logit_bias(&mut c, &[(2, f32::NEG_INFINITY), (0, 5.0)]).unwrap();
    assert_eq!(c[0].logit, 6.0);
    assert_eq!(c[2].logit, f32::NEG_INFINITY);
    let mut s = Sampler::new(SamplerConfig {
        logit_bias: vec![(1, f32::NEG_INFINITY)],
        ..SamplerConfig::greedy()
    })
    .unwrap();
    assert_eq!(s.sample(&[0.0, 9.0, 1.0]).unwrap(), 2);
    let e = Sampler::new(SamplerConfig {
        logit_bias: vec![(7, 1.0)],
        ..SamplerConfig::greedy()
    })
    .unwrap()
    .sample(&[0.0; 3]);
    assert_eq!(e, Err(SamplerError::BiasOutOfRange { id: 7, vocab: 3 }));
    let all_banned = SamplerConfig {
        logit_bias: vec![(0, f32::NEG_INFINITY)],
        ..SamplerConfig::greedy()
    };
    assert_eq!(
        Sampler::new(all_banned).unwrap().sample(&[1.0]),
        Err(SamplerError::NothingLeft)
    );
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) / 3.0).collect();
    let run = |seed| {
        let mut s = Sampler::new(SamplerConfig {
            seed,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        })
        .unwrap();
        (0..64).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn draws_follow_the_distribution() {
    // p = 0.5, 0.3, 0.2: frequencies over 20000 draws within 2%
    let l = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
    let mut s = Sampler::new(SamplerConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 7,
        ..Default::default()
    })
    .unwrap();
    let mut counts = [0usize; 3];
    for _ in 0..20000 {
        counts[s.sample(&l).unwrap() as usize] += 1;
    }
    for (c, p) in counts.iter().zip([0.5, 0.3, 0.2]) {
        assert!((*c as f64 / 20000.0 - p).abs() < 0.02, "{counts:?}");
    }
}

#[test]
fn nonsensical_settings_are_refused() {
    for cfg in [
        SamplerConfig {
            temperature: -0.1,
            ..Default::default()
        },
        SamplerConfig {
            temperature: f32::NAN,
            ..Default::default()
        },
        SamplerConfig {
            top_p: 1.5,
            ..Default::default()
        },
        SamplerConfig {
            top_p: 0.0,
            ..Default::default()
        },
        SamplerConfig {
            min_p: -0.5,
            ..Default::default()
        },
        SamplerConfig {
            repeat_penalty: 0.0,
            ..Default::default()
        },
        SamplerConfig {
            presence_penalty: 3.0,
            ..Default::default()
        },
        SamplerConfig {
            logit_bias: vec![(0, f32::NAN)],
            ..Default::default()
        },
    ] {
        let e = Sampler::new(cfg.clone())
            .err()
            .unwrap_or_else(|| panic!("{cfg:?} must be refused"));
        assert!(matches!(e, SamplerError::BadValue { .. }), "{e}");
    }
}

#[test]
fn penalties_only_see_the_last_n_tokens() {
    let cfg = SamplerConfig {
        presence_penalty: 2.0,
        penalty_last_n: 2,
        ..SamplerConfig::greedy()
    };
    let mut s = Sampler::new(cfg).unwrap();
    for t in [0, 1, 1] {
        s.accept(t);
    }
    // token 0 fell out of the window: not penalized; token 1 is
    assert_eq!(s.sample(&[1.0, 2.5]).unwrap(), 0);
    s.reset();
    assert_eq!(s.sample(&[1.0, 2.5]).unwrap(), 1);
}
