//! The forward pass: gather the valid steps, one input projection for all of them, then per
//! packed step the recurrent product of the running rows and the fused cell; outputs are
//! scattered back with the carry / zero rule for masked steps.

use crate::gemm::PackedRhs;
use crate::gemm::{View, matmul};
use crate::real::Real;
use crate::rnn::blocks::{Blocks, StepShare};
use crate::rnn::cells::{CellKind, ForwardRow};
use crate::rnn::kernel::{KernelConfig, Sequences, Weights, Workspace};
use crate::rnn::packing::Packing;
use crate::threads::{Shared, run_team};
use std::marker::PhantomData;

fn check<C: CellKind, T>(
    cfg: &KernelConfig,
    seq: &Sequences<'_, T>,
    w: &Weights<'_, T>,
    out: &[T],
) {
    let (d, h, g) = (cfg.d_input, cfg.d_hidden, C::N_GATES * cfg.d_hidden);
    let per_row = if cfg.constant_input {
        d
    } else {
        seq.n_steps * d
    };
    assert_eq!(seq.x.len(), seq.batch * per_row, "{}: x length", C::NAME);
    assert_eq!(
        w.kernel.len(),
        d * g,
        "{}: kernel must be [d_input, n_gates * d_hidden]",
        C::NAME
    );
    assert_eq!(
        w.recurrent_kernel.len(),
        h * g,
        "{}: recurrent kernel shape",
        C::NAME
    );
    if let Some(bias) = w.bias {
        assert_eq!(bias.len(), C::N_BIAS_ROWS * g, "{}: bias shape", C::NAME);
    }
    assert!(
        seq.initial.is_empty() || seq.initial.len() == C::N_STATES,
        "{}: expected {} initial states",
        C::NAME,
        C::N_STATES
    );
    for state in seq.initial {
        assert_eq!(
            state.len(),
            seq.batch * h,
            "{}: initial state must be [batch, d_hidden]",
            C::NAME
        );
    }
    assert_eq!(
        out.len(),
        seq.batch * cfg.outputs.rows_per_row(seq.n_steps, C::N_STATES) * h,
        "{}: output length",
        C::NAME
    );
}

/// Gathers `src` rows (`width` each) into packed order, appended slot by slot (no zero fill).
fn gather<T: Real>(packing: &Packing, cfg: &KernelConfig, x: &[T], width: usize) -> Vec<T> {
    let mut dst = Vec::with_capacity(packing.n_slots() * width);
    for k in 0..packing.n_packed() {
        for pos in 0..packing.active[k] {
            let (row, slot) = (packing.order[pos], packing.slot(k, pos));
            let step = packing.input_step(packing.slot_step[slot], cfg.go_backwards);
            let src = (row * packing.n_steps + step) * width;
            dst.extend_from_slice(&x[src..src + width]);
        }
    }
    debug_assert_eq!(dst.len(), packing.n_slots() * width);
    dst
}

/// Sorted-order copies of per-row `[batch, width]` data, for the running rows.
fn sorted_rows<T: Real>(packing: &Packing, data: Option<&[T]>, width: usize) -> Vec<T> {
    let mut dst = vec![T::ZERO; packing.n_running() * width];
    if let Some(data) = data {
        for (pos, &row) in packing.order.iter().enumerate().take(packing.n_running()) {
            dst[pos * width..(pos + 1) * width]
                .copy_from_slice(&data[row * width..(row + 1) * width]);
        }
    }
    dst
}

