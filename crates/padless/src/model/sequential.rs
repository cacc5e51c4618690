//! [`Model`] for [`Sequential`]: one input, the stack's output, and the [`ModelConfig`] that
//! rebuilds a stack, also one built in code ([`Sequential::config`]).

use burn::tensor::Device;

use super::{Inputs, Model};
use crate::error::Result;
use crate::layer::Spec;
use crate::model_config::ModelConfig;
use crate::sequential::Sequential;
use crate::value::Value;
use crate::weights::NamedWeight;

impl Model for Sequential {
    type Config = ModelConfig;
    const KIND: &'static str = "sequential";

    fn build(config: &ModelConfig, device: &Device) -> Result<Self> {
        config.build(device)
    }

    fn config(&self) -> Result<ModelConfig> {
        Sequential::config(self)
    }

    fn forward_batch(&self, inputs: &Inputs, read_steps: Option<&[usize]>) -> Result<Value> {
        let [input] = inputs.exactly::<1>("Sequential")?;
        self.forward_reading(input.clone(), read_steps)
    }

    fn weights(&self) -> Vec<NamedWeight> {
        Sequential::weights(self)
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        Sequential::set_weights(self, weights)
    }

    fn reset_states(&self) {
        Sequential::reset_states(self);
    }

    fn output_steps(&self) -> Option<usize> {
        let input = self.input().ok()?.spec(false);
        output_steps(self, input).ok().flatten()
    }

    fn mask_dropped_by(&self) -> Option<String> {
        let input = self.input().ok()?.spec(false);
        Sequential::mask_dropped_by(self, input).ok().flatten()
    }
}

/// The fixed number of output steps of `model` on `input`: the output's time axis when the
/// stack fixes it (RepeatVector), 1 for a vector output, `None` when it follows the input.
///
/// # Errors
/// As [`Sequential::check`].
pub(crate) fn output_steps(model: &Sequential, input: Spec) -> Result<Option<usize>> {
    let rows = model.check(input)?;
    Ok(match rows.last().map(|r| r.output) {
        Some(Spec::Sequence { time, .. }) => time,
        _ => Some(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{ActivationKind, DenseConfig, Masking, RepeatVector, TimeDistributed};
    use crate::rnn::LstmConfig;

    /// A stack built in code is a model whose config rebuilds it, and whose fixed output
    /// length (RepeatVector) the trainer reads.
    #[test]
    fn a_stack_built_in_code_is_a_model_with_its_config() {
        let device = Device::flex();
        let model = Sequential::new(vec![
            Masking::new(-1.0).into(),
            LstmConfig::new(3, 5).init(&device).into(),
            RepeatVector::new(6).into(),
            LstmConfig::new(5, 2)
                .with_return_sequences(true)
                .init(&device)
                .into(),
            TimeDistributed::new(
                DenseConfig::new(2, 7)
                    .with_activation(ActivationKind::Softmax)
                    .init(&device),
            )
            .into(),
        ]);
        let config = Model::config(&model).unwrap();
        assert_eq!(config, Sequential::config(&model).unwrap());
        let rebuilt = <Sequential as Model>::build(&config, &device).unwrap();
        assert_eq!(rebuilt.names(), model.names());
        assert_eq!(Model::output_steps(&model), Some(6));
    }
}
