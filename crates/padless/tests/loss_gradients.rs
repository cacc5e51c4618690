//! Loss gradients in float64: autodiff against central finite differences for every loss
//! (with a mask that has holes and an all-masked row, and per-step weights), gradients at
//! masked steps exactly 0, NaN / inf / 1e20 at masked steps changing neither the loss nor its
//! gradient (label-smoothed cross-entropies included), and custom losses getting masking and
//! weighting for free.
//!
//! This binary configures the flex device for f64 once, before any tensor is made.

use std::sync::Arc;

use burn::tensor::{Int, Tensor, TensorData};
use padless::losses::*;
use padless::prelude::*;

mod common;
use common::{device, f64s, tensor};

fn values(n: usize, seed: u64, low: f64, high: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            low + (high - low) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

const B: usize = 3;
const T: usize = 3;
const C: usize = 3;
/// Row 0: a hole; row 1: no valid step; row 2: post-padding.
const VALID: [bool; 9] = [true, false, true, false, false, false, true, true, false];

fn mask() -> Mask {
    Mask::from_bools(&VALID, B, T, &device()).unwrap()
}

struct Case {
    name: &'static str,
    kind: LossKind,
    sparse: bool,
    pred: (f64, f64),
    /// Label smoothing (categorical cross-entropies only).
    smoothing: f32,
}

fn cases() -> Vec<Case> {
    let case = |name, kind, sparse, pred| Case {
        name,
        kind,
        sparse,
        pred,
        smoothing: 0.0,
    };
    let smoothed = |name, kind, sparse, pred| Case {
        smoothing: 0.1,
        ..case(name, kind, sparse, pred)
    };
    let squared: Arc<dyn Fn(Tensor<3>, Tensor<3>) -> Tensor<3> + Send + Sync> =
        Arc::new(|y, p| (y - p).square());
    let per_step: Arc<dyn Fn(Tensor<3>, Tensor<3>) -> Tensor<2> + Send + Sync> =
        Arc::new(|y, p| (y - p).abs().sum_dim(2).squeeze_dim(2));
    vec![
        case(
            "cce",
            LossKind::CategoricalCrossentropy { from_logits: false },
            false,
            (0.1, 1.0),
        ),
        case(
            "cce_logits",
            LossKind::CategoricalCrossentropy { from_logits: true },
            false,
            (-2.0, 2.0),
        ),
        case(
            "scce",
            LossKind::SparseCategoricalCrossentropy { from_logits: false },
            true,
            (0.1, 1.0),
        ),
        case(
            "scce_logits",
            LossKind::SparseCategoricalCrossentropy { from_logits: true },
            true,
            (-2.0, 2.0),
        ),
        smoothed(
            "cce_smoothed",
            LossKind::CategoricalCrossentropy { from_logits: false },
            false,
            (0.1, 1.0),
        ),
        smoothed(
            "scce_logits_smoothed",
            LossKind::SparseCategoricalCrossentropy { from_logits: true },
            true,
            (-2.0, 2.0),
        ),
        case(
            "bce",
            LossKind::BinaryCrossentropy { from_logits: false },
            false,
            (0.05, 0.95),
        ),
        case(
            "bce_logits",
            LossKind::BinaryCrossentropy { from_logits: true },
            false,
            (-2.0, 2.0),
        ),
        case("mse", LossKind::MeanSquaredError, false, (-1.0, 1.0)),
        case("mae", LossKind::MeanAbsoluteError, false, (-1.0, 1.0)),
        case("huber", LossKind::Huber { delta: 0.5 }, false, (-1.5, 1.5)),
        case(
            "custom_element",
            LossKind::Custom(CustomLoss::PerElement(squared, LastAxis::Mean)),
            false,
            (-1.0, 1.0),
        ),
        case(
            "custom_step",
            LossKind::Custom(CustomLoss::PerStep(per_step)),
            false,
            (-1.0, 1.0),
        ),
    ]
}

fn targets(sparse: bool, dirty: bool) -> Targets {
    if sparse {
        let labels: Vec<i64> = (0..B * T)
            .map(|i| {
                if dirty && !VALID[i] {
                    99
                } else {
                    (i % C) as i64
                }
            })
            .collect();
        Targets::Labels(Tensor::<2, Int>::from_data(
            TensorData::new(labels, [B, T]),
            &device(),
        ))
    } else {
        let mut y = values(B * T * C, 3, 0.0, 1.0);
        for step in 0..B * T {
            if dirty && !VALID[step] {
                y[step * C] = f64::NAN;
                y[step * C + 1] = f64::INFINITY;
            }
        }
        Targets::Dense(tensor(&y, [B, T, C]))
    }
}

fn weights(dirty: bool) -> SampleWeight {
    let mut w = values(B * T, 5, 0.2, 2.0);
    for step in 0..B * T {
        if dirty && !VALID[step] {
            w[step] = f64::NAN;
        }
    }
    SampleWeight::PerStep(tensor(&w, [B, T]))
}

fn loss_value(
    case: &Case,
    pred: &[f64],
    reduction: Reduction,
    dirty: bool,
) -> (Tensor<1>, Tensor<3>) {
    let y_pred = tensor(pred, [B, T, C]).require_grad();
    let loss = SequenceLoss::new(case.kind.clone())
        .with_reduction(reduction)
        .with_label_smoothing(case.smoothing);
    let out = loss
        .compute(
            LossInputs::new(targets(case.sparse, dirty), y_pred.clone())
                .with_output_mask(Some(mask()))
                .with_sample_weight(weights(dirty)),
        )
        .unwrap();
    (out.value.unwrap(), y_pred)
}

fn prediction(case: &Case) -> Vec<f64> {
    let mut p = values(B * T * C, 11, case.pred.0, case.pred.1);
    // Keep MAE and Huber away from their kinks, where finite differences disagree.
    if matches!(
        case.kind,
        LossKind::MeanAbsoluteError | LossKind::Huber { .. } | LossKind::Custom(_)
    ) {
        let y = match targets(false, false) {
            Targets::Dense(y) => f64s(y),
            Targets::Labels(_) => unreachable!(),
        };
        for (p, y) in p.iter_mut().zip(y) {
            if (*p - y).abs() < 0.1 || ((*p - y).abs() - 0.5).abs() < 0.1 {
                *p = y + 0.3;
            }
        }
    }
    p
}

#[test]
fn every_loss_gradient_matches_finite_differences_and_is_zero_at_masked_steps() {
    for case in cases() {
        for reduction in [Reduction::Sum, Reduction::Mean, Reduction::WeightedMean] {
            let pred = prediction(&case);
            let (value, y_pred) = loss_value(&case, &pred, reduction, false);
            let grads = value.backward();
            let analytic = f64s(y_pred.grad(&grads).unwrap());
            let eps = 1e-6;
            for i in 0..pred.len() {
                let mut plus = pred.clone();
                plus[i] += eps;
                let mut minus = pred.clone();
                minus[i] -= eps;
                let numeric = (f64s(loss_value(&case, &plus, reduction, false).0)[0]
                    - f64s(loss_value(&case, &minus, reduction, false).0)[0])
                    / (2.0 * eps);
                assert!(
                    (analytic[i] - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
                    "{} {reduction:?} y_pred[{i}]: autodiff {}, finite difference {numeric}",
                    case.name,
                    analytic[i]
                );
                if !VALID[i / C] {
                    assert_eq!(analytic[i], 0.0, "{} masked y_pred[{i}]", case.name);
                }
            }
        }
    }
}

#[test]
fn non_finite_values_at_masked_steps_change_neither_loss_nor_gradient() {
    for case in cases() {
        for reduction in [Reduction::Sum, Reduction::Mean, Reduction::WeightedMean] {
            let clean = prediction(&case);
            let mut dirty = clean.clone();
            for step in 0..B * T {
                if !VALID[step] {
                    dirty[step * C] = f64::NAN;
                    dirty[step * C + 1] = f64::INFINITY;
                    dirty[step * C + 2] = 1e20;
                }
            }
            let run = |pred: &[f64], dirty_data: bool| {
                let (value, y_pred) = loss_value(&case, pred, reduction, dirty_data);
                let v = f64s(value.clone())[0];
                let g = f64s(y_pred.grad(&value.backward()).unwrap());
                (v, g)
            };
            let (clean_value, clean_grad) = run(&clean, false);
            let (dirty_value, dirty_grad) = run(&dirty, true);
            assert!(clean_value.is_finite(), "{}", case.name);
            assert_eq!(clean_value, dirty_value, "{} {reduction:?} loss", case.name);
            assert_eq!(
                clean_grad, dirty_grad,
                "{} {reduction:?} gradient",
                case.name
            );
        }
    }
}

#[test]
fn an_all_masked_batch_gives_zero_not_nan() {
    let none = Mask::from_bools(&[false; B * T], B, T, &device()).unwrap();
    for reduction in [Reduction::Sum, Reduction::Mean, Reduction::WeightedMean] {
        let loss = SequenceLoss::new(LossKind::CategoricalCrossentropy { from_logits: true })
            .with_reduction(reduction);
        let out = loss
            .compute(
                LossInputs::new(
                    targets(false, true),
                    tensor(&[f64::NAN; B * T * C], [B, T, C]),
                )
                .with_output_mask(Some(none.clone())),
            )
            .unwrap();
        assert_eq!(f64s(out.value.unwrap()), vec![0.0], "{reduction:?}");
    }
}

#[test]
fn a_custom_per_element_loss_equals_the_built_in_one_with_weights_and_masks() {
    let squared: Arc<dyn Fn(Tensor<3>, Tensor<3>) -> Tensor<3> + Send + Sync> =
        Arc::new(|y, p| (y - p).square());
    let pred = values(B * T * C, 13, -1.0, 1.0);
    for reduction in [Reduction::Sum, Reduction::Mean, Reduction::WeightedMean] {
        let run = |kind: LossKind| {
            let loss = SequenceLoss::new(kind).with_reduction(reduction);
            let element_weight =
                SampleWeight::PerElement(tensor(&values(B * T * C, 17, 0.1, 2.0), [B, T, C]));
            let out = loss
                .compute(
                    LossInputs::new(targets(false, false), tensor(&pred, [B, T, C]))
                        .with_output_mask(Some(mask()))
                        .with_sample_weight(element_weight),
                )
                .unwrap();
            f64s(out.value.unwrap())[0]
        };
        let custom = run(LossKind::Custom(CustomLoss::PerElement(
            squared.clone(),
            LastAxis::Mean,
        )));
        let built_in = run(LossKind::MeanSquaredError);
        assert!(
            (custom - built_in).abs() < 1e-12,
            "{reduction:?}: {custom} vs {built_in}"
        );
    }
}
