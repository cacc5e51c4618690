//! Checkpoints: a model file ([`crate::model::save`]'s format: kind, config, weights) plus the
//! state of a run, so that a resumed run continues exactly as an uninterrupted one.
//!
//! Header entry `trainer` (JSON): epoch, step, learning rate, plateau factor, seed, training
//! seconds, the parameter ids in visiting order, the weight average's decay and update count,
//! and each callback's plain state by key. Tensors: the optimizer state (`__optimizer__`,
//! bytes), the averaged weights (`__average__/{weight}`), and the weights a callback keeps
//! (`__callback__/{i}/{weight}`, `i` the callback's place among the saved keys).
//!
//! burn keys optimizer state (Adam's moments and step count) by parameter id, and a model
//! rebuilt from its config gets fresh ids; so the ids are saved in parameter order and given
//! back to the rebuilt model, and the restored state applies to the same parameters. The
//! randomness of a step is a function of the seed and the step (see
//! [`CompileConfig::seed`](super::CompileConfig::seed)), so no generator state is saved.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Bytes, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::callbacks::CallbackState;
use super::trainer::{CompileConfig, Trainer};
use super::weight_average::WeightAverage;
use crate::error::Result;
use crate::model::{Model, OPTIMIZER, read_saved, write_saved};
use crate::sequential::Sequential;
use crate::weights::NamedWeight;

const AVERAGE: &str = "__average__/";
const CALLBACK: &str = "__callback__/";
const TRAINER: &str = "trainer";

/// The run's state in a checkpoint's header.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainerState {
    epoch: usize,
    step: usize,
    learning_rate: f64,
    lr_factor: f64,
    seed: u64,
    train_seconds: f64,
    param_ids: Vec<u64>,
    average: Option<AverageState>,
    callbacks: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AverageState {
    decay: f64,
    updates: u64,
}

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

/// `weights` renamed `{prefix}{name}` (the prefixes end in `/`).
fn prefixed(weights: &[NamedWeight], prefix: &str) -> Vec<NamedWeight> {
    weights
        .iter()
        .map(|w| NamedWeight {
            name: format!("{prefix}{}", w.name),
            ..w.clone()
        })
        .collect()
}

/// The weights under `prefix`, with it removed.
fn under(weights: &[NamedWeight], prefix: &str) -> Vec<NamedWeight> {
    weights
        .iter()
        .filter_map(|w| {
            w.name.strip_prefix(prefix).map(|name| NamedWeight {
                name: name.to_string(),
                ..w.clone()
            })
        })
        .collect()
}

