//! The [`Cell`] trait: one recurrent step, implemented by [`LstmCell`](super::LstmCell),
//! [`GruCell`](super::GruCell) and [`SimpleRnnCell`](super::SimpleRnnCell).

use burn::module::{Module, Param, ParamId};
use burn::nn::Initializer;
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use crate::error::Result;
use crate::weights::{NamedWeight, load_param};

/// Which of the library's cells the fused kernels run (mapped to the kernels' own cell types
/// in `fused/host.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// [`LstmCell`](super::LstmCell).
    Lstm,
    /// [`GruCell`](super::GruCell).
    Gru,
    /// [`SimpleRnnCell`](super::SimpleRnnCell).
    SimpleRnn,
}

impl CellKind {
    /// Gate blocks in the kernel's columns.
    pub fn n_gates(self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
            CellKind::SimpleRnn => 1,
        }
    }

    /// States per row (`[h, c]` for an LSTM, `[h]` otherwise).
    pub fn n_states(self) -> usize {
        match self {
            CellKind::Lstm => 2,
            CellKind::Gru | CellKind::SimpleRnn => 1,
        }
    }
}

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

    /// A cell with Keras' initialisation for `d_input` input features and `units` hidden
    /// units, with or without biases.
    fn init(d_input: usize, units: usize, use_bias: bool, device: &Device) -> Self;

    /// Input features.
    fn d_input(&self) -> usize;

    /// Hidden units.
    fn d_hidden(&self) -> usize;

    /// Whether the cell has biases.
    fn use_bias(&self) -> bool;

    /// The input part of every gate for all steps: `x K + b_input`,
    /// `[batch, time, d_input] -> [batch, time, n_gates * d_hidden]`.
    fn project_input(&self, x: Tensor<3>) -> Tensor<3>;

    /// One step from the projected input `[batch, n_gates * d_hidden]` and the states
    /// (`[batch, d_hidden]` each, `h` first) to the new states (`h` first).
    fn step(&self, projected: Tensor<2>, states: &[Tensor<2>]) -> Vec<Tensor<2>>;

    /// This cell's layer config as an entry of the layer registry
    /// ([`AnyRecurrentConfig`](super::AnyRecurrentConfig)), which is what a stack's config
    /// records; `None` (the default) for a cell outside the registry, whose layers run in code
    /// but cannot be rebuilt from a config.
    fn registered(config: super::RecurrentConfig<Self>) -> Option<super::AnyRecurrentConfig> {
        let _ = config;
        None
    }

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
    (kernel, orthogonal(d_hidden, n, device))
}

/// Keras' (and burn's) `Orthogonal` initialiser for a `[rows, cols]` matrix, lazily like
/// burn's initialisers: the orthonormal factor `Q` (with `R`'s diagonal made positive) of the
/// QR decomposition of a standard-normal draw, transposed when `rows < cols`, so the rows (or
/// columns) are orthonormal. Computed on the host by modified Gram-Schmidt in `f64`, which
/// yields that same `Q` without burn's QR, which is built from tensor operations and slow at
/// the sizes of recurrent kernels.
pub(crate) fn orthogonal(rows: usize, cols: usize, device: &Device) -> Param<Tensor<2>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, require_grad| {
            let draw = Tensor::<2>::random([rows, cols], Distribution::Normal(0.0, 1.0), device);
            let dtype = draw.dtype();
            let draw: Vec<f64> = draw
                .into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .expect("converted to f64");
            let values = orthonormalised(rows, cols, &draw);
            let tensor =
                Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), device).cast(dtype);
            if require_grad {
                tensor.require_grad()
            } else {
                tensor
            }
        },
        device.clone(),
        true,
        [rows, cols].into(),
    )
}

/// `Q` of `orthogonal` from the row-major `[rows, cols]` draw `a`: the rows of `a`
/// orthonormalised in order when `rows < cols`, else its columns.
fn orthonormalised(rows: usize, cols: usize, a: &[f64]) -> Vec<f64> {
    let (n_vectors, len) = (rows.min(cols), rows.max(cols));
    // The vectors to orthonormalise, each contiguous.
    let mut v: Vec<f64> = if rows < cols {
        a.to_vec()
    } else {
        (0..cols)
            .flat_map(|c| (0..rows).map(move |r| a[r * cols + c]))
            .collect()
    };
    for j in 0..n_vectors {
        let (done, rest) = v.split_at_mut(j * len);
        let vj = &mut rest[..len];
        for qi in done.chunks_exact(len) {
            let r: f64 = qi.iter().zip(vj.iter()).map(|(a, b)| a * b).sum();
            vj.iter_mut().zip(qi).for_each(|(x, q)| *x -= r * q);
        }
        let norm = vj.iter().map(|x| x * x).sum::<f64>().sqrt();
        vj.iter_mut().for_each(|x| *x /= norm);
    }
    if rows < cols {
        v
    } else {
        (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| v[c * len + r])
            .collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_util::f32_vec;

    #[test]
    fn orthogonal_equals_burns_qr_initialiser_and_is_orthonormal() {
        let device = Device::flex();
        for [rows, cols] in [[6, 24], [24, 6], [5, 5], [1, 4]] {
            // The device's generator is shared by every test of this process, and another
            // test may draw between `seed` and a draw here; a wrong result fails every
            // attempt, a collision only one.
            let mut attempts = Vec::new();
            let ours = loop {
                device.seed(11);
                let burn_q = f32_vec(
                    Initializer::Orthogonal { gain: 1.0 }
                        .init::<2, _>([rows, cols], &device)
                        .val(),
                );
                device.seed(11);
                let ours = f32_vec(orthogonal(rows, cols, &device).val());
                let worst = ours
                    .iter()
                    .zip(&burn_q)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                attempts.push(worst);
                if worst < 1e-5 {
                    break ours;
                }
                assert!(
                    attempts.len() < 5,
                    "[{rows}, {cols}]: differs from burn's by {attempts:?}"
                );
            };
            // Q Q^T = I (rows < cols) or Q^T Q = I.
            let n = rows.min(cols);
            let at = |i: usize, k: usize| {
                if rows < cols {
                    ours[i * cols + k]
                } else {
                    ours[k * cols + i]
                }
            };
            for i in 0..n {
                for j in 0..n {
                    let dot: f32 = (0..rows.max(cols)).map(|k| at(i, k) * at(j, k)).sum();
                    let expected = if i == j { 1.0 } else { 0.0 };
                    assert!(
                        (dot - expected).abs() < 1e-5,
                        "[{rows}, {cols}] ({i}, {j}): {dot}"
                    );
                }
            }
        }
    }
}
