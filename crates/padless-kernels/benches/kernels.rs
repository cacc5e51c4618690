//! Criterion benchmarks of the fused kernels alone (no burn), on the shapes of
//! `bench/SPEC.md`: batch 64, 64 steps, lengths uniform in [8, 64] (about 57% valid).
//!
//! - `spec_recurrent/H{h}/t{threads}`: the recurrent part of one SPEC training step: the
//!   encoder LSTM (32 inputs) forward and backward over the masked batch, and the decoder LSTM
//!   fed by RepeatVector (constant input) over the target lengths, forward and backward.
//! - `infer/H{h}/t{threads}`: the encoder forward without a workspace.
//! - `valid_fraction/{f}`: encoder forward and backward at H=128, 2 threads, with the lengths
//!   scaled so that a fraction `f` of the 64 x 64 steps is valid: time should follow `f`.
//! - `cells/{gru,simple_rnn}`: the other cells at H=128, 2 threads.
//!
//! Each benchmark's id ends in the instruction set the kernels ran on (`avx512`, `avx2`,
//! `portable`: the best this CPU has, or `PADLESS_ISA`'s), also printed at the start, so that
//! runs on different paths keep separate baselines.
//!
//! Run: `cargo bench -p padless-kernels` (add a filter, e.g. `-- spec_recurrent`);
//! `PADLESS_ISA=avx2 cargo bench -p padless-kernels` for the AVX2 path.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use padless_kernels::{
    GruKernel, KernelConfig, LstmKernel, RecurrentKernel, Sequences, SimpleRnnKernel, Weights,
    bf16_products, isa,
};
use std::hint::black_box;
use std::time::Duration;

const B: usize = 64;
const T: usize = 64;
const V: usize = 32;

/// A fixed pseudo-random stream (no dependency), values in [-scale, scale].
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Lengths uniform in [8, 64], scaled so that `fraction` of `B x T` is valid (`None`: as drawn).
fn lengths(fraction: Option<f64>) -> Vec<usize> {
    let raw: Vec<usize> = values(B, 7, 1.0)
        .iter()
        .map(|v| 8 + ((v + 1.0) / 2.0 * 56.999) as usize)
        .collect();
    let Some(fraction) = fraction else {
        return raw;
    };
    let scale = fraction * (B * T) as f64 / raw.iter().sum::<usize>() as f64;
    raw.iter()
        .map(|&l| ((l as f64 * scale).round() as usize).clamp(1, T))
        .collect()
}

fn mask_of(lengths: &[usize]) -> Vec<bool> {
    lengths
        .iter()
        .flat_map(|&l| (0..T).map(move |t| t < l))
        .collect()
}

/// Weights of a cell with `n_gates` gates (and the GRU's two bias rows).
struct Layer {
    kernel: Vec<f32>,
    recurrent: Vec<f32>,
    bias: Vec<f32>,
}

impl Layer {
    fn new(d: usize, h: usize, n_gates: usize, bias_rows: usize) -> Self {
        let g = n_gates * h;
        Layer {
            kernel: values(d * g, 1, (1.0 / d as f32).sqrt()),
            recurrent: values(h * g, 2, (1.0 / h as f32).sqrt()),
            bias: values(bias_rows * g, 3, 0.1),
        }
    }

    fn weights(&self) -> Weights<'_, f32> {
        Weights {
            kernel: &self.kernel,
            recurrent_kernel: &self.recurrent,
            bias: Some(&self.bias),
        }
    }
}

/// Forward and backward of one layer over a masked batch, with a gradient on every output.
fn train_step<C: padless_kernels::CellKind>(
    kernel: &RecurrentKernel<C>,
    layer: &Layer,
    x: &[f32],
    mask: &[bool],
) -> f32 {
    let seq = Sequences {
        x,
        batch: B,
        n_steps: T,
        mask: Some(mask),
        initial: &[],
    };
    let mut out = vec![0.0f32; kernel.output_len(B, T)];
    let workspace = kernel.forward(&seq, &layer.weights(), &mut out);
    let grads = kernel.backward(workspace, &out);
    grads.d_recurrent_kernel[0]
}

