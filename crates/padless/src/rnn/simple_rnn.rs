//! [`SimpleRnnCell`]: `h' = tanh(x K + b + h U)`.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use super::cell::{Cell, CellKind, cell_weights, init_kernels, load_cell_weights, project};
use super::config::{AnyRecurrentConfig, RecurrentConfig};
use super::fused::FusedParts;
use crate::error::Result;
use crate::weights::NamedWeight;

/// The Elman cell of Keras `SimpleRNN`: `h' = tanh(x K + b + h U)`.
#[derive(Module, Debug)]
pub struct SimpleRnnCell {
    /// `[d_input, d_hidden]`.
    pub kernel: Param<Tensor<2>>,
    /// `[d_hidden, d_hidden]`.
    pub recurrent_kernel: Param<Tensor<2>>,
    /// `[d_hidden]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl SimpleRnnCell {
    /// Keras initialisation: Glorot-uniform kernel, orthogonal recurrent kernel, zero bias.
    pub fn new(d_input: usize, d_hidden: usize, use_bias: bool, device: &Device) -> Self {
        let (kernel, recurrent_kernel) = init_kernels(d_input, d_hidden, 1, device);
        let bias = use_bias.then(|| Initializer::Zeros.init([d_hidden], device));
        SimpleRnnCell {
            kernel,
            recurrent_kernel,
            bias,
        }
    }
}

impl Cell for SimpleRnnCell {
    const TYPE_NAME: &'static str = "SimpleRnn";
    const N_STATES: usize = 1;

    fn init(d_input: usize, units: usize, use_bias: bool, device: &Device) -> Self {
        Self::new(d_input, units, use_bias, device)
    }

    fn d_input(&self) -> usize {
        self.kernel.val().dims()[0]
    }

    fn d_hidden(&self) -> usize {
        self.recurrent_kernel.val().dims()[0]
    }

    fn use_bias(&self) -> bool {
        self.bias.is_some()
    }

    fn project_input(&self, x: Tensor<3>) -> Tensor<3> {
        project(x, self.kernel.val(), self.bias.as_ref().map(Param::val))
    }

    fn step(&self, projected: Tensor<2>, states: &[Tensor<2>]) -> Vec<Tensor<2>> {
        let h = states[0].clone();
        vec![(projected + h.matmul(self.recurrent_kernel.val())).tanh()]
    }

    fn registered(config: RecurrentConfig<Self>) -> Option<AnyRecurrentConfig> {
        Some(AnyRecurrentConfig::SimpleRnn(config))
    }

    fn fused_parts(&self) -> Option<FusedParts> {
        Some(FusedParts {
            cell: CellKind::SimpleRnn,
            kernel: self.kernel.val(),
            recurrent_kernel: self.recurrent_kernel.val(),
            bias: self.bias.as_ref().map(Param::val),
        })
    }

    fn weights(&self) -> Vec<NamedWeight> {
        cell_weights(&self.kernel, &self.recurrent_kernel, self.bias.as_ref())
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_cell_weights(
            &mut self.kernel,
            &mut self.recurrent_kernel,
            self.bias.as_mut(),
            weights,
        )
    }
}
