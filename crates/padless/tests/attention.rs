//! Attention against float64 numpy references (`fixtures/make_attention_reference.py`), the
//! safe softmax, and the encoder-decoder's masking and decoding.

use burn::tensor::{Tensor, TensorData};
use padless::Mask;
use padless::seq2seq::{
    Attention, AttentionKind, AttentionMasks, EncoderDecoderConfig, MultiHeadAttention,
    beam_decode, greedy_decode, masked_softmax, pad_decoded,
};
use padless::tensor_util::{f32_vec, tensor_from};
use padless::weights::NamedWeight;

mod common;
use common::{ids, values};
use serde_json::Value as Json;

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

#[test]
fn attention_matches_numpy_for_every_kind_and_mask() {
    let text = include_str!("fixtures/attention_reference.json");
    let fixture: Json = serde_json::from_str(text).unwrap();
    let device = padless::default_device();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let name = format!("{} / {}", case["kind"], case["mask_name"]);
        let s: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let (b, tq, tk, dq, dk, dv, da) = (s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
        let kind = match case["kind"].as_str().unwrap() {
            "dot" => AttentionKind::Dot { scaled: false },
            "scaled_dot" => AttentionKind::Dot { scaled: true },
            "general" => AttentionKind::General,
            _ => AttentionKind::Additive { d_attention: da },
        };
        let mut attention = Attention::new(kind, dq, dk, &device).unwrap();
        let params: Vec<NamedWeight> = case["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, values)| NamedWeight {
                name: name.clone(),
                shape: match name.as_str() {
                    "query_kernel" if da > 0 && matches!(kind, AttentionKind::Additive { .. }) => {
                        vec![dq, da]
                    }
                    "query_kernel" => vec![dq, dk],
                    "key_kernel" => vec![dk, da],
                    _ => vec![da],
                },
                values: floats(values),
            })
            .collect();
        attention.set_weights(&params).unwrap();
        let mask = case["mask"].as_array().map(|m| {
            let bools: Vec<bool> = m.iter().map(|x| x.as_i64().unwrap() == 1).collect();
            Mask::from_bools(&bools, b, tk, &device).unwrap()
        });
        let out = attention
            .forward(
                tensor_from(&floats(&case["query"]), [b, tq, dq], &device),
                tensor_from(&floats(&case["keys"]), [b, tk, dk], &device),
                tensor_from(&floats(&case["values"]), [b, tk, dv], &device),
                mask.as_ref(),
            )
            .unwrap();
        assert_close(
            &format!("{name} weights"),
            &f32_vec(out.weights),
            &floats(&case["weights"]),
            1e-5,
        );
        assert_close(
            &format!("{name} context"),
            &f32_vec(out.context),
            &floats(&case["context"]),
            1e-5,
        );
    }
}

#[test]
fn masked_softmax_gives_zeros_for_a_fully_masked_row_and_ignores_nan_at_masked_keys() {
    let device = padless::training_device();
    let scores = tensor_from(
        &[1.0, f32::NAN, 3.0, f32::INFINITY, -2.0, f32::NAN],
        [2, 1, 3],
        &device,
    )
    .require_grad();
    let mask = Mask::from_bools(&[true, false, true, false, false, false], 2, 3, &device).unwrap();
    let weights = masked_softmax(scores.clone(), Some(&mask));
    let got = f32_vec(weights.clone());
    let e = (-2.0f32).exp();
    assert_close(
        "row 0",
        &got[..3],
        &[e / (1.0 + e), 0.0, 1.0 / (1.0 + e)],
        1e-6,
    );
    assert_eq!(&got[3..], &[0.0, 0.0, 0.0], "a fully masked row is all 0");
    let grads = (weights * tensor_from(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 1, 3], &device))
        .sum()
        .backward();
    let g = f32_vec(scores.grad(&grads).unwrap());
    assert!(g.iter().all(|x| x.is_finite()), "gradient {g:?}");
    assert_eq!((g[1], g[3], g[4], g[5]), (0.0, 0.0, 0.0, 0.0));
    // d/ds0 of (w0 * 1 + w2 * 3) = w0 (1 - (w0 + 3 w2)).
    let (w0, w2) = (got[0], got[2]);
    assert_close("d s0", &[g[0]], &[w0 * (1.0 - (w0 + 3.0 * w2))], 1e-5);
}

