//! The value syntax shared by flags, environment variables and configuration files of both
//! programs: durations, yes/no values and byte sizes. Errors are plain sentences that name the
//! value, so clap, serde and hand-written readers can all show them as they are.

use std::ops::RangeInclusive;
use std::time::Duration;

/// The shortest interval either program accepts: faster than this is a busy loop, not a
/// monitor.
pub const MIN_DURATION: Duration = Duration::from_millis(100);

/// "2s", "500ms", "1m"; a bare number is seconds (the seed's style of configuration). At least
/// [`MIN_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a positive duration of a sane length"))?,
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{s:?} is not a duration (e.g. 2s, 500ms): {e}"))?,
    };
    if d < MIN_DURATION {
        return Err(format!("{s:?} is too short: at least 100ms"));
    }
    Ok(d)
}

/// 1/0, true/false, yes/no, on/off; empty is no (an environment file's `HMON_CMDLINE=`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{other:?} is not a yes/no value (use 1 or 0)")),
    }
}

/// A byte count: "1048576", "512KiB", "1MiB", "20GiB", "1.5G" (units are binary: K/KB/KiB,
/// M/MB/MiB, G/GB/GiB, T/TB/TiB, any case).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("{s:?} is not a size (e.g. 1048576, 512KiB, 1MiB, 20GiB)");
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if digits.contains('.') {
        let n: f64 = digits.parse().map_err(|_| bad())?;
        let bytes = n * mult as f64;
        // Saturates: a huge value is then out of any range, never wrapped into one.
        return if bytes.is_finite() && bytes >= 0.0 {
            Ok(bytes.min(u64::MAX as f64) as u64)
        } else {
            Err(bad())
        };
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(n.saturating_mul(mult))
}

/// A byte count as [`parse_bytes`] reads it, within `range`; `what` names the setting in the
/// out-of-range message.
pub fn parse_size(s: &str, what: &str, range: RangeInclusive<usize>) -> Result<usize, String> {
    let bytes = usize::try_from(parse_bytes(s)?).unwrap_or(usize::MAX);
    if !range.contains(&bytes) {
        return Err(format!(
            "{what} {s:?} is out of range: {} to {}",
            human_size(*range.start()),
            human_size(*range.end())
        ));
    }
    Ok(bytes)
}

/// A span that may be zero ("0", "0s" = none): "30s", "10m", "1h30m"; a bare number is seconds.
pub fn parse_span(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    match t.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a positive duration of a sane length")),
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| format!("{s:?} is not a duration (e.g. 30s, 10m, 1h): {e}")),
    }
}

/// 1024 → "1 KiB", 67108864 → "64 MiB"; other counts in bytes.
fn human_size(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration(" 0.5 "), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("fast").is_err_and(|e| e.contains("fast")));
        assert!(parse_duration("1ms").is_err_and(|e| e.contains("at least 100ms")));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn yes_and_no() {
        for y in ["1", "true", "YES", " on "] {
            assert_eq!(parse_bool(y), Ok(true), "{y}");
        }
        for n in ["0", "false", "No", "off", ""] {
            assert_eq!(parse_bool(n), Ok(false), "{n}");
        }
        assert!(parse_bool("maybe").is_err_and(|e| e.contains("maybe")));
    }

    #[test]
    fn sizes_with_units_and_a_range() {
        let r = 1024..=64 * 1024 * 1024;
        assert_eq!(parse_size("1048576", "x", r.clone()), Ok(1 << 20));
        assert_eq!(parse_size("512KiB", "x", r.clone()), Ok(512 << 10));
        assert_eq!(parse_size("1 MiB", "x", r.clone()), Ok(1 << 20));
        assert_eq!(parse_size("2m", "x", r.clone()), Ok(2 << 20));
        let err = parse_size("1GiB", "max_frame_bytes", r.clone()).expect_err("unit");
        assert!(err.contains("1GiB"), "{err}");
        let err = parse_size("100", "max_frame_bytes", r.clone()).expect_err("range");
        assert_eq!(
            err,
            "max_frame_bytes \"100\" is out of range: 1 KiB to 64 MiB"
        );
        assert_eq!(parse_bytes("20GiB"), Ok(20 << 30));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert!(parse_bytes("20 gigs").is_err_and(|e| e.contains("20 gigs")));
        assert_eq!(parse_span("0"), Ok(Duration::ZERO));
        assert_eq!(parse_span("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_span("soon").is_err_and(|e| e.contains("soon")));
        assert!(parse_span("1e20").is_err_and(|e| e.contains("1e20")));
        assert!(parse_duration("1e30").is_err());
        // Overflow saturates and is then out of range, not wrapped into it.
        assert!(parse_size("99999999999999999999", "x", r.clone()).is_err());
        assert!(parse_size(&format!("{}M", usize::MAX / 2), "x", r).is_err());
    }
}
