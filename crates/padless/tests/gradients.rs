//! Gradients of the recurrent layers, in float64: autodiff against central finite differences
//! (each cell alone, and whole masked sequences with holes and an all-masked row), exact
//! zeros at masked inputs, and no leak of NaN or inf from masked inputs.
//!
//! This binary configures the flex device for f64 once, before any tensor is made.

use burn::module::Param;
use burn::tensor::Tensor;
use padless::prelude::*;

mod common;
use common::{device, f64s, tensor};

/// Deterministic values in [-scale, scale].
fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Inputs of one check: x, kernel, recurrent kernel, bias, then the initial states.
struct Problem {
    batch: usize,
    time: usize,
    d_input: usize,
    d_hidden: usize,
    n_gates: usize,
    gru_bias: bool,
    n_states: usize,
    mask: Vec<bool>,
    options: RecurrentOptions,
}

impl Problem {
    fn shapes(&self) -> Vec<Vec<usize>> {
        let (b, t, d, h, n) = (
            self.batch,
            self.time,
            self.d_input,
            self.d_hidden,
            self.n_gates,
        );
        let bias = if self.gru_bias {
            vec![2, n * h]
        } else {
            vec![n * h]
        };
        let mut shapes = vec![vec![b, t, d], vec![d, n * h], vec![h, n * h], bias];
        shapes.extend((0..self.n_states).map(|_| vec![b, h]));
        shapes
    }

    fn start(&self) -> Vec<Vec<f64>> {
        self.shapes()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                values(
                    s.iter().product(),
                    100 + i as u64,
                    if i == 0 { 1.0 } else { 0.6 },
                )
            })
            .collect()
    }
}

/// Loss and gradients (w.r.t. every input of the problem) for one cell type.
type Eval = dyn Fn(&Problem, &[Vec<f64>]) -> (f64, Vec<Vec<f64>>);

macro_rules! eval_for {
    ($cell:ident, $bias_rank:literal) => {
        |p: &Problem, inputs: &[Vec<f64>]| -> (f64, Vec<Vec<f64>>) {
            let shapes = p.shapes();
            let shape = |i: usize| -> [usize; 2] { [shapes[i][0], shapes[i][1]] };
            let x = tensor(&inputs[0], [p.batch, p.time, p.d_input]).require_grad();
            let kernel = tensor(&inputs[1], shape(1)).require_grad();
            let recurrent = tensor(&inputs[2], shape(2)).require_grad();
            let bias = tensor::<$bias_rank>(&inputs[3], shapes[3].clone().try_into().unwrap())
                .require_grad();
            let states: Vec<Tensor<2>> = (0..p.n_states)
                .map(|i| tensor(&inputs[4 + i], shape(4 + i)).require_grad())
                .collect();
            let cell = padless::rnn::$cell {
                kernel: Param::from_tensor(kernel.clone()),
                recurrent_kernel: Param::from_tensor(recurrent.clone()),
                bias: Some(Param::from_tensor(bias.clone())),
            };
            let layer = Recurrent::new(cell, p.options, &device());
            let mask = Mask::from_bools(&p.mask, p.batch, p.time, &device()).unwrap();
            let out = layer
                .forward(x.clone(), Some(&mask), Some(states.clone()))
                .unwrap();
            let loss = weighted_sum(out);
            let grads = loss.backward();
            let grad =
                |t: &dyn Fn() -> Option<Vec<f64>>, n: usize| t().unwrap_or_else(|| vec![0.0; n]);
            let mut all = vec![
                grad(&|| x.grad(&grads).map(f64s), inputs[0].len()),
                grad(&|| kernel.grad(&grads).map(f64s), inputs[1].len()),
                grad(&|| recurrent.grad(&grads).map(f64s), inputs[2].len()),
                grad(&|| bias.grad(&grads).map(f64s), inputs[3].len()),
            ];
            for (i, s) in states.iter().enumerate() {
                all.push(grad(&|| s.grad(&grads).map(f64s), inputs[4 + i].len()));
            }
            (f64s(loss)[0], all)
        }
    };
}

/// A loss that touches every output and every final state with distinct weights.
fn weighted_sum(out: padless::rnn::RecurrentOutput) -> Tensor<1> {
    let [b, t, h] = out.sequence.dims();
    let mut loss = (out.sequence * tensor(&values(b * t * h, 7, 1.0), [b, t, h])).sum();
    for (i, s) in out.states.into_iter().enumerate() {
        loss = loss + (s * tensor(&values(b * h, 8 + i as u64, 1.0), [b, h])).sum();
    }
    loss
}