/// Query mask, causal mask and key mask together, for every kind: each valid query step's
/// context and weights equal a separate call that sees only the keys left to it (the causal
/// prefix, AND the key mask) through the key-masked path the numpy fixtures check; masked
/// query steps get zero weights and exactly 0 context, their queries get no gradient, and
/// the output mask is the query mask.
#[test]
fn query_and_causal_masks_leave_each_query_step_its_own_keys() {
    let device = padless::training_device();
    let (b, t, d) = (3, 5, 4);
    let key_valid = [
        [true, true, false, true, true],
        [false, true, true, true, false],
        [true; 5],
    ];
    let query_valid = [
        [true, false, true, true, true],
        [true, true, true, false, false],
        [false; 5],
    ];
    let key_mask = Mask::from_bools(&key_valid.concat(), b, t, &device).unwrap();
    let query_mask = Mask::from_bools(&query_valid.concat(), b, t, &device).unwrap();
    for kind in [
        AttentionKind::Dot { scaled: true },
        AttentionKind::General,
        AttentionKind::Additive { d_attention: 3 },
    ] {
        let attention = Attention::new(kind, d, d, &device).unwrap();
        let mut query_values = values(b * t * d, 1, 1.0);
        query_values[(2 * t + 1) * d] = f32::NAN; // a masked query step
        let query = tensor_from(&query_values, [b, t, d], &device).require_grad();
        let mut value_values = values(b * t * d, 2, 1.0);
        value_values[t * d] = f32::NAN; // a masked key's value
        let keys = tensor_from(&values(b * t * d, 3, 1.0), [b, t, d], &device).require_grad();
        let values = tensor_from(&value_values, [b, t, d], &device);
        let out = attention
            .forward_masked(
                query.clone(),
                keys.clone(),
                values.clone(),
                AttentionMasks {
                    query: Some(&query_mask),
                    keys: Some(&key_mask),
                    causal: true,
                },
            )
            .unwrap();
        assert_eq!(out.mask.as_ref().unwrap().to_vec(), query_mask.to_vec());
        let (context, weights) = (f32_vec(out.context.clone()), f32_vec(out.weights.clone()));
        for (row, valid) in query_valid.iter().enumerate() {
            for (i, &valid) in valid.iter().enumerate() {
                let at = (row * t + i) * d;
                let w_at = (row * t + i) * t;
                if !valid {
                    assert!(context[at..at + d].iter().all(|&v| v == 0.0), "{kind:?}");
                    assert!(
                        weights[w_at..w_at + t].iter().all(|&v| v == 0.0),
                        "{kind:?}"
                    );
                    continue;
                }
                // The keys query step i may see: valid keys at steps <= i.
                let seen: Vec<bool> = (0..t).map(|j| j <= i && key_valid[row][j]).collect();
                let one = |x: &Tensor<3>, s: usize| x.clone().slice([row..row + 1, s..s + 1]);
                let alone = attention
                    .forward(
                        one(&query, i),
                        keys.clone().slice([row..row + 1, 0..t]),
                        values.clone().slice([row..row + 1, 0..t]),
                        Some(&Mask::from_bools(&seen, 1, t, &device).unwrap()),
                    )
                    .unwrap();
                let what = format!("{kind:?} row {row} step {i}");
                assert_close(&what, &context[at..at + d], &f32_vec(alone.context), 1e-5);
                assert_close(
                    &what,
                    &weights[w_at..w_at + t],
                    &f32_vec(alone.weights),
                    1e-5,
                );
                for j in (0..t).filter(|&j| !seen[j]) {
                    assert_eq!(weights[w_at + j], 0.0, "{what}: key {j}");
                }
            }
        }
        let grads = out.context.sum().backward();
        let g_keys = f32_vec(keys.grad(&grads).unwrap());
        assert!(
            g_keys.iter().all(|v| v.is_finite()),
            "{kind:?}: NaN query reached keys"
        );
        let g = f32_vec(query.grad(&grads).unwrap());
        assert!(g.iter().all(|v| v.is_finite()), "{kind:?}: gradient {g:?}");
        for (row, valid) in query_valid.iter().enumerate() {
            for i in (0..t).filter(|&i| !valid[i]) {
                let at = (row * t + i) * d;
                assert!(
                    g[at..at + d].iter().all(|&v| v == 0.0),
                    "{kind:?} row {row} step {i}"
                );
            }
        }
    }
}

