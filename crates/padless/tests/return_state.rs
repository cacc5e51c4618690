//! `return_state`: a recurrent layer configured with it returns its final states beside its
//! output, and a stack hands them out (`Sequential::forward_with_states`). The states are
//! checked against a float64 reference loop written here from the Keras equations, on masks
//! with holes, pre- and post-padding and an empty row, where a masked step carries every
//! state unchanged.
//!
//! This binary configures the flex device for f64 once, before any tensor is made.

mod common;

use common::{device, f64s, tensor};
use padless::Mask;
use padless::layer::Layer;
use padless::prelude::*;
use padless::sequential::LayerStates;
use padless::weights::NamedWeight;

const BATCH: usize = 4;
const TIME: usize = 5;
const D_INPUT: usize = 3;
const UNITS: usize = 4;

/// Rows: a hole, pre- and post-padding, no valid step, all valid.
const MASK: [bool; BATCH * TIME] = [
    true, false, true, true, false, //
    false, false, true, true, true, //
    false, false, false, false, false, //
    true, true, true, true, true,
];

/// `n` values in `[-scale, scale]` that are exact in f32 (so the f32 weights and the f64
/// reference read the same numbers).
fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    common::values(n, seed, scale as f32)
        .into_iter()
        .map(f64::from)
        .collect()
}

/// The input, with large values at masked steps (never read by a correct layer).
fn input() -> Vec<f64> {
    let mut x = values(BATCH * TIME * D_INPUT, 1, 1.0);
    for (step, valid) in MASK.iter().enumerate() {
        if !valid {
            x[step * D_INPUT..(step + 1) * D_INPUT].fill(1e6);
        }
    }
    x
}

/// `layer` with its weights rounded to f32, as [`Layer::weights`] reads them, so that the
/// layer and the reference (which reads those) compute with the same numbers.
fn rounded<L: Layer>(mut layer: L) -> L {
    let weights = layer.weights();
    layer.set_weights(&weights).unwrap();
    layer
}

fn weight<'a>(weights: &'a [NamedWeight], name: &str) -> &'a [f32] {
    &weights
        .iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no weight {name}"))
        .values
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// `x [d_input] K [d_input, n]` plus `h [units] U [units, n]`, column `j`.
fn affine(x: &[f64], kernel: &[f32], h: &[f64], recurrent: &[f32], n: usize, j: usize) -> f64 {
    let input: f64 = (0..x.len())
        .map(|i| x[i] * f64::from(kernel[i * n + j]))
        .sum();
    let state: f64 = (0..h.len())
        .map(|i| h[i] * f64::from(recurrent[i * n + j]))
        .sum();
    input + state
}

/// One LSTM step (Keras gates i, f, c, o) from `[h, c]`.
fn lstm_step(weights: &[NamedWeight], x: &[f64], states: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let (kernel, recurrent, bias) = (
        weight(weights, "kernel"),
        weight(weights, "recurrent_kernel"),
        weight(weights, "bias"),
    );
    let n = 4 * UNITS;
    let z = |j: usize| affine(x, kernel, &states[0], recurrent, n, j) + f64::from(bias[j]);
    let (mut h, mut c) = (vec![0.0; UNITS], vec![0.0; UNITS]);
    for u in 0..UNITS {
        let (i, f, g, o) = (
            sigmoid(z(u)),
            sigmoid(z(UNITS + u)),
            z(2 * UNITS + u).tanh(),
            sigmoid(z(3 * UNITS + u)),
        );
        c[u] = f * states[1][u] + i * g;
        h[u] = o * c[u].tanh();
    }
    vec![h, c]
}

