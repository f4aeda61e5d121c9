//! Who may ask what of fpush. The component's JID is reachable by any XMPP user, so the link is
//! not a trusted one: pushes come from servers (a bare JID, the user's domain or bare JID), never
//! from a client's full JID; `access.allowedDomains` narrows the domains served; and each
//! sending domain gets a fair share (a token bucket), so one domain cannot starve the others.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// Most buckets at once (a domain's pushes take one, its users' commands another); beyond it,
/// new domains share one bucket for pushes and one for commands until idle ones are swept.
/// About 35 MB at worst (names of 253 bytes), about 10 MB with everyday ones.
const MAX_DOMAINS: usize = 100_000;
/// The bucket domains share once `MAX_DOMAINS` is reached.
const OVERFLOW_DOMAIN: &str = "";
/// Before a domain, the key of its commands' bucket: no domain holds a `/`.
const COMMANDS_OF: &str = "/";

/// What a sender may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// A full JID (or an empty `from`) asking for a push, or a domain not served.
    Forbidden,
    /// The domain used up its share for now.
    OverShare,
}

/// The access settings (`access.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessSettings {
    /// Domains served (`example.org`, `*.example.org`); empty: any.
    pub allowed_domains: Vec<String>,
    /// Requests per second per sending domain; 0 switches the fair share off.
    pub per_domain_rate: f64,
    /// How many requests a domain may send at once before the rate applies.
    pub per_domain_burst: f64,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            allowed_domains: Vec::new(),
            per_domain_rate: 1000.0,
            per_domain_burst: 5000.0,
        }
    }
}

/// The sender policy and the per-domain buckets.
#[derive(Debug)]
pub struct Access {
    settings: AccessSettings,
    /// Shared with the policy a reload makes from this one.
    buckets: Arc<DashMap<Box<str>, Bucket>>,
}

/// A token bucket: `tokens` as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Access {
    pub fn new(settings: AccessSettings) -> Self {
        Self {
            settings,
            buckets: Arc::default(),
        }
    }

    /// The same buckets under new settings (a reload).
    pub fn reconfigured(&self, settings: AccessSettings) -> Self {
        Self {
            settings,
            buckets: self.buckets.clone(),
        }
    }

    /// May `from` push? Only a bare JID of a served domain, within its domain's share.
    pub fn push(&self, from: &str) -> Verdict {
        if from.is_empty() || from.contains('/') {
            return Verdict::Forbidden;
        }
        let domain = sender_domain(from);
        self.within_share(&domain, &domain)
    }

    /// May `from` send a request other than a push (a registration command)? Any JID of a served
    /// domain, within a share of its own beside its domain's pushes: a domain's users sending
    /// commands must not use up what its server pushes with.
    pub fn request(&self, from: &str) -> Verdict {
        let domain = sender_domain(from);
        self.within_share(&domain, &format!("{COMMANDS_OF}{domain}"))
    }

    fn within_share(&self, domain: &str, bucket: &str) -> Verdict {
        if !self.serves(domain) {
            return Verdict::Forbidden;
        }
        if self.take(bucket) {
            Verdict::Allowed
        } else {
            Verdict::OverShare
        }
    }

    fn serves(&self, domain: &str) -> bool {
        let allowed = &self.settings.allowed_domains;
        allowed.is_empty()
            || allowed
                .iter()
                .any(|pattern| matches_domain(pattern, domain))
    }

    /// Takes one token from the bucket named `bucket` (a domain, or [`COMMANDS_OF`] and a
    /// domain), if it has one.
    fn take(&self, bucket: &str) -> bool {
        let AccessSettings {
            per_domain_rate: rate,
            per_domain_burst: burst,
            ..
        } = self.settings;
        if rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let key = if self.buckets.len() >= MAX_DOMAINS && !self.buckets.contains_key(bucket) {
            // Commands overflow into a bucket of their own too, away from the pushes'.
            match bucket.starts_with(COMMANDS_OF) {
                true => COMMANDS_OF,
                false => OVERFLOW_DOMAIN,
            }
        } else {
            bucket
        };
        let mut bucket = self.buckets.entry(key.into()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets the buckets that are full again (an idle domain), or all of them while the share
    /// is off, and returns how many.
    pub fn sweep(&self) -> usize {
        let AccessSettings {
            per_domain_rate: rate,
            per_domain_burst: burst,
            ..
        } = self.settings;
        let now = Instant::now();
        // Counted as they go: domains arriving meanwhile make the map's length no measure.
        let mut forgotten = 0;
        self.buckets.retain(|_, bucket| {
            let idle = now.saturating_duration_since(bucket.at).as_secs_f64();
            // With the share off (a reload may switch it off) no bucket is used: none is kept.
            let busy = rate > 0.0 && bucket.tokens + idle * rate < burst;
            forgotten += usize::from(!busy);
            busy
        });
        forgotten
    }

    /// How often the sweep should run: once a full bucket's refill time, within 1 s … 5 min.
    pub fn sweep_period(&self) -> Duration {
        let AccessSettings {
            per_domain_rate: rate,
            per_domain_burst: burst,
            ..
        } = self.settings;
        let refill = if rate > 0.0 { burst / rate } else { 300.0 };
        Duration::from_secs_f64(refill.clamp(1.0, 300.0))
    }

    /// Sending domains with a bucket now.
    pub fn domains(&self) -> usize {
        self.buckets.len()
    }
}

/// The domain part of a JID (`user@domain/resource` → `domain`).
pub fn domain_of(jid: &str) -> &str {
    let bare = jid.split_once('/').map_or(jid, |(bare, _)| bare);
    bare.rsplit_once('@').map_or(bare, |(_, domain)| domain)
}

/// The sending domain of `jid`, as one name whatever its spelling (see `canonical_domain`):
/// what the access policy and the registration store both know a sender by.
pub fn sender_domain(jid: &str) -> Cow<'_, str> {
    canonical_domain(domain_of(jid))
}

