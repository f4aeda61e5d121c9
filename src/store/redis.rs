//! The shared backend: registrations in Redis (one server or a Redis Cluster, the `redis`
//! section), so several fpush instances serve the same registrations.
//!
//! Each Lua script touches one domain's keys, which share a cluster slot (see `keys`). The key
//! index, the domain list and the per-service counts live in other slots and are written after
//! the script, so a crash in between can leave a registration without its index entry (a new
//! registration of that key then gets a new node; the old one is swept when unused) or a count
//! off by one. `store.maxTotal` is checked against the counts before the write, so concurrent
//! registrations may pass it by a few.

mod keys;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{AsyncCommands, RedisError, Script};
use async_trait::async_trait;

use super::{
    Credentials, Registration, RegistrationKey, RegistrationPage, RegistrationStore, StoreError,
    StoreLimits,
};
use crate::config::RedisSettings;
use crate::ratelimit::{RedisConnection, RedisEndpoint, RedisServers};
use keys::Keys;
use write::InsertMode;

/// The longest one Redis call may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Registrations removed per script call by a sweep.
const SWEEP_BATCH: usize = 1_000;
/// Fresh nodes tried before giving up.
const NODE_ATTEMPTS: usize = 8;

/// A stored registration as [`RedisRegistrations::indexed`] found it.
enum Readable {
    Yes(Box<Registration>),
    Damaged,
}

/// The Redis registration store.
pub struct RedisRegistrations {
    connection: RedisConnection,
    keys: Keys,
    limits: StoreLimits,
    scripts: Arc<Scripts>,
    /// See [`RegistrationStore::created`]: read (or noted) once.
    created: tokio::sync::OnceCell<Option<SystemTime>>,
}

struct Scripts {
    insert: Script,
    update: Script,
    remove: Script,
    touch: Script,
    forget_index: Script,
    claim_index: Script,
    count: Script,
    uncount: Script,
    clear_second_token: Script,
}

impl RedisRegistrations {
    /// A store on the `redis` section's servers; connects on first use.
    pub fn open(redis: &RedisSettings, limits: StoreLimits) -> Result<Self, StoreError> {
        let servers = if redis.cluster.is_empty() {
            RedisServers::Single(redis.url.clone())
        } else {
            RedisServers::Cluster(redis.cluster.clone())
        };
        let endpoint = RedisEndpoint::open(&servers, TIMEOUT)
            .map_err(|error| StoreError::Unusable(error.to_string()))?;
        let connection = endpoint.connect_lazily(TIMEOUT).map_err(failed)?;
        Ok(RedisRegistrations {
            connection,
            keys: Keys::new(&redis.key_prefix),
            limits,
            scripts: Arc::new(Scripts {
                insert: Script::new(include_str!("redis/insert.lua")),
                update: Script::new(include_str!("redis/update.lua")),
                remove: Script::new(include_str!("redis/remove.lua")),
                touch: Script::new(include_str!("redis/touch.lua")),
                forget_index: Script::new(include_str!("redis/forget_index.lua")),
                claim_index: Script::new(include_str!("redis/claim_index.lua")),
                count: Script::new(include_str!("redis/count.lua")),
                uncount: Script::new(include_str!("redis/uncount.lua")),
                clear_second_token: Script::new(include_str!("redis/clear_second_token.lua")),
            }),
            created: tokio::sync::OnceCell::new(),
        })
    }

    fn connection(&self) -> RedisConnection {
        self.connection.clone()
    }

    /// When the store was made: noted now when it holds no registration and no instance noted
    /// it before (`SET NX`: the first instance's time stands), 0 (not known) when it holds some.
    async fn note_created(&self) -> Result<Option<SystemTime>, StoreError> {
        let empty = self.counts().await?.is_empty();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (key, mut connection) = (self.keys.created(), self.connection());
        let () = connection
            .set_nx(&key, if empty { now } else { 0 })
            .await
            .map_err(failed)?;
        let noted: Option<String> = connection.get(&key).await.map_err(failed)?;
        // Another writer's value reads as not known: the guard it would start stays off.
        let seconds = noted.and_then(|text| text.parse::<u64>().ok()).unwrap_or(0);
        Ok((seconds > 0).then(|| UNIX_EPOCH + Duration::from_secs(seconds)))
    }

