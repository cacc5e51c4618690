//! `padless bench`: the benchmark model of `bench/SPEC.md` ("seed-s2s"), trained end to end
//! through padless' public API as a user writes it, timed as the peers are timed; with
//! `--model transformer`, the "seq2seq-transformer" benchmark ([`transformer`]).
//!
//! Model: Masking -> LSTM(H) -> RepeatVector(T) -> LSTM(H, return_sequences) ->
//! TimeDistributed(Dense(V, softmax)); categorical cross-entropy over valid target steps;
//! Adam 1e-3; one fixed batch (B = 64, T = 64, V = 32) made exactly as the peers' numpy
//! generator makes it (`RandomState(1234)`: lengths uniform in [8, 64], symbols 1..31).

use std::time::Instant;

use anyhow::Context;
use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::train::*;

pub mod transformer;

const V: usize = 32;
const T: usize = 64;
const B: usize = 64;
const SEED: u32 = 1234;

/// The benchmark model of `padless bench`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchModel {
    /// SPEC "seed-s2s": Masking, LSTM(H), RepeatVector, LSTM(H), TimeDistributed softmax.
    Lstm,
    /// SPEC "seq2seq-transformer": a post-LN encoder-decoder Transformer, 3 + 3 layers.
    Transformer,
}

/// `lo:hi`, the range of the Transformer batch's source lengths (`--lengths`).
pub fn parse_lengths(text: &str) -> Result<(usize, usize), String> {
    let parsed = text
        .split_once(':')
        .and_then(|(lo, hi)| Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)));
    match parsed {
        Some((lo, hi)) if 2 <= lo && lo <= hi && hi <= T => Ok((lo, hi)),
        _ => Err(format!(
            "expected lo:hi with 2 <= lo <= hi <= {T} (as 8:64), found {text:?}"
        )),
    }
}

/// What `padless bench` takes.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Hidden units of both LSTMs.
    pub hidden: usize,
    /// Threads of the fused kernels (1 or 2).
    pub threads: usize,
    /// Timed steps per repeat.
    pub steps: usize,
    /// Timed repeats (the median of their means is reported).
    pub repeats: usize,
    /// Warm-up steps.
    pub warmup: usize,
    /// Scale the lengths so this fraction of the `B x T` input steps is valid (the SPEC data
    /// has about 0.57); `None` keeps the SPEC lengths.
    pub valid_fraction: Option<f64>,
    /// Print the figures as one JSON object rather than a line of text.
    pub json: bool,
}

/// numpy's legacy `RandomState` (MT19937 seeded by `init_genrand`) and its `randint`, so the
/// batch is the peers' batch.
struct NumpyRandomState {
    state: [u32; 624],
    index: usize,
}

impl NumpyRandomState {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandomState { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let twisted = (y >> 1) ^ if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.state[i] = self.state[(i + 397) % 624] ^ twisted;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `randint(low, high)`: masked rejection sampling, as numpy's legacy generator does.
    fn randint(&mut self, low: usize, high: usize) -> usize {
        let range = (high - low - 1) as u32;
        let mask = u32::MAX >> range.leading_zeros();
        loop {
            let v = self.next_u32() & mask;
            if v <= range {
                return low + v as usize;
            }
        }
    }
}

/// The SPEC batch as examples: lengths, one-hot inputs, and targets that reverse each input
/// within its length.
fn spec_examples(valid_fraction: Option<f64>) -> Vec<Example> {
    let mut rng = NumpyRandomState::new(SEED);
    let mut lengths: Vec<usize> = (0..B).map(|_| rng.randint(8, T + 1)).collect();
    let symbols: Vec<usize> = (0..B * T).map(|_| rng.randint(1, V)).collect();
    if let Some(fraction) = valid_fraction {
        let scale = fraction * (B * T) as f64 / lengths.iter().sum::<usize>() as f64;
        for len in &mut lengths {
            *len = ((*len as f64 * scale).round() as usize).clamp(1, T);
        }
    }
    let one_hot = |s: usize| {
        (0..V)
            .map(|i| if i == s { 1.0 } else { 0.0 })
            .collect::<Vec<f32>>()
    };
    (0..B)
        .map(|b| {
            let row = &symbols[b * T..b * T + lengths[b]];
            Example::new(
                InputSeq::Features(row.iter().map(|&s| one_hot(s)).collect()),
                TargetSeq::Dense(row.iter().rev().map(|&s| one_hot(s)).collect()),
            )
        })
        .collect()
}

fn model_config(hidden: usize) -> ModelConfig {
    let lstm = |return_sequences| {
        LayerConfig::Lstm(LstmConfig {
            units: hidden,
            return_sequences,
            ..Default::default()
        })
    };
    ModelConfig {
        input: InputConfig::Sequence {
            time: None,
            features: V,
        },
        layers: vec![
            LayerConfig::Masking(MaskingConfig { mask_value: 0.0 }),
            lstm(false),
            LayerConfig::RepeatVector(RepeatVectorConfig { n_steps: T }),
            lstm(true),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: V,
                activation: ActivationKind::Softmax,
                ..Default::default()
            })),
        ],
    }
}

