//! [`Dropout`] and [`dropout`], active only while training.
//!
//! burn's own dropout draws every element from a cryptographic generator through a generic
//! Bernoulli sampler and then multiplies twice (mask, then scale). Here one seed per call
//! comes from the device's generator (so `device.seed` still makes runs repeatable), a small
//! fast generator expands it into the scaled keep mask on the host, and the input is
//! multiplied once.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer::{BuildLayer, Layer, Spec};
use crate::registry::LayerConfig;
use crate::tensor_util::f32_vec;
use crate::value::Value;

/// Inverted dropout: on an autodiff (training) device, zeroes each element of `x` with
/// probability `rate` and scales the rest by `1 / (1 - rate)`; the identity elsewhere, and
/// for `rate == 0`. The gradient reaching `x` is the output gradient times the same mask.
///
/// # Shapes
/// Any; the output has the input's shape.
///
/// # Panics
/// `rate` outside `[0, 1)`.
pub fn dropout<const D: usize>(x: Tensor<D>, rate: f64) -> Tensor<D> {
    assert_rate(rate);
    let device = x.device();
    if rate == 0.0 || !device.is_autodiff() {
        return x;
    }
    let shape = x.shape();
    let keep = 1.0 - rate;
    let mut rng = SmallRng::seed_from_u64(seed_from(&device));
    // An element is kept when a uniform 32-bit draw falls below keep * 2^32.
    let threshold = (keep * 2f64.powi(32)).min(u32::MAX as f64) as u32;
    let scale = (1.0 / keep) as f32;
    let n = shape.num_elements();
    let mut values = Vec::with_capacity(n);
    while values.len() < n {
        let bits = rng.next_u64();
        for half in [bits as u32, (bits >> 32) as u32] {
            if values.len() < n {
                values.push(if half < threshold { scale } else { 0.0 });
            }
        }
    }
    x * Tensor::<D>::from_data(TensorData::new(values, shape), &device)
}

fn assert_rate(rate: f64) {
    assert!(
        (0.0..1.0).contains(&rate),
        "dropout rate must be in [0, 1), found {rate}"
    );
}

/// 48 bits from the device's generator (two 24-bit uniform draws).
pub(crate) fn seed_from(device: &burn::tensor::Device) -> u64 {
    let draws = f32_vec(Tensor::<1>::random(
        [2],
        Distribution::Uniform(0.0, 1.0),
        device,
    ));
    let bits = |u: f32| (f64::from(u) * f64::from(1u32 << 24)) as u64;
    bits(draws[0]) | bits(draws[1]) << 24
}

/// Configuration of a [`Dropout`] layer: `{"type": "dropout", "rate": 0.2}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutConfig {
    /// The drop probability, in `[0, 1)`.
    pub rate: f64,
}

impl BuildLayer for DropoutConfig {
    type Layer = Dropout;

    fn build(&self, _input: &Spec, _device: &Device) -> Result<Dropout> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::config(
                "Dropout",
                format!("expected a rate in [0, 1), found {}", self.rate),
            ));
        }
        Ok(Dropout::new(self.rate))
    }
}

/// Zeroes each element with probability `rate` and scales the rest by `1 / (1 - rate)`, only
/// when the input is on an autodiff (training) device; an identity otherwise. See
/// [`dropout`].
///
/// # Shapes
/// Any sequence or vector; the output has the input's shape.
///
/// # Masking
/// Passes the mask unchanged.
#[derive(Module, Debug)]
pub struct Dropout {
    /// The drop probability.
    pub rate: f64,
}

impl Dropout {
    /// A dropout layer.
    ///
    /// # Panics
    /// `rate` outside `[0, 1)` (configs check it first and return an error).
    pub fn new(rate: f64) -> Self {
        assert_rate(rate);
        Dropout { rate }
    }
}

impl Layer for Dropout {
    fn type_name(&self) -> &'static str {
        "Dropout"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        Ok(match input {
            Value::Sequence { values, mask } => Value::sequence(dropout(values, self.rate), mask),
            Value::Vector(values) => Value::Vector(dropout(values, self.rate)),
            tokens => tokens,
        })
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        Ok(*input)
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn is_per_step(&self) -> bool {
        true
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Dropout(DropoutConfig { rate: self.rate }))
    }
}
