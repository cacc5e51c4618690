//! `padless g2p` as a user runs it, on a slice of the shipped dictionary.

use std::path::PathBuf;

mod common;
use common::padless;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("padless-g2p-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn train_eval_and_pronounce_work_on_the_shipped_dictionary() {
    let dir = temp_dir("run");
    let model = dir.join("m.safetensors");
    let model = model.to_str().unwrap();
    let (ok, stdout, stderr) = padless(&[
        "g2p",
        "train",
        "--limit",
        "600",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--encoder-layers",
        "2",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--attention",
        "additive",
        "--decoder-layers",
        "2",
        "--out",
        model,
    ]);
    assert!(ok, "{stderr}");
    // What is read and trained goes to stderr, the trained model's scores to stdout.
    assert!(stderr.contains("split by word:"), "{stderr}");
    assert!(
        stderr.contains("BiLSTM 2x16 x2 encoder, LSTM 32 x2 decoder"),
        "{stderr}"
    );
    // The attention and decoder layers chosen on the command line are built, saved and
    // loaded back by `eval` and `pronounce` below.
    assert!(
        stderr.contains("Additive { d_attention: 16 } attention"),
        "{stderr}"
    );
    assert!(stderr.contains("epoch  1: loss"), "{stderr}");
    assert!(
        stdout.contains("test split:") && stdout.contains("WER"),
        "{stdout}"
    );
    assert!(stdout.contains("unseen words"), "{stdout}");
    let (ok, stdout, stderr) = padless(&[
        "g2p",
        "eval",
        "--limit",
        "600",
        "--model",
        model,
        "--split",
        "validation",
        "--beam",
        "2",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("beam 2: WER"), "{stdout}");
    // `--model` twice decodes the two models together; two copies of one model pronounce as
    // the model alone, so the figures are the same.
    let eval = |models: &[&str]| {
        let mut args = vec!["g2p", "eval", "--limit", "600", "--split", "validation"];
        for m in models {
            args.extend(["--model", m]);
        }
        let (ok, stdout, stderr) = padless(&args);
        assert!(ok, "{stderr}");
        let figures = stdout.split("greedy: ").nth(1).expect("greedy figures");
        let wer_per = figures.split(", ").take(2).collect::<Vec<_>>().join(", ");
        (stdout.clone(), wer_per)
    };
    let (_, single) = eval(&[model]);
    // `--errors` lists the wrong words: as many as the WER says, each with its output, its
    // references and what is wrong.
    let errors_path = dir.join("errors.tsv");
    let errors_file = errors_path.to_str().unwrap();
    let (ok, stdout, stderr) = padless(&[
        "g2p",
        "eval",
        "--limit",
        "600",
        "--split",
        "validation",
        "--model",
        model,
        "--errors",
        errors_file,
    ]);
    assert!(ok, "{stderr}");
    let words: f64 = stdout
        .split("Validation split: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("word count");
    let wer: f64 = single
        .trim_start_matches("WER ")
        .split('%')
        .next()
        .and_then(|w| w.parse().ok())
        .expect("WER");
    let listed = std::fs::read_to_string(&errors_path).unwrap();
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(
        rows.len(),
        (wer / 100.0 * words).round() as usize,
        "{listed}"
    );
    assert!(
        stdout.contains(&format!("wrong: {} words", rows.len())),
        "{stdout}"
    );
    for row in &rows {
        let fields: Vec<&str> = row.split('\t').collect();
        assert_eq!(fields.len(), 4, "{row}");
        assert!(fields[2].split(" | ").all(|r| r != fields[1]), "{row}");
        assert!(["stress", "phonemes"].contains(&fields[3]), "{row}");
    }
    let (stdout, together) = eval(&[model, model]);
    assert!(stdout.starts_with("ensemble of 2: "), "{stdout}");
    assert!(
        single.starts_with("WER ") && single.contains("PER "),
        "{single}"
    );
    assert_eq!(together, single);
    let (ok, stdout, stderr) = padless(&["g2p", "pronounce", "--model", model, "cat", "Zebra"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("cat\t") && lines[1].starts_with("Zebra\t"),
        "{stdout}"
    );
    // Every printed symbol is an ARPAbet phoneme.
    for symbol in lines
        .iter()
        .flat_map(|l| l.split('\t').nth(1).unwrap().split_whitespace())
    {
        assert!(
            symbol
                .trim_end_matches(['0', '1', '2'])
                .chars()
                .all(|c| c.is_ascii_uppercase()),
            "{symbol}"
        );
    }
    let (ok, _, stderr) = padless(&["g2p", "pronounce", "--strict", "--model", model, "héllo"]);
    assert!(!ok);
    assert!(
        stderr.contains("`é`") && stderr.contains("not in the model's alphabet"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn g2p_train_takes_one_or_two_kernel_threads() {
    let (ok, _, stderr) = padless(&["g2p", "train", "--threads", "3"]);
    assert!(!ok);
    assert!(
        stderr.contains("--threads") && stderr.contains("3 is not in 1..=2"),
        "{stderr}"
    );
}

#[test]
fn missing_files_and_malformed_lines_are_clear_errors() {
    let (ok, _, stderr) = padless(&[
        "g2p",
        "pronounce",
        "--model",
        "no/such/model.safetensors",
        "cat",
    ]);
    assert!(!ok);
    assert!(stderr.contains("no/such/model.safetensors"), "{stderr}");
    let dir = temp_dir("bad");
    let data = dir.join("bad.dict");
    std::fs::write(&data, "cat K AE1 T\ndog\n").unwrap();
    let data = data.to_str().unwrap();
    let (ok, _, stderr) = padless(&["g2p", "train", "--data", data, "--epochs", "1"]);
    assert!(!ok);
    assert!(
        stderr.contains("line 2") && stderr.contains("expected phonemes"),
        "{stderr}"
    );
    let (ok, _, stderr) = padless(&[
        "g2p",
        "eval",
        "--data",
        data,
        "--malformed",
        "skip",
        "--model",
        "x.safetensors",
    ]);
    assert!(!ok);
    assert!(stderr.contains("skipped 1 malformed lines"), "{stderr}");
    let (ok, _, stderr) = padless(&["g2p", "train", "--dropout", "1.5"]);
    assert!(!ok);
    assert!(
        stderr.contains("--dropout must be in [0, 1), found 1.5"),
        "{stderr}"
    );
    let (ok, _, stderr) = padless(&["g2p", "train", "--encoder-layers", "0"]);
    assert!(!ok);
    let expected = "--encoder-layers, --decoder-layers and --batch-size must be at least 1";
    assert!(
        stderr.contains(&format!("{expected}, found 0, 1 and 64")),
        "{stderr}"
    );
    let (ok, _, stderr) = padless(&["g2p", "train", "--decoder-layers", "0"]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{expected}, found 1, 0 and 64")),
        "{stderr}"
    );
    let (ok, _, stderr) = padless(&["g2p", "train", "--data", "/no/such.dict"]);
    assert!(!ok);
    assert!(stderr.contains("/no/such.dict"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn g2p_help_lists_the_subcommands() {
    let (ok, stdout, _) = padless(&["g2p", "--help"]);
    assert!(ok);
    for sub in ["train", "eval", "pronounce"] {
        assert!(stdout.contains(sub), "{stdout}");
    }
}
