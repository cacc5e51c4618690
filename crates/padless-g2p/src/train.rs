//! Training a [`G2p`] model: teacher forcing with the target-masked loss, Adam, a time and
//! epoch budget, learning-rate halving on a validation plateau, and the best model on
//! validation word error rate saved atomically.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use padless::seq2seq::{AttentionKind, EncoderDecoderConfig};
use padless::train::{OptimizerConfig, WeightAverage};
use serde::{Deserialize, Serialize};

use crate::batch::{bucketed_batches, make_pairs};
use crate::cmudict::Entry;
use crate::error::{G2pError, Result};
use crate::eval::evaluate;
use crate::model::G2p;
use crate::split::Split;
use crate::vocab::{SOURCE_SPECIALS, TARGET_SPECIALS, Vocab};

/// Settings of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Embedding width.
    pub d_embedding: usize,
    /// Units per encoder direction (the decoder has twice as many).
    pub d_encoder: usize,
    /// Bidirectional encoder layers.
    pub encoder_layers: usize,
    /// Stacked LSTM decoder layers.
    #[serde(default = "one")]
    pub decoder_layers: usize,
    /// Residual LSTM layers over the attentional vectors, before the output layer
    /// ([`EncoderDecoderConfig::post_attention_layers`]).
    #[serde(default)]
    pub post_attention_layers: usize,
    /// The attention score.
    pub attention: AttentionKind,
    /// Dropout on embeddings and before the output layer.
    pub dropout: f64,
    /// Pairs per batch.
    pub batch_size: usize,
    /// At most this many epochs.
    pub max_epochs: usize,
    /// Stop after the epoch (or batch) that passes this many minutes.
    pub max_minutes: f64,
    /// Adam's initial learning rate.
    pub learning_rate: f64,
    /// Clip each parameter's gradient to this norm.
    pub clip_norm: Option<f32>,
    /// Seed of the weights, the batches and dropout.
    pub seed: u64,
    /// Validation words decoded after each epoch (the first ones of the validation split).
    pub validation_words: usize,
    /// Halve the learning rate after each run of this many epochs without a better
    /// validation score ([`Schedule::Plateau`]); stop after `4 * patience` such epochs in a
    /// row.
    pub patience: usize,
    /// How the learning rate moves over the run.
    #[serde(default)]
    pub schedule: Schedule,
    /// Label smoothing of the training loss (0: none).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Decay of an exponential moving average of the weights updated after every step
    /// ([`WeightAverage`]; none when `None`). Each epoch validates the average beside the
    /// trained weights and the better of the two competes for the checkpoint.
    #[serde(default)]
    pub weight_average: Option<f64>,
    /// Learn each pronunciation last phoneme first ([`G2p::right_to_left`]): a model whose
    /// errors differ from a left-to-right one's, for rescoring a pair (see
    /// [`crate::model::pronounce_ensemble`]). It still pronounces in reading order.
    #[serde(default)]
    pub right_to_left: bool,
}

fn one() -> usize {
    1
}

/// The learning-rate schedule of a training run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    /// Constant, halved after each `patience` epochs without a better validation score.
    #[default]
    Plateau,
    /// Falls linearly from the initial rate to 0 over the budget: before each step the rate is
    /// `initial * (1 - progress)`, where progress is the larger of the elapsed fraction of
    /// `max_minutes` and the fraction of `max_epochs` done (at least 1% of the initial rate
    /// remains). Training on a fixed time budget gains from ending at a small rate.
    Linear,
    /// The plateau rule, then over the last third of the budget a linear fall to 1% of the
    /// rate it has reached: before each step the rate is `current * min(1, 3 (1 - progress))`
    /// (at least 1% of `current`). A warmup-free "stable, then decay" schedule: most steps at
    /// a high rate, and a short annealing that ends near a minimum.
    Anneal,
}

