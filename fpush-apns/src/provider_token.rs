//! Token auth: the ES256 provider token (`{iss: teamId, iat}`, header `kid: keyId`) signed with
//! the `.p8` key by ring, sent as `authorization: bearer`.
//!
//! Apple rejects a token older than an hour and answers `TooManyProviderTokenUpdates` when a
//! provider renews more often than every 20 minutes, so the token is reused for [`RENEW_AFTER`]
//! and only ever replaced early when Apple rejects it and it is at least [`MIN_RENEW_INTERVAL`]
//! old. After a `TooManyProviderTokenUpdates` (another process renews with the same key) no
//! token is signed for [`MIN_RENEW_INTERVAL`]: the current one stays in use, since every new one
//! would restart Apple's count. A token's age is the older of its age on the monotonic clock and
//! its age by its `iat` on the wall clock, as Apple sees it (see [`Signed`]).

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use tokio::time::Instant;

use crate::clock::unix_now;
use crate::ApnsError;

/// A token is replaced once it is this old (Apple's limit is one hour).
pub const RENEW_AFTER: Duration = Duration::from_secs(50 * 60);
/// A token is never replaced before it is this old.
pub const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// Signs and caches the provider token.
pub(crate) struct TokenSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The JWT header, base64url-encoded once: `{"alg":"ES256","kid":…}`.
    header: String,
    team_id: String,
    current: RwLock<Option<Arc<Signed>>>,
    /// Until when no new token is signed (Apple refused our renewals).
    renewals_held_until: Mutex<Option<Instant>>,
}

/// One signed token and when it was made.
#[derive(Debug)]
pub(crate) struct Signed {
    pub bearer: HeaderValue,
    pub made: Instant,
    /// The `iat` it carries (unix seconds): how old Apple finds it.
    pub iat: u64,
}

impl Signed {
    /// How old the token is: by the monotonic clock, or by the wall clock when that says
    /// older. The monotonic clock stands still while the machine is suspended, and a clock set
    /// late at boot backdates `iat`: Apple, which reads `iat`, then finds the token expired.
    fn age(&self) -> Duration {
        // `iat` is cut to whole seconds: read a second less, so this never says older.
        let by_iat = unix_now().saturating_sub(self.iat).saturating_sub(1);
        let by_iat = Duration::from_secs(by_iat);
        self.made.elapsed().max(by_iat)
    }
}

