//! Rescoring: `sequence_log_probs` is the sum of the per-step log-softmaxes that the model's
//! own `step` gives the sequence and its end symbol (float64 reference), the same for a row
//! alone and in a padded batch; `beam_decode_n_best` lists its candidates best first, its
//! first is `beam_decode`'s pick, and a one-model beam's scores are the candidates' own
//! log-probabilities; greedy decoding's own scores are each model's teacher-forced score of
//! the output (none for a row that did not end); the `_encoded` variants, fed rows selected from one encoder result,
//! equal the plain functions on those rows' sources; bad input is a clear error.

use padless::seq2seq::{
    AttentionKind, BOS, EOS, EncoderDecoder, EncoderDecoderConfig, beam_decode,
    beam_decode_ensemble, beam_decode_n_best, beam_decode_n_best_encoded, greedy_decode_encoded,
    greedy_decode_ensemble, greedy_decode_scored, sequence_log_probs, sequence_log_probs_encoded,
};
use padless::tensor_util::{f32_vec, int_tensor_from};

mod common;
use common::ids;

/// A model drawn from the device's generator (the tests of this binary run on parallel
/// threads, so the draws interleave: every assertion here holds for any weights).
fn make_model(seed: u64, attention: AttentionKind) -> EncoderDecoder {
    let device = padless::default_device();
    device.seed(seed);
    EncoderDecoderConfig {
        n_source_tokens: 7,
        n_target_tokens: 6,
        d_embedding: 5,
        d_encoder: 4,
        encoder_layers: 1,
        decoder_layers: 1,
        post_attention_layers: 0,
        attention,
        dropout: 0.0,
    }
    .init(&device)
    .unwrap()
}

/// `model` with the end symbol's output bias lowered by `shift`: its beams end late or not
/// within a few steps, so each row keeps several open candidates.
fn with_late_end(mut model: EncoderDecoder, shift: f32) -> EncoderDecoder {
    let mut weights = model.weights();
    let bias = weights
        .iter_mut()
        .find(|w| w.name == "output/bias")
        .expect("the output layer's bias");
    bias.values[EOS as usize] -= shift;
    model.set_weights(&weights).unwrap();
    model
}

/// `log p(sequence EOS | source row)` from the model's own steps, one row at a time, in f64.
fn reference(model: &EncoderDecoder, source: &[i64], sequence: &[i64]) -> f64 {
    reference_of(model, source, sequence, true)
}

/// [`reference`], with the end symbol's term only when `ended`.
fn reference_of(model: &EncoderDecoder, source: &[i64], sequence: &[i64], ended: bool) -> f64 {
    let device = padless::default_device();
    let source = ids(&[source], source.len());
    let encoded = model.encode(source).unwrap();
    let mut states = encoded.states.clone();
    let mut previous = BOS;
    let mut total = 0.0;
    let end = ended.then_some(&EOS);
    for &next in sequence.iter().chain(end) {
        let (logits, after) = model
            .step(
                int_tensor_from(&[previous], [1], &device),
                &states,
                &encoded,
            )
            .unwrap();
        let logits: Vec<f64> = f32_vec(logits).iter().map(|&v| v as f64).collect();
        let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let log_sum = max + logits.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        total += logits[next as usize] - log_sum;
        states = after;
        previous = next;
    }
    total
}

