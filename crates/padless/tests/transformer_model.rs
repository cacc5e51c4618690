//! The Transformer as a model: decoding one token at a time with a key/value cache equals
//! teacher forcing at every step; greedy decoding picks the teacher-forced most likely token
//! and ends rows at EOS; a row decodes the same alone and in a padded batch; a beam's
//! candidates carry their teacher-forced log-probabilities; the `Trainer` teaches it a
//! reversal task (loss and held-out accuracy), and a resumed run equals the uninterrupted one
//! bit for bit, its checkpoint loading as `AnyModel::Transformer`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use padless::prelude::*;
use padless::seq2seq::{BOS, EOS, beam_decode, beam_decode_n_best, greedy_decode, pad_decoded};
use padless::tensor_util::int_tensor_from;
use padless::train::*;
use padless::transformer::{
    DecoderState, PositionKind, Transformer, TransformerConfig, TransformerEncoded,
};

mod common;
use common::{assert_close_to_scale, ids};

/// Every training step seeds the device's one generator: tests that train run one at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SEEDED: Mutex<()> = Mutex::new(());
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pre- and post-norm models with sinusoidal or learned positions, shared embeddings or not;
/// the output bias favours EOS by `eos_bias` so that some greedy rows end early.
fn models(eos_bias: f32) -> Vec<Transformer> {
    // Seeding here must not interleave with a training test's seeding of the same generator.
    let _guard = one_at_a_time();
    let device = padless::default_device();
    let mut post = TransformerConfig::new([9, 9], 8, 2, 16, [2, 2]);
    post.share_embeddings = true;
    let mut pre = TransformerConfig::new([9, 7], 12, 3, 20, [1, 3]);
    pre.norm_first = true;
    pre.positions = PositionKind::Learned { max_len: 12 };
    pre.activation = ActivationKind::Gelu;
    [(post, 5), (pre, 6)]
        .into_iter()
        .map(|(config, seed)| {
            device.seed(seed);
            let mut model = config.init(&device).unwrap();
            let mut weights = model.weights();
            let bias = weights
                .iter_mut()
                .find(|w| w.name == "output.bias")
                .unwrap();
            bias.values[EOS as usize] += eos_bias;
            model.set_weights(&weights).unwrap();
            model
        })
        .collect()
}

/// Source rows of 1 to 6 ids in `3..9`.
fn sources() -> Vec<Vec<i64>> {
    (0..7)
        .map(|r| {
            (0..1 + (r * 3) % 6)
                .map(|t| 3 + ((r * 5 + t * 2) % 6) as i64)
                .collect()
        })
        .collect()
}

fn source_batch() -> Tensor<2, Int> {
    let sources = sources();
    let rows: Vec<&[i64]> = sources.iter().map(Vec::as_slice).collect();
    ids(&rows, 6)
}

/// The teacher-forced log-probabilities `[steps][n_target_tokens]` of one source row
/// followed by `decoder_input`.
fn forced_log_probs(model: &Transformer, source: &[i64], decoder_input: &[i64]) -> Vec<Vec<f32>> {
    let (logits, _) = model
        .forward(
            ids(&[source], source.len()),
            ids(&[decoder_input], decoder_input.len()),
        )
        .unwrap();
    let n = model.config.n_target_tokens;
    f32_vec(log_softmax(logits, 2))
        .chunks(n)
        .map(<[f32]>::to_vec)
        .collect()
}

