//! The memory budget: a process-wide limit that sizes coming from input (command-line flags,
//! data files, model configs, file headers) are checked against before anything of that size
//! is allocated, so that a wrong or hostile number gives an error naming the size and the
//! budget rather than an aborted allocation.
//!
//! The budget is, in order of precedence: the value given to [`set_memory_budget`]; the
//! environment variable `PADLESS_MEMORY_BUDGET` (a size such as `8G`, `512M`, `1.5GiB` or a
//! number of bytes; read once); half of the machine's memory (on Linux the smaller of
//! `MemTotal` in `/proc/meminfo` and the control group's memory limit); or, where neither
//! can be read, [`FALLBACK_BUDGET`]. Half, because a checked size is one allocation among
//! several of that order (weights, gradients, activations, their copies).
//!
//! ```
//! use padless::budget::{check_elements, memory_budget};
//!
//! let budget = memory_budget().unwrap();
//! assert!(check_elements("a small buffer", 1000, 4).is_ok());
//! let err = check_elements("units of layer 2", u64::MAX, 4).unwrap_err();
//! assert!(err.to_string().contains("units of layer 2"));
//! assert!(budget > 0);
//! ```

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The environment variable that sets the budget.
pub const BUDGET_VARIABLE: &str = "PADLESS_MEMORY_BUDGET";

/// The budget where the machine's memory cannot be read (4 GiB).
pub const FALLBACK_BUDGET: u64 = 4 << 30;

/// Bytes per parameter that training holds: the weight, its gradient and Adam's two moments,
/// each an `f32`.
pub const TRAINING_BYTES_PER_PARAMETER: u64 = 16;

/// The budget set by [`set_memory_budget`]; 0 when none is set.
static SET: AtomicU64 = AtomicU64::new(0);

/// The budget from the environment or the machine, worked out once.
static DEFAULT: OnceLock<std::result::Result<u64, String>> = OnceLock::new();

/// Sets the process-wide budget in bytes (`None`: back to the environment variable or the
/// machine's memory). Overrides `PADLESS_MEMORY_BUDGET`.
///
/// # Errors
/// [`Error::Budget`] for a budget of 0 bytes.
pub fn set_memory_budget(bytes: Option<u64>) -> Result<()> {
    match bytes {
        Some(0) => Err(Error::Budget {
            message: "expected a memory budget of at least 1 byte, found 0".to_string(),
        }),
        Some(bytes) => {
            SET.store(bytes, Ordering::Relaxed);
            Ok(())
        }
        None => {
            SET.store(0, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// The budget in bytes (see the module documentation for where it comes from).
///
/// # Errors
/// [`Error::Budget`] when `PADLESS_MEMORY_BUDGET` is set but is not a size.
pub fn memory_budget() -> Result<u64> {
    match SET.load(Ordering::Relaxed) {
        0 => DEFAULT
            .get_or_init(|| {
                let variable = std::env::var(BUDGET_VARIABLE).ok();
                let read = |path: &str| std::fs::read_to_string(path).ok();
                budget_from(
                    variable.as_deref(),
                    read("/proc/meminfo").as_deref(),
                    read("/sys/fs/cgroup/memory.max")
                        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
                        .as_deref(),
                )
            })
            .clone()
            .map_err(|message| Error::Budget { message }),
        set => Ok(set),
    }
}

/// Checks that `count` elements of `bytes_per` bytes each fit in the budget; `what` names
/// them in the error (for example `"--hidden 100000: the model's parameters"`). Returns the
/// bytes they need.
///
/// # Errors
/// [`Error::OverBudget`] naming `what`, the count, the bytes and the budget; [`Error::Budget`]
/// for a malformed `PADLESS_MEMORY_BUDGET`.
pub fn check_elements(what: &str, count: u64, bytes_per: u64) -> Result<u64> {
    within(what, count, bytes_per, "elements", memory_budget()?)
}

/// Checks that training a model of `parameters` parameters fits in the budget, counting
/// [`TRAINING_BYTES_PER_PARAMETER`] bytes for each (activations come on top and are checked
/// where their sizes are known). Returns the bytes they need.
///
/// # Errors
/// As [`check_elements`].
pub fn check_model_size(what: &str, parameters: u64) -> Result<u64> {
    within(
        what,
        parameters,
        TRAINING_BYTES_PER_PARAMETER,
        "parameters",
        memory_budget()?,
    )
}

fn within(what: &str, count: u64, bytes_per: u64, unit: &str, budget: u64) -> Result<u64> {
    let needed = u128::from(count) * u128::from(bytes_per);
    if needed > u128::from(budget) {
        return Err(Error::OverBudget {
            what: what.to_string(),
            count: format!("{count} {unit} of {bytes_per} bytes"),
            needed: human_bytes(needed),
            budget: human_bytes(u128::from(budget)),
        });
    }
    Ok(needed as u64)
}

/// A size in binary units with the exact byte count when it is not a whole unit:
/// `12 GiB`, `1.5 KiB (1536 bytes)`.
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut scaled = bytes as f64;
    while scaled >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} bytes");
    }
    let whole = bytes.is_multiple_of(1u128 << (10 * unit));
    if whole {
        format!("{scaled:.0} {}", UNITS[unit])
    } else {
        format!("{scaled:.1} {} ({bytes} bytes)", UNITS[unit])
    }
}

/// Parses a size: a number (decimals allowed) with an optional binary unit `K`, `M`, `G`,
/// `T` (`KiB` .. `TiB` and `KB` .. `TB` read the same; case ignored) or `B`.
///
/// # Errors
/// A message naming what was expected and what was found.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let expected = "expected a size such as 8G, 512M, 1.5GiB or a number of bytes";
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{expected}, found {text:?}")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{expected}, found {text:?}"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!(
            "{expected}, of at least 1 byte and below 16 EiB, found {text:?}"
        ));
    }
    Ok(bytes as u64)
}