/// Multi-head attention against its definition computed here head by head through
/// `Attention` (scaled dot, the path checked against numpy): project, attend with the same
/// masks, concatenate, project out, zero masked query steps. Then NaN at every masked query,
/// key and value changes nothing and gets gradient exactly 0.
#[test]
fn multi_head_attention_is_its_heads_and_ignores_masked_steps() {
    let device = padless::training_device();
    let (b, tq, tk, dq, dk, dv, heads, dh, d_out) = (2, 4, 5, 3, 4, 2, 2, 3, 3);
    let inner = heads * dh;
    let mut mha = MultiHeadAttention::new(heads, dh, [dq, dk, dv, d_out], &device).unwrap();
    let shapes = [
        ("query_kernel", vec![dq, inner]),
        ("query_bias", vec![inner]),
        ("key_kernel", vec![dk, inner]),
        ("key_bias", vec![inner]),
        ("value_kernel", vec![dv, inner]),
        ("value_bias", vec![inner]),
        ("output_kernel", vec![inner, d_out]),
        ("output_bias", vec![d_out]),
    ];
    let weights: Vec<NamedWeight> = shapes
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| NamedWeight {
            name: name.to_string(),
            shape: shape.clone(),
            values: values(shape.iter().product(), 10 + i as u64, 1.0),
        })
        .collect();
    mha.set_weights(&weights).unwrap();
    let w = |i: usize| -> Vec<f32> { weights[i].values.clone() };
    let query_valid = [[true, true, false, true], [true, false, false, false]];
    let key_valid = [
        [true, false, true, true, false],
        [false, true, true, true, true],
    ];
    let query_mask = Mask::from_bools(&query_valid.concat(), b, tq, &device).unwrap();
    let key_mask = Mask::from_bools(&key_valid.concat(), b, tk, &device).unwrap();
    let masks = AttentionMasks {
        query: Some(&query_mask),
        keys: Some(&key_mask),
        causal: true,
    };
    let (q_raw, k_raw, v_raw) = (
        values(b * tq * dq, 5, 1.0),
        values(b * tk * dk, 6, 1.0),
        values(b * tk * dv, 7, 1.0),
    );
    let query = tensor_from(&q_raw, [b, tq, dq], &device);
    let keys = tensor_from(&k_raw, [b, tk, dk], &device);
    let values = tensor_from(&v_raw, [b, tk, dv], &device);
    let out = mha
        .forward_masked(query.clone(), keys.clone(), values.clone(), masks)
        .unwrap();
    assert_eq!(out.weights.dims(), [b, heads, tq, tk]);

    // The definition, head by head.
    let project = |x: &Tensor<3>, kernel: Vec<f32>, bias: Vec<f32>, d: usize, h: usize| {
        let [bb, t, _] = x.dims();
        let k = tensor_from(&kernel, [d, inner], &device).slice([0..d, h * dh..(h + 1) * dh]);
        let bias = tensor_from(&bias, [1, inner], &device).slice([0..1, h * dh..(h + 1) * dh]);
        (x.clone().reshape([bb * t, d]).matmul(k) + bias).reshape([bb, t, dh])
    };
    let single = Attention::new(AttentionKind::Dot { scaled: true }, dh, dh, &device).unwrap();
    let mut contexts = Vec::new();
    let mut head_weights = Vec::new();
    for h in 0..heads {
        let r = single
            .forward_masked(
                project(&query, w(0), w(1), dq, h),
                project(&keys, w(2), w(3), dk, h),
                project(&values, w(4), w(5), dv, h),
                masks,
            )
            .unwrap();
        contexts.push(r.context);
        head_weights.push(r.weights.unsqueeze_dim::<4>(1));
    }
    let concat = Tensor::cat(contexts, 2).reshape([b * tq, inner]);
    let expected = (concat.matmul(tensor_from(&w(6), [inner, d_out], &device))
        + tensor_from(&w(7), [1, d_out], &device))
    .reshape([b, tq, d_out]);
    // Steps that see no key output 0: masked query steps, and row 1's step 0 (causal: key 0
    // only, which is masked).
    let mut sees_nothing: Vec<bool> = query_valid.concat().iter().map(|v| !v).collect();
    sees_nothing[tq] = true;
    let expected = expected.mask_fill(
        Mask::from_bools(&sees_nothing, b, tq, &device)
            .unwrap()
            .valid()
            .unsqueeze_dim::<3>(2)
            .expand([b, tq, d_out]),
        0.0,
    );
    let got = f32_vec(out.output.clone());
    assert_close("output", &got, &f32_vec(expected), 1e-5);
    assert_close(
        "weights",
        &f32_vec(out.weights),
        &f32_vec(Tensor::cat(head_weights, 1)),
        1e-5,
    );
    for (step, _) in sees_nothing.iter().enumerate().filter(|(_, s)| **s) {
        assert!(
            got[step * d_out..(step + 1) * d_out]
                .iter()
                .all(|&v| v == 0.0)
        );
    }

    // NaN at every masked query, key and value step: the same output, finite gradients,
    // exactly 0 at the masked steps.
    let poison = |raw: &[f32], valid: &[bool], d: usize| -> Vec<f32> {
        raw.chunks(d)
            .zip(valid)
            .flat_map(|(c, &ok)| if ok { c.to_vec() } else { vec![f32::NAN; d] })
            .collect()
    };
    let query = tensor_from(
        &poison(&q_raw, &query_valid.concat(), dq),
        [b, tq, dq],
        &device,
    )
    .require_grad();
    let keys = tensor_from(
        &poison(&k_raw, &key_valid.concat(), dk),
        [b, tk, dk],
        &device,
    )
    .require_grad();
    let values = tensor_from(
        &poison(&v_raw, &key_valid.concat(), dv),
        [b, tk, dv],
        &device,
    )
    .require_grad();
    let poisoned = mha
        .forward_masked(query.clone(), keys.clone(), values.clone(), masks)
        .unwrap();
    assert_close(
        "poisoned output",
        &f32_vec(poisoned.output.clone()),
        &got,
        1e-6,
    );
    let grads = poisoned.output.sum().backward();
    for (what, x, valid, d) in [
        ("query", &query, query_valid.concat(), dq),
        ("keys", &keys, key_valid.concat(), dk),
        ("values", &values, key_valid.concat(), dv),
    ] {
        let g = f32_vec(x.grad(&grads).unwrap());
        assert!(g.iter().all(|v| v.is_finite()), "{what}: {g:?}");
        for (step, ok) in valid.iter().enumerate() {
            if !ok {
                assert!(
                    g[step * d..(step + 1) * d].iter().all(|&v| v == 0.0),
                    "{what} {step}"
                );
            }
        }
    }
    let wrong = mha.forward_masked(
        tensor_from(&q_raw[..b * tq * 2], [b, tq, 2], &device),
        keys.clone(),
        values.clone(),
        masks,
    );
    assert!(wrong.unwrap_err().to_string().contains("expected query"));
}

