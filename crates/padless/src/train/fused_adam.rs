//! [`FusedAdam`]: Adam as one in-place pass per parameter on the CPU backend.
//!
//! burn's `Adam` runs about a dozen element-wise tensor operations per parameter and step;
//! on the flex backend each writes a new tensor (zero-filled, then copied once to realign
//! it). [`FusedAdam`] gives the same update, bit for bit, from
//! [`padless_kernels::adam_update`]: the parameter and both moments are updated in place
//! (copied first only if something else still holds them), the gradient read once. Other
//! backends, other float types and AMSGrad states go through burn's `Adam` itself.
//!
//! The state is burn's [`AdamState`], so optimizer records are the same as burn's Adam's.
//!
//! The update is not one of the crate's fused operations (`ops`): it changes its parameter
//! and moments in place instead of writing an output, returns three tensors and has no
//! backward pass, so it is a flex-only backend extension of its own ([`HostAdamBackend`]).

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::optim::grad_clipping::GradientClipping;
use burn::optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{DType, Device, Element, Tensor};
use padless_kernels::{AdamStep, Real, adam_update};

use crate::cpu::{HostData, fused_enabled, on_flex};

/// One Adam step of a parameter as one operation.
#[backend_extension(Flex)]
pub trait HostAdamBackend: Backend {
    /// Updates `param` with `grad` and the moments `m`, `v` (all of one shape, `f32` or
    /// `f64`) as [`padless_kernels::adam_update`]; returns the new parameter and moments.
    fn host_adam(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// A flex tensor that owns its contiguous storage from offset 0 (copied if it did not).
fn owned_contiguous(tensor: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let layout = tensor.layout();
    if layout.is_contiguous() && layout.start_offset() == 0 {
        tensor
    } else {
        FloatTensor::<Flex>::from_data(tensor.into_data())
    }
}

fn host_adam_typed<T: Real + Element + bytemuck::Pod>(
    param: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
    m: FloatTensor<Flex>,
    v: FloatTensor<Flex>,
    step: AdamStep,
) -> (FloatTensor<Flex>, FloatTensor<Flex>, FloatTensor<Flex>) {
    let n = param.shape().num_elements();
    let grad = HostData::<T>::read::<Flex>(grad);
    let (mut param, mut m, mut v) = (
        owned_contiguous(param),
        owned_contiguous(m),
        owned_contiguous(v),
    );
    // `storage_mut` copies a buffer still shared with another tensor (copy on write).
    adam_update(
        &step,
        &mut param.storage_mut::<T>()[..n],
        grad.as_slice(),
        &mut m.storage_mut::<T>()[..n],
        &mut v.storage_mut::<T>()[..n],
        crate::cpu::threads(),
    );
    (param, m, v)
}

impl HostAdamBackend for Flex {
    fn host_adam(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match param.dtype() {
            DType::F32 => host_adam_typed::<f32>(param, grad, m, v, step),
            DType::F64 => host_adam_typed::<f64>(param, grad, m, v, step),
            other => panic!("fused Adam runs on f32 or f64, got {other:?}"),
        }
    }
}

/// Adam (Kingma and Ba), as burn's `Adam` without weight decay or AMSGrad, fused into one
/// in-place pass per parameter on the CPU backend (see the module docs). Build it with
/// [`FusedAdam::new`] and wrap it in a `burn::optim::ModuleOptimizer` (as
/// `OptimizerConfig::Adam` does).
///
/// ```
/// use burn::optim::{GradientsParams, ModuleOptimizer};
/// use burn::tensor::Device;
/// use padless::layers::DenseConfig;
/// use padless::train::FusedAdam;
///
/// let device = Device::flex().autodiff();
/// let dense = DenseConfig::new(3, 2).init(&device);
/// let mut optimizer = ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-7));
/// let x = burn::tensor::Tensor::<2>::ones([4, 3], &device);
/// let loss = dense.forward(x).sum();
/// let grads = GradientsParams::from_grads(loss.backward(), &dense);
/// let stepped = optimizer.step(1e-3, dense.clone(), grads);
/// // Every weight moved by about the learning rate against its gradient (all positive here).
/// let before: Vec<f32> = dense.kernel.val().into_data().to_vec().unwrap();
/// let after: Vec<f32> = stepped.kernel.val().into_data().to_vec().unwrap();
/// for (b, a) in before.iter().zip(&after) {
///     assert!((b - a - 1e-3).abs() < 1e-6);
/// }
/// ```
#[derive(Clone)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    clip_norm: Option<f32>,
    composite: Adam,
}

impl std::fmt::Debug for FusedAdam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedAdam")
            .field("beta_1", &self.beta_1)
            .field("beta_2", &self.beta_2)
            .field("epsilon", &self.epsilon)
            .field("clip_norm", &self.clip_norm)
            .finish()
    }
}

