//! The SQLite writes that must be one transaction: registering (upsert, per-account LRU
//! replacement, the domain and total caps, a fresh node unique in its domain) and restoring an
//! exported registration as it was.

use rusqlite::{params, OptionalExtension, ToSql, Transaction, TransactionBehavior};

use super::{failed, unix};
use crate::store::{random, Credentials, Registration, StoreError, StoreLimits};

/// Fresh nodes tried before giving up (a collision among 2^72 nodes is already unheard of).
const NODE_ATTEMPTS: usize = 8;

/// Where a registration's node, secret and last use come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Kept for a known key, fresh for a new one; last used now (or later, as stored).
    Register,
    /// As given (an import).
    Restore,
}

pub(super) fn upsert(
    connection: &mut rusqlite::Connection,
    registration: &Registration,
    limits: &StoreLimits,
    mode: Mode,
) -> Result<Credentials, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let last_used = match mode {
        Mode::Register => unix(std::time::SystemTime::now()),
        Mode::Restore => unix(registration.last_used),
    };
    let key = &registration.key;
    let existing: Option<(String, String, i64, String)> = transaction
        .query_row(
            "SELECT node, secret, last_used, domain FROM registrations \
             WHERE service = ?1 AND device = ?2 AND channel = ?3",
            params![key.service, key.device, key.channel],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()
        .map_err(failed)?;
    let credentials = match existing {
        Some((node, secret, stored, domain)) => {
            if domain != registration.domain {
                // A move adds one to the new domain's count (the total stays as it is).
                check_domain_cap(&transaction, &registration.domain, limits)?;
            }
            // Registering again never moves the last use back, as a push's touch never does:
            // one recorded later than now was recorded before the clock was set back.
            let (credentials, last_used) = match mode {
                Mode::Register => (Credentials { node, secret }, last_used.max(stored)),
                Mode::Restore => (given(registration), last_used),
            };
            update(&transaction, registration, &credentials, last_used)?;
            credentials
        }
        None => {
            make_room(&transaction, registration, limits, mode)?;
            insert(&transaction, registration, mode, last_used)?
        }
    };
    transaction.commit().map_err(failed)?;
    Ok(credentials)
}

fn given(registration: &Registration) -> Credentials {
    Credentials {
        node: registration.node.clone(),
        secret: registration.secret.clone(),
    }
}

/// A registration's columns as `?1`…`?10` of [`update`] and [`insert`]: service, device,
/// channel, account, domain, token, second token, node, secret, last use.
fn row<'a>(
    registration: &'a Registration,
    credentials: &'a Credentials,
    last_used: &'a i64,
) -> [&'a dyn ToSql; 10] {
    let key = &registration.key;
    [
        &key.service,
        &key.device,
        &key.channel,
        &registration.account,
        &registration.domain,
        &registration.token,
        &registration.second_token,
        &credentials.node,
        &credentials.secret,
        last_used,
    ]
}

fn update(
    transaction: &Transaction<'_>,
    registration: &Registration,
    credentials: &Credentials,
    last_used: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "UPDATE registrations SET account = ?4, domain = ?5, token = ?6, second_token = ?7, \
             node = ?8, secret = ?9, last_used = ?10 \
             WHERE service = ?1 AND device = ?2 AND channel = ?3",
            row(registration, credentials, &last_used).as_slice(),
        )
        .map(drop)
        .map_err(failed)
}

/// Replaces the account's least recently used registrations in its domain when it is at its cap,
/// then refuses the registration if its domain or the store would still be beyond their caps
/// (the caller's transaction then rolls the replacement back).
///
/// The account is counted within the registration's domain, as the Redis backend does (its
/// account sets live in the domain's slot): a registration from one domain never replaces
/// another domain's, so a replacement never moves a registration between domains' counts.
fn make_room(
    transaction: &Transaction<'_>,
    registration: &Registration,
    limits: &StoreLimits,
    mode: Mode,
) -> Result<(), StoreError> {
    replace_least_recently_used(transaction, registration, limits.max_per_account, mode)?;
    check_caps(transaction, &registration.domain, limits)
}

