//! Reading and checking the service-account JSON that Firebase hands out.
//!
//! Everything that can be wrong with the file is found here, at start-up, so `fpush --check`
//! catches it: the file, its JSON, the four fields FCM needs, and whether the key is an RSA key
//! ring can sign with. The private key never leaves this module except as a signer.

use std::path::Path;

use ring::digest::{digest, SHA256};
use ring::signature::RsaKeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde::Deserialize;

use crate::error::FcmError;
use crate::url::{parse_https_url, HttpsUrl};

/// A checked service account: who we are to Google and how we sign our token requests.
pub(crate) struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    /// `private_key_id`, sent as the assertion's `kid` so Google finds the key at once.
    pub key_id: Option<String>,
    /// The OAuth token endpoint, exactly as written in the file (it is also the JWT `aud`).
    pub token_uri: String,
    /// `token_uri` cut into origin and path.
    pub token_url: HttpsUrl,
    pub key: RsaKeyPair,
    /// SHA-256 of the file: modules built from the same file share their access tokens.
    pub fingerprint: Vec<u8>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// The fields we read; the file carries more (`private_key_id`, `client_id`, `auth_uri`, …).
#[derive(Deserialize)]
struct RawServiceAccount {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    client_email: Option<String>,
    token_uri: Option<String>,
    /// Only in `google-services.json`, the app's client config, which people mistake for this.
    project_info: Option<serde::de::IgnoredAny>,
}

impl ServiceAccount {
    /// Reads and checks the file at `path` for the module `module`.
    pub fn load(module: &str, path: &Path) -> Result<Self, FcmError> {
        let bytes = std::fs::read(path).map_err(|source| FcmError::ReadServiceAccount {
            module: module.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(module, path, &bytes)
    }

    /// Checks the contents of a service-account file (`path` is only used in errors).
    pub fn parse(module: &str, path: &Path, bytes: &[u8]) -> Result<Self, FcmError> {
        let raw: RawServiceAccount =
            serde_json::from_slice(bytes).map_err(|source| FcmError::ServiceAccountJson {
                module: module.to_string(),
                path: path.to_path_buf(),
                source,
            })?;
        let invalid = |field: &'static str, reason: String| FcmError::InvalidField {
            module: module.to_string(),
            path: path.to_path_buf(),
            field,
            reason,
        };
        if raw.project_info.is_some() {
            return Err(FcmError::WrongFile {
                module: module.to_string(),
                path: path.to_path_buf(),
            });
        }
        if let Some(kind) = raw.kind.as_deref() {
            if kind != "service_account" {
                return Err(invalid(
                    "type",
                    format!("is {kind:?}, expected \"service_account\""),
                ));
            }
        }
        let required = |value: Option<String>, field: &'static str| match value {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(FcmError::MissingField {
                module: module.to_string(),
                path: path.to_path_buf(),
                field,
            }),
        };
        let project_id = required(raw.project_id, "project_id")?;
        let private_key = required(raw.private_key, "private_key")?;
        let client_email = required(raw.client_email, "client_email")?;
        let token_uri = required(raw.token_uri, "token_uri")?;

        if project_id.contains(['/', '?', '#', ' ', '%']) {
            return Err(invalid(
                "project_id",
                "is not a valid Firebase project id".to_string(),
            ));
        }
        let token_url =
            parse_https_url(&token_uri).map_err(|reason| invalid("token_uri", reason))?;
        let key = parse_rsa_key(&private_key).map_err(|reason| invalid("private_key", reason))?;
        Ok(Self {
            project_id,
            client_email,
            key_id: raw.private_key_id.filter(|id| !id.is_empty()),
            token_uri,
            token_url,
            key,
            fingerprint: digest(&SHA256, bytes).as_ref().to_vec(),
        })
    }
}

