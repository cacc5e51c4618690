//! [`ActivationKind`] and the [`Activation`] layer.

use burn::module::Module;
use burn::tensor::activation as act;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layer::{BuildLayer, Layer, Spec};
use crate::registry::LayerConfig;
use crate::value::Value;

/// An element-wise (or last-axis, for softmax) activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    /// Identity.
    #[default]
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// The logistic function `1 / (1 + e^-x)`.
    Sigmoid,
    /// Softmax over the last axis.
    Softmax,
    /// Exact GELU.
    Gelu,
}

impl ActivationKind {
    /// Applies the function to a tensor of any rank (softmax over the last axis).
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            ActivationKind::Linear => x,
            ActivationKind::Relu => act::relu(x),
            ActivationKind::Tanh => crate::elementwise::tanh(x),
            ActivationKind::Sigmoid => act::sigmoid(x),
            ActivationKind::Softmax => crate::elementwise::softmax(x),
            ActivationKind::Gelu => act::gelu(x),
        }
    }
}

/// Configuration of an [`Activation`] layer: `{"type": "activation", "activation":
/// "softmax"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationConfig {
    /// The function.
    pub activation: ActivationKind,
}

impl BuildLayer for ActivationConfig {
    type Layer = Activation;

    fn build(&self, _input: &Spec, _device: &Device) -> Result<Activation> {
        Ok(Activation::new(self.activation))
    }
}

/// Applies an [`ActivationKind`].
///
/// # Shapes
/// Any sequence or vector; the output has the input's shape.
///
/// # Masking
/// Passes the mask unchanged.
#[derive(Module, Debug)]
pub struct Activation {
    /// The function.
    #[module(skip)]
    pub activation: ActivationKind,
}

impl Activation {
    /// An activation layer.
    pub fn new(activation: ActivationKind) -> Self {
        Activation { activation }
    }
}

impl Layer for Activation {
    fn type_name(&self) -> &'static str {
        "Activation"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        Ok(match input {
            Value::Sequence { values, mask } => {
                Value::sequence(self.activation.apply(values), mask)
            }
            Value::Vector(values) => Value::Vector(self.activation.apply(values)),
            tokens @ Value::Tokens { .. } => {
                return Err(crate::error::Error::InputKind {
                    layer: "Activation".into(),
                    expected: "sequence or vector".into(),
                    found: tokens.kind().into(),
                });
            }
        })
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        match input {
            Spec::Tokens { .. } => Err(crate::layer::kind_error(
                "Activation",
                "sequence or vector",
                input,
            )),
            _ => Ok(*input),
        }
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn is_per_step(&self) -> bool {
        true
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Activation(ActivationConfig {
            activation: self.activation,
        }))
    }
}
