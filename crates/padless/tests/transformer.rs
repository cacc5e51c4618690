//! The masking rules of the Transformer layers (`docs/SEMANTICS.md`, "Transformer layers"),
//! one test per rule: padding invariance of values and gradients (pre, post, holes, any
//! amount), exact zeros at masked steps, no NaN for a query without keys, NaN or inf at
//! masked steps changing nothing, the output mask, causal independence of later targets;
//! step-by-step decoding, weights and errors.

use burn::tensor::{Device, Int, Tensor, TensorData};
use padless::Mask;
use padless::layers::ActivationKind;
use padless::seq2seq::AttentionMasks;
use padless::tensor_util::{f32_vec, int_tensor_from, tensor_from};
use padless::transformer::{
    DecoderState, PositionKind, PositionalEmbedding, Transformer, TransformerAttention,
    TransformerConfig, TransformerLayerConfig,
};

mod common;
mod transformer_common;
use common::{assert_close_to_scale, values};
use transformer_common::gradients_by_name;

fn device() -> Device {
    padless::training_device()
}

/// Where each row's valid steps go in a padded batch.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Steps first, then `extra` more padded steps than the longest row needs.
    Post { extra: usize },
    /// Padding first: each row ends at the last step, `extra` steps beyond the longest row.
    Pre { extra: usize },
    /// A padded step before every valid one.
    Holes,
}

const LAYOUTS: [Layout; 5] = [
    Layout::Post { extra: 0 },
    Layout::Post { extra: 3 },
    Layout::Pre { extra: 0 },
    Layout::Pre { extra: 2 },
    Layout::Holes,
];

impl Layout {
    /// Each row's steps for rows of `lengths`, and the batch's time.
    fn steps(self, lengths: &[usize]) -> (Vec<Vec<usize>>, usize) {
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let time = match self {
            Layout::Post { extra } | Layout::Pre { extra } => longest + extra,
            Layout::Holes => 2 * longest,
        }
        .max(1);
        let steps = lengths
            .iter()
            .map(|&n| match self {
                Layout::Post { .. } => (0..n).collect(),
                Layout::Pre { .. } => (time - n..time).collect(),
                Layout::Holes => (0..n).map(|i| 2 * i + 1).collect(),
            })
            .collect();
        (steps, time)
    }
}

/// A batch of sequences: rows of `[n_i, d]` values placed by a layout, `fill` at masked steps.
struct Placed {
    x: Tensor<3>,
    mask: Mask,
    steps: Vec<Vec<usize>>,
    time: usize,
}

fn place(rows: &[Vec<f32>], d: usize, layout: Layout, fill: f32) -> Placed {
    let lengths: Vec<usize> = rows.iter().map(|r| r.len() / d).collect();
    let (steps, time) = layout.steps(&lengths);
    let mut x = vec![fill; rows.len() * time * d];
    let mut valid = vec![false; rows.len() * time];
    for (r, (row, steps)) in rows.iter().zip(&steps).enumerate() {
        for (i, &t) in steps.iter().enumerate() {
            x[(r * time + t) * d..][..d].copy_from_slice(&row[i * d..(i + 1) * d]);
            valid[r * time + t] = true;
        }
    }
    let device = device();
    Placed {
        x: tensor_from(&x, [rows.len(), time, d], &device),
        mask: Mask::from_bools(&valid, rows.len(), time, &device).unwrap(),
        steps,
        time,
    }
}

/// Id rows placed by a layout (0 = padding).
fn place_ids(rows: &[Vec<i64>], layout: Layout) -> (Tensor<2, Int>, Vec<Vec<usize>>) {
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let (steps, time) = layout.steps(&lengths);
    let mut ids = vec![0i64; rows.len() * time];
    for (r, (row, steps)) in rows.iter().zip(&steps).enumerate() {
        for (&t, &id) in steps.iter().zip(row) {
            ids[r * time + t] = id;
        }
    }
    (int_tensor_from(&ids, [rows.len(), time], &device()), steps)
}

/// Random rows of `[n, d]` values for `lengths`.
fn rows(lengths: &[usize], d: usize, seed: u64) -> Vec<Vec<f32>> {
    lengths
        .iter()
        .enumerate()
        .map(|(r, &n)| values(n * d, seed * 100 + r as u64, 1.0))
        .collect()
}

