//! [`Blocks`]: the kernels' internal column layout, which gives each thread all gates of its
//! own hidden units in one contiguous column range.
//!
//! Keras keeps gate `q` of unit `u` in column `q * d_hidden + u`. With `n_blocks` threads,
//! block `b` owns units `[u0, u1)` and the columns `[n_gates * u0, n_gates * u1)`, in which
//! gate `q` of unit `u` sits at `n_gates * u0 + q * (u1 - u0) + (u - u0)`. With one block
//! the layout is Keras'. Weights are re-laid once per call and gradients laid back.

use crate::threads::split;

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

    /// The contiguous runs of block `b`: `(keras_col, blocked_col, len)`, one per gate (the
    /// units of one block in one gate are contiguous on both sides).
    pub fn runs_of(&self, b: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let (u0, u1) = self.units(b);
        (0..self.n_gates).map(move |q| {
            (
                q * self.d_hidden + u0,
                self.n_gates * u0 + q * (u1 - u0),
                u1 - u0,
            )
        })
    }

    /// The runs of every block.
    fn runs(&self) -> Vec<(usize, usize, usize)> {
        (0..self.n_blocks).flat_map(|b| self.runs_of(b)).collect()
    }

    /// The Keras column of each blocked column.
    pub fn keras_columns(&self) -> Vec<usize> {
        let mut map = vec![0; self.n_gates * self.d_hidden];
        for (keras, blocked, len) in self.runs() {
            for i in 0..len {
                map[blocked + i] = keras + i;
            }
        }
        map
    }

    /// A row-major `[rows, n_gates * d_hidden]` matrix in blocked layout.
    pub fn to_blocked<T: Copy + Default>(self, keras: &[T]) -> Vec<T> {
        self.relayout(keras, false)
    }

    /// The inverse of [`Blocks::to_blocked`].
    pub fn to_keras<T: Copy + Default>(self, blocked: &[T]) -> Vec<T> {
        self.relayout(blocked, true)
    }

    /// Copies every row run by run (slice copies: the element-by-element column map ran at
    /// under 2 GB/s on an LSTM(512)'s recurrent kernel).
    fn relayout<T: Copy + Default>(self, src: &[T], to_keras: bool) -> Vec<T> {
        if self.n_blocks == 1 {
            return src.to_vec();
        }
        let (runs, width) = (self.runs(), self.n_gates * self.d_hidden);
        let mut out = vec![T::default(); src.len()];
        for (from, to) in src.chunks(width).zip(out.chunks_mut(width)) {
            for &(keras, blocked, len) in &runs {
                let (a, b) = if to_keras {
                    (blocked, keras)
                } else {
                    (keras, blocked)
                };
                to[b..b + len].copy_from_slice(&from[a..a + len]);
            }
        }
        out
    }
}

/// How the threads of a team share the per-step work of the recurrence.
///
/// By rows: thread `i` of `count` runs the positions `i, i + count, ...` of every packed step
/// over all units, so the threads never wait for each other inside the loop; each packs the
/// whole recurrent matrix. By columns: each thread runs its own block's units of every row
/// and packs only its block, and the threads meet once per step (the recurrent product reads
/// the whole previous `h`). Rows are faster while each core's cache holds the whole matrix
/// (no meeting per step); columns above that, where each core streams only its half:
/// [`ROWS_MAX_BYTES`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepShare {
    /// Whether the threads split the rows (else the columns).
    pub by_rows: bool,
    /// This thread's first position in each step.
    pub first: usize,
    /// The distance between this thread's positions.
    pub stride: usize,
    /// The blocks `[b0, b1)` whose units this thread computes in its rows.
    pub blocks: (usize, usize),
    /// The gate columns of those blocks.
    pub cols: (usize, usize),
    /// The units of those blocks.
    pub units: (usize, usize),
}

/// The largest recurrent matrix (bytes) the threads split by rows: each thread then streams
/// all of it every step, which must stay in its core's cache.
const ROWS_MAX_BYTES: usize = 1 << 20;

impl StepShare {
    /// Thread `index` of `blocks.n_blocks`.
    pub fn new(blocks: &Blocks, index: usize, elem_bytes: usize) -> Self {
        let count = blocks.n_blocks;
        let matrix = blocks.d_hidden * blocks.n_gates * blocks.d_hidden * elem_bytes;
        let by_rows = count > 1 && matrix <= ROWS_MAX_BYTES;
        let (b0, b1) = if by_rows {
            (0, count)
        } else {
            (index, index + 1)
        };
        let (first, stride) = if by_rows { (index, count) } else { (0, 1) };
        StepShare {
            by_rows,
            first,
            stride,
            blocks: (b0, b1),
            cols: (blocks.cols(b0).0, blocks.cols(b1 - 1).1),
            units: (blocks.units(b0).0, blocks.units(b1 - 1).1),
        }
    }

    /// How many of the positions `0..n` are this thread's.
    pub fn rows_of(&self, n: usize) -> usize {
        n.saturating_sub(self.first).div_ceil(self.stride)
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
        let map = blocks.keras_columns();
        assert!((0..20).all(|c| blocked[c] == map[c]));
        assert_eq!(blocks.cols(1), (8, 20));
    }

    #[test]
    fn threads_split_rows_below_the_size_limit_and_columns_above() {
        let share = |d_hidden, n_gates, index| {
            let blocks = Blocks {
                d_hidden,
                n_gates,
                n_blocks: 2,
            };
            StepShare::new(&blocks, index, 8)
        };
        // f64 LSTM(37) (the kernels' tests): rows; thread 1 runs positions 1, 3, ...
        let rows = share(37, 4, 1);
        assert!(rows.by_rows);
        assert_eq!((rows.first, rows.stride, rows.units), (1, 2, (0, 37)));
        assert_eq!(
            (rows.rows_of(0), rows.rows_of(1), rows.rows_of(6)),
            (0, 0, 3)
        );
        // f64 SimpleRNN(371): 1.1 MB, columns; thread 1 owns units 185..371 of every row.
        let cols = share(371, 1, 1);
        assert!(!cols.by_rows);
        assert_eq!((cols.first, cols.stride, cols.units), (0, 1, (185, 371)));
        assert_eq!(cols.rows_of(6), 6);
        // One thread: always its whole block, no split.
        let one = StepShare::new(
            &Blocks {
                d_hidden: 37,
                n_gates: 4,
                n_blocks: 1,
            },
            0,
            8,
        );
        assert!(!one.by_rows);
    }
}