impl Schedule {
    /// The learning rate at `progress` (0 at the start, 1 at the end of the budget), given
    /// `current`, the rate the plateau rule has reached.
    pub fn rate(self, initial: f64, current: f64, progress: f64) -> f64 {
        match self {
            Schedule::Plateau => current,
            Schedule::Linear => initial * (1.0 - progress.clamp(0.0, 1.0)).max(0.01),
            Schedule::Anneal => current * (3.0 * (1.0 - progress)).clamp(0.01, 1.0),
        }
    }
}

impl TrainConfig {
    /// A run of a few minutes on 2 cores: a small model that already pronounces unseen words
    /// plausibly.
    pub fn quick() -> Self {
        TrainConfig {
            d_embedding: 32,
            d_encoder: 64,
            encoder_layers: 1,
            decoder_layers: 1,
            post_attention_layers: 0,
            attention: AttentionKind::Dot { scaled: false },
            dropout: 0.0,
            batch_size: 64,
            max_epochs: 3,
            max_minutes: 3.0,
            learning_rate: 2e-3,
            clip_norm: Some(5.0),
            seed: 1,
            validation_words: 500,
            patience: 1,
            schedule: Schedule::Plateau,
            label_smoothing: 0.0,
            weight_average: None,
            right_to_left: false,
        }
    }

    /// The model of the README's results (up to 60 minutes on 2 cores).
    pub fn full() -> Self {
        TrainConfig {
            d_embedding: 64,
            d_encoder: 128,
            encoder_layers: 1,
            decoder_layers: 1,
            post_attention_layers: 0,
            attention: AttentionKind::Dot { scaled: false },
            dropout: 0.1,
            batch_size: 128,
            max_epochs: 40,
            max_minutes: 58.0,
            learning_rate: 2e-3,
            clip_norm: Some(5.0),
            seed: 1,
            validation_words: 2000,
            patience: 1,
            schedule: Schedule::Plateau,
            label_smoothing: 0.0,
            weight_average: None,
            right_to_left: false,
        }
    }

    /// The README's best results model: [`TrainConfig::full`] with two bidirectional encoder
    /// layers of 256 units per direction and a 512-unit decoder (3.98M parameters), dropout
    /// 0.3, label smoothing 0.1, patience 2 and a weight average (decay 0.9995).
    pub fn large() -> Self {
        TrainConfig {
            d_encoder: 256,
            encoder_layers: 2,
            dropout: 0.3,
            patience: 2,
            label_smoothing: 0.1,
            weight_average: Some(0.9995),
            ..TrainConfig::full()
        }
    }