/// The valid steps of `[batch, time, d]` values, row by row, in step order.
fn valid_rows(values: &[f32], steps: &[Vec<usize>], time: usize, d: usize) -> Vec<Vec<f32>> {
    steps
        .iter()
        .enumerate()
        .map(|(r, steps)| {
            steps
                .iter()
                .flat_map(|&t| values[(r * time + t) * d..][..d].to_vec())
                .collect()
        })
        .collect()
}

/// Loss weights `[batch, time, d]`: the same values for the `i`-th valid step of row `r`
/// wherever it is placed, 0 at masked steps.
fn loss_weights(steps: &[Vec<usize>], time: usize, d: usize) -> Tensor<3> {
    let mut w = vec![0.0f32; steps.len() * time * d];
    for (r, steps) in steps.iter().enumerate() {
        for (i, &t) in steps.iter().enumerate() {
            w[(r * time + t) * d..][..d].copy_from_slice(&values(
                d,
                1000 + 37 * r as u64 + i as u64,
                1.0,
            ));
        }
    }
    tensor_from(&w, [steps.len(), time, d], &device())
}

/// What a run gives: each row's valid outputs, each row's valid input gradients, the weight
/// gradients by name, and the values at masked steps (outputs and input gradients).
struct Observed {
    outputs: Vec<Vec<f32>>,
    input_grads: Vec<Vec<f32>>,
    weight_grads: std::collections::HashMap<String, Vec<f64>>,
    masked: Vec<f32>,
}