/// The budget from the environment variable's value, the text of `/proc/meminfo` and the
/// control group's memory limit (`max` or a number of bytes), each when present.
fn budget_from(
    variable: Option<&str>,
    meminfo: Option<&str>,
    cgroup_limit: Option<&str>,
) -> std::result::Result<u64, String> {
    if let Some(value) = variable {
        return parse_size(value).map_err(|e| format!("{BUDGET_VARIABLE}: {e}"));
    }
    let total = meminfo.and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024))
    });
    let limit = cgroup_limit.and_then(|text| text.trim().parse::<u64>().ok());
    let memory = match (total, limit) {
        (Some(total), Some(limit)) => Some(total.min(limit)),
        (total, limit) => total.or(limit),
    };
    Ok(memory.map_or(FALLBACK_BUDGET, |m| (m / 2).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str =
        "MemTotal:       24683772 kB\nMemFree:          123456 kB\nMemAvailable:   22214984 kB\n";

    #[test]
    fn sizes_parse_with_binary_units_and_reject_anything_else() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8gib"), Ok(8 << 30));
        assert_eq!(parse_size(" 1.5 GiB "), Ok(3 << 29));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        for bad in [
            "",
            "G",
            "lots",
            "-1G",
            "0",
            "0.1",
            "1e9",
            "8 GB extra",
            "1.2.3M",
            "99999999T",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(
                err.contains("expected a size") && err.contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_default_is_half_the_smaller_of_physical_memory_and_the_cgroup_limit() {
        let total = 24_683_772u64 * 1024;
        assert_eq!(budget_from(None, Some(MEMINFO), None), Ok(total / 2));
        assert_eq!(
            budget_from(None, Some(MEMINFO), Some("max\n")),
            Ok(total / 2)
        );
        assert_eq!(
            budget_from(None, Some(MEMINFO), Some("2147483648\n")),
            Ok(1 << 30)
        );
        assert_eq!(budget_from(None, None, Some("2147483648")), Ok(1 << 30));
        assert_eq!(budget_from(None, None, None), Ok(FALLBACK_BUDGET));
        assert_eq!(
            budget_from(None, Some("garbage"), None),
            Ok(FALLBACK_BUDGET)
        );
        // The variable wins over the machine, and a malformed one is an error naming it.
        assert_eq!(budget_from(Some("3G"), Some(MEMINFO), None), Ok(3 << 30));
        let err = budget_from(Some("plenty"), Some(MEMINFO), None).unwrap_err();
        assert!(
            err.starts_with("PADLESS_MEMORY_BUDGET: expected a size") && err.contains("\"plenty\""),
            "{err}"
        );
    }

    #[test]
    fn a_check_passes_up_to_the_budget_and_names_size_and_budget_beyond() {
        assert_eq!(within("w", 256, 4, "elements", 1024).unwrap(), 1024);
        let err = within("layer 2 units", 257, 4, "elements", 1024)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "layer 2 units: 257 elements of 4 bytes need 1.0 KiB (1028 bytes), more than the memory budget of 1 KiB (set PADLESS_MEMORY_BUDGET to change it)"
        );
        // Products beyond 64 bits are compared exactly, not wrapped.
        let err = within("huge", u64::MAX, u64::MAX, "elements", u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{} elements", u64::MAX)), "{err}");
        assert!(err.contains("EiB"), "{err}");
    }

    #[test]
    fn human_sizes_name_the_unit_and_the_exact_bytes_when_not_whole() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1024), "1 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(human_bytes(12 << 30), "12 GiB");
    }

    /// The only test that sets the process-wide budget, so no other test sees it change.
    #[test]
    fn the_set_budget_overrides_the_default_until_cleared() {
        let default = memory_budget().unwrap();
        set_memory_budget(Some(4096)).unwrap();
        assert_eq!(memory_budget().unwrap(), 4096);
        assert!(check_elements("fits", 1024, 4).is_ok());
        let err = check_model_size("--hidden 64", 257)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--hidden 64: 257 parameters of 16 bytes need 4.0 KiB (4112 bytes), more than the memory budget of 4 KiB"), "{err}");
        assert!(set_memory_budget(Some(0)).is_err());
        assert_eq!(memory_budget().unwrap(), 4096);
        set_memory_budget(None).unwrap();
        assert_eq!(memory_budget().unwrap(), default);
    }
}