/// `domain` as one name whatever its spelling: without a final dot (RFC 7622 §3.2) and in
/// lower case, so that `Example.ORG.` draws on `example.org`'s share instead of a share of its
/// own, and finds the registrations made under `example.org`.
fn canonical_domain(domain: &str) -> Cow<'_, str> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(domain.to_ascii_lowercase())
    } else {
        Cow::Borrowed(domain)
    }
}

/// Whether `domain` matches an `access.allowedDomains` entry: the domain itself, or with
/// `*.`, any of its subdomains (not the domain itself). Domains compare case-insensitively.
pub fn matches_domain(pattern: &str, domain: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            domain.len() > parent.len() + 1
                && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
                && domain[domain.len() - parent.len()..].eq_ignore_ascii_case(parent)
        }
        None => pattern.eq_ignore_ascii_case(domain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(rate: f64, burst: f64, allowed: &[&str]) -> Access {
        Access::new(AccessSettings {
            allowed_domains: allowed.iter().map(|d| d.to_string()).collect(),
            per_domain_rate: rate,
            per_domain_burst: burst,
        })
    }

    #[test]
    fn domains_are_taken_from_any_jid() {
        assert_eq!(domain_of("example.org"), "example.org");
        assert_eq!(domain_of("juliet@example.org"), "example.org");
        assert_eq!(domain_of("juliet@example.org/balcony"), "example.org");
        assert_eq!(domain_of("example.org/res@x"), "example.org");
    }

    #[test]
    fn sender_domains_fold_case_and_one_final_dot() {
        assert_eq!(sender_domain("juliet@Example.ORG./balcony"), "example.org");
        assert_eq!(sender_domain("EXAMPLE.org"), "example.org");
        assert!(matches!(sender_domain("example.org"), Cow::Borrowed(_)));
    }

    #[test]
    fn patterns_match_the_domain_or_its_subdomains() {
        assert!(matches_domain("example.org", "Example.ORG"));
        assert!(!matches_domain("example.org", "sub.example.org"));
        assert!(matches_domain("*.example.org", "sub.example.org"));
        assert!(matches_domain("*.example.org", "a.b.EXAMPLE.org"));
        assert!(!matches_domain("*.example.org", "example.org"));
        assert!(!matches_domain("*.example.org", "badexample.org"));
    }

    #[tokio::test(start_paused = true)]
    async fn only_bare_jids_of_served_domains_may_push() {
        let access = access(0.0, 0.0, &["example.org", "*.chat.example"]);
        assert_eq!(access.push("example.org"), Verdict::Allowed);
        assert_eq!(access.push("juliet@example.org"), Verdict::Allowed);
        assert_eq!(access.push("muc.chat.example"), Verdict::Allowed);
        assert_eq!(access.push("mallory@evil.example/res"), Verdict::Forbidden);
        assert_eq!(access.push("example.org/res"), Verdict::Forbidden);
        assert_eq!(access.push(""), Verdict::Forbidden);
        assert_eq!(access.push("evil.example"), Verdict::Forbidden);
        // Commands may come from full JIDs, but only of served domains.
        assert_eq!(access.request("juliet@example.org/phone"), Verdict::Allowed);
        assert_eq!(
            access.request("mallory@evil.example/res"),
            Verdict::Forbidden
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_domain_has_its_own_bucket() {
        let access = access(10.0, 5.0, &[]);
        for _ in 0..5 {
            assert_eq!(access.push("busy.example"), Verdict::Allowed);
        }
        assert_eq!(access.push("busy.example"), Verdict::OverShare);
        assert_eq!(access.push("quiet.example"), Verdict::Allowed);
        // 100 ms later one token has come back.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(access.push("busy.example"), Verdict::Allowed);
        assert_eq!(access.push("busy.example"), Verdict::OverShare);
    }

    #[tokio::test(start_paused = true)]
    async fn one_domain_spelled_differently_still_has_one_bucket() {
        let access = access(10.0, 2.0, &["example.org"]);
        assert_eq!(access.push("example.org"), Verdict::Allowed);
        assert_eq!(access.push("juliet@Example.ORG"), Verdict::Allowed);
        // Case and a final dot do not make another domain (RFC 7622 §3.2): no share of its own.
        assert_eq!(access.push("EXAMPLE.org"), Verdict::OverShare);
        assert_eq!(access.push("romeo@example.org."), Verdict::OverShare);
        assert_eq!(access.domains(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_swept() {
        let access = access(10.0, 5.0, &[]);
        access.push("a.example");
        access.push("b.example");
        assert_eq!(access.sweep(), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(access.sweep(), 2);
        assert_eq!(access.domains(), 0);
    }

    #[test]
    fn a_sweep_while_new_domains_arrive_counts_only_what_it_forgot() {
        let access = Arc::new(access(10.0, 5.0, &[]));
        let arriving = {
            let access = access.clone();
            std::thread::spawn(move || {
                for n in 0..50_000 {
                    access.push(&format!("d{n}.example"));
                }
            })
        };
        let mut forgotten = 0;
        while !arriving.is_finished() {
            forgotten += access.sweep();
        }
        arriving.join().expect("the pushes ran");
        // Each domain pushed once: once all are full again, every one was forgotten exactly
        // once, whatever arrived while a sweep went through the map.
        std::thread::sleep(Duration::from_millis(300));
        forgotten += access.sweep();
        assert_eq!((forgotten, access.domains()), (50_000, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn commands_from_a_domain_s_users_leave_its_server_s_pushes_their_share() {
        let access = access(1.0, 3.0, &[]);
        for _ in 0..3 {
            assert_eq!(access.request("u@example.org/phone"), Verdict::Allowed);
        }
        assert_eq!(access.request("u@example.org/phone"), Verdict::OverShare);
        for _ in 0..3 {
            assert_eq!(access.push("example.org"), Verdict::Allowed);
        }
        assert_eq!(access.push("example.org"), Verdict::OverShare);
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_buckets_are_full_commands_overflow_apart_from_pushes() {
        let access = access(1.0, 2.0, &[]);
        for n in 0..MAX_DOMAINS {
            access.push(&format!("d{n}.example"));
        }
        for _ in 0..2 {
            assert_eq!(access.request("u@new.example/phone"), Verdict::Allowed);
        }
        assert_eq!(access.request("u@new.example/phone"), Verdict::OverShare);
        assert_eq!(access.push("other.example"), Verdict::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_left_by_a_reload_that_switched_the_share_off_are_swept() {
        let before = access(10.0, 5.0, &[]);
        before.push("a.example");
        before.push("b.example");
        let after = before.reconfigured(AccessSettings {
            per_domain_rate: 0.0,
            ..AccessSettings::default()
        });
        // No bucket is used any more: none must be kept, however long the share stays off.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(after.sweep(), 2);
        assert_eq!(after.domains(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_rate_switches_the_share_off() {
        let access = access(0.0, 0.0, &[]);
        for _ in 0..10_000 {
            assert_eq!(access.push("example.org"), Verdict::Allowed);
        }
        assert_eq!(access.domains(), 0);
    }
}
