//! A decoder fed by RepeatVector computes only the steps a target-masked loss reads
//! (`Recurrent::forward_repeated_prefix`, `Sequential::forward_reading`): the read outputs,
//! the loss and every gradient equal the full run's, on the fused and the composite path.

use burn::tensor::{Device, Tensor, TensorData};
use padless::cpu::with_composite;
use padless::prelude::*;
use padless::tensor_util::f32_vec;

mod common;
use common::{assert_close_to_scale, values};

const TOLERANCE: f32 = 1e-5;

/// The device's random generator is shared by the tests of this binary, which run in
/// parallel: each seeds it and draws its weights under this lock.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn device() -> Device {
    Device::flex().autodiff()
}

const B: usize = 4;
const T_IN: usize = 5;
const T_OUT: usize = 7;
const D: usize = 3;
const H: usize = 6;
const V: usize = 4;

/// The seed question's model: Masking, LSTM, RepeatVector, LSTM(return_sequences),
/// TimeDistributed(Dense softmax).
fn model(device: &Device) -> Sequential {
    Sequential::new(vec![
        AnyLayer::Masking(Masking::new(0.0)),
        AnyLayer::Lstm(LstmConfig::new(D, H).init(device)),
        AnyLayer::RepeatVector(RepeatVector::new(T_OUT)),
        AnyLayer::Lstm(
            LstmConfig::new(H, H)
                .with_return_sequences(true)
                .init(device),
        ),
        AnyLayer::TimeDistributed(TimeDistributed::new(
            DenseConfig::new(H, V)
                .with_activation(ActivationKind::Softmax)
                .init(device),
        )),
    ])
}

/// Inputs with zeros at padded steps (input lengths 5, 2, 4, 1) and one-hot targets.
fn batch(device: &Device) -> (Tensor<3>, Tensor<3>) {
    let in_lengths = [5, 2, 4, 1];
    let mut x = values(B * T_IN * D, 1, 1.0);
    for (b, &len) in in_lengths.iter().enumerate() {
        for t in len..T_IN {
            x[(b * T_IN + t) * D..(b * T_IN + t + 1) * D].fill(0.0);
        }
    }
    let mut y = vec![0.0f32; B * T_OUT * V];
    for (i, v) in values(B * T_OUT, 2, 1.0).iter().enumerate() {
        let class = ((v + 1.0) * 2.0).clamp(0.0, 3.0) as usize;
        y[i * V + class] = 1.0;
    }
    (
        Tensor::from_data(TensorData::new(x, [B, T_IN, D]), device),
        Tensor::from_data(TensorData::new(y, [B, T_OUT, V]), device),
    )
}

/// Loss, the outputs at read steps and the gradients of every weight and of the inputs, with
/// the decoder skipping unread steps or not.
fn observe(skip: bool, target_lengths: &[usize]) -> Vec<(String, Vec<f32>)> {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = device();
    device.seed(5);
    let model = model(&device);
    let (x, y) = batch(&device);
    let x = x.require_grad();
    let input = Value::sequence(x.clone(), None);
    let output = if skip {
        model.forward_reading(input, Some(target_lengths)).unwrap()
    } else {
        model.forward(input).unwrap()
    };
    let Value::Sequence {
        values: y_pred,
        mask,
    } = output
    else {
        panic!("a sequence")
    };
    let loss = SequenceLoss::new(LossKind::CategoricalCrossentropy { from_logits: false })
        .compute(
            LossInputs::new(Targets::Dense(y), y_pred.clone())
                .with_output_mask(mask)
                .with_target_mask(TargetMask::Lengths(target_lengths.to_vec())),
        )
        .unwrap();
    let value = loss.value.unwrap();
    let grads = value.backward();
    let mut observed = vec![("loss".to_string(), f32_vec(value))];
    let read: Vec<f32> = f32_vec(y_pred)
        .chunks(V)
        .enumerate()
        .filter(|(i, _)| i % T_OUT < target_lengths[i / T_OUT])
        .flat_map(|(_, p)| p.to_vec())
        .collect();
    observed.push(("outputs at read steps".into(), read));
    observed.push(("d x".into(), f32_vec(x.grad(&grads).unwrap())));
    for (name, layer) in model.names().iter().zip(&model.layers) {
        let (matrices, bias) = match layer {
            AnyLayer::Lstm(l) => (
                vec![l.cell.kernel.val(), l.cell.recurrent_kernel.val()],
                l.cell.bias.as_ref().unwrap().val(),
            ),
            AnyLayer::TimeDistributed(td) => (
                vec![td.inner.kernel.val()],
                td.inner.bias.as_ref().unwrap().val(),
            ),
            _ => continue,
        };
        for (k, t) in matrices.into_iter().enumerate() {
            observed.push((format!("d {name}[{k}]"), f32_vec(t.grad(&grads).unwrap())));
        }
        observed.push((
            format!("d {name} bias"),
            f32_vec(bias.grad(&grads).unwrap()),
        ));
    }
    observed
}

