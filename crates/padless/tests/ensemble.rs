//! Ensembles of encoder-decoders decoded together: the scores are the log of the models' mean
//! probability (checked in float64 against each model's own step), greedy decoding picks the
//! mean's most likely token at every step (checked against each model's teacher-forced
//! logits), a row decodes the same alone and in a padded batch, an ensemble of one model
//! decodes as that model, and bad ensembles are clear errors.

use padless::cpu::{self, fused_enabled, side_by_side, with_composite, with_threads};
use padless::seq2seq::{
    AttentionKind, EOS, EncoderDecoder, EncoderDecoderConfig, beam_decode, beam_decode_ensemble,
    ensemble_scores, greedy_decode, greedy_decode_ensemble,
};
use padless::tensor_util::{f32_vec, int_tensor_from};

mod common;
use common::{assert_close_to_scale, ids};

fn config(attention: AttentionKind, n_target_tokens: usize) -> EncoderDecoderConfig {
    EncoderDecoderConfig {
        n_source_tokens: 7,
        n_target_tokens,
        d_embedding: 5,
        d_encoder: 3,
        encoder_layers: 1,
        decoder_layers: 1,
        post_attention_layers: 0,
        attention,
        dropout: 0.0,
    }
}

/// Two models that differ in weights, attention score and depth (the second with a
/// post-attention layer), sharing 6 target tokens.
fn two_models() -> (EncoderDecoder, EncoderDecoder) {
    let device = padless::default_device();
    let a = config(AttentionKind::Dot { scaled: true }, 6)
        .init(&device)
        .unwrap();
    let b = EncoderDecoderConfig {
        encoder_layers: 2,
        decoder_layers: 2,
        post_attention_layers: 1,
        ..config(AttentionKind::General, 6)
    }
    .init(&device)
    .unwrap();
    (a, b)
}

fn sources() -> Vec<Vec<i64>> {
    (0..9)
        .map(|r| {
            (0..1 + r % 4)
                .map(|t| 1 + ((r * 5 + t * 3) % 6) as i64)
                .collect()
        })
        .collect()
}

fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let exp: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

#[test]
fn ensemble_scores_are_the_log_of_the_models_mean_probability() {
    let (a, b) = two_models();
    let source = ids(&[&[3, 4, 5], &[6], &[2, 2]], 3);
    let device = padless::default_device();
    let tokens = int_tensor_from(&[1i64, 4, 5], [3], &device);
    let models = [&a, &b];
    let encoded: Vec<_> = models
        .iter()
        .map(|m| m.encode(source.clone()).unwrap())
        .collect();
    let states: Vec<_> = encoded.iter().map(|e| e.states.clone()).collect();
    let (scores, next) = ensemble_scores(&models, tokens.clone(), &states, &encoded).unwrap();
    let scores = f32_vec(scores);
    let mut want = vec![0.0f64; 3 * 6];
    for (model, encoded) in models.iter().zip(&encoded) {
        let (logits, alone) = model
            .step(tokens.clone(), &encoded.states, encoded)
            .unwrap();
        let logits = f32_vec(logits);
        for (row, chunk) in logits.chunks(6).enumerate() {
            for (k, p) in softmax(chunk).into_iter().enumerate() {
                want[row * 6 + k] += p / 2.0;
            }
        }
        // Each model's new states are its own step's: equal up to rounding, as the ensemble
        // runs each model's one-step kernel on one thread and the model alone may split the
        // step's product over two, and gemm's order of summation follows the split.
        let which = if std::ptr::eq(*model, &a) { 0 } else { 1 };
        for (got, own) in next[which].iter().zip(alone) {
            assert_close_to_scale(&f32_vec(got.clone()), &f32_vec(own), 1e-6, "state");
        }
    }
    for (i, (&got, &p)) in scores.iter().zip(&want).enumerate() {
        assert!(
            (got as f64 - p.ln()).abs() < 1e-5,
            "score {i}: {got} against ln {p} = {}",
            p.ln()
        );
    }
    // One model's scores are its logits.
    let (alone, _) = ensemble_scores(&[&a], tokens.clone(), &states[..1], &encoded[..1]).unwrap();
    let (logits, _) = a.step(tokens, &encoded[0].states, &encoded[0]).unwrap();
    assert_eq!(f32_vec(alone), f32_vec(logits));
}

