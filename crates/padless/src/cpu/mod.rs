//! The CPU runtime: the switches and settings of the fused CPU operations, which run on burn's
//! flex backend through [`padless_kernels`].
//!
//! - [`set_fused_enabled`], [`fused_enabled`], [`with_composite`]: the fused operations (the
//!   recurrent loops, the dense layer, `tanh`, softmax, the categorical cross-entropy, Adam)
//!   on or off, for the process or for the calling thread. Off, burn's composite operations
//!   run, as on every other backend; the tests compare the two.
//! - [`set_threads`], [`with_threads`], [`threads`]: how many threads each kernel call uses
//!   (1, or 2 for the kernels' thread pair), for the process or for the calling thread;
//!   [`side_by_side`] runs two independent pieces of work on two threads with one-thread
//!   kernels each.
//! - [`set_bf16_products`], [`bf16_products`], [`bf16_products_available`]: the opt-in
//!   bfloat16 matrix products of the kernels.
//! - [`on_flex`]: whether a device is the flex backend, where the fused operations apply.
//!
//! ```
//! use padless::cpu;
//!
//! cpu::with_threads(1, || assert_eq!(cpu::threads(), 1));
//! assert!(cpu::with_composite(|| !cpu::fused_enabled()));
//! assert!(cpu::on_flex(&padless::training_device()));
//! ```

mod host;
mod settings;

use burn::backend::DispatchDevice;
use burn::tensor::Device;

pub(crate) use host::{HostData, write};
/// The opt-in bfloat16 products of the CPU kernels: the fused recurrent layers' and the fused
/// dense layer's `f32` matrix products round their operands to bfloat16 and sum in `f32`;
/// off by default. See [`padless_kernels::set_bf16_products`].
pub use padless_kernels::{bf16_products, bf16_products_available, set_bf16_products};
pub use settings::{
    fused_enabled, set_fused_enabled, set_threads, side_by_side, threads, with_composite,
    with_threads,
};

/// Whether tensors on `device` run on the flex CPU backend (with or without autodiff).
pub fn on_flex(device: &Device) -> bool {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        _ => false,
    }
}
