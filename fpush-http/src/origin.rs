//! The one origin a client talks to, parsed once.

use http::uri::{Authority, Scheme, Uri};

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
            origin: origin.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = origin.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme() != Some(&Scheme::HTTPS) {
            return Err(invalid("the scheme must be https"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?.clone();
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("an origin has no path"));
        }
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

    /// The absolute URI of `path_and_query` on this origin (HTTP/2 sends scheme and authority
    /// as pseudo-headers).
    pub(crate) fn uri(&self, path_and_query: &str) -> Result<Uri, HttpError> {
        Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| HttpError::InvalidRequest(format!("bad path {path_and_query:?}: {e}")))
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
    fn rejects_plain_http_and_paths() {
        assert!(Origin::parse("http://localhost").is_err());
        assert!(Origin::parse("https://localhost/v1").is_err());
        assert!(Origin::parse("localhost:443").is_err());
    }
}