/// Teacher forcing each model on BOS + the ensemble's output must make the models' mean
/// probability pick those tokens (among EOS and up), then EOS where the row ended.
#[test]
fn greedy_ensemble_picks_the_most_likely_token_of_the_mean_at_every_step() {
    let (a, b) = two_models();
    let sources = sources();
    let rows: Vec<&[i64]> = sources.iter().map(Vec::as_slice).collect();
    let max_len = 7;
    let decoded = greedy_decode_ensemble(&[&a, &b], ids(&rows, 4), max_len).unwrap();
    for (r, tokens) in decoded.iter().enumerate() {
        let mut input = vec![1i64];
        input.extend(tokens);
        let mut mean = vec![0.0f64; input.len() * 6];
        for model in [&a, &b] {
            let (logits, _) = model
                .forward(ids(&[rows[r]], rows[r].len()), ids(&[&input], input.len()))
                .unwrap();
            for (step, chunk) in f32_vec(logits).chunks(6).enumerate() {
                for (k, p) in softmax(chunk).into_iter().enumerate() {
                    mean[step * 6 + k] += p / 2.0;
                }
            }
        }
        let picked: Vec<i64> = mean
            .chunks(6)
            .map(|step| {
                (EOS as usize..6)
                    .max_by(|&x, &y| step[x].total_cmp(&step[y]))
                    .unwrap() as i64
            })
            .collect();
        let mut want = tokens.clone();
        if tokens.len() < max_len {
            want.push(EOS);
        }
        assert_eq!(picked[..want.len()], want[..], "row {r}");
    }
    // The two models alone do not both decode as the ensemble (else this test checks little).
    let alone_a = greedy_decode(&a, ids(&rows, 4), max_len).unwrap();
    let alone_b = greedy_decode(&b, ids(&rows, 4), max_len).unwrap();
    assert!(
        alone_a != decoded || alone_b != decoded,
        "the ensemble decodes as both of its models"
    );
}

#[test]
fn an_ensemble_row_decodes_the_same_alone_and_in_a_padded_batch() {
    let (a, b) = two_models();
    let models = [&a, &b];
    let batch = ids(&[&[3, 4, 5, 6, 2], &[6, 1]], 5);
    let alone = ids(&[&[6, 1]], 2);
    let greedy = greedy_decode_ensemble(&models, batch.clone(), 6).unwrap();
    assert_eq!(
        greedy[1],
        greedy_decode_ensemble(&models, alone.clone(), 6).unwrap()[0]
    );
    let beam = beam_decode_ensemble(&models, batch.clone(), 3, 6).unwrap();
    assert_eq!(
        beam[1],
        beam_decode_ensemble(&models, alone, 3, 6).unwrap()[0]
    );
    // Beam 1 is greedy, for an ensemble too.
    assert_eq!(beam_decode_ensemble(&models, batch, 1, 6).unwrap(), greedy);
}

/// An ensemble of one model, or of the same model twice (the mean of equal probabilities),
/// decodes exactly as the model alone.
#[test]
fn an_ensemble_of_one_model_or_of_copies_decodes_as_the_model() {
    let (a, _) = two_models();
    let sources = sources();
    let rows: Vec<&[i64]> = sources.iter().map(Vec::as_slice).collect();
    let source = ids(&rows, 4);
    let greedy = greedy_decode(&a, source.clone(), 7).unwrap();
    assert_eq!(
        greedy_decode_ensemble(&[&a], source.clone(), 7).unwrap(),
        greedy
    );
    assert_eq!(
        greedy_decode_ensemble(&[&a, &a], source.clone(), 7).unwrap(),
        greedy
    );
    let beam = beam_decode(&a, source.clone(), 3, 7).unwrap();
    assert_eq!(beam_decode_ensemble(&[&a, &a], source, 3, 7).unwrap(), beam);
}