    /// Where the key index says the registration with `key` is.
    async fn located(&self, key: &RegistrationKey) -> Result<Option<(String, String)>, StoreError> {
        Ok(self.index_entry(key).await?.as_deref().and_then(location))
    }

    /// The key's index entry as stored, which a register's claim must find unchanged (even
    /// one that names no registration, another writer's value). A key of another type is no
    /// entry (the claim replaces it): refused, it would keep its device from registering.
    async fn index_entry(&self, key: &RegistrationKey) -> Result<Option<String>, StoreError> {
        match self.connection().get(self.keys.index(key)).await {
            Err(error) if error.code() == Some("WRONGTYPE") => Ok(None),
            read => read.map_err(failed),
        }
    }

    /// The registration a key's index entry points at, or that it is damaged (another writer
    /// left a field out): its key's index still names it, so its key's owner may replace or
    /// remove it; it must not hold them back until the sweep.
    async fn indexed(&self, domain: &str, node: &str) -> Result<Option<Readable>, StoreError> {
        match self.find(domain, node).await {
            Ok(found) => Ok(found.map(|found| Readable::Yes(Box::new(found)))),
            Err(StoreError::Unusable(why)) => {
                log::warn!("{why}; replaced or removed by its key's owner");
                Ok(Some(Readable::Damaged))
            }
            Err(error) => Err(error),
        }
    }

    /// Moves the key's registration at `node` in `domain` to the registration's domain: same
    /// node and secret, in the new domain's slot, inserted before the old one is removed, so
    /// that a refusal (the new domain's cap, a timeout) keeps it where it was. `None` when
    /// there is nothing to move: no registration there, another key's (a stale index entry:
    /// it stays), or a damaged one (removed: the device gets new credentials).
    async fn moved(
        &self,
        registration: &Registration,
        domain: &str,
        node: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let old = match self.indexed(domain, node).await? {
            Some(Readable::Yes(old)) if old.key == registration.key => old,
            Some(Readable::Damaged) => {
                self.remove_in(domain, node, 0, "").await?;
                return Ok(None);
            }
            _ => return Ok(None),
        };
        let now = unix(SystemTime::now()).max(unix(old.last_used));
        let credentials = Credentials {
            node: old.node,
            secret: old.secret,
        };
        let moved = self
            .insert_then_remove(registration, credentials, now, Some((domain, node)))
            .await?;
        Ok(Some(moved))
    }

    /// Inserts `registration` with `credentials`, then removes `old`, its copy in another
    /// domain (`None`: none of its own is there). Inserted first, so that a refusal (the new
    /// domain's cap, a timeout) keeps it where it was; the old copy does not count against
    /// `store.maxTotal`. The device is registered in its new domain whatever follows: an old
    /// copy that cannot be removed now is swept once unused.
    async fn insert_then_remove(
        &self,
        registration: &Registration,
        credentials: Credentials,
        last_used: u64,
        old: Option<(&str, &str)>,
    ) -> Result<Credentials, StoreError> {
        let leaving = u64::from(old.is_some());
        let inserted = self
            .insert_leaving(
                registration,
                Some(credentials),
                last_used,
                leaving,
                InsertMode::Move,
            )
            .await?
            .ok_or_else(|| unexpected("claim"))?; // a claim of any entry always holds
        if let Some((domain, node)) = old {
            if let Err(error) = self.remove_in(domain, node, 0, "").await {
                log::warn!("registration store: a moved registration's old copy stays: {error}");
            }
        }
        Ok(inserted)
    }

    async fn domains(&self) -> Result<Vec<String>, StoreError> {
        let mut domains: Vec<String> = self
            .connection()
            .smembers(self.keys.domains())
            .await
            .map_err(failed)?;
        domains.sort();
        Ok(domains)
    }