/// Checks that the model of `hidden` units and a training step on the `B x T` batch fit in
/// the memory budget before either is built.
fn check_size(hidden: usize) -> anyhow::Result<()> {
    let (h, v) = (hidden as u64, V as u64);
    let lstm = |d_input: u64| 4u64.saturating_mul(h).saturating_mul(d_input + h + 1);
    let parameters = lstm(v)
        .saturating_add(lstm(h))
        .saturating_add(h.saturating_mul(v) + v);
    let what = format!("--hidden {hidden}");
    padless::budget::check_model_size(&format!("{what}: the model's parameters"), parameters)?;
    // Each LSTM keeps its gates and states (6 H floats) for every one of the B x T steps.
    let activations = 2u64
        .saturating_mul((B * T) as u64)
        .saturating_mul(6)
        .saturating_mul(h);
    padless::budget::check_elements(
        &format!("{what}: the activations of a {B} x {T} batch"),
        activations,
        4,
    )?;
    Ok(())
}

/// `flops_per_train_step` of the peers (every one of the `B x T` steps of both LSTMs).
fn spec_flops(h: f64) -> f64 {
    let (b, t, v) = (B as f64, T as f64, V as f64);
    let encoder = 2.0 * b * (v + h) * 4.0 * h * t;
    let decoder = 2.0 * b * (h + h) * 4.0 * h * t;
    3.0 * (encoder + decoder) + 3.0 * 2.0 * b * t * h * v
}

/// The FLOPs a packed implementation must still do per training step (SPEC.md's "valid-step
/// FLOPs"): both LSTMs over the valid steps only (the targets have the inputs' lengths), the
/// decoder's input projection once per row (RepeatVector feeds every step the same vector),
/// and the dense layer over the valid steps; forward + backward = 3 x forward.
fn valid_step_flops(h: f64, valid_steps: f64) -> f64 {
    let (b, v) = (B as f64, V as f64);
    let encoder = valid_steps * 2.0 * (v + h) * 4.0 * h;
    let decoder = valid_steps * 2.0 * h * 4.0 * h + b * 2.0 * h * 4.0 * h;
    let dense = valid_steps * 2.0 * h * v;
    3.0 * (encoder + decoder + dense)
}

/// Median of the repeats' mean ms per call of `step`, after `warmup` calls.
fn time_ms(
    args: &BenchArgs,
    mut step: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, Vec<f64>)> {
    for _ in 0..args.warmup {
        step()?;
    }
    let mut means = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        let start = Instant::now();
        for _ in 0..args.steps {
            step()?;
        }
        means.push(start.elapsed().as_secs_f64() * 1e3 / args.steps as f64);
    }
    let mut sorted = means.clone();
    sorted.sort_by(f64::total_cmp);
    Ok((sorted[sorted.len() / 2], means))
}