fn replace_least_recently_used(
    transaction: &Transaction<'_>,
    registration: &Registration,
    max_per_account: u32,
    mode: Mode,
) -> Result<(), StoreError> {
    let (domain, account) = (&registration.domain, &registration.account);
    let held: u64 = transaction
        .query_row(
            "SELECT count(*) FROM registrations WHERE account = ?1 AND domain = ?2",
            [account, domain],
            |row| row.get(0),
        )
        .map_err(failed)?;
    let cap = u64::from(max_per_account);
    if held < cap {
        return Ok(());
    }
    // An import replaces nothing: the registration it would evict may be one it just wrote,
    // and the run would count both as imported. The line is refused (and reported) instead.
    if mode == Mode::Restore {
        return Err(StoreError::Full("store.maxPerAccount"));
    }
    transaction
        .execute(
            "DELETE FROM registrations WHERE (node, domain) IN (SELECT node, domain \
             FROM registrations WHERE account = ?1 AND domain = ?2 \
             ORDER BY last_used, node LIMIT ?3)",
            params![account, domain, held + 1 - cap],
        )
        .map(drop)
        .map_err(failed)
}

/// Refuses one more registration in `domain` when the domain or the store holds its cap.
fn check_caps(
    transaction: &Transaction<'_>,
    domain: &str,
    limits: &StoreLimits,
) -> Result<(), StoreError> {
    check_domain_cap(transaction, domain, limits)?;
    if let Some(max_total) = limits.max_total {
        let total: u64 = transaction
            .query_row("SELECT registrations FROM total_count", [], |row| {
                row.get(0)
            })
            .map_err(failed)?;
        if total >= max_total {
            return Err(StoreError::Full("store.maxTotal"));
        }
    }
    Ok(())
}

/// Refuses one more registration in `domain` when it holds its cap.
fn check_domain_cap(
    transaction: &Transaction<'_>,
    domain: &str,
    limits: &StoreLimits,
) -> Result<(), StoreError> {
    let in_domain: u64 = transaction
        .query_row(
            "SELECT registrations FROM domain_counts WHERE domain = ?1",
            [domain],
            |row| row.get(0),
        )
        .optional()
        .map_err(failed)?
        .unwrap_or(0);
    if in_domain >= limits.max_per_domain {
        return Err(StoreError::Full("store.maxPerDomain"));
    }
    Ok(())
}

fn insert(
    transaction: &Transaction<'_>,
    registration: &Registration,
    mode: Mode,
    last_used: i64,
) -> Result<Credentials, StoreError> {
    let mut credentials = match mode {
        Mode::Register => random::credentials()?,
        Mode::Restore => given(registration),
    };
    for _ in 0..NODE_ATTEMPTS {
        let inserted = transaction.execute(
            "INSERT INTO registrations (service, device, channel, account, domain, token, \
             second_token, node, secret, last_used) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            row(registration, &credentials, &last_used).as_slice(),
        );
        match inserted {
            Ok(_) => return Ok(credentials),
            Err(error) if is_unique_violation(&error) && mode == Mode::Register => {
                credentials.node = random::node()?;
            }
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::Unusable(format!(
                    "node {} is already used in {} by another registration",
                    credentials.node, registration.domain
                )))
            }
            Err(error) => return Err(failed(error)),
        }
    }
    Err(StoreError::Unavailable(
        "no free node found for a new registration".into(),
    ))
}

/// A key already taken: the table's (node, domain) or an index's.
fn is_unique_violation(error: &rusqlite::Error) -> bool {
    use rusqlite::ffi::{SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE};
    matches!(error, rusqlite::Error::SqliteFailure(failure, _)
        if matches!(failure.extended_code, SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY))
}