#[test]
fn a_causal_mask_alone_lets_step_i_see_steps_up_to_i() {
    let device = padless::default_device();
    let attention = Attention::new(AttentionKind::Dot { scaled: false }, 2, 2, &device).unwrap();
    let x = tensor_from(&values(2 * 3 * 2, 4, 1.0), [2, 3, 2], &device);
    let out = attention
        .forward_masked(
            x.clone(),
            x.clone(),
            x,
            AttentionMasks {
                causal: true,
                ..AttentionMasks::default()
            },
        )
        .unwrap();
    assert!(out.mask.is_none());
    let w = f32_vec(out.weights);
    for row in 0..2 {
        for i in 0..3 {
            let r = &w[(row * 3 + i) * 3..(row * 3 + i + 1) * 3];
            assert_close("row sum", &[r.iter().sum()], &[1.0], 1e-6);
            assert!(r[i + 1..].iter().all(|&v| v == 0.0), "step {i}: {r:?}");
        }
    }
    // Step 0 sees only itself.
    assert_close("step 0", &w[..3], &[1.0, 0.0, 0.0], 1e-6);
}

#[test]
fn dot_attention_rejects_sizes_that_do_not_fit() {
    let device = padless::default_device();
    let err = Attention::new(AttentionKind::Dot { scaled: false }, 4, 6, &device).unwrap_err();
    assert!(err.to_string().contains("4 and 6"), "{err}");
    let general = Attention::new(AttentionKind::General, 4, 6, &device).unwrap();
    let err = general
        .forward(
            Tensor::zeros([1, 2, 5], &device),
            Tensor::zeros([1, 3, 6], &device),
            Tensor::zeros([1, 3, 2], &device),
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("query features 4"), "{err}");
}

fn small_config(attention: AttentionKind) -> EncoderDecoderConfig {
    EncoderDecoderConfig {
        n_source_tokens: 7,
        n_target_tokens: 8,
        d_embedding: 5,
        d_encoder: 3,
        encoder_layers: 2,
        decoder_layers: 1,
        post_attention_layers: 0,
        attention,
        dropout: 0.0,
    }
}

