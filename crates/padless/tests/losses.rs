//! Losses against an independent float64 numpy reference (`fixtures/make_loss_reference.py`):
//! every loss x sample-weight shape x reduction x mask source (sparse labels with per-element
//! weights included), class weights, label smoothing with per-element weights, all-masked
//! batches; then the seed question, non-finite values at masked steps, and bad input.
//! Tolerance: |got - want| <= 1e-5 * max(1, |want|).

use burn::tensor::{Device, Int, Tensor, TensorData};
use padless::losses::*;
use padless::prelude::*;
use serde_json::Value as Json;

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ints(v: &Json) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn close(got: f32, want: f32) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

fn loss_kind(case: &Json) -> LossKind {
    match case["loss"].as_str().unwrap() {
        "categorical_crossentropy" => LossKind::CategoricalCrossentropy { from_logits: false },
        "categorical_crossentropy_logits" => {
            LossKind::CategoricalCrossentropy { from_logits: true }
        }
        "sparse_categorical_crossentropy" => {
            LossKind::SparseCategoricalCrossentropy { from_logits: false }
        }
        "sparse_categorical_crossentropy_logits" => {
            LossKind::SparseCategoricalCrossentropy { from_logits: true }
        }
        "binary_crossentropy" => LossKind::BinaryCrossentropy { from_logits: false },
        "binary_crossentropy_logits" => LossKind::BinaryCrossentropy { from_logits: true },
        "mse" => LossKind::MeanSquaredError,
        "mae" => LossKind::MeanAbsoluteError,
        "huber" => LossKind::Huber {
            delta: case["huber_delta"].as_f64().unwrap() as f32,
        },
        other => panic!("unknown loss {other}"),
    }
}

fn reduction(name: &str) -> Reduction {
    match name {
        "sum" => Reduction::Sum,
        "mean" => Reduction::Mean,
        "weighted_mean" => Reduction::WeightedMean,
        "none" => Reduction::None,
        other => panic!("unknown reduction {other}"),
    }
}

fn case_inputs(case: &Json, device: &Device) -> (SequenceLoss, LossInputs, [usize; 3]) {
    let dims = ["batch", "time", "classes"].map(|k| case[k].as_u64().unwrap() as usize);
    let [b, t, c] = dims;
    let y_pred = tensor_from(&floats(&case["y_pred"]), [b, t, c], device);
    let y_true = if case["labels"].is_null() {
        Targets::Dense(tensor_from(&floats(&case["y_true"]), [b, t, c], device))
    } else {
        Targets::Labels(Tensor::<2, Int>::from_data(
            TensorData::new(ints(&case["labels"]), [b, t]),
            device,
        ))
    };
    let mut inputs = LossInputs::new(y_true, y_pred);
    if !case["output_mask"].is_null() {
        let bits: Vec<bool> = ints(&case["output_mask"]).iter().map(|&v| v != 0).collect();
        inputs = inputs.with_output_mask(Some(Mask::from_bools(&bits, b, t, device).unwrap()));
    }
    let tm = &case["target_mask"];
    if !tm.is_null() {
        let target_mask = match tm["kind"].as_str().unwrap() {
            "lengths" => {
                TargetMask::Lengths(ints(&tm["lengths"]).iter().map(|&l| l as usize).collect())
            }
            "padding_label" => TargetMask::PaddingLabel(tm["label"].as_i64().unwrap()),
            "padding_onehot" => TargetMask::PaddingVector(floats(&tm["vector"])),
            "bool" => {
                let bits: Vec<bool> = ints(&tm["mask"]).iter().map(|&v| v != 0).collect();
                TargetMask::Explicit(Mask::from_bools(&bits, b, t, device).unwrap())
            }
            other => panic!("unknown target mask {other}"),
        };
        inputs = inputs.with_target_mask(target_mask);
    }
    let sw = &case["sample_weight"];
    if !sw.is_null() {
        let shape: Vec<usize> = ints(&sw["shape"]).iter().map(|&v| v as usize).collect();
        inputs = inputs.with_sample_weight(
            SampleWeight::from_values(&floats(&sw["values"]), &shape, device).unwrap(),
        );
    }
    let mut loss = SequenceLoss::new(loss_kind(case))
        .with_reduction(reduction(case["reduction"].as_str().unwrap()));
    if !case["class_weight"].is_null() {
        loss = loss.with_class_weight(floats(&case["class_weight"]));
    }
    if let Some(epsilon) = case.get("label_smoothing") {
        loss = loss.with_label_smoothing(epsilon.as_f64().unwrap() as f32);
    }
    (loss, inputs, dims)
}

