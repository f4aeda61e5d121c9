//! Where the relay may POST: the origins of `push2.webPushOrigins` (exact hosts or `*.` suffix
//! wildcards), over HTTPS only, and never to an address in a loopback, private, link-local or
//! otherwise non-public range unless the operator listed that exact origin.
//!
//! A relay that POSTs to URLs taken from messages forges requests for whoever writes the
//! message unless it is fenced like this.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::Uri;

/// The public browser push services: the default of `push2.webPushOrigins`.
pub const DEFAULT_ORIGINS: &[&str] = &[
    "https://fcm.googleapis.com",
    "https://updates.push.services.mozilla.com",
    "https://web.push.apple.com",
    "https://*.notify.windows.com",
];

/// Why a list entry or an endpoint is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    #[error("{0:?} is not an https origin (write https://host or https://*.domain, optionally with :port)")]
    BadEntry(String),
    #[error("the endpoint is not an https URL")]
    NotHttps,
    #[error("the endpoint's origin {0} is not among push2.webPushOrigins")]
    NotListed(String),
    #[error("{origin} resolves to {address}, a non-public address, and is not listed explicitly")]
    NonPublic { origin: String, address: IpAddr },
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The host, lower case; for a wildcard the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: u16,
}

/// An endpoint the fence let through: its origin and whether it was listed exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// `https://host:port`.
    pub origin: String,
    /// The host as a name or address literal (IPv6 without brackets), and the port.
    pub host: String,
    pub port: u16,
    /// The path and query to POST to.
    pub path: String,
    /// Listed by an exact entry: its addresses may be non-public (a test server, a private
    /// push service the operator runs).
    pub explicit: bool,
}

/// The parsed origin list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    entries: Vec<Entry>,
}

impl Fence {
    /// Parses the list; every bad entry is an error.
    pub fn new<S: AsRef<str>>(origins: &[S]) -> Result<Self, FenceError> {
        let entries = origins
            .iter()
            .map(|entry| parse_entry(entry.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Fence { entries })
    }

    /// The endpoint's origin and path if the list holds it; says nothing yet about addresses.
    pub fn admit(&self, endpoint: &str) -> Result<Admitted, FenceError> {
        let uri: Uri = endpoint.parse().map_err(|_| FenceError::NotHttps)?;
        if uri.scheme_str() != Some("https") {
            return Err(FenceError::NotHttps);
        }
        let authority = uri.authority().ok_or(FenceError::NotHttps)?;
        if authority.as_str().contains('@') {
            return Err(FenceError::NotHttps);
        }
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(443);
        let origin = format!("https://{}:{port}", authority.host().to_ascii_lowercase());
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let listed = |exact: bool| {
            self.entries.iter().any(|entry| {
                entry.port == port
                    && entry.wildcard != exact
                    && match entry.wildcard {
                        false => entry.host == host,
                        true => host
                            .strip_suffix(entry.host.as_str())
                            .is_some_and(|head| head.ends_with('.') && head.len() > 1),
                    }
            })
        };
        let explicit = listed(true);
        if !explicit && !listed(false) {
            return Err(FenceError::NotListed(origin));
        }
        // `path()` is `/` when the URL has none; `path_and_query()` would then be `?query`,
        // on which no request can be built.
        let path = match uri.query() {
            Some(query) => format!("{}?{query}", uri.path()),
            None => uri.path().to_owned(),
        };
        Ok(Admitted {
            origin,
            host,
            port,
            path,
            explicit,
        })
    }
}

/// `https://host[:port]`, `https://*.domain[:port]`, or the same without the scheme.
fn parse_entry(text: &str) -> Result<Entry, FenceError> {
    let bad = || FenceError::BadEntry(text.to_owned());
    let rest = text.trim().trim_end_matches('/');
    let rest = match rest.split_once("://") {
        Some(("https", rest)) => rest,
        Some(_) => return Err(bad()),
        None => rest,
    };
    let (wildcard, rest) = match rest.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let authority: http::uri::Authority = rest.parse().map_err(|_| bad())?;
    if authority.as_str().contains('@') || authority.host().is_empty() || rest.contains('/') {
        return Err(bad());
    }
    // Compared with an endpoint's host, which is taken without the brackets of an IPv6 literal.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Ok(Entry {
        host: host.to_ascii_lowercase(),
        wildcard,
        port: authority.port_u16().unwrap_or(443),
    })
}

/// Whether an address may be reached without an explicit listing: public unicast only.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b == 18 || b == 19))
        // IETF protocol assignments, 192.0.0.0/24 (DS-Lite, NAT64 discovery): local.
        || (a == 192 && b == 0 && ip.octets()[2] == 0))
}

