//! [`GruCell`]: Keras `GRU` with `reset_after=True`.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};

use super::cell::{Cell, CellKind, cell_weights, init_kernels, load_cell_weights, project};
use super::config::{AnyRecurrentConfig, RecurrentConfig};
use super::fused::FusedParts;
use crate::error::Result;
use crate::weights::NamedWeight;

/// The GRU cell of Keras `GRU(reset_after=True)` (the Keras default), gates z, r, h:
/// `z = σ(x K_z + b_z + h U_z + c_z)`, `r = σ(x K_r + b_r + h U_r + c_r)`,
/// `ĥ = tanh(x K_h + b_h + r ⊙ (h U_h + c_h))`, `h' = z h + (1 − z) ĥ`,
/// with `b` the input bias (row 0 of `bias`) and `c` the recurrent bias (row 1).
#[derive(Module, Debug)]
pub struct GruCell {
    /// `[d_input, 3 d_hidden]`, gate blocks z, r, h.
    pub kernel: Param<Tensor<2>>,
    /// `[d_hidden, 3 d_hidden]`.
    pub recurrent_kernel: Param<Tensor<2>>,
    /// `[2, 3 d_hidden]`: row 0 input bias, row 1 recurrent bias.
    pub bias: Option<Param<Tensor<2>>>,
}

impl GruCell {
    /// Keras initialisation: Glorot-uniform kernel, orthogonal recurrent kernel, zero biases.
    pub fn new(d_input: usize, d_hidden: usize, use_bias: bool, device: &Device) -> Self {
        let (kernel, recurrent_kernel) = init_kernels(d_input, d_hidden, 3, device);
        let bias = use_bias.then(|| Initializer::Zeros.init([2, 3 * d_hidden], device));
        GruCell {
            kernel,
            recurrent_kernel,
            bias,
        }
    }

    fn bias_row(&self, row: usize) -> Option<Tensor<1>> {
        self.bias.as_ref().map(|b| {
            let n = b.val().dims()[1];
            b.val().slice([row..row + 1, 0..n]).reshape([n])
        })
    }
}

impl Cell for GruCell {
    const TYPE_NAME: &'static str = "Gru";
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
        project(x, self.kernel.val(), self.bias_row(0))
    }

    fn step(&self, projected: Tensor<2>, states: &[Tensor<2>]) -> Vec<Tensor<2>> {
        let h = states[0].clone();
        let mut recurrent = h.clone().matmul(self.recurrent_kernel.val());
        if let Some(bias) = self.bias_row(1) {
            recurrent = recurrent + bias.unsqueeze_dim::<2>(0);
        }
        let mut x_parts = projected.chunk(3, 1).into_iter();
        let mut h_parts = recurrent.chunk(3, 1).into_iter();
        let mut next = || {
            (
                x_parts.next().expect("three gate blocks"),
                h_parts.next().expect("three gate blocks"),
            )
        };
        let (xz, hz) = next();
        let (xr, hr) = next();
        let (xh, hh) = next();
        let z = sigmoid(xz + hz);
        let r = sigmoid(xr + hr);
        let candidate = (xh + r * hh).tanh();
        vec![z.clone() * h + z.neg().add_scalar(1.0) * candidate]
    }

    fn registered(config: RecurrentConfig<Self>) -> Option<AnyRecurrentConfig> {
        Some(AnyRecurrentConfig::Gru(config))
    }

    fn fused_parts(&self) -> Option<FusedParts> {
        Some(FusedParts {
            cell: CellKind::Gru,
            kernel: self.kernel.val(),
            recurrent_kernel: self.recurrent_kernel.val(),
            bias: self.bias.as_ref().map(|b| {
                let [rows, cols] = b.val().dims();
                b.val().reshape([rows * cols])
            }),
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