#[test]
fn cached_steps_equal_teacher_forcing_at_every_step() {
    let device = padless::default_device();
    // Pre-padded sources: the encoder's positions count valid steps only.
    let source = int_tensor_from(
        &[0, 0, 3, 4, 5, 0, 6, 7, 8, 4, 0, 0, 0, 0, 0],
        [3, 5],
        &device,
    );
    // Row 2 has no valid source step: cross-attention gives it 0, never NaN.
    let tokens = [
        [1i64, 3, 4, 5, 6, 3],
        [1, 6, 6, 5, 4, 3],
        [1, 2, 0, 4, 3, 5],
    ];
    let flat: Vec<i64> = tokens.iter().flatten().copied().collect();
    for model in models(0.0) {
        let n = model.config.n_target_tokens;
        let n_layers = model.config.decoder_layers;
        // Id 0 fed to the decoder is a valid step in decoding; teacher forcing sees it as
        // padding, so compare row 2 only up to it.
        let (forced, _) = model
            .forward(source.clone(), int_tensor_from(&flat, [3, 6], &device))
            .unwrap();
        let forced = f32_vec(forced);
        let encoded = model.encode(source.clone()).unwrap();
        let prepared = model.prepare_decoding(encoded.clone());
        assert_eq!(prepared.cross.as_ref().map(Vec::len), Some(n_layers));
        let (mut cached, mut uncached) = (DecoderState::new(), DecoderState::new());
        for t in 0..6 {
            let previous: Vec<i64> = tokens.iter().map(|row| row[t]).collect();
            let previous = int_tensor_from(&previous, [3], &device);
            let (logits, next) = model.step(previous.clone(), &cached, &prepared).unwrap();
            let (again, next_uncached) = model.step(previous, &uncached, &encoded).unwrap();
            (cached, uncached) = (next, next_uncached);
            assert_eq!(cached.steps(), t + 1);
            assert_eq!(cached.layers.len(), n_layers);
            assert!(cached.layers.iter().all(|kv| kv.steps() == t + 1));
            let (logits, again) = (f32_vec(logits), f32_vec(again));
            assert!(logits.iter().all(|v| v.is_finite()), "step {t}");
            // The cross-attention keys projected once or for this step are the same.
            assert_close_to_scale(&again, &logits, 1e-6, &format!("step {t}: prepared"));
            for r in 0..3 {
                if r == 2 && t >= 2 {
                    continue;
                }
                assert_close_to_scale(
                    &logits[r * n..(r + 1) * n],
                    &forced[(r * 6 + t) * n..][..n],
                    1e-5,
                    &format!("row {r} step {t}"),
                );
            }
        }
        // Selected rows (of the state and the prepared result) step as those rows.
        let index = int_tensor_from(&[2, 0, 0], [3], &device);
        let (picked, _) = model
            .step(
                int_tensor_from(&[4, 3, 3], [3], &device),
                &cached.select_rows(&index),
                &prepared.select_rows(&index),
            )
            .unwrap();
        let (all, _) = model
            .step(
                int_tensor_from(&[3, 5, 4], [3], &device),
                &cached,
                &prepared,
            )
            .unwrap();
        let (picked, all) = (f32_vec(picked), f32_vec(all));
        assert_close_to_scale(&picked[..n], &all[2 * n..], 1e-6, "row 2");
        assert_close_to_scale(&picked[n..2 * n], &all[..n], 1e-6, "row 0");
        assert_close_to_scale(&picked[2 * n..], &all[..n], 1e-6, "row 0 again");
    }
}

