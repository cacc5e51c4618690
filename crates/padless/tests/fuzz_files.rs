//! The model-file and checkpoint reader (`padless::load`, `checkpoint_metadata`,
//! `Trainer::resume`) and the model-config parser (JSON and TOML) fed thousands of mutated
//! and random inputs: each must give a model, a trainer or a config, or a clean error; never
//! a panic, an abort on a failed allocation, or a hang. The corpus is made here from valid
//! files (a stack's model file, a trainer checkpoint with optimizer state, weight average and
//! callback states, an encoder-decoder's model file, model configs); mutations are in
//! `file_fuzz/mod.rs`. The runner's seed is fixed, so every run tries the same inputs; the
//! memory budget is small, so that a size a mutation makes up is refused at once.

mod file_fuzz;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use padless::budget::set_memory_budget;
use padless::model_config::ModelConfig;
use padless::prelude::*;
use padless::seq2seq::{AttentionKind, EncoderDecoderConfig};
use padless::train::*;

use file_fuzz::{Container, inputs, runner};

fn small_budget() {
    set_memory_budget(Some(16 << 20)).unwrap();
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("padless-fuzz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const STACK: &str = r#"{"input": {"kind": "tokens"}, "layers": [
    {"type": "embedding", "n_tokens": 6, "d_model": 3, "mask_zero": true},
    {"type": "lstm", "units": 4, "return_sequences": true},
    {"type": "time_distributed_dense", "units": 6}]}"#;

const VECTORS: &str = r#"{"input": {"kind": "sequence", "features": 2, "time": 5}, "layers": [
    {"type": "masking", "mask_value": 0.0},
    {"type": "bidirectional", "layer": {"type": "gru", "units": 3}, "merge_mode": "concat"},
    {"type": "repeat_vector", "n_steps": 3},
    {"type": "simple_rnn", "units": 2, "return_sequences": true, "learn_initial_state": true},
    {"type": "layer_normalization", "epsilon": 0.001},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": 2, "activation": "softmax"}]}"#;

const TOML: &str = r#"[input]
kind = "sequence"
features = 3

[[layers]]
type = "masking"
mask_value = 0.0

[[layers]]
type = "lstm"
units = 4
return_sequences = true

[[layers]]
type = "global_average_pooling1d"

[[layers]]
type = "dense"
units = 2
"#;

fn compile() -> CompileConfig {
    let mut config =
        CompileConfig::new(SequenceLoss::new(LossKind::SparseCategoricalCrossentropy {
            from_logits: true,
        }));
    config.seed = Some(1);
    config.weight_average = Some(0.9);
    config
}

fn examples() -> Vec<Example> {
    (1..5)
        .map(|n| {
            let tokens: Vec<i64> = (0..n).map(|t| 1 + (t * 3 + n) % 5).collect();
            Example::new(InputSeq::Tokens(tokens.clone()), TargetSeq::Labels(tokens))
        })
        .collect()
}

/// Valid files: a stack's model file, a checkpoint of a run of it, an encoder-decoder's
/// model file.
fn corpus() -> &'static [Vec<u8>] {
    static FILES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        small_budget();
        let dir = scratch("corpus");
        let device = training_device();
        device.seed(5);
        let config: ModelConfig = serde_json::from_str(STACK).unwrap();
        let model_path = dir.join("model.safetensors");
        padless::save(&config.build(&device).unwrap(), &model_path).unwrap();
        let mut trainer = Trainer::from_config(&config, compile(), &device).unwrap();
        let last = dir.join("last.safetensors");
        let mut checkpoint = ModelCheckpoint::new(
            Some(dir.join("best.safetensors")),
            Some(last.clone()),
            "loss",
        );
        let mut stopping = EarlyStopping::new("loss", 3);
        trainer
            .fit(
                &examples(),
                None,
                &FitConfig::new(1, BatchOptions::new(2)),
                &mut [&mut checkpoint, &mut stopping],
            )
            .unwrap();
        let network = EncoderDecoderConfig {
            n_source_tokens: 5,
            n_target_tokens: 6,
            d_embedding: 3,
            d_encoder: 2,
            encoder_layers: 1,
            decoder_layers: 1,
            post_attention_layers: 1,
            attention: AttentionKind::General,
            dropout: 0.0,
        }
        .init(&device)
        .unwrap();
        let seq2seq = dir.join("seq2seq.safetensors");
        padless::save(&network, &seq2seq).unwrap();
        [model_path, last, seq2seq]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    })
}