#[test]
fn encoder_decoder_logits_do_not_depend_on_padding() {
    let device = padless::default_device();
    // Every score `padless g2p train --attention` offers, a decoder of two layers and a
    // post-attention layer.
    for (kind, decoder_layers, post_attention_layers) in [
        (AttentionKind::Dot { scaled: false }, 1, 0),
        (AttentionKind::Dot { scaled: true }, 1, 0),
        (AttentionKind::General, 1, 0),
        (AttentionKind::Additive { d_attention: 4 }, 1, 0),
        (AttentionKind::General, 2, 0),
        (AttentionKind::Dot { scaled: true }, 1, 2),
    ] {
        let config = EncoderDecoderConfig {
            decoder_layers,
            post_attention_layers,
            ..small_config(kind)
        };
        let model = config.init(&device).unwrap();
        let source: [&[i64]; 2] = [&[3, 4, 5], &[6]];
        let decoder_input: [&[i64]; 2] = [&[1, 3, 4, 7], &[1, 5]];
        let (short, _) = model
            .forward(ids(&source, 3), ids(&decoder_input, 4))
            .unwrap();
        let (long, mask) = model
            .forward(ids(&source, 7), ids(&decoder_input, 6))
            .unwrap();
        let short = f32_vec(short);
        let long = f32_vec(long);
        let mask = mask.unwrap().to_vec();
        for (row, length) in [(0, 4), (1, 2)] {
            for t in 0..length {
                assert!(mask[row * 6 + t]);
                let a = &short[(row * 4 + t) * 8..][..8];
                let b = &long[(row * 6 + t) * 8..][..8];
                let what = format!(
                    "{kind:?}, {decoder_layers} decoder + {post_attention_layers} post-attention layers: row {row} step {t}"
                );
                assert_close(&what, a, b, 1e-5);
            }
            assert!(!mask[row * 6 + length]);
        }
    }
}

/// The decoder's attention skips zeroing the encoder outputs at padded source steps on every
/// step because `Encoded::keys` is exactly 0 there: pin that.
#[test]
fn encoded_keys_are_exactly_zero_at_padded_source_steps() {
    let device = padless::default_device();
    let model = small_config(AttentionKind::General).init(&device).unwrap();
    let encoded = model.encode(ids(&[&[3, 4, 5], &[6], &[2, 2]], 5)).unwrap();
    let keys = f32_vec(encoded.keys.clone());
    let mask = encoded.mask.unwrap().to_vec();
    let width = encoded.keys.dims()[2];
    assert_eq!(mask.iter().filter(|&&v| v).count(), 6);
    for (step, valid) in mask.iter().enumerate() {
        let row = &keys[step * width..][..width];
        if *valid {
            assert!(row.iter().any(|&v| v != 0.0), "valid step {step} all zero");
        } else {
            assert!(row.iter().all(|&v| v == 0.0), "padded step {step}: {row:?}");
        }
    }
}

#[test]
fn decoding_is_the_same_alone_and_in_a_padded_batch_and_beam_1_is_greedy() {
    let device = padless::default_device();
    let model = small_config(AttentionKind::General).init(&device).unwrap();
    let batch = ids(&[&[3, 4, 5, 6, 2], &[6, 1]], 5);
    let greedy = greedy_decode(&model, batch.clone(), 6).unwrap();
    let alone = greedy_decode(&model, ids(&[&[6, 1]], 2), 6).unwrap();
    assert_eq!(greedy[1], alone[0]);
    assert_eq!(beam_decode(&model, batch.clone(), 1, 6).unwrap(), greedy);
    let beam = beam_decode(&model, batch, 3, 6).unwrap();
    assert!(
        beam.iter()
            .all(|h| h.len() <= 6 && h.iter().all(|&t| t >= 3))
    );
}

/// Greedy decoding drops rows that have ended from later steps; each row must still get
/// exactly what teacher forcing on its own output predicts, whatever rows end around it. A
/// model with one output symbol besides EOS ends rows at varied steps; models are drawn until
/// one does (the check is that at least one of them did). With two decoder layers, or a
/// post-attention layer, this also holds the one-step decoder (`step`, states per layer) to
/// the teacher-forced one.
#[test]
fn greedy_rows_that_end_early_leave_the_others_unchanged() {
    for (decoder_layers, post_attention_layers) in [(1, 0), (2, 0), (1, 1)] {
        greedy_rows_end_early(decoder_layers, post_attention_layers);
    }
}

