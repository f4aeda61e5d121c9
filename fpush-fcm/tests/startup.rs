//! Start-up checks (what `fpush --check` relies on): every broken setting or credential file is
//! an error naming the module, the file and the field, found without any network.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use fpush_fcm::{FcmConfig, FcmError, FcmPush};
use fpush_testkit::fcm::TestServiceAccount;

/// A scratch directory for files these tests write, removed at the end.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().unwrap())
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

fn account_json() -> serde_json::Value {
    let account = TestServiceAccount::generate("demo", "https://oauth2.googleapis.com/token");
    serde_json::from_str(&account.json()).unwrap()
}

fn build(cfg: FcmConfig) -> Result<FcmPush, FcmError> {
    FcmPush::new("someAndroidApp", cfg)
}

#[test]
fn a_good_file_builds_without_network_or_runtime() {
    let scratch = Scratch::new();
    let path = scratch.file("sa.json", &account_json().to_string());
    let module = build(FcmConfig::new(&path)).unwrap();
    assert_eq!(module.project_id(), "demo");
}

#[test]
fn a_missing_file_names_module_and_path() {
    let err = build(FcmConfig::new("/etc/fpush/fcm-service-account.json")).unwrap_err();
    assert!(
        matches!(err, FcmError::ReadServiceAccount { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("someAndroidApp") && text.contains("/etc/fpush/fcm-service-account.json"),
        "{text}"
    );
}

#[test]
fn invalid_json_is_reported_with_its_position() {
    let scratch = Scratch::new();
    let path = scratch.file(
        "sa.json",
        "{\"type\": \"service_account\",\n  \"project_id\": }",
    );
    let text = build(FcmConfig::new(&path)).unwrap_err().to_string();
    assert!(
        text.contains("not valid JSON") && text.contains("line 2"),
        "{text}"
    );
}

#[test]
fn each_required_field_is_named_when_missing() {
    let scratch = Scratch::new();
    for field in ["project_id", "private_key", "client_email", "token_uri"] {
        let mut json = account_json();
        json.as_object_mut().unwrap().remove(field);
        let path = scratch.file(&format!("no-{field}.json"), &json.to_string());
        let err = build(FcmConfig::new(&path)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, FcmError::MissingField { .. }), "{text}");
        assert!(
            text.contains(field) && text.contains(&path.display().to_string()),
            "{text}"
        );
    }
}

#[test]
fn a_key_that_is_not_rsa_pem_is_refused() {
    let scratch = Scratch::new();
    let ec_key = fpush_testkit::tls::TestPki::new()
        .unwrap()
        .client_cert("x")
        .unwrap()
        .key_pem;
    for (name, key) in [("garbage", "not a key".to_string()), ("ec", ec_key)] {
        let mut json = account_json();
        json["private_key"] = key.into();
        let path = scratch.file(&format!("{name}.json"), &json.to_string());
        let err = build(FcmConfig::new(&path)).unwrap_err();
        assert!(
            matches!(
                err,
                FcmError::InvalidField {
                    field: "private_key",
                    ..
                }
            ),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_missing_ca_file_is_reported() {
    let scratch = Scratch::new();
    let mut cfg = FcmConfig::new(scratch.file("sa.json", &account_json().to_string()));
    cfg.ca_file_path = Some(PathBuf::from("/nonexistent/fcm-ca.pem"));
    let text = build(cfg).unwrap_err().to_string();
    assert!(
        text.contains("someAndroidApp") && text.contains("/nonexistent/fcm-ca.pem"),
        "{text}"
    );
}

#[test]
fn unusable_settings_are_refused() {
    let scratch = Scratch::new();
    let path = scratch.file("sa.json", &account_json().to_string());

    let mut ttl = FcmConfig::new(&path);
    ttl.ttl = Duration::from_secs(29 * 24 * 3600);
    assert!(matches!(
        build(ttl),
        Err(FcmError::InvalidSetting { key: "ttl", .. })
    ));

    let mut reserved = FcmConfig::new(&path);
    reserved
        .additional_data
        .insert("google.c.a.e".into(), "1".into());
    assert!(matches!(
        build(reserved),
        Err(FcmError::InvalidSetting {
            key: "additionalData",
            ..
        })
    ));

    let mut too_large = FcmConfig::new(&path);
    too_large
        .additional_data
        .insert("kind".into(), "x".repeat(4096));
    assert!(matches!(
        build(too_large),
        Err(FcmError::InvalidSetting {
            key: "additionalData",
            ..
        })
    ));

    let mut endpoint = FcmConfig::new(&path);
    endpoint.endpoint = "http://fcm.googleapis.com".into();
    assert!(matches!(
        build(endpoint),
        Err(FcmError::InvalidSetting {
            key: "endpoint",
            ..
        })
    ));

    let mut timeout = FcmConfig::new(&path);
    timeout.request_timeout = Duration::ZERO;
    assert!(matches!(
        build(timeout),
        Err(FcmError::InvalidSetting {
            key: "requestTimeout",
            ..
        })
    ));
}

#[test]
fn the_seed_examples_google_block_parses_and_names_its_missing_file() {
    let cfg: FcmConfig =
        serde_json::from_str(r#"{"fcmSecretPath": "/etc/fpush/fcm-service-account.json"}"#)
            .unwrap();
    let text = build(cfg).unwrap_err().to_string();
    assert!(
        text.contains("/etc/fpush/fcm-service-account.json"),
        "{text}"
    );
}
