//! [`FusedOpBackend`]: the backend extension every [`FusedOp`] runs through, and its
//! implementation for the flex backend (inference: nothing is kept).

use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Backend, BackendTensor, Dispatch, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind,
    ExtensionType, Flex, backend_extension,
};

use super::FusedOp;

/// The input tensors of a fused operation as one argument of the backend extension (the
/// extension macro routes single tensors and structs of them, not lists).
pub(crate) struct TensorList<B: Backend>(pub Vec<FloatTensor<B>>);

impl<B: Backend> TensorList<B> {
    /// The `N` tensors.
    ///
    /// # Panics
    /// If there are not `N` (a caller of [`super::apply`] passes an array of `N`).
    pub(crate) fn into_array<const N: usize>(self, name: &str) -> [FloatTensor<B>; N] {
        let found = self.0.len();
        self.0
            .try_into()
            .unwrap_or_else(|_| panic!("{name}: expected {N} input tensors, found {found}"))
    }
}

impl<B: Backend> ExtensionType<B> for TensorList<B> {
    type Target = TensorList<Dispatch>;

    fn map_to_dispatch<F>(self, map_kind: F, autodiff: DispatchAutodiffContext) -> Self::Target
    where
        F: Fn(BackendTensor<B>) -> DispatchTensorKind,
    {
        let wrap = |tensor| DispatchTensor {
            kind: map_kind(BackendTensor::Float(tensor)),
            autodiff,
        };
        TensorList(self.0.into_iter().map(wrap).collect())
    }

    fn map_from_dispatch<F>(target: Self::Target, unwrap_kind: F) -> Self
    where
        F: Fn(DispatchTensor) -> BackendTensor<B>,
    {
        TensorList(
            target
                .0
                .into_iter()
                .map(|tensor| unwrap_kind(tensor).float())
                .collect(),
        )
    }

    fn routing_tensor(target: &Self::Target) -> Option<&DispatchTensor> {
        target.0.first()
    }

    fn routing_float_tensor(target: &Self::Target) -> Option<&DispatchTensor> {
        target.0.first()
    }

    fn autodiff_context(target: &Self::Target) -> DispatchAutodiffContext {
        target
            .0
            .iter()
            .fold(DispatchAutodiffContext::Disabled, |context, tensor| {
                context.merge(tensor.autodiff)
            })
    }
}

/// A [`FusedOp`] as one operation of the backend, with its own backward pass under autodiff.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FusedOpBackend: Backend {
    /// `op` over `inputs` (as many as the operation takes, all `f32` or all `f64`).
    fn fused_op<O: FusedOp<N>, const N: usize>(
        #[extension_type] inputs: TensorList<Self>,
        op: O,
    ) -> FloatTensor<Self>;
}

impl FusedOpBackend for Flex {
    fn fused_op<O: FusedOp<N>, const N: usize>(
        inputs: TensorList<Self>,
        op: O,
    ) -> FloatTensor<Self> {
        super::forward::<Flex, O, N>(&op, inputs.into_array(O::NAME), false).0
    }
}
