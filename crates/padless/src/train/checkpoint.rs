//! Checkpoints: one safetensors file holding the weights (`"{layer}/{weight}"`, f32), the
//! optimizer state (`__optimizer__`, bytes) and, in its header, the model config, the epoch,
//! the learning rate and the parameter ids. Written to a temporary file and renamed, so an
//! interrupted save leaves the previous checkpoint intact.
//!
//! burn keys optimizer state (Adam's moments and step count) by parameter id, and a model
//! rebuilt from its config gets fresh ids; so the ids are saved in parameter order and given
//! back to the rebuilt model, and the restored state applies to the same parameters.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Bytes, Device, Tensor};
use safetensors::SafeTensors;

use super::trainer::{CompileConfig, Trainer};
use crate::error::{Error, Result};
use crate::model_config::ModelConfig;
use crate::weights::{parse_tensors, serialize_safetensors, write_atomically};

/// The checkpoint format this version writes and reads.
pub const CHECKPOINT_FORMAT: &str = "padless-checkpoint-1";
const OPTIMIZER: &str = "__optimizer__";
const PARAM_IDS: &str = "param_ids";

/// Collects the ids of float parameters in visiting order.
struct CollectIds(Vec<u64>);

impl ModuleVisitor for CollectIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.id.val());
    }
}

/// Gives float parameters the saved ids, in visiting order.
struct SetIds {
    ids: Vec<u64>,
    next: usize,
}

impl ModuleMapper for SetIds {
    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if let Some(&id) = self.ids.get(self.next) {
            param.id = ParamId::from(id);
        }
        self.next += 1;
        param
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::WeightFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Saves the model, its config (when the trainer has one), the optimizer state, the epoch and
/// the learning rate to `path`, atomically.
///
/// # Errors
/// When the file cannot be written or the optimizer state cannot be serialised.
pub fn save_checkpoint(trainer: &Trainer, path: &Path) -> Result<()> {
    let weights = trainer.model.weights();
    let optimizer = trainer
        .optimizer
        .into_bytes()
        .map_err(|e| bad(path, format!("optimizer state: {e:?}")))?;
    let mut metadata = HashMap::from([
        ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
        (
            "padless_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("epoch".to_string(), trainer.epoch.to_string()),
        (
            "learning_rate".to_string(),
            trainer.learning_rate.to_string(),
        ),
        ("lr_factor".to_string(), trainer.lr_factor.to_string()),
    ]);
    let mut ids = CollectIds(Vec::new());
    trainer.model.visit(&mut ids);
    let ids: Vec<String> = ids.0.iter().map(u64::to_string).collect();
    metadata.insert(PARAM_IDS.to_string(), ids.join(","));
    if let Some(config) = &trainer.model_config {
        let json = serde_json::to_string(config).map_err(|e| bad(path, e.to_string()))?;
        metadata.insert("model_config".to_string(), json);
    }
    let bytes = serialize_safetensors(path, &weights, &[(OPTIMIZER, &optimizer)], metadata)?;
    write_atomically(path, &bytes)
}

/// Rebuilds a trainer from a checkpoint: the model from its config, its weights, the
/// optimizer state, the epoch and the learning rate; `compile` gives the loss and metrics.
///
/// # Errors
/// A missing, truncated or foreign file, another format version, a checkpoint without a
/// model config, or weights that do not match the config, each said exactly.
pub fn load_checkpoint(path: &Path, compile: CompileConfig, device: &Device) -> Result<Trainer> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        bad(
            path,
            format!("not a readable checkpoint: truncated, corrupt or not a padless file ({e})"),
        )
    })?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| {
        metadata
            .get(key)
            .ok_or_else(|| bad(path, format!("header has no {key}")))
    };
    let format = get("format")?;
    if format != CHECKPOINT_FORMAT {
        return Err(bad(
            path,
            format!("format {format}, expected {CHECKPOINT_FORMAT}"),
        ));
    }
    let config: ModelConfig = serde_json::from_str(get("model_config")?)
        .map_err(|e| bad(path, format!("model config: {e}")))?;
    let (weights, raw) = parse_tensors(path, &bytes, &[OPTIMIZER])?;
    let optimizer = raw.into_iter().next().map(|(_, state)| state);
    let mut trainer = Trainer::from_config(&config, compile, device)?;
    trainer
        .model
        .set_weights(&weights)
        .map_err(|e| bad(path, e.to_string()))?;
    // Checkpoints written before the ids were saved restore the weights, and the optimizer
    // state starts afresh.
    if let Some(ids) = metadata.get(PARAM_IDS) {
        let ids = ids
            .split(',')
            .map(str::parse)
            .collect::<std::result::Result<Vec<u64>, _>>()
            .map_err(|_| bad(path, format!("{PARAM_IDS} are not numbers")))?;
        let mut count = CollectIds(Vec::new());
        trainer.model.visit(&mut count);
        if ids.len() != count.0.len() {
            return Err(bad(
                path,
                format!(
                    "{} parameter ids for a model of {} parameters",
                    ids.len(),
                    count.0.len()
                ),
            ));
        }
        trainer.model = trainer.model.clone().map(&mut SetIds { ids, next: 0 });
    }
    if let Some(state) = optimizer {
        let restored = trainer
            .optimizer
            .clone()
            .from_bytes(Bytes::from_bytes_vec(state));
        trainer.optimizer = restored.map_err(|e| bad(path, format!("optimizer state: {e:?}")))?;
    }
    let number = |key: &str| -> Result<f64> {
        get(key)?
            .parse()
            .map_err(|_| bad(path, format!("{key} is not a number")))
    };
    trainer.epoch = number("epoch")? as usize;
    trainer.learning_rate = number("learning_rate")?;
    trainer.lr_factor = number("lr_factor")?;
    Ok(trainer)
}
