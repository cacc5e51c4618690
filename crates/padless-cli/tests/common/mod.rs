//! Running the `padless` binary, shared by the CLI test binaries.

use std::process::Command;

/// Runs `padless ARGS`; returns success, stdout and stderr.
pub fn padless(args: &[&str]) -> (bool, String, String) {
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
