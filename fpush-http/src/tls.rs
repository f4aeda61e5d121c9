//! The client TLS configuration: webpki roots plus an optional CA file, ALPN h2 then http/1.1,
//! and the client certificate when one is configured.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::{HttpConfig, HttpError};

pub(crate) fn client_config(cfg: &HttpConfig) -> Result<Arc<ClientConfig>, HttpError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.ca_file {
        let mut added = 0;
        let certs = CertificateDer::pem_file_iter(path).map_err(|source| HttpError::CaFile {
            path: path.clone(),
            source,
        })?;
        for cert in certs {
            let cert = cert.map_err(|source| HttpError::CaFile {
                path: path.clone(),
                source,
            })?;
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(HttpError::CaFileEmpty { path: path.clone() });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(HttpError::TlsConfig)?
        .with_root_certificates(roots);
    let mut config = match &cfg.client_identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(HttpError::TlsConfig)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