#[test]
fn greedy_decoding_takes_the_teacher_forced_best_token_and_ends_at_eos() {
    let sources = sources();
    let max_len = 7;
    let mut ended = 0;
    let mut unended = 0;
    for model in models(1.0) {
        let decoded = greedy_decode(&model, source_batch(), max_len).unwrap();
        assert_eq!(decoded.len(), sources.len());
        for (r, tokens) in decoded.iter().enumerate() {
            assert!(tokens.len() <= max_len);
            // Outputs are output symbols: never padding, the start or the end symbol.
            assert!(tokens.iter().all(|&t| t > EOS), "row {r}: {tokens:?}");
            let input: Vec<i64> = std::iter::once(BOS).chain(tokens.iter().copied()).collect();
            let picked: Vec<i64> = forced_log_probs(&model, &sources[r], &input)
                .iter()
                .map(|step| {
                    (EOS as usize..step.len())
                        .max_by(|&x, &y| step[x].total_cmp(&step[y]))
                        .unwrap() as i64
                })
                .collect();
            let mut want = tokens.clone();
            if tokens.len() < max_len {
                want.push(EOS);
                ended += 1;
            } else {
                unended += 1;
            }
            assert_eq!(picked[..want.len()], want[..], "row {r}");
        }
        // As a padded batch: padding after each row's end, the mask its length.
        let (padded, mask) = pad_decoded(&decoded, &padless::default_device()).unwrap();
        let lengths: Vec<usize> = decoded.iter().map(Vec::len).collect();
        assert_eq!(mask.lengths(), lengths);
        let time = padded.dims()[1];
        for (row, tokens) in padless::tensor_util::i64_vec(padded)
            .chunks(time)
            .zip(&decoded)
        {
            assert_eq!(&row[..tokens.len()], &tokens[..]);
            assert!(row[tokens.len()..].iter().all(|&t| t == 0));
        }
    }
    // Both cases were seen: rows that ended at EOS and rows cut at max_len.
    assert!(ended > 0 && unended > 0, "{ended} ended, {unended} not");
}

#[test]
fn a_row_decodes_the_same_alone_and_in_a_padded_batch() {
    let sources = sources();
    for model in models(1.0) {
        let greedy = greedy_decode(&model, source_batch(), 7).unwrap();
        let beam = beam_decode(&model, source_batch(), 3, 7).unwrap();
        // Beam 1 is greedy.
        assert_eq!(beam_decode(&model, source_batch(), 1, 7).unwrap(), greedy);
        for (r, source) in sources.iter().enumerate() {
            // Alone, pre-padded by two steps.
            let mut row = vec![0, 0];
            row.extend(source);
            let alone = ids(&[&row], row.len());
            assert_eq!(
                greedy_decode(&model, alone.clone(), 7).unwrap()[0],
                greedy[r]
            );
            assert_eq!(beam_decode(&model, alone, 3, 7).unwrap()[0], beam[r]);
        }
    }
}

#[test]
fn beam_candidates_carry_their_teacher_forced_log_probabilities() {
    let sources = sources();
    let max_len = 6;
    for model in models(1.0) {
        let n_best = beam_decode_n_best(&[&model], source_batch(), 3, max_len).unwrap();
        let best = beam_decode(&model, source_batch(), 3, max_len).unwrap();
        for (r, candidates) in n_best.iter().enumerate() {
            assert!(!candidates.is_empty() && candidates.len() <= 3);
            assert_eq!(candidates[0].1, best[r]);
            assert!(candidates.windows(2).all(|w| w[0].0 >= w[1].0), "row {r}");
            for (score, tokens) in candidates {
                let input: Vec<i64> = std::iter::once(BOS).chain(tokens.iter().copied()).collect();
                let log_probs = forced_log_probs(&model, &sources[r], &input);
                let mut want: f64 = tokens
                    .iter()
                    .enumerate()
                    .map(|(t, &token)| f64::from(log_probs[t][token as usize]))
                    .sum();
                // An ended candidate also scores its end symbol.
                if tokens.len() < max_len {
                    want += f64::from(log_probs[tokens.len()][EOS as usize]);
                }
                assert!(
                    (f64::from(*score) - want).abs() < 1e-4,
                    "row {r} {tokens:?}: {score} against {want}"
                );
            }
        }
    }
}