impl<M: Model> Trainer<M> {
    /// Saves the model, its config and the run's state (optimizer, epoch, step, learning rate,
    /// plateau factor, seed, weight average, callback states) to `path`, atomically.
    ///
    /// # Errors
    /// A model that cannot describe itself ([`Model::config`]), optimizer state that cannot
    /// be serialised, or a file that cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, &[])
    }

    /// [`Trainer::save`] with extra header entries (a task's own settings), readable with
    /// [`checkpoint_metadata`](crate::model::checkpoint_metadata).
    ///
    /// # Errors
    /// As [`Trainer::save`], and an entry whose key the format uses itself.
    pub fn save_with(&self, path: &Path, extra: &[(String, String)]) -> Result<()> {
        let bad = |message: String| crate::Error::WeightFile {
            path: path.to_path_buf(),
            message,
        };
        let optimizer = self
            .optimizer
            .into_bytes()
            .map_err(|e| bad(format!("optimizer state: {e:?}")))?;
        let mut ids = CollectIds(Vec::new());
        self.model.visit(&mut ids);
        let mut internal = Vec::new();
        if let Some(average) = &self.average {
            internal.extend(prefixed(&average.model().weights(), AVERAGE));
        }
        for (i, state) in self.callback_states.values().enumerate() {
            internal.extend(prefixed(&state.weights, &format!("{CALLBACK}{i}/")));
        }
        let state = TrainerState {
            epoch: self.epoch,
            step: self.step,
            learning_rate: self.learning_rate,
            lr_factor: self.lr_factor,
            seed: self.seed,
            train_seconds: self.train_seconds,
            param_ids: ids.0,
            average: self.average.as_ref().map(|a| AverageState {
                decay: a.decay(),
                updates: a.updates(),
            }),
            callbacks: self
                .callback_states
                .iter()
                .map(|(k, s)| (k.clone(), s.values.clone()))
                .collect(),
        };
        let mut extra = extra.to_vec();
        extra.push((
            TRAINER.to_string(),
            serde_json::to_string(&state).map_err(|e| bad(e.to_string()))?,
        ));
        write_saved(
            path,
            &self.model,
            &self.saved_model_config()?,
            internal,
            &[(OPTIMIZER, &optimizer)],
            &extra,
        )
    }

    /// Rebuilds a trainer from a checkpoint written by [`Trainer::save`]: the model from its
    /// config with its weights and parameter ids, the optimizer state, epoch, step, learning
    /// rate, plateau factor, seed, training time, weight average and callback states (given
    /// back to the callbacks of the next `fit` by their keys). `config` gives the loss,
    /// metrics and schedule, as at the start of the run; its `seed` is replaced by the saved
    /// one.
    ///
    /// # Errors
    /// A missing, truncated or foreign file, another format version, a model of another kind,
    /// a file without the run's state (a model saved alone), or weights that do not match the
    /// config, each said exactly.
    pub fn resume(path: &Path, config: CompileConfig, device: &Device) -> Result<Self> {
        let mut file = read_saved(path)?;
        let model: M = file.model(device)?;
        let model_config: M::Config = serde_json::from_str(file.config()?)
            .map_err(|e| file.error(format!("model config: {e}")))?;
        let state: TrainerState = serde_json::from_str(file.metadata.get(TRAINER).ok_or_else(|| {
            file.error(format!(
                "header has no {TRAINER}: a model saved without a run's state, which resume needs (a checkpoint written by a Trainer)"
            ))
        })?)
        .map_err(|e| file.error(format!("{TRAINER}: {e}")))?;
        let mut config = config;
        config.seed = Some(state.seed);
        let mut trainer = Trainer::new(model, config, device)?;
        trainer.model_config = Some(model_config);
        let mut count = CollectIds(Vec::new());
        trainer.model.visit(&mut count);
        if state.param_ids.len() != count.0.len() {
            return Err(file.error(format!(
                "{} parameter ids for a model of {} parameters",
                state.param_ids.len(),
                count.0.len()
            )));
        }
        trainer.model = trainer.model.clone().map(&mut SetIds {
            ids: state.param_ids,
            next: 0,
        });
        if let Some((_, bytes)) = std::mem::take(&mut file.raw)
            .into_iter()
            .find(|(name, _)| name == OPTIMIZER)
        {
            let restored = trainer
                .optimizer
                .clone()
                .from_bytes(Bytes::from_bytes_vec(bytes));
            trainer.optimizer =
                restored.map_err(|e| file.error(format!("optimizer state: {e:?}")))?;
        }
        if let Some(average) = state.average {
            let mut averaged = trainer.model.clone();
            averaged
                .set_weights(&under(&file.internal, AVERAGE))
                .map_err(|e| file.error(format!("averaged weights: {e}")))?;
            trainer.average = Some(
                WeightAverage::restored(&averaged, average.decay, average.updates)
                    .map_err(|e| file.error(e.to_string()))?,
            );
        }
        trainer.resumed_states = state
            .callbacks
            .into_iter()
            .enumerate()
            .map(|(i, (key, values))| {
                let weights = under(&file.internal, &format!("{CALLBACK}{i}/"));
                (key, CallbackState { values, weights })
            })
            .collect();
        trainer.callback_states = trainer.resumed_states.clone();
        trainer.epoch = state.epoch;
        trainer.step = state.step;
        trainer.learning_rate = state.learning_rate;
        trainer.lr_factor = state.lr_factor;
        trainer.train_seconds = state.train_seconds;
        Ok(trainer)
    }
}

/// Saves `trainer` to `path` ([`Trainer::save`]).
///
/// # Errors
/// As [`Trainer::save`].
pub fn save_checkpoint<M: Model>(trainer: &Trainer<M>, path: &Path) -> Result<()> {
    trainer.save(path)
}

/// Rebuilds a [`Sequential`] trainer from a checkpoint ([`Trainer::resume`]).
///
/// # Errors
/// As [`Trainer::resume`].
pub fn load_checkpoint(
    path: &Path,
    compile: CompileConfig,
    device: &Device,
) -> Result<Trainer<Sequential>> {
    Trainer::resume(path, compile, device)
}