/// Global unicast (2000::/3) only: everything outside it is reserved, local or special, and
/// some of it carries an IPv4 address (IPv4-compatible `::a.b.c.d`, IPv4-translated
/// `::ffff:0:a.b.c.d`, local-use NAT64 `64:ff9b:1::/48`) that stacks and gateways may reach.
/// Inside it, 6to4 (2002::/16) reaches the IPv4 address it carries, so that one must be public.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let first = segments[0];
    if (first & 0xe000) != 0x2000 {
        return false;
    }
    if first == 0x2002 {
        let [a, b] = segments[1].to_be_bytes();
        let [c, d] = segments[2].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    // IETF protocol assignments 2001::/23 (Teredo, 2001::/32, reaches the IPv4 addresses it
    // carries; benchmarking; ORCHIDs) and documentation 2001:db8::/32.
    !(first == 0x2001 && (segments[1] < 0x0200 || segments[1] == 0x0db8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Fence {
        Fence::new(DEFAULT_ORIGINS).unwrap()
    }

    #[test]
    fn the_default_list_admits_the_browser_push_services() {
        let fence = defaults();
        for endpoint in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://updates.push.services.mozilla.com/wpush/v2/x",
            "https://web.push.apple.com/QGx",
            "https://wns2-par02p.notify.windows.com/w/?token=x",
        ] {
            let admitted = fence.admit(endpoint).unwrap();
            assert!(
                !admitted.explicit || !endpoint.contains("windows"),
                "{endpoint}"
            );
        }
        let apple = fence.admit("https://web.push.apple.com/QGx?a=1").unwrap();
        assert_eq!(apple.origin, "https://web.push.apple.com:443");
        assert_eq!(apple.path, "/QGx?a=1");
    }

    #[test]
    fn anything_else_is_refused() {
        let fence = defaults();
        for endpoint in [
            "http://fcm.googleapis.com/fcm/send/abc",
            "https://127.0.0.1/x",
            "https://fcm.googleapis.com:8443/x",
            "https://notify.windows.com/x",
            "https://evilnotify.windows.com/x",
            "https://fcm.googleapis.com.evil.net/x",
            "https://user@fcm.googleapis.com/x",
            "not a url",
        ] {
            assert!(fence.admit(endpoint).is_err(), "{endpoint}");
        }
    }

    #[test]
    fn an_endpoint_with_a_query_and_no_path_is_posted_to_the_root() {
        // Its path and query once read "?x=1", which no request can be built on: the push was
        // answered as one the push service refused, though nothing was sent.
        let fence = Fence::new(&["https://push.example"]).unwrap();
        assert_eq!(
            fence.admit("https://push.example?x=1").unwrap().path,
            "/?x=1"
        );
        assert_eq!(fence.admit("https://push.example").unwrap().path, "/");
        assert_eq!(
            fence.admit("https://push.example/a?b").unwrap().path,
            "/a?b"
        );
    }

    #[test]
    fn an_exact_entry_is_explicit_and_a_wildcard_is_not() {
        let fence = Fence::new(&["https://127.0.0.1:8443", "*.push.example"]).unwrap();
        assert!(fence.admit("https://127.0.0.1:8443/x").unwrap().explicit);
        assert!(!fence.admit("https://a.push.example/x").unwrap().explicit);
        assert!(fence.admit("https://127.0.0.1/x").is_err());
    }

    #[test]
    fn an_exact_ipv6_entry_admits_its_origin() {
        let fence = Fence::new(&["https://[::1]:8443", "https://[2001:DB8::1]"]).unwrap();
        let admitted = fence.admit("https://[::1]:8443/x").unwrap();
        assert!(admitted.explicit);
        assert_eq!(admitted.host, "::1");
        assert_eq!(admitted.origin, "https://[::1]:8443");
        assert!(fence.admit("https://[2001:db8::1]/x").unwrap().explicit);
        assert!(fence.admit("https://[::1]/x").is_err());
        assert!(fence.admit("https://[::2]:8443/x").is_err());
    }

    #[test]
    fn bad_entries_are_errors() {
        for entry in [
            "http://a.example",
            "https://a.example/path",
            "https://u@a.example",
            "",
        ] {
            assert!(Fence::new(&[entry]).is_err(), "{entry}");
        }
    }

    #[test]
    fn ipv6_addresses_outside_global_unicast_or_carrying_a_private_ipv4_are_not_public() {
        for private in [
            // IPv4-compatible (deprecated, ::/96) and IPv4-translated (::ffff:0:0:0/96).
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0:127.0.0.1",
            // Discard-only 100::/64, local-use NAT64 64:ff9b:1::/48, reserved ::/8 and 4000::/2.
            "100::1",
            "64:ff9b:1::7f00:1",
            "::100:1",
            "4000::1",
            // 6to4 of a loopback or private IPv4 address.
            "2002:7f00:1::1",
            "2002:a00:1::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["2002:8efa:101::1", "2a00:1450::1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_ietf_protocol_assignments_block_is_not_public() {
        // 192.0.0.0/24: DS-Lite's B4 and AFTR (192.0.0.1, 192.0.0.2), NAT64 discovery
        // (192.0.0.170) and the like: local infrastructure, never a push service.
        for private in ["192.0.0.1", "192.0.0.2", "192.0.0.170", "::ffff:192.0.0.8"] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        assert!(is_public("192.0.1.1".parse().unwrap()));
        // Its IPv6 counterpart, 2001::/23, with Teredo (2001::/32), which carries an IPv4
        // server and client that relays reach, and benchmarking (2001:2::/48).
        for private in [
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        assert!(is_public("2001:4860:4860::8888".parse().unwrap()));
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["142.250.1.1", "2a00:1450::1", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
