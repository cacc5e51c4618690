//! [`Dense`] on vectors and sequences, and [`TimeDistributed`].

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer::{
    BuildLayer, Layer, Spec, agreed_d_input, features_error, input_features, kind_error,
};
use crate::mask::{Mask, check_mask_for};
use crate::registry::LayerConfig;
use crate::value::Value;
use crate::weights::{NamedWeight, load_param};

use super::activation::ActivationKind;

/// Configuration of a [`Dense`] layer: `{"type": "dense", "units": 2, "activation":
/// "softmax"}`; `d_input` is not written in a model config, it is the previous layer's output
/// size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseConfig {
    /// Input features (inferred from the previous layer in a model config).
    #[serde(skip)]
    pub d_input: usize,
    /// Output features.
    pub units: usize,
    /// Activation applied to `xW + b` (default linear).
    #[serde(default)]
    pub activation: ActivationKind,
    /// Whether to add a bias (default true).
    #[serde(default = "yes")]
    pub use_bias: bool,
}

fn yes() -> bool {
    true
}

impl Default for DenseConfig {
    /// No sizes (0), linear, with a bias.
    fn default() -> Self {
        Self::new(0, 0)
    }
}

impl DenseConfig {
    /// `d_input` features to `units`, linear, with a bias.
    pub fn new(d_input: usize, units: usize) -> Self {
        DenseConfig {
            d_input,
            units,
            activation: ActivationKind::Linear,
            use_bias: true,
        }
    }

    /// Sets [`DenseConfig::activation`].
    pub fn with_activation(mut self, activation: ActivationKind) -> Self {
        self.activation = activation;
        self
    }

    /// Sets [`DenseConfig::use_bias`].
    pub fn with_use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// Builds the layer: Glorot-uniform kernel, zero bias (Keras defaults).
    pub fn init(&self, device: &Device) -> Dense {
        let kernel = Initializer::XavierUniform { gain: 1.0 }.init_with(
            [self.d_input, self.units],
            Some(self.d_input),
            Some(self.units),
            device,
        );
        let bias = self
            .use_bias
            .then(|| Initializer::Zeros.init([self.units], device));
        Dense {
            kernel,
            bias,
            activation: self.activation,
        }
    }

    /// This config with `d_input` from `input` (checked against one it holds).
    fn for_input(&self, input: &Spec, layer: &str) -> Result<Self> {
        let d_input = agreed_d_input(layer, self.d_input, input_features(input, layer)?)?;
        if self.units == 0 {
            return Err(Error::config(
                layer,
                "expected units of at least 1, found 0",
            ));
        }
        Ok(DenseConfig { d_input, ..*self })
    }
}

impl BuildLayer for DenseConfig {
    type Layer = Dense;

    fn build(&self, input: &Spec, device: &Device) -> Result<Dense> {
        Ok(self.for_input(input, "Dense")?.init(device))
    }

    fn d_input(&self) -> Option<usize> {
        (self.d_input > 0).then_some(self.d_input)
    }
}

/// Configuration of a [`TimeDistributed`] dense layer: a [`DenseConfig`], written as
/// `{"type": "time_distributed_dense", "units": 5, "activation": "softmax"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeDistributedConfig(pub DenseConfig);

impl BuildLayer for TimeDistributedConfig {
    type Layer = TimeDistributed;

    fn build(&self, input: &Spec, device: &Device) -> Result<TimeDistributed> {
        input.sequence_features("TimeDistributed")?;
        let dense = self.0.for_input(input, "TimeDistributed")?.init(device);
        Ok(TimeDistributed::new(dense))
    }

    fn d_input(&self) -> Option<usize> {
        self.0.d_input()
    }
}

/// `activation(x W + b)` on the last axis.
///
/// # Shapes
/// `[batch, d_input] -> [batch, d_output]`, or `[batch, time, d_input] -> [batch, time,
/// d_output]` (every step, as Keras applies Dense to 3-D input).
///
/// # Masking
/// On a sequence the mask passes unchanged.
#[derive(Module, Debug)]
pub struct Dense {
    /// `[d_input, d_output]` (Keras `kernel`).
    pub kernel: Param<Tensor<2>>,
    /// `[d_output]` (Keras `bias`).
    pub bias: Option<Param<Tensor<1>>>,
    /// The activation.
    #[module(skip)]
    pub activation: ActivationKind,
}

