//! A naive reference: the padded per-step loop of the masking contract, one row and one step
//! at a time, with no packing, no blocking and no matrix library. The kernels are tested
//! against it (outputs directly, gradients through finite differences of it).

use crate::real::Real;
use crate::rnn::cells::{CellKind, ForwardRow};
use crate::rnn::kernel::{KernelConfig, Sequences, Weights};

/// The output buffer of [`RecurrentKernel::forward`](crate::RecurrentKernel::forward)
/// (`[batch, n_steps + n_states, d_hidden]`), computed step by step over the padded batch:
/// at a valid step the cell runs, at a masked step the states are carried and the output is
/// the carried `h` or 0.
pub fn forward<C: CellKind, T: Real>(
    cfg: &KernelConfig,
    seq: &Sequences<'_, T>,
    w: &Weights<'_, T>,
) -> Vec<T> {
    let (d, h, n_steps) = (cfg.d_input, cfg.d_hidden, seq.n_steps);
    let g = C::N_GATES * h;
    let per_row = (n_steps + C::N_STATES) * h;
    let mut out = vec![T::ZERO; seq.batch * per_row];
    for row in 0..seq.batch {
        let mut states: Vec<Vec<T>> = (0..C::N_STATES)
            .map(|s| {
                seq.initial
                    .get(s)
                    .map_or(vec![T::ZERO; h], |st| st[row * h..(row + 1) * h].to_vec())
            })
            .collect();
        for step in 0..n_steps {
            let input_step = if cfg.go_backwards {
                n_steps - 1 - step
            } else {
                step
            };
            let valid = seq.mask.is_none_or(|m| m[row * n_steps + input_step]);
            let dst = (row * per_row) + step * h;
            if !valid {
                let value = if cfg.zero_output_for_mask {
                    vec![T::ZERO; h]
                } else {
                    states[0].clone()
                };
                out[dst..dst + h].copy_from_slice(&value);
                continue;
            }
            let x = if cfg.constant_input {
                &seq.x[row * d..(row + 1) * d]
            } else {
                &seq.x[(row * n_steps + input_step) * d..(row * n_steps + input_step + 1) * d]
            };
            let mut gates = vec![T::ZERO; g];
            let mut recurrent = vec![T::ZERO; if C::SEPARATE_RECURRENT { g } else { 0 }];
            for col in 0..g {
                let mut acc = w.bias.map_or(T::ZERO, |b| b[col]);
                for (i, &xi) in x.iter().enumerate() {
                    acc += xi * w.kernel[i * g + col];
                }
                let mut rec = if C::SEPARATE_RECURRENT {
                    w.bias.map_or(T::ZERO, |b| b[g + col])
                } else {
                    T::ZERO
                };
                for (i, &hi) in states[0].iter().enumerate() {
                    rec += hi * w.recurrent_kernel[i * g + col];
                }
                if C::SEPARATE_RECURRENT {
                    gates[col] = acc;
                    recurrent[col] = rec;
                } else {
                    gates[col] = acc + rec;
                }
            }
            let mut h_new = vec![T::ZERO; h];
            let mut c_new = vec![T::ZERO; if C::N_STATES == 2 { h } else { 0 }];
            let c_prev = states.get(1).cloned().unwrap_or_default();
            C::forward_row(ForwardRow {
                gates: &mut gates,
                recurrent: &recurrent,
                h_prev: &states[0],
                c_prev: &c_prev,
                h: &mut h_new,
                c: &mut c_new,
            });
            out[dst..dst + h].copy_from_slice(&h_new);
            states[0] = h_new;
            if C::N_STATES == 2 {
                states[1] = c_new;
            }
        }
        for (s, state) in states.iter().enumerate() {
            let dst = row * per_row + (n_steps + s) * h;
            out[dst..dst + h].copy_from_slice(state);
        }
    }
    out
}
