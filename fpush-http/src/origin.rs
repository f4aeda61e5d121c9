//! The one origin a client talks to, parsed once.

use http::uri::{Authority, PathAndQuery, Scheme, Uri};

use crate::HttpError;

/// `https://host[:port]`, with the parts every request needs.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) text: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) authority: Authority,
}

impl Origin {
    pub(crate) fn parse(origin: &str) -> Result<Self, HttpError> {
        let invalid = |reason: &str| HttpError::InvalidOrigin {
            origin: without_credentials(origin),
            reason: reason.to_string(),
        };
        let uri: Uri = origin.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme() != Some(&Scheme::HTTPS) {
            return Err(invalid("the scheme must be https"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?.clone();
        if authority.as_str().contains('@') {
            // HTTP/2 forbids credentials in `:authority`.
            return Err(invalid("an origin has no user or password"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("an origin has no path"));
        }
        // `:authority` as browsers and HTTP libraries write it: without the default port (a
        // Web Push origin is kept as `https://host:443`, and a front end may compare the
        // authority with its host names as written).
        let authority = match authority.port_u16() {
            Some(443) => Authority::try_from(authority.host()).map_err(|_| invalid("no host"))?,
            _ => authority,
        };
        // IPv6 literals come bracketed; the TLS server name and the socket address want them bare.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(Self {
            text: format!("https://{authority}"),
            port: authority.port_u16().unwrap_or(443),
            host,
            authority,
        })
    }

    /// The absolute URI of a request's path (and query) on this origin (HTTP/2 sends scheme
    /// and authority as pseudo-headers). The parts are reused as they are: nothing is parsed.
    pub(crate) fn uri(&self, request_uri: &Uri) -> Result<Uri, HttpError> {
        let path = request_uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        self.uri_of(path)
    }

    /// The absolute URI of `path` on this origin.
    pub(crate) fn uri_of(&self, path: PathAndQuery) -> Result<Uri, HttpError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTPS);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).map_err(|e| HttpError::InvalidRequest(format!("bad URI: {e}")))
    }
}

/// `origin` as an error names it: without a user or password, which would otherwise be
/// written to every log line about it, whatever else is wrong with it.
fn without_credentials(origin: &str) -> String {
    let rest = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let scheme = &origin[..origin.len() - rest.len()];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}{host}{}", &rest[end..]),
        None => origin.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_default_port() {
        let o = Origin::parse("https://api.push.apple.com").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("api.push.apple.com", 443));
        let o = Origin::parse("https://localhost:8443/").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("localhost", 8443));
        assert_eq!(o.text, "https://localhost:8443");
        let o = Origin::parse("https://[::1]:9/").unwrap();
        assert_eq!(o.host, "::1");
    }

    #[test]
    fn the_default_port_is_left_out_of_the_authority() {
        let o = Origin::parse("https://push.example:443").unwrap();
        assert_eq!((o.authority.as_str(), o.port), ("push.example", 443));
        assert_eq!(o.text, "https://push.example");
        let o = Origin::parse("https://[2001:db8::1]:443/").unwrap();
        assert_eq!(
            (o.authority.as_str(), o.host.as_str()),
            ("[2001:db8::1]", "2001:db8::1")
        );
    }

    #[test]
    fn rejects_plain_http_and_paths() {
        assert!(Origin::parse("http://localhost").is_err());
        assert!(Origin::parse("https://localhost/v1").is_err());
        assert!(Origin::parse("localhost:443").is_err());
    }

    #[test]
    fn refuses_a_user_and_password_without_repeating_them() {
        let err = Origin::parse("https://fpush:s3cret@proxy.example:8443").unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("fpush:"),
            "{text}"
        );
        assert!(text.contains("https://proxy.example:8443"), "{text}");
        assert!(Origin::parse("https://@proxy.example").is_err());
        for wrong in [
            "http://fpush:s3cret@proxy.example",
            "https://fpush:s3 cret@proxy",
        ] {
            let text = Origin::parse(wrong).unwrap_err().to_string();
            assert!(!text.contains("s3"), "{wrong}: {text}");
        }
    }

    #[test]
    fn request_paths_land_on_the_origin() {
        let o = Origin::parse("https://localhost:8443").unwrap();
        let uri = o.uri(&Uri::from_static("/3/device/ab?x=1")).unwrap();
        assert_eq!(uri.to_string(), "https://localhost:8443/3/device/ab?x=1");
        let uri = o.uri(&Uri::from_static("https://elsewhere/v1")).unwrap();
        assert_eq!(uri.to_string(), "https://localhost:8443/v1");
    }
}
