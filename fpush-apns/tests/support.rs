//! Shared set-up for the APNS tests: a test PKI, credentials on disk, the test server and a
//! module pointed at it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fpush_apns::{ApnsConfig, ApnsPush};
use fpush_testkit::apns::{ApnsExpect, ApnsTestKey, ApnsTestServer};
use fpush_testkit::tls::{P12Cipher, TestPki};
use fpush_traits::{PushNotification, PushSummary};

pub const TOPIC: &str = "com.example.chat";
pub const TEAM_ID: &str = "TEAM123456";
pub const KEY_ID: &str = "KEY1234567";
pub const P12_PASSWORD: &str = "p12-secret";
pub const MODULE: &str = "apple-test";

pub struct Fixture {
    pub dir: TempDir,
    pub pki: TestPki,
    pub server: ApnsTestServer,
    pub ca: PathBuf,
    pub p8: PathBuf,
    p12: PathBuf,
    p12_legacy: PathBuf,
}

/// A directory removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fpush-apns-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Fixture {
    pub async fn start(name: &str) -> Self {
        let dir = TempDir::new(name);
        let pki = TestPki::new().unwrap();
        let key = ApnsTestKey::generate().unwrap();
        let ca = dir.path().join("ca.pem");
        let p8 = dir.path().join(format!("AuthKey_{KEY_ID}.p8"));
        let p12 = dir.path().join("push.p12");
        let p12_legacy = dir.path().join("push-legacy.p12");
        pki.write_ca_pem(&ca).unwrap();
        key.write_p8(&p8).unwrap();
        let server = ApnsTestServer::start(
            &pki,
            ApnsExpect {
                topic: TOPIC.into(),
                team_id: TEAM_ID.into(),
                key_id: KEY_ID.into(),
                jwt_public_key_pem: Some(key.public_pem.clone()),
                accept_client_cert: true,
            },
        )
        .await
        .unwrap();
        Self {
            dir,
            pki,
            server,
            ca,
            p8,
            p12,
            p12_legacy,
        }
    }

    /// A `.p12` client certificate for the topic, written on first use (PKCS#12 key
    /// derivation is slow in debug builds, so only certificate tests pay for it).
    pub fn p12(&self, cipher: P12Cipher) -> PathBuf {
        let path = match cipher {
            P12Cipher::Modern => &self.p12,
            P12Cipher::Legacy3Des => &self.p12_legacy,
        };
        if !path.exists() {
            let client = self.pki.client_cert(TOPIC).unwrap();
            client.write_p12(path, P12_PASSWORD, cipher).unwrap();
        }
        path.clone()
    }

    /// Token-auth settings pointing at the test server, with `extra` JSON members appended.
    pub fn token_config(&self, extra: &str) -> ApnsConfig {
        self.config(
            &format!(
                r#""keyFilePath": {:?}, "keyId": "{KEY_ID}", "teamId": "{TEAM_ID}""#,
                self.p8
            ),
            extra,
        )
    }

    /// Certificate-auth settings pointing at the test server.
    pub fn cert_config(&self, p12: &Path, extra: &str) -> ApnsConfig {
        self.config(
            &format!(r#""certFilePath": {p12:?}, "certPassword": "{P12_PASSWORD}""#),
            extra,
        )
    }

    fn config(&self, auth: &str, extra: &str) -> ApnsConfig {
        let json = format!(
            r#"{{ {auth}, "topic": "{TOPIC}", "endpoint": "{}", "caFilePath": {:?}, "requestTimeout": "5s" {extra} }}"#,
            self.server.origin(),
            self.ca
        );
        serde_json::from_str(&json).unwrap()
    }

    pub fn module(&self, cfg: ApnsConfig) -> ApnsPush {
        ApnsPush::new(MODULE, cfg).unwrap()
    }
}

pub fn push(token: &str) -> PushNotification {
    PushNotification {
        token: token.into(),
        module_id: MODULE.into(),
        summary: PushSummary::default(),
        options: Vec::new(),
        ..PushNotification::default()
    }
}
