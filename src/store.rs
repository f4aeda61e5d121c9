//! The registration store: where the registering front doors (p2, tigase) keep what a client
//! registered, so that a later push that names only a `node` can be delivered.
//!
//! One trait, [`RegistrationStore`], with two backends: SQLite (embedded, the default) and Redis
//! (shared by several fpush instances). The doors never know which one they talk to, and one
//! conformance suite checks both. Every call may fail ([`StoreError`]): the doors answer such a
//! failure `wait`, never `item-not-found`, which would make the server drop a live registration.

mod check;
pub mod cli;
mod open;
mod random;
mod redis;
mod sqlite;
mod sweeper;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use check::{check, StoreCheck};
pub use open::open;
pub use redis::RedisRegistrations;
pub use sqlite::SqliteStore;
pub use sweeper::spawn_sweeper;

/// How stale a registration's last use may get before a push records a new one. The doors skip
/// [`RegistrationStore::touch`] while the last use [`RegistrationStore::find`] answered is
/// younger (a write per push would cost more than the look-up); the backends check it again.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether a push at `now` should record its use of a registration last used at `last_used`.
///
/// Never when `last_used` is later than `now`: the clock that recorded it was ahead, or this one
/// is behind, and the two cannot be told apart. Overwriting it would, in the second case, make a
/// registration in use look old once the clock is set right (and swept that much early); kept,
/// it only lives on until the clock reaches it.
pub fn touch_due(last_used: SystemTime, now: SystemTime) -> bool {
    now.duration_since(last_used)
        .is_ok_and(|age| age >= TOUCH_INTERVAL)
}

/// A last use read back as seconds since the epoch; `None` past what the system clock holds, so
/// a corrupt value (another writer on a shared Redis, a hand-edited export) cannot panic us.
pub fn unix_seconds(seconds: u64) -> Option<SystemTime> {
    std::time::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// What identifies a registration: the client protocol's own key. Registering again with the
/// same key updates the token and keeps the node and secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistrationKey {
    /// The service the registration is for, as the door names it: for p2 the platform's
    /// registration service (`fcm`, `apns`), not the module id, so that renaming a module keeps
    /// its registrations; for tigase the provider id.
    pub service: String,
    /// The door's device identity (p2: the hex SHA-1 of account and device id).
    pub device: String,
    /// The door's sub-identity (p2: the room's channel hash; empty for the account itself).
    pub channel: String,
}

/// One stored registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub key: RegistrationKey,
    /// Whose registration this is for the per-account cap, which counts by (domain, account):
    /// always derived from the sender, never from a JID the client typed (p2: the sender's bare
    /// JID; `BARE/rooms` for its room registrations).
    pub account: String,
    /// The sending domain: pushes are looked up by (domain, node).
    pub domain: String,
    /// The provider's device token.
    pub token: String,
    /// A second token (a PushKit VoIP token), when the protocol registers one.
    pub second_token: Option<String>,
    /// The random node the client enables push with.
    pub node: String,
    /// The random secret the push must carry (empty when the protocol uses none).
    pub secret: String,
    /// When a push last used it (or it was registered): registrations unused for
    /// `store.expireAfter` are swept.
    pub last_used: SystemTime,
}

/// The node and secret of a registration, as the register command answers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub node: String,
    pub secret: String,
}

/// The store's bounds (settings `store.maxPerAccount`, `maxPerDomain`, `maxTotal`,
/// `expireAfter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Registering one more replaces the account's least recently used registration in its
    /// domain.
    pub max_per_account: u32,
    /// Beyond it a new registration from the domain is refused ([`StoreError::Full`]), counted
    /// after the account's replacement (a replacement never lets the domain grow past it).
    pub max_per_domain: u64,
    /// Beyond it any new registration is refused ([`StoreError::Full`]), counted after the
    /// account's replacement.
    pub max_total: Option<u64>,
    /// Registrations not pushed to for this long are swept.
    pub expire_after: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_per_account: 20,
            max_per_domain: 1_000_000,
            max_total: Some(10_000_000),
            expire_after: Duration::from_secs(180 * 24 * 3600),
        }
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or answered with an error: the caller answers `wait`.
    #[error("registration store unavailable: {0}")]
    Unavailable(String),
    /// A cap other than the per-account one is reached: the registration is refused.
    #[error("registration store full: {0}")]
    Full(&'static str),
    /// The stored data is not what this fpush can read (e.g. a newer schema).
    #[error("registration store unusable: {0}")]
    Unusable(String),
}

