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

    let gates_s = Shared::new(&mut ws.gates);
    let (d_rec_s, d_h_s, d_c_s) = (
        Shared::new(&mut d_recurrent),
        Shared::new(&mut d_h),
        Shared::new(&mut d_c),
    );
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
    let (rec_s, h_prev_s, hs_s) = (
        Shared::read_only(&ws.recurrent),
        Shared::read_only(&ws.h_prev),
        Shared::read_only(&ws.h),
    );
    let (cs_s, c_init_s, inputs_s) = (
        Shared::read_only(&ws.c),
        Shared::read_only(&ws.c_initial),
        Shared::read_only(&ws.inputs),
    );
    let (d_ext_s, d_c_final_s) = (Shared::read_only(&d_h_ext), Shared::read_only(&d_c_final));
    let (kernel, recurrent_kernel) = (&ws.kernel, &ws.recurrent_kernel);
    let keras_columns = blocks.keras_columns();
    let arch = pulp::Arch::new();
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
    run_team(ws.n_blocks, |worker| {
        let (c0, c1) = blocks.cols(worker.index);
        let wc = c1 - c0;
        let share = StepShare::new(&blocks, worker.index, std::mem::size_of::<T>());
        let (s0, s1) = share.units;
        // SAFETY (whole closure): in the loop this thread writes only the gate-gradient
        // columns and the carried state gradients of its own units (`share`) in its own rows;
        // by columns it reads the other thread's columns of one step's gate gradients after
        // a `worker.sync()`. After the loop it writes its own columns `c0..c1` of the weight
        // gradients and its own rows of the input gradients, reading everything else after a
        // `worker.sync()`. Offsets are bounds-checked.
        unsafe {
            let own;
            let recurrent_part_t = match &whole_recurrent_t {
                Some(whole) => whole,
                None => {
                    own = pack_recurrent_t(share);
                    &own
                }
            };
            let product = if C::SEPARATE_RECURRENT {
                d_rec_s
            } else {
                gates_s
            };
            for k in (0..p.n_packed()).rev() {
                let (n, o, n_next) = (p.active[k], p.offsets[k], p.active_at(k + 1));
                let newly =
                    n_next + (share.first + share.stride - n_next % share.stride) % share.stride;
                for pos in (newly..n).step_by(share.stride) {
                    d_h_s.slice_mut(pos * h + s0, s1 - s0).fill(T::ZERO);
                    if C::N_STATES == 2 {
                        let src = d_c_final_s.slice(pos * h + s0, s1 - s0);
                        d_c_s.slice_mut(pos * h + s0, s1 - s0).copy_from_slice(src);
                    }
                }
                arch.dispatch(BackwardStep::<C, T> {
                    p,
                    k,
                    n,
                    o,
                    g,
                    h,
                    blocks,
                    share,
                    d_rec_s,
                    rec_s,
                    cs_s,
                    c_init_s,
                    d_c_s,
                    gates_s,
                    h_prev_s,
                    hs_s,
                    d_ext_s,
                    d_h_s,
                    cell: PhantomData,
                });
                if !share.by_rows {
                    worker.sync();
                }
                // d h_prev[own rows, own units] += d_gates_k[own rows] · U^T[:, own units]
                let mine = share.rows_of(n);
                if mine > 0 {
                    recurrent_part_t.multiply(
                        mine,
                        d_h_s.ptr().add(share.first * h + s0),
                        share.stride * h,
                        true,
                        product.ptr().add((o + share.first) * g),
                        share.stride * g,
                    );
                }
            }
            worker.sync();
            let (input_grads, rows) = if cfg.constant_input {
                (d_proj_s, n_running)
            } else {
                (gates_s, n_slots)
            };
            if cfg.constant_input {
                for k in 0..p.n_packed() {
                    for pos in 0..p.active[k] {
                        let src = gates_s.slice(p.slot(k, pos) * g + c0, wc);
                        add(d_proj_s.slice_mut(pos * g + c0, wc), src);
                    }
                }
            }
            let d_bias_in = d_bias_s.slice_mut(c0, wc);
            for r in 0..rows {
                add(d_bias_in, input_grads.slice(r * g + c0, wc));
            }
            if C::SEPARATE_RECURRENT {
                let d_bias_rec = d_bias_s.slice_mut(g + c0, wc);
                for r in 0..n_slots {
                    add(d_bias_rec, d_rec_s.slice(r * g + c0, wc));
                }
            }
            // Weight gradients of this thread's columns, each one product over all slots (one
            // right-hand operand for both where the input gradients are the gate gradients).
            let d_rk_product = (
                h,
                d_rk_s.ptr().add(c0),
                g,
                View::transposed(h_prev_s.ptr(), h),
            );
            let d_kernel_product = (
                d,
                d_kernel_s.ptr().add(c0),
                g,
                View::transposed(inputs_s.ptr(), d),
            );
            if std::ptr::eq(input_grads.ptr(), product.ptr()) && rows == n_slots {
                let d_gates = View::rows(product.ptr().add(c0), g);
                matmul_shared_rhs(wc, n_slots, d_gates, [d_rk_product, d_kernel_product]);
            } else {
                for ((m, c, ldc, a), b, k) in [
                    (d_rk_product, product, n_slots),
                    (d_kernel_product, input_grads, rows),
                ] {
                    matmul(m, wc, k, c, ldc, false, a, View::rows(b.ptr().add(c0), g));
                }
            }
            // The weight gradients of this thread's units into Keras layout.
            for (matrix, keras_out, n_rows) in
                [(d_kernel_s, d_kernel_keras_s, d), (d_rk_s, d_rk_keras_s, h)]
            {
                for r in 0..n_rows {
                    for (keras, blocked, len) in blocks.runs_of(worker.index) {
                        keras_out.write(r * g + keras, matrix.slice(r * g + blocked, len));
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
            input_block_t.multiply(
                rows,
                d_inputs_s.ptr().add(f0),
                d,
                false,
                input_grads.ptr(),
                g,
            );
        }
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

/// One packed step's backward cells for one thread's units, SIMD-dispatched as
/// `ForwardStep` is.
struct BackwardStep<'a, C, T> {
    p: &'a Packing,
    k: usize,
    n: usize,
    o: usize,
    g: usize,
    h: usize,
    blocks: Blocks,
    share: StepShare,
    d_rec_s: Shared<T>,
    rec_s: Shared<T>,
    cs_s: Shared<T>,
    c_init_s: Shared<T>,
    d_c_s: Shared<T>,
    gates_s: Shared<T>,
    h_prev_s: Shared<T>,
    hs_s: Shared<T>,
    d_ext_s: Shared<T>,
    d_h_s: Shared<T>,
    cell: PhantomData<C>,
}

impl<C: CellKind, T: Real> pulp::WithSimd for BackwardStep<'_, C, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let BackwardStep {
            p,
            k,
            n,
            o,
            g,
            h,
            blocks,
            share,
            d_rec_s,
            rec_s,
            cs_s,
            c_init_s,
            d_c_s,
            gates_s,
            h_prev_s,
            hs_s,
            d_ext_s,
            d_h_s,
            ..
        } = self;
        // SAFETY: as in `backward`'s team closure: this thread's own units of its own rows.
        unsafe {
            let mut pos = share.first;
            while pos < n {
                let slot = o + pos;
                for b in share.blocks.0..share.blocks.1 {
                    let ((u0, u1), (c0, c1)) = (blocks.units(b), blocks.cols(b));
                    let (wu, wc) = (u1 - u0, c1 - c0);
                    let (d_recurrent, recurrent) = if C::SEPARATE_RECURRENT {
                        (
                            d_rec_s.slice_mut(slot * g + c0, wc),
                            rec_s.slice(slot * g + c0, wc),
                        )
                    } else {
                        (&mut [][..], &[][..])
                    };
                    let (c_prev, c, d_c) = if C::N_STATES == 2 {
                        let prev = if k == 0 {
                            c_init_s.slice(pos * h + u0, wu)
                        } else {
                            cs_s.slice((p.offsets[k - 1] + pos) * h + u0, wu)
                        };
                        (
                            prev,
                            cs_s.slice(slot * h + u0, wu),
                            d_c_s.slice_mut(pos * h + u0, wu),
                        )
                    } else {
                        (&[][..], &[][..], &mut [][..])
                    };
                    C::backward_row(BackwardRow {
                        gates: gates_s.slice_mut(slot * g + c0, wc),
                        d_recurrent,
                        recurrent,
                        h_prev: h_prev_s.slice(slot * h + u0, wu),
                        c_prev,
                        c,
                        h: hs_s.slice(slot * h + u0, wu),
                        d_h_ext: d_ext_s.slice(slot * h + u0, wu),
                        d_h: d_h_s.slice_mut(pos * h + u0, wu),
                        d_c,
                    });
                }
                pos += share.stride;
            }
        }
    }
}
