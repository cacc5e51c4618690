//! Sizes from configs: parameter counts and summaries worked out without building equal the
//! built models', and sizes over the memory budget are refused before anything is allocated,
//! whatever the number (up to `usize::MAX`), naming the layer, the size and the budget.

use burn::tensor::Tensor;
use padless::budget::set_memory_budget;
use padless::model_config::{LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::seq2seq::{AttentionKind, EncoderDecoderConfig};
use padless::sizes::{encoder_decoder_parameters, transformer_parameters};
use padless::transformer::{PositionKind, TransformerConfig};

/// Every test of this binary sets the same budget, so none sees another's.
fn small_budget() {
    set_memory_budget(Some(64 << 20)).unwrap();
}

fn config(json: &str) -> ModelConfig {
    serde_json::from_str(json).unwrap()
}

/// Stacks that hold every registered layer type and option that changes a count.
const STACKS: &[&str] = &[
    r#"{"input": {"kind": "tokens"}, "layers": [
        {"type": "embedding", "n_tokens": 7, "d_model": 4, "mask_zero": true},
        {"type": "bidirectional", "layer": {"type": "lstm", "units": 3, "return_sequences": true, "learn_initial_state": true}},
        {"type": "layer_normalization"},
        {"type": "dropout", "rate": 0.25},
        {"type": "activation", "activation": "tanh"},
        {"type": "time_distributed_dense", "units": 5, "activation": "relu"},
        {"type": "dense", "units": 3, "use_bias": false}]}"#,
    r#"{"input": {"kind": "sequence", "features": 3, "time": 6}, "layers": [
        {"type": "masking", "mask_value": -1.0},
        {"type": "gru", "units": 4, "return_sequences": true, "learn_initial_state": true},
        {"type": "simple_rnn", "units": 2, "return_sequences": true, "use_bias": false},
        {"type": "global_average_pooling1d"},
        {"type": "repeat_vector", "n_steps": 4},
        {"type": "lstm", "units": 3, "return_sequences": true, "use_bias": false},
        {"type": "drop_mask"},
        {"type": "global_max_pooling1d"},
        {"type": "dense", "units": 2, "activation": "softmax"}]}"#,
    r#"{"input": {"kind": "sequence", "features": 2}, "layers": [
        {"type": "bidirectional", "layer": {"type": "gru", "units": 3, "return_sequences": true}, "merge_mode": "sum"},
        {"type": "bidirectional", "layer": {"type": "simple_rnn", "units": 5, "use_bias": false}, "merge_mode": "mul"},
        {"type": "dense", "units": 4}]}"#,
];

#[test]
fn counts_and_summaries_from_configs_equal_the_built_models() {
    small_budget();
    let device = default_device();
    let mut types = std::collections::BTreeSet::new();
    for json in STACKS {
        let config = config(json);
        let built = config.build(&device).unwrap();
        let counted: usize = built.weights().iter().map(|w| w.values.len()).sum();
        assert_eq!(config.n_parameters().unwrap(), counted as u128, "{json}");
        let spec = config.input.spec(false);
        assert_eq!(config.summary().unwrap(), built.summary(spec).unwrap());
        let sizes = config.layer_sizes().unwrap();
        let names: Vec<&str> = sizes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, built.names());
        types.extend(config.layers.iter().map(|l| l.type_name()));
    }
    let all: std::collections::BTreeSet<&str> = LayerConfig::TYPES.iter().copied().collect();
    assert_eq!(types, all, "every registered layer type is counted");
}

#[test]
fn a_3000_unit_lstm_is_summarised_from_its_config() {
    small_budget();
    let config = config(
        r#"{"input": {"kind": "sequence", "features": 3}, "layers": [
            {"type": "lstm", "units": 3000, "return_sequences": true},
            {"type": "time_distributed_dense", "units": 2}]}"#,
    );
    // 4 gates x 3000 units x (3 inputs + 3000 recurrent + 1 bias), then 3000 x 2 + 2.
    let parameters = 4 * 3000 * 3004 + 6002;
    assert_eq!(config.n_parameters().unwrap(), parameters);
    let summary = config.summary().unwrap();
    assert!(
        summary.contains(&format!("Total params: {parameters}")),
        "{summary}"
    );
    assert!(summary.contains("lstm (Lstm)"), "{summary}");
    // Training it needs 16 bytes a parameter, over this binary's 64 MiB budget.
    let err = config.build(&default_device()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "model config: the parameters up to layer 0 (lstm): {} parameters of 16 bytes need",
            4 * 3000 * 3004
        )) && err.ends_with(
            "more than the memory budget of 64 MiB (set PADLESS_MEMORY_BUDGET to change it)"
        ),
        "{err}"
    );
}

