//! Loss gradients in float64: autodiff against central finite differences for every loss
//! (with a mask that has holes and an all-masked row, and per-step weights; the categorical
//! cross-entropies also with per-element weights, sparse labels included), gradients at
//! masked steps exactly 0, NaN / inf / 1e20 at masked steps changing neither the loss nor its
//! gradient (label-smoothed cross-entropies included), sparse labels with per-element weights
//! equal to the dense one-hot loss, and custom losses getting masking and weighting for free.
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
    /// Per-element weights `[B, T, C]` instead of per-step weights.
    element_weights: bool,
}

fn cases() -> Vec<Case> {
    let case = |name, kind, sparse, pred| Case {
        name,
        kind,
        sparse,
        pred,
        smoothing: 0.0,
        element_weights: false,
    };
    let smoothed = |name, kind, sparse, pred| Case {
        smoothing: 0.1,
        ..case(name, kind, sparse, pred)
    };
    let per_element = |name, kind, sparse, pred, smoothing| Case {
        smoothing,
        element_weights: true,
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
        per_element(
            "scce_element",
            LossKind::SparseCategoricalCrossentropy { from_logits: false },
            true,
            (0.1, 1.0),
            0.0,
        ),
        per_element(
            "scce_logits_element",
            LossKind::SparseCategoricalCrossentropy { from_logits: true },
            true,
            (-2.0, 2.0),
            0.0,
        ),
        per_element(
            "scce_smoothed_element",
            LossKind::SparseCategoricalCrossentropy { from_logits: false },
            true,
            (0.1, 1.0),
            0.1,
        ),
        per_element(
            "cce_logits_smoothed_element",
            LossKind::CategoricalCrossentropy { from_logits: true },
            false,
            (-2.0, 2.0),
            0.1,
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

fn weights(element: bool, dirty: bool) -> SampleWeight {
    if element {
        let mut w = element_weight_values();
        for step in 0..B * T {
            if dirty && !VALID[step] {
                w[step * C..(step + 1) * C].copy_from_slice(&[f64::NAN, f64::INFINITY, 1e20]);
            }
        }
        return SampleWeight::PerElement(tensor(&w, [B, T, C]));
    }
    let mut w = values(B * T, 5, 0.2, 2.0);
    for step in 0..B * T {
        if dirty && !VALID[step] {
            w[step] = f64::NAN;
        }
    }
    SampleWeight::PerStep(tensor(&w, [B, T]))
}

/// Per-element weights `[B, T, C]`, different at every class.
fn element_weight_values() -> Vec<f64> {
    values(B * T * C, 19, 0.2, 2.0)
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
                .with_sample_weight(weights(case.element_weights, dirty)),
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

/// Sparse labels with per-element weights `w [B, T, C]` are the dense cross-entropy of the
/// labels' one-hot targets (label-smoothed alike) with the same weights: the one-hot's terms
/// are 0 but at the label, so `w[b, t, label]` is the weight that counts. Values and
/// gradients agree for `sum`, `mean` and `none`. `weighted_mean` divides by the sum of the
/// weights at the labels, so without smoothing it equals the dense loss with per-step weights
/// `w[b, t, label]`; with smoothing (the smoothed target's weight `Σ_c t_c w_c`) it equals the
/// dense loss when the weights are the same for every class of a step. Labels at masked
/// steps are out of range and never read.
#[test]
fn sparse_labels_with_per_element_weights_equal_the_dense_one_hot_loss() {
    let labels: Vec<i64> = match targets(true, true) {
        Targets::Labels(l) => padless::tensor_util::i64_vec(l),
        Targets::Dense(_) => unreachable!(),
    };
    let mut one_hot = vec![0.0; B * T * C];
    for (step, &label) in labels.iter().enumerate().filter(|(s, _)| VALID[*s]) {
        one_hot[step * C + label as usize] = 1.0;
    }
    let w = element_weight_values();
    let w_at_label: Vec<f64> = (0..B * T)
        .map(|step| match VALID[step] {
            true => w[step * C + labels[step] as usize],
            false => f64::NAN,
        })
        .collect();
    // The same weight for every class of a step.
    let w_per_step = values(B * T, 23, 0.2, 2.0);
    let w_flat: Vec<f64> = w_per_step.iter().flat_map(|&v| [v; C]).collect();
    let pred = values(B * T * C, 29, -2.0, 2.0);
    let run = |sparse: bool,
               from_logits: bool,
               smoothing: f32,
               reduction: Reduction,
               weight: SampleWeight| {
        let (kind, y_true) = if sparse {
            (
                LossKind::SparseCategoricalCrossentropy { from_logits },
                targets(true, true),
            )
        } else {
            (
                LossKind::CategoricalCrossentropy { from_logits },
                Targets::Dense(tensor(&one_hot, [B, T, C])),
            )
        };
        // Probabilities: the logits' softmax-free positive counterpart.
        let pred: Vec<f64> = match from_logits {
            true => pred.clone(),
            false => pred.iter().map(|x| 0.1 + x.abs()).collect(),
        };
        let y_pred = tensor(&pred, [B, T, C]).require_grad();
        let out = SequenceLoss::new(kind)
            .with_reduction(reduction)
            .with_label_smoothing(smoothing)
            .compute(
                LossInputs::new(y_true, y_pred.clone())
                    .with_output_mask(Some(mask()))
                    .with_sample_weight(weight),
            )
            .unwrap();
        let value = out.value.unwrap_or_else(|| out.per_step.sum().reshape([1]));
        let grad = f64s(y_pred.grad(&value.clone().backward()).unwrap());
        (f64s(value), grad)
    };
    let element = |v: &[f64]| SampleWeight::PerElement(tensor(v, [B, T, C]));
    for from_logits in [false, true] {
        for smoothing in [0.0, 0.1] {
            for reduction in [
                Reduction::Sum,
                Reduction::Mean,
                Reduction::None,
                Reduction::WeightedMean,
            ] {
                let what = format!("from_logits {from_logits}, ε {smoothing}, {reduction:?}");
                let (sparse, dense) = match (reduction, smoothing) {
                    (Reduction::WeightedMean, 0.0) => (
                        run(true, from_logits, smoothing, reduction, element(&w)),
                        run(
                            false,
                            from_logits,
                            smoothing,
                            reduction,
                            SampleWeight::PerStep(tensor(&w_at_label, [B, T])),
                        ),
                    ),
                    (Reduction::WeightedMean, _) => (
                        run(true, from_logits, smoothing, reduction, element(&w_flat)),
                        run(false, from_logits, smoothing, reduction, element(&w_flat)),
                    ),
                    _ => (
                        run(true, from_logits, smoothing, reduction, element(&w)),
                        run(false, from_logits, smoothing, reduction, element(&w)),
                    ),
                };
                assert!(sparse.0[0].is_finite() && sparse.0[0] != 0.0, "{what}");
                for (got, want) in [(&sparse.0, &dense.0), (&sparse.1, &dense.1)] {
                    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                            "{what} [{i}]: sparse {g}, dense {w}"
                        );
                    }
                }
            }
        }
    }
}
