//! Dropout on the Transformer's packed path (`transformer/packed.rs`): it acts (two draws
//! differ), and, with the device's generator seeded alike, the same rows padded another way
//! draw the same dropped units and attention weights (each is a function of the packed rows,
//! not of the padding), so outputs and gradients agree. Its own test binary: the device's
//! generator is shared by every test of a process.

use burn::tensor::DType;
use padless::transformer::packed_calls;

mod transformer_common;
mod transformer_fused_common;
use transformer_fused_common::{
    LAYOUTS, Observed, assert_close, batch, f64s, layer_configs, loss_weights,
};

#[test]
fn packed_dropout_acts_and_does_not_depend_on_padding() {
    let device = padless::training_device();
    let (d, lengths, memory_lengths) = (16, [70, 0, 5, 33], [9, 4, 0, 12]);
    for config in layer_configs(d, 2) {
        let config = config.with_dropout(0.3);
        let encoder = config.init_encoder(2, &device).unwrap();
        let decoder = config.init_decoder(2, &device).unwrap();
        let run = |layout, seed: u64| -> Observed {
            let (x, mask) = batch(&lengths, d, layout, 1, 3.0, DType::F32, &device);
            let (memory, memory_mask) =
                batch(&memory_lengths, d, layout, 2, -4.0, DType::F32, &device);
            device.seed(seed);
            let x = x.require_grad();
            let memory = memory.require_grad();
            let encoded = encoder.forward(memory.clone(), Some(&memory_mask)).unwrap();
            let y = decoder
                .forward(x.clone(), Some(&mask), encoded, Some(&memory_mask))
                .unwrap();
            let weights = loss_weights(&lengths, d, layout, DType::F32, &device);
            let grads = (y.clone() * weights).sum().backward();
            // Each row's valid steps in order, wherever the layout put them.
            let valid = |v: Vec<f64>, mask: &padless::Mask| -> Vec<f64> {
                mask.to_vec()
                    .iter()
                    .enumerate()
                    .filter(|&(_, &ok)| ok)
                    .flat_map(|(s, _)| v[s * d..(s + 1) * d].to_vec())
                    .collect()
            };
            vec![
                ("output".to_string(), valid(f64s(y), &mask)),
                (
                    "d target".to_string(),
                    valid(f64s(x.grad(&grads).unwrap()), &mask),
                ),
                (
                    "d memory".to_string(),
                    valid(f64s(memory.grad(&grads).unwrap()), &memory_mask),
                ),
            ]
        };
        // burn draws a parameter's initial values at its first use: a first run draws them,
        // so that the seeded runs draw dropout alone.
        run(LAYOUTS[0], 0);
        let before = packed_calls();
        let reference = run(LAYOUTS[0], 17);
        assert_eq!(packed_calls() - before, 2, "encoder and decoder ran packed");
        for layout in &LAYOUTS[1..] {
            let what = format!("norm_first {}, {layout:?}", config.norm_first);
            assert_close(&run(*layout, 17), &reference, 1e-5, &what);
        }
        let other = run(LAYOUTS[0], 18);
        assert_ne!(other[0].1, reference[0].1, "another seed drops other units");
    }
}