#[test]
fn sequence_log_probs_sum_the_models_own_step_log_probabilities() {
    let model = make_model(3, AttentionKind::Dot { scaled: true });
    let rows: [&[i64]; 4] = [&[3, 4, 5], &[6], &[2, 2], &[1, 5, 6, 3]];
    let sequences = vec![vec![3, 4], vec![], vec![5, 5, 5, 3], vec![4]];
    let source = ids(&rows, 4);
    let got = sequence_log_probs(&model, source, &sequences).unwrap();
    for ((row, sequence), got) in rows.iter().zip(&sequences).zip(&got) {
        let want = reference(&model, row, sequence);
        assert!(
            (*got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "{row:?} -> {sequence:?}: {got} vs {want}"
        );
        assert!(*got < 0.0);
    }
    // Alone (no padding, no longer sequence beside it) it scores the same.
    let alone = sequence_log_probs(&model, ids(&[rows[1]], 1), &sequences[1..2]).unwrap();
    assert!((alone[0] - got[1]).abs() <= 1e-5 * (1.0 + got[1].abs()));
}

#[test]
fn n_best_lists_are_sorted_start_with_the_beams_pick_and_score_their_candidates() {
    let rows: [&[i64]; 3] = [&[3, 4, 5, 1], &[6, 2], &[2]];
    let source = ids(&rows, 4);
    let (width, max_len) = (3, 6);
    // A model as drawn (its beams may end at once) and one that rarely emits the end symbol
    // (its rows keep `width` open candidates, scored without an end term).
    let drawn = make_model(5, AttentionKind::General);
    let late = with_late_end(make_model(7, AttentionKind::Dot { scaled: false }), 4.0);
    for (model, must_branch) in [(&drawn, false), (&late, true)] {
        let n_best = beam_decode_n_best(&[model], source.clone(), width, max_len).unwrap();
        let best = beam_decode(model, source.clone(), width, max_len).unwrap();
        assert_eq!(n_best.len(), 3);
        if must_branch {
            assert!(n_best.iter().any(|list| list.len() > 1), "{n_best:?}");
        }
        for ((list, best), row) in n_best.iter().zip(&best).zip(rows) {
            assert!(!list.is_empty() && list.len() <= width);
            assert_eq!(&list[0].1, best);
            assert!(list.windows(2).all(|w| w[0].0 >= w[1].0), "{list:?}");
            for (score, hypothesis) in list {
                // An ended hypothesis (shorter than `max_len`) scores its end symbol too: the
                // model's own log-probability; an open one stops at `max_len` tokens.
                let ended = hypothesis.len() < max_len;
                let want = reference_of(model, row, hypothesis, ended);
                assert!(
                    (*score as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{row:?}: {hypothesis:?} beam {score} vs {want}"
                );
            }
        }
    }
    // Two models: the first candidate is still the ensemble beam's pick.
    let models = [&drawn, &late];
    let lists = beam_decode_n_best(&models, source.clone(), width, max_len).unwrap();
    let picks = beam_decode_ensemble(&models, source, width, max_len).unwrap();
    for (list, pick) in lists.iter().zip(&picks) {
        assert_eq!(&list[0].1, pick);
    }
}

#[test]
fn bad_sequences_are_clear_errors() {
    let model = make_model(1, AttentionKind::Dot { scaled: true });
    let source = ids(&[&[1, 2], &[3]], 2);
    let err = sequence_log_probs(&model, source.clone(), &[vec![3]])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("one sequence per source row (2), found 1"),
        "{err}"
    );
    let err = sequence_log_probs(&model, source.clone(), &[vec![3], vec![4, EOS]])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sequence 1") && err.contains("found 2"),
        "{err}"
    );
    let err = sequence_log_probs(&model, source, &[vec![6], vec![]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("3..6, found 6"), "{err}");
}

#[test]
fn encoded_variants_on_selected_rows_equal_the_plain_functions_on_those_rows() {
    let device = padless::default_device();
    let a = make_model(11, AttentionKind::Dot { scaled: false });
    let b = with_late_end(make_model(13, AttentionKind::General), 1.0);
    let rows: [&[i64]; 4] = [&[3, 4, 5, 1], &[6], &[2, 2, 6], &[5, 1]];
    let source = ids(&rows, 4);
    // Rows 2, 0, 0, 3 of the batch's encoder results (one repeated, one left out): the
    // shortest row's padding (t_source 4) stays masked after the selection.
    let picked = [2i64, 0, 0, 3];
    let index = int_tensor_from(&picked, [4], &device);
    let picked_rows: Vec<&[i64]> = picked.iter().map(|&r| rows[r as usize]).collect();
    let picked_source = ids(&picked_rows, 4);
    let models = [&a, &b];
    let encoded: Vec<_> = models
        .iter()
        .map(|m| m.encode(source.clone()).unwrap().select_rows(&index))
        .collect();
    let (max_len, width) = (5, 3);
    assert_eq!(
        greedy_decode_encoded(&models, encoded.clone(), max_len).unwrap(),
        greedy_decode_ensemble(&models, picked_source.clone(), max_len).unwrap()
    );
    let from_encoded =
        beam_decode_n_best_encoded(&models, encoded.clone(), width, max_len).unwrap();
    let plain = beam_decode_n_best(&models, picked_source.clone(), width, max_len).unwrap();
    for (x, y) in from_encoded.iter().zip(&plain) {
        assert_eq!(x.len(), y.len());
        for ((sx, hx), (sy, hy)) in x.iter().zip(y) {
            assert_eq!(hx, hy);
            assert!((sx - sy).abs() <= 1e-5 * (1.0 + sy.abs()), "{sx} vs {sy}");
        }
    }
    let sequences = vec![vec![3, 4], vec![], vec![5], vec![4, 4, 3]];
    for (model, encoded) in models.iter().zip(&encoded) {
        let got = sequence_log_probs_encoded(model, encoded, &sequences).unwrap();
        let want = sequence_log_probs(model, picked_source.clone(), &sequences).unwrap();
        for ((g, w), (row, sequence)) in got
            .iter()
            .zip(&want)
            .zip(picked_rows.iter().zip(&sequences))
        {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
            let exact = reference(model, row, sequence);
            assert!((*g as f64 - exact).abs() <= 1e-4 * (1.0 + exact.abs()));
        }
    }
    // One encoder result per model, all of the same rows.
    let err = greedy_decode_encoded(&models, encoded[..1].to_vec(), max_len)
        .unwrap_err()
        .to_string();
    assert!(err.contains("each of the 2 models, found 1"), "{err}");
    let short = a.encode(ids(&rows[..3], 4)).unwrap();
    let err = beam_decode_n_best_encoded(&models, vec![encoded[0].clone(), short], width, max_len)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model 0's has 4, model 1's has 3"), "{err}");
    let err = sequence_log_probs_encoded(&a, &encoded[0], &sequences[..2])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("one sequence per source row (4), found 2"),
        "{err}"
    );
}

