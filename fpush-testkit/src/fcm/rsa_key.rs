//! RSA keys for test service accounts: two committed test-only keys (see `keys/README.md`), the
//! one the FCM test server trusts and a stranger it does not. ring parses and checks them.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{KeyPair, RsaKeyPair};

const TRUSTED_PEM: &str = include_str!("../../keys/service-account-rsa.pem");
const STRANGER_PEM: &str = include_str!("../../keys/stranger-rsa.pem");

/// An RSA key pair as a service-account file and a verifier need it.
pub struct RsaTestKey {
    pem: &'static str,
    pkcs8_der: Vec<u8>,
    public_der: Vec<u8>,
}

impl RsaTestKey {
    /// The key of the test service accounts, which the FCM test server trusts.
    pub fn shared() -> Arc<RsaTestKey> {
        static KEY: OnceLock<Arc<RsaTestKey>> = OnceLock::new();
        KEY.get_or_init(|| Arc::new(Self::from_pem(TRUSTED_PEM)))
            .clone()
    }

    /// A second key, which the FCM test server does not know (its assertions are refused).
    pub fn stranger() -> Arc<RsaTestKey> {
        static KEY: OnceLock<Arc<RsaTestKey>> = OnceLock::new();
        KEY.get_or_init(|| Arc::new(Self::from_pem(STRANGER_PEM)))
            .clone()
    }

    /// Decodes a committed key. They are part of this crate, so a broken one is a bug here.
    fn from_pem(pem: &'static str) -> Self {
        let base64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let pkcs8_der = STANDARD
            .decode(base64)
            .expect("committed test key is base64");
        let pair = RsaKeyPair::from_pkcs8(&pkcs8_der).expect("committed test key is RSA PKCS#8");
        Self {
            pem,
            public_der: pair.public_key().as_ref().to_vec(),
            pkcs8_der,
        }
    }

    /// The private key, PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    /// The private key as PEM (`-----BEGIN PRIVATE KEY-----`), as Google writes it.
    pub fn pkcs8_pem(&self) -> String {
        self.pem.to_string()
    }

    /// The public key, PKCS#1 `RSAPublicKey` DER (what ring verifies with).
    pub fn public_der(&self) -> &[u8] {
        &self.public_der
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};

    #[test]
    fn the_committed_keys_sign_and_verify_with_ring_and_differ() {
        for key in [RsaTestKey::shared(), RsaTestKey::stranger()] {
            let pair = RsaKeyPair::from_pkcs8(key.pkcs8_der()).unwrap();
            assert_eq!(pair.public().modulus_len(), 256, "2048 bits");
            let mut signature = vec![0; pair.public().modulus_len()];
            pair.sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                b"m",
                &mut signature,
            )
            .unwrap();
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_der())
                .verify(b"m", &signature)
                .unwrap();
            assert!(key.pkcs8_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
        }
        assert_ne!(
            RsaTestKey::shared().public_der(),
            RsaTestKey::stranger().public_der()
        );
    }
}