/// The forward pass; `for_backward: false` (inference) skips copying the weights into the
/// returned workspace.
pub(crate) fn forward<C: CellKind, T: Real>(
    cfg: &KernelConfig,
    seq: &Sequences<'_, T>,
    weights: &Weights<'_, T>,
    out: &mut [T],
    for_backward: bool,
) -> Workspace<T> {
    check::<C, T>(cfg, seq, weights, out);
    let (d, h) = (cfg.d_input, cfg.d_hidden);
    let g = C::N_GATES * h;
    let n_blocks = cfg.threads.clamp(1, h.max(1));
    let blocks = Blocks {
        d_hidden: h,
        n_gates: C::N_GATES,
        n_blocks,
    };
    let packing = Packing::new(seq.batch, seq.n_steps, seq.mask, cfg.go_backwards);
    let (n_slots, n_running) = (packing.n_slots(), packing.n_running());

    // The weights stay in Keras layout: each thread reads its gate columns through
    // `keras_columns` (the input projection gate by gate, the recurrent block once when it
    // packs it), so no re-laid copy is made.
    let keras_columns = blocks.keras_columns();
    let (kernel, recurrent_kernel) = (weights.kernel, weights.recurrent_kernel);
    let has_bias = weights.bias.is_some();
    let bias = weights.bias.map_or_else(
        || vec![T::ZERO; C::N_BIAS_ROWS * g],
        |b| blocks.to_blocked(b),
    );
    let inputs = if cfg.constant_input {
        sorted_rows(&packing, Some(seq.x), d)
    } else {
        gather(&packing, cfg, seq.x, d)
    };
    // Every element of `gates` is written (the input projection, or the step's product with a
    // constant input) before it is read.
    let mut gates = Vec::new();
    let mut recurrent = vec![
        T::ZERO;
        if C::SEPARATE_RECURRENT {
            n_slots * g
        } else {
            0
        }
    ];
    // The state buffers are not zero-filled either: the team writes every slot of `hs` and
    // `cs` (the cell), and of `h_prev` (step 0's slots here, each later slot as the previous
    // step's `h` of its row); lengths set after the team.
    let (hs_len, cs_len) = (n_slots * h, if C::N_STATES == 2 { n_slots * h } else { 0 });
    let (mut h_prev, mut hs, mut cs) = (Vec::new(), Vec::new(), Vec::new());
    let c_initial = sorted_rows(&packing, seq.initial.get(1).copied(), h);
    let h_initial = sorted_rows(&packing, seq.initial.first().copied(), h);
    let mut projection = vec![T::ZERO; if cfg.constant_input { n_running * g } else { 0 }];

    let p = &packing;
    let h_prev_s = Shared::uninit(&mut h_prev, hs_len);
    // SAFETY: no team runs yet; step 0's slots are the first `n_running` of `hs_len / h`.
    unsafe { h_prev_s.write(0, &h_initial) };
    let bufs = StepBuffers {
        gates: Shared::uninit(&mut gates, n_slots * g),
        recurrent: Shared::new(&mut recurrent),
        h_prev: h_prev_s,
        h: Shared::uninit(&mut hs, hs_len),
        c: Shared::uninit(&mut cs, cs_len),
        projection: Shared::new(&mut projection),
    };
    let out_s = Shared::new(out);
    // The part of U a thread multiplies by, packed once for all steps: all of it when the
    // threads split rows (packed here once for both), else each thread's own block.
    let pack_recurrent = |share: StepShare| {
        let (s0, s1) = share.cols;
        PackedRhs::gather(
            h,
            s1 - s0,
            recurrent_kernel,
            |r| r * g,
            |c| keras_columns[s0 + c],
        )
    };
    // One step (a decoder run step by step): packing the block would copy the whole matrix
    // for one product, so the step multiplies by the Keras-layout weights through gemm
    // instead, gate run by gate run.
    let direct = p.n_packed() == 1;
    let first_share = StepShare::new(&blocks, 0, std::mem::size_of::<T>());
    let whole_recurrent = (first_share.by_rows && !direct).then(|| pack_recurrent(first_share));
    // Who writes what: the input projection writes this thread's own columns `c0..c1` of
    // every slot; in the loop this thread writes the gate columns and state units of its own
    // share (`StepShare`) in its own rows; every read of another thread's part (all columns
    // of its rows' gates by rows; the full `h_prev` rows in the recurrent product by
    // columns) follows a `worker.sync()` after the write.
    run_team(n_blocks, |worker| {
        let (c0, c1) = blocks.cols(worker.index);
        // The input projection of every valid step, for this thread's columns. A constant
        // input's few rows start from the bias; the steps' gates get it added in the loop
        // (`ForwardStep`), on rows already in cache, instead of a pass that writes it into
        // every slot first.
        let (target, rows) = if cfg.constant_input {
            for r in 0..n_running {
                // SAFETY: columns `c0..c1` of the projection are this thread's; nothing reads
                // them before the barrier below (rows) or this thread's own steps (columns).
                unsafe { bufs.projection.write(r * g + c0, &bias[c0..c1]) };
            }
            (bufs.projection, n_running)
        } else {
            (bufs.gates, n_slots)
        };
        for (keras, blocked, len) in blocks.runs_of(worker.index) {
            // SAFETY: writes this thread's columns `blocked..blocked + len` of the `rows` rows
            // of `target` (`rows x g`); reads `inputs` (`rows x d`) and `len` columns of the
            // kernel (`d x g`) from `keras`.
            unsafe {
                matmul(
                    rows,
                    len,
                    d,
                    target.ptr_at(blocked),
                    g,
                    cfg.constant_input,
                    View::rows(inputs.as_ptr(), d),
                    View::rows(kernel[keras..].as_ptr(), g),
                )
            };
        }
        let share = StepShare::new(&blocks, worker.index, std::mem::size_of::<T>());
        if share.by_rows {
            // Each thread's rows read all columns of their gates from here on.
            worker.sync();
        }
        let own;
        let recurrent_part = match &whole_recurrent {
            Some(whole) => Some(whole),
            None if direct => None,
            None => {
                own = pack_recurrent(share);
                Some(&own)
            }
        };
        // With a constant input the product goes straight to the gates and each step adds
        // its row's projection (`ForwardStep`), instead of a copy of the projection into
        // every slot first.
        let (product, accumulate) = if C::SEPARATE_RECURRENT {
            (bufs.recurrent, false)
        } else {
            (bufs.gates, !cfg.constant_input)
        };
        for k in 0..p.n_packed() {
            let (n, o) = (p.active[k], p.offsets[k]);
            let mine = share.rows_of(n);
            if mine > 0 {
                let first = o + share.first;
                let (c, ldc) = (product.ptr_at(first * g + share.cols.0), share.stride * g);
                let (a, lda) = (bufs.h_prev.ptr_at(first * h), share.stride * h);
                match recurrent_part {
                    // SAFETY: writes this thread's rows of step `k` (`mine` rows from slot
                    // `first`, `share.stride` apart) in its columns `share.cols` of `product`
                    // (`n_slots x g`); reads the same rows of `h_prev` (`n_slots x h`), which
                    // this thread wrote (rows) or both wrote before the last barrier (columns).
                    Some(part) => unsafe { part.multiply(mine, c, ldc, accumulate, a, lda) },
                    None => {
                        for b in share.blocks.0..share.blocks.1 {
                            for (keras, blocked, len) in blocks.runs_of(b) {
                                // SAFETY: as above, for the columns `blocked..blocked + len`
                                // of this thread's blocks; the weights are `h x g`.
                                unsafe {
                                    matmul(
                                        mine,
                                        len,
                                        h,
                                        product.ptr_at(first * g + blocked),
                                        ldc,
                                        accumulate,
                                        View::rows(a, lda),
                                        View::rows(recurrent_kernel[keras..].as_ptr(), g),
                                    )
                                };
                            }
                        }
                    }
                }
            }
            crate::isa::dispatch(ForwardStep::<C, T> {
                p,
                k,
                g,
                h,
                blocks,
                share,
                bufs,
                c_initial: &c_initial,
                bias_in: (!cfg.constant_input && has_bias).then(|| &bias[..g]),
                bias_rec: if C::SEPARATE_RECURRENT {
                    &bias[g..]
                } else {
                    &[]
                },
                constant_input: cfg.constant_input,
                cell: PhantomData,
            });
            if !share.by_rows {
                worker.sync();
            }
        }
        worker.sync();
        // Every step is done (the last `sync`): the threads now only read the states and
        // write the outputs of their own rows.
        let (pos0, pos1) = worker.part(p.batch);
        // SAFETY: no thread writes the states after the last barrier, and the steps wrote
        // every slot.
        let (all_h, all_c) = unsafe { (bufs.h.slice(0, hs_len), bufs.c.slice(0, cs_len)) };
        // SAFETY: the positions `pos0..pos1` are this thread's (`worker.part`).
        unsafe { scatter_outputs::<C, T>(cfg, seq, Rows { p, pos0, pos1 }, all_h, all_c, out_s) };
    });
    // SAFETY: the team wrote every element of `gates` (see `Shared::uninit`): each thread
    // its own columns of every slot, by the projection before the loop or, with a constant
    // input, by the step's product (or the copied projection) in the loop; and every slot
    // of the state buffers (see their allocation).
    unsafe {
        gates.set_len(n_slots * g);
        h_prev.set_len(hs_len);
        hs.set_len(hs_len);
        cs.set_len(cs_len);
    }

    let kept = |w: &[T]| if for_backward { w.to_vec() } else { Vec::new() };
    Workspace {
        config: *cfg,
        packing,
        n_blocks,
        has_bias,
        kernel: kept(kernel),
        recurrent_kernel: kept(recurrent_kernel),
        inputs,
        gates,
        recurrent,
        h_prev,
        h: hs,
        c: cs,
        c_initial,
    }
}

