//! The backward pass (BPTT over the packed steps): the output gradients are gathered into
//! the slots that produced them, the fused cell runs in reverse, one product per step carries
//! the gradient to the previous `h`, and the weight and input gradients are large products
//! over all slots after the loop.

use crate::gemm::PackedRhs;
use crate::gemm::{View, matmul, matmul_shared_rhs};
use crate::real::Real;
use crate::rnn::blocks::{Blocks, StepShare};
use crate::rnn::cells::{BackwardRow, CellKind};
use crate::rnn::kernel::{Gradients, Workspace};
use crate::rnn::packing::Packing;
use crate::threads::{Shared, run_team};
use std::marker::PhantomData;

fn add<T: Real>(dst: &mut [T], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Output gradients gathered per slot, plus what reaches the initial states directly (masked
/// outputs before a row's first valid step; final states of a row with no valid step), and
/// the gradient of each running row's final `c`.
struct Gathered<T> {
    d_h_ext: Vec<T>,
    d_initial: Vec<Vec<T>>,
    d_c_final: Vec<T>,
}

fn gather_output_gradients<C: CellKind, T: Real>(ws: &Workspace<T>, d_out: &[T]) -> Gathered<T> {
    let (p, h) = (&ws.packing, ws.config.d_hidden);
    let n_steps = p.n_steps;
    let outputs = ws.config.outputs;
    let per_row = outputs.rows_per_row(n_steps, C::N_STATES) * h;
    let states_at = outputs.states_at(n_steps);
    assert_eq!(
        d_out.len(),
        p.batch * per_row,
        "{}: output gradient length",
        C::NAME
    );
    let mut d_h_ext = vec![T::ZERO; p.n_slots() * h];
    let mut d_initial = vec![vec![T::ZERO; p.batch * h]; C::N_STATES];
    let mut d_c_final = vec![T::ZERO; p.n_running() * h];
    for (pos, &row) in p.order.iter().enumerate() {
        let grad = &d_out[row * per_row..(row + 1) * per_row];
        // Valid steps seen so far (all of them when the steps' gradients are not there).
        let mut count = if outputs.has_sequence() {
            0
        } else {
            p.counts[pos]
        };
        for step in (0..n_steps).filter(|_| outputs.has_sequence()) {
            let src = &grad[step * h..(step + 1) * h];
            let target = if p.valid[row * n_steps + step] {
                count += 1;
                Some(p.slot(count - 1, pos))
            } else if ws.config.zero_output_for_mask {
                continue;
            } else {
                (count > 0).then(|| p.slot(count - 1, pos))
            };
            match target {
                Some(slot) => add(&mut d_h_ext[slot * h..(slot + 1) * h], src),
                None => add(&mut d_initial[0][row * h..(row + 1) * h], src),
            }
        }
        for s in (0..C::N_STATES).filter(|_| outputs.has_states()) {
            let src = &grad[(states_at + s) * h..(states_at + s + 1) * h];
            match (count > 0, s) {
                (true, 0) => {
                    let slot = p.slot(count - 1, pos);
                    add(&mut d_h_ext[slot * h..(slot + 1) * h], src);
                }
                (true, _) => d_c_final[pos * h..(pos + 1) * h].copy_from_slice(src),
                (false, _) => add(&mut d_initial[s][row * h..(row + 1) * h], src),
            }
        }
    }
    Gathered {
        d_h_ext,
        d_initial,
        d_c_final,
    }
}

fn scatter_inputs<T: Real>(ws: &Workspace<T>, d_inputs: &[T]) -> Vec<T> {
    let (p, cfg) = (&ws.packing, &ws.config);
    let d = cfg.d_input;
    if cfg.constant_input {
        let mut d_x = vec![T::ZERO; p.batch * d];
        for (pos, &row) in p.order.iter().enumerate().take(p.n_running()) {
            d_x[row * d..(row + 1) * d].copy_from_slice(&d_inputs[pos * d..(pos + 1) * d]);
        }
        return d_x;
    }
    let mut d_x = vec![T::ZERO; p.batch * p.n_steps * d];
    for (pos, &row) in p.order.iter().enumerate().take(p.n_running()) {
        for k in 0..p.counts[pos] {
            let slot = p.slot(k, pos);
            let step = p.input_step(p.slot_step[slot], cfg.go_backwards);
            let dst = (row * p.n_steps + step) * d;
            d_x[dst..dst + d].copy_from_slice(&d_inputs[slot * d..(slot + 1) * d]);
        }
    }
    d_x
}

pub(crate) fn backward<C: CellKind, T: Real>(
    mut ws: Workspace<T>,
    d_out: &[T],
    input_gradient: bool,
) -> Gradients<T> {
    let Gathered {
        d_h_ext,
        mut d_initial,
        d_c_final,
    } = gather_output_gradients::<C, T>(&ws, d_out);
    let cfg = ws.config;
    let (d, h) = (cfg.d_input, cfg.d_hidden);
    let g = C::N_GATES * h;
    let blocks = Blocks {
        d_hidden: h,
        n_gates: C::N_GATES,
        n_blocks: ws.n_blocks,
    };
    let p: &Packing = &ws.packing;
    let (n_slots, n_running) = (p.n_slots(), p.n_running());
    let input_rows = if cfg.constant_input {
        n_running
    } else {
        n_slots
    };

    let mut d_recurrent = vec![
        T::ZERO;
        if C::SEPARATE_RECURRENT {
            n_slots * g
        } else {
            0
        }
    ];
    let mut d_h = vec![T::ZERO; n_running * h];
    let mut d_c = vec![T::ZERO; if C::N_STATES == 2 { n_running * h } else { 0 }];
    let mut d_kernel = vec![T::ZERO; d * g];
    let mut d_rk = vec![T::ZERO; h * g];
    // The weight gradients in Keras layout: each thread writes its own units' columns of
    // every row (no zero fill first; lengths set after the team).
    let (mut d_kernel_keras, mut d_rk_keras) = (Vec::new(), Vec::new());
    let mut d_bias = vec![T::ZERO; C::N_BIAS_ROWS * g];
    let mut d_projection = vec![T::ZERO; if cfg.constant_input { n_running * g } else { 0 }];
    let mut d_inputs = vec![T::ZERO; if input_gradient { input_rows * d } else { 0 }];

    let saved = Saved {
        recurrent: &ws.recurrent,
        h_prev: &ws.h_prev,
        h: &ws.h,
        c: &ws.c,
        c_initial: &ws.c_initial,
        d_h_ext: &d_h_ext,
    };
    let bufs = BackwardBuffers {
        gates: Shared::new(&mut ws.gates),
        d_recurrent: Shared::new(&mut d_recurrent),
        d_h: Shared::new(&mut d_h),
        d_c: Shared::new(&mut d_c),
    };
    let (d_kernel_keras_s, d_rk_keras_s) = (
        Shared::uninit(&mut d_kernel_keras, d * g),
        Shared::uninit(&mut d_rk_keras, h * g),
    );
    let (d_kernel_s, d_rk_s, d_bias_s) = (
        Shared::new(&mut d_kernel),
        Shared::new(&mut d_rk),
        Shared::new(&mut d_bias),
    );
    let (d_proj_s, d_inputs_s) = (Shared::new(&mut d_projection), Shared::new(&mut d_inputs));
    let (kernel, recurrent_kernel, inputs) = (&ws.kernel, &ws.recurrent_kernel, &ws.inputs);
    let keras_columns = blocks.keras_columns();
    // The part of U^T a thread multiplies by (all gate columns, in the blocked order of the
    // gate gradients), gathered from U once for all steps: all of it when the threads split
    // rows (packed here once for both), else each thread's own units.
    let pack_recurrent_t = |share: StepShare| {
        let (s0, s1) = share.units;
        PackedRhs::gather(
            g,
            s1 - s0,
            recurrent_kernel,
            |r| keras_columns[r],
            |c| (s0 + c) * g,
        )
    };
    let first_share = StepShare::new(&blocks, 0, std::mem::size_of::<T>());
    let whole_recurrent_t = first_share.by_rows.then(|| pack_recurrent_t(first_share));
    // Who writes what: in the loop this thread writes only the gate-gradient columns and the
    // carried state gradients of its own units (`share`) in its own rows; by columns it reads
    // the other thread's columns of one step's gate gradients after a `worker.sync()`. After
    // the loop it writes its own columns `c0..c1` of the weight gradients and its own input
    // features of the input gradients, reading everything else after a `worker.sync()`.
    run_team(ws.n_blocks, |worker| {
        let (c0, c1) = blocks.cols(worker.index);
        let wc = c1 - c0;
        let share = StepShare::new(&blocks, worker.index, std::mem::size_of::<T>());
        let (s0, s1) = share.units;
        let own;
        let recurrent_part_t = match &whole_recurrent_t {
            Some(whole) => whole,
            None => {
                own = pack_recurrent_t(share);
                &own
            }
        };
        let product = if C::SEPARATE_RECURRENT {
            bufs.d_recurrent
        } else {
            bufs.gates
        };
        for k in (0..p.n_packed()).rev() {
            let (n, o, n_next) = (p.active[k], p.offsets[k], p.active_at(k + 1));
            // The rows whose last valid step this is start from a zero `d_h` and their final
            // `c`'s gradient.
            let newly =
                n_next + (share.first + share.stride - n_next % share.stride) % share.stride;
            for pos in (newly..n).step_by(share.stride) {
                let units = pos * h + s0..pos * h + s1;
                // SAFETY: position `pos`'s units `s0..s1` of the carried gradients are this
                // thread's share.
                unsafe { bufs.d_h.slice_mut(units.start, units.len()).fill(T::ZERO) };
                if C::N_STATES == 2 {
                    // SAFETY: as above.
                    let d_c = unsafe { bufs.d_c.slice_mut(units.start, units.len()) };
                    d_c.copy_from_slice(&d_c_final[units]);
                }
            }
            crate::isa::dispatch(BackwardStep::<C, T> {
                p,
                k,
                g,
                h,
                blocks,
                share,
                bufs,
                saved,
                cell: PhantomData,
            });
            if !share.by_rows {
                worker.sync();
            }
            // d h_prev[own rows, own units] += d_gates_k[own rows] · U^T[:, own units]
            let mine = share.rows_of(n);
            if mine > 0 {
                // SAFETY: writes this thread's rows of step `k` (`mine` rows from position
                // `share.first`, `share.stride` apart) in its units `s0..s1` of `d_h`
                // (`n_running x h`); reads all gate columns of the same slots of `product`
                // (`n_slots x g`), which this thread wrote (rows) or both wrote before the
                // barrier above (columns).
                unsafe {
                    recurrent_part_t.multiply(
                        mine,
                        bufs.d_h.ptr_at(share.first * h + s0),
                        share.stride * h,
                        true,
                        product.ptr_at((o + share.first) * g),
                        share.stride * g,
                    )
                };
            }
        }
        worker.sync();
        // SAFETY: from the last barrier on, nothing writes the gate gradients.
        let (d_gates, d_rec) = unsafe {
            (
                bufs.gates.slice(0, n_slots * g),
                bufs.d_recurrent.slice(0, bufs.d_recurrent.len()),
            )
        };
        if cfg.constant_input {
            for k in 0..p.n_packed() {
                for pos in 0..p.active[k] {
                    let slot = p.slot(k, pos);
                    // SAFETY: columns `c0..c1` of the projection's gradient are this thread's.
                    let dst = unsafe { d_proj_s.slice_mut(pos * g + c0, wc) };
                    add(dst, &d_gates[slot * g + c0..slot * g + c1]);
                }
            }
        }
        // The bias gradients: this thread's entries, summed over the rows of the input-side
        // gate gradients (and of the recurrent ones).
        // SAFETY: entries `c0..c1` (and `g + c0..g + c1`) of the bias gradient are this
        // thread's.
        let d_bias_in = unsafe { d_bias_s.slice_mut(c0, wc) };
        for r in 0..input_rows {
            if cfg.constant_input {
                // SAFETY: this thread's columns of the projection's gradient, written above.
                add(d_bias_in, unsafe { d_proj_s.slice(r * g + c0, wc) });
            } else {
                add(d_bias_in, &d_gates[r * g + c0..r * g + c1]);
            }
        }
        if C::SEPARATE_RECURRENT {
            // SAFETY: as above.
            let d_bias_rec = unsafe { d_bias_s.slice_mut(g + c0, wc) };
            for r in 0..n_slots {
                add(d_bias_rec, &d_rec[r * g + c0..r * g + c1]);
            }
        }
        // Weight gradients of this thread's columns, each one product over all slots (one
        // right-hand operand for both where the input gradients are the gate gradients).
        let product_rows = View::rows(product.ptr_at(c0), g);
        let input_grads = if cfg.constant_input {
            View::rows(d_proj_s.ptr_at(c0), g)
        } else {
            View::rows(bufs.gates.ptr_at(c0), g)
        };
        let d_rk_product = (
            h,
            d_rk_s.ptr_at(c0),
            g,
            View::transposed(saved.h_prev.as_ptr(), h),
        );
        let d_kernel_product = (
            d,
            d_kernel_s.ptr_at(c0),
            g,
            View::transposed(inputs.as_ptr(), d),
        );
        if !C::SEPARATE_RECURRENT && !cfg.constant_input {
            // SAFETY: writes this thread's columns `c0..c1` of `d_rk` (`h x g`) and `d_kernel`
            // (`d x g`); reads `wc` columns of the gate gradients (`n_slots x g`, no longer
            // written), `h_prev` (`n_slots x h`) and the inputs (`n_slots x d`).
            unsafe {
                matmul_shared_rhs(wc, n_slots, product_rows, [d_rk_product, d_kernel_product])
            };
        } else {
            for ((m, c, ldc, a), b, k) in [
                (d_rk_product, product_rows, n_slots),
                (d_kernel_product, input_grads, input_rows),
            ] {
                // SAFETY: as above; with a constant input the second product reads this
                // thread's columns of the projection's gradient (`n_running x g`), written
                // above, and the inputs (`n_running x d`).
                unsafe { matmul(m, wc, k, c, ldc, false, a, b) };
            }
        }
        // The weight gradients of this thread's units into Keras layout.
        for (matrix, keras_out, n_rows) in
            [(d_kernel_s, d_kernel_keras_s, d), (d_rk_s, d_rk_keras_s, h)]
        {
            for r in 0..n_rows {
                for (keras, blocked, len) in blocks.runs_of(worker.index) {
                    // SAFETY: the columns of this thread's units, on both sides (its blocked
                    // columns `c0..c1`, written above by this thread).
                    unsafe { keras_out.write(r * g + keras, matrix.slice(r * g + blocked, len)) };
                }
            }
        }
        worker.sync();
        if !input_gradient {
            return;
        }
        // Input gradients of this thread's input features: d_inputs = d_gates · K^T.
        let (f0, f1) = worker.part(d);
        let input_block_t =
            PackedRhs::gather(g, f1 - f0, kernel, |r| keras_columns[r], |c| (f0 + c) * g);
        let input_grads = if cfg.constant_input {
            d_proj_s
        } else {
            bufs.gates
        };
        // SAFETY: writes this thread's features `f0..f1` of every row of `d_inputs`
        // (`input_rows x d`); reads all columns of the input-side gate gradients
        // (`input_rows x g`), written by both threads before the barrier above.
        unsafe {
            input_block_t.multiply(
                input_rows,
                d_inputs_s.ptr_at(f0),
                d,
                false,
                input_grads.ptr_at(0),
                g,
            )
        };
    });

    // SAFETY: the team wrote every element of both (see `Shared::uninit`): each thread the
    // Keras columns of its own units in every row, and the threads' units cover all units.
    unsafe {
        d_kernel_keras.set_len(d * g);
        d_rk_keras.set_len(h * g);
    }
    let d_x = if input_gradient {
        scatter_inputs(&ws, &d_inputs)
    } else {
        Vec::new()
    };
    let p = &ws.packing;
    for (pos, &row) in p.order.iter().enumerate().take(n_running) {
        add(
            &mut d_initial[0][row * h..(row + 1) * h],
            &d_h[pos * h..(pos + 1) * h],
        );
        if C::N_STATES == 2 {
            add(
                &mut d_initial[1][row * h..(row + 1) * h],
                &d_c[pos * h..(pos + 1) * h],
            );
        }
    }
    Gradients {
        d_x,
        d_kernel: d_kernel_keras,
        d_recurrent_kernel: d_rk_keras,
        d_bias: ws.has_bias.then(|| blocks.to_keras(&d_bias)),
        d_initial,
    }
}

/// The buffers the threads share in the backward pass: the gate gradients (written in place
/// of the gates, `n_slots x g`), those of a recurrent part kept apart, and the gradients
/// carried to the previous step's states (`n_running x h`).
struct BackwardBuffers<'a, T> {
    gates: Shared<'a, T>,
    d_recurrent: Shared<'a, T>,
    d_h: Shared<'a, T>,
    d_c: Shared<'a, T>,
}

impl<T> Clone for BackwardBuffers<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for BackwardBuffers<'_, T> {}

/// What the forward pass saved, and the gathered output gradients: read only.
#[derive(Clone, Copy)]
struct Saved<'a, T> {
    recurrent: &'a [T],
    h_prev: &'a [T],
    h: &'a [T],
    c: &'a [T],
    c_initial: &'a [T],
    d_h_ext: &'a [T],
}