#[test]
fn an_empty_ensemble_or_models_with_different_targets_are_clear_errors() {
    let device = padless::default_device();
    let (a, _) = two_models();
    let source = ids(&[&[3, 4]], 2);
    let err = greedy_decode_ensemble::<EncoderDecoder>(&[], source.clone(), 4).unwrap_err();
    assert!(err.to_string().contains("at least one model"), "{err}");
    let other = config(AttentionKind::General, 9).init(&device).unwrap();
    let err = beam_decode_ensemble(&[&a, &other], source.clone(), 2, 4).unwrap_err();
    assert!(
        err.to_string().contains("model 0 has 6, model 1 has 9"),
        "{err}"
    );
    let err = greedy_decode_ensemble(&[&a, &other], source.clone(), 4).unwrap_err();
    assert!(err.to_string().contains("same target tokens"), "{err}");
    let letters = EncoderDecoderConfig {
        n_source_tokens: 8,
        ..config(AttentionKind::General, 6)
    }
    .init(&device)
    .unwrap();
    let err = greedy_decode_ensemble(&[&a, &letters], source, 4).unwrap_err();
    assert!(
        err.to_string()
            .contains("same source tokens: model 0 has 7, model 1 has 8"),
        "{err}"
    );
}

/// With two kernel threads the models of an ensemble run side by side, each on its own
/// thread with one-thread kernels; with one they run one after the other. Same tokens.
#[test]
fn models_side_by_side_decode_as_one_after_the_other() {
    let (a, b) = two_models();
    let models = [&a, &b, &a];
    let sources = sources();
    let rows: Vec<&[i64]> = sources.iter().map(Vec::as_slice).collect();
    let source = ids(&rows, 4);
    let run = |threads: usize| {
        with_threads(threads, || {
            assert_eq!(cpu::threads(), threads);
            (
                greedy_decode_ensemble(&models, source.clone(), 7).unwrap(),
                beam_decode_ensemble(&models, source.clone(), 2, 7).unwrap(),
            )
        })
    };
    assert_eq!(run(2), run(1));
}

#[test]
fn the_kernel_threads_and_composite_switch_of_a_thread_are_restored_after_a_panic() {
    let outside = cpu::threads();
    let nested = with_threads(1, || {
        assert_eq!(cpu::threads(), 1);
        with_threads(2, cpu::threads)
    });
    assert_eq!(nested, 2);
    assert_eq!(cpu::threads(), outside);
    let panicked = std::panic::catch_unwind(|| with_threads(1, || panic!("inside")));
    assert!(panicked.is_err());
    assert_eq!(cpu::threads(), outside);
    // The composite switch too: after a panic inside, this thread runs fused again.
    assert!(fused_enabled());
    let panicked = std::panic::catch_unwind(|| {
        with_composite(|| {
            assert!(!fused_enabled());
            panic!("inside")
        })
    });
    assert!(panicked.is_err());
    assert!(fused_enabled());
}

/// `side_by_side` returns both results in order, gives each side one-thread kernels when two
/// are allowed here (else runs them one after the other as they are), and keeps the caller's
/// composite switch on both threads.
#[test]
fn side_by_side_keeps_order_kernel_threads_and_the_composite_switch() {
    let seen = || (cpu::threads(), fused_enabled());
    let (a, b) = side_by_side(seen, seen);
    let expected = if cpu::threads() >= 2 {
        (1, true)
    } else {
        (cpu::threads(), true)
    };
    assert_eq!((a, b), (expected, expected));
    let (a, b) = with_composite(|| side_by_side(seen, seen));
    assert_eq!((a.1, b.1), (false, false));
    let (a, b) = with_threads(1, || side_by_side(|| 1, seen));
    assert_eq!((a, b), (1, (1, true)));
    assert_eq!(side_by_side(|| "first", || "second"), ("first", "second"));
}

/// An error in one model's work (ids out of range), on either thread, is the ensemble's.
#[test]
fn an_error_of_any_model_is_the_ensembles() {
    let (a, b) = two_models();
    let err = greedy_decode_ensemble(&[&a, &b], ids(&[&[3, 9]], 2), 4).unwrap_err();
    assert!(err.to_string().contains('9'), "{err}");
}
