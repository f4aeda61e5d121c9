//! The local check a device token must pass before Google is asked about it.
//!
//! FCM registration tokens are opaque, but every one Google hands out is an instance id, a
//! colon and URL-safe base64 (`[A-Za-z0-9_-]`), some 150 to 200 bytes today. Google documents
//! no bound; 4 KiB (the bound it gave for the older GCM registration ids) leaves room to grow.
//! Anything else cannot be a token: it is refused without a request, so a flood of junk costs
//! neither provider quota nor a connection slot.

/// The longest token sent to Google.
pub(crate) const MAX_TOKEN_LEN: usize = 4096;

/// Whether `token` can be an FCM registration token.
pub(crate) fn plausible_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_token_shapes_pass() {
        let modern = format!("cT7x9Qz1RkW3bXy:APA91b{}", "Hq-_Zk9".repeat(20));
        assert!(plausible_token(&modern));
        assert!(plausible_token("APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx"));
        assert!(plausible_token(&"a".repeat(MAX_TOKEN_LEN)));
    }

    #[test]
    fn what_cannot_be_a_token_is_refused() {
        for junk in ["", "x/1", "a b", "a.b", "a?b", "tok\u{e9}n", "a=", "a\nb"] {
            assert!(!plausible_token(junk), "{junk:?}");
        }
        assert!(!plausible_token(&"a".repeat(MAX_TOKEN_LEN + 1)));
    }
}
