//! The [`Cell`] trait: one recurrent step, implemented by [`LstmCell`](super::LstmCell),
//! [`GruCell`](super::GruCell) and [`SimpleRnnCell`](super::SimpleRnnCell).

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use crate::error::Result;
use crate::weights::{NamedWeight, load_param};

/// One step of a recurrent cell, with its weights in Keras layout.
///
/// The masked time loop ([`Recurrent`](super::Recurrent)) is written once over this trait:
/// it computes [`Cell::project_input`] for all steps in one matrix product, then calls
/// [`Cell::step`] per step and selects between the new and the carried states by the mask.
pub trait Cell: Module + Sized {
    /// The layer name the summary prints (`Lstm`).
    const TYPE_NAME: &'static str;
    /// The number of state tensors (`[h]`, or `[h, c]` for an LSTM).
    const N_STATES: usize;

    /// Input features.
    fn d_input(&self) -> usize;

    /// Hidden units.
    fn d_hidden(&self) -> usize;

    /// The input part of every gate for all steps: `x K + b_input`,
    /// `[batch, time, d_input] -> [batch, time, n_gates * d_hidden]`.
    fn project_input(&self, x: Tensor<3>) -> Tensor<3>;

    /// One step from the projected input `[batch, n_gates * d_hidden]` and the states
    /// (`[batch, d_hidden]` each, `h` first) to the new states (`h` first).
    fn step(&self, projected: Tensor<2>, states: &[Tensor<2>]) -> Vec<Tensor<2>>;

    /// The cell's kind and weights for the fused CPU kernels, or `None` (the default) to run
    /// the composite loop only.
    fn fused_parts(&self) -> Option<super::fused::FusedParts> {
        None
    }

    /// Weights in Keras layout and order.
    fn weights(&self) -> Vec<NamedWeight>;

    /// Replaces the weights, matched by Keras name.
    ///
    /// # Errors
    /// A missing weight or a shape mismatch, naming both shapes.
    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()>;
}

/// Keras' initial kernels: Glorot-uniform input kernel `[d_input, n]` and orthogonal recurrent
/// kernel `[d_hidden, n]`.
pub(crate) fn init_kernels(
    d_input: usize,
    d_hidden: usize,
    n_gates: usize,
    device: &Device,
) -> (Param<Tensor<2>>, Param<Tensor<2>>) {
    let n = n_gates * d_hidden;
    let kernel = Initializer::XavierUniform { gain: 1.0 }.init_with(
        [d_input, n],
        Some(d_input),
        Some(n),
        device,
    );
    let recurrent_kernel = Initializer::Orthogonal { gain: 1.0 }.init([d_hidden, n], device);
    (kernel, recurrent_kernel)
}

/// `x [batch, time, d_input] @ kernel [d_input, n] (+ bias [n])`, as one matrix product.
pub(crate) fn project(x: Tensor<3>, kernel: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<3> {
    let [batch, time, d_input] = x.dims();
    let n = kernel.dims()[1];
    let mut y = x.reshape([batch * time, d_input]).matmul(kernel);
    if let Some(bias) = bias {
        y = y + bias.unsqueeze_dim::<2>(0);
    }
    y.reshape([batch, time, n])
}

/// The Keras weight list of a cell: `kernel`, `recurrent_kernel`, then `bias` if any.
pub(crate) fn cell_weights<const B: usize>(
    kernel: &Param<Tensor<2>>,
    recurrent_kernel: &Param<Tensor<2>>,
    bias: Option<&Param<Tensor<B>>>,
) -> Vec<NamedWeight> {
    let mut weights = vec![
        NamedWeight::from_param("kernel", kernel),
        NamedWeight::from_param("recurrent_kernel", recurrent_kernel),
    ];
    weights.extend(bias.map(|b| NamedWeight::from_param("bias", b)));
    weights
}

/// Loads what [`cell_weights`] lists.
pub(crate) fn load_cell_weights<const B: usize>(
    kernel: &mut Param<Tensor<2>>,
    recurrent_kernel: &mut Param<Tensor<2>>,
    bias: Option<&mut Param<Tensor<B>>>,
    weights: &[NamedWeight],
) -> Result<()> {
    load_param(kernel, weights, "kernel")?;
    load_param(recurrent_kernel, weights, "recurrent_kernel")?;
    if let Some(bias) = bias {
        load_param(bias, weights, "bias")?;
    }
    Ok(())
}
