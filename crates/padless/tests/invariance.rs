//! Padding invariance as a property, and stateful layers.
//!
//! Property: for random rows of random lengths (0 included), valid outputs, final states and
//! weight gradients are the same whether the batch is post-padded to its longest row,
//! post-padded further, or pre-padded, with random garbage in the padding.

use burn::tensor::{Device, Tensor};
use padless::prelude::*;
use padless::rnn::RecurrentOutput;
use proptest::prelude::*;

fn lcg(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Rows of valid steps `[len, d]` placed in a `[batch, time, d]` tensor with garbage padding.
fn pad(
    rows: &[Vec<f32>],
    d: usize,
    time: usize,
    padding: Padding,
    device: &Device,
) -> (Tensor<3>, Mask) {
    let mut garbage = lcg(999);
    let mut values = Vec::new();
    let lengths: Vec<usize> = rows.iter().map(|r| r.len() / d).collect();
    for (row, &len) in rows.iter().zip(&lengths) {
        let first = if padding == Padding::Pre {
            time - len
        } else {
            0
        };
        for t in 0..time {
            if t >= first && t < first + len {
                values.extend_from_slice(&row[(t - first) * d..(t - first + 1) * d]);
            } else {
                values.extend((0..d).map(|_| garbage() * 50.0));
            }
        }
    }
    let mask = Mask::from_lengths(&lengths, time, padding, device).unwrap();
    (tensor_from(&values, [rows.len(), time, d], device), mask)
}

/// Weights for the j-th valid output of each row, placed where that output lands.
fn output_weights(mask: &Mask, width: usize, device: &Device) -> Tensor<3> {
    let [batch, time] = mask.dims();
    let valid = mask.to_vec();
    let mut values = vec![0.0f32; batch * time * width];
    for b in 0..batch {
        let mut j = 0;
        for t in 0..time {
            if valid[b * time + t] {
                let mut r = lcg((b * 100 + j) as u64);
                for f in 0..width {
                    values[(b * time + t) * width + f] = r();
                }
                j += 1;
            }
        }
    }
    tensor_from(&values, [batch, time, width], device)
}

/// The valid outputs in order, the final states, and the weight gradients.
fn observe(out: RecurrentOutput, weights: &[Tensor<2>], device: &Device) -> Vec<Vec<f32>> {
    let mask = out.mask.clone().expect("masked");
    let [batch, time, width] = out.sequence.dims();
    let seq = f32_vec(out.sequence.clone());
    let valid = mask.to_vec();
    let mut observed = vec![Vec::new()];
    for b in 0..batch {
        for t in 0..time {
            if valid[b * time + t] {
                observed[0]
                    .extend_from_slice(&seq[(b * time + t) * width..(b * time + t + 1) * width]);
            }
        }
    }
    let mut loss = (out.sequence.clone() * output_weights(&mask, width, device)).sum();
    for (i, state) in out.states.iter().enumerate() {
        observed.push(f32_vec(state.clone()));
        let [b, h] = state.dims();
        let mut r = lcg(7 + i as u64);
        let w: Vec<f32> = (0..b * h).map(|_| r()).collect();
        loss = loss + (state.clone() * tensor_from(&w, [b, h], device)).sum();
    }
    let grads = loss.backward();
    for w in weights {
        observed.push(f32_vec(w.grad(&grads).expect("weight gradient")));
    }
    observed
}

fn assert_same(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len(), "{what}");
        for (p, q) in x.iter().zip(y) {
            assert!(
                (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                "{what}: {p} vs {q}"
            );
        }
    }
}

macro_rules! check_invariance {
    ($layer:expr, $run:expr, $weights:expr, $rows:expr, $d:expr, $extra:expr, $what:expr) => {{
        let device = training_device();
        let longest = $rows.iter().map(|r| r.len() / $d).max().unwrap_or(0).max(1);
        let run = |time: usize, padding: Padding| {
            let (x, mask) = pad(&$rows, $d, time, padding, &device);
            observe($run(&$layer, x, &mask), &$weights(&$layer), &device)
        };
        let base = run(longest, Padding::Post);
        assert_same(
            &base,
            &run(longest + $extra, Padding::Post),
            concat!($what, " padded further"),
        );
        assert_same(
            &base,
            &run(longest, Padding::Pre),
            concat!($what, " pre-padded"),
        );
        assert_same(
            &base,
            &run(longest + $extra, Padding::Pre),
            concat!($what, " pre-padded further"),
        );
    }};
}

