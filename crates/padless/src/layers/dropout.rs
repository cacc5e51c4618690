//! [`Dropout`], active only while training.

use burn::module::Module;
use burn::nn::{Dropout as BurnDropout, DropoutConfig};

use crate::error::Result;
use crate::layer::{Layer, Spec};
use crate::value::Value;

/// Zeroes each element with probability `rate` and scales the rest by `1 / (1 - rate)`, only
/// when the input is on an autodiff (training) device; an identity otherwise (burn's rule).
///
/// # Shapes
/// Any sequence or vector; the output has the input's shape.
///
/// # Masking
/// Passes the mask unchanged.
#[derive(Module, Debug)]
pub struct Dropout {
    inner: BurnDropout,
    /// The drop probability.
    pub rate: f64,
}

impl Dropout {
    /// A dropout layer; `rate` in `[0, 1)`.
    pub fn new(rate: f64) -> Self {
        Dropout {
            inner: DropoutConfig::new(rate).init(),
            rate,
        }
    }
}

impl Layer for Dropout {
    fn type_name(&self) -> &'static str {
        "Dropout"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        Ok(match input {
            Value::Sequence { values, mask } => Value::sequence(self.inner.forward(values), mask),
            Value::Vector(values) => Value::Vector(self.inner.forward(values)),
            tokens => tokens,
        })
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        Ok(*input)
    }

    fn supports_mask(&self) -> bool {
        true
    }
}