fn spec_recurrent(c: &mut Criterion) {
    let mut group = c.benchmark_group("spec_recurrent");
    let mask = mask_of(&lengths(None));
    for h in [128, 512] {
        let x_enc = values(B * T * V, 4, 1.0);
        let x_dec = values(B * h, 5, 0.5);
        let (enc, dec) = (Layer::new(V, h, 4, 1), Layer::new(h, h, 4, 1));
        for threads in [1, 2] {
            let config = |d| KernelConfig {
                threads,
                ..KernelConfig::new(d, h)
            };
            let encoder = LstmKernel::new(config(V));
            let decoder = LstmKernel::new(KernelConfig {
                constant_input: true,
                ..config(h)
            });
            group.bench_function(
                BenchmarkId::new(format!("H{h}"), format!("t{threads}/{}", isa())),
                |b| {
                    b.iter(|| {
                        black_box(train_step(&encoder, &enc, &x_enc, &mask))
                            + black_box(train_step(&decoder, &dec, &x_dec, &mask))
                    })
                },
            );
        }
    }
    group.finish();
}

fn infer(c: &mut Criterion) {
    let mut group = c.benchmark_group("infer");
    let mask = mask_of(&lengths(None));
    let x = values(B * T * V, 4, 1.0);
    for h in [128, 512] {
        let layer = Layer::new(V, h, 4, 1);
        for threads in [1, 2] {
            let kernel = LstmKernel::new(KernelConfig {
                threads,
                ..KernelConfig::new(V, h)
            });
            let seq = Sequences {
                x: &x,
                batch: B,
                n_steps: T,
                mask: Some(&mask),
                initial: &[],
            };
            let mut out = vec![0.0f32; kernel.output_len(B, T)];
            group.bench_function(
                BenchmarkId::new(format!("H{h}"), format!("t{threads}/{}", isa())),
                |b| {
                    b.iter(|| {
                        kernel.infer(&seq, &layer.weights(), &mut out);
                        black_box(out[0])
                    })
                },
            );
        }
    }
    group.finish();
}

fn valid_fraction(c: &mut Criterion) {
    let mut group = c.benchmark_group("valid_fraction");
    let h = 128;
    let x = values(B * T * V, 4, 1.0);
    let layer = Layer::new(V, h, 4, 1);
    let kernel = LstmKernel::new(KernelConfig {
        threads: 2,
        ..KernelConfig::new(V, h)
    });
    for fraction in [0.25, 0.5, 1.0] {
        let mask = mask_of(&lengths(Some(fraction)));
        group.bench_function(BenchmarkId::new(format!("{fraction}"), isa()), |b| {
            b.iter(|| black_box(train_step(&kernel, &layer, &x, &mask)))
        });
    }
    group.finish();
}

fn cells(c: &mut Criterion) {
    let mut group = c.benchmark_group("cells");
    let h = 128;
    let mask = mask_of(&lengths(None));
    let x = values(B * T * V, 4, 1.0);
    let config = KernelConfig {
        threads: 2,
        ..KernelConfig::new(V, h)
    };
    let gru = (GruKernel::new(config), Layer::new(V, h, 3, 2));
    let rnn = (SimpleRnnKernel::new(config), Layer::new(V, h, 1, 1));
    group.bench_function(BenchmarkId::new("gru", isa()), |b| {
        b.iter(|| black_box(train_step(&gru.0, &gru.1, &x, &mask)))
    });
    group.bench_function(BenchmarkId::new("simple_rnn", isa()), |b| {
        b.iter(|| black_box(train_step(&rnn.0, &rnn.1, &x, &mask)))
    });
    group.finish();
}

fn config() -> Criterion {
    let products = if bf16_products() { "bf16" } else { "f32" };
    eprintln!("padless-kernels benches: isa={} products={products}", isa());
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = spec_recurrent, infer, valid_fraction, cells
}
criterion_main!(benches);
