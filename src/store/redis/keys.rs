//! The store's key names in Redis, under `redis.keyPrefix` (P):
//!
//! - `P{D}:r:NODE`: a hash per registration (fields `s` service, `d` device, `c` channel,
//!   `a` account, `t` token, `v` second token, `x` secret, `u` last use in unix seconds);
//! - `P{D}:l`: the domain's nodes by last use (its size is the domain's count; the sweep reads it);
//! - `P{D}:a:ACCOUNT`: the account's nodes by last use (the per-account cap);
//! - `Pkey:SERVICE\nDEVICE\nCHANNEL`: the registration key's `DOMAIN\nNODE`;
//! - `Pdomains`: the domains that hold registrations (dropped when their last one goes); `Pcounts`:
//!   registrations per service; `Psweeps-skipped`: how long, in seconds, the sweeps that would
//!   remove most of the store have been skipped in a row (while such a run is on); `Pcreated`:
//!   when fpush first found the store empty, in unix seconds (0: it held registrations then).
//!
//! `{D}` is a Redis Cluster hash tag: a domain's keys are equal up to the closing brace, so they
//! share one slot (even under a prefix with braces of its own) and each script touches one slot.

use crate::store::RegistrationKey;

#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    fn domain(&self, domain: &str) -> String {
        format!("{}{{{domain}}}:", self.prefix)
    }

    /// The registration hashes' names without the node.
    pub(super) fn registration_stem(&self, domain: &str) -> String {
        self.domain(domain) + "r:"
    }

    pub(super) fn registration(&self, domain: &str, node: &str) -> String {
        self.registration_stem(domain) + node
    }

    pub(super) fn last_use(&self, domain: &str) -> String {
        self.domain(domain) + "l"
    }

    /// The accounts' sets' names without the account.
    pub(super) fn account_stem(&self, domain: &str) -> String {
        self.domain(domain) + "a:"
    }

    pub(super) fn account(&self, domain: &str, account: &str) -> String {
        self.account_stem(domain) + account
    }

    pub(super) fn index(&self, key: &RegistrationKey) -> String {
        format!(
            "{}key:{}\n{}\n{}",
            self.prefix, key.service, key.device, key.channel
        )
    }

    pub(super) fn domains(&self) -> String {
        format!("{}domains", self.prefix)
    }

    pub(super) fn counts(&self) -> String {
        format!("{}counts", self.prefix)
    }

    pub(super) fn sweeps_skipped(&self) -> String {
        format!("{}sweeps-skipped", self.prefix)
    }

    pub(super) fn created(&self) -> String {
        format!("{}created", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes.
    fn tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn a_domains_keys_share_one_hash_tag_even_under_a_braced_prefix() {
        for prefix in ["fpush:", "a{b:"] {
            let keys = Keys::new(prefix);
            let tags = [
                tag(&keys.registration("example.org", "AAAA")).to_owned(),
                tag(&keys.last_use("example.org")).to_owned(),
                tag(&keys.account("example.org", "u@example.org")).to_owned(),
            ];
            assert!(tags.iter().all(|t| *t == tags[0]), "{tags:?}");
        }
    }
}
