//! `padless train`, `evaluate` and `predict` on data files, as a user runs them.

use std::path::{Path, PathBuf};

mod common;
use common::padless;

/// A fresh directory per test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("padless-train-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sample(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/data")
        .join(path)
        .to_str()
        .unwrap()
        .to_string()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The column `name` of a CSV log, as numbers.
fn column(log: &str, name: &str) -> Vec<f64> {
    let mut lines = log.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let index = header.iter().position(|h| *h == name).unwrap();
    lines
        .map(|l| l.split(',').nth(index).unwrap().parse().unwrap())
        .collect()
}

/// A tiny tagger: letters in, `v` (vowel) or `c` (consonant) per letter out.
const TAGGER: &str = r#"{"input": {"kind": "tokens"}, "layers": [
    {"type": "embedding", "d_model": 8, "mask_zero": true},
    {"type": "gru", "units": 8, "return_sequences": true},
    {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}],
  "training": {"learning_rate": 0.02}}"#;

fn write_tagger_data(dir: &Path) -> PathBuf {
    let words = [
        "banana", "kiwi", "apple", "fig", "grape", "lemon", "mango", "pear",
    ];
    let lines: Vec<String> = words
        .iter()
        .map(|w| {
            let tags: String = w
                .chars()
                .map(|c| if "aeiou".contains(c) { 'v' } else { 'c' })
                .collect();
            format!("{w}\t{tags}\n")
        })
        .collect();
    let path = dir.join("train.tsv");
    std::fs::write(&path, lines.concat()).unwrap();
    path
}

