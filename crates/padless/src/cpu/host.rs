//! Between burn tensor primitives and the kernels' plain slices.
//!
//! Written for any backend `B` (only its data transfer is used); the fused operations run only
//! on the CPU backend, where reading a tensor is a copy at most, and where a contiguous
//! tensor's storage is viewed in place ([`HostData`]).

use std::any::Any;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata};
use burn::tensor::{Element, Shape, TensorData};

/// Polls a future to completion on this thread. The CPU backend's reads are ready at once.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::yield_now();
    }
}

/// A primitive's values as a vector (moved out of the tensor where it held them alone).
///
/// # Panics
/// If the tensor cannot be read or its values are not of type `T`.
pub(crate) fn read<B: Backend, T: Element>(tensor: FloatTensor<B>) -> Vec<T> {
    let dtype = tensor.dtype();
    block_on(B::float_into_data(tensor))
        .expect("reading a tensor for a fused operation")
        .try_into_vec::<T>()
        .unwrap_or_else(|_| {
            panic!(
                "a fused operation read a tensor of {dtype:?} as {:?}",
                T::dtype()
            )
        })
}

/// `values` as a primitive of `B` of `shape` on `device`.
pub(crate) fn write<B: Backend, T: Element>(
    values: Vec<T>,
    shape: impl Into<Shape>,
    device: &B::Device,
) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(values, shape), device)
}

/// A tensor's values on the host: borrowed in place from a contiguous CPU-backend tensor of
/// the right float type (so the weights, which the model still holds, are not copied on every
/// call: a decoder run step by step would pay that copy on each step), else read into a
/// vector.
pub(crate) struct HostData<T> {
    values: Values<T>,
    shape: Shape,
}

enum Values<T> {
    /// Read (copied where the tensor was shared) into a vector.
    Owned(Vec<T>),
    /// A flex tensor whose storage is viewed in place.
    Flex(FloatTensor<Flex>),
}

impl<T: Element + bytemuck::Pod> HostData<T> {
    /// The values of a primitive of `B`, in place where they can be.
    pub(crate) fn read<B: Backend>(tensor: FloatTensor<B>) -> Self {
        let shape = tensor.shape();
        let any: Box<dyn Any> = Box::new(tensor);
        let values = match any.downcast::<FloatTensor<Flex>>() {
            Ok(flex) if flex.as_slice::<T>().is_some() => Values::Flex(*flex),
            Ok(flex) => Values::Owned(read::<Flex, T>(*flex)),
            Err(any) => {
                let tensor = any
                    .downcast::<FloatTensor<B>>()
                    .expect("a boxed primitive of B is one");
                Values::Owned(read::<B, T>(*tensor))
            }
        };
        HostData { values, shape }
    }

    /// The values, row-major.
    pub(crate) fn as_slice(&self) -> &[T] {
        match &self.values {
            Values::Owned(values) => values,
            Values::Flex(tensor) => tensor
                .as_slice::<T>()
                .expect("checked contiguous and of type T when read"),
        }
    }

    /// The values as a vector of their own, to be changed in place: moved out of the tensor
    /// where nothing else holds its storage, else copied.
    pub(crate) fn into_vec(self) -> Vec<T> {
        match self.values {
            Values::Owned(values) => values,
            Values::Flex(tensor) => read::<Flex, T>(tensor),
        }
    }

    /// The tensor's shape.
    pub(crate) fn shape(&self) -> &Shape {
        &self.shape
    }
}
