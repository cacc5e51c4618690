//! Configs: every registered layer gives back the config that built it, a stack built in
//! code rebuilds from its config (through JSON) with the same outputs, misspelt or unknown
//! fields are errors naming the nearest known one (JSON and TOML), and losses read and write
//! by their Keras names.

use std::collections::BTreeSet;

use burn::tensor::{Int, Tensor, TensorData};
use padless::layer::Spec;
use padless::losses::LossKind;
use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;

fn sequence(features: usize) -> Spec {
    Spec::Sequence {
        time: None,
        features,
        masked: true,
    }
}

/// The config as a model file holds it (no input sizes).
fn json(config: &LayerConfig) -> serde_json::Value {
    serde_json::to_value(config).unwrap()
}

#[test]
fn every_registered_layer_gives_back_the_config_that_built_it() {
    let device = default_device();
    let tokens = Spec::Tokens {
        time: None,
        masked: false,
    };
    let vector = Spec::Vector { features: 3 };
    let lstm = LstmConfig {
        units: 4,
        return_sequences: true,
        return_state: true,
        zero_output_for_mask: true,
        stateful: true,
        learn_initial_state: true,
        ..Default::default()
    };
    let cases: Vec<(Spec, LayerConfig)> = vec![
        (
            sequence(3),
            LayerConfig::Masking(MaskingConfig { mask_value: -1.0 }),
        ),
        (
            tokens,
            LayerConfig::Embedding(EmbeddingConfig::new(7, 4).with_mask_zero(true)),
        ),
        (
            sequence(3),
            LayerConfig::Dense(DenseConfig {
                units: 5,
                activation: ActivationKind::Relu,
                use_bias: false,
                ..Default::default()
            }),
        ),
        (
            vector,
            LayerConfig::Dense(DenseConfig {
                units: 2,
                ..Default::default()
            }),
        ),
        (
            sequence(3),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: 2,
                activation: ActivationKind::Softmax,
                ..Default::default()
            })),
        ),
        (
            vector,
            LayerConfig::RepeatVector(RepeatVectorConfig { n_steps: 4 }),
        ),
        (
            sequence(3),
            LayerConfig::Dropout(DropoutConfig { rate: 0.25 }),
        ),
        (
            sequence(3),
            LayerConfig::Activation(ActivationConfig {
                activation: ActivationKind::Tanh,
            }),
        ),
        (
            sequence(3),
            LayerConfig::LayerNormalization(LayerNormalizationConfig { epsilon: 1e-5 }),
        ),
        (
            sequence(3),
            LayerConfig::GlobalAveragePooling1D(GlobalAveragePooling1DConfig {}),
        ),
        (
            sequence(3),
            LayerConfig::GlobalMaxPooling1D(GlobalMaxPooling1DConfig {}),
        ),
        (sequence(3), LayerConfig::DropMask(DropMaskConfig {})),
        (
            sequence(3),
            LayerConfig::SimpleRnn(SimpleRnnConfig {
                units: 4,
                use_bias: false,
                go_backwards: true,
                ..Default::default()
            }),
        ),
        (sequence(3), LayerConfig::Lstm(lstm)),
        (
            sequence(3),
            LayerConfig::Gru(GruConfig {
                units: 2,
                return_state: true,
                ..Default::default()
            }),
        ),
        (
            sequence(3),
            LayerConfig::Bidirectional(BidirectionalConfig {
                layer: AnyRecurrentConfig::Lstm(lstm.with_stateful(false)),
                merge_mode: MergeMode::Sum,
            }),
        ),
        (
            sequence(3),
            LayerConfig::Bidirectional(BidirectionalConfig {
                layer: AnyRecurrentConfig::Gru(GruConfig {
                    units: 3,
                    ..Default::default()
                }),
                merge_mode: MergeMode::Concat,
            }),
        ),
        (
            sequence(3),
            LayerConfig::Bidirectional(BidirectionalConfig {
                layer: AnyRecurrentConfig::SimpleRnn(SimpleRnnConfig {
                    units: 3,
                    use_bias: false,
                    ..Default::default()
                }),
                merge_mode: MergeMode::Mul,
            }),
        ),
    ];
    let mut seen = BTreeSet::new();
    for (input, config) in cases {
        let layer = config.build(&input, &device).unwrap();
        let back = layer.config();
        // The built layer records its input size, which a model file leaves out.
        assert_eq!(json(&back), json(&config), "{}", config.type_name());
        let input_features = match input {
            Spec::Sequence { features, .. } | Spec::Vector { features } => Some(features),
            Spec::Tokens { .. } => None,
        };
        if back.d_input().is_some() {
            assert_eq!(back.d_input(), input_features, "{}", config.type_name());
        }
        // That config builds the same layer again, and its JSON reads back to the config.
        let again = back.build(&input, &device).unwrap();
        assert_eq!(
            again.as_layer().output_spec(&input).unwrap(),
            layer.as_layer().output_spec(&input).unwrap()
        );
        let read: LayerConfig = serde_json::from_value(json(&config)).unwrap();
        assert_eq!(read, config);
        seen.insert(config.type_name());
    }
    let all: BTreeSet<&str> = LayerConfig::TYPES.iter().copied().collect();
    assert_eq!(seen, all, "every registered layer type is covered");
}