fn fixtures() -> Json {
    serde_json::from_str(include_str!("fixtures/loss_reference.json")).unwrap()
}

#[test]
fn every_loss_weight_reduction_and_mask_source_matches_the_numpy_reference() {
    let device = default_device();
    let fixtures = fixtures();
    let cases = fixtures["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "{} cases", cases.len());
    // Sparse labels with per-element weights, and label smoothing, are among them.
    let sparse_per_element = cases
        .iter()
        .filter(|c| !c["labels"].is_null())
        .filter(|c| c["sample_weight"]["shape"].as_array().map(Vec::len) == Some(3))
        .count();
    assert!(
        sparse_per_element >= 40,
        "{sparse_per_element} sparse [B,T,C]"
    );
    let smoothed = cases.iter().filter(|c| c.get("label_smoothing").is_some());
    assert!(smoothed.count() >= 40);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (loss, inputs, _) = case_inputs(case, &device);
        let out = loss
            .compute(inputs)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_mask: Vec<bool> = ints(&case["expected_mask"])
            .iter()
            .map(|&v| v != 0)
            .collect();
        assert_eq!(out.mask.to_vec(), want_mask, "{name}: mask");
        if case["reduction"] == "none" {
            let want = floats(&case["expected"]);
            let got = f32_vec(out.per_step);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(close(*g, *w), "{name}[{i}]: got {g}, want {w}");
            }
        } else {
            let want = case["expected"].as_f64().unwrap() as f32;
            let got = f32_vec(out.value.unwrap())[0];
            assert!(close(got, want), "{name}: got {got}, want {want}");
        }
    }
}