impl Dense {
    /// `[batch, d_input] -> [batch, d_output]`.
    ///
    /// # Panics
    /// When the last axis is not `d_input` (burn's matmul names both shapes).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        // One operation on the CPU backend (product and bias, on two threads when large).
        let bias = self.bias.as_ref().map(|b| b.val());
        let y = super::fused_dense::fused_affine(x, self.kernel.val(), bias);
        self.activation.apply(y)
    }

    /// `[batch, time, d_input] -> [batch, time, d_output]`; the mask passes unchanged.
    ///
    /// # Errors
    /// When the features or the mask do not fit.
    pub fn forward_sequence(
        &self,
        x: Tensor<3>,
        mask: Option<&Mask>,
    ) -> Result<(Tensor<3>, Option<Mask>)> {
        let [batch, time, features] = x.dims();
        check_mask_for(mask, &[batch, time], "Dense")?;
        self.check_features(features)?;
        let y = self.forward(x.reshape([batch * time, features]));
        Ok((y.reshape([batch, time, self.d_output()]), mask.cloned()))
    }

    /// Output features.
    pub fn d_output(&self) -> usize {
        self.kernel.val().dims()[1]
    }

    /// Input features.
    pub fn d_input(&self) -> usize {
        self.kernel.val().dims()[0]
    }

    /// The config that rebuilds this layer.
    pub fn dense_config(&self) -> DenseConfig {
        DenseConfig::new(self.d_input(), self.d_output())
            .with_activation(self.activation)
            .with_use_bias(self.bias.is_some())
    }

    fn check_features(&self, features: usize) -> Result<()> {
        if features != self.d_input() {
            return Err(features_error("Dense", self.d_input(), features));
        }
        Ok(())
    }
}

impl Layer for Dense {
    fn type_name(&self) -> &'static str {
        "Dense"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        match input {
            Value::Sequence { values, mask } => {
                let (values, mask) = self.forward_sequence(values, mask.as_ref())?;
                Ok(Value::sequence(values, mask))
            }
            Value::Vector(values) => {
                self.check_features(values.dims()[1])?;
                Ok(Value::Vector(self.forward(values)))
            }
            other => Err(crate::error::Error::InputKind {
                layer: "Dense".into(),
                expected: "sequence or vector".into(),
                found: other.kind().into(),
            }),
        }
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        match *input {
            Spec::Sequence {
                time,
                features,
                masked,
            } => {
                self.check_features(features)?;
                Ok(Spec::Sequence {
                    time,
                    features: self.d_output(),
                    masked,
                })
            }
            Spec::Vector { features } => {
                self.check_features(features)?;
                Ok(Spec::Vector {
                    features: self.d_output(),
                })
            }
            other => Err(kind_error("Dense", "sequence or vector", &other)),
        }
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn is_per_step(&self) -> bool {
        true
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Dense(self.dense_config()))
    }

    fn weights(&self) -> Vec<NamedWeight> {
        let mut weights = vec![NamedWeight::from_param("kernel", &self.kernel)];
        weights.extend(
            self.bias
                .as_ref()
                .map(|b| NamedWeight::from_param("bias", b)),
        );
        weights
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_param(&mut self.kernel, weights, "kernel")?;
        if let Some(bias) = &mut self.bias {
            load_param(bias, weights, "bias")?;
        }
        Ok(())
    }
}

/// Applies a [`Dense`] layer to every step of a sequence (Keras `TimeDistributed(Dense)`).
///
/// # Shapes
/// `[batch, time, d_input] -> [batch, time, d_output]`.
///
/// # Masking
/// Passes the mask unchanged. Values at masked steps are computed but carry no meaning;
/// losses and metrics select them out through the mask.
#[derive(Module, Debug)]
pub struct TimeDistributed {
    /// The wrapped layer.
    pub inner: Dense,
}

impl TimeDistributed {
    /// Wraps `inner`.
    pub fn new(inner: Dense) -> Self {
        TimeDistributed { inner }
    }
}

impl Layer for TimeDistributed {
    fn type_name(&self) -> &'static str {
        "TimeDistributed"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        let (values, mask) = input.into_sequence("TimeDistributed")?;
        let (values, mask) = self.inner.forward_sequence(values, mask.as_ref())?;
        Ok(Value::sequence(values, mask))
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        input.sequence_features("TimeDistributed")?;
        self.inner.output_spec(input)
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn is_per_step(&self) -> bool {
        true
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::TimeDistributed(TimeDistributedConfig(
            self.inner.dense_config(),
        )))
    }

    fn weights(&self) -> Vec<NamedWeight> {
        self.inner.weights()
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        self.inner.set_weights(weights)
    }
}
