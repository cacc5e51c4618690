//! Recurrent layers against an independent float64 numpy reference
//! (`fixtures/make_rnn_reference.py`, see `fixtures/README.md`): every cell, every mask
//! pattern (none, post, pre, holes, a row with no valid step), `go_backwards`,
//! `zero_output_for_mask`, given initial states, and Bidirectional with every merge mode.
//! Weights go in through the Keras-layout `set_weights`, so the layout is checked too.
//! Tolerance: |got - want| <= 1e-5 * (1 + |want|).

use padless::layer::Layer;
use padless::prelude::*;
use padless::rnn::RecurrentOutput;
use padless::weights::NamedWeight;
use serde_json::Value as Json;

const TOLERANCE: f32 = 1e-5;

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn usize_of(case: &Json, key: &str) -> usize {
    case[key].as_u64().expect(key) as usize
}

fn assert_close(name: &str, what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name} {what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOLERANCE * (1.0 + w.abs()),
            "{name} {what}[{i}]: got {g}, want {w}"
        );
    }
}

fn cell_weights(case: &Json, d: usize, h: usize, cell: &str) -> Vec<NamedWeight> {
    let gates = match cell {
        "lstm" => 4,
        "gru" => 3,
        _ => 1,
    };
    let bias_shape = if cell == "gru" {
        vec![2, 3 * h]
    } else {
        vec![gates * h]
    };
    vec![
        NamedWeight {
            name: "kernel".into(),
            shape: vec![d, gates * h],
            values: floats(&case["kernel"]),
        },
        NamedWeight {
            name: "recurrent_kernel".into(),
            shape: vec![h, gates * h],
            values: floats(&case["recurrent_kernel"]),
        },
        NamedWeight {
            name: "bias".into(),
            shape: bias_shape,
            values: floats(&case["bias"]),
        },
    ]
}

fn inputs(
    case: &Json,
    device: &burn::tensor::Device,
) -> (burn::tensor::Tensor<3>, Mask, [usize; 4]) {
    let dims = [
        usize_of(case, "batch"),
        usize_of(case, "time"),
        usize_of(case, "d_input"),
        usize_of(case, "d_hidden"),
    ];
    let [b, t, d, _] = dims;
    let x = tensor_from(&floats(&case["x"]), [b, t, d], device);
    let mask_bits: Vec<bool> = floats(&case["mask"]).iter().map(|&v| v != 0.0).collect();
    let mask = Mask::from_bools(&mask_bits, b, t, device).unwrap();
    (x, mask, dims)
}

fn check_output(name: &str, case: &Json, out: RecurrentOutput) {
    assert_close(
        name,
        "outputs",
        &f32_vec(out.sequence),
        &floats(&case["outputs"]),
    );
    assert_close(
        name,
        "last_output",
        &f32_vec(out.last),
        &floats(&case["last_output"]),
    );
    let want_states = case["final_states"].as_array().unwrap();
    assert_eq!(
        out.states.len(),
        want_states.len(),
        "{name}: number of states"
    );
    for (got, want) in out.states.into_iter().zip(want_states) {
        assert_close(name, "final_states", &f32_vec(got), &floats(want));
    }
}

fn fixtures() -> Json {
    let text = include_str!("fixtures/rnn_reference.json");
    serde_json::from_str(text).expect("fixture parses")
}

macro_rules! unidirectional {
    ($config:ident, $case:expr, $dims:expr, $device:expr) => {{
        let [_, _, d, h] = $dims;
        let mut layer = $config::new(d, h)
            .with_return_sequences(true)
            .with_go_backwards($case["go_backwards"].as_bool().unwrap())
            .with_zero_output_for_mask($case["zero_output_for_mask"].as_bool().unwrap())
            .init($device);
        layer
            .set_weights(&cell_weights($case, d, h, $case["cell"].as_str().unwrap()))
            .unwrap();
        layer
    }};
}

#[test]
fn unidirectional_layers_match_the_numpy_reference() {
    let device = default_device();
    let fixtures = fixtures();
    let cases = fixtures["unidirectional"].as_array().unwrap();
    assert!(cases.len() >= 120, "fixture holds {} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (x, mask, dims) = inputs(case, &device);
        let [b, _, _, h] = dims;
        let initial = case["initial_state"].as_array().map(|states| {
            states
                .iter()
                .map(|s| tensor_from(&floats(s), [b, h], &device))
                .collect::<Vec<_>>()
        });
        let out = match case["cell"].as_str().unwrap() {
            "lstm" => {
                unidirectional!(LstmConfig, case, dims, &device).forward(x, Some(&mask), initial)
            }
            "gru" => {
                unidirectional!(GruConfig, case, dims, &device).forward(x, Some(&mask), initial)
            }
            "simple_rnn" => unidirectional!(SimpleRnnConfig, case, dims, &device).forward(
                x,
                Some(&mask),
                initial,
            ),
            other => panic!("unknown cell {other}"),
        }
        .unwrap();
        if case["go_backwards"].as_bool().unwrap() {
            let reversed = mask.reverse_time().to_vec();
            assert_eq!(
                out.mask.as_ref().unwrap().to_vec(),
                reversed,
                "{name}: reversed mask"
            );
        }
        check_output(name, case, out);
    }
}

fn merge_mode(name: &str) -> MergeMode {
    match name {
        "concat" => MergeMode::Concat,
        "sum" => MergeMode::Sum,
        "mul" => MergeMode::Mul,
        "ave" => MergeMode::Ave,
        other => panic!("unknown merge mode {other}"),
    }
}

macro_rules! bidirectional {
    ($config:ident, $case:expr, $dims:expr, $device:expr) => {{
        let [_, _, d, h] = $dims;
        let cell = $case["cell"].as_str().unwrap();
        let mut layer = $config::new(d, h)
            .with_return_sequences(true)
            .init_bidirectional(merge_mode($case["merge_mode"].as_str().unwrap()), $device);
        let mut weights = Vec::new();
        for direction in ["forward", "backward"] {
            weights.extend(
                cell_weights(&$case[direction], d, h, cell)
                    .into_iter()
                    .map(|w| w.prefixed(direction)),
            );
        }
        layer.set_weights(&weights).unwrap();
        layer
    }};
}

#[test]
fn bidirectional_layers_match_the_numpy_reference() {
    let device = default_device();
    let fixtures = fixtures();
    let cases = fixtures["bidirectional"].as_array().unwrap();
    assert!(cases.len() >= 60, "fixture holds {} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (x, mask, dims) = inputs(case, &device);
        let out = match case["cell"].as_str().unwrap() {
            "lstm" => bidirectional!(LstmConfig, case, dims, &device).forward(x, Some(&mask)),
            "gru" => bidirectional!(GruConfig, case, dims, &device).forward(x, Some(&mask)),
            "simple_rnn" => {
                bidirectional!(SimpleRnnConfig, case, dims, &device).forward(x, Some(&mask))
            }
            other => panic!("unknown cell {other}"),
        }
        .unwrap();
        check_output(name, case, out);
    }
}
