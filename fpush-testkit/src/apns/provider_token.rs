//! Checking a provider token as Apple does: a JWT with header `alg: ES256` and the expected
//! `kid`, claims `iss` (the team) and `iat`, and an ECDSA P-256 signature (r || s) that ring
//! verifies with the key's public half.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde_json::Value;

/// The length of a P-256 `SubjectPublicKeyInfo` and where its uncompressed point starts.
const P256_SPKI_LEN: usize = 91;
const P256_POINT_AT: usize = 26;

/// The provider token claims Apple reads.
#[derive(Debug, Clone)]
pub(crate) struct Claims {
    pub iat: u64,
}

/// Verifies the provider tokens of one key.
pub(crate) struct TokenVerifier {
    /// The uncompressed point (`04 || x || y`).
    public_key: Vec<u8>,
    key_id: String,
    team_id: String,
}

impl TokenVerifier {
    /// From the key's public half as PEM (`SubjectPublicKeyInfo`, as rcgen writes it).
    pub fn new(public_pem: &str, key_id: &str, team_id: &str) -> Result<Self, String> {
        let base64: String = public_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(base64)
            .map_err(|e| format!("public key is not PEM: {e}"))?;
        if der.len() != P256_SPKI_LEN || der[P256_POINT_AT] != 0x04 {
            return Err("public key is not an uncompressed P-256 key".into());
        }
        Ok(Self {
            public_key: der[P256_POINT_AT..].to_vec(),
            key_id: key_id.to_string(),
            team_id: team_id.to_string(),
        })
    }

    /// The claims of `jwt` when its header, signature and issuer are right.
    pub fn verify(&self, jwt: &str) -> Option<Claims> {
        let mut parts = jwt.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let decode = |part: &str| -> Option<Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
        };
        let header = decode(header)?;
        if header["alg"] != "ES256" || header["kid"] != self.key_id.as_str() {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let signed = &jwt[..jwt.len() - jwt.rsplit('.').next()?.len() - 1];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public_key)
            .verify(signed.as_bytes(), &signature)
            .ok()?;
        let claims = decode(claims)?;
        if claims["iss"] != self.team_id.as_str() {
            return None;
        }
        Some(Claims {
            iat: claims["iat"].as_u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn jwt(key: &rcgen::KeyPair, header: Value, claims: Value) -> String {
        let rng = SystemRandom::new();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng)
                .unwrap();
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = pair.sign(&rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    #[test]
    fn accepts_the_right_token_and_refuses_wrong_kid_iss_alg_or_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let verifier = TokenVerifier::new(&key.public_key_pem(), "KID", "TEAM").unwrap();
        let header = serde_json::json!({"alg": "ES256", "kid": "KID"});
        let claims = serde_json::json!({"iss": "TEAM", "iat": 1_700_000_000u64});
        let good = jwt(&key, header.clone(), claims.clone());
        assert_eq!(verifier.verify(&good).unwrap().iat, 1_700_000_000);

        let wrong_kid = jwt(
            &key,
            serde_json::json!({"alg": "ES256", "kid": "X"}),
            claims.clone(),
        );
        let wrong_alg = jwt(
            &key,
            serde_json::json!({"alg": "HS256", "kid": "KID"}),
            claims.clone(),
        );
        let wrong_iss = jwt(
            &key,
            header.clone(),
            serde_json::json!({"iss": "X", "iat": 1}),
        );
        let other_key = jwt(&rcgen::KeyPair::generate().unwrap(), header, claims);
        for refused in [wrong_kid, wrong_alg, wrong_iss, other_key, "a.b".into()] {
            assert!(verifier.verify(&refused).is_none(), "{refused}");
        }
    }
}
