//! How the settings file spells values that JSON has no type for, with errors that say what a
//! value should look like rather than naming a Rust type: sizes, ports, counts, rates, listen
//! addresses, bounded durations. Durations and secrets are read by [`fpush_traits::settings`],
//! like the platforms read theirs.
//!
//! A value's upper bound is part of its type here (`count::<_, 1024>`): far beyond any sane
//! value a setting is a typo, and some would overflow a clock or an allocation later, where it
//! would take the link down. Sizes are a number of bytes or a number with a unit (`"256KiB"`).

use std::fmt::{self, Display};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

const PORT: &str = "a port number from 1 to 65535";

/// `value`, or the error that it exceeds `max` (shown as `max_shown`).
fn at_most<T: PartialOrd, E: Error>(value: T, max: T, max_shown: impl Display) -> Result<T, E> {
    if value > max {
        return Err(E::custom(format!("must be at most {max_shown}")));
    }
    Ok(value)
}

/// A whole number that fits a `usize`, if `value` is one.
fn whole(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// `deserialize_with` for a host name; refuses what no host name holds (`@`, `/`, spaces, a
/// `:port`), so a JID, URL or address pasted by mistake is caught here, not by every connect.
pub fn hostname<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    if name.trim().is_empty() {
        return Err(Error::custom("must not be empty"));
    }
    if name.contains(|c: char| c.is_whitespace() || c == '@' || c == '/') {
        let message = "must be a bare domain such as push.example.org";
        return Err(Error::custom(message));
    }
    if has_port(&name) {
        let message = "must be a host name without a port (the port goes in serverPort)";
        return Err(Error::custom(message));
    }
    Ok(name)
}

/// Whether `name` reads as `host:port`: one colon, where an IPv6 address has at least two.
fn has_port(name: &str) -> bool {
    name.matches(':').count() == 1
}

/// `deserialize_with` for the component secret: a [`secret`](fpush_traits::settings::secret)
/// that is not empty.
pub fn component_key<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let key = fpush_traits::settings::secret(deserializer)?;
    if key.is_empty() {
        let message = "must not be empty (it is the component secret set in the XMPP server)";
        return Err(Error::custom(message));
    }
    Ok(key)
}

/// `deserialize_with` for a section that holds a secret (`redis`, whose URL may carry a
/// password): an object, `null` for none, or an error that does not repeat the text an
/// operator wrote in its place (often the URL itself).
pub fn secret_section<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let what = "an object such as {\"url\": \"redis://127.0.0.1:6379\"}";
    deserializer.deserialize_any(Unechoed(what, PhantomData))
}

/// `deserialize_with` for a list of secrets (`redis.cluster`, URLs that may carry a password):
/// a list, or an error that does not repeat the text written in its place.
pub fn secret_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let what = "a list such as [\"redis://10.0.0.1:6379\"]";
    let list = deserializer.deserialize_any(Unechoed(what, PhantomData))?;
    Ok(list.unwrap_or_default())
}

/// Reads a `T` from an object or a list (`None` from `null`); text is refused without being
/// repeated. Numbers and booleans are refused as serde words it: they hold no URL.
struct Unechoed<T>(&'static str, PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Unechoed<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: Error>(self, _: &str) -> Result<Option<T>, E> {
        let message = format!(
            "must be {}, not text (not shown: it may hold a password)",
            self.0
        );
        Err(E::custom(message))
    }

    fn visit_unit<E: Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        T::deserialize(SeqAccessDeserializer::new(seq)).map(Some)
    }
}

/// `deserialize_with` for a TCP port.
pub fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let port = whole(&Value::deserialize(deserializer)?).and_then(|n| u16::try_from(n).ok());
    let message = || Error::custom(format!("must be {PORT}, e.g. 5347"));
    port.filter(|port| *port != 0).ok_or_else(message)
}

/// `deserialize_with` for a count of things (entries, pushes, levels), at most `MAX`.
pub fn count<'de, D: Deserializer<'de>, const MAX: usize>(d: D) -> Result<usize, D::Error> {
    let count = whole(&Value::deserialize(d)?);
    let count = count.ok_or_else(|| Error::custom("must be a whole number, e.g. 10000"))?;
    at_most(count, MAX, MAX)
}

/// `deserialize_with` for a rate or an amount that may have a fraction (`0.5` per second).
pub fn amount<'de, D: Deserializer<'de>, const MAX: u32>(d: D) -> Result<f64, D::Error> {
    let amount = Value::deserialize(d)?.as_f64().filter(|n| *n >= 0.0);
    let message = "must be a number of 0 or more, e.g. 1000";
    let amount = amount.ok_or_else(|| Error::custom(message))?;
    at_most(amount, f64::from(MAX), MAX)
}

/// `deserialize_with` for a duration of at most `MAX_SECS` (see [`fpush_traits::settings`]).
pub fn bounded_duration<'de, D: Deserializer<'de>, const MAX_SECS: u64>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let max = Duration::from_secs(MAX_SECS);
    let duration = fpush_traits::settings::duration(deserializer)?;
    at_most(duration, max, humantime::format_duration(max))
}

