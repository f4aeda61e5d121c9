use super::*;

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