/// Reads an RSA private key from PEM (PKCS#8 `PRIVATE KEY`, as Google writes it, or PKCS#1
/// `RSA PRIVATE KEY`). The error is a phrase to put after the field's name.
fn parse_rsa_key(pem: &str) -> Result<RsaKeyPair, String> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("is not a private key in PEM form ({e})"))?;
    let parsed = match &der {
        PrivateKeyDer::Pkcs8(key) => RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(_) => return Err("is an EC key, not an RSA key".to_string()),
        _ => return Err("is not an RSA private key".to_string()),
    };
    parsed.map_err(|e| format!("is not a usable RSA private key ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fpush_testkit::fcm::TestServiceAccount;

    fn check(json: &str) -> Result<ServiceAccount, FcmError> {
        ServiceAccount::parse("android", Path::new("/etc/fpush/sa.json"), json.as_bytes())
    }

    fn valid() -> serde_json::Value {
        let account = TestServiceAccount::generate("demo-project", "https://localhost:1/token");
        serde_json::from_str(&account.json()).unwrap()
    }

    #[test]
    fn a_service_account_from_firebase_is_accepted() {
        let account = check(&valid().to_string()).unwrap();
        assert_eq!(account.project_id, "demo-project");
        assert_eq!(account.token_url.origin, "https://localhost:1");
        assert_eq!(account.token_url.path, "/token");
        assert!(account.client_email.ends_with(".iam.gserviceaccount.com"));
    }

    #[test]
    fn each_missing_field_is_named_with_module_and_file() {
        for field in ["project_id", "private_key", "client_email", "token_uri"] {
            let mut json = valid();
            json.as_object_mut().unwrap().remove(field);
            let err = check(&json.to_string()).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
            assert!(err.contains("\"android\""), "{err}");
            assert!(err.contains("/etc/fpush/sa.json"), "{err}");
        }
    }

    #[test]
    fn an_empty_field_counts_as_missing() {
        let mut json = valid();
        json["project_id"] = "".into();
        assert!(matches!(
            check(&json.to_string()),
            Err(FcmError::MissingField {
                field: "project_id",
                ..
            })
        ));
    }

    #[test]
    fn invalid_json_names_the_file() {
        let err = check("{\"project_id\": ").unwrap_err();
        assert!(matches!(err, FcmError::ServiceAccountJson { .. }));
        assert!(err.to_string().contains("/etc/fpush/sa.json"));
    }

    #[test]
    fn the_apps_client_config_is_told_apart() {
        let google_services = r#"{"project_info": {"project_id": "demo", "project_number": "1"},
            "client": [{"client_info": {}}], "configuration_version": "1"}"#;
        let err = check(google_services).unwrap_err();
        assert!(matches!(err, FcmError::WrongFile { .. }), "{err}");
        assert!(err.to_string().contains("google-services.json"), "{err}");
    }

    #[test]
    fn another_kind_of_credential_is_refused() {
        let mut json = valid();
        json["type"] = "authorized_user".into();
        let err = check(&json.to_string()).unwrap_err().to_string();
        assert!(
            err.contains("\"type\"") && err.contains("service_account"),
            "{err}"
        );
    }

    #[test]
    fn a_key_that_is_not_pem_is_refused() {
        let mut json = valid();
        json["private_key"] = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC".into();
        let err = check(&json.to_string()).unwrap_err();
        assert!(
            matches!(
                err,
                FcmError::InvalidField {
                    field: "private_key",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_ec_key_is_refused_as_not_rsa() {
        let pki = fpush_testkit::tls::TestPki::new().unwrap();
        let ec_pem = pki.client_cert("not-rsa").unwrap().key_pem;
        let mut json = valid();
        json["private_key"] = ec_pem.into();
        let err = check(&json.to_string()).unwrap_err().to_string();
        assert!(err.contains("private_key") && err.contains("RSA"), "{err}");
    }

    #[test]
    fn a_plain_http_token_uri_is_refused() {
        let mut json = valid();
        json["token_uri"] = "http://oauth2.googleapis.com/token".into();
        let err = check(&json.to_string()).unwrap_err().to_string();
        assert!(err.contains("token_uri") && err.contains("https"), "{err}");
    }

    #[test]
    fn a_missing_file_names_module_and_path() {
        let err = ServiceAccount::load("android", Path::new("/nonexistent/fpush-sa.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"android\"") && err.contains("/nonexistent/fpush-sa.json"),
            "{err}"
        );
    }
}
