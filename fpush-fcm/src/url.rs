//! Splitting an `https://` URL from the settings into the origin the HTTP client connects to and
//! the path its requests use.

use http::Uri;

/// An `https` URL cut into what the transport needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpsUrl {
    /// `https://host[:port]`, what an [`fpush_http::HttpClient`] is built for.
    pub origin: String,
    /// The path (and query), without a trailing `/` unless it is the root.
    pub path: String,
}

/// Parses `text` as an absolute `https` URL. The error is a phrase to put after the setting's
/// name ("is not …").
pub(crate) fn parse_https_url(text: &str) -> Result<HttpsUrl, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("is not a valid URL ({e})"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some(other) => return Err(format!("must be an https URL, not {other}")),
        None => return Err("must be an absolute https URL".to_string()),
    }
    let authority = uri.authority().ok_or_else(|| "has no host".to_string())?;
    if authority.as_str().contains('@') {
        // Not echoed: the URL would carry the password into every error and log line.
        return Err("must not hold a user or password".to_string());
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .trim_end_matches('/');
    Ok(HttpsUrl {
        origin: format!("https://{authority}"),
        path: if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_or_password_is_refused_without_being_echoed() {
        let refused = parse_https_url("https://user:hunter2@localhost:8443").err();
        assert_eq!(refused.as_deref(), Some("must not hold a user or password"));
    }

    #[test]
    fn splits_origin_and_path() {
        let url = parse_https_url("https://oauth2.googleapis.com/token").unwrap();
        assert_eq!(url.origin, "https://oauth2.googleapis.com");
        assert_eq!(url.path, "/token");
        let url = parse_https_url("https://localhost:8443/").unwrap();
        assert_eq!(url.origin, "https://localhost:8443");
        assert_eq!(url.path, "/");
        let url = parse_https_url("https://fcm.googleapis.com").unwrap();
        assert_eq!(url.path, "/");
    }

    #[test]
    fn refuses_what_is_not_https() {
        assert!(parse_https_url("http://fcm.googleapis.com")
            .unwrap_err()
            .contains("https"));
        assert!(parse_https_url("/token").is_err());
        assert!(parse_https_url("not a url").is_err());
    }
}
