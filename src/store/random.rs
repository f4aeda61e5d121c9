//! Fresh registration nodes and secrets from the operating system's CSPRNG (ring's
//! `SystemRandom`).
//!
//! Standard base64 (`A–Z a–z 0–9 + /`), as p2 hands them out: every character is plain text in
//! an XML attribute and in a data-form value, and 9 and 18 bytes encode without padding.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use super::{Credentials, StoreError};

/// Random bytes of a node: 12 base64 characters, unique per domain (checked by the backends).
const NODE_BYTES: usize = 9;
/// Random bytes of a secret: 24 base64 characters.
const SECRET_BYTES: usize = 18;

/// A new node and secret.
pub(crate) fn credentials() -> Result<Credentials, StoreError> {
    Ok(Credentials {
        node: node()?,
        secret: encoded::<SECRET_BYTES>()?,
    })
}

/// A new node (to retry a collision without a new secret).
pub(crate) fn node() -> Result<String, StoreError> {
    encoded::<NODE_BYTES>()
}

fn encoded<const N: usize>() -> Result<String, StoreError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Unavailable("the system's random generator failed".into()))?;
    Ok(STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_have_12_and_secrets_24_base64_characters_and_differ() {
        let first = credentials().unwrap();
        let second = credentials().unwrap();
        assert_eq!(first.node.len(), 12);
        assert_eq!(first.secret.len(), 24);
        assert_ne!(first, second);
        for text in [&first.node, &first.secret] {
            assert!(STANDARD.decode(text).is_ok(), "{text}");
            assert!(!text.contains('='), "{text}");
        }
    }
}
