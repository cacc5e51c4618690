//! The non-recurrent layers, stacks, summaries, weight files and bad input.
//! Expected values are worked out by hand in the comments.

use burn::tensor::{Int, Tensor, TensorData};
use padless::layer::{Layer, Spec, check_stack};
use padless::prelude::*;
use padless::value::Value;
use padless::weights::NamedWeight;

fn device() -> burn::tensor::Device {
    default_device()
}

fn weight(name: &str, shape: &[usize], values: &[f32]) -> NamedWeight {
    NamedWeight {
        name: name.into(),
        shape: shape.to_vec(),
        values: values.to_vec(),
    }
}

#[test]
fn masking_zeroes_masked_steps_and_keeps_partial_matches() {
    // Steps: [5,5] all padding; [5,1] partial -> valid, unchanged; [2,3] valid.
    let x = tensor_from(&[5.0, 5.0, 5.0, 1.0, 2.0, 3.0], [1, 3, 2], &device());
    let incoming = Mask::from_bools(&[true, true, false], 1, 3, &device()).unwrap();
    let (y, mask) = Masking::new(5.0).forward(x, Some(&incoming)).unwrap();
    assert_eq!(mask.to_vec(), vec![false, true, false]);
    assert_eq!(f32_vec(y), vec![0.0, 0.0, 5.0, 1.0, 0.0, 0.0]);
}

#[test]
fn embedding_with_mask_zero_masks_id_zero_and_looks_up_rows() {
    let mut layer = EmbeddingConfig::new(3, 2)
        .with_mask_zero(true)
        .init(&device());
    layer
        .set_weights(&[weight(
            "embeddings",
            &[3, 2],
            &[0.0, 0.0, 1.0, 2.0, 3.0, 4.0],
        )])
        .unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 1, 0], [1, 3]), &device());
    let (y, mask) = layer.forward(ids.clone(), None).unwrap();
    assert_eq!(mask.unwrap().to_vec(), vec![true, true, false]);
    assert_eq!(f32_vec(y), vec![3.0, 4.0, 1.0, 2.0, 0.0, 0.0]);
    let bad = Tensor::<2, Int>::from_data(TensorData::new(vec![3i64], [1, 1]), &device());
    let err = layer.forward(bad, None).unwrap_err().to_string();
    assert_eq!(err, "Embedding: token id 3 is outside 0..3");
}

#[test]
fn dense_on_vectors_and_sequences_passes_the_mask() {
    let mut dense = DenseConfig::new(2, 1)
        .with_activation(ActivationKind::Relu)
        .init(&device());
    dense
        .set_weights(&[
            weight("kernel", &[2, 1], &[1.0, -1.0]),
            weight("bias", &[1], &[0.5]),
        ])
        .unwrap();
    // [3, 1] -> 3 - 1 + 0.5 = 2.5; [0, 2] -> -1.5 -> relu 0.
    let v = dense.forward(tensor_from(&[3.0, 1.0, 0.0, 2.0], [2, 2], &device()));
    assert_eq!(f32_vec(v), vec![2.5, 0.0]);
    let mask = Mask::from_bools(&[true, false], 1, 2, &device()).unwrap();
    let x = tensor_from(&[3.0, 1.0, 0.0, 2.0], [1, 2, 2], &device());
    let td = TimeDistributed::new(dense);
    let out = td
        .forward_value(Value::sequence(x, Some(mask.clone())))
        .unwrap();
    assert_eq!(out.mask().unwrap().to_vec(), mask.to_vec());
    let (values, _) = out.into_sequence("test").unwrap();
    assert_eq!(f32_vec(values), vec![2.5, 0.0]);
}

