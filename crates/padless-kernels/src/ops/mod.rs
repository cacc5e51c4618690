//! The other fused operations on plain slices: a dense layer over many rows ([`dense`]), one
//! Adam step ([`adam`]), variable-length multi-head attention over packed tokens
//! ([`attention`]), the row softmax ([`softmax`]), `tanh` ([`tanh`]), and a Transformer
//! block's dropout and residual layer normalisation over rows of packed tokens ([`rows`]).

pub(crate) mod adam;
pub mod attention;
pub(crate) mod dense;
pub(crate) mod rows;
pub(crate) mod softmax;
pub(crate) mod tanh;