fn observe<M: burn::module::Module>(
    module: &M,
    placed: &Placed,
    d_out: usize,
    run: impl Fn(Tensor<3>) -> Tensor<3>,
) -> Observed {
    let d_in = placed.x.dims()[2];
    let x = placed.x.clone().require_grad();
    let y = run(x.clone());
    let loss = (y.clone() * loss_weights(&placed.steps, placed.time, d_out)).sum();
    let grads = loss.backward();
    let (y, dx) = (f32_vec(y), f32_vec(x.grad(&grads).unwrap()));
    let valid = placed.mask.to_vec();
    let masked = valid
        .iter()
        .enumerate()
        .filter(|&(_, &v)| !v)
        .flat_map(|(s, _)| {
            y[s * d_out..(s + 1) * d_out]
                .iter()
                .chain(&dx[s * d_in..(s + 1) * d_in])
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    Observed {
        outputs: valid_rows(&y, &placed.steps, placed.time, d_out),
        input_grads: valid_rows(&dx, &placed.steps, placed.time, d_in),
        weight_grads: gradients_by_name(module, &grads),
        masked,
    }
}

fn assert_same(a: &Observed, b: &Observed, what: &str) {
    for (r, (x, y)) in a.outputs.iter().zip(&b.outputs).enumerate() {
        assert_close_to_scale(x, y, 1e-5, &format!("{what}: outputs of row {r}"));
    }
    for (r, (x, y)) in a.input_grads.iter().zip(&b.input_grads).enumerate() {
        assert_close_to_scale(x, y, 1e-5, &format!("{what}: input gradients of row {r}"));
    }
    for (name, g) in &a.weight_grads {
        let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        assert_close_to_scale(
            &narrow(g),
            &narrow(&b.weight_grads[name]),
            1e-5,
            &format!("{what}: d {name}"),
        );
    }
}

fn layer_configs() -> Vec<TransformerLayerConfig> {
    [(false, ActivationKind::Relu), (true, ActivationKind::Gelu)]
        .into_iter()
        .map(|(norm_first, activation)| {
            TransformerLayerConfig::new(8, 2)
                .with_d_ff(16)
                .with_dropout(0.0)
                .with_norm_first(norm_first)
                .with_activation(activation)
        })
        .collect()
}

#[test]
fn encoder_layers_give_the_same_values_and_gradients_under_any_padding() {
    let lengths = [4, 1, 6, 3];
    let data = rows(&lengths, 8, 1);
    for config in layer_configs() {
        let stack = config.init_encoder(2, &device()).unwrap();
        let runs: Vec<Observed> = LAYOUTS
            .iter()
            .map(|&layout| {
                let placed = place(&data, 8, layout, 37.0);
                observe(&stack, &placed, 8, |x| {
                    stack.forward(x, Some(&placed.mask)).unwrap()
                })
            })
            .collect();
        for (run, layout) in runs.iter().zip(LAYOUTS).skip(1) {
            assert_same(
                &runs[0],
                run,
                &format!("norm_first {} {layout:?}", config.norm_first),
            );
            assert!(
                run.masked.iter().all(|&v| v == 0.0),
                "{layout:?}: masked steps"
            );
        }
    }
}

#[test]
fn decoder_layers_give_the_same_values_and_gradients_under_any_padding() {
    let (target_lengths, memory_lengths) = ([3, 5, 1], [6, 2, 4]);
    let (targets, memories) = (rows(&target_lengths, 8, 2), rows(&memory_lengths, 8, 3));
    for config in layer_configs() {
        let stack = config.init_decoder(2, &device()).unwrap();
        let mut runs = Vec::new();
        for (i, &layout) in LAYOUTS.iter().enumerate() {
            // The memory is padded another way than the targets.
            let memory = place(&memories, 8, LAYOUTS[(i + 2) % LAYOUTS.len()], -91.0);
            let placed = place(&targets, 8, layout, 53.0);
            runs.push(observe(&stack, &placed, 8, |x| {
                stack
                    .forward(x, Some(&placed.mask), memory.x.clone(), Some(&memory.mask))
                    .unwrap()
            }));
        }
        for (run, layout) in runs.iter().zip(LAYOUTS).skip(1) {
            assert_same(
                &runs[0],
                run,
                &format!("norm_first {} {layout:?}", config.norm_first),
            );
            assert!(
                run.masked.iter().all(|&v| v == 0.0),
                "{layout:?}: masked steps"
            );
        }
    }
}

fn small_model(positions: PositionKind, norm_first: bool) -> Transformer {
    let mut config = TransformerConfig::new([11, 9], 8, 2, 16, [2, 2]);
    config.positions = positions;
    config.norm_first = norm_first;
    config.activation = ActivationKind::Gelu;
    config.init(&device()).unwrap()
}

const SOURCES: [&[i64]; 3] = [&[3, 4, 5, 6, 7, 8], &[9, 10], &[4, 4, 4, 2]];
const TARGETS: [&[i64]; 3] = [&[1, 3, 4], &[1, 8, 7, 6, 5], &[1]];

fn id_rows(rows: &[&[i64]]) -> Vec<Vec<i64>> {
    rows.iter().map(|r| r.to_vec()).collect()
}

#[test]
fn transformer_logits_and_gradients_do_not_depend_on_padding() {
    for (positions, norm_first) in [
        (PositionKind::Sinusoidal, false),
        (PositionKind::Learned { max_len: 8 }, true),
    ] {
        let model = small_model(positions, norm_first);
        let v = model.config.n_target_tokens;
        // Each layout's valid logits by row, and the weight gradients by name.
        type Run = (Vec<Vec<f32>>, std::collections::HashMap<String, Vec<f64>>);
        let mut runs: Vec<Run> = Vec::new();
        for (i, &layout) in LAYOUTS.iter().enumerate() {
            let (source, _) = place_ids(&id_rows(&SOURCES), LAYOUTS[(i + 1) % LAYOUTS.len()]);
            let (decoder_input, steps) = place_ids(&id_rows(&TARGETS), layout);
            let time = decoder_input.dims()[1];
            let (logits, mask) = model.forward(source, decoder_input.clone()).unwrap();
            assert_eq!(
                mask.unwrap().to_vec(),
                Mask::from_padding_id(&decoder_input, 0).to_vec()
            );
            let loss = (logits.clone() * loss_weights(&steps, time, v)).sum();
            let grads = loss.backward();
            let values = f32_vec(logits);
            let valid = Mask::from_padding_id(&decoder_input, 0).to_vec();
            for (s, &ok) in valid.iter().enumerate() {
                if !ok {
                    assert!(values[s * v..(s + 1) * v].iter().all(|&x| x == 0.0));
                }
            }
            runs.push((
                valid_rows(&values, &steps, time, v),
                gradients_by_name(&model, &grads),
            ));
        }
        for (run, layout) in runs.iter().zip(LAYOUTS).skip(1) {
            for (r, (a, b)) in runs[0].0.iter().zip(&run.0).enumerate() {
                assert_close_to_scale(a, b, 1e-5, &format!("{positions:?} {layout:?}: row {r}"));
            }
            for (name, g) in &runs[0].1 {
                let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
                assert_close_to_scale(
                    &narrow(g),
                    &narrow(&run.1[name]),
                    1e-5,
                    &format!("{positions:?} {layout:?}: d {name}"),
                );
            }
        }
    }
}

#[test]
fn positions_are_indices_among_a_rows_valid_steps() {
    let device = device();
    for kind in [
        PositionKind::Sinusoidal,
        PositionKind::Learned { max_len: 5 },
    ] {
        let embedding = PositionalEmbedding::new(kind, 4, &device).unwrap();
        let alone = place(&[vec![0.0; 12]], 4, Layout::Post { extra: 0 }, 0.0);
        let expected = f32_vec(embedding.forward(alone.x, Some(&alone.mask)).unwrap());
        for layout in LAYOUTS {
            let placed = place(&[vec![0.0; 12], vec![0.0; 4]], 4, layout, 9.0);
            let got = f32_vec(embedding.forward(placed.x, Some(&placed.mask)).unwrap());
            let rows = valid_rows(&got, &placed.steps, placed.time, 4);
            assert_eq!(rows[0], expected, "{kind:?} {layout:?}");
            assert_eq!(rows[1], expected[..4], "{kind:?} {layout:?}");
        }
    }
    // Sinusoidal by hand: position p, features (sin p, cos p, sin p/100, cos p/100) for
    // d_model 4.
    let embedding = PositionalEmbedding::new(PositionKind::Sinusoidal, 4, &device).unwrap();
    let got = f32_vec(embedding.encodings(&[0, 2], &device).unwrap());
    let want = [
        0.0,
        1.0,
        0.0,
        1.0,
        2f32.sin(),
        2f32.cos(),
        0.02f32.sin(),
        0.02f32.cos(),
    ];
    assert_close_to_scale(&got, &want, 1e-6, "sinusoidal encodings");
}

#[test]
fn a_query_that_sees_no_key_gets_zeros_never_nan() {
    let device = device();
    // Cross-attention over a memory whose second row has no valid step.
    let attention = TransformerAttention::new(8, 2, 0.0, &device).unwrap();
    let query = tensor_from(&values(2 * 3 * 8, 4, 1.0), [2, 3, 8], &device).require_grad();
    let memory = tensor_from(&values(2 * 4 * 8, 5, 1.0), [2, 4, 8], &device).require_grad();
    let keys = Mask::from_lengths(&[4, 0], 4, padless::Padding::Post, &device).unwrap();
    let out = attention
        .forward(
            query.clone(),
            memory.clone(),
            AttentionMasks {
                keys: Some(&keys),
                ..AttentionMasks::default()
            },
        )
        .unwrap();
    let values_out = f32_vec(out.clone());
    assert!(
        values_out[24..].iter().all(|&v| v == 0.0),
        "row without keys"
    );
    assert!(values_out[..24].iter().any(|&v| v != 0.0));
    let grads = out.sum().backward();
    for g in [query.grad(&grads).unwrap(), memory.grad(&grads).unwrap()] {
        assert!(f32_vec(g).iter().all(|v| v.is_finite()));
    }
    // The model with a source row of padding only, and an encoder row of padding only.
    let model = small_model(PositionKind::Sinusoidal, true);
    let source = int_tensor_from(&[3, 4, 0, 0, 0, 0], [2, 3], &device);
    let decoder_input = int_tensor_from(&[1, 3, 1, 5], [2, 2], &device);
    let (logits, _) = model.forward(source, decoder_input).unwrap();
    assert!(f32_vec(logits.clone()).iter().all(|v| v.is_finite()));
    let grads = logits.sum().backward();
    for (name, g) in gradients_by_name(&model, &grads) {
        assert!(g.iter().all(|v| v.is_finite()), "d {name}");
    }
    let encoder = layer_configs()[0].init_encoder_layer(&device).unwrap();
    let x = tensor_from(&values(2 * 3 * 8, 6, 1.0), [2, 3, 8], &device);
    let empty = Mask::from_lengths(&[3, 0], 3, padless::Padding::Post, &device).unwrap();
    let y = f32_vec(encoder.forward(x, Some(&empty)).unwrap());
    assert!(y[24..].iter().all(|&v| v == 0.0) && y.iter().all(|v| v.is_finite()));
}

#[test]
fn nan_or_inf_at_masked_steps_changes_no_output_and_no_gradient() {
    let (target_lengths, memory_lengths) = ([3, 2], [4, 1]);
    let (targets, memories) = (rows(&target_lengths, 8, 7), rows(&memory_lengths, 8, 8));
    for config in layer_configs() {
        let decoder = config.init_decoder_layer(&device()).unwrap();
        let encoder = config.init_encoder_layer(&device()).unwrap();
        let mut runs = Vec::new();
        for fill in [0.0, f32::NAN, f32::INFINITY, -f32::INFINITY, 3e38] {
            let layout = Layout::Pre { extra: 1 };
            let placed = place(&targets, 8, layout, fill);
            let memory = place(&memories, 8, Layout::Holes, fill).x.require_grad();
            let memory_mask = place(&memories, 8, Layout::Holes, 0.0).mask;
            let memory_for_run = memory.clone();
            let decoded = observe(&decoder, &placed, 8, |x| {
                decoder
                    .forward(
                        x,
                        Some(&placed.mask),
                        memory_for_run.clone(),
                        Some(&memory_mask),
                    )
                    .unwrap()
            });
            let encoded = observe(&encoder, &placed, 8, |x| {
                encoder.forward(x, Some(&placed.mask)).unwrap()
            });
            for run in [&decoded, &encoded] {
                assert!(
                    run.masked.iter().all(|&v| v == 0.0),
                    "fill {fill}: masked outputs and input gradients are exactly 0"
                );
            }
            runs.push((fill, decoded, encoded));
        }
        for (fill, decoded, encoded) in &runs[1..] {
            assert_same(&runs[0].1, decoded, &format!("decoder, fill {fill}"));
            assert_same(&runs[0].2, encoded, &format!("encoder, fill {fill}"));
        }
    }
}

#[test]
fn a_decoder_step_does_not_depend_on_later_targets() {
    let model = small_model(PositionKind::Learned { max_len: 8 }, false);
    let device = device();
    let source = int_tensor_from(&[3, 4, 5, 0], [1, 4], &device);
    let v = model.config.n_target_tokens;
    let (base, _) = model
        .forward(
            source.clone(),
            int_tensor_from(&[1, 3, 4, 5, 6], [1, 5], &device),
        )
        .unwrap();
    let base = f32_vec(base);
    for t in 0..4 {
        // Replace every token after step t.
        let mut ids = vec![1i64, 3, 4, 5, 6];
        for id in ids.iter_mut().skip(t + 1) {
            *id = 8;
        }
        let (changed, _) = model
            .forward(source.clone(), int_tensor_from(&ids, [1, 5], &device))
            .unwrap();
        let changed = f32_vec(changed);
        assert_eq!(
            changed[..(t + 1) * v],
            base[..(t + 1) * v],
            "steps up to {t} do not see later tokens"
        );
        assert_ne!(changed[(t + 1) * v..], base[(t + 1) * v..]);
    }
    // A decoder layer alone: the output at step t ignores later input steps, in value and
    // gradient.
    let layer = layer_configs()[1].init_decoder_layer(&device).unwrap();
    let x = tensor_from(&values(5 * 8, 9, 1.0), [1, 5, 8], &device).require_grad();
    let memory = tensor_from(&values(3 * 8, 10, 1.0), [1, 3, 8], &device);
    let y = layer.forward(x.clone(), None, memory, None).unwrap();
    let grads = y.narrow(1, 2, 1).sum().backward();
    let dx = f32_vec(x.grad(&grads).unwrap());
    assert!(
        dx[3 * 8..].iter().all(|&g| g == 0.0),
        "steps 3 and 4 get no gradient"
    );
    assert!(dx[..3 * 8].iter().any(|&g| g != 0.0));
}

#[test]
fn step_by_step_decoding_equals_teacher_forcing() {
    let model = small_model(PositionKind::Sinusoidal, true);
    let device = padless::default_device();
    let (source, _) = place_ids(&id_rows(&SOURCES), Layout::Pre { extra: 1 });
    let source = source.to_device(&device);
    let tokens = [[1i64, 3, 4, 5], [1, 8, 7, 6], [1, 2, 2, 2]];
    let flat: Vec<i64> = tokens.iter().flatten().copied().collect();
    let (forced, _) = model
        .forward(source.clone(), int_tensor_from(&flat, [3, 4], &device))
        .unwrap();
    let forced = f32_vec(forced);
    let encoded = model.encode(source).unwrap();
    let mut state = DecoderState::new();
    let v = model.config.n_target_tokens;
    for t in 0..4 {
        let previous: Vec<i64> = tokens.iter().map(|row| row[t]).collect();
        let (logits, next) = model
            .step(int_tensor_from(&previous, [3], &device), &state, &encoded)
            .unwrap();
        state = next;
        assert_eq!(state.steps(), t + 1);
        let got = f32_vec(logits);
        for r in 0..3 {
            let want = &forced[(r * 4 + t) * v..][..v];
            assert_close_to_scale(
                &got[r * v..(r + 1) * v],
                want,
                1e-5,
                &format!("row {r} step {t}"),
            );
        }
    }
    // Selected rows decode as those rows.
    let index = int_tensor_from(&[2, 0], [2], &device);
    let (picked, _) = model
        .step(
            int_tensor_from(&[2, 6], [2], &device),
            &state.select_rows(&index),
            &encoded.select_rows(&index),
        )
        .unwrap();
    let (all, _) = model
        .step(int_tensor_from(&[6, 0, 2], [3], &device), &state, &encoded)
        .unwrap();
    let (picked, all) = (f32_vec(picked), f32_vec(all));
    assert_close_to_scale(&picked[..v], &all[2 * v..], 1e-6, "row 2");
    assert_close_to_scale(&picked[v..], &all[..v], 1e-6, "row 0");
}

#[test]
fn weights_round_trip_under_pytorch_names() {
    let device = padless::default_device();
    let mut config = TransformerConfig::new([7, 7], 8, 2, 16, [1, 2]);
    config.share_embeddings = true;
    config.norm_first = true;
    config.positions = PositionKind::Learned { max_len: 6 };
    let model = config.init(&device).unwrap();
    let weights = model.weights();
    let names: Vec<&str> = weights.iter().map(|w| w.name.as_str()).collect();
    for name in [
        "source_embedding.weight",
        "source_position.weight",
        "target_position.weight",
        "encoder.layers.0.self_attn.in_proj_weight",
        "encoder.layers.0.self_attn.out_proj.bias",
        "encoder.norm.weight",
        "decoder.layers.1.multihead_attn.in_proj_bias",
        "decoder.layers.1.norm3.weight",
        "decoder.norm.bias",
        "output.weight",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("target_embedding")));
    let shape = |name: &str| {
        weights
            .iter()
            .find(|w| w.name == name)
            .unwrap()
            .shape
            .clone()
    };
    assert_eq!(shape("encoder.layers.0.self_attn.in_proj_weight"), [24, 8]);
    assert_eq!(shape("decoder.layers.0.linear1.weight"), [16, 8]);
    assert_eq!(shape("output.weight"), [7, 8]);
    assert_eq!(
        model.n_parameters(),
        weights.iter().map(|w| w.values.len()).sum::<usize>()
    );

    let mut other = config.init(&device).unwrap();
    other.set_weights(&weights).unwrap();
    assert_eq!(other.weights(), weights);
    let source = int_tensor_from(&[3, 4, 5, 0], [1, 4], &device);
    let target = int_tensor_from(&[1, 2, 3], [1, 3], &device);
    let (a, _) = model.forward(source.clone(), target.clone()).unwrap();
    let (b, _) = other.forward(source, target).unwrap();
    assert_eq!(f32_vec(a), f32_vec(b));
}

#[test]
fn bad_weights_and_inputs_are_clear_errors() {
    let device = padless::default_device();
    let config = TransformerConfig::new([7, 7], 8, 2, 16, [1, 1]);
    let mut model = config.init(&device).unwrap();
    let mut weights = model.weights();
    weights[0].name = "source_embedding.kernel".into();
    let err = model.set_weights(&weights).unwrap_err().to_string();
    assert!(
        err.starts_with("weight source_embedding.weight: missing"),
        "{err}"
    );
    let mut weights = model.weights();
    weights.push(weights[0].clone());
    weights.last_mut().unwrap().name = "encoder.layers.0.extra".into();
    let err = model.set_weights(&weights).unwrap_err().to_string();
    assert!(
        err.starts_with("weight encoder.layers.0.extra: Transformer has no such weight"),
        "{err}"
    );
    let mut weights = model.weights();
    let w = weights
        .iter_mut()
        .find(|w| w.name == "output.weight")
        .unwrap();
    w.shape = vec![8, 7];
    let err = model.set_weights(&weights).unwrap_err().to_string();
    assert_eq!(
        err,
        "weight output.weight: expected shape [7, 8], found [8, 7] with 56 values"
    );

    let source = int_tensor_from(&[3, 9], [1, 2], &device);
    let err = model.forward(source, int_tensor_from(&[1], [1, 1], &device));
    assert_eq!(
        err.unwrap_err().to_string(),
        "Transformer source: token ids must be in 0..7, found 9"
    );
    let err = model.forward(
        int_tensor_from(&[3, 4], [1, 2], &device),
        int_tensor_from(&[1, 2], [2, 1], &device),
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "Transformer decoder input: expected shape [1, t_target], found [2, 1]"
    );

    let layer = TransformerLayerConfig::new(8, 2)
        .init_encoder_layer(&device)
        .unwrap();
    let x = Tensor::<3>::zeros([2, 3, 6], &device);
    assert_eq!(
        layer.forward(x, None).unwrap_err().to_string(),
        "TransformerEncoderLayer input: expected shape [batch, time, 8], found [2, 3, 6]"
    );
    let x = Tensor::<3>::zeros([2, 3, 8], &device);
    let mask = Mask::all_valid(2, 4, &device);
    assert_eq!(
        layer.forward(x, Some(&mask)).unwrap_err().to_string(),
        "TransformerEncoderLayer: mask has shape [2, 4], expected [batch, time] = [2, 3]"
    );
    let err = TransformerLayerConfig::new(8, 3).init_encoder_layer(&device);
    assert_eq!(
        err.unwrap_err().to_string(),
        "TransformerAttention: d_model must be a positive multiple of heads, found d_model 8 and heads 3"
    );

    let positions =
        PositionalEmbedding::new(PositionKind::Learned { max_len: 2 }, 4, &device).unwrap();
    let x = Tensor::<3>::zeros([1, 3, 4], &device);
    assert_eq!(
        positions.forward(x, None).unwrap_err().to_string(),
        "PositionalEmbedding: learned positions cover 0..2, found a row with 3 valid steps"
    );

    let json = r#"{"n_source_tokens": 7, "n_target_tokens": 7, "d_model": 8, "heads": 2,
        "d_ff": 16, "encoder_layers": 1, "decoder_layers": 1, "dropuot": 0.1}"#;
    let err = serde_json::from_str::<TransformerConfig>(json)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("unknown field `dropuot`"), "{err}");
    let mut shared = config.clone();
    shared.share_embeddings = true;
    shared.n_target_tokens = 9;
    assert_eq!(
        shared.init(&device).unwrap_err().to_string(),
        "Transformer: shared embeddings need vocabularies of one size, found 7 source and 9 target tokens"
    );
}

#[test]
fn dropout_acts_only_while_training() {
    let mut config = TransformerConfig::new([7, 7], 8, 2, 16, [1, 1]);
    config.dropout = 0.5;
    let device = padless::default_device();
    let model = config.init(&device).unwrap();
    let source = int_tensor_from(&[3, 4, 5], [1, 3], &device);
    let target = int_tensor_from(&[1, 2], [1, 2], &device);
    let (a, _) = model.forward(source.clone(), target.clone()).unwrap();
    let (b, _) = model.forward(source, target).unwrap();
    assert_eq!(f32_vec(a), f32_vec(b), "no dropout on an inference device");
    let training = config.init(&padless::training_device()).unwrap();
    let data = TensorData::new(vec![3i64, 4, 5], [1, 3]);
    let source = Tensor::<2, Int>::from_data(data, &padless::training_device());
    let target = int_tensor_from(&[1, 2], [1, 2], &padless::training_device());
    let (c, _) = training.forward(source.clone(), target.clone()).unwrap();
    let (d, _) = training.forward(source, target).unwrap();
    assert_ne!(
        f32_vec(c),
        f32_vec(d),
        "dropout draws anew on a training device"
    );
}