/// The buffers the threads share in the forward pass (`n_slots` rows each unless noted).
struct StepBuffers<'a, T> {
    /// The gates of each slot, `g` columns (the input projection, then the activated gates).
    gates: Shared<'a, T>,
    /// The recurrent product of each slot, `g` columns, for a cell that keeps it apart.
    recurrent: Shared<'a, T>,
    /// The `h` each slot starts from, `h` columns.
    h_prev: Shared<'a, T>,
    /// The new `h` of each slot.
    h: Shared<'a, T>,
    /// The new `c` of each slot (LSTM; else empty).
    c: Shared<'a, T>,
    /// With a constant input, its projection plus the input bias per running row (`g`
    /// columns); else empty.
    projection: Shared<'a, T>,
}

impl<T> Clone for StepBuffers<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for StepBuffers<'_, T> {}

/// The positions `pos0..pos1` (rows in packing order) one thread writes the outputs of.
#[derive(Clone, Copy)]
struct Rows<'a> {
    p: &'a Packing,
    pos0: usize,
    pos1: usize,
}

/// Writes each step's output in processing order and the final states (see
/// [`RecurrentKernel`](crate::RecurrentKernel)'s `# Masking`).
///
/// # Safety
/// No other thread may touch the output rows of the positions `pos0..pos1` meanwhile.
unsafe fn scatter_outputs<C: CellKind, T: Real>(
    cfg: &KernelConfig,
    seq: &Sequences<'_, T>,
    Rows { p, pos0, pos1 }: Rows<'_>,
    hs: &[T],
    cs: &[T],
    out: Shared<'_, T>,
) {
    let (h, n_steps) = (cfg.d_hidden, seq.n_steps);
    let per_row = cfg.outputs.rows_per_row(n_steps, C::N_STATES) * h;
    let states_at = cfg.outputs.states_at(n_steps);
    let zeros = vec![T::ZERO; h];
    for (pos, &row) in p.order.iter().enumerate().take(pos1).skip(pos0) {
        let initial = |s: usize| {
            seq.initial
                .get(s)
                .map_or(&zeros[..], |st| &st[row * h..(row + 1) * h])
        };
        // SAFETY: the outputs of `row` are this call's alone (its position is in `pos0..pos1`,
        // the caller's contract).
        let row_out = unsafe { out.slice_mut(row * per_row, per_row) };
        // Valid steps seen so far (all of them when the step outputs are not written).
        let mut count = if cfg.outputs.has_sequence() {
            0
        } else {
            p.counts[pos]
        };
        for step in (0..n_steps).filter(|_| cfg.outputs.has_sequence()) {
            let dst = &mut row_out[step * h..(step + 1) * h];
            if p.valid[row * n_steps + step] {
                let slot = p.slot(count, pos);
                dst.copy_from_slice(&hs[slot * h..(slot + 1) * h]);
                count += 1;
            } else if cfg.zero_output_for_mask {
                dst.fill(T::ZERO);
            } else if count == 0 {
                dst.copy_from_slice(initial(0));
            } else {
                let slot = p.slot(count - 1, pos);
                dst.copy_from_slice(&hs[slot * h..(slot + 1) * h]);
            }
        }
        if cfg.outputs.has_states() {
            write_states::<C, T>(row_out, states_at, count, pos, p, hs, cs, &initial, h);
        }
    }
}

