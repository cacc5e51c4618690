//! A tiny end-to-end run: a few hundred real words split, a small model, seconds. It must learn
//! (the loss falls and it pronounces training words right) and decode, and a saved model must
//! round-trip and reject unknown characters clearly.

use padless::seq2seq::EncoderDecoderConfig;
use padless_g2p::cmudict::{Malformed, parse};
use padless_g2p::eval::evaluate;
use padless_g2p::split::split_by_word;
use padless_g2p::train::{TrainConfig, train};
use padless_g2p::{G2p, G2pError};
use std::sync::{Mutex, MutexGuard};

/// The training runs draw from the device's one random generator (seeded by the run): two
/// runs side by side interleave their draws and train different models each time. One at a
/// time, each run is the same on every test run.
fn one_run_at_a_time() -> MutexGuard<'static, ()> {
    static RUNS: Mutex<()> = Mutex::new(());
    RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tiny_split() -> padless_g2p::split::Split {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/cmudict/cmudict.dict"
    ))
    .unwrap();
    let dict = parse(&text, Malformed::Error).unwrap();
    // Short words of one to four letters: a small, learnable slice.
    let entries: Vec<_> = dict
        .entries
        .into_iter()
        .filter(|e| {
            (2..=4).contains(&e.word.len()) && e.word.chars().all(|c| c.is_ascii_lowercase())
        })
        .step_by(7)
        .take(200)
        .collect();
    let mut split = split_by_word(&entries, 3);
    // Validate on training words: this test checks learning, not generalisation.
    split.train.truncate(32);
    split.validation = split.train.clone();
    split
}

fn tiny_config() -> TrainConfig {
    let quick = TrainConfig::quick();
    TrainConfig {
        network: EncoderDecoderConfig {
            d_embedding: 16,
            d_encoder: 24,
            dropout: 0.0,
            ..quick.network.clone()
        },
        batch_size: 8,
        max_epochs: 40,
        max_minutes: 5.0,
        learning_rate: 1e-2,
        validation_words: 32,
        patience: 1000,
        ..quick
    }
}