#[test]
fn repeat_vector_creates_steps_and_no_mask() {
    let out = RepeatVector::new(3)
        .forward_value(Value::Vector(tensor_from(&[1.0, 2.0], [1, 2], &device())))
        .unwrap();
    assert!(out.mask().is_none());
    let (values, _) = out.into_sequence("test").unwrap();
    assert_eq!(f32_vec(values), vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
}

#[test]
fn pooling_uses_valid_steps_only_and_gives_zero_for_empty_rows() {
    // Row 0: valid [1, 2] and [3, 6], masked [NaN, inf]; row 1: no valid step.
    let x = tensor_from(
        &[
            1.0,
            2.0,
            f32::NAN,
            f32::INFINITY,
            3.0,
            6.0,
            9.0,
            9.0,
            9.0,
            9.0,
            9.0,
            9.0,
        ],
        [2, 3, 2],
        &device(),
    );
    let mask =
        Mask::from_bools(&[true, false, true, false, false, false], 2, 3, &device()).unwrap();
    let avg = GlobalAveragePooling1D
        .forward(x.clone(), Some(&mask))
        .unwrap();
    assert_eq!(f32_vec(avg), vec![2.0, 4.0, 0.0, 0.0]);
    let max = GlobalMaxPooling1D.forward(x, Some(&mask)).unwrap();
    assert_eq!(f32_vec(max), vec![3.0, 6.0, 0.0, 0.0]);
}

#[test]
fn merges_combine_masks_with_or() {
    let a = tensor_from(&[1.0, 2.0], [1, 2, 1], &device());
    let b = tensor_from(&[10.0, 20.0], [1, 2, 1], &device());
    let ma = Mask::from_bools(&[true, false], 1, 2, &device()).unwrap();
    let mb = Mask::from_bools(&[false, false], 1, 2, &device()).unwrap();
    let (sum, mask) = Add
        .forward(vec![(a.clone(), Some(ma.clone())), (b.clone(), Some(mb))])
        .unwrap();
    assert_eq!(f32_vec(sum), vec![11.0, 22.0]);
    assert_eq!(mask.unwrap().to_vec(), vec![true, false]);
    let (cat, mask) = Concatenate.forward(vec![(a, Some(ma)), (b, None)]).unwrap();
    assert_eq!(f32_vec(cat), vec![1.0, 10.0, 2.0, 20.0]);
    assert!(mask.is_none(), "an unmasked input counts as all-valid");
    let wrong = tensor_from(&[1.0; 3], [1, 3, 1], &device());
    let err = Add
        .forward(vec![
            (wrong, None),
            (tensor_from(&[1.0; 2], [1, 2, 1], &device()), None),
        ])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[1, 3, features]") && err.contains("[1, 2, 1]"),
        "{err}"
    );
}

#[test]
fn layer_normalization_normalises_each_step() {
    // [1, 3]: mean 2, biased variance 1 -> (x - 2) / sqrt(1 + 1e-3).
    let layer = LayerNormalization::new(2, &device());
    let y = f32_vec(layer.forward(tensor_from(&[1.0, 3.0], [1, 1, 2], &device())));
    let s = 1.0 / (1.0f32 + 1e-3).sqrt();
    assert!((y[0] + s).abs() < 1e-6 && (y[1] - s).abs() < 1e-6, "{y:?}");
}

#[test]
fn per_step_layers_pass_the_mask_unchanged() {
    let device = device();
    let mask = Mask::from_bools(&[true, false, true], 1, 3, &device).unwrap();
    let x = || {
        Value::sequence(
            tensor_from(&[1.0, 2.0, 3.0, 4.0, 5.0, 7.0], [1, 3, 2], &device),
            Some(mask.clone()),
        )
    };
    let activation = Activation::new(ActivationKind::Tanh)
        .forward_value(x())
        .unwrap();
    assert_eq!(activation.mask().unwrap().to_vec(), mask.to_vec());
    let norm = LayerNormalization::new(2, &device)
        .forward_value(x())
        .unwrap();
    assert_eq!(norm.mask().unwrap().to_vec(), mask.to_vec());
    let spec = Spec::Sequence {
        time: Some(3),
        features: 2,
        masked: true,
    };
    assert_eq!(
        Activation::new(ActivationKind::Relu)
            .output_spec(&spec)
            .unwrap(),
        spec
    );
    assert_eq!(
        LayerNormalization::new(2, &device)
            .output_spec(&spec)
            .unwrap(),
        spec
    );
}