/// A row's final states into `row_out` from row `at` on: those after its last valid step
/// (`count` valid steps at packed position `pos`), or the initial states without one.
#[allow(clippy::too_many_arguments)]
fn write_states<'a, C: CellKind, T: Real>(
    row_out: &mut [T],
    at: usize,
    count: usize,
    pos: usize,
    p: &Packing,
    hs: &[T],
    cs: &[T],
    initial: &impl Fn(usize) -> &'a [T],
    h: usize,
) {
    let last = (count > 0).then(|| p.slot(count - 1, pos));
    for s in 0..C::N_STATES {
        let dst = &mut row_out[(at + s) * h..(at + s + 1) * h];
        match last {
            Some(slot) => {
                let src = if s == 0 { hs } else { cs };
                dst.copy_from_slice(&src[slot * h..(slot + 1) * h]);
            }
            None => dst.copy_from_slice(initial(s)),
        }
    }
}

/// One packed step's fused cells for one thread's share, as a SIMD-dispatched operation: its
/// body is inlined into the instruction-set-specific function that `pulp` selects at run
/// time, so the gate loops compile to the machine's vector width (a closure would not be
/// inlined there).
struct ForwardStep<'a, C, T> {
    p: &'a Packing,
    k: usize,
    g: usize,
    h: usize,
    blocks: Blocks,
    share: StepShare,
    bufs: StepBuffers<'a, T>,
    /// The initial `c` of the running rows (LSTM; else empty).
    c_initial: &'a [T],
    /// The input bias (blocked layout), added to each slot's gates before its cell runs when
    /// the input is not constant (the projection wrote the products only).
    bias_in: Option<&'a [T]>,
    /// The recurrent bias (blocked layout) of a cell that keeps the recurrent part apart.
    bias_rec: &'a [T],
    /// Whether the gates get each row's projection (added, or copied for a cell that keeps
    /// the recurrent part apart) before the cell runs.
    constant_input: bool,
    cell: PhantomData<C>,
}