/// One page of [`RegistrationStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationPage {
    pub registrations: Vec<Registration>,
    /// Registrations that could not be read back (a Redis hash another writer damaged, a
    /// SQLite row edited by hand), each as why: left out of the page, not the end of the
    /// listing.
    pub unreadable: Vec<String>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<String>,
}

/// The registrations, behind whichever backend the settings chose.
///
/// Implementations are cheap to call concurrently; blocking work (SQLite) runs off the
/// runtime's threads.
#[async_trait]
pub trait RegistrationStore: Send + Sync {
    /// Registers `registration` (its `node`, `secret` and `last_used` are ignored) and answers
    /// the node and secret the client must use: new random ones for a new key, the stored ones
    /// when the key exists (only the token, second token, account and domain are updated).
    async fn register(&self, registration: Registration) -> Result<Credentials, StoreError>;

    /// The registration a push from `domain` names by `node`.
    async fn find(&self, domain: &str, node: &str) -> Result<Option<Registration>, StoreError>;

    /// Records that a push used the registration now (coarse: backends may skip writes when the
    /// stored time is recent).
    async fn touch(&self, domain: &str, node: &str) -> Result<(), StoreError>;

    /// Removes the registration with this key; `false` when there was none.
    async fn unregister(&self, key: &RegistrationKey) -> Result<bool, StoreError>;

    /// Removes the registration a push names if it still holds `token`, the token a provider
    /// said is dead; `false` when none was removed. The comparison and the removal are one step,
    /// so that a registration the client renewed meanwhile (same node, a new token) is kept.
    async fn remove(&self, domain: &str, node: &str, token: &str) -> Result<bool, StoreError>;

    /// Forgets the second token of a registration if it is still `second_token` (a dead VoIP
    /// token), in one step as for [`Self::remove`].
    async fn clear_second_token(
        &self,
        domain: &str,
        node: &str,
        second_token: &str,
    ) -> Result<(), StoreError>;

    /// Removes registrations last used before `before`; answers how many.
    async fn sweep(&self, before: SystemTime) -> Result<u64, StoreError>;

    /// How many registrations were last used before `before`: what [`Self::sweep`] would
    /// remove, which the sweeper weighs first (a wrong clock makes everything look unused).
    async fn count_unused(&self, before: SystemTime) -> Result<u64, StoreError>;

    /// How long the sweeps that would remove most of the store have been skipped in a row, as
    /// [`Self::record_sweeps_skipped`] last recorded it (zero when no such run is on). Kept in
    /// the store so that a restart does not start the sweeper's day of grace anew.
    async fn sweeps_skipped_for(&self) -> Result<Duration, StoreError>;

    /// Records how long such sweeps have been skipped in a row; `None` when a sweep went
    /// through (the run is over).
    async fn record_sweeps_skipped(&self, skipped: Option<Duration>) -> Result<(), StoreError>;

    /// How many registrations each service holds, for the metrics.
    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// When fpush first opened this store and found it empty; `None` for a store that held
    /// registrations before it kept the time. A store made moments ago may be the wrong one (a
    /// `store.path` or `redis.keyPrefix` changed by mistake), so the doors answer `wait` for
    /// the registrations it lacks while it is young.
    async fn created(&self) -> Result<Option<SystemTime>, StoreError> {
        Ok(None)
    }

    /// About `limit` registrations after the cursor `after` (from the previous page; `None`
    /// for the first), for `fpush store export`: a Redis domain small enough to be kept
    /// compact comes whole. A registration that exists throughout the listing is listed even
    /// when pushes touch it or others are removed; one added meanwhile may be missed, and on
    /// Redis any may be listed twice (a scan's guarantee; importing it twice is harmless).
    async fn list(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<RegistrationPage, StoreError> {
        let _ = (after, limit);
        Err(StoreError::Unusable(
            "this store cannot list its registrations".into(),
        ))
    }

    /// Stores `registration` as given (node, secret and last use included), replacing the one
    /// with its key, for `fpush store import`; the caps apply as for [`Self::register`], except
    /// that an account at `store.maxPerAccount` refuses it (`Full`) instead of giving up its
    /// least recently used registration, which may be one the same import just wrote.
    async fn restore(&self, registration: Registration) -> Result<(), StoreError> {
        let _ = registration;
        Err(StoreError::Unusable(
            "this store cannot restore registrations".into(),
        ))
    }
}
