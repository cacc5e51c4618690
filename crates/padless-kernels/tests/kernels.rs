//! The kernels equal the naive padded loop ([`padless_kernels::reference`]): outputs and
//! final states directly, every gradient through central finite differences, in f64; f32
//! and the thread pair agree with f64 and one thread. Every check runs on each instruction
//! set this CPU runs ([`padless_kernels::Isa`]; a note on stderr names those it lacks).

mod common;

use common::{Case, Rng, isas, on, run_kernel, scaled_error};
use padless_kernels::{
    CellKind, Gru, Isa, KernelConfig, Lstm, Outputs, RecurrentKernel, SimpleRnn,
};
use proptest::prelude::*;

/// Finite-difference step and tolerances (f64 throughout).
const EPS: f64 = 1e-6;
const FD_TOLERANCE: f64 = 1e-6;
const EXACT_TOLERANCE: f64 = 1e-12;
/// f32 against f64, relative to each tensor's largest magnitude (at least 1).
const F32_TOLERANCE: f64 = 1e-5;

/// The central finite differences of the reference's loss for every parameter, in the order
/// of [`Case::parameters`]; 0 for a masked input (NaN: never read, so its gradient must be
/// exactly 0).
fn finite_differences<C: CellKind>(case: &Case) -> Vec<Vec<f64>> {
    let mut probe = case.clone();
    let n_params = probe.parameters().len();
    let mut numeric = Vec::with_capacity(n_params);
    for p_idx in 0..n_params {
        let len = probe.parameters()[p_idx].1.len();
        let mut values = vec![0.0; len];
        for (i, value) in values.iter_mut().enumerate() {
            let original = probe.parameters()[p_idx].1[i];
            if original.is_nan() {
                continue;
            }
            probe.parameters()[p_idx].1[i] = original + EPS;
            let plus = probe.reference_loss::<C>();
            probe.parameters()[p_idx].1[i] = original - EPS;
            let minus = probe.reference_loss::<C>();
            probe.parameters()[p_idx].1[i] = original;
            *value = (plus - minus) / (2.0 * EPS);
        }
        numeric.push(values);
    }
    numeric
}

/// On every instruction set this CPU runs: the f64 kernel's outputs equal the reference's and
/// its gradients the finite differences of the reference; f32 outputs and gradients are
/// within [`F32_TOLERANCE`] of the same references; two threads equal one in f64.
fn check_against_reference<C: CellKind>(case: &Case) {
    let reference_out = case.with::<f64, _>(|seq, w| {
        padless_kernels::reference::forward::<C, f64>(&case.config, seq, w)
    });
    let numeric = finite_differences::<C>(case);
    let mut probe = case.clone();
    let names: Vec<&str> = probe.parameters().iter().map(|(n, _)| *n).collect();
    for isa in isas() {
        let (out, grads) = on(isa, || run_kernel::<C, f64>(case));
        assert!(
            scaled_error(&out, &reference_out) < EXACT_TOLERANCE,
            "{isa}: outputs differ: {case:?}"
        );
        // Masked inputs are never read (they hold NaN) and get exactly 0.
        if let (Some(mask), false) = (&case.mask, case.config.constant_input) {
            let d = case.config.d_input;
            for (idx, _) in mask.iter().enumerate().filter(|(_, v)| !**v) {
                assert!(grads[0][idx * d..(idx + 1) * d].iter().all(|&g| g == 0.0));
            }
        }
        for ((name, analytic), numeric) in names.iter().zip(&grads).zip(&numeric) {
            for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
                assert!(
                    (n - a).abs() <= FD_TOLERANCE * (1.0 + n.abs()),
                    "{isa} {} d_{name}[{i}]: kernel {a}, finite difference {n}; {case:?}",
                    C::NAME
                );
            }
        }

        // f32 (fast activations; the instruction set's microkernel) against the references.
        let (out32, grads32) = on(isa, || run_kernel::<C, f32>(case));
        let error = scaled_error(&out32, &reference_out);
        assert!(error < F32_TOLERANCE, "{isa}: f32 outputs {error:e}");
        for ((name, g32), numeric) in names.iter().zip(&grads32).zip(&numeric) {
            let error = scaled_error(g32, numeric);
            assert!(error < F32_TOLERANCE, "{isa}: f32 d_{name} {error:e}");
        }

        let mut pair = case.clone();
        pair.config.threads = 2;
        let (out2, grads2) = on(isa, || run_kernel::<C, f64>(&pair));
        assert!(
            scaled_error(&out2, &out) < EXACT_TOLERANCE,
            "{isa}: two-thread outputs"
        );
        for (a, b) in grads2.iter().zip(&grads) {
            assert!(
                scaled_error(a, b) < EXACT_TOLERANCE,
                "{isa}: two-thread gradients"
            );
        }
    }
}

