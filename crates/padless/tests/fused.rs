//! The fused CPU kernels against the composite per-step loop, through the public layer API
//! and burn's autodiff: outputs, final states and the gradients of inputs, weights, biases,
//! given and learned initial states agree within 1e-5 (relative to each tensor's largest
//! value), for every cell, any mask, `go_backwards`, `zero_output_for_mask`, 1 and 2 threads.

use burn::tensor::{Device, Tensor, TensorData};
use padless::cpu::{set_threads, with_composite};
use padless::prelude::*;
use padless::rnn::fused::fused_calls;
use padless::tensor_util::f32_vec;

mod common;
use common::{assert_close_to_scale, read_every_output, values};

const TOLERANCE: f32 = 1e-5;

fn device() -> Device {
    Device::flex().autodiff()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), &device())
}

/// Row 0 with interior holes, row 1 pre-padded, row 2 with no valid step, row 3 all valid.
fn mask(device: &Device) -> Mask {
    let rows = [
        [true, false, true, true, false, true],
        [false, false, true, true, true, true],
        [false; 6],
        [true; 6],
    ];
    Mask::from_bools(&rows.concat(), 4, 6, device).unwrap()
}

const BATCH: usize = 4;
const TIME: usize = 6;
const D_INPUT: usize = 3;
const D_HIDDEN: usize = 5;

macro_rules! observe_fn {
    ($name:ident, $config:ident, $layer:ty, $bias_dims:expr) => {
        /// Outputs, states and every gradient of a fused run and of a composite run of one
        /// layer.
        fn $name(options: RecurrentOptions, given_initial: bool) -> [Vec<(String, Vec<f32>)>; 2] {
            let device = device();
            let mut config = $config::new(D_INPUT, D_HIDDEN);
            config.go_backwards = options.go_backwards;
            config.zero_output_for_mask = options.zero_output_for_mask;
            config.learn_initial_state = options.learn_initial_state;
            let mut layer = config.init(&device);
            // Nonzero learned initial states, so their use is visible.
            let mut weights = layer.weights();
            for w in weights.iter_mut().filter(|w| w.name.starts_with("initial")) {
                w.values = values(w.values.len(), 5, 0.5);
            }
            layer.set_weights(&weights).unwrap();
            let run = |layer: &$layer| -> Vec<(String, Vec<f32>)> {
                let x = tensor(
                    values(BATCH * TIME * D_INPUT, 1, 1.0),
                    [BATCH, TIME, D_INPUT],
                )
                .require_grad();
                let n_states = layer.start_states(BATCH, &device).len();
                let initial: Vec<Tensor<2>> = (0..n_states)
                    .map(|s| {
                        tensor(
                            values(BATCH * D_HIDDEN, 10 + s as u64, 0.5),
                            [BATCH, D_HIDDEN],
                        )
                        .require_grad()
                    })
                    .collect();
                let out = layer
                    .forward(
                        x.clone(),
                        Some(&mask(&device)),
                        given_initial.then(|| initial.clone()),
                    )
                    .unwrap();
                let (loss, mut observed) = read_every_output(out.sequence, out.states);
                let grads = loss.backward();
                let grad = |t: Tensor<2>| f32_vec(t.grad(&grads).unwrap());
                observed.push(("d x".into(), f32_vec(x.grad(&grads).unwrap())));
                observed.push(("d kernel".into(), grad(layer.cell.kernel.val())));
                observed.push((
                    "d recurrent kernel".into(),
                    grad(layer.cell.recurrent_kernel.val()),
                ));
                let bias = layer.cell.bias.as_ref().unwrap().val();
                assert_eq!(bias.dims().to_vec(), $bias_dims);
                observed.push(("d bias".into(), f32_vec(bias.grad(&grads).unwrap())));
                if given_initial {
                    for (s, state) in initial.into_iter().enumerate() {
                        observed.push((format!("d initial {s}"), grad(state)));
                    }
                }
                if let Some(learned) = &layer.learned_initial_state {
                    for (s, p) in learned.iter().enumerate() {
                        observed.push((
                            format!("d learned initial {s}"),
                            f32_vec(p.val().grad(&grads).unwrap()),
                        ));
                    }
                }
                observed
            };
            let calls = fused_calls();
            let fused = run(&layer);
            assert!(fused_calls() > calls, "the fused path ran");
            [fused, with_composite(|| run(&layer))]
        }
    };
}

observe_fn!(observe_lstm, LstmConfig, Lstm, vec![4 * D_HIDDEN]);
observe_fn!(observe_gru, GruConfig, Gru, vec![2, 3 * D_HIDDEN]);
observe_fn!(
    observe_simple_rnn,
    SimpleRnnConfig,
    SimpleRnn,
    vec![D_HIDDEN]
);

fn option_sets() -> Vec<(RecurrentOptions, bool)> {
    let base = RecurrentOptions::default();
    vec![
        (base, false),
        (base, true),
        (
            RecurrentOptions {
                go_backwards: true,
                ..base
            },
            true,
        ),
        (
            RecurrentOptions {
                zero_output_for_mask: true,
                ..base
            },
            false,
        ),
        (
            RecurrentOptions {
                learn_initial_state: true,
                ..base
            },
            false,
        ),
    ]
}

/// Named values a run produces (outputs, states, gradients).
type Observed = Vec<(String, Vec<f32>)>;

fn check(observe: fn(RecurrentOptions, bool) -> [Observed; 2]) {
    for threads in [1, 2] {
        set_threads(threads);
        for (options, given_initial) in option_sets() {
            let [fused, composite] = observe(options, given_initial);
            for ((what, f), (_, c)) in fused.iter().zip(&composite) {
                let context = format!(
                    "{what} ({options:?}, given initial {given_initial}, {threads} threads)"
                );
                assert_close_to_scale(f, c, TOLERANCE, &context);
            }
        }
    }
}