#[test]
fn bad_steps_are_clear_errors() {
    let device = padless::default_device();
    let [post, pre] = <[Transformer; 2]>::try_from(models(0.0)).unwrap();
    let encoded: TransformerEncoded = post.encode(source_batch()).unwrap();
    let err = post
        .step(
            int_tensor_from(&[1, 1], [2], &device),
            &DecoderState::new(),
            &encoded,
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Transformer step: the encoder result must have the 2 rows of the fed tokens, found 7"
    );
    // A state or prepared result of another model's decoder layers.
    let (_, state) = post
        .step(
            int_tensor_from(&[1; 7], [7], &device),
            &DecoderState::new(),
            &encoded,
        )
        .unwrap();
    let other = pre.encode(source_batch()).unwrap();
    let err = pre
        .step(int_tensor_from(&[3; 7], [7], &device), &state, &other)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Transformer step: the decoder state must hold keys and values for each of the 3 decoder layers, found 2"
    );
    let err = pre
        .step(
            int_tensor_from(&[1; 7], [7], &device),
            &DecoderState::new(),
            &post.prepare_decoding(encoded),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Transformer step: the encoder result must hold keys and values for each of the 3 decoder layers, found 2"
    );
    // Learned positions end at max_len: a step past them is an error, not a panic.
    let (_, mut state) = pre
        .step(
            int_tensor_from(&[1; 7], [7], &device),
            &DecoderState::new(),
            &other,
        )
        .unwrap();
    state.n_steps = 12;
    let err = pre
        .step(int_tensor_from(&[3; 7], [7], &device), &state, &other)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("learned positions cover 0..12, found a row with 13 valid steps"),
        "{err}"
    );
}

/// A seeded stream of small integers.
fn stream(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed.wrapping_mul(6364136223846793005) | 1;
    move |m| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    }
}

/// Sources of 1 to 5 ids in `3..9`, each with its reverse as the target.
fn reversals(n: usize, seed: u64) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut next = stream(seed);
    (0..n)
        .map(|_| {
            let len = 1 + next(5) as usize;
            let source: Vec<i64> = (0..len).map(|_| 3 + next(6) as i64).collect();
            let target = source.iter().rev().copied().collect();
            (source, target)
        })
        .collect()
}

fn examples(pairs: &[(Vec<i64>, Vec<i64>)]) -> Vec<Example> {
    pairs
        .iter()
        .map(|(source, target)| {
            let decoder_input = std::iter::once(BOS).chain(target.iter().copied()).collect();
            let labels = target.iter().copied().chain(std::iter::once(EOS)).collect();
            Example::with_inputs(
                vec![
                    InputSeq::Tokens(source.clone()),
                    InputSeq::Tokens(decoder_input),
                ],
                TargetSeq::Labels(labels),
            )
        })
        .collect()
}

fn reversal_config(dropout: f64) -> TransformerConfig {
    let mut config = TransformerConfig::new([9, 9], 32, 4, 64, [2, 2]);
    config.dropout = dropout;
    config
}

fn compile(learning_rate: f64) -> CompileConfig {
    let loss = SequenceLoss::new(LossKind::SparseCategoricalCrossentropy { from_logits: true })
        .with_label_smoothing(0.1);
    let mut config = CompileConfig::new(loss);
    config.learning_rate = learning_rate;
    config.metrics = vec![MetricKind::TokenAccuracy];
    config
}

