//! The output convention of every command: results on stdout, progress and logs on stderr,
//! `--quiet` leaving only results and errors; the `--json` documents of `docs/cli.md`; an
//! error's causes printed once; `g2p pronounce` reading stdin; `plot`'s SVG.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::padless;

/// A fresh directory per test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("padless-output-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `padless ARGS` with `input` on stdin; returns the exit code, stdout and stderr.
fn padless_with_stdin(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_padless"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("padless runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    // Written from a thread: a large input would otherwise fill the pipe while padless waits
    // for us to read its stdout.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `padless --quiet ARGS` and checks that it succeeds with nothing on stderr; returns
/// stdout.
fn quiet(args: &[&str]) -> String {
    let mut all = vec!["--quiet"];
    all.extend(args);
    let (ok, stdout, stderr) = padless(&all);
    assert!(ok, "{args:?}: {stderr}");
    assert_eq!(stderr, "", "{args:?} --quiet printed on stderr");
    stdout
}

fn json(text: &str) -> serde_json::Value {
    assert_eq!(text.lines().count(), 1, "one line of JSON: {text}");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The keys of a JSON object, sorted.
fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// A tiny tagger: letters in, `v` (vowel) or `c` (consonant) per letter out.
const TAGGER: &str = r#"{"input": {"kind": "tokens"}, "layers": [
    {"type": "embedding", "d_model": 8, "mask_zero": true},
    {"type": "gru", "units": 8, "return_sequences": true},
    {"type": "time_distributed_dense", "units": "vocab", "activation": "softmax"}],
  "training": {"learning_rate": 0.02}}"#;

const WORDS: [&str; 8] = [
    "banana", "kiwi", "apple", "fig", "grape", "lemon", "mango", "pear",
];

fn tags(word: &str) -> String {
    word.chars()
        .map(|c| if "aeiou".contains(c) { 'v' } else { 'c' })
        .collect()
}

