//! [`LstmCell`]: gates i, f, c, o in Keras order.

use burn::module::{Module, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};

use super::cell::{Cell, CellKind, cell_weights, init_kernels, load_cell_weights, project};
use super::config::{AnyRecurrentConfig, RecurrentConfig};
use super::fused::FusedParts;
use crate::error::Result;
use crate::weights::NamedWeight;

/// The LSTM cell of Keras `LSTM`: `z = x K + h U + b`, split into gates i, f, g, o;
/// `c' = σ(f) c + σ(i) tanh(g)`, `h' = σ(o) tanh(c')`, σ the real sigmoid.
/// States are `[h, c]`.
#[derive(Module, Debug)]
pub struct LstmCell {
    /// `[d_input, 4 d_hidden]`, gate blocks i, f, c, o.
    pub kernel: Param<Tensor<2>>,
    /// `[d_hidden, 4 d_hidden]`.
    pub recurrent_kernel: Param<Tensor<2>>,
    /// `[4 d_hidden]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl LstmCell {
    /// Keras initialisation: Glorot-uniform kernel, orthogonal recurrent kernel, zero bias
    /// except ones on the forget gate (`unit_forget_bias`).
    pub fn new(d_input: usize, d_hidden: usize, use_bias: bool, device: &Device) -> Self {
        let (kernel, recurrent_kernel) = init_kernels(d_input, d_hidden, 4, device);
        let bias = use_bias.then(|| {
            let values: Vec<f32> = (0..4 * d_hidden)
                .map(|j| if j / d_hidden == 1 { 1.0 } else { 0.0 })
                .collect();
            Param::from_data(TensorData::new(values, [4 * d_hidden]), device)
        });
        LstmCell {
            kernel,
            recurrent_kernel,
            bias,
        }
    }
}

impl Cell for LstmCell {
    const TYPE_NAME: &'static str = "Lstm";
    const N_STATES: usize = 2;

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
        let (h, c) = (states[0].clone(), states[1].clone());
        let z = projected + h.matmul(self.recurrent_kernel.val());
        let mut gates = z.chunk(4, 1).into_iter();
        let mut next = || gates.next().expect("four gate blocks");
        let (i, f, g, o) = (
            sigmoid(next()),
            sigmoid(next()),
            next().tanh(),
            sigmoid(next()),
        );
        let c_next = f * c + i * g;
        let h_next = o * c_next.clone().tanh();
        vec![h_next, c_next]
    }

    fn registered(config: RecurrentConfig<Self>) -> Option<AnyRecurrentConfig> {
        Some(AnyRecurrentConfig::Lstm(config))
    }

    fn fused_parts(&self) -> Option<FusedParts> {
        Some(FusedParts {
            cell: CellKind::Lstm,
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