#[test]
fn the_seed_question_fixture_differs_from_the_unmasked_mean() {
    let device = default_device();
    let fixtures = fixtures();
    let case = fixtures["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "seed_question")
        .unwrap();
    let (loss, inputs, _) = case_inputs(case, &device);
    let masked = f32_vec(loss.compute(inputs).unwrap().value.unwrap())[0];
    assert!(close(masked, case["expected"].as_f64().unwrap() as f32));
    let unmasked = case["unmasked_expected"].as_f64().unwrap() as f32;
    assert!(
        (masked - unmasked).abs() > 1e-3,
        "masked {masked} vs unmasked {unmasked}"
    );
}

/// The seed question's model: the encoder consumes the input mask, RepeatVector makes none,
/// so the output has no mask; the padding one-hot `[0, 0, 1]` of the targets gives it back.
#[test]
fn seed_question_model_output_with_a_target_mask_from_the_padding_one_hot() {
    let device = default_device();
    device.seed(7);
    let model = Sequential::new(vec![
        AnyLayer::Masking(Masking::new(0.0)),
        AnyLayer::Lstm(LstmConfig::new(3, 10).init(&device)),
        AnyLayer::RepeatVector(RepeatVector::new(5)),
        AnyLayer::Lstm(
            LstmConfig::new(10, 10)
                .with_return_sequences(true)
                .init(&device),
        ),
        AnyLayer::TimeDistributed(TimeDistributed::new(
            DenseConfig::new(10, 3)
                .with_activation(ActivationKind::Softmax)
                .init(&device),
        )),
    ]);
    let x: Vec<f32> = [
        [0., 0., 0.],
        [0., 0., 0.],
        [1., 0., 0.],
        [0., 1., 0.],
        [0., 1., 0.],
        [0., 0., 0.],
        [0., 1., 0.],
        [1., 0., 0.],
        [0., 1., 0.],
        [0., 1., 0.],
    ]
    .concat();
    let y: Vec<f32> = [
        [0., 0., 1.],
        [0., 0., 1.],
        [1., 0., 0.],
        [0., 1., 0.],
        [0., 1., 0.],
        [0., 0., 1.],
        [0., 1., 0.],
        [1., 0., 0.],
        [0., 1., 0.],
        [0., 1., 0.],
    ]
    .concat();
    let spec = Spec::Sequence {
        time: Some(5),
        features: 3,
        masked: false,
    };
    let dropped_by = model
        .mask_dropped_by(spec)
        .unwrap()
        .expect("the encoder consumes the mask");
    assert_eq!(dropped_by, "lstm");
    let out = model
        .forward(Value::sequence(tensor_from(&x, [2, 5, 3], &device), None))
        .unwrap();
    assert!(out.mask().is_none(), "the mask was consumed by the encoder");
    let (probs, _) = out.into_sequence("seed").unwrap();
    let p = f32_vec(probs.clone());
    // By hand: -log p[target] over the 7 steps whose target is not '#'.
    let mut hand_masked = 0.0f32;
    let mut hand_all = 0.0f32;
    for step in 0..10 {
        let class = (0..3).find(|&c| y[step * 3 + c] == 1.0).unwrap();
        let total: f32 = p[step * 3..step * 3 + 3].iter().sum();
        let term = -(p[step * 3 + class] / total).ln();
        hand_all += term;
        if class != 2 {
            hand_masked += term;
        }
    }
    let (hand_masked, hand_all) = (hand_masked / 7.0, hand_all / 10.0);
    let loss = SequenceLoss::new(LossKind::CategoricalCrossentropy { from_logits: false });
    let targets = || Targets::Dense(tensor_from(&y, [2, 5, 3], &device));
    let masked = loss
        .compute(
            LossInputs::new(targets(), probs.clone())
                .with_target_mask(TargetMask::PaddingVector(vec![0.0, 0.0, 1.0]))
                .with_mask_dropped_by(dropped_by.clone()),
        )
        .unwrap();
    assert!(masked.warnings.is_empty());
    assert_eq!(masked.mask.lengths(), vec![3, 4]);
    let got = f32_vec(masked.value.unwrap())[0];
    assert!((got - hand_masked).abs() < 1e-6, "{got} vs {hand_masked}");
    let unmasked = loss
        .compute(LossInputs::new(targets(), probs).with_mask_dropped_by(dropped_by))
        .unwrap();
    let got_all = f32_vec(unmasked.value.unwrap())[0];
    assert!((got_all - hand_all).abs() < 1e-6);
    assert!(
        (got - got_all).abs() > 1e-4,
        "masked and unmasked losses differ"
    );
    assert_eq!(unmasked.warnings.len(), 1);
    assert!(
        unmasked.warnings[0].contains("consumed by lstm"),
        "{}",
        unmasked.warnings[0]
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let device = default_device();
    let y_pred = tensor_from(&[0.5; 12], [2, 2, 3], &device);
    let labels = |v: Vec<i64>| {
        Targets::Labels(Tensor::<2, Int>::from_data(
            TensorData::new(v, [2, 2]),
            &device,
        ))
    };
    let sparse = SequenceLoss::new(LossKind::SparseCategoricalCrossentropy { from_logits: false });
    let err = sparse
        .compute(LossInputs::new(labels(vec![0, 1, 3, 2]), y_pred.clone()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "loss: label 3 at [row 1, step 0] is outside 0..3"
    );
    // The same label at a masked step is never read.
    let mask = Mask::from_bools(&[true, true, false, true], 2, 2, &device).unwrap();
    sparse
        .compute(
            LossInputs::new(labels(vec![0, 1, 3, 2]), y_pred.clone()).with_output_mask(Some(mask)),
        )
        .unwrap();
    let weights = SampleWeight::from_values(&[1.0; 3], &[3], &device).unwrap();
    let err = sparse
        .compute(LossInputs::new(labels(vec![0; 4]), y_pred.clone()).with_sample_weight(weights))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sample weight: expected shape [2], [2, 1], [2, 2] or [2, 2, 3], found [3]"
    );
    let err = SampleWeight::from_values(&[1.0; 4], &[1, 2, 2, 1], &device).unwrap_err();
    assert!(err.to_string().contains("[batch, time, features]"), "{err}");
    let mse = SequenceLoss::new(LossKind::MeanSquaredError);
    let err = mse
        .compute(LossInputs::new(
            Targets::Dense(tensor_from(&[0.0; 8], [2, 2, 2], &device)),
            y_pred.clone(),
        ))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "y_true: expected shape [2, 2, 3] as y_pred, found [2, 2, 2]"
    );
    let err = mse
        .compute(LossInputs::new(labels(vec![0; 4]), y_pred.clone()))
        .unwrap_err();
    assert!(
        err.to_string().contains("does not take integer labels"),
        "{err}"
    );
    let mut y = vec![0.0; 12];
    y[4] = f32::NAN;
    let err = mse
        .compute(LossInputs::new(
            Targets::Dense(tensor_from(&y, [2, 2, 3], &device)),
            y_pred.clone(),
        ))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("[row 0, step 1] is NaN, expected a finite value"),
        "{err}"
    );
    let err = mse
        .compute(
            LossInputs::new(
                Targets::Dense(tensor_from(&[0.0; 12], [2, 2, 3], &device)),
                y_pred,
            )
            .with_target_mask(TargetMask::Lengths(vec![1, 3])),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "length 3 of row 1 does not fit in 2 time steps"
    );
}

