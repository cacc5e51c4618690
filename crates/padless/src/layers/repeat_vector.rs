//! [`RepeatVector`]: a vector repeated over a new time axis.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::layer::{Layer, Spec, kind_error};
use crate::value::Value;

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
}