#[test]
fn greedy_scores_are_each_models_own_score_of_the_output_and_none_where_no_end() {
    let rows: [&[i64]; 3] = [&[3, 4, 5, 1], &[6, 2], &[2]];
    let source = ids(&rows, 4);
    let max_len = 4;
    let drawn = make_model(17, AttentionKind::Dot { scaled: true });
    // Lowered by 30 the end symbol never wins within `max_len` steps.
    let never_ends = with_late_end(make_model(19, AttentionKind::General), 30.0);
    // Raised by 6 it wins at once (a score of the end symbol alone); beside `drawn` the
    // ensemble's rows end early too, and each model scores them its own way.
    let ends_early = with_late_end(make_model(23, AttentionKind::General), -6.0);
    for models in [vec![&drawn], vec![&ends_early, &drawn], vec![&never_ends]] {
        let encoded: Vec<_> = models
            .iter()
            .map(|m| m.encode(source.clone()).unwrap())
            .collect();
        let (tokens, scores) = greedy_decode_scored(&models, encoded.clone(), max_len).unwrap();
        assert_eq!(
            tokens,
            greedy_decode_ensemble(&models, source.clone(), max_len).unwrap()
        );
        assert_eq!(scores.len(), models.len());
        for ((model, encoded), scores) in models.iter().zip(&encoded).zip(&scores) {
            let teacher_forced = sequence_log_probs_encoded(model, encoded, &tokens).unwrap();
            for ((score, want), (row, ids)) in scores
                .iter()
                .zip(&teacher_forced)
                .zip(rows.iter().zip(&tokens))
            {
                if ids.len() == max_len {
                    // No end symbol within `max_len` tokens: nothing to score by the steps.
                    assert_eq!(*score, None, "{row:?} -> {ids:?}");
                } else {
                    let score = score.expect("an ended row has its score");
                    assert!(
                        (score - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{row:?} -> {ids:?}: {score} vs {want}"
                    );
                }
            }
        }
        if std::ptr::eq(models[0], &never_ends) {
            assert!(scores[0].iter().all(Option::is_none), "{tokens:?}");
        } else if std::ptr::eq(models[0], &ends_early) {
            assert!(scores.iter().flatten().all(Option::is_some), "{tokens:?}");
        }
    }
}