/// Label smoothing against hand-worked values. Logits [1, 2, 3] with label 2: log p =
/// [1, 2, 3] - 3.4076059644 = [-2.4076060, -1.4076060, -0.4076060]; CE = 0.4076060; the mean
/// of -log p is 1.4076060; with ε = 0.1 the loss is 0.9 * 0.4076060 + 0.1 * 1.4076060 =
/// 0.5076060 (Keras' CategoricalCrossentropy(from_logits=True, label_smoothing=0.1) on the
/// one-hot [0, 0, 1] gives the same). A second, masked step holds NaN logits and must not
/// count; the dense form with explicitly smoothed targets and no smoothing agrees, and so does
/// the dense form of the one-hot with smoothing.
#[test]
fn label_smoothing_matches_hand_worked_values_and_skips_masked_steps() {
    let device = default_device();
    let logits = tensor_from(&[1.0, 2.0, 3.0, f32::NAN, 0.0, 0.0], [1, 2, 3], &device);
    let mask = Mask::from_lengths(&[1], 2, Padding::Post, &device).unwrap();
    let labels = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 0], [1, 2]), &device);
    let sparse = SequenceLoss::new(LossKind::SparseCategoricalCrossentropy { from_logits: true })
        .with_label_smoothing(0.1)
        .compute(
            LossInputs::new(Targets::Labels(labels), logits.clone())
                .with_output_mask(Some(mask.clone())),
        )
        .unwrap();
    let sparse = f32_vec(sparse.value.unwrap())[0];
    assert!((sparse - 0.507_606).abs() < 1e-5, "{sparse}");
    let smoothed = tensor_from(
        &[0.1 / 3.0, 0.1 / 3.0, 0.9 + 0.1 / 3.0, 0.0, 0.0, 0.0],
        [1, 2, 3],
        &device,
    );
    let dense = SequenceLoss::new(LossKind::CategoricalCrossentropy { from_logits: true })
        .compute(
            LossInputs::new(Targets::Dense(smoothed), logits.clone())
                .with_output_mask(Some(mask.clone())),
        )
        .unwrap();
    assert!((f32_vec(dense.value.unwrap())[0] - sparse).abs() < 1e-6);
    let one_hot = tensor_from(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0], [1, 2, 3], &device);
    let dense_smoothed = SequenceLoss::new(LossKind::CategoricalCrossentropy { from_logits: true })
        .with_label_smoothing(0.1)
        .compute(
            LossInputs::new(Targets::Dense(one_hot.clone()), logits.clone())
                .with_output_mask(Some(mask.clone())),
        )
        .unwrap();
    assert!((f32_vec(dense_smoothed.value.unwrap())[0] - sparse).abs() < 1e-6);
    let err = SequenceLoss::new(LossKind::MeanSquaredError)
        .with_label_smoothing(0.1)
        .compute(LossInputs::new(
            Targets::Dense(one_hot.clone()),
            logits.clone(),
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("categorical cross-entropy"),
        "{err}"
    );
    let err = SequenceLoss::new(LossKind::CategoricalCrossentropy { from_logits: true })
        .with_label_smoothing(1.5)
        .compute(LossInputs::new(Targets::Dense(one_hot), logits))
        .unwrap_err();
    assert!(err.to_string().contains("found 1.5"), "{err}");
}