#[test]
fn train_evaluate_and_predict_put_results_on_stdout_and_the_rest_on_stderr() {
    let dir = scratch("train");
    let config = dir.join("tagger.json");
    std::fs::write(&config, TAGGER).unwrap();
    let data = dir.join("train.tsv");
    let lines: Vec<String> = WORDS
        .iter()
        .map(|w| format!("{w}\t{}\n", tags(w)))
        .collect();
    std::fs::write(&data, lines.concat()).unwrap();
    let out = dir.join("run");
    let base = ["train", "--data", s(&data), "--out", s(&out), "--seed", "3"];
    let train = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };

    let args = train(&["--config", s(&config), "--epochs", "2"]);
    let (ok, stdout, stderr) = padless(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{stderr}");
    // The result: one line naming what was written.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let plot = out.join("log.svg");
    assert!(
        stdout.starts_with("epochs 0 -> 2; best checkpoint by loss: ")
            && stdout
                .trim_end()
                .ends_with(&format!("plot: {}", plot.display())),
        "{stdout}"
    );
    // Progress and logs: the model's summary, what is trained, each epoch.
    assert!(
        stderr.contains("gru (Gru)") && stderr.contains("training on 8 sequences"),
        "{stderr}"
    );
    assert!(stderr.contains("epoch 2/2: accuracy"), "{stderr}");
    // The plot of the log, with the log's columns as series.
    let svg = std::fs::read_to_string(&plot).unwrap();
    let texts = svg_texts(&svg);
    for name in ["loss", "accuracy", "sequence_accuracy", "lr"] {
        assert!(texts.iter().any(|t| t == name), "{name}: {texts:?}");
    }
    // --quiet, resuming for one more epoch: the result line alone.
    let last = out.join("last.safetensors");
    let args = train(&["--resume", s(&last), "--epochs", "1"]);
    let stdout = quiet(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stdout.starts_with("epochs 2 -> 3; "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    // evaluate: text and JSON agree.
    let best = out.join("best.safetensors");
    let evaluate = ["evaluate", "--checkpoint", s(&best), "--data", s(&data)];
    let (ok, text, stderr) = padless(&evaluate);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("8 sequences of"), "{stderr}");
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let mut args = evaluate.to_vec();
    args.push("--json");
    let report = json(&quiet(&args));
    assert_eq!(
        keys(&report),
        ["checkpoint", "data", "loss", "metrics", "sequences"]
    );
    assert_eq!(report["checkpoint"], s(&best));
    assert_eq!(report["data"], s(&data));
    assert_eq!(report["sequences"], 8);
    assert!((report["loss"].as_f64().unwrap() - value("loss")).abs() < 1e-6);
    assert_eq!(keys(&report["metrics"]), ["accuracy", "sequence_accuracy"]);
    for name in ["accuracy", "sequence_accuracy"] {
        let from_json = report["metrics"][name].as_f64().unwrap();
        assert!((from_json - value(name)).abs() < 1e-6, "{name}");
    }

    // predict: one output per input in text; the same outputs, with their lines and inputs,
    // in JSON.
    let inputs = dir.join("inputs.txt");
    std::fs::write(&inputs, "kiwi\npear\nfig\n").unwrap();
    let predict = ["predict", "--checkpoint", s(&out), "--data", s(&inputs)];
    let text = quiet(&predict);
    let outputs: Vec<&str> = text.lines().collect();
    assert_eq!(outputs.len(), 3, "{text}");
    let mut args = predict.to_vec();
    args.push("--json");
    let document = json(&quiet(&args));
    assert_eq!(keys(&document), ["checkpoint", "predictions"]);
    assert_eq!(document["checkpoint"], s(&best));
    let predictions = document["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    for (i, (prediction, input)) in predictions.iter().zip(["kiwi", "pear", "fig"]).enumerate() {
        assert_eq!(keys(prediction), ["input", "line", "output"]);
        assert_eq!(prediction["line"], i + 1);
        assert_eq!(prediction["input"], input);
        assert_eq!(prediction["output"], outputs[i]);
        // A tagger gives one tag per letter.
        assert_eq!(outputs[i].len(), input.len(), "{text}");
    }
    let document = json(&quiet(&[
        "predict",
        "--checkpoint",
        s(&out),
        "--input",
        "pear",
        "--json",
    ]));
    assert_eq!(keys(&document["predictions"][0]), ["input", "output"]);
    assert_eq!(document["predictions"][0]["output"], outputs[1]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The text of every `<text>` element of an SVG, which must be well-formed XML with an `svg`
/// root.
fn svg_texts(svg: &str) -> Vec<String> {
    let document = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    assert_eq!(document.root_element().tag_name().name(), "svg");
    document
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn summary_bench_and_the_masking_demo_print_results_on_stdout() {
    let dir = scratch("summary");
    let config = dir.join("model.json");
    std::fs::write(
        &config,
        r#"{"input": {"kind": "sequence", "features": 3}, "layers": [
            {"type": "masking", "mask_value": 0.0},
            {"type": "lstm", "units": 8}]}"#,
    )
    .unwrap();
    let stdout = quiet(&["summary", s(&config)]);
    assert!(stdout.contains("Total params: 384"), "{stdout}");

    let bench = ["bench", "--hidden", "8", "--steps", "1", "--threads", "1"];
    let (ok, stdout, stderr) = padless(&bench);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("timing training steps at H=8"), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("padless H=8 threads=1 products=f32 isa=")
            && stdout.contains(" valid=0.58: train "),
        "{stdout}"
    );
    let mut args = bench.to_vec();
    args.push("--json");
    let figures = json(&quiet(&args));
    assert_eq!(
        keys(&figures),
        [
            "H",
            "framework",
            "infer_ms",
            "isa",
            "loss_first",
            "loss_last",
            "products",
            "sequences_per_s",
            "spec_gflop_per_s",
            "threads",
            "train_ms",
            "train_ms_repeats",
            "valid_fraction",
            "valid_step_gflop",
            "valid_step_gflop_per_s",
            "valid_steps",
        ]
    );
    assert_eq!(figures["framework"], "padless");
    assert_eq!(figures["H"], 8);
    assert_eq!(figures["threads"], 1);
    assert_eq!(figures["valid_steps"], 2365);
    assert_eq!(figures["train_ms_repeats"].as_array().unwrap().len(), 3);
    // Valid-step FLOPs at H = 8 by hand (V = 32, 2365 valid steps, 64 rows): encoder
    // 2365 * 2 * 40 * 32, decoder 2365 * 2 * 8 * 32 + 64 * 2 * 8 * 32, dense 2365 * 2 * 8 * 32;
    // times 3.
    let flops = 3.0 * (6_054_400.0 + 1_210_880.0 + 32_768.0 + 1_210_880.0);
    assert!((figures["valid_step_gflop"].as_f64().unwrap() - flops / 1e9).abs() < 1e-12);
    let (first, last) = (
        figures["loss_first"].as_f64().unwrap(),
        figures["loss_last"].as_f64().unwrap(),
    );
    assert!(
        first.is_finite() && last.is_finite() && last < first,
        "{figures}"
    );

    let stdout = quiet(&["masking-demo", "--epochs", "1"]);
    assert!(stdout.contains("masked loss (padless"), "{stdout}");
    assert!(stdout.contains("unmasked loss"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_explains_the_demo_and_bf16_once() {
    let (ok, top, _) = padless(&["--help"]);
    assert!(ok);
    assert!(top.contains("masking-demo"), "{top}");
    // The long text of --bf16 is on the top-level page only.
    assert!(top.contains("AVX512-BF16 (AMD Zen 4 or later)"), "{top}");
    for page in [
        &["train", "--help"][..],
        &["g2p", "train", "--help"],
        &["g2p", "pronounce", "--help"],
        &["masking-demo", "--help"],
    ] {
        let (ok, help, _) = padless(page);
        assert!(ok, "{page:?}");
        let bf16 = help
            .split("--bf16")
            .nth(1)
            .unwrap_or_else(|| panic!("{page:?}: {help}"));
        assert!(!bf16.contains("Zen 4"), "{page:?}: {help}");
        assert!(!help.contains("seed question"), "{page:?}: {help}");
    }
    let (ok, help, _) = padless(&["masking-demo", "--help"]);
    assert!(ok);
    assert!(
        help.contains("encoder drops the mask") && help.contains("RepeatVector"),
        "{help}"
    );
    // The old name still runs it, as a hidden alias.
    let (ok, help, _) = padless(&["demo", "--help"]);
    assert!(ok && help.contains("Usage: padless masking-demo"), "{help}");
}

#[test]
fn a_missing_file_is_one_error_with_each_cause_once() {
    let dir = scratch("missing");
    let model = dir.join("no-model.safetensors");
    for command in ["pronounce", "eval"] {
        let (ok, stdout, stderr) = padless(
            &["g2p", command, "--model", s(&model), "cat"][..if command == "eval" { 4 } else { 5 }],
        );
        assert!(!ok);
        assert_eq!(stdout, "");
        assert_eq!(
            stderr,
            format!(
                "padless: loading a model: {}: No such file or directory (os error 2)\n",
                model.display()
            ),
            "g2p {command}"
        );
    }
    let (ok, _, stderr) = padless(&["plot", s(&dir.join("no-log.csv"))]);
    assert!(!ok);
    assert_eq!(
        stderr,
        format!(
            "padless: reading {}: No such file or directory (os error 2)\n",
            dir.join("no-log.csv").display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plot_draws_a_log_as_an_svg_with_its_series_named() {
    let dir = scratch("plot");
    let log = dir.join("log.csv");
    // A blank cell (epoch 2 of val_loss) breaks a line; `note` is not numeric and is left out.
    std::fs::write(
        &log,
        "epoch,loss,val_loss,accuracy,val_wer,lr,note\n\
         1,1.5,1.6,0.4,0.7,0.01,a\n\
         2,1.0,,0.6,0.5,0.01,b\n\
         3,0.7,0.9,0.7,0.4,0.005,c\n",
    )
    .unwrap();
    let out = dir.join("curves.svg");
    let stdout = quiet(&["plot", s(&log), "--out", s(&out)]);
    assert_eq!(stdout, format!("{}\n", out.display()));
    let texts = svg_texts(&std::fs::read_to_string(&out).unwrap());
    for text in [
        "log.csv",
        "losses",
        "rates and accuracies",
        "other",
        "loss",
        "val_loss",
        "accuracy",
        "val_wer",
        "lr",
        "epoch",
    ] {
        assert!(texts.iter().any(|t| t == text), "{text}: {texts:?}");
    }
    assert!(!texts.iter().any(|t| t == "note"), "{texts:?}");
    // Without --out, beside the log.
    let stdout = quiet(&["plot", s(&log)]);
    assert_eq!(stdout, format!("{}\n", dir.join("log.svg").display()));
    assert!(dir.join("log.svg").is_file());
    // A log without an epoch column.
    std::fs::write(&log, "step,loss\n1,0.5\n").unwrap();
    let (ok, _, stderr) = padless(&["plot", s(&log)]);
    assert!(!ok);
    assert_eq!(
        stderr,
        format!(
            "padless: reading {}: expected a column named `epoch`, found columns [\"step\", \"loss\"]\n",
            log.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn g2p_commands_follow_the_convention_and_pronounce_reads_stdin() {
    let dir = scratch("g2p");
    let model = dir.join("m.safetensors");
    let stdout = quiet(&[
        "g2p",
        "train",
        "--limit",
        "400",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--out",
        s(&model),
    ]);
    assert!(
        stdout.contains("trained ") && stdout.contains("test split: "),
        "{stdout}"
    );
    assert!(
        !stdout.contains("epoch  1"),
        "progress is on stderr: {stdout}"
    );

    // eval: the JSON report has the text report's figures.
    let eval = [
        "g2p",
        "eval",
        "--limit",
        "400",
        "--split",
        "validation",
        "--model",
        s(&model),
    ];
    let text = quiet(&eval);
    let mut args = eval.to_vec();
    args.push("--json");
    let report = json(&quiet(&args));
    assert_eq!(
        keys(&report),
        [
            "beam",
            "models",
            "per",
            "per_without_stress",
            "split",
            "stress_only_errors",
            "wer",
            "wer_without_stress",
            "words",
            "words_per_second",
            "wrong_words",
        ]
    );
    assert_eq!(report["split"], "validation");
    assert_eq!(report["beam"], 1);
    let models = report["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(
        keys(&models[0]),
        ["direction", "epochs", "parameters", "path"]
    );
    assert_eq!(models[0]["path"], s(&model));
    assert_eq!(models[0]["direction"], "left-to-right");
    assert_eq!(models[0]["epochs"], 1);
    let words = report["words"].as_u64().unwrap();
    let (wer, per) = (
        report["wer"].as_f64().unwrap(),
        report["per"].as_f64().unwrap(),
    );
    assert!(
        text.contains(&format!(
            "Validation split: {words} words, greedy: WER {:.2}%, PER {:.2}%",
            100.0 * wer,
            100.0 * per
        )),
        "{text} against {report}"
    );
    let wrong = report["wrong_words"].as_u64().unwrap();
    assert_eq!(wrong, (wer * words as f64).round() as u64);
    assert!(
        text.contains(&format!(
            "wrong: {wrong} words, {} of them",
            report["stress_only_errors"]
        )),
        "{text}"
    );

    // pronounce from stdin: every pronounceable word printed in order, the others named on
    // stderr.
    let pronounce = ["g2p", "pronounce", "--model", s(&model), "--beam", "1"];
    let (code, stdout, stderr) = padless_with_stdin(&pronounce, "cat\nx1y dog\n\n  emu  \n");
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    // (A model trained this little may give a word no phonemes at all.)
    for (line, word) in lines.iter().zip(["cat", "dog", "emu"]) {
        assert_eq!(line.split_once('\t').unwrap().0, word, "{stdout}");
    }
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("padless: warning: cannot pronounce `x1y`: `1` is not in"),
        "{stderr}"
    );
    // The same words given as arguments give the same pronunciations.
    let mut args = pronounce.to_vec();
    args.extend(["cat", "dog", "emu"]);
    assert_eq!(quiet(&args), stdout);
    // --quiet keeps the warning: the word is missing from the results.
    let mut args = vec!["--quiet"];
    args.extend(pronounce);
    let (code, _, stderr) = padless_with_stdin(&args, "cat x1y\n");
    assert_eq!(code, 0);
    assert!(stderr.contains("`x1y`"), "{stderr}");
    // An empty word given as an argument.
    let mut args = pronounce.to_vec();
    args.extend(["cat", ""]);
    let (ok, stdout, stderr) = padless(&args);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("cat\t") && stdout.lines().count() == 1,
        "{stdout}"
    );
    assert!(stderr.contains("an empty word"), "{stderr}");
    // --strict: the words before the first unpronounceable one, then an error, exit status 1.
    let mut args = pronounce.to_vec();
    args.push("--strict");
    let (code, stdout, stderr) = padless_with_stdin(&args, "cat\nx1y dog\n");
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("cat\t"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("padless: cannot pronounce `x1y`: `1` is not in"),
        "{stderr}"
    );
    // More words than one group read from stdin (1,024): all of them, in order.
    let many: Vec<String> = (0..1100)
        .map(|i| ["cat", "dog", "emu", "ox"][i % 4].to_string())
        .collect();
    let (code, stdout, stderr) = padless_with_stdin(&pronounce, &many.join("\n"));
    assert_eq!(code, 0, "{stderr}");
    let printed: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(printed, many);
    std::fs::remove_dir_all(&dir).unwrap();
}