fn greedy_rows_end_early(decoder_layers: usize, post_attention_layers: usize) {
    let device = padless::default_device();
    let sources: Vec<Vec<i64>> = (0..12)
        .map(|r| {
            (0..1 + r % 5)
                .map(|t| 1 + ((r * 7 + t * 3) % 6) as i64)
                .collect()
        })
        .collect();
    let rows: Vec<&[i64]> = sources.iter().map(Vec::as_slice).collect();
    let max_len = 8;
    let mut varied = false;
    for _ in 0..20 {
        let config = EncoderDecoderConfig {
            n_target_tokens: 4,
            decoder_layers,
            post_attention_layers,
            ..small_config(AttentionKind::Dot { scaled: true })
        };
        let model = config.init(&device).unwrap();
        let decoded = greedy_decode(&model, ids(&rows, 5), max_len).unwrap();
        for (r, tokens) in decoded.iter().enumerate() {
            // Teacher forcing on BOS + the decoded tokens must pick them, then EOS (if ended).
            let mut input = vec![1i64];
            input.extend(tokens);
            let (logits, _) = model
                .forward(ids(&[rows[r]], rows[r].len()), ids(&[&input], input.len()))
                .unwrap();
            let logits = f32_vec(logits);
            let picked: Vec<i64> = logits
                .chunks(4)
                .map(|step| if step[2] >= step[3] { 2 } else { 3 })
                .collect();
            let mut want = tokens.clone();
            if tokens.len() < max_len {
                want.push(2);
            }
            assert_eq!(
                picked[..want.len()],
                want[..],
                "{decoder_layers} decoder + {post_attention_layers} post-attention layers, row {r}"
            );
        }
        let lengths: std::collections::BTreeSet<usize> = decoded.iter().map(Vec::len).collect();
        if lengths.len() > 2 && lengths.iter().any(|&l| l < max_len) {
            varied = true;
            break;
        }
    }
    assert!(
        varied,
        "{decoder_layers} decoder + {post_attention_layers} post-attention layers: no model ended its rows at varied steps"
    );
}

#[test]
fn decoded_sequences_pad_to_a_batch_with_the_mask_of_their_lengths() {
    let device = padless::default_device();
    let (ids, mask) = pad_decoded(&[vec![5, 3, 4], vec![], vec![7]], &device).unwrap();
    assert_eq!(ids.dims(), [3, 3]);
    assert_eq!(
        padless::tensor_util::i64_vec(ids),
        vec![5, 3, 4, 0, 0, 0, 7, 0, 0]
    );
    assert_eq!(mask.lengths(), vec![3, 0, 1]);
    let (ids, mask) = pad_decoded(&[vec![], vec![]], &device).unwrap();
    assert_eq!((ids.dims(), mask.lengths()), ([2, 1], vec![0, 0]));
}

#[test]
fn a_masked_source_row_with_nan_features_cannot_reach_attention() {
    let device = padless::default_device();
    let attention = Attention::new(AttentionKind::Dot { scaled: true }, 2, 2, &device).unwrap();
    let keys = Tensor::<3>::from_data(
        TensorData::new(vec![1.0f32, 0.0, f32::NAN, f32::NAN], [1, 2, 2]),
        &device,
    );
    let mask = Mask::from_lengths(&[1], 2, padless::Padding::Post, &device).unwrap();
    let out = attention
        .forward(
            tensor_from(&[0.5, 0.5], [1, 1, 2], &device),
            keys.clone(),
            keys,
            Some(&mask),
        )
        .unwrap();
    assert_eq!(f32_vec(out.weights), vec![1.0, 0.0]);
    assert_eq!(f32_vec(out.context), vec![1.0, 0.0]);
}

/// An attention of the gradient fixtures, with the fixture's weights.
enum FixtureAttention {
    Single(Box<Attention>),
    Multi(Box<MultiHeadAttention>),
}

/// The inputs, masks and weights of one of the fixture's `gradient_cases`.
struct GradientCase<'a> {
    json: &'a Json,
    name: String,
    dims: [usize; 3],
    d: [usize; 3],
    query_valid: Option<Vec<bool>>,
    key_valid: Vec<bool>,
}

impl<'a> GradientCase<'a> {
    fn new(json: &'a Json) -> Self {
        let size = |k: &str| json["shape"][k].as_u64().unwrap() as usize;
        let bools = |v: &Json| {
            v.as_array().map(|a| {
                a.iter()
                    .map(|x| x.as_i64().unwrap() == 1)
                    .collect::<Vec<_>>()
            })
        };
        GradientCase {
            json,
            name: format!("{} / {}", json["attention"], json["masks"]),
            dims: [size("batch"), size("t_query"), size("t_key")],
            d: [size("d_query"), size("d_key"), size("d_value")],
            query_valid: bools(&json["query_mask"]),
            key_valid: bools(&json["key_mask"]).unwrap(),
        }
    }

