//! The files a command reads and writes.
//!
//! Inputs are read as text by [`read_text`]: within the memory budget (checked against the
//! file's size before it is read, and while reading a pipe), as UTF-8 (an error names the
//! line of the first invalid byte), without a leading byte-order mark.
//!
//! Outputs are checked before anything is written: an output must not be an input of the
//! same command ([`check_outputs`]: paths compared canonicalised, existing files also by
//! device and inode, so symbolic and hard links count as the same file; a file that does not
//! exist yet by its canonical folder and name), a file to write must not be a folder and its
//! folder must exist ([`check_output_file`]), a run folder must not be a file
//! ([`check_run_folder`]). The writes themselves are atomic
//! ([`padless::files::write_atomically`]).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The UTF-8 byte-order mark, which some editors put at the start of a text file.
pub const BOM: char = '\u{feff}';

/// `text` without a leading byte-order mark.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix(BOM).unwrap_or(text)
}

/// Reads `path` as UTF-8 text, byte-order mark removed. `bytes_per_byte` is the memory that
/// one byte of the file takes once parsed (symbols as strings take several times their
/// text); the file's size times it must fit in the memory budget.
///
/// # Errors
/// A missing or unreadable file or a folder (`reading PATH: ...`), a file too large for the
/// memory budget, or text that is not UTF-8.
pub fn read_text(path: &Path, bytes_per_byte: u64) -> Result<String> {
    let reading = || format!("reading {}", path.display());
    let file = std::fs::File::open(path).with_context(reading)?;
    let metadata = file.metadata().with_context(reading)?;
    if metadata.is_dir() {
        bail!("{}: expected a file, found a folder", reading());
    }
    let what = format!(
        "{} (each byte of text takes up to {bytes_per_byte} bytes once read)",
        reading()
    );
    let budget = padless::budget::memory_budget()?;
    let mut bytes = Vec::new();
    if metadata.is_file() {
        padless::budget::check_elements(&what, metadata.len(), bytes_per_byte)?;
        bytes.reserve_exact(usize::try_from(metadata.len()).unwrap_or(0));
        file.take(metadata.len())
            .read_to_end(&mut bytes)
            .with_context(reading)?;
    } else {
        // A pipe or a device has no size: read up to the budget, and one byte more to see
        // whether it goes on.
        let limit = budget / bytes_per_byte.max(1);
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .with_context(reading)?;
        if bytes.len() as u64 > limit {
            padless::budget::check_elements(&what, bytes.len() as u64, bytes_per_byte)?;
        }
    }
    decode_text(bytes, &path.display().to_string())
}

/// `bytes` as UTF-8 text without a leading byte-order mark; `origin` names them in the
/// error.
///
/// # Errors
/// Bytes that are not UTF-8: the line and value of the first invalid byte.
pub fn decode_text(bytes: Vec<u8>, origin: &str) -> Result<String> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(match text.strip_prefix(BOM) {
            Some(rest) => rest.to_string(),
            None => text,
        }),
        Err(err) => {
            let valid = err.utf8_error().valid_up_to();
            let bytes = err.as_bytes();
            let line = bytes[..valid].iter().filter(|&&b| b == b'\n').count() + 1;
            bail!(
                "{origin}:{line}: expected UTF-8 text, found the byte 0x{:02x}",
                bytes[valid]
            )
        }
    }
}

/// A path as the file system resolves it.
struct Resolved {
    /// The canonical path: of the file, or for a file that does not exist yet, of its
    /// nearest existing folder followed by the rest of the path.
    canonical: PathBuf,
    /// Device and inode of an existing file (Unix), which hard links share.
    id: Option<(u64, u64)>,
}

fn resolve(path: &Path) -> Result<Resolved> {
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return Ok(Resolved {
            id: file_id(&canonical),
            canonical,
        });
    }
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("reading the current folder")?
            .join(path)
    };
    // Walk down from the root: canonical while the parts exist, then the remaining names.
    let mut resolved = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => resolved.push(component),
            Component::CurDir => {}
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => {
                let next = resolved.join(name);
                resolved = std::fs::canonicalize(&next).unwrap_or(next);
            }
        }
    }
    Ok(Resolved {
        id: file_id(&resolved),
        canonical: resolved,
    })
}

#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// Checks that no output is one of the inputs: `(flag, path)` pairs, inputs that were not
/// given as `None`.
///
/// # Errors
/// The first output that is an input, naming both flags and paths.
pub fn check_outputs(inputs: &[(&str, Option<&Path>)], outputs: &[(&str, &Path)]) -> Result<()> {
    let outputs: Vec<(String, &Path)> = outputs
        .iter()
        .map(|&(flag, path)| (format!("{flag} {}", path.display()), path))
        .collect();
    check_labelled(inputs, &outputs)
}

/// [`check_outputs`] with each output named by a label of its own.
fn check_labelled(inputs: &[(&str, Option<&Path>)], outputs: &[(String, &Path)]) -> Result<()> {
    let inputs: Vec<(&str, &Path, Resolved)> = inputs
        .iter()
        .filter_map(|&(flag, path)| path.map(|p| (flag, p)))
        .map(|(flag, path)| Ok((flag, path, resolve(path)?)))
        .collect::<Result<_>>()?;
    for (label, out_path) in outputs {
        let output = resolve(out_path)?;
        for (in_flag, in_path, input) in &inputs {
            let same_path = output.canonical == input.canonical;
            if same_path || (output.id.is_some() && output.id == input.id) {
                bail!(
                    "{label} is the same file as {in_flag} {} ({}{}): writing it would destroy an input of this command; choose another output path",
                    in_path.display(),
                    output.canonical.display(),
                    if same_path { "" } else { ", a hard link of it" }
                );
            }
        }
    }
    Ok(())
}