fn rows_strategy() -> impl Strategy<Value = (Vec<usize>, u64, usize, bool)> {
    (
        prop::collection::vec(0usize..5, 1..4),
        any::<u64>(),
        1usize..3,
        any::<bool>(),
    )
}

fn make_rows(lengths: &[usize], d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = lcg(seed);
    lengths
        .iter()
        .map(|&l| (0..l * d).map(|_| r()).collect())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn recurrent_layers_are_padding_invariant((lengths, seed, extra, backwards) in rows_strategy()) {
        let device = training_device();
        let d = 2;
        let rows = make_rows(&lengths, d, seed);
        let lstm = LstmConfig::new(d, 3).with_go_backwards(backwards).init(&device);
        check_invariance!(lstm, |l: &Lstm, x, m: &Mask| l.forward(x, Some(m), None).unwrap(),
            |l: &Lstm| vec![l.cell.kernel.val(), l.cell.recurrent_kernel.val()], rows, d, extra, "lstm");
        let gru = GruConfig::new(d, 3).with_go_backwards(backwards).init(&device);
        check_invariance!(gru, |l: &Gru, x, m: &Mask| l.forward(x, Some(m), None).unwrap(),
            |l: &Gru| vec![l.cell.kernel.val(), l.cell.recurrent_kernel.val(), l.cell.bias.as_ref().unwrap().val()],
            rows, d, extra, "gru");
        let rnn = SimpleRnnConfig::new(d, 3).with_learn_initial_state(true).init(&device);
        check_invariance!(rnn, |l: &SimpleRnn, x, m: &Mask| l.forward(x, Some(m), None).unwrap(),
            |l: &SimpleRnn| vec![l.cell.kernel.val(), l.cell.recurrent_kernel.val()], rows, d, extra, "simple_rnn");
    }

    #[test]
    fn bidirectional_is_padding_invariant((lengths, seed, extra, concat) in rows_strategy()) {
        let device = training_device();
        let d = 2;
        let rows = make_rows(&lengths, d, seed);
        let mode = if concat { MergeMode::Concat } else { MergeMode::Mul };
        let bi = LstmConfig::new(d, 2).init_bidirectional(mode, &device);
        check_invariance!(bi, |l: &padless::rnn::Bidirectional<LstmCell>, x, m: &Mask| l.forward(x, Some(m)).unwrap(),
            |l: &padless::rnn::Bidirectional<LstmCell>| vec![l.forward.cell.kernel.val(), l.backward.cell.recurrent_kernel.val()],
            rows, d, extra, "bidirectional");
    }
}

#[test]
fn bidirectional_halves_equal_runs_on_the_unpadded_row() {
    let device = default_device();
    let (d, h) = (2, 3);
    let layer = GruConfig::new(d, h)
        .with_return_sequences(true)
        .init_bidirectional(MergeMode::Concat, &device);
    let rows = make_rows(&[3, 1, 4], d, 42);
    let (x, mask) = pad(&rows, d, 5, Padding::Pre, &device);
    let out = f32_vec(layer.forward(x, Some(&mask)).unwrap().sequence);
    for (b, row) in rows.iter().enumerate() {
        let len = row.len() / d;
        let alone = tensor_from(row, [1, len, d], &device);
        let forward = f32_vec(
            layer
                .forward
                .forward(alone.clone(), None, None)
                .unwrap()
                .sequence,
        );
        let backward = f32_vec(
            layer
                .backward
                .forward(alone.flip([1]), None, None)
                .unwrap()
                .sequence,
        );
        for j in 0..len {
            let t = 5 - len + j;
            let got = &out[(b * 5 + t) * 2 * h..(b * 5 + t + 1) * 2 * h];
            let want_f = &forward[j * h..(j + 1) * h];
            let want_b = &backward[(len - 1 - j) * h..(len - j) * h];
            for k in 0..h {
                assert!(
                    (got[k] - want_f[k]).abs() < 1e-6,
                    "row {b} step {j} forward"
                );
                assert!(
                    (got[h + k] - want_b[k]).abs() < 1e-6,
                    "row {b} step {j} backward"
                );
            }
        }
        for t in 0..5 - len {
            assert!(
                out[(b * 5 + t) * 2 * h..(b * 5 + t + 1) * 2 * h]
                    .iter()
                    .all(|&v| v == 0.0)
            );
        }
    }
}

