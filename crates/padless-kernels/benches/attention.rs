//! Criterion benchmarks of the variable-length attention kernel on the Transformer shapes of
//! issue #33: batch 64, lengths uniform in [8, 64], 4 heads of 64 (d_model 256).
//!
//! - `attention/{self,causal}/{forward,train}/t{threads}`: self-attention of the packed valid
//!   tokens, forward alone and forward + backward.
//!
//! Run: `cargo bench -p padless-kernels --bench attention`.

use criterion::{Criterion, criterion_group, criterion_main};
use padless_kernels::attention::{
    AttentionConfig, PackedQkv, attention_backward, attention_forward,
};
use std::hint::black_box;
use std::time::Duration;

const B: usize = 64;
const HEADS: usize = 4;
const D_HEAD: usize = 64;

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

fn bench(c: &mut Criterion) {
    let lengths: Vec<usize> = values(B, 7, 1.0)
        .iter()
        .map(|v| 8 + ((v + 1.0) / 2.0 * 56.999) as usize)
        .collect();
    let mut cu = vec![0];
    for l in &lengths {
        cu.push(cu.last().unwrap() + l);
    }
    let n = *cu.last().unwrap();
    let width = HEADS * D_HEAD;
    let (q, k, v, d_out) = (
        values(n * width, 1, 1.0),
        values(n * width, 2, 1.0),
        values(n * width, 3, 1.0),
        values(n * width, 4, 1.0),
    );
    let inputs = PackedQkv::new(&q, &k, &v, &cu, &cu);
    let mut group = c.benchmark_group("attention");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for causal in [false, true] {
        let name = if causal { "causal" } else { "self" };
        for threads in [1, 2] {
            let config = AttentionConfig::new(HEADS, D_HEAD)
                .with_causal(causal)
                .with_threads(threads);
            group.bench_function(format!("{name}/forward/t{threads}"), |b| {
                b.iter(|| black_box(attention_forward(&config, &inputs)))
            });
            group.bench_function(format!("{name}/train/t{threads}"), |b| {
                b.iter(|| {
                    let forward = attention_forward(&config, &inputs);
                    black_box(attention_backward(&config, &inputs, &forward, &d_out))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
