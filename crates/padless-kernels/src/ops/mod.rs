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

/// Deterministic values in about [-1, 1] for the operations' unit tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64) -> Vec<f64> {
    (0..n)
        .map(|i| (((i as u64 + 1) * (seed * 2 + 1) * 2_654_435_761) % 2001) as f64 / 1000.0 - 1.0)
        .collect()
}