#[derive(Debug, Clone)]
struct Shape {
    batch: usize,
    n_steps: usize,
    d_input: usize,
    d_hidden: usize,
    mask: Option<Vec<bool>>,
    go_backwards: bool,
    zero_output_for_mask: bool,
    constant_input: bool,
    with_bias: bool,
    with_initial: bool,
    seed: u64,
}

fn shapes() -> impl Strategy<Value = Shape> {
    (
        1usize..4,
        1usize..6,
        1usize..4,
        1usize..6,
        any::<u64>(),
        0u8..4,
        any::<[bool; 5]>(),
    )
        .prop_map(
            |(batch, n_steps, d_input, d_hidden, seed, mask_kind, flags)| {
                let mut rng = Rng(seed | 1);
                // 0: no mask; 1: random holes; 2: post-padding with a fully masked row; 3: all masked.
                let mask = match mask_kind {
                    0 => None,
                    1 => Some(
                        (0..batch * n_steps)
                            .map(|_| !rng.next().is_multiple_of(3))
                            .collect(),
                    ),
                    2 => Some(
                        (0..batch * n_steps)
                            .map(|idx| row_len(idx / n_steps, n_steps, &mut rng) > idx % n_steps)
                            .collect(),
                    ),
                    _ => Some(vec![false; batch * n_steps]),
                };
                Shape {
                    batch,
                    n_steps,
                    d_input,
                    d_hidden,
                    mask,
                    go_backwards: flags[0],
                    zero_output_for_mask: flags[1],
                    constant_input: flags[2],
                    with_bias: flags[3],
                    with_initial: flags[4],
                    seed,
                }
            },
        )
}

fn row_len(row: usize, n_steps: usize, rng: &mut Rng) -> usize {
    if row == 0 {
        0
    } else {
        (rng.next() as usize % n_steps) + 1
    }
}

