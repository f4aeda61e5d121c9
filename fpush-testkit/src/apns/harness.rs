//! [`ApnsHarness`]: the one way tests, benchmarks and `fake-apns` set up APNS. An
//! [`ApnsTestServer`] accepting both of Apple's auth modes, with what a module's settings point
//! at written to disk: the test CA, a `.p8` signing key, and `.p12` client certificates.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::{ApnsExpect, ApnsTestKey, ApnsTestServer};
use crate::tls::{P12Cipher, ServeOptions, TestPki, TlsError};
use crate::work_dir::WorkDir;

/// The app's bundle id, unless the options name another.
pub const TOPIC: &str = "com.example.chat";
/// The developer team (the provider token's `iss`).
pub const TEAM_ID: &str = "TEAM123456";
/// The signing key's id (the provider token's `kid`).
pub const KEY_ID: &str = "KEY1234567";
/// The password of the `.p12` files.
pub const P12_PASSWORD: &str = "p12 secret";

/// Where and how to run the harness.
#[derive(Debug, Clone)]
pub struct ApnsHarnessOptions {
    /// Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Where the credentials go; default a temporary directory removed with the harness.
    pub dir: Option<PathBuf>,
    /// The topic the server accepts; default [`TOPIC`].
    pub topic: String,
    /// The server's HTTP/2 settings; default Apple's stream limit.
    pub serve: ServeOptions,
}

impl Default for ApnsHarnessOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: None,
            topic: TOPIC.to_string(),
            serve: ServeOptions::default(),
        }
    }
}

/// A running APNS test server and the credentials that reach it; stops when dropped.
pub struct ApnsHarness {
    pub server: ApnsTestServer,
    pki: TestPki,
    topic: String,
    ca_file: PathBuf,
    key_file: PathBuf,
    /// `.p12` files made so far (PKCS#12 key derivation is slow in debug builds, so only
    /// certificate tests pay for it).
    p12_files: Mutex<HashMap<P12Cipher, PathBuf>>,
    dir: WorkDir,
}

impl ApnsHarness {
    /// Starts on `127.0.0.1:0` with the default topic and a temporary directory.
    pub async fn start() -> Result<Self, TlsError> {
        Self::start_with(ApnsHarnessOptions::default()).await
    }

    pub async fn start_with(options: ApnsHarnessOptions) -> Result<Self, TlsError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| TlsError::Io { what, source }
        };
        let dir = WorkDir::new(options.dir, "fpush-apns-test-").map_err(io("work directory"))?;
        let pki = TestPki::new()?;
        let key = ApnsTestKey::generate()?;
        let ca_file = dir.path().join("apns-ca.pem");
        let key_file = dir.path().join(format!("AuthKey_{KEY_ID}.p8"));
        pki.write_ca_pem(&ca_file)?;
        key.write_p8(&key_file)?;
        let expect = ApnsExpect {
            topic: options.topic.clone(),
            team_id: TEAM_ID.into(),
            key_id: KEY_ID.into(),
            jwt_public_key_pem: Some(key.public_pem),
            accept_client_cert: true,
        };
        let server =
            ApnsTestServer::start_with(options.listen, &pki, expect, options.serve).await?;
        Ok(Self {
            server,
            pki,
            topic: options.topic,
            ca_file,
            key_file,
            p12_files: Mutex::default(),
            dir,
        })
    }

    /// `https://localhost:port`, what `apns.endpoint` should be.
    pub fn origin(&self) -> String {
        self.server.origin()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The test CA (PEM), what `apns.caFilePath` should be.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The `.p8` signing key (`AuthKey_<keyId>.p8`), what `apns.keyFilePath` should be.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The directory the credentials are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `.p12` client certificate for the topic, encrypted with [`P12_PASSWORD`] as `cipher`
    /// says; written on first use.
    pub fn p12_file(&self, cipher: P12Cipher) -> Result<PathBuf, TlsError> {
        let mut files = self.p12_files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = files.get(&cipher) {
            return Ok(path.clone());
        }
        let name = match cipher {
            P12Cipher::Modern => "apns.p12",
            P12Cipher::Legacy3Des => "apns-legacy.p12",
        };
        let path = self.dir.path().join(name);
        self.pki
            .client_cert(&self.topic)?
            .write_p12(&path, P12_PASSWORD, cipher)?;
        files.insert(cipher, path.clone());
        Ok(path)
    }

    /// A `.p12` client certificate for `common_name` (e.g. the PushKit topic), valid until the
    /// start of `(year, month, day)` UTC, written as `name` in [`ApnsHarness::dir`].
    pub fn p12_file_until(
        &self,
        name: &str,
        common_name: &str,
        until: (i32, u8, u8),
    ) -> Result<PathBuf, TlsError> {
        let path = self.dir.path().join(name);
        self.pki.client_cert_until(common_name, until)?.write_p12(
            &path,
            P12_PASSWORD,
            P12Cipher::Modern,
        )?;
        Ok(path)
    }

    /// The `apns` settings block of a module using token auth against this server. Tests add
    /// what they need (`requestTimeout`, `pushType`, …).
    pub fn token_settings(&self) -> Value {
        let mut block = self.common_settings();
        block["keyFilePath"] = json!(self.key_file);
        block["keyId"] = json!(KEY_ID);
        block["teamId"] = json!(TEAM_ID);
        block
    }

    /// The `apns` settings block of a module using certificate auth (a `.p12` as `cipher`).
    pub fn cert_settings(&self, cipher: P12Cipher) -> Result<Value, TlsError> {
        let mut block = self.common_settings();
        block["certFilePath"] = json!(self.p12_file(cipher)?);
        block["certPassword"] = json!(P12_PASSWORD);
        Ok(block)
    }

    fn common_settings(&self) -> Value {
        json!({
            "topic": self.topic,
            "endpoint": self.origin(),
            "caFilePath": self.ca_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_point_at_files_that_exist_and_go_with_the_harness() {
        let harness = ApnsHarness::start().await.unwrap();
        let token = harness.token_settings();
        assert_eq!(token["keyId"], KEY_ID);
        assert_eq!(token["endpoint"], harness.origin());
        let cert = harness.cert_settings(P12Cipher::Modern).unwrap();
        for path in [
            &token["keyFilePath"],
            &token["caFilePath"],
            &cert["certFilePath"],
        ] {
            assert!(Path::new(path.as_str().unwrap()).is_file(), "{path}");
        }
        let again = harness.p12_file(P12Cipher::Modern).unwrap();
        assert_eq!(json!(again), cert["certFilePath"], "made once");
        let dir = harness.dir().to_path_buf();
        drop(harness);
        assert!(!dir.exists(), "the temporary directory is removed");
    }
}