impl TokenSigner {
    /// Reads the `.p8` key from `pem` (the contents of `path`) and signs a first token, so a
    /// key that cannot sign fails at start-up. `path` only names the file in errors.
    pub fn from_pem(
        module: &str,
        path: &Path,
        pem: &[u8],
        key_id: &str,
        team_id: &str,
    ) -> Result<Self, ApnsError> {
        let file_error = |reason: String| ApnsError::credential(module, path, reason);
        let rng = SystemRandom::new();
        let key = match PrivateKeyDer::from_pem_slice(pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                der.secret_pkcs8_der(),
                &rng,
            )
            .map_err(|e| file_error(format!("not a P-256 key for ES256 ({e})")))?,
            Ok(_) => return Err(file_error("not a PKCS#8 private key (.p8)".into())),
            Err(e) => return Err(file_error(format!("not a PEM private key (.p8): {e}"))),
        };
        let header = serde_json::json!({"alg": "ES256", "kid": key_id}).to_string();
        let signer = Self {
            key,
            rng,
            header: URL_SAFE_NO_PAD.encode(header),
            team_id: team_id.to_string(),
            current: RwLock::new(None),
            renewals_held_until: Mutex::new(None),
        };
        let first = signer
            .sign()
            .map_err(|e| file_error(format!("cannot sign with this key: {e}")))?;
        if let Ok(mut slot) = signer.current.write() {
            *slot = Some(first);
        }
        Ok(signer)
    }

    fn sign(&self) -> Result<Arc<Signed>, String> {
        let iat = unix_now();
        let claims = serde_json::json!({"iss": self.team_id, "iat": iat}).to_string();
        let mut jwt = String::with_capacity(200);
        jwt.push_str("bearer ");
        let signed_from = jwt.len();
        jwt.push_str(&self.header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        let signature = self
            .key
            .sign(&self.rng, &jwt.as_bytes()[signed_from..])
            .map_err(|_| "ECDSA signing failed".to_string())?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jwt);
        let mut bearer = HeaderValue::from_str(&jwt).map_err(|e| e.to_string())?;
        // As FCM's bearer token: hidden from `Debug` and sent as never-indexed (RFC 7541,
        // 7.1.3), since whoever holds it can push to every app of the team for up to an hour.
        bearer.set_sensitive(true);
        Ok(Arc::new(Signed {
            bearer,
            made: Instant::now(),
            iat,
        }))
    }

    /// The token to send now: the cached one while it is younger than [`RENEW_AFTER`] or
    /// renewals are held.
    pub fn current(&self) -> Result<Arc<Signed>, String> {
        if let Some(signed) = self.read() {
            if signed.age() < RENEW_AFTER || self.renewals_held() {
                return Ok(signed);
            }
        }
        let mut slot = self
            .current
            .write()
            .map_err(|_| "token cache poisoned".to_string())?;
        if let Some(signed) = slot.as_ref() {
            // Another push renewed it while we waited for the lock.
            if signed.age() < RENEW_AFTER || self.renewals_held() {
                return Ok(signed.clone());
            }
        }
        let fresh = self.sign()?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// Apple rejected `rejected`. Returns true when a retry may use a different token: either
    /// one was already made since, or `rejected` is old enough to be replaced now (and
    /// renewals are not held).
    pub fn rejected(&self, rejected: &Arc<Signed>) -> bool {
        let Ok(mut slot) = self.current.write() else {
            return false;
        };
        if self.renewals_held() {
            return false;
        }
        match slot.as_ref() {
            Some(current) if !Arc::ptr_eq(current, rejected) => true,
            _ if rejected.age() >= MIN_RENEW_INTERVAL => {
                *slot = None;
                true
            }
            _ => false,
        }
    }

    /// Apple answered `TooManyProviderTokenUpdates`: sign no new token for
    /// [`MIN_RENEW_INTERVAL`] from now, and keep sending the current one.
    pub fn hold_renewals(&self) {
        let until = Instant::now() + MIN_RENEW_INTERVAL;
        *self.held_until() = Some(until);
    }

    fn renewals_held(&self) -> bool {
        self.held_until()
            .is_some_and(|until| Instant::now() < until)
    }

    fn held_until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.renewals_held_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self) -> Option<Arc<Signed>> {
        self.current.read().ok().and_then(|slot| slot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use ring::signature::{KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    /// A fresh `.p8` (PKCS#8 PEM, as Apple hands them out) and its public key.
    fn p8_key(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(pkcs8.as_ref())
        );
        let path = dir.join("AuthKey_KEY1234567.p8");
        std::fs::write(&path, pem).unwrap();
        (path, pair.public_key().as_ref().to_vec())
    }

    fn load(path: &Path, key_id: &str, team_id: &str) -> Result<TokenSigner, ApnsError> {
        let pem = std::fs::read(path).unwrap();
        TokenSigner::from_pem("ios", path, &pem, key_id, team_id)
    }

    fn json_part(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn the_provider_token_is_es256_with_kid_iss_and_iat_and_verifies_with_ring() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public_key) = p8_key(dir.path());
        let before = unix_now();
        let signer = load(&path, "KEY1234567", "TEAM123456").unwrap();
        let signed = signer.current().unwrap();
        let bearer = signed.bearer.to_str().unwrap();
        let jwt = bearer.strip_prefix("bearer ").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);

        assert_eq!(
            json_part(parts[0]),
            serde_json::json!({"alg": "ES256", "kid": "KEY1234567"})
        );
        let claims = json_part(parts[1]);
        assert_eq!(claims["iss"], "TEAM123456");
        let iat = claims["iat"].as_u64().unwrap();
        assert!((before..=unix_now()).contains(&iat), "{iat}");

        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64, "JWS wants r || s, not DER");
        let signed_part = &jwt[..parts[0].len() + 1 + parts[1].len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public_key)
            .verify(signed_part.as_bytes(), &signature)
            .expect("ring verifies the provider token");
    }

    #[tokio::test]
    async fn the_provider_token_is_a_sensitive_header_and_kept_out_of_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = p8_key(dir.path());
        let signer = load(&path, "K", "T").unwrap();
        let signed = signer.current().unwrap();
        assert!(signed.bearer.is_sensitive());
        let jwt = signed
            .bearer
            .to_str()
            .unwrap()
            .strip_prefix("bearer ")
            .unwrap();
        assert!(!format!("{signed:?}").contains(jwt));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_for_50_minutes_and_renewed_on_rejection_only_from_20() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = p8_key(dir.path());
        let signer = load(&path, "K", "T").unwrap();
        let first = signer.current().unwrap();

        tokio::time::advance(MIN_RENEW_INTERVAL - Duration::from_secs(1)).await;
        assert!(!signer.rejected(&first), "too young to replace");
        assert!(Arc::ptr_eq(&first, &signer.current().unwrap()));

        tokio::time::advance(RENEW_AFTER - MIN_RENEW_INTERVAL - Duration::from_secs(1)).await;
        assert!(
            Arc::ptr_eq(&first, &signer.current().unwrap()),
            "reused below 50 minutes"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let renewed = signer.current().unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed), "renewed at 50 minutes");
        assert!(signer.rejected(&first), "a newer token exists already");

        tokio::time::advance(MIN_RENEW_INTERVAL).await;
        assert!(signer.rejected(&renewed), "20 minutes old: may be replaced");
        assert!(!Arc::ptr_eq(&renewed, &signer.current().unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn after_too_many_updates_no_token_is_signed_for_20_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = p8_key(dir.path());
        let signer = load(&path, "K", "T").unwrap();
        let first = signer.current().unwrap();
        tokio::time::advance(Duration::from_secs(45 * 60)).await;
        signer.hold_renewals();

        tokio::time::advance(Duration::from_secs(6 * 60)).await;
        assert!(
            Arc::ptr_eq(&first, &signer.current().unwrap()),
            "51 minutes old, yet kept while renewals are held"
        );
        assert!(!signer.rejected(&first), "no renewal on a refusal either");
        tokio::time::advance(MIN_RENEW_INTERVAL - Duration::from_secs(6 * 60 + 1)).await;
        assert!(Arc::ptr_eq(&first, &signer.current().unwrap()));

        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            !Arc::ptr_eq(&first, &signer.current().unwrap()),
            "20 minutes after the refusal: renewed"
        );
    }

    /// Replaces the current token with one whose `iat` is `behind` older than its monotonic
    /// age: what a machine sees after a suspend, or after its clock was set late.
    fn backdate_current(signer: &TokenSigner, behind: Duration) -> Arc<Signed> {
        let current = signer.current().unwrap();
        let backdated = Arc::new(Signed {
            bearer: current.bearer.clone(),
            made: current.made,
            iat: current.iat - behind.as_secs(),
        });
        *signer.current.write().unwrap() = Some(backdated.clone());
        backdated
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_apple_finds_old_is_renewed_though_the_monotonic_clock_stood_still() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = p8_key(dir.path());
        let signer = load(&path, "K", "T").unwrap();
        let stale = backdate_current(&signer, Duration::from_secs(2 * 3600));
        let renewed = signer.current().unwrap();
        assert!(!Arc::ptr_eq(&stale, &renewed), "two hours old by its iat");

        let rejected = backdate_current(&signer, MIN_RENEW_INTERVAL + Duration::from_secs(1));
        assert!(signer.rejected(&rejected), "over 20 minutes old by its iat");
        assert!(!Arc::ptr_eq(&rejected, &signer.current().unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_set_back_does_not_make_a_token_younger() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = p8_key(dir.path());
        let signer = load(&path, "K", "T").unwrap();
        let first = signer.current().unwrap();
        let ahead = Arc::new(Signed {
            bearer: first.bearer.clone(),
            made: first.made,
            iat: first.iat + 3 * 3600,
        });
        *signer.current.write().unwrap() = Some(ahead.clone());
        tokio::time::advance(RENEW_AFTER).await;
        assert!(!Arc::ptr_eq(&ahead, &signer.current().unwrap()));
    }

    #[test]
    fn a_key_that_is_not_a_p8_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("AuthKey_BROKEN.p8");
        std::fs::write(&path, "not a key").unwrap();
        let err = load(&path, "K", "T").err().unwrap();
        assert!(err.to_string().contains("AuthKey_BROKEN.p8"), "{err}");
    }
}
