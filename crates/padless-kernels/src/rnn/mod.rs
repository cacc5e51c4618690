//! The fused recurrent kernels: the entry point ([`kernel`]), the packed schedule of a mask
//! ([`packing`]), the forward and backward passes, the threads' column blocks ([`blocks`]),
//! the cells' gate arithmetic ([`cells`]) and the naive reference the tests compare against
//! ([`reference`](mod@reference)).

pub(crate) mod backward;
pub(crate) mod blocks;
pub(crate) mod cells;
pub(crate) mod forward;
pub(crate) mod kernel;
pub(crate) mod packing;
pub mod reference;