/// Checks that `path`, a file that `flag` asks to write, can be written: not a folder, in
/// a folder that exists.
///
/// # Errors
/// A folder at `path`, or a missing folder, naming the flag.
pub fn check_output_file(flag: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{flag} {}: expected a file to write, found a folder",
            path.display()
        );
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        bail!(
            "{flag} {}: expected an existing folder {} to write it in, found {}",
            path.display(),
            folder.display(),
            if folder.exists() { "a file" } else { "none" }
        );
    }
    Ok(())
}

/// Checks a run folder that `flag` names: not a file, and none of the `files` that a run
/// writes into it is one of the `inputs`.
///
/// # Errors
/// A file at `folder`, or a run file that is an input, naming the flags and paths.
pub fn check_run_folder(
    flag: &str,
    folder: &Path,
    files: &[&str],
    inputs: &[(&str, Option<&Path>)],
) -> Result<()> {
    if folder.exists() && !folder.is_dir() {
        bail!(
            "{flag} {}: expected a folder for the run's files, found a file",
            folder.display()
        );
    }
    let outputs: Vec<(String, PathBuf)> = files
        .iter()
        .map(|name| {
            let label = format!("{flag} {}'s {name}", folder.display());
            (label, folder.join(name))
        })
        .collect();
    let outputs: Vec<(String, &Path)> = outputs
        .iter()
        .map(|(label, path)| (label.clone(), path.as_path()))
        .collect();
    check_labelled(inputs, &outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("padless-paths-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_output_that_is_an_input_by_any_spelling_is_refused_naming_both() {
        let dir = scratch("same");
        let dict = dir.join("dict.txt");
        std::fs::write(&dict, "cat K AE1 T\n").unwrap();
        let spellings = [
            dict.clone(),
            dir.join("sub/../dict.txt"),
            dir.join("./dict.txt"),
            dir.join("missing/../dict.txt"),
        ];
        std::fs::create_dir(dir.join("sub")).unwrap();
        for out in &spellings {
            let err = check_outputs(&[("--data", Some(&dict))], &[("--out", out)])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!(
                    "--out {} is the same file as --data {}",
                    out.display(),
                    dict.display()
                )),
                "{err}"
            );
        }
        #[cfg(unix)]
        {
            let link = dir.join("link.txt");
            std::os::unix::fs::symlink(&dict, &link).unwrap();
            assert!(check_outputs(&[("--data", Some(&dict))], &[("--errors", &link)]).is_err());
            let hard = dir.join("hard.txt");
            std::fs::hard_link(&dict, &hard).unwrap();
            let err = check_outputs(&[("--data", Some(&dict))], &[("--out", &hard)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("a hard link of it"), "{err}");
        }
        // Other files, new files and inputs not given pass.
        let other = dir.join("model.safetensors");
        check_outputs(
            &[("--data", Some(&dict)), ("--phonemes", None)],
            &[("--out", &other)],
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_output_is_compared_by_its_canonical_folder_and_name() {
        let dir = scratch("new");
        std::fs::create_dir(dir.join("real")).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.join("real"), dir.join("alias")).unwrap();
            // Neither exists yet: the same file through the folder's link.
            let a = resolve(&dir.join("real/new.tsv")).unwrap();
            let b = resolve(&dir.join("alias/new.tsv")).unwrap();
            assert_eq!(a.canonical, b.canonical);
        }
        let c = resolve(&dir.join("real/x/../new.tsv")).unwrap();
        assert!(
            c.canonical.ends_with("real/new.tsv"),
            "{}",
            c.canonical.display()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_output_file_needs_an_existing_folder_and_a_run_folder_may_not_be_a_file() {
        let dir = scratch("folders");
        let file = dir.join("data.tsv");
        std::fs::write(&file, "a\tb\n").unwrap();
        let err = check_output_file("--out", &dir).unwrap_err().to_string();
        assert!(
            err.ends_with("expected a file to write, found a folder"),
            "{err}"
        );
        let err = check_output_file("--errors", &dir.join("no/x.tsv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--errors") && err.ends_with("found none"),
            "{err}"
        );
        let err = check_output_file("--out", &file.join("x"))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("found a file"), "{err}");
        check_output_file("--out", &dir.join("new.safetensors")).unwrap();
        let err = check_run_folder("--out", &file, &["log.csv"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("expected a folder for the run's files, found a file"),
            "{err}"
        );
        let log = dir.join("log.csv");
        std::fs::write(&log, "epoch\n").unwrap();
        let err = check_run_folder(
            "--out",
            &dir,
            &["vocab.json", "log.csv"],
            &[("--data", Some(&log))],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("'s log.csv is the same file as --data"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn text_is_utf8_without_its_byte_order_mark() {
        assert_eq!(
            decode_text(b"\xef\xbb\xbfab\tc\n".to_vec(), "f").unwrap(),
            "ab\tc\n"
        );
        assert_eq!(
            decode_text(b"ab\xef\xbb\xbf".to_vec(), "f").unwrap(),
            "ab\u{feff}"
        );
        let err = decode_text(b"ok\nok\nbad \xff\n".to_vec(), "d.tsv")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "d.tsv:3: expected UTF-8 text, found the byte 0xff");
        let dir = scratch("text");
        let err = read_text(&dir, 8).unwrap_err().to_string();
        assert!(err.ends_with("expected a file, found a folder"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