/// A stack of every recurrent kind, built in code, whose config rebuilds it.
fn stack_in_code(device: &burn::tensor::Device) -> Sequential {
    Sequential::new(vec![
        EmbeddingConfig::new(9, 4)
            .with_mask_zero(true)
            .init(device)
            .into(),
        LstmConfig::new(4, 5)
            .with_return_sequences(true)
            .with_use_bias(false)
            .init_bidirectional(MergeMode::Concat, device)
            .into(),
        LayerNormalization::new(10, device).into(),
        GruConfig::new(10, 3)
            .with_learn_initial_state(true)
            .init(device)
            .into(),
        RepeatVector::new(3).into(),
        SimpleRnnConfig::new(3, 6)
            .with_return_sequences(true)
            .init(device)
            .into(),
        TimeDistributed::new(
            DenseConfig::new(6, 4)
                .with_activation(ActivationKind::Softmax)
                .init(device),
        )
        .into(),
    ])
}

#[test]
fn a_stack_built_in_code_rebuilds_from_its_config_with_the_same_outputs() {
    let device = default_device();
    let model = stack_in_code(&device);
    let config = model.config().unwrap();
    assert_eq!(config.input, InputConfig::Tokens { time: None });
    let text = serde_json::to_string_pretty(&config).unwrap();
    let read: ModelConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_string_pretty(&read).unwrap(), text);

    let mut rebuilt = read.build(&device).unwrap();
    assert_eq!(rebuilt.names(), model.names());
    rebuilt.set_weights(&model.weights()).unwrap();
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(vec![3i64, 1, 4, 1, 5, 8, 2, 0, 6, 0, 0, 0], [3, 4]),
        &device,
    );
    let run = |m: &Sequential| {
        let value = m
            .forward(Value::Tokens {
                ids: ids.clone(),
                mask: None,
            })
            .unwrap();
        f32_vec(value.into_sequence("stack").unwrap().0)
    };
    let (original, again) = (run(&model), run(&rebuilt));
    assert_eq!(original.len(), 3 * 3 * 4);
    assert_eq!(original, again);
    // The learned initial state is a weight: a different one changes the outputs, so the
    // comparison above reads it.
    let mut weights = model.weights();
    let initial = weights
        .iter_mut()
        .find(|w| w.name == "gru/initial_h")
        .unwrap();
    initial.values.iter_mut().for_each(|v| *v += 0.5);
    rebuilt.set_weights(&weights).unwrap();
    assert_ne!(run(&rebuilt), original);
}

#[test]
fn a_stack_input_is_recorded_or_inferred_from_the_first_sized_layer() {
    let device = default_device();
    let model = Sequential::new(vec![
        Masking::new(0.0).into(),
        Dropout::new(0.1).into(),
        LstmConfig::new(3, 2).init(&device).into(),
    ]);
    assert_eq!(
        model.config().unwrap().input,
        InputConfig::Sequence {
            time: None,
            features: 3
        }
    );
    let unsized_stack = Sequential::new(vec![Masking::new(0.0).into(), DropMask.into()]);
    let err = unsized_stack.config().unwrap_err().to_string();
    assert!(err.contains("Sequential::with_input"), "{err}");
    let input = InputConfig::Sequence {
        time: Some(5),
        features: 2,
    };
    assert_eq!(
        unsized_stack.with_input(input).config().unwrap().input,
        input
    );
    // A config build records its input, fixed time axis included.
    let config = ModelConfig {
        input,
        layers: vec![LayerConfig::Masking(MaskingConfig::default())],
    };
    assert_eq!(config.build(&device).unwrap().config().unwrap(), config);
}

const MISSPELT_JSON: &str = r#"{
  "input": {"kind": "tokens"},
  "layers": [
    {"type": "embedding", "n_tokens": 10, "d_model": 4, "mask_zero": true},
    {"type": "dropout", "rate": 0.1},
    {"type": "lstm", "units": 8, "retrun_sequences": true}
  ]
}"#;

const MISSPELT_TOML: &str = r#"
[input]
kind = "tokens"

[[layers]]
type = "embedding"
n_tokens = 10
d_model = 4

[[layers]]
type = "dropout"
rate = 0.1

[[layers]]
type = "lstm"
units = 8
retrun_sequences = true
"#;

const EXPECTED: &str =
    r#"unknown field "retrun_sequences" in layer 2 (lstm); did you mean "return_sequences"?"#;

#[test]
fn a_misspelt_field_is_an_error_naming_the_layer_and_the_nearest_field() {
    let err = serde_json::from_str::<ModelConfig>(MISSPELT_JSON)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(EXPECTED), "{err}");
    let err = toml::from_str::<ModelConfig>(MISSPELT_TOML)
        .unwrap_err()
        .to_string();
    assert!(err.contains(EXPECTED), "{err}");
    // Fixed, both read.
    let fixed = MISSPELT_TOML.replace("retrun", "return");
    let config = toml::from_str::<ModelConfig>(&fixed).unwrap();
    assert!(matches!(
        config.layers[2],
        LayerConfig::Lstm(LstmConfig {
            units: 8,
            return_sequences: true,
            ..
        })
    ));
}

