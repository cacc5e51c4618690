//! A `Bidirectional` layer's two halves as one fused operation, side by side on two threads,
//! against the composite loop: outputs, final states and the gradients of the input and of
//! both halves' weights agree within 1e-5 (relative to each tensor's largest value), for the
//! LSTM and the GRU, with holes, pre-padding and an empty row in the mask, with and without
//! learned initial states; masked input steps get a gradient of exactly 0. With one kernel
//! thread the pair is not used (and still agrees).

use burn::tensor::{Device, Tensor, TensorData};
use padless::cpu::{set_threads, with_composite};
use padless::prelude::*;
use padless::rnn::fused::fused_pair_calls;
use padless::tensor_util::f32_vec;

mod common;
use common::{assert_close_to_scale, read_every_output, values};

const TOLERANCE: f32 = 1e-5;
const BATCH: usize = 4;
const TIME: usize = 6;
const D_INPUT: usize = 3;
const D_HIDDEN: usize = 5;

fn device() -> Device {
    Device::flex().autodiff()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), &device())
}

/// Row 0 with interior holes, row 1 pre-padded, row 2 with no valid step, row 3 all valid.
fn mask() -> Mask {
    let rows = [
        [true, false, true, true, false, true],
        [false, false, true, true, true, true],
        [false; 6],
        [true; 6],
    ];
    Mask::from_bools(&rows.concat(), BATCH, TIME, &device()).unwrap()
}

macro_rules! observe_fn {
    ($name:ident, $cell:ty) => {
        /// Everything observed of one run: the merged sequence, every final state, and the
        /// gradients of the input and of each half's kernel, recurrent kernel and bias.
        fn $name(layer: &Bidirectional<$cell>) -> Vec<(String, Vec<f32>)> {
            let x = tensor(
                values(BATCH * TIME * D_INPUT, 1, 1.0),
                [BATCH, TIME, D_INPUT],
            )
            .require_grad();
            let out = layer.forward(x.clone(), Some(&mask())).unwrap();
            let (loss, mut observed) = read_every_output(out.sequence, out.states);
            let grads = loss.backward();
            observed.push(("d x".into(), f32_vec(x.grad(&grads).unwrap())));
            for (half, name) in [(&layer.forward, "forward"), (&layer.backward, "backward")] {
                let cell = &half.cell;
                let bias = cell.bias.as_ref().unwrap().val();
                observed.extend([
                    (
                        format!("d kernel ({name})"),
                        f32_vec(cell.kernel.val().grad(&grads).unwrap()),
                    ),
                    (
                        format!("d recurrent kernel ({name})"),
                        f32_vec(cell.recurrent_kernel.val().grad(&grads).unwrap()),
                    ),
                    (
                        format!("d bias ({name})"),
                        f32_vec(bias.grad(&grads).unwrap()),
                    ),
                ]);
            }
            observed
        }
    };
}

observe_fn!(observe_lstm, LstmCell);
observe_fn!(observe_gru, GruCell);

/// Named values a run produces (outputs, states, gradients).
type Observed = Vec<(String, Vec<f32>)>;

fn check<C: Cell>(layer: &mut Bidirectional<C>, observe: fn(&Bidirectional<C>) -> Observed) {
    // Distinct nonzero learned initial states (where the layer has them) make their use visible.
    let mut weights = layer.weights();
    for (i, w) in weights
        .iter_mut()
        .filter(|w| w.name.contains("initial"))
        .enumerate()
    {
        w.values = values(w.values.len(), 20 + i as u64, 0.5);
    }
    layer.set_weights(&weights).unwrap();
    for threads in [2, 1] {
        set_threads(threads);
        let pairs = fused_pair_calls();
        let fused = observe(layer);
        let paired = fused_pair_calls() > pairs;
        assert_eq!(
            paired,
            threads == 2,
            "the pair ran with {threads} kernel threads"
        );
        // A masked step's input gets a gradient of exactly 0 (SEMANTICS: gradients).
        let (_, d_x) = fused.iter().find(|(what, _)| what == "d x").unwrap();
        for (step, valid) in mask().to_vec().into_iter().enumerate() {
            let at = &d_x[step * D_INPUT..(step + 1) * D_INPUT];
            assert!(
                valid || at.iter().all(|&g| g == 0.0),
                "masked step {step} got gradient {at:?} ({threads} threads)"
            );
        }
        let composite = with_composite(|| observe(layer));
        for ((what, f), (_, c)) in fused.iter().zip(&composite) {
            assert_close_to_scale(f, c, TOLERANCE, &format!("{what} ({threads} threads)"));
        }
    }
    set_threads(0);
}

/// One test for both cells: the kernel-thread setting is process-wide, and tests of one file
/// run in parallel.
#[test]
fn paired_halves_equal_the_composite_loop_for_lstm_and_gru() {
    let device = device();
    for learn_initial_state in [false, true] {
        let mut config = LstmConfig::new(D_INPUT, D_HIDDEN).with_return_sequences(true);
        config.learn_initial_state = learn_initial_state;
        check(
            &mut config.init_bidirectional(MergeMode::Concat, &device),
            observe_lstm,
        );
    }
    let config = GruConfig::new(D_INPUT, D_HIDDEN).with_return_sequences(true);
    check(
        &mut config.init_bidirectional(MergeMode::Concat, &device),
        observe_gru,
    );
}