/// One GRU step (Keras `reset_after`, gates z, r, h; bias rows: input, recurrent) from `[h]`.
fn gru_step(weights: &[NamedWeight], x: &[f64], states: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let (kernel, recurrent, bias) = (
        weight(weights, "kernel"),
        weight(weights, "recurrent_kernel"),
        weight(weights, "bias"),
    );
    let n = 3 * UNITS;
    let h = &states[0];
    let no_state = vec![0.0; UNITS];
    let xs = |j: usize| affine(x, kernel, &no_state, recurrent, n, j) + f64::from(bias[j]);
    let hs = |j: usize| affine(&[], kernel, h, recurrent, n, j) + f64::from(bias[n + j]);
    let next = (0..UNITS)
        .map(|u| {
            let z = sigmoid(xs(u) + hs(u));
            let r = sigmoid(xs(UNITS + u) + hs(UNITS + u));
            let candidate = (xs(2 * UNITS + u) + r * hs(2 * UNITS + u)).tanh();
            z * h[u] + (1.0 - z) * candidate
        })
        .collect();
    vec![next]
}

type Step = fn(&[NamedWeight], &[f64], &[Vec<f64>]) -> Vec<Vec<f64>>;

/// The final states of each row, from zero states over the row's valid steps of `x`
/// (`[BATCH, TIME, d_in]`), first to last or, `backwards`, last to first; masked steps are
/// skipped, so every state carries over them. `[state][row * UNITS + unit]`.
fn reference_states(
    step: Step,
    n_states: usize,
    weights: &[NamedWeight],
    x: &[f64],
    d_in: usize,
    backwards: bool,
) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::new(); n_states];
    for row in 0..BATCH {
        let mut states = vec![vec![0.0; UNITS]; n_states];
        let steps: Vec<usize> = if backwards {
            (0..TIME).rev().collect()
        } else {
            (0..TIME).collect()
        };
        for t in steps {
            let at = row * TIME + t;
            if MASK[at] {
                states = step(weights, &x[at * d_in..(at + 1) * d_in], &states);
            }
        }
        for (s, state) in states.into_iter().enumerate() {
            out[s].extend(state);
        }
    }
    out
}

fn assert_states(got: &LayerStates, want: &[Vec<f64>], layer: &str) {
    assert_eq!(got.layer, layer);
    assert_eq!(got.states.len(), want.len(), "{layer}: number of states");
    for (s, (got, want)) in got.states.iter().zip(want).enumerate() {
        assert_eq!(got.dims(), [BATCH, UNITS]);
        let got = f64s(got.clone());
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() < 1e-12,
                "{layer} state {s} [{i}]: {g} against the reference {w}"
            );
        }
    }
}

fn masked_input() -> Value {
    let mask = Mask::from_bools(&MASK, BATCH, TIME, &device()).unwrap();
    Value::sequence(tensor(&input(), [BATCH, TIME, D_INPUT]), Some(mask))
}

#[test]
fn a_stack_returns_the_final_states_of_its_return_state_layers() {
    let device = device();
    let lstm = rounded(
        LstmConfig::new(D_INPUT, UNITS)
            .with_return_sequences(true)
            .with_return_state(true)
            .init(&device),
    );
    let gru = rounded(
        GruConfig::new(UNITS, UNITS)
            .with_return_state(true)
            .with_go_backwards(true)
            .init(&device),
    );
    let (lstm_weights, gru_weights) = (lstm.weights(), gru.weights());
    let model = Sequential::new(vec![lstm.into(), gru.into()]);

    let (value, states) = model.forward_with_states(masked_input()).unwrap();
    assert_eq!(states.len(), 2, "one entry per return_state layer");
    let want = reference_states(lstm_step, 2, &lstm_weights, &input(), D_INPUT, false);
    assert_states(&states[0], &want, "lstm");

    // The GRU reads the LSTM's sequence backwards (the mask passes on with it).
    let (sequence, _) = model.layers[0]
        .as_layer()
        .forward_value(masked_input())
        .unwrap()
        .into_sequence("lstm")
        .unwrap();
    let want = reference_states(gru_step, 1, &gru_weights, &f64s(sequence), UNITS, true);
    assert_states(&states[1], &want, "gru");

    // Without return_sequences the output is the final h; without states, the same output.
    let out = f64s(value.into_vector("gru").unwrap());
    assert_eq!(out, f64s(states[1].states[0].clone()));
    let plain = model.forward(masked_input()).unwrap();
    assert_eq!(f64s(plain.into_vector("gru").unwrap()), out);
}

