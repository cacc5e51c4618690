//! [`RepeatVector`]: a vector repeated over a new time axis.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer::{BuildLayer, Layer, Spec, kind_error};
use crate::registry::LayerConfig;
use crate::value::Value;

/// Configuration of a [`RepeatVector`]: `{"type": "repeat_vector", "n_steps": 6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatVectorConfig {
    /// How many steps to make (`n` in Keras).
    pub n_steps: usize,
}

impl BuildLayer for RepeatVectorConfig {
    type Layer = RepeatVector;

    fn build(&self, _input: &Spec, _device: &Device) -> Result<RepeatVector> {
        if self.n_steps == 0 {
            return Err(Error::config(
                "RepeatVector",
                "expected n_steps of at least 1, found 0",
            ));
        }
        Ok(RepeatVector::new(self.n_steps))
    }
}

/// Repeats each row's vector `n_steps` times.
///
/// # Shapes
/// `[batch, features] -> [batch, n_steps, features]`.
///
/// # Masking
/// Creates no mask (every repeated step is valid). A decoder fed by it gets its mask from
/// the targets (a target mask in the loss).
#[derive(Module, Debug)]
pub struct RepeatVector {
    /// How many steps to make.
    pub n_steps: usize,
}

impl RepeatVector {
    /// Repeats `n_steps` times.
    pub fn new(n_steps: usize) -> Self {
        RepeatVector { n_steps }
    }

    /// `[batch, features] -> [batch, n_steps, features]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<3> {
        let [batch, features] = x.dims();
        x.unsqueeze_dim::<3>(1)
            .expand([batch, self.n_steps, features])
    }
}

impl Layer for RepeatVector {
    fn type_name(&self) -> &'static str {
        "RepeatVector"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        Ok(Value::sequence(
            self.forward(input.into_vector("RepeatVector")?),
            None,
        ))
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        match *input {
            Spec::Vector { features } => Ok(Spec::Sequence {
                time: Some(self.n_steps),
                features,
                masked: false,
            }),
            other => Err(kind_error(
                "RepeatVector",
                "vector [batch, features]",
                &other,
            )),
        }
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::RepeatVector(RepeatVectorConfig {
            n_steps: self.n_steps,
        }))
    }
}