    /// The network's config for these vocabularies.
    pub fn network(&self, letters: &Vocab, phonemes: &Vocab) -> EncoderDecoderConfig {
        EncoderDecoderConfig {
            n_source_tokens: letters.len(),
            n_target_tokens: phonemes.len(),
            d_embedding: self.d_embedding,
            d_encoder: self.d_encoder,
            encoder_layers: self.encoder_layers,
            decoder_layers: self.decoder_layers,
            post_attention_layers: self.post_attention_layers,
            attention: self.attention,
            dropout: self.dropout,
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    /// Mean masked loss per valid target step over the epoch (label-smoothed if set).
    pub train_loss: f64,
    /// Greedy WER on the validation words.
    pub validation_wer: f64,
    /// Greedy PER on the validation words.
    pub validation_per: f64,
    /// Greedy WER and PER of the weight average on the validation words, when one is kept.
    #[serde(default)]
    pub average: Option<(f64, f64)>,
    /// The learning rate of the epoch's last step.
    pub learning_rate: f64,
    /// Seconds since the start of training.
    pub seconds: f64,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Per-epoch figures.
    pub history: Vec<EpochLog>,
    /// Optimizer steps.
    pub steps: usize,
    /// Training time, validation included.
    pub seconds: f64,
    /// The best validation WER (the saved model's).
    pub best_validation_wer: f64,
    /// Scalar parameters.
    pub parameters: usize,
}

/// The alphabets of a dictionary: every character of every word, and every phoneme. Taken
/// over all splits (spellings and the phoneme inventory are not labels), so that any
/// dictionary word can be evaluated.
pub fn vocabularies(entries: &[Entry]) -> (Vocab, Vocab) {
    let letters = Vocab::new(
        &SOURCE_SPECIALS,
        entries
            .iter()
            .flat_map(|e| e.word.chars().map(String::from)),
    );
    let phonemes = Vocab::new(
        &TARGET_SPECIALS,
        entries
            .iter()
            .flat_map(|e| e.pronunciations.iter().flatten().cloned()),
    );
    (letters, phonemes)
}

/// Trains on `split.train`, validates on the first `validation_words` of `split.validation`
/// after each epoch, and saves the best model to `out`. `on_epoch` sees each epoch's figures
/// (for printing); the progress bar shows only on a terminal.
///
/// # Errors
/// An empty training split, bad settings, or a model file that cannot be written.
pub fn train(
    split: &Split,
    config: &TrainConfig,
    out: &Path,
    device: &Device,
    mut on_epoch: impl FnMut(&EpochLog),
) -> Result<TrainReport> {
    if split.train.is_empty() || split.validation.is_empty() {
        return Err(G2pError::Config(format!(
            "training needs words in the train and validation splits, found {} and {}",
            split.train.len(),
            split.validation.len()
        )));
    }
    let all: Vec<Entry> = [&split.train, &split.validation, &split.test]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let (letters, phonemes) = vocabularies(&all);
    let mut pairs = make_pairs(&split.train, &letters, &phonemes)?;
    if config.right_to_left {
        for pair in &mut pairs {
            pair.phonemes.reverse();
        }
    }
    device.seed(config.seed);
    let mut network = config.network(&letters, &phonemes).init(device)?;
    let parameters = network.n_parameters();
    let mut optimizer = OptimizerConfig::default().init(config.clip_norm);
    let mut average = match config.weight_average {
        Some(decay) => {
            Some(WeightAverage::new(&network, decay).map_err(|e| G2pError::Config(e.to_string()))?)
        }
        None => None,
    };
    let validation = &split.validation[..config.validation_words.min(split.validation.len())];
    let inference = device.clone().without_autodiff();
    let start = Instant::now();
    let budget = config.max_minutes * 60.0;
    let (mut history, mut steps) = (Vec::new(), 0);
    let (mut best, mut best_trained, mut learning_rate, mut since_best) = (
        (f64::INFINITY, f64::INFINITY),
        (f64::INFINITY, f64::INFINITY),
        config.learning_rate,
        0,
    );
    for epoch in 1..=config.max_epochs {
        let batches = bucketed_batches(
            &pairs,
            config.batch_size,
            config.seed + epoch as u64,
            device,
        );
        let bar = progress_bar(batches.len(), epoch);
        let epoch_steps = batches.len().max(1);
        let mut rate_used = learning_rate;
        let (mut loss_sum, mut loss_steps) = (0.0, 0usize);
        for (i, batch) in batches.iter().enumerate() {
            let progress = f64::max(
                start.elapsed().as_secs_f64() / budget,
                ((epoch - 1) as f64 + i as f64 / epoch_steps as f64) / config.max_epochs as f64,
            );
            rate_used = config
                .schedule
                .rate(config.learning_rate, learning_rate, progress);
            let out = network.smoothed_loss(
                batch.source.clone(),
                batch.decoder_input.clone(),
                batch.targets.clone(),
                config.label_smoothing as f32,
            )?;
            let loss = out.value.expect("mean reduction gives a value");
            let value = f64::from(loss.clone().into_scalar::<f32>());
            loss_sum += value * batch.n_target_steps as f64;
            loss_steps += batch.n_target_steps;
            let grads = GradientsParams::from_grads(loss.backward(), &network);
            network = optimizer.step(rate_used, network, grads);
            if let Some(average) = average.as_mut() {
                average.update(&network);
            }
            steps += 1;
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", loss_sum / loss_steps as f64));
            if start.elapsed().as_secs_f64() > budget {
                break;
            }
        }
        bar.finish_and_clear();
        let model = G2p {
            network: network.valid(),
            letters: letters.clone(),
            phonemes: phonemes.clone(),
            right_to_left: config.right_to_left,
        };
        let report = evaluate(&model, validation, 1, 256, &inference)?;
        let averaged = match average.as_ref() {
            Some(average) => {
                let averaged = G2p {
                    network: average.model(),
                    ..model.clone()
                };
                let report = evaluate(&averaged, validation, 1, 256, &inference)?;
                Some((averaged, (report.wer, report.per)))
            }
            None => None,
        };
        let log = EpochLog {
            epoch,
            train_loss: loss_sum / loss_steps.max(1) as f64,
            validation_wer: report.wer,
            validation_per: report.per,
            average: averaged.as_ref().map(|(_, score)| *score),
            learning_rate: rate_used,
            seconds: start.elapsed().as_secs_f64(),
        };
        on_epoch(&log);
        // Better WER, or the same WER with a better PER (WER moves in coarse steps early on).
        // The schedule follows the trained weights; the checkpoint takes the better of the
        // trained weights and their average.
        let score = (log.validation_wer, log.validation_per);
        let (model, kept, weights) = match averaged {
            Some((averaged, average_score)) if average_score < score => {
                (averaged, average_score, "average")
            }
            _ => (model, score, "trained"),
        };
        if score < best_trained {
            best_trained = score;
            since_best = 0;
        } else {
            since_best += 1;
            if since_best % config.patience.max(1) == 0 && config.schedule != Schedule::Linear {
                learning_rate *= 0.5;
            }
        }
        if kept < best {
            best = kept;
            let train_config = serde_json::to_string(config).expect("plain data");
            model.save(
                out,
                &[
                    ("train_config", train_config),
                    ("epoch", epoch.to_string()),
                    ("validation_wer", kept.0.to_string()),
                    ("validation_per", kept.1.to_string()),
                    ("weights", weights.to_string()),
                    ("train_seconds", log.seconds.to_string()),
                ],
            )?;
        }
        history.push(log);
        if start.elapsed().as_secs_f64() > budget || since_best >= 4 * config.patience.max(1) {
            break;
        }
    }
    Ok(TrainReport {
        history,
        steps,
        seconds: start.elapsed().as_secs_f64(),
        best_validation_wer: best.0,
        parameters,
    })
}

fn progress_bar(len: usize, epoch: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "epoch {epoch} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}, eta {{eta}})"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn linear_schedule_falls_to_one_percent_and_plateau_keeps_the_current_rate() {
        let rate = |progress| Schedule::Linear.rate(2e-3, 5e-4, progress);
        assert_eq!(rate(0.0), 2e-3);
        assert!((rate(0.25) - 1.5e-3).abs() < 1e-15);
        assert!((rate(0.995) - 2e-5).abs() < 1e-15);
        assert!((rate(1.5) - 2e-5).abs() < 1e-15);
        assert_eq!(Schedule::Plateau.rate(2e-3, 5e-4, 0.7), 5e-4);
    }

    #[test]
    fn anneal_keeps_the_plateau_rate_for_two_thirds_then_falls_to_one_percent_of_it() {
        let rate = |progress| Schedule::Anneal.rate(2e-3, 5e-4, progress);
        assert_eq!(rate(0.0), 5e-4);
        assert_eq!(rate(0.6), 5e-4);
        // 3 * (1 - 5/6) = 1/2 of the current rate; 3 * (1 - 0.9) = 0.3 of it.
        assert!((rate(5.0 / 6.0) - 2.5e-4).abs() < 1e-15);
        assert!((rate(0.9) - 1.5e-4).abs() < 1e-15);
        assert!((rate(0.999) - 5e-6).abs() < 1e-15);
        assert!((rate(1.2) - 5e-6).abs() < 1e-15);
    }
}