fn case_for<C: CellKind>(s: &Shape) -> Case {
    let mut config = KernelConfig::new(s.d_input, s.d_hidden);
    config.go_backwards = s.go_backwards;
    config.zero_output_for_mask = s.zero_output_for_mask;
    config.constant_input = s.constant_input;
    Case::random::<C>(
        config,
        s.batch,
        s.n_steps,
        s.mask.clone(),
        s.with_bias,
        s.with_initial,
        s.seed,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn lstm_kernel_equals_reference_for_any_mask(shape in shapes()) {
        check_against_reference::<Lstm>(&case_for::<Lstm>(&shape));
    }

    #[test]
    fn gru_kernel_equals_reference_for_any_mask(shape in shapes()) {
        check_against_reference::<Gru>(&case_for::<Gru>(&shape));
    }

    #[test]
    fn simple_rnn_kernel_equals_reference_for_any_mask(shape in shapes()) {
        check_against_reference::<SimpleRnn>(&case_for::<SimpleRnn>(&shape));
    }
}

fn holes_case<C: CellKind>(d_hidden: usize, threads: usize) -> Case {
    // Row 0: interior holes; row 1: pre-padding; row 2: no valid step; row 3: all valid.
    let n_steps = 5;
    let mask: Vec<bool> = [
        [true, false, true, false, true],
        [false, false, true, true, true],
        [false; 5],
        [true; 5],
    ]
    .concat();
    let mut config = KernelConfig::new(3, d_hidden);
    config.threads = threads;
    Case::random::<C>(config, 4, n_steps, Some(mask), true, true, 7)
}

#[test]
fn lstm_carries_state_over_interior_holes_and_empty_rows() {
    check_against_reference::<Lstm>(&holes_case::<Lstm>(3, 1));
}

#[test]
fn gru_carries_state_over_interior_holes_and_empty_rows() {
    check_against_reference::<Gru>(&holes_case::<Gru>(3, 1));
}

#[test]
fn simple_rnn_carries_state_over_interior_holes_and_empty_rows() {
    check_against_reference::<SimpleRnn>(&holes_case::<SimpleRnn>(3, 1));
}

/// A two-thread `case` in f64: outputs equal the reference's, and one thread's outputs and
/// gradients equal the pair's. Returns the pair's outputs and gradients and the one-thread
/// case.
fn check_threads_in_f64<C: CellKind>(case: &Case) -> (Vec<f64>, Vec<Vec<f64>>, Case) {
    let reference_out = case.with::<f64, _>(|seq, w| {
        padless_kernels::reference::forward::<C, f64>(&case.config, seq, w)
    });
    let (out, grads) = run_kernel::<C, f64>(case);
    assert!(scaled_error(&out, &reference_out) < EXACT_TOLERANCE);
    let mut single = case.clone();
    single.config.threads = 1;
    let (out1, grads1) = run_kernel::<C, f64>(&single);
    assert!(scaled_error(&out1, &reference_out) < EXACT_TOLERANCE);
    assert!(scaled_error(&out, &out1) < EXACT_TOLERANCE);
    for (a, b) in grads.iter().zip(&grads1) {
        assert!(scaled_error(a, b) < EXACT_TOLERANCE);
    }
    (out, grads, single)
}

/// f32 against f64 for the wide cases, relative to each tensor's largest magnitude. Sums of
/// hundreds of f32 terms round at about 1e-7 of their size, and five steps of a recurrence
/// whose gain is above 1 (0.8-scaled weights over 371 units) amplify that: f32 differs from
/// f64 by up to 1.3e-4 (SimpleRNN outputs at width 371; LSTM 2e-6, GRU 1.2e-5).
const F32_WIDE_TOLERANCE: f64 = 1e-3;

/// A width that is not a multiple of any SIMD width, split unevenly over two threads;
/// checked against one thread and the reference (no finite differences: too many weights),
/// on every instruction set this CPU runs. The thread pair's work split is checked exactly in
/// f64. In f32, one thread and two each agree with f64 within [`F32_WIDE_TOLERANCE`]. On
/// the microkernels (AVX-512, AVX2) the forward pass of two threads is that of one bit for
/// bit: the per-step products sum each element in one order whichever rows or columns a
/// thread takes (and so do the input projections). Not so on the portable path, where gemm
/// picks its algorithm by shape (a
/// matrix-vector loop for one row, its own blocking for more), nor for the gradients on any
/// path: the backward products sum over the gate columns in the threads' block order. The
/// recurrence amplifies such last-bit differences as it amplifies f32's rounding.
fn check_wide<C: CellKind>(d_hidden: usize) {
    let case = holes_case::<C>(d_hidden, 2);
    for isa in isas() {
        let (out, grads, single) = on(isa, || check_threads_in_f64::<C>(&case));
        let mut outputs32 = Vec::new();
        for (what, case) in [("two threads", &case), ("one thread", &single)] {
            let (out32, grads32) = on(isa, || run_kernel::<C, f32>(case));
            let error = scaled_error(&out32, &out);
            assert!(
                error < F32_WIDE_TOLERANCE,
                "{isa} {} {what}: f32 outputs {error:e}",
                C::NAME
            );
            for (i, (g32, g64)) in grads32.iter().zip(&grads).enumerate() {
                let error = scaled_error(g32, g64);
                assert!(
                    error < F32_WIDE_TOLERANCE,
                    "{isa} {} {what}: f32 gradient {i} {error:e}",
                    C::NAME
                );
            }
            outputs32.push(out32);
        }
        if isa != Isa::Portable {
            assert!(
                outputs32[0] == outputs32[1],
                "{isa} {}: f32 outputs of two threads and one differ",
                C::NAME
            );
        }
    }
}

/// Two threads split the rows of each step (a small recurrent matrix).
#[test]
fn odd_hidden_width_on_two_threads_matches_one_thread() {
    check_wide::<Lstm>(37);
    check_wide::<Gru>(37);
    check_wide::<SimpleRnn>(37);
}

/// Two threads split the units (a recurrent matrix over the row-split limit in f64: see
/// `blocks::tests::threads_split_rows_below_the_size_limit_and_columns_above`).
#[test]
fn wide_layer_on_two_threads_matches_one_thread() {
    check_wide::<Lstm>(371);
    check_wide::<Gru>(371);
    check_wide::<SimpleRnn>(371);
}

/// A call of one step (a decoder run step by step) multiplies by the unpacked weights
/// (Keras layout, gate run by gate run): outputs and gradients equal the reference's and one
/// thread's, with the threads splitting rows (width 37) and units (371), in f64 and f32, on
/// every instruction set this CPU runs.
#[test]
fn one_step_calls_equal_the_reference_on_both_thread_splits() {
    fn check<C: CellKind>(d_hidden: usize) {
        let mask = vec![true, false, true, true, true, false];
        let mut config = KernelConfig::new(3, d_hidden);
        config.threads = 2;
        let case = Case::random::<C>(config, 6, 1, Some(mask), true, true, 11);
        for isa in isas() {
            let (out, grads, _) = on(isa, || check_threads_in_f64::<C>(&case));
            for threads in [1, 2] {
                let mut case32 = case.clone();
                case32.config.threads = threads;
                let (out32, grads32) = on(isa, || run_kernel::<C, f32>(&case32));
                assert!(scaled_error(&out32, &out) < 1e-4, "{isa} {} f32", C::NAME);
                for (a, b) in grads32.iter().zip(&grads) {
                    assert!(scaled_error(a, b) < 1e-4, "{isa} {} f32 gradients", C::NAME);
                }
            }
        }
    }
    for d_hidden in [37, 371] {
        check::<Lstm>(d_hidden);
        check::<Gru>(d_hidden);
        check::<SimpleRnn>(d_hidden);
    }
}

/// `backward_weights` skips the input gradient and nothing else: every other gradient is the
/// full backward's, bit for bit, on one thread and on two (units split, so the skipped
/// product is each thread's last piece of work).
fn check_weights_only<C: CellKind>(d_hidden: usize, threads: usize) {
    let case = holes_case::<C>(d_hidden, threads);
    let kernel = RecurrentKernel::<C>::new(case.config);
    let d_out: Vec<f32> = case.d_out.iter().map(|&v| v as f32).collect();
    case.with::<f32, _>(|seq, weights| {
        let mut out = vec![0.0f32; kernel.output_len(case.batch, case.n_steps)];
        let full = kernel.backward(kernel.forward(seq, weights, &mut out), &d_out);
        let only = kernel.backward_weights(kernel.forward(seq, weights, &mut out), &d_out);
        assert_eq!(full.d_x.len(), seq.x.len());
        assert!(full.d_x.iter().any(|&v| v != 0.0));
        assert!(only.d_x.is_empty());
        assert_eq!(only.d_kernel, full.d_kernel);
        assert_eq!(only.d_recurrent_kernel, full.d_recurrent_kernel);
        assert_eq!(only.d_bias, full.d_bias);
        assert_eq!(only.d_initial, full.d_initial);
    });
}

#[test]
fn weights_only_backward_equals_the_full_one_without_the_input_gradient() {
    for isa in isas() {
        for (d_hidden, threads) in [(3, 1), (37, 2), (371, 2)] {
            on(isa, || {
                check_weights_only::<Lstm>(d_hidden, threads);
                check_weights_only::<Gru>(d_hidden, threads);
                check_weights_only::<SimpleRnn>(d_hidden, threads);
            });
        }
    }
}

/// A call that writes only the step outputs or only the final states gives exactly those
/// parts of the full output, and the gradients the full call gives when the other part's
/// gradient is 0; on any mask, 1 and 2 threads (rows split and units split).
fn check_output_parts<C: CellKind>(case: &Case) {
    let (batch, n_steps, h) = (case.batch, case.n_steps, case.config.d_hidden);
    let per_row = (n_steps + C::N_STATES) * h;
    let (full_out, _) = run_kernel::<C, f64>(case);
    for (outputs, keep) in [
        (Outputs::Sequence, 0..n_steps * h),
        (Outputs::States, n_steps * h..per_row),
    ] {
        // The full call with the other part's gradient zeroed ...
        let mut zeroed = case.clone();
        for (i, d) in zeroed.d_out.iter_mut().enumerate() {
            if !keep.contains(&(i % per_row)) {
                *d = 0.0;
            }
        }
        let (_, want_grads) = run_kernel::<C, f64>(&zeroed);
        // ... against the part alone, its gradient the kept columns.
        let mut part = case.clone();
        part.config.outputs = outputs;
        part.d_out = (0..batch)
            .flat_map(|b| case.d_out[b * per_row + keep.start..b * per_row + keep.end].to_vec())
            .collect();
        let (out, grads) = run_kernel::<C, f64>(&part);
        let want_out: Vec<f64> = (0..batch)
            .flat_map(|b| full_out[b * per_row + keep.start..b * per_row + keep.end].to_vec())
            .collect();
        assert_eq!(out, want_out, "{outputs:?} outputs");
        for (i, (got, want)) in grads.iter().zip(&want_grads).enumerate() {
            assert!(
                scaled_error(got, want) < EXACT_TOLERANCE,
                "{outputs:?} gradient {i}"
            );
        }
    }
}

#[test]
fn sequence_only_and_states_only_outputs_are_parts_of_the_full_call() {
    for isa in isas() {
        for threads in [1, 2] {
            for d_hidden in [3, 37, 371] {
                on(isa, || {
                    check_output_parts::<Lstm>(&holes_case::<Lstm>(d_hidden, threads));
                    check_output_parts::<Gru>(&holes_case::<Gru>(d_hidden, threads));
                    check_output_parts::<SimpleRnn>(&holes_case::<SimpleRnn>(d_hidden, threads));
                });
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn output_parts_match_the_full_call_for_any_mask(shape in shapes()) {
        for isa in isas() {
            on(isa, || {
                check_output_parts::<Lstm>(&case_for::<Lstm>(&shape));
                check_output_parts::<Gru>(&case_for::<Gru>(&shape));
            });
        }
    }
}