impl FusedAdam {
    /// Adam with decay rates `beta_1`, `beta_2` and `epsilon` (Keras: 0.9, 0.999, 1e-7).
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32) -> Self {
        let composite = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .build();
        FusedAdam {
            beta_1,
            beta_2,
            epsilon,
            clip_norm: None,
            composite,
        }
    }

    /// Clips each parameter's gradient to the L2 norm `threshold` first, as burn's
    /// `GradientClippingConfig::Norm` on the optimizer does, but inside the fused pass: one
    /// read of the gradient for its norm instead of burn's three tensor operations per
    /// parameter. The factor's norm sums in `f64`, so a clipped step can differ from burn's in
    /// the last bits; an unclipped one is the same.
    pub fn with_clip_norm(mut self, threshold: Option<f32>) -> Self {
        self.clip_norm = threshold;
        self
    }

    /// Whether this step can run fused: flex, f32 or f64, and a state of the same shape and
    /// type without AMSGrad's maximum.
    fn fusable<const D: usize>(
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<&AdamState<D>>,
    ) -> bool {
        let dtype = tensor.dtype();
        let same = |t: &Tensor<D>| t.dtype() == dtype && t.dims() == tensor.dims();
        fused_enabled()
            && on_flex(&tensor.device())
            && matches!(dtype, DType::F32 | DType::F64)
            && same(grad)
            && state.is_none_or(|s| {
                let momentum = &s.momentum;
                momentum.max_moment_2.is_none()
                    && same(&momentum.moment_1)
                    && same(&momentum.moment_2)
                    && momentum.time < u32::MAX as usize
            })
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        if !Self::fusable(&tensor, &grad, state.as_ref()) {
            let grad = match self.clip_norm {
                Some(threshold) => GradientClipping::Norm(threshold).clip_gradient(grad),
                None => grad,
            };
            return self.composite.step(lr, tensor, grad, state);
        }
        let (time, m, v) = match state {
            Some(state) => {
                let momentum = state.momentum;
                (momentum.time + 1, momentum.moment_1, momentum.moment_2)
            }
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let step = AdamStep {
            lr,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            time: time as u32,
            clip_norm: self.clip_norm,
        };
        let (param, m, v) = <Dispatch as HostAdamBackend>::host_adam(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            m.into_dispatch(),
            v.into_dispatch(),
            step,
        );
        let momentum =
            AdaptiveMomentumState::new(time, Tensor::from_dispatch(m), Tensor::from_dispatch(v));
        (Tensor::from_dispatch(param), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <Adam as Optimizer>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use burn::optim::{GradientsParams, ModuleOptimizer};

    use super::*;
    use crate::cpu::with_composite;
    use crate::layers::{Dense, DenseConfig};
    use crate::tensor_util::f32_vec;

    /// Three Adam steps of a Dense layer on `sum((dense(x) - y)^2)`, fused (`composite` false)
    /// or through burn's `Adam`, with burn's norm clipping on the optimizer where `clip` is
    /// given; the weights after each step.
    fn train(initial: &Dense, composite: bool, clip: Option<f32>) -> Vec<Vec<f32>> {
        steps(initial, composite, || {
            let optimizer = ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-7));
            match clip {
                Some(norm) => optimizer.with_grad_clipping(
                    burn::optim::grad_clipping::GradientClippingConfig::Norm(norm).init(),
                ),
                None => optimizer,
            }
        })
    }

    /// The weights after each of three steps of the optimizer `make` builds, from `initial`,
    /// on the fused path or (`composite`) burn's.
    fn steps(
        initial: &Dense,
        composite: bool,
        make: impl Fn() -> ModuleOptimizer,
    ) -> Vec<Vec<f32>> {
        let run = || {
            let device = crate::training_device();
            let mut dense = initial.clone();
            let mut optimizer = make();
            let xs: Vec<f32> = (0..20).map(|i| ((i * 7) % 11) as f32 * 0.2 - 1.0).collect();
            let ys: Vec<f32> = (0..12).map(|i| ((i * 5) % 7) as f32 * 0.3 - 0.9).collect();
            let x = Tensor::<1>::from_floats(xs.as_slice(), &device).reshape([4, 5]);
            let y = Tensor::<1>::from_floats(ys.as_slice(), &device).reshape([4, 3]);
            let mut seen = Vec::new();
            for lr in [1e-2, 5e-3, 1e-2] {
                let loss = (dense.forward(x.clone()) - y.clone()).powi_scalar(2).sum();
                let grads = GradientsParams::from_grads(loss.backward(), &dense);
                dense = optimizer.step(lr, dense, grads);
                let mut weights = f32_vec(dense.kernel.val());
                weights.extend(f32_vec(dense.bias.as_ref().expect("bias").val()));
                seen.push(weights);
            }
            seen
        };
        if composite {
            with_composite(run)
        } else {
            run()
        }
    }

    /// The clipping inside the fused pass (`with_clip_norm`) against burn's clipping on the
    /// optimizer: the same to 1e-6 (the norm's sum differs in order), the clip active; on the
    /// composite path it is burn's own clipping, bit for bit. Adam's step hardly depends on a
    /// gradient's scale, except near ε: clipped to a norm of 1e-6 the gradient's elements
    /// are near ε = 1e-7, so a wrong factor would move the weights visibly, and the unclipped
    /// run ends far away.
    #[test]
    fn clipping_inside_the_fused_pass_equals_burns_clipping() {
        let initial: Dense = DenseConfig::new(5, 3).init(&crate::training_device());
        let inside = |composite: bool| {
            steps(&initial, composite, || {
                ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-7).with_clip_norm(Some(1e-6)))
            })
        };
        let burns = train(&initial, true, Some(1e-6));
        let unclipped = train(&initial, true, None);
        let fused = inside(false);
        for (step, (f, b)) in fused.iter().zip(&burns).enumerate() {
            for (x, y) in f.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
                    "step {step}: {x} vs {y}"
                );
            }
        }
        let far = fused[2]
            .iter()
            .zip(&unclipped[2])
            .any(|(a, b)| (a - b).abs() > 1e-4);
        assert!(far, "the clip did not act");
        assert_eq!(inside(true), burns);
    }

    #[test]
    fn fused_adam_equals_burns_adam_bit_for_bit() {
        let initial: Dense = DenseConfig::new(5, 3).init(&crate::training_device());
        for clip in [None, Some(0.5)] {
            let fused = train(&initial, false, clip);
            let reference = train(&initial, true, clip);
            // The weights moved: each step changes every weight by up to the rate.
            let moved = fused[0]
                .iter()
                .zip(&fused[2])
                .any(|(a, b)| (a - b).abs() > 1e-3);
            assert!(moved, "the weights did not move");
            assert_eq!(fused, reference, "clip {clip:?}");
        }
    }
}
