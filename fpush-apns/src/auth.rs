//! The two ways to authenticate to APNS, loaded and checked at start-up.
//!
//! Certificate auth presents a `.p12` client certificate during the TLS handshake. Token auth
//! signs an ES256 JWT (`{iss: teamId, iat}`, header `kid: keyId`) with the `.p8` key and sends it
//! as `authorization: bearer`. Apple rejects a token older than an hour and answers
//! `TooManyProviderTokenUpdates` when a provider renews more often than every 20 minutes, so the
//! token is reused for [`RENEW_AFTER`] and only ever replaced early when Apple rejects it and it
//! is at least [`MIN_RENEW_INTERVAL`] old.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fpush_http::{CertificateDer, ClientIdentity, PrivateKeyDer};
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::time::Instant;

use crate::clock::unix_now;
use crate::ApnsError;

/// A token is replaced once it is this old (Apple's limit is one hour).
pub const RENEW_AFTER: Duration = Duration::from_secs(50 * 60);
/// A token is never replaced before it is this old.
pub const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// Loads the `.p12` at `path`: its first key and that key's certificate chain.
pub fn load_p12(module: &str, path: &Path, password: &str) -> Result<ClientIdentity, ApnsError> {
    let file_error = |reason: String| ApnsError::Credential {
        module: module.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    let store = p12_keystore::KeyStore::from_pkcs12(
        &bytes,
        password,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .map_err(|e| file_error(format!("not a PKCS#12 file or wrong certPassword ({e})")))?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| file_error("holds no private key".into()))?;
    if chain.certs().is_empty() {
        return Err(file_error("holds no certificate for its key".into()));
    }
    Ok(ClientIdentity {
        chain: chain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into()),
    })
}

/// Signs and caches the provider token.
pub struct TokenSigner {
    key: EncodingKey,
    header: Header,
    team_id: String,
    current: RwLock<Option<Arc<Signed>>>,
}

/// One signed token and when it was made.
#[derive(Debug)]
pub struct Signed {
    pub bearer: HeaderValue,
    pub made: Instant,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl TokenSigner {
    /// Reads the `.p8` key and signs a first token, so a key that cannot sign fails at start-up.
    pub fn load(module: &str, path: &Path, key_id: &str, team_id: &str) -> Result<Self, ApnsError> {
        let file_error = |reason: String| ApnsError::Credential {
            module: module.to_string(),
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
        let key = EncodingKey::from_ec_pem(&pem)
            .map_err(|e| file_error(format!("not a PEM EC private key (.p8): {e}")))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key_id.to_string());
        let signer = Self {
            key,
            header,
            team_id: team_id.to_string(),
            current: RwLock::new(None),
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
        let claims = Claims {
            iss: &self.team_id,
            iat: unix_now(),
        };
        let jwt =
            jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| e.to_string())?;
        let bearer = HeaderValue::from_str(&format!("bearer {jwt}")).map_err(|e| e.to_string())?;
        Ok(Arc::new(Signed {
            bearer,
            made: Instant::now(),
        }))
    }

    /// The token to send now: the cached one while it is younger than [`RENEW_AFTER`].
    pub fn current(&self) -> Result<Arc<Signed>, String> {
        if let Some(signed) = self.read() {
            if signed.made.elapsed() < RENEW_AFTER {
                return Ok(signed);
            }
        }
        let mut slot = self
            .current
            .write()
            .map_err(|_| "token cache poisoned".to_string())?;
        if let Some(signed) = slot.as_ref() {
            // Another push renewed it while we waited for the lock.
            if signed.made.elapsed() < RENEW_AFTER {
                return Ok(signed.clone());
            }
        }
        let fresh = self.sign()?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// Apple rejected `rejected`. Returns true when a retry may use a different token: either
    /// one was already made since, or `rejected` is old enough to be replaced now.
    pub fn rejected(&self, rejected: &Arc<Signed>) -> bool {
        let Ok(mut slot) = self.current.write() else {
            return false;
        };
        match slot.as_ref() {
            Some(current) if !Arc::ptr_eq(current, rejected) => true,
            _ if rejected.made.elapsed() >= MIN_RENEW_INTERVAL => {
                *slot = None;
                true
            }
            _ => false,
        }
    }

    fn read(&self) -> Option<Arc<Signed>> {
        self.current.read().ok().and_then(|slot| slot.clone())
    }
}

/// Which auth mode a module uses, decided from which keys are set.
pub enum AuthMode {
    Certificate {
        path: PathBuf,
        password: String,
    },
    Token {
        path: PathBuf,
        key_id: String,
        team_id: String,
    },
}