    fn attention(&self, device: &burn::tensor::Device) -> FixtureAttention {
        let size = |k: &str| self.json["shape"][k].as_u64().unwrap() as usize;
        let [dq, dk, dv] = self.d;
        let (da, heads, dh, d_out) = (
            size("d_attention"),
            size("n_heads"),
            size("d_head"),
            size("d_output"),
        );
        let inner = heads * dh;
        let kind = match self.json["attention"].as_str().unwrap() {
            "dot" => Some(AttentionKind::Dot { scaled: false }),
            "scaled_dot" => Some(AttentionKind::Dot { scaled: true }),
            "general" => Some(AttentionKind::General),
            "additive" => Some(AttentionKind::Additive { d_attention: da }),
            _ => None,
        };
        let shape = |name: &str| -> Vec<usize> {
            match (kind, name) {
                (Some(AttentionKind::General), "query_kernel") => vec![dq, dk],
                (Some(_), "query_kernel") => vec![dq, da],
                (Some(_), "key_kernel") => vec![dk, da],
                (Some(_), _) => vec![da],
                (None, "output_kernel") => vec![inner, d_out],
                (None, "output_bias") => vec![d_out],
                (None, "query_kernel") => vec![dq, inner],
                (None, "key_kernel") => vec![dk, inner],
                (None, "value_kernel") => vec![dv, inner],
                (None, _) => vec![inner],
            }
        };
        let weights: Vec<NamedWeight> = self.json["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, values)| NamedWeight {
                name: name.clone(),
                shape: shape(name),
                values: floats(values),
            })
            .collect();
        match kind {
            Some(kind) => {
                let mut attention = Attention::new(kind, dq, dk, device).unwrap();
                attention.set_weights(&weights).unwrap();
                FixtureAttention::Single(Box::new(attention))
            }
            None => {
                let mut mha =
                    MultiHeadAttention::new(heads, dh, [dq, dk, dv, d_out], device).unwrap();
                mha.set_weights(&weights).unwrap();
                FixtureAttention::Multi(Box::new(mha))
            }
        }
    }

    /// The fixture's input `name` with `fill` (when given) at every step `valid` marks as
    /// padding.
    fn input(
        &self,
        name: &str,
        valid: Option<&[bool]>,
        width: usize,
        fill: Option<f32>,
    ) -> Vec<f32> {
        let mut x = floats(&self.json[name]);
        if let (Some(valid), Some(fill)) = (valid, fill) {
            for (step, _) in valid.iter().enumerate().filter(|(_, ok)| !**ok) {
                x[step * width..(step + 1) * width].fill(fill);
            }
        }
        x
    }

    /// Output, weights, and the gradients of `sum(output * output_grad)` with respect to the
    /// query, keys, values and every weight, each named as the fixture names it; `fill` (when
    /// given) replaces every masked query, key and value step.
    fn run(&self, fill: Option<f32>) -> Vec<(String, Vec<f32>)> {
        let device = padless::training_device();
        let [b, tq, tk] = self.dims;
        let [dq, dk, dv] = self.d;
        let tensor =
            |v: Vec<f32>, shape: [usize; 3]| tensor_from(&v, shape, &device).require_grad();
        let query = tensor(
            self.input("query", self.query_valid.as_deref(), dq, fill),
            [b, tq, dq],
        );
        let keys = tensor(
            self.input("keys", Some(&self.key_valid), dk, fill),
            [b, tk, dk],
        );
        let values = tensor(
            self.input("values", Some(&self.key_valid), dv, fill),
            [b, tk, dv],
        );
        let query_mask = self
            .query_valid
            .as_ref()
            .map(|v| Mask::from_bools(v, b, tq, &device).unwrap());
        let key_mask = Mask::from_bools(&self.key_valid, b, tk, &device).unwrap();
        let masks = AttentionMasks {
            query: query_mask.as_ref(),
            keys: Some(&key_mask),
            causal: self.json["causal"].as_bool().unwrap(),
        };
        let attention = self.attention(&device);
        let (output, weights) = match &attention {
            FixtureAttention::Single(a) if masks.query.is_none() && !masks.causal => {
                let out = a
                    .forward(query.clone(), keys.clone(), values.clone(), Some(&key_mask))
                    .unwrap();
                (out.context, f32_vec(out.weights))
            }
            FixtureAttention::Single(a) => {
                let out = a
                    .forward_masked(query.clone(), keys.clone(), values.clone(), masks)
                    .unwrap();
                (out.context, f32_vec(out.weights))
            }
            FixtureAttention::Multi(m) => {
                let out = m
                    .forward_masked(query.clone(), keys.clone(), values.clone(), masks)
                    .unwrap();
                (out.output, f32_vec(out.weights))
            }
        };
        let output_grad = tensor_from(&floats(&self.json["output_grad"]), output.dims(), &device);
        let mut observed = vec![
            ("output".to_string(), f32_vec(output.clone())),
            ("weights".to_string(), weights),
        ];
        let grads = (output * output_grad).sum().backward();
        for (name, x) in [("query", &query), ("keys", &keys), ("values", &values)] {
            observed.push((name.to_string(), f32_vec(x.grad(&grads).unwrap())));
        }
        let params: Vec<(&str, Vec<f32>)> = match &attention {
            FixtureAttention::Single(a) => [
                ("query_kernel", a.query_kernel.as_ref().map(|p| p.val())),
                ("key_kernel", a.key_kernel.as_ref().map(|p| p.val())),
            ]
            .into_iter()
            .filter_map(|(n, p)| p.map(|p| (n, f32_vec(p.grad(&grads).unwrap()))))
            .chain(
                a.score_vector
                    .as_ref()
                    .map(|p| ("score_vector", f32_vec(p.val().grad(&grads).unwrap()))),
            )
            .collect(),
            FixtureAttention::Multi(m) => {
                let two = |n, p: &burn::module::Param<Tensor<2>>| {
                    (n, f32_vec(p.val().grad(&grads).unwrap()))
                };
                let one = |n, p: &burn::module::Param<Tensor<1>>| {
                    (n, f32_vec(p.val().grad(&grads).unwrap()))
                };
                vec![
                    two("query_kernel", &m.query_kernel),
                    one("query_bias", &m.query_bias),
                    two("key_kernel", &m.key_kernel),
                    one("key_bias", &m.key_bias),
                    two("value_kernel", &m.value_kernel),
                    one("value_bias", &m.value_bias),
                    two("output_kernel", &m.output_kernel),
                    one("output_bias", &m.output_bias),
                ]
            }
        };
        observed.extend(params.into_iter().map(|(n, g)| (n.to_string(), g)));
        observed
    }
}