#[test]
fn sizes_beyond_the_budget_are_refused_before_anything_is_built() {
    small_budget();
    let device = default_device();
    let max = usize::MAX;
    for (json, expected) in [
        (
            r#"{"type": "lstm", "units": 1000000000}"#.to_string(),
            "the parameters up to layer 0 (lstm)",
        ),
        (
            format!(r#"{{"type": "lstm", "units": {max}}}"#),
            "the parameters up to layer 0 (lstm): 18446744073709551615 parameters",
        ),
        (
            format!(r#"{{"type": "bidirectional", "layer": {{"type": "gru", "units": {max}}}}}"#),
            "the parameters up to layer 0 (bidirectional)",
        ),
        (
            format!(r#"{{"type": "time_distributed_dense", "units": {max}}}"#),
            "the parameters up to layer 0 (time_distributed_dense)",
        ),
    ] {
        let config = config(&format!(
            r#"{{"input": {{"kind": "sequence", "features": 3}}, "layers": [{json}]}}"#
        ));
        let err = config.build(&device).unwrap_err().to_string();
        assert!(
            err.contains(expected) && err.contains("more than the memory budget of 64 MiB"),
            "{json}: {err}"
        );
    }
    // Sizes of token tables and repeated steps.
    let embedding = config(&format!(
        r#"{{"input": {{"kind": "tokens"}}, "layers": [
            {{"type": "embedding", "n_tokens": {max}, "d_model": {max}}}]}}"#
    ));
    let err = embedding.build(&device).unwrap_err().to_string();
    assert!(
        err.contains("the parameters up to layer 0 (embedding)"),
        "{err}"
    );
    let repeat = config(
        r#"{"input": {"kind": "sequence", "features": 3}, "layers": [
            {"type": "lstm", "units": 4},
            {"type": "repeat_vector", "n_steps": 1000000000000},
            {"type": "lstm", "units": 4, "return_sequences": true}]}"#,
    );
    let err = repeat.build(&device).unwrap_err().to_string();
    assert!(
        err.contains("model config: one row's activations up to layer 1 (repeat_vector)"),
        "{err}"
    );
    // The same checks guard configs read from files: `load` of a header saying so.
    let encoder_decoder = EncoderDecoderConfig {
        n_source_tokens: 30,
        n_target_tokens: 40,
        d_embedding: 8,
        d_encoder: 8,
        encoder_layers: 1,
        decoder_layers: 1,
        post_attention_layers: 1_000_000,
        attention: AttentionKind::Dot { scaled: false },
        dropout: 0.0,
    };
    let err = encoder_decoder.init(&device).unwrap_err().to_string();
    assert!(
        err.contains("1000000 post-attention layers): the parameters")
            && err.contains("more than the memory budget"),
        "{err}"
    );
    let mut transformer = TransformerConfig::new([20, 20], 16, 2, 32, [1, 1]);
    transformer.d_ff = max;
    let err = transformer.init(&device).unwrap_err().to_string();
    assert!(
        err.starts_with("Transformer config (20 source and 20 target tokens, d_model 16")
            && err.contains("more than the memory budget"),
        "{err}"
    );
}

#[test]
fn inputs_and_masking_of_no_features_are_errors_not_panics() {
    small_budget();
    let device = default_device();
    let config = config(
        r#"{"input": {"kind": "sequence", "features": 0}, "layers": [
            {"type": "masking"}, {"type": "lstm", "units": 2}]}"#,
    );
    let err = config.build(&device).unwrap_err().to_string();
    assert!(
        err.contains("expected inputs of at least 1 feature per step, found 0"),
        "{err}"
    );
    let err = config.summary().unwrap_err().to_string();
    assert!(
        err.contains("model input: expected sequences of at least 1 feature per step, found 0"),
        "{err}"
    );
    let masking = Masking::new(0.0);
    let empty = Tensor::<3>::zeros([2, 3, 0], &device);
    let err = masking.forward(empty, None).unwrap_err().to_string();
    assert_eq!(
        err,
        "Masking: expected inputs of at least 1 feature per step, found 0"
    );
}

#[test]
fn encoder_decoder_and_transformer_counts_equal_the_built_models() {
    small_budget();
    let device = default_device();
    for (attention, layers) in [
        (AttentionKind::Dot { scaled: true }, [1, 1, 0]),
        (AttentionKind::General, [2, 3, 1]),
        (AttentionKind::Additive { d_attention: 7 }, [3, 2, 2]),
    ] {
        let config = EncoderDecoderConfig {
            n_source_tokens: 29,
            n_target_tokens: 87,
            d_embedding: 12,
            d_encoder: 10,
            encoder_layers: layers[0],
            decoder_layers: layers[1],
            post_attention_layers: layers[2],
            attention,
            dropout: 0.0,
        };
        let built = config.init(&device).unwrap().n_parameters();
        assert_eq!(encoder_decoder_parameters(&config), built as u128);
    }
    let base = TransformerConfig::new([11, 13], 8, 2, 16, [2, 1]);
    let mut shared = TransformerConfig::new([12, 12], 8, 2, 16, [1, 2]);
    shared.share_embeddings = true;
    shared.norm_first = true;
    let mut learned = base.clone();
    learned.positions = PositionKind::Learned { max_len: 9 };
    for config in [base, shared, learned] {
        let built = config.init(&device).unwrap().n_parameters();
        assert_eq!(transformer_parameters(&config), built as u128, "{config:?}");
    }
}