fn check_finite_differences(name: &str, p: &Problem, eval: &Eval) {
    let inputs = p.start();
    let (_, analytic) = eval(p, &inputs);
    let eps = 1e-6;
    let names = ["x", "kernel", "recurrent_kernel", "bias", "h0", "c0"];
    for (which, values) in inputs.iter().enumerate() {
        for i in 0..values.len() {
            let mut plus = inputs.clone();
            plus[which][i] += eps;
            let mut minus = inputs.clone();
            minus[which][i] -= eps;
            let numeric = (eval(p, &plus).0 - eval(p, &minus).0) / (2.0 * eps);
            let got = analytic[which][i];
            assert!(
                (got - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
                "{name}: d loss / d {}[{i}]: autodiff {got}, finite difference {numeric}",
                names[which]
            );
        }
    }
}

fn problem(
    n_gates: usize,
    gru_bias: bool,
    n_states: usize,
    mask: Vec<bool>,
    time: usize,
) -> Problem {
    Problem {
        batch: mask.len() / time,
        time,
        d_input: 2,
        d_hidden: 3,
        n_gates,
        gru_bias,
        n_states,
        mask,
        options: RecurrentOptions {
            return_sequences: true,
            ..Default::default()
        },
    }
}

const HOLES_AND_EMPTY_ROW: [bool; 12] = [
    true, false, true, true, // a hole
    false, false, false, false, // no valid step
    false, true, true, false, // pre and post padding
];

fn cells() -> Vec<(&'static str, usize, bool, usize, Box<Eval>)> {
    vec![
        (
            "simple_rnn",
            1,
            false,
            1,
            Box::new(eval_for!(SimpleRnnCell, 1)),
        ),
        ("lstm", 4, false, 2, Box::new(eval_for!(LstmCell, 1))),
        ("gru", 3, true, 1, Box::new(eval_for!(GruCell, 2))),
    ]
}

#[test]
fn each_cell_step_matches_finite_differences() {
    for (name, gates, gru_bias, states, eval) in cells() {
        let p = problem(gates, gru_bias, states, vec![true, true], 1);
        check_finite_differences(&format!("{name} single step"), &p, eval.as_ref());
    }
}

#[test]
fn masked_sequences_match_finite_differences() {
    for (name, gates, gru_bias, states, eval) in cells() {
        let mut p = problem(gates, gru_bias, states, HOLES_AND_EMPTY_ROW.to_vec(), 4);
        check_finite_differences(&format!("{name} masked"), &p, eval.as_ref());
        p.options.zero_output_for_mask = true;
        p.options.go_backwards = true;
        check_finite_differences(&format!("{name} masked backwards zero"), &p, eval.as_ref());
    }
}

#[test]
fn input_gradients_at_masked_steps_are_exactly_zero() {
    for (name, gates, gru_bias, states, eval) in cells() {
        let p = problem(gates, gru_bias, states, HOLES_AND_EMPTY_ROW.to_vec(), 4);
        let (_, grads) = eval(&p, &p.start());
        for (step, &valid) in p.mask.iter().enumerate() {
            let g = &grads[0][step * p.d_input..(step + 1) * p.d_input];
            if valid {
                assert!(
                    g.iter().any(|&v| v != 0.0),
                    "{name}: valid step {step} has zero gradient"
                );
            } else {
                assert!(
                    g.iter().all(|&v| v == 0.0),
                    "{name}: masked step {step} has gradient {g:?}"
                );
            }
        }
    }
}

#[test]
fn non_finite_inputs_at_masked_steps_change_no_output_or_gradient() {
    let device = device();
    let (b, t, d, h) = (3, 4, 2, 3);
    let mask = Mask::from_bools(&HOLES_AND_EMPTY_ROW, b, t, &device).unwrap();
    let clean = values(b * t * d, 3, 1.0);
    let mut dirty = clean.clone();
    for (step, &valid) in HOLES_AND_EMPTY_ROW.iter().enumerate() {
        if !valid {
            dirty[step * d] = f64::NAN;
            dirty[step * d + 1] = if step % 2 == 0 { f64::INFINITY } else { 1e20 };
        }
    }
    let layer = LstmConfig::new(d, h)
        .with_return_sequences(true)
        .init(&device);
    let run = |x: &[f64]| {
        let out = layer
            .forward(tensor(x, [b, t, d]), Some(&mask), None)
            .unwrap();
        let seq = out.sequence.clone();
        let grads = weighted_sum(out).backward();
        let kernel_grad = f64s(layer.cell.kernel.val().grad(&grads).unwrap());
        let recurrent_grad = f64s(layer.cell.recurrent_kernel.val().grad(&grads).unwrap());
        (f64s(seq), kernel_grad, recurrent_grad)
    };
    let (clean_out, clean_k, clean_r) = run(&clean);
    let (dirty_out, dirty_k, dirty_r) = run(&dirty);
    assert_eq!(clean_out, dirty_out);
    assert_eq!(clean_k, dirty_k);
    assert_eq!(clean_r, dirty_r);
    assert!(dirty_k.iter().all(|v| v.is_finite()));
}

#[test]
fn bidirectional_input_gradient_matches_finite_differences_and_is_zero_when_masked() {
    let device = device();
    let (b, t, d, h) = (3, 4, 2, 2);
    let mask = Mask::from_bools(&HOLES_AND_EMPTY_ROW, b, t, &device).unwrap();
    let layer = GruConfig::new(d, h)
        .with_return_sequences(true)
        .init_bidirectional(MergeMode::Concat, &device);
    let loss_of = |x: Tensor<3>| {
        let out = layer.forward(x, Some(&mask)).unwrap();
        let [_, _, w] = out.sequence.dims();
        (out.sequence * tensor(&values(b * t * w, 11, 1.0), [b, t, w])).sum()
            + out.last.clone().sum() * 0.5
    };
    let x0 = values(b * t * d, 5, 1.0);
    let x = tensor(&x0, [b, t, d]).require_grad();
    let grads = loss_of(x.clone()).backward();
    let analytic = f64s(x.grad(&grads).unwrap());
    let eps = 1e-6;
    for i in 0..x0.len() {
        let mut plus = x0.clone();
        plus[i] += eps;
        let mut minus = x0.clone();
        minus[i] -= eps;
        let numeric = (f64s(loss_of(tensor(&plus, [b, t, d])))[0]
            - f64s(loss_of(tensor(&minus, [b, t, d])))[0])
            / (2.0 * eps);
        assert!(
            (analytic[i] - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
            "x[{i}]: autodiff {}, finite difference {numeric}",
            analytic[i]
        );
        if !HOLES_AND_EMPTY_ROW[i / d] {
            assert_eq!(analytic[i], 0.0, "masked input {i}");
        }
    }
}