/// Teacher forcing with the target-masked, label-smoothed loss teaches the reversal: the
/// held-out loss falls to below a third of the untrained model's (label smoothing 0.1 over 9
/// tokens puts its floor near 0.49, the untrained model near ln 9 = 2.2), and greedy decoding
/// with the key/value cache reverses at least 80% of the held-out sources exactly.
#[test]
fn the_trainer_teaches_a_transformer_to_reverse() {
    let _guard = one_at_a_time();
    let device = training_device();
    device.seed(7);
    let model = Transformer::build(&reversal_config(0.0), &device).unwrap();
    let mut compiled = compile(3e-3);
    compiled.schedule = LrSchedule::from(Decay::Cosine { floor: 0.05 }).with_warmup(15);
    let mut trainer = Trainer::new(model, compiled, &device).unwrap();
    let train = reversals(480, 1);
    let held_out = reversals(64, 2);
    let untrained = trainer.evaluate(&examples(&held_out), 32).unwrap()["loss"];
    let mut batches = BatchOptions::new(32);
    batches.shuffle_seed = Some(1);
    let fit = FitConfig::new(14, batches);
    trainer.fit(&examples(&train), None, &fit, &mut []).unwrap();
    let trained = trainer.evaluate(&examples(&held_out), 32).unwrap()["loss"];
    assert!(
        trained < untrained / 3.0,
        "held-out loss {untrained} -> {trained}"
    );
    let model = trainer.model.valid();
    let sources: Vec<&[i64]> = held_out.iter().map(|(s, _)| s.as_slice()).collect();
    let decoded = greedy_decode(&model, ids(&sources, 5), 8).unwrap();
    let right = decoded
        .iter()
        .zip(&held_out)
        .filter(|(got, (_, want))| got == &want)
        .count();
    assert!(
        right as f64 >= 0.8 * held_out.len() as f64,
        "{right} of {} held-out rows reversed",
        held_out.len()
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("padless-transformer-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values_of(weights: &[padless::weights::NamedWeight]) -> Vec<f32> {
    weights.iter().flat_map(|w| w.values.clone()).collect()
}

/// Three epochs equal two, a save, a resume and one more, bit for bit (dropout draws from
/// the trainer's seed and the step; the schedule, optimizer state and step come back), and
/// the checkpoint rebuilds the model from the file alone as any built-in kind.
#[test]
fn a_resumed_transformer_equals_the_uninterrupted_run() {
    let _guard = one_at_a_time();
    let dir = scratch("resume");
    let device = training_device();
    let examples = examples(&reversals(64, 3));
    let mut config = reversal_config(0.2);
    (config.d_model, config.heads, config.d_ff) = (16, 2, 24);
    let compile = || {
        let mut c = compile(1e-2);
        c.schedule = LrSchedule::from(Decay::Linear { floor: 0.01 }).with_warmup(2);
        c
    };
    let fit = |trainer: &mut Trainer<Transformer>, epochs: usize| {
        let mut batches = BatchOptions::new(16);
        batches.shuffle_seed = Some(3);
        let plan = FitConfig {
            total_epochs: Some(3),
            validation_split: 0.25,
            ..FitConfig::new(epochs, batches)
        };
        trainer.fit(&examples, None, &plan, &mut []).unwrap()
    };
    let build = || {
        device.seed(4);
        Trainer::new(
            Transformer::build(&config, &device).unwrap(),
            compile(),
            &device,
        )
        .unwrap()
    };
    let mut straight = build();
    let history = fit(&mut straight, 3);
    let mut first = build();
    let mut parts = fit(&mut first, 2);
    let path = dir.join("b.safetensors");
    first.save(&path).unwrap();
    let mut resumed = Trainer::<Transformer>::resume(&path, compile(), &device).unwrap();
    assert_eq!((resumed.epoch, resumed.step), (2, first.step));
    parts.extend(fit(&mut resumed, 1));
    assert_eq!(parts, history);
    assert_eq!(
        values_of(&resumed.model.weights()),
        values_of(&straight.model.weights())
    );
    assert!(history[2]["loss"] < history[0]["loss"], "{history:?}");
    // Dropout was drawn: the same run from another seed differs.
    let mut other = {
        device.seed(4);
        let mut c = compile();
        c.seed = Some(first.seed.wrapping_add(1));
        Trainer::new(Transformer::build(&config, &device).unwrap(), c, &device).unwrap()
    };
    assert_ne!(fit(&mut other, 1)[0]["loss"], history[0]["loss"]);

    let AnyModel::Transformer(model) = padless::load(&path, &default_device()).unwrap() else {
        panic!("a Transformer checkpoint")
    };
    assert_eq!(model.config, config);
    assert_eq!(
        values_of(&Model::weights(model.as_ref())),
        values_of(&first.model.weights())
    );
    let typed = padless::load::<Transformer>(&path, &default_device()).unwrap();
    assert_eq!(typed.config, config);
    std::fs::remove_dir_all(&dir).unwrap();
}