/// Every reader on the file at `path`: a model or a clean error, never a panic. Counts the
/// files loaded and the sizes refused by the budget.
fn read_every_way(path: &Path, loaded: &Cell<usize>, over_budget: &Cell<usize>) {
    let device = training_device();
    let _ = padless::model::checkpoint_metadata(path);
    match padless::load::<AnyModel>(path, &device) {
        Ok(model) => {
            assert!(!model.weights().is_empty());
            loaded.set(loaded.get() + 1);
        }
        Err(e) if e.to_string().contains("more than the memory budget") => {
            over_budget.set(over_budget.get() + 1);
        }
        Err(_) => {}
    }
    if let Ok(trainer) = Trainer::<Sequential>::resume(path, compile(), &device) {
        assert!(trainer.lr_factor.is_finite() && trainer.lr_factor > 0.0);
        assert!(trainer.epoch <= u32::MAX as usize);
    }
}

#[test]
fn model_files_and_checkpoints_load_or_fail_cleanly_whatever_the_bytes() {
    small_budget();
    let path = scratch("files").join("mutated.safetensors");
    let (loaded, over_budget) = (Cell::new(0), Cell::new(0));
    let strategy = inputs(corpus().to_vec(), 4, Container::Safetensors);
    runner(2000)
        .run(&strategy, |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            read_every_way(&path, &loaded, &over_budget);
            Ok(())
        })
        .unwrap();
    // The mutations reach past the format checks: some files still load, and some header
    // edits make sizes that the budget refuses.
    let (loaded, over_budget) = (loaded.get(), over_budget.get());
    assert!(
        loaded >= 100 && over_budget >= 10,
        "{loaded} loaded, {over_budget} over budget"
    );
}

#[test]
fn the_unmutated_corpus_loads_and_resumes() {
    small_budget();
    let device = training_device();
    let dir = scratch("valid");
    for (i, bytes) in corpus().iter().enumerate() {
        let path = dir.join(format!("{i}.safetensors"));
        std::fs::write(&path, bytes).unwrap();
        padless::load::<AnyModel>(&path, &device).unwrap();
    }
    let resumed: Trainer = Trainer::resume(&dir.join("1.safetensors"), compile(), &device).unwrap();
    assert_eq!(resumed.epoch, 1);
}

/// A config as JSON or TOML: a config or a clean error; an accepted one is sized and
/// summarised from its config, and built when it is small.
fn parse_every_way(bytes: &[u8], accepted: &Cell<usize>) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let device = default_device();
    let json = serde_json::from_str::<ModelConfig>(text);
    let toml = toml::from_str::<ModelConfig>(text);
    for config in [json.ok(), toml.ok()].into_iter().flatten() {
        accepted.set(accepted.get() + 1);
        let _ = config.check_size();
        let _ = config.summary();
        if config.n_parameters().is_ok_and(|n| n < 20_000) {
            let _ = config.build(&device);
        }
    }
}

#[test]
fn model_configs_parse_or_fail_cleanly_whatever_the_text() {
    small_budget();
    let corpus: Vec<Vec<u8>> = [STACK, VECTORS, TOML]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let accepted = Cell::new(0);
    runner(3000)
        .run(&inputs(corpus, 4, Container::Json), |bytes| {
            parse_every_way(&bytes, &accepted);
            Ok(())
        })
        .unwrap();
    assert!(accepted.get() >= 300, "{} configs accepted", accepted.get());
}
