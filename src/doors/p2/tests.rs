use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::store::{Credentials, Registration, RegistrationKey, TOUCH_INTERVAL};

#[test]
fn the_device_hash_is_lowercase_hex() {
    let hash = device_hash("a@b", "c");
    assert_eq!(hash.len(), 40);
    assert!(hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
}

#[test]
fn secrets_compare_equal_only_when_identical() {
    assert!(same_secret(b"s3cr3t", b"s3cr3t"));
    assert!(!same_secret(b"s3cr3t", b"s3cr3T"));
    assert!(!same_secret(b"s3cr3t", b"s3cr3"));
    assert!(!same_secret(b"", b"x"));
}

#[test]
fn only_pushes_without_push_module_and_with_a_secret_are_claimed() {
    assert!(claims(&push("n", "s")));
    let mut named = push("n", "s");
    named.module = Some("android".into());
    assert!(!claims(&named));
    assert!(!claims(&PushRequest {
        token: "n".into(),
        ..PushRequest::default()
    }));
}

fn push(node: &str, secret: &str) -> PushRequest {
    PushRequest {
        token: node.to_owned(),
        module: None,
        options: vec![("secret".to_owned(), secret.to_owned())],
        ..PushRequest::default()
    }
}

#[test]
fn a_registration_is_due_a_touch_only_after_the_touch_interval() {
    let now = SystemTime::now();
    assert!(!touch_due(now, now));
    assert!(!touch_due(
        now - TOUCH_INTERVAL + Duration::from_secs(1),
        now
    ));
    assert!(touch_due(now - TOUCH_INTERVAL, now));
    // A last use in the future (a clock step back) is not stale.
    assert!(!touch_due(now + Duration::from_secs(60), now));
}

#[tokio::test]
async fn a_delivered_push_touches_the_store_only_for_a_stale_registration() {
    let store = Arc::new(Touches::default());
    for (stale, outcome, touched) in [
        (false, Outcome::delivered, 0),
        (true, Outcome::delivered, 1),
        (true, Outcome::store_failed, 1),
    ] {
        let registered = Registered::new(store.clone(), "example.org", "node".into(), false, stale);
        registered.settle(outcome).await;
        assert_eq!(store.touched.load(Ordering::Relaxed), touched);
    }
}

/// A store that counts `touch` calls and holds nothing.
#[derive(Default)]
struct Touches {
    touched: AtomicUsize,
}

#[async_trait::async_trait]
impl RegistrationStore for Touches {
    async fn register(&self, _: Registration) -> Result<Credentials, StoreError> {
        Err(StoreError::Unavailable("not in this test".into()))
    }
    async fn find(&self, _: &str, _: &str) -> Result<Option<Registration>, StoreError> {
        Ok(None)
    }
    async fn touch(&self, _: &str, _: &str) -> Result<(), StoreError> {
        self.touched.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn unregister(&self, _: &RegistrationKey) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn remove(&self, _: &str, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn clear_second_token(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn sweep(&self, _: SystemTime) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }
}