/// One packed step's backward cells for one thread's share, SIMD-dispatched as
/// `ForwardStep` is.
struct BackwardStep<'a, C, T> {
    p: &'a Packing,
    k: usize,
    g: usize,
    h: usize,
    blocks: Blocks,
    share: StepShare,
    bufs: BackwardBuffers<'a, T>,
    saved: Saved<'a, T>,
    cell: PhantomData<C>,
}

impl<C: CellKind, T: Real> pulp::WithSimd for BackwardStep<'_, C, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let BackwardStep {
            p,
            k,
            g,
            h,
            blocks,
            share,
            bufs,
            saved,
            ..
        } = self;
        let n = p.active[k];
        let mut pos = share.first;
        while pos < n {
            let slot = p.offsets[k] + pos;
            for b in share.blocks.0..share.blocks.1 {
                let ((u0, u1), (c0, c1)) = (blocks.units(b), blocks.cols(b));
                let (units, cols) = (slot * h + u0..slot * h + u1, slot * g + c0..slot * g + c1);
                let lstm = C::N_STATES == 2;
                let c_prev = match (lstm, k) {
                    (false, _) => &[][..],
                    (true, 0) => &saved.c_initial[pos * h + u0..pos * h + u1],
                    (true, _) => {
                        let prev = (p.offsets[k - 1] + pos) * h;
                        &saved.c[prev + u0..prev + u1]
                    }
                };
                // SAFETY: position `pos` with block `b` is this thread's share of the step
                // (every `share.stride`-th position from `share.first`, in its blocks): no
                // other thread touches these gate columns of the slot, nor these units of the
                // row's carried gradients, during the step.
                let (gates, d_recurrent, d_h, d_c) = unsafe {
                    (
                        bufs.gates.slice_mut(cols.start, cols.len()),
                        if C::SEPARATE_RECURRENT {
                            bufs.d_recurrent.slice_mut(cols.start, cols.len())
                        } else {
                            &mut []
                        },
                        bufs.d_h.slice_mut(pos * h + u0, u1 - u0),
                        if lstm {
                            bufs.d_c.slice_mut(pos * h + u0, u1 - u0)
                        } else {
                            &mut []
                        },
                    )
                };
                C::backward_row(BackwardRow {
                    gates,
                    d_recurrent,
                    recurrent: if C::SEPARATE_RECURRENT {
                        &saved.recurrent[cols]
                    } else {
                        &[]
                    },
                    h_prev: &saved.h_prev[units.clone()],
                    c_prev,
                    c: if lstm { &saved.c[units.clone()] } else { &[] },
                    h: &saved.h[units.clone()],
                    d_h_ext: &saved.d_h_ext[units],
                    d_h,
                    d_c,
                });
            }
            pos += share.stride;
        }
    }
}
