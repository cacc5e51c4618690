//! The model abstraction: [`Model`], what [`Trainer`](crate::train::Trainer) trains, saves and
//! resumes, implemented by [`Sequential`](crate::sequential::Sequential),
//! [`EncoderDecoder`](crate::seq2seq::EncoderDecoder) and a user's own models; [`Inputs`], one
//! or several input values; model files ([`save`], [`load`], [`AnyModel`]).
//!
//! # Example: a model of two inputs
//! A user model is a burn `Module` that says how to run on its [`Inputs`], which weights it
//! has and which serialisable config rebuilds it. `crates/padless/examples/two_inputs.rs`
//! trains one with the [`Trainer`](crate::train::Trainer).
//! ```
//! use burn::module::Module;
//! use burn::tensor::Device;
//! use padless::mask::and_masks;
//! use padless::model::{Inputs, Model};
//! use padless::prelude::*;
//! use padless::weights::{NamedWeight, strip_prefix};
//!
//! /// `dense(a + b)` per step, valid where both inputs are.
//! #[derive(Module, Debug)]
//! struct Sum {
//!     dense: Dense,
//! }
//!
//! impl Model for Sum {
//!     type Config = (usize, usize);
//!     const KIND: &'static str = "sum";
//!     fn build(&(d_input, units): &(usize, usize), device: &Device) -> padless::Result<Self> {
//!         Ok(Sum { dense: DenseConfig::new(d_input, units).init(device) })
//!     }
//!     fn config(&self) -> padless::Result<(usize, usize)> {
//!         let [d_input, units] = self.dense.kernel.val().dims();
//!         Ok((d_input, units))
//!     }
//!     fn forward_batch(&self, inputs: &Inputs, _: Option<&[usize]>) -> padless::Result<Value> {
//!         let [a, b] = inputs.exactly::<2>("Sum")?;
//!         let (a, mask_a) = a.clone().into_sequence("Sum input 0")?;
//!         let (b, mask_b) = b.clone().into_sequence("Sum input 1")?;
//!         let mask = and_masks(mask_a.as_ref(), mask_b.as_ref())?;
//!         let y = Layer::forward_value(&self.dense, Value::sequence(a + b, None))?;
//!         Ok(Value::sequence(y.into_sequence("Sum")?.0, mask))
//!     }
//!     fn weights(&self) -> Vec<NamedWeight> {
//!         Layer::weights(&self.dense).into_iter().map(|w| w.prefixed("dense")).collect()
//!     }
//!     fn set_weights(&mut self, weights: &[NamedWeight]) -> padless::Result<()> {
//!         Layer::set_weights(&mut self.dense, &strip_prefix(weights, "dense"))
//!     }
//! }
//!
//! let device = default_device();
//! let model = Sum::build(&(2, 1), &device)?;
//! let x = tensor_from(&[1.0, 2.0, 3.0, 4.0], [1, 2, 2], &device);
//! let mask = Mask::from_lengths(&[1], 2, Padding::Post, &device)?;
//! let inputs = Inputs::new(vec![Value::sequence(x.clone(), Some(mask)), Value::sequence(x, None)]);
//! let y = model.forward_batch(&inputs, None)?;
//! assert_eq!(y.mask().unwrap().lengths(), [1]);
//! # Ok::<(), padless::Error>(())
//! ```

mod file;
mod sequential;

use burn::module::Module;
use burn::tensor::Device;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::value::Value;
use crate::weights::NamedWeight;

pub use file::{AnyModel, CHECKPOINT_FORMAT, Loadable, checkpoint_metadata, load, save};
pub(crate) use file::{OPTIMIZER, read_saved, write_saved};
pub(crate) use sequential::output_steps as output_steps_of;

/// A model the [`Trainer`](crate::train::Trainer) can train, save and resume: a burn module
/// that runs on a batch's [`Inputs`], lists its weights by name and is rebuilt from a
/// serialisable config.
///
/// The trainer computes the loss itself, with the compile config's
/// [`SequenceLoss`](crate::losses::SequenceLoss), from the output's values and mask AND the
/// batch's target mask, so a model never scores padding whatever it returns at padded steps.
pub trait Model: Module + Sized {
    /// What rebuilds the model (fresh weights), stored in checkpoints as JSON.
    type Config: Serialize + DeserializeOwned + Clone + std::fmt::Debug;

    /// The model's kind, stored in checkpoints beside its config (`"sequential"`,
    /// `"encoder_decoder"`): a file is loaded only as the kind it holds.
    const KIND: &'static str;

