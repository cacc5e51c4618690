//! Writing files atomically, and removing the temporary files that a killed writer left.
//!
//! Every file that padless writes whole goes through [`write_atomically_with`]: the bytes go
//! to a temporary file in the same folder, named `.NAME.tmp-PID-N` (the process id, and a
//! counter so that two writers in one process never share a name), which is flushed to disk
//! and then renamed over `NAME`. A reader sees the old file or the new one, never a part;
//! a write that fails removes its temporary file and leaves the old file as it was.
//!
//! A process killed while writing leaves its temporary file behind. Each write first removes
//! the temporary files beside its target whose process no longer runs
//! ([`remove_stale_temporaries`]; on Linux, where `/proc` says which processes run; other
//! systems keep them).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The marker between a file's name and the process id in its temporary files' names.
const MARKER: &str = ".tmp-";

/// Numbers the temporary files of this process, so that concurrent writes never share one.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Reads a whole file whose size is checked against the memory budget
/// ([`crate::budget::check_elements`]) before its buffer is allocated, and allocated
/// fallibly: a model file or checkpoint can be larger than the machine's memory (or a
/// device that never ends), and that must be an error naming the file, not an abort.
///
/// # Errors
/// [`Error::Io`] naming the path, [`Error::OverBudget`] for a file over the budget.
pub fn read_within_budget(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    crate::budget::check_elements(&path.display().to_string(), size, 1)?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::OutOfMemory, e)))?;
    // A file that grows while it is read is read up to the size checked, plus one byte to
    // tell that it grew.
    file.by_ref()
        .take(size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > size {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("expected {size} bytes, found more: the file grew while it was read"),
        )));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically ([`write_atomically_with`]).
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, |file| {
        use std::io::Write;
        file.write_all(bytes)
    })
}

/// Writes `path` through a temporary file in the same folder that `write` fills, flushed to
/// disk and then renamed over `path`: until the rename, the previous file is untouched. If
/// `write`, the flush or the rename fails (or `write` panics), the temporary file is removed
/// and the previous file stays as it was. The new file keeps the permissions of the file it
/// replaces. Stale temporary files of dead processes beside `path` are removed first.
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    remove_stale_temporaries(path);
    let tmp = Temporary(temporary_path(path));
    let mut file = File::create(&tmp.0).map_err(io)?;
    if let Ok(previous) = std::fs::metadata(path) {
        // The new file replaces the old one: keep who may read it.
        file.set_permissions(previous.permissions()).map_err(io)?;
    }
    write(&mut file).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp.0, path).map_err(io)?;
    std::mem::forget(tmp);
    sync_folder(path);
    Ok(())
}

/// A temporary file, removed when dropped (an error or a panic before its rename).
struct Temporary(PathBuf);

impl Drop for Temporary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `.NAME.tmp-PID-N` beside `path`.
fn temporary_path(path: &Path) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(
        ".{}{MARKER}{}-{n}",
        file_name(path),
        std::process::id()
    ))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Flushes the folder of `path`, so that the rename itself survives a power cut (a no-op
/// where folders cannot be opened as files).
fn sync_folder(path: &Path) {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
}

/// Removes the temporary files beside `path` (named as [`write_atomically_with`] names them)
/// whose process is no longer running, and returns how many it removed. Files it cannot
/// remove are left; this process's own temporary files are never touched.
pub fn remove_stale_temporaries(path: &Path) -> usize {
    let prefix = format!(".{}{MARKER}", file_name(path));
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    let own = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(writer_pid)
        else {
            continue;
        };
        if pid != own && !process_alive(pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The process id in a temporary file's suffix `PID-N` (or `PID`).
fn writer_pid(suffix: &str) -> Option<u32> {
    let pid = suffix.split('-').next()?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` runs: Linux lists running processes in `/proc`. Elsewhere every
/// process counts as running, so that no temporary file is removed on a guess.
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("padless-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A process id that no running process has: above Linux's largest (2^22).
    const DEAD: u32 = 4_194_304 + 17;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = scratch("replace");
        let path = dir.join("out.bin");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(names(&dir), ["out.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_or_panicking_write_keeps_the_old_file_and_removes_its_temporary_file() {
        let dir = scratch("fail");
        let path = dir.join("out.bin");
        write_atomically(&path, b"previous").unwrap();
        let err = write_atomically_with(&path, |file| {
            use std::io::Write;
            file.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("out.bin"), "{err}");
        let panicked = std::panic::catch_unwind(|| {
            write_atomically_with(&path, |file| {
                use std::io::Write;
                file.write_all(b"half")?;
                panic!("a writer's bug")
            })
        });
        assert!(panicked.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"previous");
        assert_eq!(names(&dir), ["out.bin"]);
        // A folder in the way of the rename: the error names the path, nothing is left.
        let folder = dir.join("taken");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("inside"), b"x").unwrap();
        let err = write_atomically(&folder, b"bytes").unwrap_err();
        assert!(err.to_string().contains("taken"), "{err}");
        assert_eq!(names(&dir), ["out.bin", "taken"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stale_temporary_files_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = scratch("stale");
        let path = dir.join("model.safetensors");
        let own = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let files = [
            format!(".model.safetensors.tmp-{DEAD}"),
            format!(".model.safetensors.tmp-{DEAD}-3"),
            format!(".model.safetensors.tmp-{own}-999999"),
            format!(".model.safetensors.tmp-{parent}-0"),
            format!(".other.tmp-{DEAD}-0"),
            ".model.safetensors.tmp-x1".to_string(),
            "model.safetensors.tmp-1".to_string(),
        ];
        for name in &files {
            std::fs::write(dir.join(name), b"partial").unwrap();
        }
        assert_eq!(remove_stale_temporaries(&path), 2);
        let mut kept: Vec<String> = files[2..].to_vec();
        kept.sort();
        assert_eq!(names(&dir), kept);
        // A write removes them too.
        std::fs::write(dir.join(format!(".model.safetensors.tmp-{DEAD}-1")), b"x").unwrap();
        write_atomically(&path, b"weights").unwrap();
        assert!(
            !dir.join(format!(".model.safetensors.tmp-{DEAD}-1"))
                .exists()
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"weights");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_new_file_keeps_the_old_files_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("mode");
        let path = dir.join("vocab.json");
        write_atomically(&path, b"{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomically(&path, b"{\"a\": 1}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