/// The slices of one slot's step in one block of units (see [`ForwardStep::slices`]).
struct SlotSlices<'a, T> {
    gates: &'a mut [T],
    recurrent: &'a mut [T],
    projection: &'a [T],
    h_prev: &'a [T],
    c_prev: &'a [T],
    h: &'a mut [T],
    c: &'a mut [T],
    /// The next step's `h_prev` of the same row, if the row runs on.
    h_next: Option<&'a mut [T]>,
}

impl<C: CellKind, T: Real> ForwardStep<'_, C, T> {
    /// The slices of position `pos` (slot `offsets[k] + pos`) in block `b`.
    ///
    /// # Safety
    /// Position `pos` with block `b` is the calling thread's share of step `k` (see
    /// `forward`): no other thread touches these gate columns and state units of the slot,
    /// nor of the row's next slot, during the step.
    #[inline(always)]
    unsafe fn slices(&self, pos: usize, b: usize) -> SlotSlices<'_, T> {
        let (p, k, g, h, bufs) = (self.p, self.k, self.g, self.h, &self.bufs);
        let ((u0, u1), (c0, c1)) = (self.blocks.units(b), self.blocks.cols(b));
        let (wu, wc) = (u1 - u0, c1 - c0);
        let slot = p.offsets[k] + pos;
        let lstm = C::N_STATES == 2;
        let c_prev = match (lstm, k) {
            (false, _) => &[][..],
            (true, 0) => &self.c_initial[pos * h + u0..pos * h + u1],
            // SAFETY: the row's previous slot, written by this thread at step `k - 1` (its
            // units, its rows), or before the last barrier.
            (true, _) => unsafe { bufs.c.slice((p.offsets[k - 1] + pos) * h + u0, wu) },
        };
        // SAFETY (the block): the caller's contract; these are six different buffers, or
        // different ranges of one.
        unsafe {
            SlotSlices {
                gates: bufs.gates.slice_mut(slot * g + c0, wc),
                recurrent: if C::SEPARATE_RECURRENT {
                    bufs.recurrent.slice_mut(slot * g + c0, wc)
                } else {
                    &mut []
                },
                projection: if self.constant_input {
                    bufs.projection.slice(pos * g + c0, wc)
                } else {
                    &[]
                },
                h_prev: bufs.h_prev.slice(slot * h + u0, wu),
                c_prev,
                h: bufs.h.slice_mut(slot * h + u0, wu),
                c: if lstm {
                    bufs.c.slice_mut(slot * h + u0, wu)
                } else {
                    &mut []
                },
                h_next: (pos < p.active_at(k + 1))
                    .then(|| bufs.h_prev.slice_mut((p.offsets[k + 1] + pos) * h + u0, wu)),
            }
        }
    }
}

impl<C: CellKind, T: Real> pulp::WithSimd for ForwardStep<'_, C, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let (n, share) = (self.p.active[self.k], self.share);
        let mut pos = share.first;
        while pos < n {
            for b in share.blocks.0..share.blocks.1 {
                let (c0, c1) = self.blocks.cols(b);
                // SAFETY: `pos` and block `b` are this thread's share of the step: every
                // `share.stride`-th position from `share.first`, in its blocks.
                let row = unsafe { self.slices(pos, b) };
                if self.constant_input {
                    if C::SEPARATE_RECURRENT {
                        row.gates.copy_from_slice(row.projection);
                    } else {
                        for (v, &x) in row.gates.iter_mut().zip(row.projection) {
                            *v += x;
                        }
                    }
                } else if let Some(bias) = self.bias_in {
                    for (v, &b) in row.gates.iter_mut().zip(&bias[c0..c1]) {
                        *v += b;
                    }
                }
                if C::SEPARATE_RECURRENT {
                    for (v, &b) in row.recurrent.iter_mut().zip(&self.bias_rec[c0..c1]) {
                        *v += b;
                    }
                }
                C::forward_row(ForwardRow {
                    gates: row.gates,
                    recurrent: row.recurrent,
                    h_prev: row.h_prev,
                    c_prev: row.c_prev,
                    h: &mut *row.h,
                    c: row.c,
                });
                if let Some(next) = row.h_next {
                    next.copy_from_slice(row.h);
                }
            }
            pos += share.stride;
        }
    }
}