#[test]
fn bidirectional_returns_both_directions_states_forward_first() {
    let device = device();
    let pair = rounded(
        LstmConfig::new(D_INPUT, UNITS)
            .with_return_state(true)
            .init_bidirectional(MergeMode::Sum, &device),
    );
    let weights = pair.weights();
    let half = |prefix: &str| -> Vec<NamedWeight> {
        weights
            .iter()
            .filter_map(|w| {
                w.name.strip_prefix(prefix).map(|name| NamedWeight {
                    name: name.to_string(),
                    ..w.clone()
                })
            })
            .collect()
    };
    let model = Sequential::new(vec![pair.into()]);
    let (value, states) = model.forward_with_states(masked_input()).unwrap();
    assert_eq!(states.len(), 1);
    let x = input();
    let forward = reference_states(lstm_step, 2, &half("forward/"), &x, D_INPUT, false);
    // The backward half reads each row's valid steps last to first.
    let backward = reference_states(lstm_step, 2, &half("backward/"), &x, D_INPUT, true);
    let want: Vec<Vec<f64>> = forward.iter().chain(&backward).cloned().collect();
    assert_states(&states[0], &want, "bidirectional");
    // The output merges the two final h by sum.
    let out = f64s(value.into_vector("bidirectional").unwrap());
    for (i, o) in out.iter().enumerate() {
        assert!(
            (o - (forward[0][i] + backward[0][i])).abs() < 1e-12,
            "[{i}]"
        );
    }
}

#[test]
fn a_decoder_fed_by_repeat_vector_returns_its_states() {
    let device = device();
    let lstm = rounded(
        LstmConfig::new(D_INPUT, UNITS)
            .with_return_sequences(true)
            .with_return_state(true)
            .init(&device),
    );
    let weights = lstm.weights();
    let model = Sequential::new(vec![RepeatVector::new(TIME).into(), lstm.into()]);
    let vector = values(BATCH * D_INPUT, 7, 1.0);
    let (value, states) = model
        .forward_with_states(Value::Vector(tensor(&vector, [BATCH, D_INPUT])))
        .unwrap();
    // Every repeated step is valid: the reference runs all TIME steps on the same input.
    let mut want: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    for row in 0..BATCH {
        let x = &vector[row * D_INPUT..(row + 1) * D_INPUT];
        let mut s: Vec<Vec<f64>> = vec![vec![0.0; UNITS]; 2];
        for _ in 0..TIME {
            s = lstm_step(&weights, x, &s);
        }
        want[0].extend(&s[0]);
        want[1].extend(&s[1]);
    }
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].layer, "lstm");
    for (s, (got, want)) in states[0].states.iter().zip(&want).enumerate() {
        for (i, (g, w)) in f64s(got.clone()).iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-12, "state {s} [{i}]: {g} against {w}");
        }
    }
    // The last step's output is the final h.
    let (sequence, _) = value.into_sequence("lstm").unwrap();
    let last: Vec<f64> = f64s(sequence)
        .chunks(TIME * UNITS)
        .flat_map(|row| row[(TIME - 1) * UNITS..].to_vec())
        .collect();
    assert_eq!(last, f64s(states[0].states[0].clone()));
}

#[test]
fn layers_without_return_state_return_none() {
    let device = device();
    let lstm = LstmConfig::new(D_INPUT, UNITS)
        .with_return_sequences(true)
        .init(&device);
    let model = Sequential::new(vec![lstm.into()]);
    let (value, states) = model.forward_with_states(masked_input()).unwrap();
    assert!(states.is_empty());
    let plain = model.forward(masked_input()).unwrap();
    assert_eq!(
        f64s(value.into_sequence("a").unwrap().0),
        f64s(plain.into_sequence("b").unwrap().0)
    );
}
