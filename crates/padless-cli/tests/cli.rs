//! The `padless` binary as a user runs it.

use std::process::Command;

fn padless(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_padless"))
        .args(args)
        .output()
        .expect("padless runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_shows_the_mask_and_checks_padding_invariance() {
    let (ok, stdout, stderr) = padless(&["demo"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Mask found by Masking(0): 00111 01111"), "{stdout}");
    assert!(stdout.contains("Padding invariant: yes"), "{stdout}");
    assert!(stdout.contains("Total params: 1433"), "{stdout}");
    let masking_row = stdout.lines().find(|l| l.starts_with("masking")).unwrap();
    let columns: Vec<&str> = masking_row.split_whitespace().collect();
    assert_eq!(columns[columns.len() - 2..], ["no", "yes"], "mask in, mask out: {masking_row}");
}

#[test]
fn help_lists_the_commands_and_bad_flags_fail_clearly() {
    let (ok, stdout, _) = padless(&["--help"]);
    assert!(ok);
    assert!(stdout.contains("demo"), "{stdout}");
    let (ok, _, stderr) = padless(&["demo", "--seed", "x"]);
    assert!(!ok);
    assert!(stderr.contains("invalid value 'x'"), "{stderr}");
}