    /// One `ZSCAN` step over `domain`'s nodes from `cursor`: about `count` registrations (a
    /// small domain comes whole), why the ones that cannot be read back were left out, and
    /// the cursor to go on from (`0` when the domain is done). Unlike a range of the last-use
    /// order, a scan misses no node that stays while a push moves it or another is removed.
    async fn scan_of(
        &self,
        domain: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<Registration>, Vec<String>, u64), StoreError> {
        let (next, members): (u64, Vec<String>) = ::redis::cmd("ZSCAN")
            .arg(self.keys.last_use(domain))
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.connection())
            .await
            .map_err(failed)?;
        // Member, score, member, score, …
        let nodes = members.into_iter().step_by(2);
        let (mut registrations, mut unreadable) = (Vec::new(), Vec::new());
        for node in nodes {
            match self.find(domain, &node).await {
                Ok(Some(registration)) => registrations.push(registration),
                Ok(None) => {}
                Err(StoreError::Unusable(why)) => unreadable.push(why),
                Err(error) => return Err(error),
            }
        }
        Ok((registrations, unreadable, next))
    }
}

/// Where a listing goes on in a domain: at a scan cursor, or after the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    At(u64),
    After,
}

/// A listing's cursor: the domain, a line break, then the scan cursor or `end` (split at the
/// last line break: a domain may hold one, an imported line's).
fn list_cursor(after: Option<&str>) -> Result<(String, Resume), StoreError> {
    let Some(after) = after else {
        return Ok((String::new(), Resume::At(0)));
    };
    let bad = || StoreError::Unusable("bad cursor".into());
    let (domain, at) = after.rsplit_once('\n').ok_or_else(bad)?;
    let resume = match at {
        "end" => Resume::After,
        cursor => Resume::At(cursor.parse().map_err(|_| bad())?),
    };
    Ok((domain.to_owned(), resume))
}

/// The `domain\nnode` of a key index entry; `None` for a value that names no registration.
fn location(entry: &str) -> Option<(String, String)> {
    let (domain, node) = entry.split_once('\n')?;
    Some((domain.to_owned(), node.to_owned()))
}

