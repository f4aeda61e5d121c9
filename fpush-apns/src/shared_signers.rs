//! Provider-token signers shared by every module built from the same `.p8` credential.
//!
//! A reload rebuilds every module. A fresh signer would sign a fresh provider token, and Apple
//! answers `TooManyProviderTokenUpdates` to a key whose token changes more often than every 20
//! minutes, so two reloads in a row would leave the app misconfigured. A module built from the
//! same key (same file contents, key id and team id) gets the signer the running module holds;
//! a changed file gets a new one. Entries hold the signer weakly, so a credential no module uses
//! any more is dropped with its last module.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use ring::digest::{digest, SHA256};

use crate::provider_token::TokenSigner;
use crate::ApnsError;

/// Live credentials remembered at most; beyond, a module gets a signer of its own (correct,
/// only without reuse across a reload).
const MAX_SHARED: usize = 16;

/// What identifies a credential: the key itself and the names the token carries.
#[derive(PartialEq, Eq)]
struct Credential {
    key_digest: Vec<u8>,
    key_id: String,
    team_id: String,
}

static SIGNERS: Mutex<Vec<(Credential, Weak<TokenSigner>)>> = Mutex::new(Vec::new());

/// The signer for the `.p8` key at `path`: the one a live module already uses for the same
/// credential, or a new one (which reads, checks and signs once, see [`TokenSigner::from_pem`]).
pub(crate) fn signer_for(
    module: &str,
    path: &Path,
    key_id: &str,
    team_id: &str,
) -> Result<Arc<TokenSigner>, ApnsError> {
    let pem = std::fs::read(path)
        .map_err(|e| ApnsError::credential(module, path, format!("cannot read: {e}")))?;
    let credential = Credential {
        key_digest: digest(&SHA256, &pem).as_ref().to_vec(),
        key_id: key_id.to_string(),
        team_id: team_id.to_string(),
    };
    let mut signers = SIGNERS.lock().unwrap_or_else(|e| e.into_inner());
    signers.retain(|(_, signer)| signer.strong_count() > 0);
    let shared = signers
        .iter()
        .find(|(known, _)| *known == credential)
        .and_then(|(_, signer)| signer.upgrade());
    if let Some(signer) = shared {
        return Ok(signer);
    }
    let signer = Arc::new(TokenSigner::from_pem(module, path, &pem, key_id, team_id)?);
    if signers.len() < MAX_SHARED {
        signers.push((credential, Arc::downgrade(&signer)));
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fpush_testkit::apns::ApnsTestKey;

    fn key_file(dir: &Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        ApnsTestKey::generate().unwrap().write_p8(&path).unwrap();
        path
    }

    #[tokio::test]
    async fn the_same_credential_gets_the_same_signer_while_a_module_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(dir.path(), "AuthKey_SAME.p8");
        let first = signer_for("ios", &path, "K", "T").unwrap();
        let again = signer_for("ios-renamed", &path, "K", "T").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let token = first.current().unwrap();
        assert!(Arc::ptr_eq(&token, &again.current().unwrap()), "one token");
    }

    #[tokio::test]
    async fn another_key_id_team_or_file_content_gets_a_new_signer() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(dir.path(), "AuthKey_CHANGED.p8");
        let first = signer_for("ios", &path, "K", "T").unwrap();
        for (key_id, team_id) in [("K2", "T"), ("K", "T2")] {
            let other = signer_for("ios", &path, key_id, team_id).unwrap();
            assert!(!Arc::ptr_eq(&first, &other), "{key_id} {team_id}");
        }
        ApnsTestKey::generate().unwrap().write_p8(&path).unwrap();
        let replaced = signer_for("ios", &path, "K", "T").unwrap();
        assert!(!Arc::ptr_eq(&first, &replaced), "the file was replaced");
    }

    #[tokio::test]
    async fn a_signer_no_module_holds_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(dir.path(), "AuthKey_DROPPED.p8");
        let first = signer_for("ios", &path, "K", "T").unwrap();
        let weak = Arc::downgrade(&first);
        drop(first);
        assert!(weak.upgrade().is_none(), "the cache does not keep it alive");
        let digest = digest(&SHA256, &std::fs::read(&path).unwrap());
        let _fresh = signer_for("ios", &path, "K", "T").unwrap();
        let signers = SIGNERS.lock().unwrap_or_else(|e| e.into_inner());
        let entries = signers
            .iter()
            .filter(|(c, _)| c.key_digest == digest.as_ref())
            .count();
        assert_eq!(entries, 1, "the dead entry was dropped");
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_naming_it() {
        let error = signer_for("ios", Path::new("/nonexistent/AuthKey_X.p8"), "K", "T")
            .err()
            .unwrap();
        assert!(error.to_string().contains("/nonexistent/AuthKey_X.p8"));
    }
}