/// The run learned its training words: the loss at least halved, and the best validation
/// WER (on training words) is under 50%.
fn assert_learned(report: &padless_g2p::train::TrainReport) {
    let first = report.history.first().unwrap();
    let last = report.history.last().unwrap();
    assert!(
        last.train_loss < 0.5 * first.train_loss,
        "loss {} -> {}",
        first.train_loss,
        last.train_loss
    );
    assert!(
        report.best_validation_wer < 0.5,
        "training-word WER {:?}",
        report
            .history
            .iter()
            .map(|h| h.validation_wer)
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_tiny_run_learns_decodes_saves_and_reloads() {
    let _run = one_run_at_a_time();
    let split = tiny_split();
    let config = tiny_config();
    let dir = std::env::temp_dir().join(format!("padless-g2p-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let device = padless::training_device();
    let report = train(&split, &config, &path, &device, |log| eprintln!("{log:?}")).unwrap();
    assert_learned(&report);
    let inference = padless::default_device();
    let (model, header) = G2p::load(&path, &inference).unwrap();
    let reloaded = evaluate(&model, &split.validation, 1, 64, &inference).unwrap();
    assert!((reloaded.wer - report.best_validation_wer).abs() < 1e-12);
    assert_eq!(header["format"], "padless-g2p-1");
    let beam = evaluate(&model, &split.validation, 3, 64, &inference).unwrap();
    assert!(
        beam.wer <= reloaded.wer + 0.05,
        "beam {} greedy {}",
        beam.wer,
        reloaded.wer
    );
    let out = model
        .pronounce(&["cat".to_string(), "Dog".to_string()], 2, 8, &inference)
        .unwrap();
    assert!(
        out.iter().all(|p| !p.is_empty() && p.len() <= 11),
        "{out:?}"
    );
    let err = model
        .pronounce(&["naïve".to_string()], 1, 8, &inference)
        .unwrap_err();
    assert!(matches!(err, G2pError::UnknownCharacters { .. }));
    let message = err.to_string();
    assert!(
        message.contains("`ï`") && message.contains("naïve"),
        "{message}"
    );
    let err = G2p::load(&dir.join("missing.safetensors"), &inference).unwrap_err();
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_weight_average_is_validated_each_epoch_and_the_better_weights_are_saved() {
    let _run = one_run_at_a_time();
    let split = tiny_split();
    let config = TrainConfig {
        weight_average: Some(0.9),
        ..tiny_config()
    };
    let dir = std::env::temp_dir().join(format!("padless-g2p-average-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let device = padless::training_device();
    let report = train(&split, &config, &path, &device, |log| eprintln!("{log:?}")).unwrap();
    // Every epoch scores both; the best of all of them is what was saved.
    let mut best = (f64::INFINITY, f64::INFINITY, "");
    for log in &report.history {
        let average = log.average.expect("the average is validated every epoch");
        for (wer, per, which) in [
            (log.validation_wer, log.validation_per, "trained"),
            (average.0, average.1, "average"),
        ] {
            if (wer, per) < (best.0, best.1) {
                best = (wer, per, which);
            }
        }
    }
    assert_eq!(report.best_validation_wer, best.0);
    let inference = padless::default_device();
    let (model, header) = G2p::load(&path, &inference).unwrap();
    assert_eq!(header["weights"], best.2);
    let reloaded = evaluate(&model, &split.validation, 1, 64, &inference).unwrap();
    assert!((reloaded.wer - best.0).abs() < 1e-12 && (reloaded.per - best.1).abs() < 1e-12);
    // The average of a model that learns also learns.
    let last = report.history.last().unwrap().average.unwrap();
    assert!(
        last.0 < 0.5,
        "average WER by epoch {:?}",
        report.history.iter().map(|h| h.average).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_large_preset_is_the_model_of_the_readme_command() {
    // `g2p train --preset full --hidden 256 --encoder-layers 2 --dropout 0.3 --patience 2
    // --label-smoothing 0.1 --average-weights 0.9995` is the README's best row; its run printed
    // "trained 3982280 parameters" (the 192-unit model of the rows above printed 2300232).
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/cmudict/cmudict.dict"
    ))
    .unwrap();
    let dict = parse(&text, Malformed::Error).unwrap();
    let (letters, phonemes) = padless_g2p::train::vocabularies(&dict.entries);
    let large = TrainConfig::large();
    let full = TrainConfig::full();
    let expected = TrainConfig {
        network: EncoderDecoderConfig {
            d_encoder: 256,
            encoder_layers: 2,
            dropout: 0.3,
            ..full.network.clone()
        },
        patience: 2,
        label_smoothing: 0.1,
        weight_average: Some(0.9995),
        ..full
    };
    assert_eq!(large, expected);
    let network = large
        .network(&letters, &phonemes)
        .init(&padless::default_device())
        .unwrap();
    assert_eq!(network.n_parameters(), 3_982_280);
}

/// Models decoded together must read the same letters and write the same phonemes; an
/// ensemble of copies of one model pronounces as the model (the mean of equal probabilities).
#[test]
fn an_ensemble_needs_shared_vocabularies_and_copies_pronounce_as_one_model() {
    use padless_g2p::eval::evaluate_ensemble;
    use padless_g2p::model::pronounce_ensemble;
    use padless_g2p::vocab::{SOURCE_SPECIALS, TARGET_SPECIALS, Vocab};
    let device = padless::default_device();
    let letters = Vocab::new(
        &SOURCE_SPECIALS,
        "abcdefghijklmnopqrstuvwxyz".chars().map(String::from),
    );
    let phonemes = |symbols: &str| {
        Vocab::new(
            &TARGET_SPECIALS,
            symbols.split_whitespace().map(String::from),
        )
    };
    let make = |phonemes: Vocab| {
        let config = padless::seq2seq::EncoderDecoderConfig {
            n_source_tokens: letters.len(),
            n_target_tokens: phonemes.len(),
            ..tiny_config().network(&letters, &phonemes)
        };
        G2p {
            network: padless_g2p::Network::from(config.init(&device).unwrap()),
            letters: letters.clone(),
            phonemes,
            right_to_left: false,
        }
    };
    let model = make(phonemes("AE1 B K T D"));
    let words: Vec<String> = ["cat", "dog", "abba", "a"].map(String::from).to_vec();
    let alone = model.pronounce(&words, 1, 3, &device).unwrap();
    let copies = [model.clone(), model.clone()];
    assert_eq!(
        pronounce_ensemble(&copies, &words, 1, 3, &device).unwrap(),
        alone
    );
    let split = tiny_split();
    let one = evaluate(&model, &split.validation, 1, 16, &device).unwrap();
    let two = evaluate_ensemble(&copies, &split.validation, 1, 16, &device).unwrap();
    assert_eq!((one.wer, one.per), (two.wer, two.per));
    // Same size, other symbols: a clear error naming both.
    let other = make(phonemes("AE1 B K T Z"));
    let err = pronounce_ensemble(&[model.clone(), other], &words, 1, 3, &device).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("share their phonemes")
            && message.contains("model 2")
            && message.contains(" Z"),
        "{message}"
    );
    let err = pronounce_ensemble(&[], &words, 1, 3, &device).unwrap_err();
    assert!(err.to_string().contains("at least one model"), "{err}");
    // A saved direction that is neither of the two is a clear error naming both.
    let dir = std::env::temp_dir().join(format!("padless-g2p-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sideways.safetensors");
    model
        .save(&path, &[("direction", "sideways".to_string())])
        .unwrap();
    let err = G2p::load(&path, &device).unwrap_err().to_string();
    assert!(
        err.contains("`sideways`")
            && err.contains("left-to-right")
            && err.contains("right-to-left"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A right-to-left run learns too and pronounces in reading order (its network's raw output
/// reversed); with a left-to-right model, each word gets the candidate of the two that scores
/// higher summed over both models (each scoring in its own direction), in any batch.
#[test]
fn a_right_to_left_model_pronounces_in_reading_order_and_rescores_with_a_left_to_right_one() {
    use padless::seq2seq::{beam_decode_n_best, greedy_decode, sequence_log_probs};
    use padless_g2p::eval::evaluate_ensemble;
    use padless_g2p::model::{max_phonemes, pronounce_ensemble};
    let _run = one_run_at_a_time();
    let split = tiny_split();
    let dir = std::env::temp_dir().join(format!("padless-g2p-r2l-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (l2r_path, r2l_path) = (dir.join("l2r.safetensors"), dir.join("r2l.safetensors"));
    let device = padless::training_device();
    let config = TrainConfig {
        max_epochs: 25,
        ..tiny_config()
    };
    train(&split, &config, &l2r_path, &device, |_| {}).unwrap();
    let r2l_config = TrainConfig {
        right_to_left: true,
        ..config
    };
    let report = train(&split, &r2l_config, &r2l_path, &device, |_| {}).unwrap();
    // Validation compares reading-order output with the references: it learned.
    assert!(report.best_validation_wer < 0.5, "{report:?}");
    let inference = padless::default_device();
    let (r2l, header) = G2p::load(&r2l_path, &inference).unwrap();
    assert!(r2l.right_to_left);
    assert_eq!(header["direction"], "right-to-left");
    let (l2r, header) = G2p::load(&l2r_path, &inference).unwrap();
    assert!(!l2r.right_to_left);
    assert_eq!(header["direction"], "left-to-right");

    // Training words and unseen ones (where the directions disagree more).
    let words: Vec<String> = split
        .validation
        .iter()
        .chain(&split.test)
        .map(|e| e.word.clone())
        .collect();
    let r2l_words = r2l.pronounce(&words, 1, 64, &inference).unwrap();
    let longest = words.iter().map(|w| w.len()).max().unwrap();
    let raw = greedy_decode(
        &r2l.network,
        r2l.encode_words(&words, &inference).unwrap(),
        max_phonemes(longest),
    )
    .unwrap();
    for (said, raw) in r2l_words.iter().zip(&raw) {
        let reversed: Vec<String> = raw
            .iter()
            .rev()
            .map(|&id| r2l.phonemes.symbol(id).unwrap().to_string())
            .collect();
        assert_eq!(said, &reversed);
    }

    let l2r_words = l2r.pronounce(&words, 1, 64, &inference).unwrap();
    let pair = [l2r.clone(), r2l.clone()];
    let picks = pronounce_ensemble(&pair, &words, 1, 64, &inference).unwrap();
    // Summed log-probability of a reading-order pronunciation of `word` over both models.
    let score = |word: &String, phonemes: &[String]| -> f64 {
        let ids: Vec<i64> = phonemes
            .iter()
            .map(|p| l2r.phonemes.id(p).unwrap())
            .collect();
        let backwards: Vec<i64> = ids.iter().rev().copied().collect();
        [(&l2r, ids), (&r2l, backwards)]
            .into_iter()
            .map(|(model, ids)| {
                let source = model
                    .encode_words(std::slice::from_ref(word), &inference)
                    .unwrap();
                f64::from(
                    sequence_log_probs(model.network.lstm().unwrap(), source, &[ids]).unwrap()[0],
                )
            })
            .sum()
    };
    let mut differ = 0;
    for (i, word) in words.iter().enumerate() {
        let (pick, a, b) = (&picks[i], &l2r_words[i], &r2l_words[i]);
        assert!(
            pick == a || pick == b,
            "{word}: {pick:?} is neither {a:?} nor {b:?}"
        );
        let other = if pick == a { b } else { a };
        assert!(
            score(word, pick) >= score(word, other) - 1e-4,
            "{word}: picked {pick:?} over {other:?}"
        );
        differ += usize::from(a != b);
    }
    assert!(
        differ > 0,
        "the two directions agree on every word: nothing was rescored"
    );
    // Batches of one pronounce the same; evaluation reads the same picks.
    assert_eq!(
        pronounce_ensemble(&pair, &words, 1, 1, &inference).unwrap(),
        picks
    );
    let both = evaluate_ensemble(&pair, &split.validation, 1, 64, &inference).unwrap();
    assert!(both.wer < 0.5, "{both:?}");

    // With beams each direction proposes its 3 best (a one-model beam knows its ended
    // candidates' scores, the rest are scored by teacher forcing): the pick is the candidate
    // of the union with the highest summed score, the same in batches of one.
    let width = 3;
    let beam_picks = pronounce_ensemble(&pair, &words, width, 64, &inference).unwrap();
    assert_eq!(
        pronounce_ensemble(&pair, &words, width, 1, &inference).unwrap(),
        beam_picks
    );
    let to_symbols = |ids: &[i64]| -> Vec<String> {
        ids.iter()
            .map(|&id| l2r.phonemes.symbol(id).unwrap().to_string())
            .collect()
    };
    let mut contested = 0;
    for (word, pick) in words.iter().zip(&beam_picks) {
        let mut union: Vec<Vec<String>> = Vec::new();
        for model in [&l2r, &r2l] {
            let source = model
                .encode_words(std::slice::from_ref(word), &inference)
                .unwrap();
            let n_best =
                beam_decode_n_best(&[&model.network], source, width, max_phonemes(word.len()))
                    .unwrap();
            for (_, mut ids) in n_best.into_iter().next().unwrap() {
                if model.right_to_left {
                    ids.reverse();
                }
                let symbols = to_symbols(&ids);
                if !union.contains(&symbols) {
                    union.push(symbols);
                }
            }
        }
        assert!(union.contains(pick), "{word}: {pick:?} not among {union:?}");
        contested += usize::from(union.len() > 1);
        for other in &union {
            assert!(
                score(word, pick) >= score(word, other) - 1e-4,
                "{word}: picked {pick:?} over {other:?}"
            );
        }
    }
    assert!(contested > 0, "every word had one candidate");
    std::fs::remove_dir_all(&dir).ok();
}

/// A run stopped after 2 epochs and resumed from its last checkpoint for 2 more gives the
/// figures, the best model and the CSV log of 4 uninterrupted epochs (dropout and the weight
/// average included); the last checkpoint loads as a model; a checkpoint of other
/// vocabularies is refused.
#[test]
fn a_resumed_run_continues_exactly_as_an_uninterrupted_one() {
    use padless_g2p::train::{RunFiles, train_run};
    let _run = one_run_at_a_time();
    let split = tiny_split();
    let dir = std::env::temp_dir().join(format!("padless-g2p-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |epochs| TrainConfig {
        network: EncoderDecoderConfig {
            dropout: 0.1,
            ..tiny_config().network
        },
        max_epochs: epochs,
        weight_average: Some(0.9),
        patience: 1,
        ..tiny_config()
    };
    let device = padless::training_device();
    let straight_files = RunFiles::beside(dir.join("straight.safetensors"));
    let straight = train_run(&split, &config(4), &straight_files, &device, |_| {}).unwrap();
    let files = RunFiles::beside(dir.join("parts.safetensors"));
    let first = train_run(&split, &config(2), &files, &device, |_| {}).unwrap();
    let resumed_files = RunFiles {
        resume: files.last.clone(),
        ..files.clone()
    };
    let rest = train_run(&split, &config(4), &resumed_files, &device, |_| {}).unwrap();
    let figures = |logs: &[padless_g2p::train::EpochLog]| -> Vec<_> {
        logs.iter()
            .map(|l| {
                (
                    l.epoch,
                    l.train_loss,
                    l.validation_wer,
                    l.validation_per,
                    l.average,
                    l.learning_rate,
                )
            })
            .collect()
    };
    let parts: Vec<_> = figures(&first.history)
        .into_iter()
        .chain(figures(&rest.history))
        .collect();
    assert_eq!(parts, figures(&straight.history));
    assert_eq!(rest.steps, straight.steps);
    assert_eq!(rest.best_validation_wer, straight.best_validation_wer);
    let inference = padless::default_device();
    let weights = |path: &std::path::Path| G2p::load(path, &inference).unwrap().0.network.weights();
    assert_eq!(weights(&files.best), weights(&straight_files.best));
    // The logs agree but for the `seconds` column, the runs' clocks.
    let log = |files: &RunFiles| -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(files.log.as_ref().unwrap()).unwrap();
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
        let seconds = rows[0].iter().position(|&c| c == "seconds").unwrap();
        rows.iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .filter(|&(i, _)| i != seconds)
                    .map(|(_, c)| c.to_string())
                    .collect()
            })
            .collect()
    };
    assert_eq!(log(&files), log(&straight_files));
    assert_eq!(log(&files).len(), 5, "a header and 4 epochs");
    let (last, header) = G2p::load(files.last.as_ref().unwrap(), &inference).unwrap();
    assert!(!last.right_to_left);
    assert_eq!(header["format"], padless::model::CHECKPOINT_FORMAT);

    // Another direction's run cannot continue this checkpoint.
    let other = TrainConfig {
        right_to_left: true,
        ..config(4)
    };
    let err = train_run(&split, &other, &resumed_files, &device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("its direction is left-to-right, this run's is right-to-left"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The Transformer family trains through the same run: it learns the training words, its
/// saved model reloads with the same validation figures (also from 16-bit weights, within
/// their rounding), decodes greedy and by beam, and joins an LSTM in one ensemble.
#[test]
fn a_tiny_transformer_run_learns_saves_in_16_bits_and_reloads() {
    let _run = one_run_at_a_time();
    let split = tiny_split();
    let quick = TrainConfig::transformer_quick();
    let config = TrainConfig {
        transformer: Some(padless::transformer::TransformerConfig::new(
            [0, 0],
            32,
            2,
            64,
            [1, 1],
        )),
        batch_size: 8,
        max_epochs: 40,
        max_minutes: 5.0,
        learning_rate: 3e-3,
        schedule: padless::train::LrSchedule::constant().with_warmup(20),
        validation_words: 32,
        patience: 1000,
        ..quick
    };
    assert_eq!(config.family(), "transformer");
    let dir = std::env::temp_dir().join(format!("padless-g2p-tf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let device = padless::training_device();
    let report = train(&split, &config, &path, &device, |log| eprintln!("{log:?}")).unwrap();
    assert_learned(&report);
    let inference = padless::default_device();
    let (model, header) = G2p::load(&path, &inference).unwrap();
    assert_eq!(header["family"], "transformer");
    assert_eq!(model.network.family(), "transformer");
    let reloaded = evaluate(&model, &split.validation, 1, 64, &inference).unwrap();
    assert!((reloaded.wer - report.best_validation_wer).abs() < 1e-12);
    let beam = evaluate(&model, &split.validation, 3, 64, &inference).unwrap();
    // Beam search finds outputs the model scores higher, which need not be the references:
    // on 32 words it may differ from greedy decoding in a few.
    assert!(
        beam.wer <= reloaded.wer + 0.1,
        "beam {} greedy {}",
        beam.wer,
        reloaded.wer
    );

    // 16-bit weights: half the file, every weight within f16's rounding of the f32 one.
    let half = dir.join("half.safetensors");
    model
        .save_as(&half, &[], padless::weights::StoredFloat::F16)
        .unwrap();
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64;
    assert!(
        size(&half) < 0.55 * size(&path),
        "{} vs {}",
        size(&half),
        size(&path)
    );
    let (narrow, _) = G2p::load(&half, &inference).unwrap();
    for (wide, narrow) in model.network.weights().iter().zip(narrow.network.weights()) {
        assert_eq!(wide.name, narrow.name);
        for (&a, &b) in wide.values.iter().zip(&narrow.values) {
            // f16 keeps 11 significant bits: relative error at most 2^-11 (subnormals, below
            // 2^-14, to within 2^-25 absolute).
            assert!(
                (a - b).abs() <= a.abs() * 2f32.powi(-11) + 2f32.powi(-25),
                "{}: {a} vs {b}",
                wide.name
            );
        }
    }
    let narrow_report = evaluate(&narrow, &split.validation, 1, 64, &inference).unwrap();
    assert!(
        (narrow_report.wer - reloaded.wer).abs() <= 2.0 / 32.0,
        "16-bit WER {} vs {}",
        narrow_report.wer,
        reloaded.wer
    );

    // An LSTM and a Transformer decode together: the ensemble's one model of each family.
    let lstm_path = dir.join("lstm.safetensors");
    let lstm_config = TrainConfig {
        max_epochs: 2,
        ..tiny_config()
    };
    train(&split, &lstm_config, &lstm_path, &device, |_| {}).unwrap();
    let (lstm, _) = G2p::load(&lstm_path, &inference).unwrap();
    let both = padless_g2p::model::pronounce_ensemble(
        &[lstm, model],
        &["cat".to_string(), "dog".to_string()],
        1,
        8,
        &inference,
    )
    .unwrap();
    assert!(
        both.iter().all(|p| !p.is_empty() && p.len() <= 9),
        "{both:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
