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
    /// Batches skipped for a non-finite loss (absent in checkpoints of runs that skipped
    /// none before the count was kept: 0).
    #[serde(default)]
    skipped_batches: usize,
    /// The run's settings ([`Settings`]), compared with those a resume is given.
    #[serde(default)]
    settings: Option<Settings>,
    /// The FNV-1a hash of the optimizer state's bytes ([`checksum`]), checked before burn
    /// reads them: burn's reader assumes a well-formed record and panics on some damaged ones.
    #[serde(default)]
    optimizer_checksum: Option<String>,
}

/// The FNV-1a (64-bit) hash of `bytes`, in hexadecimal.
fn checksum(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("fnv1a64:{hash:016x}")
}

/// The settings of a run that a checkpoint records, so that a resume given other settings is
/// told so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    optimizer: serde_json::Value,
    learning_rate: f64,
    schedule: serde_json::Value,
    clip_norm: Option<f32>,
    weight_average: Option<f64>,
    accumulate_batches: usize,
    label_smoothing: f32,
}

impl Settings {
    fn of(config: &CompileConfig) -> Self {
        let json =
            |value: serde_json::Result<serde_json::Value>| value.expect("plain settings serialise");
        Settings {
            optimizer: json(serde_json::to_value(&config.optimizer)),
            learning_rate: config.learning_rate,
            schedule: json(serde_json::to_value(config.schedule)),
            clip_norm: config.clip_norm,
            weight_average: config.weight_average,
            accumulate_batches: config.accumulate_batches,
            label_smoothing: config.loss.label_smoothing,
        }
    }

    /// The settings that differ, as `name: saved ..., given ...`.
    fn differences(&self, given: &Settings) -> Vec<String> {
        let (saved, given) = (
            serde_json::to_value(self).expect("plain settings serialise"),
            serde_json::to_value(given).expect("plain settings serialise"),
        );
        let (Some(saved), Some(given)) = (saved.as_object(), given.as_object()) else {
            return Vec::new();
        };
        saved
            .iter()
            .filter(|(key, value)| given.get(*key) != Some(value))
            .map(|(key, value)| {
                format!(
                    "{key}: the checkpoint's {value}, given {}",
                    given.get(key).unwrap_or(&serde_json::Value::Null)
                )
            })
            .collect()
    }
}

/// The largest epoch count a checkpoint may hold: one that any number of further epochs a
/// caller can ask for (at most `u32::MAX`) cannot overflow.
const MAX_EPOCH: usize = u32::MAX as usize;

impl TrainerState {
    /// Checks the counts and rates read from a header: epoch and step within range, rates and
    /// the plateau factor finite (the factor above 0), the training time finite and at least 0.
    fn check(&self) -> std::result::Result<(), String> {
        if self.epoch > MAX_EPOCH {
            return Err(format!(
                "expected an epoch of at most {MAX_EPOCH}, found {}",
                self.epoch
            ));
        }
        if self.step > usize::MAX / 2 {
            return Err(format!(
                "expected a step of at most {}, found {}",
                usize::MAX / 2,
                self.step
            ));
        }
        if !(self.lr_factor.is_finite() && self.lr_factor > 0.0) {
            return Err(format!(
                "expected a finite lr_factor greater than 0, found {}",
                self.lr_factor
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            return Err(format!(
                "expected a finite learning_rate of at least 0, found {}",
                self.learning_rate
            ));
        }
        if !(self.train_seconds.is_finite() && self.train_seconds >= 0.0) {
            return Err(format!(
                "expected finite train_seconds of at least 0, found {}",
                self.train_seconds
            ));
        }
        Ok(())
    }
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
            skipped_batches: self.skipped_batches,
            settings: Some(Settings::of(&self.config)),
            optimizer_checksum: Some(checksum(&optimizer)),
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
        state
            .check()
            .map_err(|e| file.error(format!("{TRAINER}: {e}")))?;
        if let Some(saved) = &state.settings {
            let differences = saved.differences(&Settings::of(&config));
            if !differences.is_empty() {
                log::warn!(
                    "{}: resumed with other settings than the run's ({})",
                    path.display(),
                    differences.join("; ")
                );
            }
        }
        let mut config = config;
        config.seed = Some(state.seed);
        let mut trainer = Trainer::new(model, config, device)?;
        if !(trainer.config.learning_rate * state.lr_factor).is_finite() {
            return Err(file.error(format!(
                "{TRAINER}: expected an lr_factor that keeps the learning rate finite, found {} (times the rate {})",
                state.lr_factor, trainer.config.learning_rate
            )));
        }
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
            let found = checksum(&bytes);
            if let Some(expected) = &state.optimizer_checksum
                && *expected != found
            {
                return Err(file.error(format!(
                    "optimizer state: expected bytes of checksum {expected}, found {found}: the file is damaged"
                )));
            }
            // burn's reader panics on some malformed records; a file made to pass the checksum
            // with such a record is an error too.
            let optimizer = trainer.optimizer.clone();
            let restored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                optimizer.from_bytes(Bytes::from_bytes_vec(bytes))
            }))
            .map_err(|_| file.error("optimizer state: not a readable optimizer record"))?;
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
        trainer.skipped_batches = state.skipped_batches;
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