/// One layer read inside a model config, for the error it gives.
fn layer_error(layer: &str) -> String {
    let text =
        format!(r#"{{"input": {{"kind": "sequence", "features": 3}}, "layers": [{layer}]}}"#);
    serde_json::from_str::<ModelConfig>(&text)
        .unwrap_err()
        .to_string()
}

#[test]
fn unknown_types_fields_and_missing_fields_are_errors_naming_what_was_expected() {
    let cases = [
        (
            r#"{"type": "lstn", "units": 4}"#,
            r#"unknown layer type "lstn" in layer 0; did you mean "lstm"?"#,
        ),
        (
            r#"{"type": "bidirectional", "layer": {"type": "gru", "unit": 4}}"#,
            r#"unknown field "unit" in the wrapped layer (gru); did you mean "units"? in layer 0 (bidirectional)"#,
        ),
        (
            r#"{"type": "bidirectional", "layer": {"type": "dense", "units": 4}}"#,
            r#"unknown recurrent layer type "dense" in the wrapped layer; expected one of "lstm", "gru", "simple_rnn""#,
        ),
        (
            r#"{"type": "drop_mask", "rate": 0.1}"#,
            r#"unknown field "rate" in layer 0 (drop_mask); it takes none"#,
        ),
        (
            r#"{"type": "dense", "activation": "relu"}"#,
            "missing field `units` in layer 0 (dense)",
        ),
        (
            r#"{"type": "gru", "units": 4, "no_bias": true}"#,
            r#"unknown field "no_bias" in layer 0 (gru); expected one of "units", "use_bias""#,
        ),
        (r#"{"units": 4}"#, r#"missing "type" in layer 0"#),
    ];
    for (layer, expected) in cases {
        let err = layer_error(layer);
        assert!(err.starts_with(expected), "{layer}: {err}");
    }
    let err = serde_json::from_str::<ModelConfig>(
        r#"{"input": {"kind": "sequence", "feature": 3}, "layers": []}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `feature`"), "{err}");
    let err = serde_json::from_str::<ModelConfig>(r#"{"input": {"kind": "tokens"}, "layer": []}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `layer`"), "{err}");
    // go_backwards has no meaning inside Bidirectional: refused when built.
    let config: ModelConfig = serde_json::from_str(
        r#"{"input": {"kind": "sequence", "features": 3}, "layers": [
            {"type": "bidirectional", "layer": {"type": "lstm", "units": 2, "go_backwards": true}}]}"#,
    )
    .unwrap();
    let err = config.build(&default_device()).unwrap_err().to_string();
    assert!(
        err.contains("layer 0 (Bidirectional)") && err.contains("expected go_backwards = false"),
        "{err}"
    );
}

#[test]
fn losses_read_by_name_or_table_and_write_as_a_table() {
    let read = |text: &str| serde_json::from_str::<LossKind>(text);
    assert!(matches!(
        read(r#""sparse_categorical_crossentropy""#).unwrap(),
        LossKind::SparseCategoricalCrossentropy { from_logits: false }
    ));
    assert!(matches!(
        read(r#"{"name": "categorical_crossentropy", "from_logits": true}"#).unwrap(),
        LossKind::CategoricalCrossentropy { from_logits: true }
    ));
    assert!(matches!(
        read(r#"{"name": "huber", "delta": 2.5}"#).unwrap(),
        LossKind::Huber { delta: 2.5 }
    ));
    assert!(matches!(
        read(r#""mean_absolute_error""#).unwrap(),
        LossKind::MeanAbsoluteError
    ));
    let written =
        serde_json::to_string(&LossKind::BinaryCrossentropy { from_logits: true }).unwrap();
    assert_eq!(
        written,
        r#"{"name":"binary_crossentropy","from_logits":true}"#
    );
    assert!(matches!(
        read(&written).unwrap(),
        LossKind::BinaryCrossentropy { from_logits: true }
    ));
    let err = read(r#""mean_sqared_error""#).unwrap_err().to_string();
    assert!(
        err.contains("unknown variant `mean_sqared_error`") && err.contains("mean_squared_error"),
        "{err}"
    );
    let err = read(r#"{"name": "mean_squared_error", "from_logits": true}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            r#"unknown field "from_logits" in the loss mean_squared_error; it takes none"#
        ),
        "{err}"
    );
    let err = read(r#"{"name": "huber", "detla": 2.0}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(r#"unknown field "detla" in the loss huber; did you mean "delta"?"#),
        "{err}"
    );
    let custom = LossKind::Custom(padless::losses::CustomLoss::PerStep(std::sync::Arc::new(
        |y: Tensor<3>, _| y.sum_dim(2).squeeze_dim::<2>(2),
    )));
    assert!(serde_json::to_string(&custom).is_err());
}