fn failed(error: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

fn unexpected(script: &str) -> StoreError {
    StoreError::Unavailable(format!("redis: unexpected answer from the {script} script"))
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

/// A registration hash, read back.
fn parse(
    domain: &str,
    node: &str,
    mut hash: HashMap<String, String>,
) -> Result<Registration, StoreError> {
    let mut field = |name: &str| {
        hash.remove(name).ok_or_else(|| {
            StoreError::Unusable(format!(
                "redis: registration {domain} {node} lacks `{name}`"
            ))
        })
    };
    let last_used = field("u")?
        .parse::<u64>()
        .ok()
        .and_then(super::unix_seconds)
        .ok_or_else(|| {
            StoreError::Unusable(format!("redis: registration {domain} {node} has a bad `u`"))
        })?;
    Ok(Registration {
        key: RegistrationKey {
            service: field("s")?,
            device: field("d")?,
            channel: field("c")?,
        },
        account: field("a")?,
        domain: domain.to_owned(),
        token: field("t")?,
        secret: field("x")?,
        second_token: field("v").ok(),
        node: node.to_owned(),
        last_used,
    })
}

impl RedisRegistrations {
    /// One try of [`RegistrationStore::register`]; `None` when a concurrent register of the
    /// same key claimed its index entry first.
    async fn register_once(
        &self,
        registration: &Registration,
    ) -> Result<Option<Credentials>, StoreError> {
        let read = self.index_entry(&registration.key).await?;
        let located = read.as_deref().and_then(location);
        if let Some((domain, node)) = &located {
            if *domain == registration.domain {
                if let Some(credentials) = self.update(registration, node).await? {
                    return Ok(Some(credentials));
                }
                // Not updated: gone, another key's, or damaged past repair (removed: the
                // device gets new credentials, and the key keeps one registration).
                if let Some(Readable::Damaged) = self.indexed(domain, node).await? {
                    self.remove_in(domain, node, 0, "").await?;
                }
            } else if let Some(moved) = self.moved(registration, domain, node).await? {
                return Ok(Some(moved));
            }
        }
        let now = unix(SystemTime::now());
        let mode = InsertMode::Register(read.as_deref());
        self.insert(registration, None, now, mode).await
    }
}

/// How many times a register starts over after a concurrent register of the same key won the
/// key's index entry (each start-over finds the winner's registration and updates it).
const REGISTER_ATTEMPTS: usize = 4;

#[async_trait]
impl RegistrationStore for RedisRegistrations {
    /// Reads the key's index entry, then updates, moves or inserts. The steps span slots, so
    /// they cannot be one script: an insert claims the entry only if it still holds what was
    /// read, and a register that lost the entry to a concurrent one removes its insert and
    /// starts over (SQLite's unique key index makes the second one an update by itself).
    async fn register(&self, registration: Registration) -> Result<Credentials, StoreError> {
        for _ in 0..REGISTER_ATTEMPTS {
            if let Some(credentials) = self.register_once(&registration).await? {
                return Ok(credentials);
            }
        }
        Err(StoreError::Unavailable(
            "concurrent registers of one device kept racing".into(),
        ))
    }

    async fn find(&self, domain: &str, node: &str) -> Result<Option<Registration>, StoreError> {
        if domain.is_empty() {
            return Ok(None);
        }
        let hash: HashMap<String, String> = self
            .connection()
            .hgetall(self.keys.registration(domain, node))
            .await
            .map_err(failed)?;
        if hash.is_empty() {
            return Ok(None);
        }
        parse(domain, node, hash).map(Some)
    }

    async fn touch(&self, domain: &str, node: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .touch
            .key(self.keys.registration(domain, node))
            .key(self.keys.last_use(domain))
            .arg(node)
            .arg(unix(SystemTime::now()))
            .arg(super::TOUCH_INTERVAL.as_secs())
            .arg(self.keys.account_stem(domain))
            .invoke_async(&mut self.connection())
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn unregister(&self, key: &RegistrationKey) -> Result<bool, StoreError> {
        let Some((domain, node)) = self.located(key).await? else {
            return Ok(false);
        };
        match self.indexed(&domain, &node).await? {
            Some(Readable::Yes(found)) if found.key != *key => Ok(false),
            Some(_) => {
                let (_, removed) = self.remove_in(&domain, &node, 0, "").await?;
                Ok(!removed.is_empty())
            }
            None => Ok(false),
        }
    }

    async fn remove(&self, domain: &str, node: &str, token: &str) -> Result<bool, StoreError> {
        if domain.is_empty() || node.is_empty() || token.is_empty() {
            return Ok(false);
        }
        Ok(!self.remove_in(domain, node, 0, token).await?.1.is_empty())
    }

    async fn clear_second_token(
        &self,
        domain: &str,
        node: &str,
        second_token: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .clear_second_token
            .key(self.keys.registration(domain, node))
            .arg(second_token)
            .invoke_async(&mut self.connection())
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn sweep(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = unix(before);
        let mut removed = 0;
        for domain in self.domains().await? {
            loop {
                let (taken, batch) = self.remove_in(&domain, "", before, "").await?;
                removed += batch.len() as u64;
                if taken < SWEEP_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    async fn count_unused(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = format!("({}", unix(before));
        let mut unused = 0;
        for domain in self.domains().await? {
            let last_use = self.keys.last_use(&domain);
            let count: u64 = self
                .connection()
                .zcount(last_use, "-inf", &before)
                .await
                .map_err(failed)?;
            unused += count;
        }
        Ok(unused)
    }

    async fn sweeps_skipped_for(&self) -> Result<Duration, StoreError> {
        let seconds: Option<String> = self
            .connection()
            .get(self.keys.sweeps_skipped())
            .await
            .map_err(failed)?;
        // Another writer's value reads as no run: the next skipped sweep writes it over.
        let seconds = seconds.and_then(|seconds| seconds.parse().ok());
        Ok(Duration::from_secs(seconds.unwrap_or(0)))
    }

    async fn record_sweeps_skipped(&self, skipped: Option<Duration>) -> Result<(), StoreError> {
        let (key, mut connection) = (self.keys.sweeps_skipped(), self.connection());
        match skipped {
            Some(skipped) => connection.set(key, skipped.as_secs()).await,
            None => connection.del(key).await,
        }
        .map_err(failed)
    }

    async fn created(&self) -> Result<Option<SystemTime>, StoreError> {
        let noted = self.created.get_or_try_init(|| self.note_created());
        noted.await.copied()
    }

    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        // Read as text: a field another writer set to something else is left out, not the
        // end of every new registration (the total cap reads these) and of every sweep.
        let counts: HashMap<String, String> = self
            .connection()
            .hgetall(self.keys.counts())
            .await
            .map_err(failed)?;
        let mut counts: Vec<(String, u64)> = counts
            .into_iter()
            .filter_map(|(service, count)| Some((service, count.parse::<u64>().ok()?)))
            .filter(|(_, count)| *count > 0)
            .collect();
        counts.sort();
        Ok(counts)
    }

    async fn list(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<RegistrationPage, StoreError> {
        let (mut start, mut resume) = list_cursor(after.as_deref())?;
        let (mut registrations, mut unreadable) = (Vec::new(), Vec::new());
        for domain in self.domains().await? {
            if domain < start || domain == start && resume == Resume::After {
                continue;
            }
            let mut cursor = match resume {
                Resume::At(cursor) if domain == start => cursor,
                _ => 0,
            };
            (start, resume) = (domain.clone(), Resume::At(0));
            loop {
                let want = limit.max(1).saturating_sub(registrations.len()).max(1);
                let (page, damaged, next) = self.scan_of(&domain, cursor, want).await?;
                registrations.extend(page);
                unreadable.extend(damaged);
                cursor = next;
                if cursor == 0 || registrations.len() >= limit.max(1) {
                    break;
                }
            }
            if registrations.len() >= limit.max(1) {
                let at = match cursor {
                    0 => "end".to_owned(),
                    cursor => cursor.to_string(),
                };
                return Ok(RegistrationPage {
                    registrations,
                    unreadable,
                    next: Some(format!("{domain}\n{at}")),
                });
            }
        }
        Ok(RegistrationPage {
            registrations,
            unreadable,
            next: None,
        })
    }

    async fn restore(&self, registration: Registration) -> Result<(), StoreError> {
        // Refused before the key's own registration is removed, which a refusal must keep (as
        // SQLite's one transaction does).
        let (domain, node) = (&registration.domain, &registration.node);
        if let Some(held) = self.find(domain, node).await? {
            if held.key != registration.key {
                return Err(StoreError::Unusable(format!(
                    "node {node} is already used in {domain} by another registration"
                )));
            }
        }
        let credentials = Credentials {
            node: registration.node.clone(),
            secret: registration.secret.clone(),
        };
        let last_used = unix(registration.last_used);
        let elsewhere = match self.located(&registration.key).await? {
            Some((old_domain, old_node)) if old_domain != *domain => Some((old_domain, old_node)),
            // In the same domain the removal makes the room the insert needs.
            _ => {
                self.unregister(&registration.key).await?;
                None
            }
        };
        let Some((old_domain, old_node)) = elsewhere else {
            let inserted = self.insert(
                &registration,
                Some(credentials),
                last_used,
                InsertMode::Restore,
            );
            return inserted.await.map(drop);
        };
        // From another domain: moved as registering moves it.
        let ours = match self.indexed(&old_domain, &old_node).await? {
            Some(Readable::Yes(old)) => old.key == registration.key,
            Some(Readable::Damaged) => true,
            None => false,
        };
        let old = ours.then_some((old_domain.as_str(), old_node.as_str()));
        self.insert_then_remove(&registration, credentials, last_used, old)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(last_used: &str) -> HashMap<String, String> {
        [
            ("s", "fcm"),
            ("d", "device"),
            ("c", ""),
            ("a", "a@example.org"),
            ("t", "token"),
            ("x", "secret"),
            ("u", last_used),
        ]
        .into_iter()
        .map(|(field, value)| (field.to_owned(), value.to_owned()))
        .collect()
    }

    #[test]
    fn a_registration_hash_reads_back() {
        let found = parse("example.org", "node", hash("1700000000")).unwrap();
        assert_eq!(found.last_used, epoch_plus(1_700_000_000));
        assert_eq!(
            (found.token.as_str(), found.node.as_str()),
            ("token", "node")
        );
    }

    #[test]
    fn a_last_use_no_clock_holds_is_unusable_not_a_panic() {
        for bad in ["18446744073709551615", "9223372036854775808", "-1", "soon"] {
            let error = parse("example.org", "node", hash(bad)).unwrap_err();
            assert!(
                matches!(&error, StoreError::Unusable(text) if text.contains("bad `u`")),
                "{bad}: {error:?}"
            );
        }
    }

    fn epoch_plus(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }
}