#[test]
fn train_evaluate_and_predict_the_shipped_tagger_sample() {
    let dir = scratch("sample");
    let out = dir.join("run");
    let (ok, stdout, stderr) = padless(&[
        "train",
        "--config",
        &sample("vowels/model.json"),
        "--data",
        &sample("vowels/train.jsonl"),
        "--validation",
        &sample("vowels/valid.jsonl"),
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--out",
        s(&out),
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("bidirectional (Bidirectional)"), "{stderr}");
    assert!(stderr.contains("epoch 4/4: accuracy"), "{stderr}");
    assert!(stdout.starts_with("epochs 0 -> 4; "), "{stdout}");
    for file in [
        "best.safetensors",
        "last.safetensors",
        "log.csv",
        "vocab.json",
        "training.json",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    // 26 letters, 2 tags, each after <pad>, </s>, <unk>.
    let vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("vocab.json")).unwrap()).unwrap();
    assert_eq!(vocab["input"]["vocab"].as_array().unwrap().len(), 29);
    assert_eq!(
        vocab["target"]["vocab"],
        serde_json::json!(["<pad>", "</s>", "<unk>", "c", "v"])
    );
    let log = std::fs::read_to_string(out.join("log.csv")).unwrap();
    let val_loss = column(&log, "val_loss");
    assert_eq!(val_loss.len(), 4);

    // The best checkpoint is the epoch of the lowest val_loss; evaluated on the validation file
    // with the training batch size it reports that very loss.
    let (ok, stdout, stderr) = padless(&[
        "evaluate",
        "--checkpoint",
        s(&out.join("best.safetensors")),
        "--data",
        &sample("vowels/valid.jsonl"),
        "--batch-size",
        "32",
    ]);
    assert!(ok, "{stderr}");
    let value = |name: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let best = val_loss.iter().copied().fold(f64::INFINITY, f64::min);
    assert!((value("loss") - best).abs() < 1e-5, "{stdout} vs {best}");
    assert!(value("accuracy") > 0.95, "{stdout}");

    // The vowel rule, worked out by hand: s-t-r-e-n-g-t-h-e-n-i-n-g.
    let (ok, stdout, stderr) = padless(&[
        "predict",
        "--checkpoint",
        s(&out),
        "--input",
        "strengthening",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "cccvccccvcvcc");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_continues_the_epoch_count_exactly_as_an_uninterrupted_run() {
    let dir = scratch("resume");
    let data = write_tagger_data(&dir);
    let config = dir.join("tagger.json");
    std::fs::write(&config, TAGGER).unwrap();
    let train = |out: &Path, epochs: &str, resume: Option<&Path>| {
        let mut args = vec![
            "train",
            "--data",
            s(&data),
            "--epochs",
            epochs,
            "--batch-size",
            "3",
        ];
        args.extend(["--validation-split", "0.25", "--seed", "5", "--out", s(out)]);
        match resume {
            Some(checkpoint) => args.extend(["--resume", s(checkpoint)]),
            None => args.extend(["--config", s(&config)]),
        }
        let (ok, _, stderr) = padless(&args);
        assert!(ok, "{stderr}");
        stderr
    };
    let straight = dir.join("straight");
    train(&straight, "3", None);
    let split = dir.join("split");
    train(&split, "2", None);
    let stderr = train(&split, "1", Some(&split.join("last.safetensors")));
    assert!(stderr.contains("epoch 3/3:"), "{stderr}");
    let log = std::fs::read_to_string(split.join("log.csv")).unwrap();
    assert_eq!(column(&log, "epoch"), [1.0, 2.0, 3.0]);
    // Optimizer state, epoch (the shuffling seed) and learning rate come back: the same log.
    assert_eq!(
        log,
        std::fs::read_to_string(straight.join("log.csv")).unwrap()
    );

    let (ok, _, stderr) = padless(&["train", "--data", s(&data), "--out", s(&split)]);
    assert!(!ok && stderr.contains("--config"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_symbols_at_predict_time_map_or_fail_naming_symbol_and_line() {
    let dir = scratch("unknown");
    let data = write_tagger_data(&dir);
    let config = dir.join("tagger.json");
    std::fs::write(&config, TAGGER).unwrap();
    let out = dir.join("run");
    let (ok, _, stderr) = padless(&[
        "train",
        "--config",
        s(&config),
        "--data",
        s(&data),
        "--epochs",
        "1",
        "--out",
        s(&out),
    ]);
    assert!(ok, "{stderr}");
    let inputs = dir.join("inputs.txt");
    std::fs::write(&inputs, "pear\nplum\n").unwrap(); // 'u' is in no training word
    let (ok, _, stderr) = padless(&["predict", "--checkpoint", s(&out), "--data", s(&inputs)]);
    assert!(!ok);
    assert!(
        stderr.contains("inputs.txt:2") && stderr.contains("unknown symbol \"u\""),
        "{stderr}"
    );
    let (ok, stdout, stderr) = padless(&[
        "predict",
        "--checkpoint",
        s(&out),
        "--data",
        s(&inputs),
        "--unknown",
        "map",
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        (lines[0].len(), lines[1].len()),
        (4, 4),
        "one tag per letter: {stdout}"
    );
    let (ok, _, stderr) = padless(&["predict", "--checkpoint", s(&out), "--input", "Pear"]);
    assert!(
        !ok && stderr.contains("--input: unknown symbol \"P\""),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_files_and_malformed_lines_fail_naming_file_line_and_expectation() {
    let dir = scratch("errors");
    let config = dir.join("tagger.json");
    std::fs::write(&config, TAGGER).unwrap();
    let out = dir.join("run");
    let train_on = |name: &str, text: &str| -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let (ok, _, stderr) = padless(&[
            "train",
            "--config",
            s(&config),
            "--data",
            s(&path),
            "--out",
            s(&out),
        ]);
        assert!(!ok, "{name} should fail");
        stderr
    };
    let cases = [
        (
            "a.jsonl",
            "{\"input\": \"ab\", \"target\": \"cc\"}\n{\"input\": \"ab\"\n",
            "a.jsonl:2: expected a JSON object",
        ),
        (
            "b.jsonl",
            "{\"input\": \"ab\", \"target\": 5}\n",
            "b.jsonl:1: \"target\": expected a string",
        ),
        (
            "c.jsonl",
            "{\"target\": \"ab\"}\n",
            "c.jsonl:1: expected a field \"input\"",
        ),
        (
            "d.tsv",
            "ab\tcv\nabc\n\nab\tcv\tx\n",
            "d.tsv:2: expected input<TAB>target",
        ),
        (
            "e.csv",
            "in,out\nab,cv\n",
            "e.csv:1: expected a header naming the columns input and target",
        ),
        (
            "f.csv",
            "input,target\nab,cv\n\"ab,cv\n",
            "f.csv:3: expected a closing quote",
        ),
        (
            "g.tsv",
            "ab\tcv\nabc\tcv\n",
            "g.tsv:2: expected a target of 3 steps like the input",
        ),
        (
            "h.txt",
            "\n\n",
            "h.txt: expected at least one example, found none",
        ),
    ];
    for (name, text, message) in cases {
        let stderr = train_on(name, text);
        assert!(stderr.contains(message), "{name}: {stderr}");
    }
    let missing = dir.join("missing.tsv");
    let (ok, _, stderr) = padless(&[
        "train",
        "--config",
        s(&config),
        "--data",
        s(&missing),
        "--out",
        s(&out),
    ]);
    assert!(
        !ok && stderr.contains("reading") && stderr.contains("missing.tsv"),
        "{stderr}"
    );
    let data = write_tagger_data(&dir);
    let (ok, _, stderr) = padless(&[
        "train",
        "--config",
        s(&dir.join("none.toml")),
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    assert!(
        !ok && stderr.contains("reading") && stderr.contains("none.toml"),
        "{stderr}"
    );
    let (ok, _, stderr) = padless(&[
        "evaluate",
        "--checkpoint",
        s(&dir.join("nope.safetensors")),
        "--data",
        s(&data),
    ]);
    assert!(
        !ok && stderr.contains("nope.safetensors: no such checkpoint"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_describes_train_evaluate_and_predict() {
    let (ok, stdout, _) = padless(&["--help"]);
    assert!(ok);
    for command in ["train", "evaluate", "predict"] {
        assert!(stdout.contains(command), "{stdout}");
    }
    let (ok, stdout, _) = padless(&["train", "--help"]);
    assert!(ok);
    for flag in [
        "--config",
        "--data",
        "--validation",
        "--validation-split",
        "--epochs",
        "--batch-size",
        "--seed",
        "--out",
        "--resume",
        "--tokens",
    ] {
        assert!(stdout.contains(flag), "{flag}: {stdout}");
    }
    let (ok, stdout, _) = padless(&["predict", "--help"]);
    assert!(
        ok && stdout.contains("--input") && stdout.contains("--unknown <UNKNOWN>"),
        "{stdout}"
    );
    let (ok, _, stderr) = padless(&["predict", "--checkpoint", "x"]);
    assert!(
        !ok && stderr.contains("--data") && stderr.contains("--input"),
        "{stderr}"
    );
}
