//! The `padless` binary as a user runs it.

mod common;
use common::padless;

fn number_after(text: &str, label: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no {label} in {text}"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn demo_trains_and_reports_masked_and_unmasked_losses() {
    let (ok, stdout, stderr) = padless(&["demo", "--epochs", "2"]);
    assert!(ok, "{stderr}");
    let masking_row = stdout.lines().find(|l| l.starts_with("masking")).unwrap();
    let columns: Vec<&str> = masking_row.split_whitespace().collect();
    assert_eq!(
        columns[columns.len() - 2..],
        ["no", "yes"],
        "mask in, mask out: {masking_row}"
    );
    assert!(stderr.contains("epoch 2/2: accuracy"), "{stderr}");
    let masked = number_after(&stdout, "masked loss (padless");
    let unmasked = number_after(&stdout, "unmasked loss");
    assert!(
        masked.is_finite() && unmasked.is_finite() && masked != unmasked,
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" -> ")).count(),
        6,
        "{stdout}"
    );
}

#[test]
fn summary_reads_a_json_or_toml_config_and_reports_errors_with_the_path() {
    let dir = std::env::temp_dir().join(format!("padless-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("model.json");
    std::fs::write(
        &json,
        r#"{"input": {"kind": "tokens"}, "layers": [
            {"type": "embedding", "n_tokens": 20, "d_model": 4, "mask_zero": true},
            {"type": "bidirectional", "layer": {"type": "gru", "units": 3, "return_sequences": true}},
            {"type": "time_distributed_dense", "units": 2, "activation": "softmax"}]}"#,
    )
    .unwrap();
    let (ok, stdout, stderr) = padless(&["summary", json.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("(None, None, 6)") && stdout.contains("Total params"),
        "{stdout}"
    );
    let toml = dir.join("model.toml");
    std::fs::write(
        &toml,
        "[input]\nkind = \"sequence\"\nfeatures = 3\n\n[[layers]]\ntype = \"masking\"\nmask_value = 0.0\n\n[[layers]]\ntype = \"lstm\"\nunits = 4\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = padless(&["summary", toml.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("lstm (Lstm)"), "{stdout}");
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"input": {"kind": "tokens"}, "layers": [{"type": "lstm"}]}"#,
    )
    .unwrap();
    let (ok, _, stderr) = padless(&["summary", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("parsing") && stderr.contains("bad.json"),
        "{stderr}"
    );
    let (ok, _, stderr) = padless(&["summary", dir.join("missing.json").to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("reading") && stderr.contains("missing.json"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_lists_the_commands_and_bad_flags_fail_clearly() {
    let (ok, stdout, _) = padless(&["--help"]);
    assert!(ok);
    assert!(
        stdout.contains("demo") && stdout.contains("summary"),
        "{stdout}"
    );
    let (ok, _, stderr) = padless(&["demo", "--seed", "x"]);
    assert!(!ok);
    assert!(stderr.contains("invalid value 'x'"), "{stderr}");
}
