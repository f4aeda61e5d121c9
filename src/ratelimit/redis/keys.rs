//! The names of a module's keys in the shared Redis: `<keyPrefix><module>:{<digest>}:rl` and
//! `<keyPrefix><module>:{<digest>}:dead`.
//!
//! The braces are a Redis Cluster hash tag: only the digest picks the slot, so the two keys of
//! one token always share a slot (the decision script touches both in one call, which a cluster
//! refuses with `CROSSSLOT` otherwise), while different tokens spread over every master. Both
//! keys are equal up to the closing brace, so a prefix or module id with a `{…}` of its own still
//! gives them one tag (that one, the same for every token); only an empty `{}` there, which makes
//! Redis hash whole keys, splits them (see docs/cluster.md).
//!
//! Tokens are never stored in clear. The digest must be the same in every fpush instance (the
//! memory maps' per-process random seed would give each instance its own keys), and it must
//! resist chosen tokens: anyone can register a push with any token, and a token made to share
//! another's key would ratelimit that device, or get it answered "dead". So it is SHA-256,
//! truncated to 128 bits (32 hex digits).

use std::fmt::Write;

/// Bytes of the SHA-256 kept in a key.
const DIGEST_BYTES: usize = 16;

/// The key names of one module.
#[derive(Debug, Clone)]
pub(crate) struct ModuleKeys {
    /// `<keyPrefix><module>:`
    stem: String,
}

impl ModuleKeys {
    pub(crate) fn new(key_prefix: &str, module_id: &str) -> Self {
        Self {
            stem: format!("{key_prefix}{module_id}:"),
        }
    }

    /// The key of `token`'s ratelimit entry.
    pub(crate) fn ratelimit(&self, token: &TokenDigest) -> String {
        self.key("rl", token)
    }

    /// The key of `token`'s dead-token entry.
    pub(crate) fn dead(&self, token: &TokenDigest) -> String {
        self.key("dead", token)
    }

    fn key(&self, kind: &str, token: &TokenDigest) -> String {
        let mut key = String::with_capacity(self.stem.len() + token.0.len() + 3 + kind.len());
        key.push_str(&self.stem);
        key.push('{');
        key.push_str(&token.0);
        key.push_str("}:");
        key.push_str(kind);
        key
    }
}

/// The hex digest that stands for a token in key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenDigest(String);

impl TokenDigest {
    pub(crate) fn of(token: &str) -> Self {
        let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut hex = String::with_capacity(DIGEST_BYTES * 2);
        for byte in &hash.as_ref()[..DIGEST_BYTES] {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        Self(hex)
    }
}

#[cfg(test)]
mod tests {
    use ::redis::cluster_routing::Slot;

    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let keys = ModuleKeys::new("fpush:", "monal");
        let digest = TokenDigest::of("abc");
        // SHA-256("abc") begins ba7816bf8f01cfea414140de5dae2223.
        assert_eq!(
            keys.ratelimit(&digest),
            "fpush:monal:{ba7816bf8f01cfea414140de5dae2223}:rl"
        );
        assert_eq!(
            keys.dead(&digest),
            "fpush:monal:{ba7816bf8f01cfea414140de5dae2223}:dead"
        );
    }

    #[test]
    fn a_tokens_two_keys_share_a_cluster_slot_even_with_braces_in_the_prefix() {
        let digest = TokenDigest::of("abc");
        for (prefix, module) in [("fpush:", "monal"), ("a{b}:", "m"), ("x{", "m}{")] {
            let keys = ModuleKeys::new(prefix, module);
            let (rl, dead) = (keys.ratelimit(&digest), keys.dead(&digest));
            assert_eq!(Slot::for_key(&rl), Slot::for_key(&dead), "{rl} and {dead}");
        }
    }

    #[test]
    fn different_tokens_spread_over_slots() {
        let keys = ModuleKeys::new("fpush:", "monal");
        let slots: std::collections::HashSet<Slot> = (0..100)
            .map(|i| {
                let key = keys.ratelimit(&TokenDigest::of(&i.to_string()));
                Slot::for_key(key)
            })
            .collect();
        assert!(slots.len() > 90, "{} distinct slots", slots.len());
    }

    #[test]
    fn the_digest_is_the_same_in_every_instance_and_hides_the_token() {
        let token = "a".repeat(64);
        assert_eq!(TokenDigest::of(&token), TokenDigest::of(&token));
        assert_ne!(TokenDigest::of(&token), TokenDigest::of("b"));
        assert!(!TokenDigest::of(&token).0.contains(&token));
    }
}