#[test]
fn dropout_is_identity_at_inference_and_keeps_the_mask() {
    let x = tensor_from(&[1.0, 2.0, 3.0, 4.0], [1, 2, 2], &device());
    let mask = Mask::from_bools(&[true, false], 1, 2, &device()).unwrap();
    let out = Dropout::new(0.5)
        .forward_value(Value::sequence(x, Some(mask)))
        .unwrap();
    assert_eq!(out.mask().unwrap().to_vec(), vec![true, false]);
    assert_eq!(
        f32_vec(out.into_sequence("t").unwrap().0),
        vec![1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn dropout_drops_and_rescales_while_training() {
    let device = training_device();
    let x = tensor_from(&[1.0; 400], [1, 100, 4], &device);
    let mask = Mask::from_lengths(&[60], 100, Padding::Post, &device).unwrap();
    let out = Dropout::new(0.5)
        .forward_value(Value::sequence(x, Some(mask.clone())))
        .unwrap();
    assert_eq!(out.mask().unwrap().to_vec(), mask.to_vec());
    let values = f32_vec(out.into_sequence("t").unwrap().0);
    assert!(
        values.iter().all(|&v| v == 0.0 || v == 2.0),
        "kept values are scaled by 1 / (1 - 0.5)"
    );
    let dropped = values.iter().filter(|&&v| v == 0.0).count();
    assert!((100..300).contains(&dropped), "{dropped} of 400 dropped");
}

#[test]
fn a_single_layer_saves_and_loads_its_weights() {
    let device = device();
    let dir = std::env::temp_dir().join(format!("padless-layer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gru.safetensors");
    let gru = GruConfig::new(2, 3).init(&device);
    gru.save_weights(&path).unwrap();
    let mut other = GruConfig::new(2, 3).init(&device);
    other.load_weights(&path).unwrap();
    assert_eq!(gru.weights(), other.weights());
    let bias = other
        .weights()
        .into_iter()
        .find(|w| w.name == "bias")
        .unwrap();
    assert_eq!(
        bias.shape,
        vec![2, 9],
        "GRU reset_after bias is [2, 3 d_hidden]"
    );
    let mut wrong = GruConfig::new(3, 3).init(&device);
    let err = wrong.load_weights(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        "weight kernel: expected shape [3, 9], found [2, 9] with 18 values"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn seed_model() -> Sequential {
    let device = device();
    Sequential::new(vec![
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
    ])
}

const SEED_INPUT: Spec = Spec::Sequence {
    time: Some(5),
    features: 3,
    masked: false,
};

#[test]
fn summary_shows_shapes_params_and_where_the_mask_goes() {
    let summary = seed_model().summary(SEED_INPUT).unwrap();
    let lines: Vec<&str> = summary.lines().collect();
    let columns = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
    assert_eq!(columns(0)[..4], ["Layer", "(type)", "Output", "shape"]);
    // Masking creates the mask; the encoder consumes it; RepeatVector makes none.
    assert_eq!(
        columns(2),
        [
            "masking",
            "(Masking)",
            "(None,",
            "5,",
            "3)",
            "0",
            "no",
            "yes"
        ]
    );
    // LSTM(3 -> 10): 4 * (3 * 10 + 10 * 10 + 10) = 560 parameters.
    assert_eq!(
        columns(3),
        ["lstm", "(Lstm)", "(None,", "10)", "560", "yes", "no"]
    );
    assert_eq!(
        columns(4),
        [
            "repeat_vector",
            "(RepeatVector)",
            "(None,",
            "5,",
            "10)",
            "0",
            "no",
            "no"
        ]
    );
    // LSTM(10 -> 10): 4 * (100 + 100 + 10) = 840; Dense 10 * 3 + 3 = 33.
    assert_eq!(columns(5)[..2], ["lstm_1", "(Lstm)"]);
    assert_eq!(columns(5)[5], "840");
    assert_eq!(columns(6)[5], "33");
    assert_eq!(lines.last().unwrap(), &"Total params: 1433");
}

#[test]
fn weights_round_trip_through_safetensors_in_keras_layout() {
    let model = seed_model();
    let weights = model.weights();
    let kernel = weights.iter().find(|w| w.name == "lstm/kernel").unwrap();
    assert_eq!(kernel.shape, vec![3, 40]);
    let recurrent = weights
        .iter()
        .find(|w| w.name == "lstm_1/recurrent_kernel")
        .unwrap();
    assert_eq!(recurrent.shape, vec![10, 40]);
    let dir = std::env::temp_dir().join(format!("padless-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("seed.safetensors");
    model.save_weights(&path).unwrap();
    let mut other = seed_model();
    let x = tensor_from(
        &(0..30).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>(),
        [2, 5, 3],
        &device(),
    );
    let predict = |m: &Sequential| {
        f32_vec(
            m.forward(Value::sequence(x.clone(), None))
                .unwrap()
                .into_sequence("t")
                .unwrap()
                .0,
        )
    };
    assert_ne!(predict(&model), predict(&other));
    other.load_weights(&path).unwrap();
    assert_eq!(predict(&model), predict(&other));

    let mut smaller = Sequential::new(vec![AnyLayer::Lstm(LstmConfig::new(3, 4).init(&device()))]);
    let err = smaller.load_weights(&path).unwrap_err().to_string();
    assert!(
        err.contains("lstm/kernel") || err.contains("no layer is named"),
        "{err}"
    );
    let err = smaller
        .load_weights(&dir.join("missing.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_mask_reaching_a_layer_that_cannot_honour_it_is_a_build_error() {
    struct Flatten;
    impl Layer for Flatten {
        fn type_name(&self) -> &'static str {
            "Flatten"
        }
        fn forward_value(&self, input: Value) -> padless::Result<Value> {
            Ok(input)
        }
        fn output_spec(&self, input: &Spec) -> padless::Result<Spec> {
            let (time, features, _) = input.sequence_features("Flatten")?;
            Ok(Spec::Vector {
                features: time.unwrap_or(1) * features,
            })
        }
    }
    let masking = Masking::new(0.0);
    let err = check_stack(
        [("masking", &masking as &dyn Layer), ("flatten", &Flatten)],
        SEED_INPUT,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("flatten (Flatten) cannot honour the mask") && err.contains("DropMask"),
        "{err}"
    );
    let rows = check_stack(
        [
            ("masking", &masking as &dyn Layer),
            ("drop_mask", &DropMask),
            ("flatten", &Flatten),
        ],
        SEED_INPUT,
    )
    .unwrap();
    assert_eq!(rows[2].output, Spec::Vector { features: 15 });
}

#[test]
fn bad_input_gives_errors_naming_both_shapes() {
    let device = device();
    let lstm = LstmConfig::new(3, 2).init(&device);
    let err = lstm
        .forward(Tensor::zeros([2, 5, 4], &device), None, None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Lstm: expected shape [batch, time, 3], found [2, 5, 4]"
    );
    let mask = Mask::all_valid(2, 4, &device);
    let err = lstm
        .forward(Tensor::zeros([2, 5, 3], &device), Some(&mask), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Lstm: mask has shape [2, 4], expected [batch, time] = [2, 5]"
    );
    let err = lstm
        .forward(
            Tensor::zeros([2, 5, 3], &device),
            None,
            Some(vec![Tensor::zeros([2, 2], &device)]),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(err, "Lstm: expected 2 initial states, found 1");
    let err = lstm
        .forward(
            Tensor::zeros([2, 5, 3], &device),
            None,
            Some(vec![
                Tensor::zeros([2, 3], &device),
                Tensor::zeros([2, 2], &device),
            ]),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Lstm initial state: expected shape [2, 2], found [2, 3]"
    );
    let err = lstm
        .forward(Tensor::zeros([0, 5, 3], &device), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("non-empty") && err.contains("[0, 5, 3]"),
        "{err}"
    );
    let err = seed_model()
        .check(Spec::Sequence {
            time: None,
            features: 4,
            masked: false,
        })
        .unwrap_err()
        .to_string();
    assert_eq!(err, "Lstm: expected 3 input features, found 4");
    let err = seed_model()
        .forward(Value::Vector(Tensor::zeros([2, 3], &device)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Masking: expected sequence"), "{err}");
}

#[test]
fn dropout_keeps_the_rate_and_its_gradient_is_the_same_mask() {
    let device = training_device();
    let n = 100_000;
    let x = tensor_from(&vec![3.0; n], [10, n / 10], &device).require_grad();
    let out = padless::layers::dropout(x.clone(), 0.3);
    let values = f32_vec(out.clone());
    let kept = values.iter().filter(|&&v| v != 0.0).count();
    // 0.7 of 100,000 kept; the standard deviation of the count is 145.
    assert!((69_000..71_000).contains(&kept), "{kept} of {n} kept");
    assert!(
        values
            .iter()
            .all(|&v| v == 0.0 || (v - 3.0 / 0.7).abs() < 1e-5)
    );
    let grads = (out * 2.0).sum().backward();
    let grad = f32_vec(x.grad(&grads).unwrap());
    for (g, v) in grad.iter().zip(&values) {
        let want = if *v == 0.0 { 0.0 } else { 2.0 / 0.7 };
        assert!((g - want).abs() < 1e-5, "gradient {g}, output {v}");
    }
    // Two calls draw different masks.
    let again = f32_vec(padless::layers::dropout(
        tensor_from(&vec![3.0; n], [10, n / 10], &device),
        0.3,
    ));
    assert_ne!(again, values);
}
