//! How much memory a run may use: `--max-memory`, or what the machine has
//! available (Linux `MemAvailable`, capped by the cgroup's limit when the
//! process runs in a container), or a GPU's memory. Feeds
//! [`crate::tile_budget`].

use std::path::Path;

use crate::tile_budget::Budget;

/// Kept free on the host: a tenth of what is available, at least this.
pub const HOST_MARGIN_MIN_BYTES: u64 = 256 << 20;

/// Share of a discrete GPU's memory a run plans to use (the rest: the CUDA
/// context, cuDNN workspaces, other processes).
pub const DEVICE_SHARE: f64 = 0.8;

/// `--max-memory`: `8G`, `1.5GiB`, `512M`, `4096MiB`, `2000000000` (bytes);
/// K/M/G/T are powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; give e.g. 8G, 1.5GiB or 512M"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use K, M, G or T"
            ))
        }
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < f64::from(64u32 << 20) {
        return Err(format!(
            "--max-memory {text} is under 64 MiB: no model runs in that"
        ));
    }
    Ok(bytes as u64)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn parse_meminfo_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// Room left under a cgroup v2 (`memory.max`, `memory.current`) or v1
/// (`memory.limit_in_bytes`, `memory.usage_in_bytes`) limit, if any.
fn cgroup_room(root: &Path) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(root.join(name)).ok();
    let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
    let (limit, used) = if let Some(max) = read("memory.max") {
        (number(Some(max))?, number(read("memory.current"))?)
    } else {
        (
            number(read("memory.limit_in_bytes"))?,
            number(read("memory.usage_in_bytes"))?,
        )
    };
    // v1 reports "no limit" as a huge number
    (limit < (1u64 << 60)).then(|| limit.saturating_sub(used))
}

/// What the host can give a run: available memory (and the cgroup's room)
/// less a margin.
pub fn host_budget() -> Option<Budget> {
    let available = parse_meminfo_available(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    let (room, source) = match cgroup_room(Path::new("/sys/fs/cgroup")) {
        Some(room) if room < available => (room, "the container's memory limit less its use"),
        _ => (available, "MemAvailable"),
    };
    let margin = (room / 10).max(HOST_MARGIN_MIN_BYTES);
    Some(Budget {
        bytes: room.saturating_sub(margin),
        source: format!(
            "{source} {:.1} GiB less a margin of {:.1} GiB",
            room as f64 / f64::from(1u32 << 30),
            margin as f64 / f64::from(1u32 << 30)
        ),
    })
}

/// Kept back out of a GPU's free memory: a tenth of it, at least this (this
/// process's CUDA context, cuDNN and cuBLAS workspaces, which do not exist
/// yet when the budget is read).
pub const DEVICE_MARGIN_MIN_BYTES: u64 = 1 << 30;

/// A discrete GPU of `total_bytes`: [`DEVICE_SHARE`] of it, or less when
/// other processes hold memory: then what is free (`free_bytes`, with this
/// process's own weights already on the device added back) less a margin.
pub fn device_budget(total_bytes: u64, free_bytes: Option<u64>, device: &str) -> Budget {
    let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
    let share = (total_bytes as f64 * DEVICE_SHARE) as u64;
    if let Some(free) = free_bytes {
        let margin = (free / 10).max(DEVICE_MARGIN_MIN_BYTES);
        let room = free.saturating_sub(margin);
        if room < share {
            return Budget {
                bytes: room,
                source: format!(
                    "{device}'s free memory {:.1} GiB of {:.1} GiB (other processes hold the rest) less a margin of {:.1} GiB",
                    gib(free),
                    gib(total_bytes),
                    gib(margin)
                ),
            };
        }
    }
    Budget {
        bytes: share,
        source: format!(
            "{:.0}% of {device}'s {:.1} GiB",
            DEVICE_SHARE * 100.0,
            gib(total_bytes)
        ),
    }
}

/// `--max-memory`.
pub fn given_budget(bytes: u64) -> Budget {
    Budget {
        bytes,
        source: "--max-memory".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_budget_is_a_share_of_it_unless_others_hold_memory() {
        let gib = 1u64 << 30;
        let idle = device_budget(80 * gib, Some(79 * gib), "H100");
        assert_eq!(idle.bytes, 64 * gib);
        assert!(
            idle.source.starts_with("80% of H100's 80.0 GiB"),
            "{}",
            idle.source
        );
        assert_eq!(device_budget(80 * gib, None, "H100").bytes, 64 * gib);
        // another process holds 50 GiB: 30 free less 3 (a tenth)
        let shared = device_budget(80 * gib, Some(30 * gib), "H100");
        assert_eq!(shared.bytes, 27 * gib);
        assert!(
            shared.source.contains("free memory 30.0 GiB of 80.0 GiB"),
            "{}",
            shared.source
        );
        // little free: the margin is at least 1 GiB, and nothing is below 0
        assert_eq!(
            device_budget(80 * gib, Some(3 * gib), "H100").bytes,
            2 * gib
        );
        assert_eq!(device_budget(80 * gib, Some(gib / 2), "H100").bytes, 0);
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4096mib"), Ok(4 << 30));
        assert_eq!(parse_size("2000000000"), Ok(2_000_000_000));
        assert!(parse_size("8X").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("10M").unwrap_err().contains("under 64 MiB"));
    }

    #[test]
    fn meminfo_available_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_meminfo_available(text), Some(20_000_000 * 1024));
        assert_eq!(parse_meminfo_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn cgroup_limits_are_read_for_v2_and_v1_and_no_limit_is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("memory.current"), "100\n").unwrap();
        assert_eq!(cgroup_room(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "1000\n").unwrap();
        assert_eq!(cgroup_room(dir.path()), Some(900));
        let v1 = tempfile::tempdir().unwrap();
        std::fs::write(
            v1.path().join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(v1.path().join("memory.usage_in_bytes"), "5\n").unwrap();
        assert_eq!(cgroup_room(v1.path()), None);
        std::fs::write(v1.path().join("memory.limit_in_bytes"), "50\n").unwrap();
        assert_eq!(cgroup_room(v1.path()), Some(45));
    }

    #[test]
    fn this_machine_has_a_host_budget() {
        let budget = host_budget().expect("/proc/meminfo is readable on Linux");
        assert!(budget.bytes > 0 && budget.source.contains("less a margin"));
    }
}
