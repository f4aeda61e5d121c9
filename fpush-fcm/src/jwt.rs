//! The RS256 JWT assertion a service account trades for an access token (RFC 7523).
//!
//! Small enough to write out: a fixed header, five claims, one RSA PKCS#1 v1.5 SHA-256 signature
//! by ring. A JWT library would bring a second crypto stack for this one signature.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Serialize;

/// The OAuth scope that allows sending FCM messages.
pub(crate) const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// How long an assertion is valid; Google accepts at most one hour.
pub(crate) const ASSERTION_LIFETIME_SECS: u64 = 3600;

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// Who signs and for whom: the parts of the service account the assertion names.
pub(crate) struct AssertionSigner<'a> {
    pub key: &'a RsaKeyPair,
    pub key_id: Option<&'a str>,
    pub client_email: &'a str,
    pub token_uri: &'a str,
}

/// Why an assertion could not be made (only a broken system RNG or key can cause it).
#[derive(Debug, thiserror::Error)]
#[error("signing the OAuth assertion failed")]
pub(crate) struct SignError;

impl AssertionSigner<'_> {
    /// A signed assertion issued at `now_unix` (seconds since the epoch).
    pub fn sign(&self, now_unix: u64) -> Result<String, SignError> {
        let header = Header {
            alg: "RS256",
            typ: "JWT",
            kid: self.key_id,
        };
        let claims = Claims {
            iss: self.client_email,
            scope: FCM_SCOPE,
            aud: self.token_uri,
            iat: now_unix,
            exp: now_unix + ASSERTION_LIFETIME_SECS,
        };
        let header = serde_json::to_vec(&header).map_err(|_| SignError)?;
        let claims = serde_json::to_vec(&claims).map_err(|_| SignError)?;
        let mut jwt = URL_SAFE_NO_PAD.encode(header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);

        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| SignError)?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fpush_testkit::fcm::TestServiceAccount;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    #[test]
    fn assertion_carries_the_claims_google_checks_and_verifies() {
        let account = TestServiceAccount::generate("demo", "https://localhost:9/token");
        let key = RsaKeyPair::from_pkcs8(account.private_key_pkcs8()).unwrap();
        let signer = AssertionSigner {
            key: &key,
            key_id: Some("abc123"),
            client_email: account.client_email(),
            token_uri: "https://localhost:9/token",
        };
        let jwt = signer.sign(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);

        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "abc123"})
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], account.client_email());
        assert_eq!(claims["aud"], "https://localhost:9/token");
        assert_eq!(claims["scope"], FCM_SCOPE);
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_003_600u64);

        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = &jwt[..parts[0].len() + 1 + parts[1].len()];
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public().as_ref())
            .verify(signed.as_bytes(), &signature)
            .unwrap();
    }
}