    /// Builds the model of `config` on `device` with fresh weights.
    ///
    /// # Errors
    /// A config that does not build.
    fn build(config: &Self::Config, device: &Device) -> Result<Self>;

    /// The config that rebuilds this model.
    ///
    /// # Errors
    /// When the model cannot be described by its config type (for example a layer built in
    /// code with an option the config has no field for).
    fn config(&self) -> Result<Self::Config>;

    /// The output on `inputs` with its mask: a sequence `[batch, time, features]` whose mask
    /// says which steps are valid, or a vector `[batch, features]` (one output per row).
    ///
    /// `read_steps`, when given, says that only output steps `t < read_steps[b]` of row `b`
    /// are read (the trainer passes one past each row's last valid target step): a model may
    /// skip the others, whose outputs are then unspecified, as
    /// [`Sequential::forward_reading`](crate::sequential::Sequential::forward_reading) does.
    ///
    /// # Errors
    /// Inputs of the wrong number, kind or shape.
    fn forward_batch(&self, inputs: &Inputs, read_steps: Option<&[usize]>) -> Result<Value>;

    /// Every weight, with a name unique within the model (`"{layer}/{weight}"`).
    fn weights(&self) -> Vec<NamedWeight>;

    /// Replaces every weight listed by [`Model::weights`], keeping each parameter's id.
    ///
    /// # Errors
    /// A missing weight, a shape mismatch or a weight the model does not have, naming it.
    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()>;

    /// Forgets the states that stateful layers carry between batches (nothing by default).
    fn reset_states(&self) {}

    /// The number of output steps when it is fixed by the model rather than by its inputs (a
    /// decoder fed by `RepeatVector`): batches then pad their targets to it. `None` (the
    /// default): targets are padded to the batch's longest.
    fn output_steps(&self) -> Option<usize> {
        None
    }

    /// The layer that consumed the inputs' mask when the output has none (named by the loss's
    /// warning, see
    /// [`LossInputs::with_mask_dropped_by`](crate::losses::LossInputs::with_mask_dropped_by));
    /// `None` by default.
    fn mask_dropped_by(&self) -> Option<String> {
        None
    }
}

/// The inputs of a model on one batch: one [`Value`] for most models, several for a model
/// that reads several sequences (an encoder-decoder's source and decoder input ids, two
/// feature sequences). `Inputs::from(value)` is the one-input case.
#[derive(Debug, Clone)]
pub struct Inputs(Vec<Value>);

impl Inputs {
    /// Several inputs, in the order the model reads them.
    pub fn new(values: Vec<Value>) -> Self {
        Inputs(values)
    }

    /// The inputs, in order.
    pub fn values(&self) -> &[Value] {
        &self.0
    }

    /// The inputs, in order, by value.
    pub fn into_values(self) -> Vec<Value> {
        self.0
    }

    /// How many inputs there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The mask of the first input (the only one of a one-input model), if it has one.
    pub fn mask(&self) -> Option<&Mask> {
        self.0.first().and_then(Value::mask)
    }

    /// Exactly `N` inputs, for a model that reads `N`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `model`, the expected and the found number.
    pub fn exactly<const N: usize>(&self, model: &str) -> Result<&[Value; N]> {
        <&[Value; N]>::try_from(self.0.as_slice()).map_err(|_| {
            Error::config(
                model,
                format!("expected {N} input(s), found {}", self.0.len()),
            )
        })
    }

    /// The inputs on `device`, detached from any graph.
    pub fn to_device(self, device: &Device) -> Self {
        Inputs(self.0.into_iter().map(|v| v.to_device(device)).collect())
    }

    /// Checks that no valid step of any input holds NaN or inf
    /// ([`Value::check_finite`]); the error names the input (`inputs` for a single one,
    /// `inputs[i]` among several).
    ///
    /// # Errors
    /// The first non-finite value at a valid step.
    pub fn check_finite(&self) -> Result<()> {
        if let [only] = self.0.as_slice() {
            return only.check_finite("inputs");
        }
        for (i, value) in self.0.iter().enumerate() {
            value.check_finite(&format!("inputs[{i}]"))?;
        }
        Ok(())
    }
}

impl From<Value> for Inputs {
    fn from(value: Value) -> Self {
        Inputs(vec![value])
    }
}

impl From<Vec<Value>> for Inputs {
    fn from(values: Vec<Value>) -> Self {
        Inputs(values)
    }
}

impl std::ops::Index<usize> for Inputs {
    type Output = Value;

    fn index(&self, index: usize) -> &Value {
        &self.0[index]
    }
}
