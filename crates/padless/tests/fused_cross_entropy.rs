//! The fused categorical cross-entropy (one operation on the CPU backend in f32) against the
//! composite loss (burn operations, checked against finite differences in
//! `loss_gradients.rs` and against numpy in `losses.rs`): the same values and the same
//! gradients for dense and sparse targets, logits and probabilities, with and without label
//! smoothing, class and per-step sample weights, a mask with a hole and an all-masked row;
//! NaN at masked steps reaches neither.

use burn::tensor::{Int, Tensor, TensorData};
use padless::cpu::with_composite;
use padless::losses::*;
use padless::prelude::*;

const B: usize = 3;
const T: usize = 4;
const C: usize = 5;
/// Row 0: a hole at step 1; row 1: no valid step; row 2: post-padded to 3 steps.
const VALID: [bool; 12] = [
    true, false, true, true, false, false, false, false, true, true, true, false,
];

fn values(n: usize, seed: u64, low: f32, high: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            low + (high - low) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Case {
    sparse: bool,
    from_logits: bool,
    epsilon: f32,
    class_weight: bool,
    sample_weight: bool,
}

/// The loss value and its gradient with respect to the predictions.
fn loss_and_gradient(case: Case) -> (f32, Vec<f32>) {
    let device = training_device();
    let mut pred = if case.from_logits {
        values(B * T * C, 3, -3.0, 3.0)
    } else {
        values(B * T * C, 3, 0.05, 1.0)
    };
    // NaN at a masked step must reach neither the value nor the gradient.
    pred[C] = f32::NAN;
    let y_pred = tensor_from(&pred, [B, T, C], &device).require_grad();
    let labels: Vec<i64> = (0..B * T).map(|i| ((i * 3 + 1) % C) as i64).collect();
    let targets = if case.sparse {
        Targets::Labels(Tensor::<2, Int>::from_data(
            TensorData::new(labels, [B, T]),
            &device,
        ))
    } else {
        // Soft targets that do not sum to 1 exercise the general gradient.
        Targets::Dense(tensor_from(
            &values(B * T * C, 5, 0.0, 0.6),
            [B, T, C],
            &device,
        ))
    };
    let kind = if case.sparse {
        LossKind::SparseCategoricalCrossentropy {
            from_logits: case.from_logits,
        }
    } else {
        LossKind::CategoricalCrossentropy {
            from_logits: case.from_logits,
        }
    };
    let mut loss = SequenceLoss::new(kind).with_label_smoothing(case.epsilon);
    if case.class_weight {
        loss = loss.with_class_weight(vec![1.0, 2.0, 0.5, 1.5, 3.0]);
    }
    let mask = Mask::from_bools(&VALID, B, T, &device).unwrap();
    let mut inputs = LossInputs::new(targets, y_pred.clone()).with_output_mask(Some(mask));
    if case.sample_weight {
        let w = tensor_from(&values(B * T, 7, 0.5, 2.0), [B, T], &device);
        inputs = inputs.with_sample_weight(SampleWeight::PerStep(w));
    }
    let value = loss.compute(inputs).unwrap().value.unwrap();
    let grads = value.clone().backward();
    let gradient = f32_vec(y_pred.grad(&grads).unwrap());
    (f32_vec(value)[0], gradient)
}

#[test]
fn fused_cross_entropy_equals_the_composite_loss_in_value_and_gradient() {
    let mut cases = Vec::new();
    for sparse in [false, true] {
        for from_logits in [false, true] {
            for epsilon in [0.0, 0.1] {
                cases.push(Case {
                    sparse,
                    from_logits,
                    epsilon,
                    class_weight: false,
                    sample_weight: false,
                });
            }
        }
    }
    for (class_weight, sample_weight) in [(true, false), (false, true), (true, true)] {
        cases.push(Case {
            sparse: true,
            from_logits: true,
            epsilon: 0.1,
            class_weight,
            sample_weight,
        });
        cases.push(Case {
            sparse: false,
            from_logits: false,
            epsilon: 0.0,
            class_weight,
            sample_weight,
        });
    }
    for case in cases {
        let (value, gradient) = loss_and_gradient(case);
        let (want, want_gradient) = with_composite(|| loss_and_gradient(case));
        assert!(value.is_finite() && value > 0.0, "{case:?}: {value}");
        assert!(
            (value - want).abs() <= 1e-5 * want.abs(),
            "{case:?}: value {value} vs composite {want}"
        );
        let scale = want_gradient.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.0, "{case:?}: no gradient");
        for (i, (g, w)) in gradient.iter().zip(&want_gradient).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * scale,
                "{case:?}: d y_pred[{i}] {g} vs composite {w}"
            );
            if !VALID[i / C] {
                assert_eq!(*g, 0.0, "{case:?}: masked step {} gets a gradient", i / C);
            }
        }
    }
}