/// Runs the benchmark and prints its figures on stdout: one line of text, or one JSON object
/// with `--json`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.steps > 0 && args.repeats > 0,
        "--steps and --repeats must be at least 1"
    );
    check_size(args.hidden)?;
    padless::cpu::set_threads(args.threads);
    let device = training_device();
    device.seed(1);
    let compile = CompileConfig::new(SequenceLoss::new(LossKind::CategoricalCrossentropy {
        from_logits: false,
    }));
    let config = model_config(args.hidden);
    let mut trainer =
        Trainer::from_config(&config, compile, &device).context("building the model")?;
    let examples = spec_examples(args.valid_fraction);
    let mut options = trainer.batch_options(B);
    options.target_time = Some(T);
    let batch = make_batches(&examples, &options, trainer.device())?
        .into_iter()
        .next()
        .context("one batch")?;
    let valid_steps: usize = examples.iter().map(|e| e.inputs[0].len()).sum();

    crate::status!(
        "timing training steps at H={}: {} warm-up steps, then {} repeats of {}",
        args.hidden,
        args.warmup,
        args.repeats,
        args.steps
    );
    let first_loss = trainer.train_on_batch(&batch)?["loss"];
    let mut last_loss = first_loss;
    let (train_ms, train_repeats) = time_ms(args, || {
        last_loss = trainer.train_on_batch(&batch)?["loss"];
        Ok(())
    })?;
    let (infer_ms, _) = time_ms(args, || {
        trainer.predict(batch.inputs.clone())?;
        Ok(())
    })?;

    let flops = spec_flops(args.hidden as f64);
    let valid_flops = valid_step_flops(args.hidden as f64, valid_steps as f64);
    let products = if padless::cpu::bf16_products() {
        "bf16"
    } else {
        "f32"
    };
    // The instruction set of the kernels' products and gate loops (`PADLESS_ISA` forces it).
    let isa = padless_kernels::isa();
    let json = serde_json::json!({
        "framework": "padless",
        "products": products,
        "isa": isa.name(),
        "H": args.hidden,
        "threads": args.threads,
        "valid_fraction": valid_steps as f64 / (B * T) as f64,
        "valid_steps": valid_steps,
        "train_ms": train_ms,
        "train_ms_repeats": train_repeats,
        "infer_ms": infer_ms,
        "sequences_per_s": B as f64 * 1e3 / train_ms,
        "spec_gflop_per_s": flops / train_ms / 1e6,
        "valid_step_gflop": valid_flops / 1e9,
        "valid_step_gflop_per_s": valid_flops / train_ms / 1e6,
        "loss_first": first_loss,
        "loss_last": last_loss,
    });
    if args.json {
        return crate::output::write_json(&json);
    }
    println!(
        "padless H={} threads={} products={products} isa={isa} valid={:.2}: train {:.2} ms/step ({:.0} seq/s, {:.1} GFLOP/s of the SPEC count, {:.1} GFLOP/s on the {:.2} GFLOP of valid steps), infer {:.2} ms, loss {:.4} -> {:.4}",
        args.hidden,
        args.threads,
        valid_steps as f64 / (B * T) as f64,
        train_ms,
        B as f64 * 1e3 / train_ms,
        flops / train_ms / 1e6,
        valid_flops / train_ms / 1e6,
        valid_flops / 1e9,
        infer_ms,
        first_loss,
        last_loss
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_state_matches_numpy() {
        // The SPEC batch has 2365 valid steps.
        let valid: usize = spec_examples(None).iter().map(|e| e.inputs[0].len()).sum();
        assert_eq!(valid, 2365);
        // numpy: np.random.RandomState(1234).randint(8, 65, size=5) -> [55, 27, 46, 61, 20]
        let mut rng = NumpyRandomState::new(1234);
        let first: Vec<usize> = (0..5).map(|_| rng.randint(8, 65)).collect();
        assert_eq!(first, vec![55, 27, 46, 61, 20]);
    }

    #[test]
    fn valid_step_flops_by_hand() {
        // H=128, 2365 valid steps: encoder 2365*2*(32+128)*512 = 387,481,600; decoder
        // 2365*2*128*512 + 64*2*128*512 = 318,373,888; dense 2365*2*128*32 = 19,374,080;
        // times 3.
        assert_eq!(valid_step_flops(128.0, 2365.0), 2_175_688_704.0);
    }
}
