//! The pretrained model shipped in `models/g2p.safetensors`: under 10 MB, stored in 16 bits,
//! it pronounces, and its figures on the test split are the ones the README gives.

use std::path::PathBuf;

use padless_g2p::G2p;
use padless_g2p::cmudict::{Malformed, parse};
use padless_g2p::eval::evaluate;
use padless_g2p::split::split_by_word;

fn repository() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn shipped() -> PathBuf {
    repository().join("models/g2p.safetensors")
}

#[test]
fn the_shipped_model_is_under_10_mb_in_16_bits_and_pronounces() {
    let bytes = std::fs::read(shipped()).unwrap();
    assert!(bytes.len() < 10_000_000, "{} bytes", bytes.len());
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in tensors.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F16, "{name}");
    }
    let device = padless::default_device();
    let (model, header) = G2p::load(&shipped(), &device).unwrap();
    assert!(header.contains_key("validation_wer"), "{header:?}");
    // Common words of the training split: a trained model says them as the dictionary does.
    let words: Vec<String> = ["water", "people", "time"]
        .iter()
        .map(|w| w.to_string())
        .collect();
    let said = model.pronounce(&words, 1, 8, &device).unwrap();
    assert_eq!(
        said,
        [
            vec!["W", "AO1", "T", "ER0"],
            vec!["P", "IY1", "P", "AH0", "L"],
            vec!["T", "AY1", "M"],
        ]
    );
}

/// The README row of the shipped model: the first table row naming `models/g2p.safetensors`,
/// whose first two percentages are the test WER and PER.
fn readme_figures() -> (f64, f64) {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with('|') && l.contains("`models/g2p.safetensors`"))
        .expect("a README table row naming `models/g2p.safetensors`");
    let figures: Vec<f64> = row
        .split('|')
        .filter_map(|cell| {
            let cell = cell.trim().trim_matches('*');
            cell.strip_suffix('%')?.parse().ok()
        })
        .collect();
    assert!(figures.len() >= 2, "{row}");
    (figures[0], figures[1])
}

#[test]
#[ignore = "decodes the 6,200 test words: minutes in a debug build; CI runs it in release \
            (cargo test --release -p padless-g2p --test shipped_model -- --ignored)"]
fn the_shipped_models_test_figures_are_the_readmes() {
    let text = std::fs::read_to_string(repository().join("data/cmudict/cmudict.dict")).unwrap();
    let dict = parse(&text, Malformed::Error).unwrap();
    // The split of `g2p train` and `g2p eval` (seed 1).
    let split = split_by_word(&dict.entries, 1);
    let device = padless::default_device();
    let (model, _) = G2p::load(&shipped(), &device).unwrap();
    let report = evaluate(&model, &split.test, 1, 512, &device).unwrap();
    let (wer, per) = readme_figures();
    let rounded = |rate: f64| (rate * 10_000.0).round() / 100.0;
    assert_eq!(
        (rounded(report.wer), rounded(report.per)),
        (wer, per),
        "measured WER {:.4}% PER {:.4}%",
        100.0 * report.wer,
        100.0 * report.per
    );
}