fn gradient_fixtures() -> Json {
    serde_json::from_str(include_str!("fixtures/attention_reference.json")).unwrap()
}

/// Outputs, attention weights and the gradients of the inputs and of every weight, for each
/// single-head kind and multi-head attention, with a key mask alone and with query, key and
/// causal masks together, against the float64 numpy reference (masked steps there hold
/// finite garbage of magnitude 1e4). Tolerance: 1e-4 of each quantity's largest magnitude (at
/// least 1); f32 against f64.
#[test]
fn attention_values_and_gradients_match_the_float64_reference() {
    let fixture = gradient_fixtures();
    let cases = fixture["gradient_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for json in cases {
        let case = GradientCase::new(json);
        let observed = case.run(None);
        // Every input and every weight has a gradient to check.
        let n_params = json["params"].as_object().unwrap().len();
        assert_eq!(observed.len(), 5 + n_params, "{}", case.name);
        for (what, got) in observed {
            assert!(got.iter().all(|v| v.is_finite()), "{} {what}", case.name);
            let want = match what.as_str() {
                "output" | "weights" => floats(&json[what.as_str()]),
                name => floats(&json["grads"][name]),
            };
            common::assert_close_to_scale(&got, &want, 1e-4, &format!("{} {what}", case.name));
        }
    }
}

/// NaN, +inf, -inf or 1e30 at every masked query, key and value step (the contract: masked
/// keys are selected out before they are read, since a zero score gradient times a NaN key
/// is NaN): the outputs, the attention weights and every gradient (query, keys, values, each
/// weight) are bit for bit those of the same inputs with zeros there, and all finite.
#[test]
fn non_finite_or_huge_values_at_masked_steps_change_no_output_and_no_gradient() {
    let fixture = gradient_fixtures();
    for json in fixture["gradient_cases"].as_array().unwrap() {
        let case = GradientCase::new(json);
        let zeros = case.run(Some(0.0));
        for (what, values) in &zeros {
            assert!(
                values.iter().all(|v| v.is_finite()),
                "{} {what}: {values:?}",
                case.name
            );
        }
        // A gradient that is 0 everywhere would hold nothing to compare.
        for name in ["query", "keys", "values"] {
            let g = &zeros.iter().find(|(n, _)| n == name).unwrap().1;
            assert!(g.iter().any(|&v| v != 0.0), "{} {name}", case.name);
        }
        for fill in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30] {
            let poisoned = case.run(Some(fill));
            for ((what, got), (_, want)) in poisoned.iter().zip(&zeros) {
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} with {fill} at masked steps: {what}",
                    case.name
                );
            }
        }
    }
}
