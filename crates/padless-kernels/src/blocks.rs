//! [`Blocks`]: the kernels' internal column layout, which gives each thread all gates of its
//! own hidden units in one contiguous column range.
//!
//! Keras keeps gate `q` of unit `u` in column `q * d_hidden + u`. With `n_blocks` threads,
//! block `b` owns units `[u0, u1)` and the columns `[n_gates * u0, n_gates * u1)`, in which
//! gate `q` of unit `u` sits at `n_gates * u0 + q * (u1 - u0) + (u - u0)`. With one block
//! the layout is Keras'. Weights are re-laid once per call and gradients laid back.

use crate::team::split;

/// The column blocks of `n_gates * d_hidden` gate columns split over `n_blocks` threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocks {
    pub d_hidden: usize,
    pub n_gates: usize,
    pub n_blocks: usize,
}

impl Blocks {
    /// The units `[u0, u1)` of block `b`.
    pub fn units(&self, b: usize) -> (usize, usize) {
        split(self.d_hidden, b, self.n_blocks)
    }

    /// The columns `[c0, c1)` of block `b`.
    pub fn cols(&self, b: usize) -> (usize, usize) {
        let (u0, u1) = self.units(b);
        (self.n_gates * u0, self.n_gates * u1)
    }

    /// The blocked column of Keras column `col`.
    fn blocked(&self, col: usize) -> usize {
        let (q, u) = (col / self.d_hidden, col % self.d_hidden);
        let b = (0..self.n_blocks)
            .find(|&b| u < self.units(b).1)
            .unwrap_or(0);
        let (u0, u1) = self.units(b);
        self.n_gates * u0 + q * (u1 - u0) + (u - u0)
    }

    /// The Keras-column -> blocked-column map.
    fn map(&self) -> Vec<usize> {
        (0..self.n_gates * self.d_hidden)
            .map(|c| self.blocked(c))
            .collect()
    }

    /// A row-major `[rows, n_gates * d_hidden]` matrix in blocked layout.
    pub fn to_blocked<T: Copy + Default>(self, keras: &[T]) -> Vec<T> {
        if self.n_blocks == 1 {
            return keras.to_vec();
        }
        let (map, width) = (self.map(), self.n_gates * self.d_hidden);
        let mut out = vec![T::default(); keras.len()];
        for (src, dst) in keras.chunks(width).zip(out.chunks_mut(width)) {
            for (col, &b) in map.iter().enumerate() {
                dst[b] = src[col];
            }
        }
        out
    }

    /// The inverse of [`Blocks::to_blocked`].
    pub fn to_keras<T: Copy + Default>(self, blocked: &[T]) -> Vec<T> {
        if self.n_blocks == 1 {
            return blocked.to_vec();
        }
        let (map, width) = (self.map(), self.n_gates * self.d_hidden);
        let mut out = vec![T::default(); blocked.len()];
        for (src, dst) in blocked.chunks(width).zip(out.chunks_mut(width)) {
            for (col, &b) in map.iter().enumerate() {
                dst[col] = src[b];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_layout_round_trips_with_uneven_blocks() {
        let blocks = Blocks {
            d_hidden: 5,
            n_gates: 4,
            n_blocks: 2,
        };
        let keras: Vec<usize> = (0..40).collect();
        let blocked = blocks.to_blocked(&keras);
        // block 0 owns units 0..2: gates i of units 0,1 then f of units 0,1 ...
        assert_eq!(&blocked[..8], &[0, 1, 5, 6, 10, 11, 15, 16]);
        assert_eq!(blocks.to_keras(&blocked), keras);
        assert_eq!(blocks.cols(1), (8, 20));
    }
}
