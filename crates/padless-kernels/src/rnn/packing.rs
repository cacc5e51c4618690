//! [`Packing`]: which rows take part in each packed step, for any mask.
//!
//! A masked step leaves every state unchanged, so a row's states depend only on its valid
//! steps, in order. The kernels therefore run each row over its valid steps only: packed step
//! `k` is every row's `k`-th valid step. Rows are sorted by their number of valid steps
//! (descending, stable), so the rows still running at packed step `k` are the first
//! `active[k]` sorted rows, and their data lies in consecutive *slots*
//! `offsets[k] .. offsets[k] + active[k]`. Holes inside a row, pre-padding and post-padding
//! all reduce to this; a row with no valid step takes part in no step.

/// The packed schedule of a masked batch (see the module docs).
///
/// Time indices here are *processing* indices: with `go_backwards`, processing step `p`
/// reads input step `n_steps - 1 - p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packing {
    /// Rows in the batch.
    pub batch: usize,
    /// Time steps in the batch (valid or not).
    pub n_steps: usize,
    /// Sorted position -> batch row, by valid-step count descending (stable).
    pub order: Vec<usize>,
    /// Valid-step count per sorted position.
    pub counts: Vec<usize>,
    /// Rows running at each packed step (`counts[0]` packed steps).
    pub active: Vec<usize>,
    /// First slot of each packed step; one more entry than `active`, the last is `n_slots`.
    pub offsets: Vec<usize>,
    /// Processing step of each slot.
    pub slot_step: Vec<usize>,
    /// `mask` in processing order, `[batch, n_steps]`, true = valid.
    pub valid: Vec<bool>,
}

impl Packing {
    /// The schedule of a `[batch, n_steps]` mask (row-major, true = valid; `None` = every step
    /// valid), read in reverse time when `go_backwards` is set.
    ///
    /// # Panics
    /// If `mask` is given with a length other than `batch * n_steps`.
    pub fn new(batch: usize, n_steps: usize, mask: Option<&[bool]>, go_backwards: bool) -> Self {
        let valid: Vec<bool> = match mask {
            Some(mask) => {
                assert_eq!(mask.len(), batch * n_steps, "mask must be [batch, n_steps]");
                (0..batch * n_steps)
                    .map(|idx| {
                        let (row, step) = (idx / n_steps, idx % n_steps);
                        let input_step = if go_backwards {
                            n_steps - 1 - step
                        } else {
                            step
                        };
                        mask[row * n_steps + input_step]
                    })
                    .collect()
            }
            None => vec![true; batch * n_steps],
        };
        let row_counts: Vec<usize> = (0..batch)
            .map(|row| {
                valid[row * n_steps..(row + 1) * n_steps]
                    .iter()
                    .filter(|&&v| v)
                    .count()
            })
            .collect();
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by(|&a, &b| row_counts[b].cmp(&row_counts[a]));
        let counts: Vec<usize> = order.iter().map(|&row| row_counts[row]).collect();
        let n_packed = counts.first().copied().unwrap_or(0);
        let active: Vec<usize> = (0..n_packed)
            .map(|k| counts.iter().take_while(|&&c| c > k).count())
            .collect();
        let mut offsets = Vec::with_capacity(n_packed + 1);
        offsets.push(0);
        for &n in &active {
            offsets.push(offsets.last().copied().unwrap_or(0) + n);
        }
        let n_slots = *offsets.last().unwrap_or(&0);
        let mut slot_step = vec![0; n_slots];
        for (pos, &row) in order.iter().enumerate() {
            let valid_steps = (0..n_steps).filter(|&p| valid[row * n_steps + p]);
            for (k, p) in valid_steps.enumerate() {
                slot_step[offsets[k] + pos] = p;
            }
        }
        Packing {
            batch,
            n_steps,
            order,
            counts,
            active,
            offsets,
            slot_step,
            valid,
        }
    }

    /// Packed steps (the largest valid-step count of any row).
    pub fn n_packed(&self) -> usize {
        self.active.len()
    }

    /// Slots over all packed steps: the number of valid steps in the batch.
    pub fn n_slots(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    /// Rows with at least one valid step (`active[0]`, or 0).
    pub fn n_running(&self) -> usize {
        self.active.first().copied().unwrap_or(0)
    }

    /// Rows running at packed step `k`, 0 past the end.
    pub fn active_at(&self, k: usize) -> usize {
        self.active.get(k).copied().unwrap_or(0)
    }

    /// The slot of sorted position `pos` at packed step `k`.
    pub fn slot(&self, k: usize, pos: usize) -> usize {
        self.offsets[k] + pos
    }

    /// The input time index of processing step `p`.
    pub fn input_step(&self, p: usize, go_backwards: bool) -> usize {
        if go_backwards {
            self.n_steps - 1 - p
        } else {
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_and_empty_rows_pack_by_valid_count() {
        // row 0: valid at 0, 2 (hole at 1); row 1: none; row 2: all three.
        let mask = [true, false, true, false, false, false, true, true, true];
        let p = Packing::new(3, 3, Some(&mask), false);
        assert_eq!(p.order, vec![2, 0, 1]);
        assert_eq!(p.counts, vec![3, 2, 0]);
        assert_eq!(p.active, vec![2, 2, 1]);
        assert_eq!(p.offsets, vec![0, 2, 4, 5]);
        assert_eq!(p.slot_step, vec![0, 0, 1, 2, 2]);
        assert_eq!(p.n_running(), 2);
    }

    #[test]
    fn go_backwards_reads_the_mask_reversed() {
        let mask = [true, true, false];
        let p = Packing::new(1, 3, Some(&mask), true);
        assert_eq!(p.valid, vec![false, true, true]);
        assert_eq!(p.slot_step, vec![1, 2]);
    }

    #[test]
    fn all_masked_batch_has_no_steps() {
        let p = Packing::new(2, 4, Some(&[false; 8]), false);
        assert_eq!(p.n_packed(), 0);
        assert_eq!(p.n_slots(), 0);
    }
}
