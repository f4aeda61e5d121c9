//! Certificate auth: the `.p12` client certificate presented in the TLS handshake.

use std::path::Path;

use fpush_http::{CertificateDer, ClientIdentity, PrivateKeyDer};

use crate::ApnsError;

/// Loads the `.p12` at `path`: its first key and that key's certificate chain.
pub(crate) fn load_p12(
    module: &str,
    path: &Path,
    password: &str,
) -> Result<ClientIdentity, ApnsError> {
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
    Ok(ClientIdentity {
        chain: chain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into()),
    })
}
