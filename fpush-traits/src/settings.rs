//! Settings values that the core and every platform read alike: durations (bounded, with an
//! example in every error), secrets (never echoed in an error) and a provider module's
//! `maxConnections` (bounded).
//!
//! Durations are humantime text (`"20s"`, `"5m"`, `"1h 30m"`). A bare number is refused where a
//! setting has always been text, because `20` could mean seconds or milliseconds; keys that
//! older fpush configs wrote as a number of seconds (`requestTimeout`) take
//! [`seconds_or_duration`]. Nothing longer than [`MAX_DURATION`] is accepted, so no later
//! `Instant + duration` can overflow.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize as _;

/// The longest duration any setting may hold: one year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

const EXAMPLE: &str = "e.g. \"20s\", \"5m\" or \"1h 30m\"";

/// `deserialize_with` for a duration written as text.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor { seconds: false })
}

/// `deserialize_with` for a duration written as text or as a whole number of seconds.
pub fn seconds_or_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor { seconds: true })
}

/// Reads duration text, within [`MAX_DURATION`]; the error says what is wrong and shows an
/// example.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(text.trim()).map_err(|error| match error {
        humantime::DurationError::NumberOverflow => too_long(text),
        _ => format!("invalid duration {text:?}: write a number and a unit, {EXAMPLE}"),
    })?;
    if parsed > MAX_DURATION {
        return Err(too_long(text));
    }
    Ok(parsed)
}

fn too_long(text: &str) -> String {
    format!("duration {text:?} is too long: at most 1 year (\"365d\")")
}

struct DurationVisitor {
    seconds: bool,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seconds {
            write!(f, "a number of seconds or a duration, {EXAMPLE}")
        } else {
            write!(f, "a duration, {EXAMPLE}")
        }
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_duration(text).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Duration, E> {
        if !self.seconds {
            return Err(E::custom(format!(
                "invalid duration {number}: give it a unit, e.g. \"{number}s\""
            )));
        }
        let parsed = Duration::from_secs(number);
        if parsed > MAX_DURATION {
            return Err(E::custom(too_long(&format!("{number}s"))));
        }
        Ok(parsed)
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {number}: it cannot be negative ({EXAMPLE})"
        )))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {number}: write whole seconds or text with a unit, e.g. \"1500ms\""
        )))
    }
}

/// The most `maxConnections` a provider module may ask for: far more than one app needs (each
/// HTTP/2 connection carries as many streams as the provider allows, ~100 at FCM, ~1000 at
/// APNS), while a slipped digit would let a burst of pushes open connection after connection.
pub const MAX_CONNECTIONS: usize = 1000;

/// `deserialize_with` for a provider module's `maxConnections`: a whole number up to
/// [`MAX_CONNECTIONS`] (`0` counts as 1, as it always did).
pub fn max_connections<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let number = serde_json::Value::deserialize(deserializer)?;
    number
        .as_u64()
        .and_then(|number| usize::try_from(number).ok())
        .filter(|&number| number <= MAX_CONNECTIONS)
        .ok_or_else(|| {
            de::Error::custom(format!(
                "must be a whole number from 0 to {MAX_CONNECTIONS} (0 counts as 1)"
            ))
        })
}

/// `deserialize_with` for a secret (a password, a shared key): text, and an error that does not
/// repeat what was written, so a secret typed as a number never reaches a log.
pub fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    deserializer.deserialize_any(SecretVisitor)
}

struct SecretVisitor;

impl SecretVisitor {
    fn refuse<E: de::Error>(what: &str) -> E {
        E::custom(format!(
            "must be text in double quotes, not {what} (the value is a secret and not shown)"
        ))
    }
}

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret in double quotes")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        Ok(text.to_owned())
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<String, E> {
        Ok(text)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
        Err(Self::refuse("a yes/no value"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<String, E> {
        Err(Self::refuse("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<String, E> {
        Err(Self::refuse("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
        Err(Self::refuse("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(Self::refuse("null"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::refuse("a list"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::refuse("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_is_a_whole_number_up_to_the_bound() {
        #[derive(Debug, serde::Deserialize)]
        struct Block {
            #[serde(deserialize_with = "max_connections")]
            n: usize,
        }
        let read = |value: &str| serde_json::from_str::<Block>(&format!(r#"{{"n": {value}}}"#));
        assert_eq!(read("1000").unwrap().n, 1000);
        assert_eq!(read("0").unwrap().n, 0);
        for wrong in ["1001", "18446744073709551615", "-1", "2.5", "\"8\"", "null"] {
            let err = read(wrong).unwrap_err().to_string();
            assert!(err.contains("from 0 to 1000"), "{wrong}: {err}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "duration")]
        text: Duration,
        #[serde(default, deserialize_with = "seconds_or_duration")]
        either: Duration,
        #[serde(default, deserialize_with = "secret")]
        key: String,
    }

    fn probe(json: &str) -> Result<Probe, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn text_durations_are_read_and_bare_numbers_get_a_hint() {
        let p = probe(r#"{"text": "1h 30m"}"#).unwrap();
        assert_eq!(p.text, Duration::from_secs(5400));
        assert_eq!(probe(r#"{"text": "0s"}"#).unwrap().text, Duration::ZERO);
        let err = probe(r#"{"text": 20}"#).unwrap_err();
        assert!(err.contains("\"20s\""), "{err}");
    }

    #[test]
    fn seconds_or_text_takes_both() {
        assert_eq!(
            probe(r#"{"either": 5}"#).unwrap().either,
            Duration::from_secs(5)
        );
        assert_eq!(
            probe(r#"{"either": "250ms"}"#).unwrap().either,
            Duration::from_millis(250)
        );
        for bad in ["-5", "1.5", "\"soon\""] {
            let err = probe(&format!(r#"{{"either": {bad}}}"#)).unwrap_err();
            assert!(err.contains("e.g."), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_longer_than_a_year_are_refused() {
        for json in [
            r#"{"text": "300000000000y"}"#,
            r#"{"text": "366d"}"#,
            r#"{"text": "99999999999999999999999s"}"#,
            r#"{"either": 31536001}"#,
        ] {
            let err = probe(json).unwrap_err();
            assert!(err.contains("at most 1 year"), "{json}: {err}");
        }
        assert_eq!(probe(r#"{"text": "365d"}"#).unwrap().text, MAX_DURATION);
    }

    #[test]
    fn invalid_text_shows_an_example() {
        let err = probe(r#"{"text": "twenty seconds"}"#).unwrap_err();
        assert!(
            err.starts_with("invalid duration \"twenty seconds\""),
            "{err}"
        );
        assert!(err.contains("\"5m\""), "{err}");
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        assert_eq!(probe(r#"{"key": "s3cret"}"#).unwrap().key, "s3cret");
        for value in [
            "987654321987",
            "-42",
            "4.5e3",
            "true",
            "[\"abc\"]",
            "{\"a\": \"xyz\"}",
        ] {
            let err = probe(&format!(r#"{{"key": {value}}}"#)).unwrap_err();
            assert!(err.contains("not shown"), "{err}");
            for needle in ["987654321987", "42", "4.5", "true", "abc", "xyz"] {
                assert!(!err.contains(needle), "{value}: {err}");
            }
        }
    }
}