/// `deserialize_with` for a size in bytes, at most `MAX`: a number, or a string with a unit.
pub fn byte_size<'de, D: Deserializer<'de>, const MAX: usize>(d: D) -> Result<usize, D::Error> {
    let value = Value::deserialize(d)?;
    let size = match &value {
        Value::String(text) => parse_byte_size(text).ok_or_else(|| {
            format!("invalid size {text:?} (use bytes or a unit: B, KiB, MiB, GiB, kB, MB, GB)")
        }),
        Value::Number(number) => whole(&value)
            .ok_or_else(|| format!("invalid size {number}: give a whole number of bytes")),
        _ => Err("must be a size such as 262144, \"256KiB\" or \"1MiB\"".to_owned()),
    };
    at_most(size.map_err(Error::custom)?, MAX, MAX)
}

/// `"256KiB"` → 262144. Whole numbers only; `None` on anything else or on overflow.
pub fn parse_byte_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit());
    let (number, unit) = text.split_at(digits.unwrap_or(text.len()));
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
    let number: u64 = number.parse().ok()?;
    usize::try_from(number.checked_mul(multiplier)?).ok()
}

/// `deserialize_with` for an address to listen on: `IP:PORT`, or `localhost:PORT` (loopback).
pub fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_listen_address(&String::deserialize(d)?).map_err(Error::custom)
}

fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    let hint = "write an IP address and port: \"127.0.0.1:9357\" (this host only), \"[::1]:9357\" or \"0.0.0.0:9357\" (every interface)";
    let literal = match text.split_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => format!("127.0.0.1:{port}"),
        _ => text.to_owned(),
    };
    let address: SocketAddr = literal
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address and port; {hint}"))?;
    if address.port() == 0 {
        return Err(format!("{text:?}: the port must be {PORT}"));
    }
    Ok(address)
}

/// A URL with its password replaced, for `Debug` output.
pub fn redacted_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = url.set_password(Some("redacted"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "<not a URL; not shown>".to_owned(),
    }
}

/// What is wrong with a Redis URL, in words, never repeating its password; `None` when the
/// Redis client accepts it.
pub fn redis_url_problem(text: &str) -> Option<String> {
    let example = "write it like \"redis://127.0.0.1:6379\" (\"rediss://\" for TLS, \"redis+unix:///run/redis.sock\" for a socket)";
    if !text.contains("://") {
        let message = "must start with redis://, rediss:// or redis+unix://";
        return Some(format!("{message}; {example}"));
    }
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(error) => return Some(format!("not a URL ({error}); {example}")),
    };
    let scheme = url.scheme();
    let tcp = matches!(scheme, "redis" | "rediss" | "valkey" | "valkeys");
    if !tcp && !matches!(scheme, "redis+unix" | "valkey+unix" | "unix") {
        let message = format!("the scheme must be redis, rediss or redis+unix, not {scheme:?}");
        return Some(format!("{message}; {example}"));
    }
    if tcp && url.host_str().is_none_or(str::is_empty) {
        return Some(format!("names no host; {example}"));
    }
    let database = url.path().trim_start_matches('/');
    if tcp && !database.is_empty() && database.parse::<u16>().is_err() {
        let message =
            "the database after the host must be a number, e.g. \"redis://127.0.0.1:6379/0\"";
        return Some(message.to_owned());
    }
    let error = redis::Client::open(text).err()?;
    let detail = error.detail().unwrap_or("unsupported settings");
    Some(format!("the Redis client cannot use it: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(deserialize_with = "byte_size::<_, 1_000_000>")]
        s: usize,
    }

    fn probe(json: &str) -> Result<Probe, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn sizes_take_bytes_or_units() {
        assert_eq!(parse_byte_size("256KiB"), Some(262_144));
        assert_eq!(parse_byte_size("1 MiB"), Some(1_048_576));
        assert_eq!(parse_byte_size("64kB"), Some(64_000));
        assert_eq!(parse_byte_size("512"), Some(512));
        assert_eq!(probe(r#"{"s": 4096}"#).unwrap().s, 4096);
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
        assert!(probe(r#"{"s": -4}"#).is_err());
        assert!(probe(r#"{"s": 1.5}"#).is_err());
    }

    #[test]
    fn listen_addresses_take_ips_and_localhost() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 9357));
        assert_eq!(parse_listen_address("localhost:9357"), Ok(loopback));
        assert_eq!(parse_listen_address("127.0.0.1:9357"), Ok(loopback));
        let v6 = parse_listen_address("[::1]:9357").unwrap();
        assert!(v6.ip().is_loopback() && v6.is_ipv6());
        let err = parse_listen_address("metrics.example.org:9357").unwrap_err();
        assert!(
            err.contains("not an IP address") && err.contains("127.0.0.1:9357"),
            "{err}"
        );
        let err = parse_listen_address("127.0.0.1:0").unwrap_err();
        assert!(err.contains("1 to 65535"), "{err}");
        assert!(parse_listen_address("127.0.0.1").is_err());
    }

    #[test]
    fn redis_urls_are_checked_without_showing_the_password() {
        assert_eq!(redis_url_problem("redis://127.0.0.1:6379/0"), None);
        assert_eq!(redis_url_problem("redis+unix:///run/redis.sock"), None);
        for (url, problem) in [
            ("127.0.0.1:6379", "must start with redis://"),
            ("http://127.0.0.1", "scheme"),
            ("redis://:hunter2@127.0.0.1:99999", "port"),
            ("redis://:hunter2@127.0.0.1:6379/zero", "database"),
            ("redis://exa mple.org", "not a URL"),
        ] {
            let message = redis_url_problem(url).unwrap_or_default();
            assert!(message.contains(problem), "{url}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let shown = redacted_url("redis://user:hunter2@host:6379");
        assert!(
            !shown.contains("hunter2") && shown.contains("user"),
            "{shown}"
        );
    }
}