#[test]
fn stateful_layer_carries_state_from_each_rows_last_valid_step() {
    let device = default_device();
    let (d, h) = (2, 3);
    let mut stateful = LstmConfig::new(d, h)
        .with_stateful(true)
        .with_return_sequences(true)
        .init(&device);
    let plain = LstmConfig::new(d, h)
        .with_return_sequences(true)
        .init(&device);
    padless::layer::Layer::set_weights(&mut stateful, &padless::layer::Layer::weights(&plain))
        .unwrap();
    // Row 0: 2 valid steps then padding, then 3 more steps; row 1: 3 steps, then 1 step.
    let rows_first = make_rows(&[2, 3], d, 1);
    let rows_second = make_rows(&[3, 1], d, 2);
    let (x1, m1) = pad(&rows_first, d, 3, Padding::Post, &device);
    let (x2, m2) = pad(&rows_second, d, 3, Padding::Pre, &device);
    stateful.forward(x1, Some(&m1), None).unwrap();
    let carried = stateful.carried_states().expect("states carried");
    let second = stateful.forward(x2, Some(&m2), None).unwrap();
    for b in 0..2 {
        let joined: Vec<f32> = rows_first[b]
            .iter()
            .chain(&rows_second[b])
            .copied()
            .collect();
        let len = joined.len() / d;
        let alone = plain
            .forward(tensor_from(&joined, [1, len, d], &device), None, None)
            .unwrap();
        let got = f32_vec(second.states[0].clone());
        let want = f32_vec(alone.states[0].clone());
        for k in 0..h {
            assert!((got[b * h + k] - want[k]).abs() < 1e-6, "row {b} h");
        }
    }
    // The carried state after the first batch is each row's state after its last valid step.
    let first_row0 = plain
        .forward(tensor_from(&rows_first[0], [1, 2, d], &device), None, None)
        .unwrap();
    let got = f32_vec(carried[1].clone());
    let want = f32_vec(first_row0.states[1].clone());
    assert!(
        (0..h).all(|k| (got[k] - want[k]).abs() < 1e-6),
        "row 0 c after its last valid step"
    );

    stateful.reset_states();
    assert!(stateful.carried_states().is_none());
    let (x3, m3) = pad(&rows_second, d, 3, Padding::Pre, &device);
    let after_reset = f32_vec(
        stateful
            .forward(x3.clone(), Some(&m3), None)
            .unwrap()
            .states[0]
            .clone(),
    );
    let fresh = f32_vec(plain.forward(x3, Some(&m3), None).unwrap().states[0].clone());
    assert_eq!(after_reset, fresh);
}

#[test]
fn reset_returns_to_the_learned_initial_state() {
    let device = default_device();
    let mut layer = SimpleRnnConfig::new(2, 2)
        .with_stateful(true)
        .with_learn_initial_state(true)
        .init(&device);
    let mut weights = padless::layer::Layer::weights(&layer);
    let initial = weights.iter_mut().find(|w| w.name == "initial_h").unwrap();
    initial.values = vec![0.25, -0.5];
    padless::layer::Layer::set_weights(&mut layer, &weights).unwrap();
    let x = tensor_from(&[1.0, 2.0, 3.0, 4.0], [2, 1, 2], &device);
    let empty_row = Mask::from_bools(&[true, false], 2, 1, &device).unwrap();
    let out = layer.forward(x.clone(), Some(&empty_row), None).unwrap();
    assert_eq!(f32_vec(out.last)[2..], [0.25, -0.5]);
    layer.reset_states();
    let all_masked = Mask::from_bools(&[false, false], 2, 1, &device).unwrap();
    let out = layer.forward(x, Some(&all_masked), None).unwrap();
    assert_eq!(f32_vec(out.last), vec![0.25, -0.5, 0.25, -0.5]);
}

#[test]
fn stateful_layer_rejects_a_new_batch_size_until_reset() {
    let device = default_device();
    let layer = GruConfig::new(2, 2).with_stateful(true).init(&device);
    layer
        .forward(tensor_from(&[0.5; 8], [2, 2, 2], &device), None, None)
        .unwrap();
    let err = layer
        .forward(tensor_from(&[0.5; 12], [3, 2, 2], &device), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batch 2") && err.contains("batch 3") && err.contains("reset_states"),
        "{err}"
    );
    layer.reset_states();
    layer
        .forward(tensor_from(&[0.5; 12], [3, 2, 2], &device), None, None)
        .unwrap();
}
