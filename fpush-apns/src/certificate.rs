//! Certificate auth: the `.p12` client certificate presented in the TLS handshake, and when
//! it expires (Apple's certificates last a year; the metrics warn before).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fpush_http::{CertificateDer, ClientIdentity, PrivateKeyDer};

use crate::ApnsError;

/// Loads the `.p12` at `path`: its first key and that key's certificate chain, and when the
/// leaf certificate expires.
pub(crate) fn load_p12(
    module: &str,
    path: &Path,
    password: &str,
) -> Result<(ClientIdentity, Option<SystemTime>), ApnsError> {
    let file_error = |reason: String| ApnsError::credential(module, path, reason);
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
    let identity = ClientIdentity {
        chain: chain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into()),
    };
    let expires_at = identity
        .chain
        .first()
        .and_then(|leaf| not_after(leaf.as_ref()));
    Ok((identity, expires_at))
}

/// The notAfter of a DER certificate; `None` when it cannot be read (rustls judges the
/// certificate itself, this only feeds a gauge).
fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let seconds = certificate.validity().not_after.timestamp();
    match u64::try_from(seconds) {
        Ok(after) => UNIX_EPOCH.checked_add(Duration::from_secs(after)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs())),
    }
}
