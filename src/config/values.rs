//! How the settings file spells values that JSON has no type for: durations and byte sizes.
//!
//! Durations are humantime strings (`"20s"`, `"5m"`, `"1h 30m"`), as existing fpush configs
//! write them; a bare number is refused with a hint, because "20" could mean seconds or
//! milliseconds and guessing wrong silently changes a ratelimit. Sizes are a number of bytes
//! or a number with a unit (`"256KiB"`, `"1MiB"`, `"64kB"`).

use std::fmt;
use std::time::Duration;

use humantime_serde::re::humantime;
use serde::de::{self, Deserializer, Visitor};

/// `deserialize_with` for a humantime duration string.
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"20s\" or \"5m\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        humantime::parse_duration(text.trim())
            .map_err(|_| E::custom(format!("invalid duration {text:?}")))
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {number}: give it a unit, e.g. \"{number}s\""
        )))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Duration, E> {
        Err(E::custom(format!("invalid duration {number}")))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Duration, E> {
        Err(E::custom(format!("invalid duration {number}")))
    }
}

/// `deserialize_with` for a size in bytes: a number, or a string with a unit.
pub(crate) fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    deserializer.deserialize_any(ByteSizeVisitor)
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as 262144, \"256KiB\" or \"1MiB\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<usize, E> {
        parse_byte_size(text).ok_or_else(|| {
            E::custom(format!(
                "invalid size {text:?} (use bytes or a unit: B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        })
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<usize, E> {
        usize::try_from(number).map_err(|_| E::custom(format!("size {number} is too large")))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<usize, E> {
        usize::try_from(number).map_err(|_| E::custom(format!("invalid size {number}")))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<usize, E> {
        Err(E::custom(format!(
            "invalid size {number}: give a whole number of bytes"
        )))
    }
}

/// `"256KiB"` → 262144. Whole numbers only; `None` on anything else or on overflow.
pub(crate) fn parse_byte_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    usize::try_from(number.checked_mul(multiplier)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(deserialize_with = "duration")]
        d: Duration,
        #[serde(deserialize_with = "byte_size")]
        s: usize,
    }

    fn probe(json: &str) -> Result<Probe, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_take_humantime_strings() {
        let p = probe(r#"{"d": "1h 30m", "s": 1}"#).unwrap();
        assert_eq!(p.d, Duration::from_secs(5400));
        assert_eq!(probe(r#"{"d": "0s", "s": 1}"#).unwrap().d, Duration::ZERO);
    }

    #[test]
    fn bad_or_unitless_durations_are_refused() {
        let err = probe(r#"{"d": "twenty seconds", "s": 1}"#).err().unwrap();
        assert!(
            err.starts_with("invalid duration \"twenty seconds\""),
            "{err}"
        );
        let err = probe(r#"{"d": 20, "s": 1}"#).err().unwrap();
        assert!(err.contains("\"20s\""), "{err}");
    }

    #[test]
    fn sizes_take_bytes_or_units() {
        assert_eq!(parse_byte_size("256KiB"), Some(262_144));
        assert_eq!(parse_byte_size("1 MiB"), Some(1_048_576));
        assert_eq!(parse_byte_size("64kB"), Some(64_000));
        assert_eq!(parse_byte_size("512"), Some(512));
        assert_eq!(probe(r#"{"d": "1s", "s": 4096}"#).unwrap().s, 4096);
    }

    #[test]
    fn bad_sizes_are_refused() {
        for text in [
            "",
            "KiB",
            "1.5MiB",
            "12 parsecs",
            "-1",
            "99999999999999999999GiB",
        ] {
            assert_eq!(parse_byte_size(text), None, "{text}");
        }
        assert!(probe(r#"{"d": "1s", "s": -4}"#).is_err());
        assert!(probe(r#"{"d": "1s", "s": 1.5}"#).is_err());
    }
}
