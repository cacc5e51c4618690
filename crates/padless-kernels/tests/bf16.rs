//! The opt-in bfloat16 tile products ([`padless_kernels::set_bf16_products`]) inside the
//! kernels: outputs and every gradient stay within bfloat16's precision of the f64
//! reference, for each cell, on masks with holes and empty rows, with the threads splitting
//! rows (width 37) and units (width 300); under another instruction set than AVX-512 the
//! products stay f32. One test function: the switches are process-wide, and this binary
//! holds no other test that a concurrent switch could disturb.

#[allow(dead_code)] // the shared helpers this file does not call
mod common;

use common::{Case, run_kernel, scaled_error};
use padless_kernels::{
    CellKind, Gru, Isa, KernelConfig, Lstm, SimpleRnn, bf16_products, bf16_products_available,
    set_bf16_products, set_isa, with_isa,
};

fn case<C: CellKind>(d_hidden: usize) -> Case {
    let mask: Vec<bool> = [
        [true, false, true, false, true],
        [false, false, true, true, true],
        [false; 5],
        [true; 5],
        [true, true, true, false, false],
    ]
    .concat();
    let mut config = KernelConfig::new(19, d_hidden);
    config.threads = 2;
    let mut case = Case::random::<C>(config, 5, 5, Some(mask), true, true, 3);
    // Weights of a trained layer's size (uniform within 1 / sqrt(fan-in), as Glorot's), not
    // the shared generator's width-blind 0.8, which saturates a 300-unit layer and leaves
    // gradients that amplify any rounding.
    let (in_scale, rec_scale) = (1.25 / (19f64).sqrt(), 1.25 / (d_hidden as f64).sqrt());
    case.kernel.iter_mut().for_each(|w| *w *= in_scale);
    case.recurrent_kernel
        .iter_mut()
        .for_each(|w| *w *= rec_scale);
    case
}

/// The worst scaled error of f32 outputs and gradients against f64's.
fn error_of<C: CellKind>(case: &Case) -> f64 {
    let (out64, grads64) = run_kernel::<C, f64>(case);
    let (out32, grads32) = run_kernel::<C, f32>(case);
    grads32
        .iter()
        .zip(&grads64)
        .map(|(a, b)| scaled_error(a, b))
        .fold(scaled_error(&out32, &out64), f64::max)
}

#[test]
fn bf16_products_stay_within_bfloat16_precision_of_the_reference() {
    if !bf16_products_available() {
        assert!(set_bf16_products(true).is_err());
        assert!(!bf16_products());
        eprintln!("neither AMX tiles nor AVX512-BF16 here: only the refusal is checked");
        return;
    }
    for d_hidden in [37, 300] {
        for (name, check) in [
            ("LSTM", error_of::<Lstm> as fn(&Case) -> f64),
            ("GRU", error_of::<Gru>),
            ("SimpleRNN", error_of::<SimpleRnn>),
        ] {
            let case = match name {
                "LSTM" => case::<Lstm>(d_hidden),
                "GRU" => case::<Gru>(d_hidden),
                _ => case::<SimpleRnn>(d_hidden),
            };
            set_bf16_products(false).unwrap();
            let f32_error = check(&case);
            set_bf16_products(true).unwrap();
            let bf16_error = check(&case);
            // The products are f32 on a thread forced to another instruction set, and the
            // process cannot be forced to one while the switch is on.
            let forced = Isa::Avx2
                .is_available()
                .then(|| with_isa(Isa::Avx2, || check(&case)).unwrap());
            assert!(set_isa(Isa::Portable).is_err());
            set_bf16_products(false).unwrap();
            if let Some(error) = forced {
                assert!(
                    error < 1e-5,
                    "{name} {d_hidden}: avx2 under the switch {error}"
                );
            }
            // f32 products: about 1e-7 of the scale; bfloat16 inputs: 2e-3 to 4e-3 here (8 bits of
            // mantissa), far above f32's, so the bfloat16 products did run.
            eprintln!("{name} {d_hidden}: f32 {f32_error:.2e} bf16 {bf16_error:.2e}");
            assert!(f32_error < 1e-5, "{name} {d_hidden}: f32 {f32_error}");
            assert!(
                bf16_error > 10.0 * f32_error && bf16_error < 1e-2,
                "{name} {d_hidden}: bfloat16 {bf16_error} (f32 {f32_error})"
            );
        }
    }
}