fn check(target_lengths: &[usize]) {
    for composite in [false, true] {
        let run = |skip| {
            if composite {
                with_composite(|| observe(skip, target_lengths))
            } else {
                observe(skip, target_lengths)
            }
        };
        let (skipping, full) = (run(true), run(false));
        assert_eq!(skipping.len(), 2 + 1 + 3 + 3 + 2);
        for ((what, a), (_, b)) in skipping.iter().zip(&full) {
            assert_close_to_scale(a, b, TOLERANCE, &format!("{what} (composite: {composite})"));
        }
    }
}

#[test]
fn decoder_skipping_unread_steps_keeps_loss_and_gradients() {
    // Rows reading all 7 steps, 3, none, and 5.
    check(&[7, 3, 0, 5]);
}

#[test]
fn decoder_skipping_with_every_step_read_is_the_full_run() {
    check(&[7; B]);
}

#[test]
fn prefix_run_computes_the_prefix_and_carries_or_zeros_the_rest() {
    for zero_output in [false, true] {
        prefix_run(zero_output);
    }
}

fn prefix_run(zero_output: bool) {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = device();
    device.seed(9);
    let layer = LstmConfig::new(D, H)
        .with_return_sequences(true)
        .with_zero_output_for_mask(zero_output)
        .init(&device);
    let vector = Tensor::<2>::from_data(TensorData::new(values(B * D, 3, 1.0), [B, D]), &device);
    let lengths = [7, 3, 0, 1];
    for composite in [false, true] {
        let run = |f: &dyn Fn() -> RecurrentOutput| {
            if composite { with_composite(f) } else { f() }
        };
        let full = run(&|| layer.forward_repeated(vector.clone(), T_OUT).unwrap());
        let prefix = run(&|| {
            layer
                .forward_repeated_prefix(vector.clone(), T_OUT, &lengths)
                .unwrap()
        });
        assert!(prefix.mask.is_none());
        let (full_seq, prefix_seq) = (f32_vec(full.sequence), f32_vec(prefix.sequence));
        let last = f32_vec(prefix.last);
        for (b, &len) in lengths.iter().enumerate() {
            for t in 0..T_OUT {
                let at = (b * T_OUT + t) * H;
                let got = &prefix_seq[at..at + H];
                if t < len {
                    assert_close_to_scale(
                        got,
                        &full_seq[at..at + H],
                        TOLERANCE,
                        &format!("row {b} step {t}"),
                    );
                } else if zero_output || len == 0 {
                    assert!(got.iter().all(|&v| v == 0.0), "row {b} step {t}: {got:?}");
                } else {
                    let carried = (b * T_OUT + len - 1) * H;
                    assert_close_to_scale(
                        got,
                        &full_seq[carried..carried + H],
                        TOLERANCE,
                        &format!("row {b} t {t}"),
                    );
                }
            }
            // The final state is the one after the row's last computed step (none: zeros).
            let expected = if len == 0 {
                vec![0.0; H]
            } else {
                full_seq[(b * T_OUT + len - 1) * H..(b * T_OUT + len) * H].to_vec()
            };
            assert_close_to_scale(
                &last[b * H..(b + 1) * H],
                &expected,
                TOLERANCE,
                &format!("row {b} state"),
            );
        }
    }
    let too_long = layer.forward_repeated_prefix(vector, T_OUT, &[8, 1, 1, 1]);
    assert!(too_long.is_err());
}