#[test]
fn fused_lstm_equals_composite_outputs_and_gradients() {
    check(observe_lstm);
}

#[test]
fn fused_gru_equals_composite_outputs_and_gradients() {
    check(observe_gru);
}

#[test]
fn fused_simple_rnn_equals_composite_outputs_and_gradients() {
    check(observe_simple_rnn);
}

/// An input that is data (no gradient asked) takes the fused backward without the input
/// gradient; the weight gradients still equal the composite loop's, for a single loop and a
/// `Bidirectional` pair, on 1 and 2 threads.
#[test]
fn data_input_gets_no_gradient_and_weights_still_match() {
    let device = device();
    let lstm = LstmConfig::new(D_INPUT, D_HIDDEN).init(&device);
    let both = LstmConfig::new(D_INPUT, D_HIDDEN)
        .with_return_sequences(true)
        .init_bidirectional(MergeMode::Concat, &device);
    let run = || {
        let x = tensor(
            values(BATCH * TIME * D_INPUT, 1, 1.0),
            [BATCH, TIME, D_INPUT],
        );
        let out = lstm.forward(x.clone(), Some(&mask(&device)), None).unwrap();
        let paired = both.forward(x.clone(), Some(&mask(&device))).unwrap();
        let (loss, _) = read_every_output(out.sequence, out.states);
        let (paired_loss, _) = read_every_output(paired.sequence, paired.states);
        let grads = (loss + paired_loss).backward();
        assert!(x.grad(&grads).is_none(), "data gets no gradient");
        let mut observed = vec![];
        for kernel in [
            lstm.cell.kernel.val(),
            lstm.cell.recurrent_kernel.val(),
            both.forward.cell.kernel.val(),
            both.backward.cell.recurrent_kernel.val(),
        ] {
            observed.push(f32_vec(kernel.grad(&grads).unwrap()));
        }
        observed
    };
    for threads in [1, 2] {
        set_threads(threads);
        let calls = fused_calls();
        let fused = run();
        assert!(fused_calls() > calls, "the fused path ran");
        let composite = with_composite(run);
        for (i, (f, c)) in fused.iter().zip(&composite).enumerate() {
            assert_close_to_scale(f, c, TOLERANCE, &format!("gradient {i}, {threads} threads"));
        }
    }
    set_threads(0);
}

/// Through `Layer::forward_value` a layer computes only the part it returns (the sequence,
/// or the final states for its last output; both when stateful): values and the gradients
/// of the input and the weights still equal the composite loop's, for every cell, with and
/// without `return_sequences`, `go_backwards` and `zero_output_for_mask`.
#[test]
fn layer_values_computing_one_part_equal_the_composite_loop() {
    fn observe<C: Cell>(layer: &Recurrent<C>) -> Vec<Vec<f32>> {
        let device = device();
        let x = tensor(
            values(BATCH * TIME * D_INPUT, 4, 1.0),
            [BATCH, TIME, D_INPUT],
        )
        .require_grad();
        let input = Value::sequence(x.clone(), Some(mask(&device)));
        let out = layer.forward_value(input).unwrap();
        let (values_out, loss) = match out {
            Value::Sequence {
                values: sequence,
                mask: out_mask,
            } => {
                assert!(out_mask.is_some(), "the mask passes on");
                let w = tensor(
                    values(BATCH * TIME * D_HIDDEN, 6, 1.0),
                    [BATCH, TIME, D_HIDDEN],
                );
                (f32_vec(sequence.clone()), (sequence * w).sum())
            }
            Value::Vector(last) => {
                let w = tensor(values(BATCH * D_HIDDEN, 7, 1.0), [BATCH, D_HIDDEN]);
                (f32_vec(last.clone()), (last * w).sum())
            }
            other => panic!("unexpected output {}", other.kind()),
        };
        let grads = loss.backward();
        let mut observed = vec![values_out, f32_vec(x.grad(&grads).unwrap())];
        for w in layer
            .cell
            .fused_parts()
            .map(|p| [p.kernel, p.recurrent_kernel])
            .unwrap()
        {
            observed.push(f32_vec(w.grad(&grads).unwrap()));
        }
        observed
    }
    fn check<C: Cell>(layer: Recurrent<C>, what: &str) {
        let calls = fused_calls();
        let fused = observe(&layer);
        assert!(fused_calls() > calls, "the fused path ran");
        let composite = with_composite(|| observe(&layer));
        for (i, (f, c)) in fused.iter().zip(&composite).enumerate() {
            assert_close_to_scale(f, c, TOLERANCE, &format!("{what}: observed {i}"));
        }
    }
    let device = device();
    for return_sequences in [false, true] {
        for (go_backwards, zero_output_for_mask) in [(false, false), (true, false), (false, true)] {
            let what = format!(
                "return_sequences {return_sequences}, go_backwards {go_backwards}, zero output {zero_output_for_mask}"
            );
            let mut lstm =
                LstmConfig::new(D_INPUT, D_HIDDEN).with_return_sequences(return_sequences);
            lstm.go_backwards = go_backwards;
            lstm.zero_output_for_mask = zero_output_for_mask;
            check(lstm.init(&device), &format!("LSTM {what}"));
            let mut gru = GruConfig::new(D_INPUT, D_HIDDEN).with_return_sequences(return_sequences);
            gru.go_backwards = go_backwards;
            gru.zero_output_for_mask = zero_output_for_mask;
            check(gru.init(&device), &format!("GRU {what}"));
        }
    }
}
