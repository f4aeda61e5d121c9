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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{AsyncCommands, RedisError, Script};
use async_trait::async_trait;

use super::{
    random, Credentials, Registration, RegistrationKey, RegistrationPage, RegistrationStore,
    StoreError, StoreLimits,
};
use crate::config::RedisSettings;
use crate::ratelimit::{RedisConnection, RedisEndpoint, RedisServers};
use keys::Keys;

/// The longest one Redis call may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// `touch` writes when the stored last use is older than this.
const TOUCH_EVERY: u64 = 24 * 60 * 60;
/// Registrations removed per script call by a sweep.
const SWEEP_BATCH: usize = 1_000;
/// Fresh nodes tried before giving up.
const NODE_ATTEMPTS: usize = 8;

/// The Redis registration store.
pub struct RedisRegistrations {
    connection: RedisConnection,
    keys: Keys,
    limits: StoreLimits,
    scripts: Arc<Scripts>,
}

struct Scripts {
    insert: Script,
    update: Script,
    remove: Script,
    touch: Script,
    forget_index: Script,
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
            }),
        })
    }

    fn connection(&self) -> RedisConnection {
        self.connection.clone()
    }

    /// Where the key index says the registration with `key` is.
    async fn located(&self, key: &RegistrationKey) -> Result<Option<(String, String)>, StoreError> {
        let pointed: Option<String> = self
            .connection()
            .get(self.keys.index(key))
            .await
            .map_err(failed)?;
        Ok(pointed.and_then(|text| {
            let (domain, node) = text.split_once('\n')?;
            Some((domain.to_owned(), node.to_owned()))
        }))
    }

    /// Updates a known registration in place; `None` when it is not where the index says.
    async fn update(
        &self,
        registration: &Registration,
        node: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let domain = &registration.domain;
        let key = &registration.key;
        let secret: Option<String> = self
            .scripts
            .update
            .key(self.keys.registration(domain, node))
            .key(self.keys.last_use(domain))
            .key(self.keys.account(domain, &registration.account))
            .arg(node)
            .arg(&key.service)
            .arg(&key.device)
            .arg(&key.channel)
            .arg(&registration.account)
            .arg(&registration.token)
            .arg(registration.second_token.as_deref().unwrap_or(""))
            .arg(unix(SystemTime::now()))
            .arg(self.keys.account_stem(domain))
            .invoke_async(&mut self.connection())
            .await
            .map_err(failed)?;
        Ok(secret.map(|secret| Credentials {
            node: node.to_owned(),
            secret,
        }))
    }

    /// Stores a registration not in the store yet, with `given` credentials or fresh ones.
    async fn insert(
        &self,
        registration: &Registration,
        given: Option<Credentials>,
        last_used: u64,
    ) -> Result<Credentials, StoreError> {
        let domain = &registration.domain;
        if domain.is_empty() {
            return Err(StoreError::Unusable("a registration needs a domain".into()));
        }
        self.check_total().await?;
        let restoring = given.is_some();
        let mut credentials = match given {
            Some(credentials) => credentials,
            None => random::credentials()?,
        };
        for _ in 0..NODE_ATTEMPTS {
            let answer = self
                .insert_once(registration, &credentials, last_used)
                .await?;
            match answer.first().map(String::as_str) {
                Some("ok") => {
                    self.inserted(registration, &credentials.node, &answer[1..])
                        .await?;
                    return Ok(credentials);
                }
                Some("full") => return Err(StoreError::Full("store.maxPerDomain")),
                Some("collision") if !restoring => credentials.node = random::node()?,
                Some("collision") => {
                    return Err(StoreError::Unusable(format!(
                        "node {} is already used in {domain} by another registration",
                        credentials.node
                    )))
                }
                _ => return Err(unexpected("insert")),
            }
        }
        Err(StoreError::Unavailable(
            "no free node found for a new registration".into(),
        ))
    }

    async fn insert_once(
        &self,
        registration: &Registration,
        credentials: &Credentials,
        last_used: u64,
    ) -> Result<Vec<String>, StoreError> {
        let domain = &registration.domain;
        let key = &registration.key;
        self.scripts
            .insert
            .key(self.keys.registration(domain, &credentials.node))
            .key(self.keys.last_use(domain))
            .key(self.keys.account(domain, &registration.account))
            .arg(&credentials.node)
            .arg(&key.service)
            .arg(&key.device)
            .arg(&key.channel)
            .arg(&registration.account)
            .arg(&registration.token)
            .arg(registration.second_token.as_deref().unwrap_or(""))
            .arg(&credentials.secret)
            .arg(last_used)
            .arg(self.limits.max_per_account)
            .arg(self.limits.max_per_domain)
            .arg(self.keys.registration_stem(domain))
            .invoke_async(&mut self.connection())
            .await
            .map_err(failed)
    }

    /// The writes outside the domain's slot after an insert: the index, the domain list, the
    /// counts, and the index entries of the registrations it replaced.
    async fn inserted(
        &self,
        registration: &Registration,
        node: &str,
        evicted: &[String],
    ) -> Result<(), StoreError> {
        let domain = &registration.domain;
        let mut connection = self.connection();
        let index = self.keys.index(&registration.key);
        let () = connection
            .set(index, format!("{domain}\n{node}"))
            .await
            .map_err(failed)?;
        let _: i64 = connection
            .sadd(self.keys.domains(), domain)
            .await
            .map_err(failed)?;
        let _: i64 = connection
            .hincr(self.keys.counts(), &registration.key.service, 1)
            .await
            .map_err(failed)?;
        self.forget(domain, evicted).await
    }

    /// Drops the index entries and counts of registrations a script removed (each as
    /// `service\ndevice\nchannel\nnode`).
    async fn forget(&self, domain: &str, removed: &[String]) -> Result<(), StoreError> {
        let mut connection = self.connection();
        for entry in removed {
            let mut parts = entry.splitn(4, '\n');
            let (Some(service), Some(device), Some(channel), Some(node)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(unexpected("remove"));
            };
            let key = RegistrationKey {
                service: service.to_owned(),
                device: device.to_owned(),
                channel: channel.to_owned(),
            };
            let _: i64 = self
                .scripts
                .forget_index
                .key(self.keys.index(&key))
                .arg(format!("{domain}\n{node}"))
                .invoke_async(&mut connection)
                .await
                .map_err(failed)?;
            let _: i64 = connection
                .hincr(self.keys.counts(), service, -1)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    async fn check_total(&self) -> Result<(), StoreError> {
        let Some(max_total) = self.limits.max_total else {
            return Ok(());
        };
        let total: u64 = self.counts().await?.iter().map(|(_, count)| count).sum();
        if total >= max_total {
            return Err(StoreError::Full("store.maxTotal"));
        }
        Ok(())
    }

    /// Removes `node` (or, with `node` empty, a batch last used before `before`) from `domain`.
    async fn remove_in(
        &self,
        domain: &str,
        node: &str,
        before: u64,
    ) -> Result<Vec<String>, StoreError> {
        let removed: Vec<String> = self
            .scripts
            .remove
            .key(self.keys.last_use(domain))
            .arg(self.keys.registration_stem(domain))
            .arg(self.keys.account_stem(domain))
            .arg(node)
            .arg(SWEEP_BATCH)
            .arg(before)
            .invoke_async(&mut self.connection())
            .await
            .map_err(failed)?;
        self.forget(domain, &removed).await?;
        Ok(removed)
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

    async fn page_of(
        &self,
        domain: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Registration>, StoreError> {
        let last = isize::try_from(offset + limit).unwrap_or(isize::MAX) - 1;
        let first = isize::try_from(offset).unwrap_or(isize::MAX);
        let nodes: Vec<String> = self
            .connection()
            .zrange(self.keys.last_use(domain), first, last)
            .await
            .map_err(failed)?;
        let mut registrations = Vec::with_capacity(nodes.len());
        for node in nodes {
            if let Some(registration) = self.find(domain, &node).await? {
                registrations.push(registration);
            }
        }
        Ok(registrations)
    }
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
    let last_used = field("u")?.parse::<u64>().map_err(|_| {
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
        last_used: UNIX_EPOCH + Duration::from_secs(last_used),
    })
}

#[async_trait]
impl RegistrationStore for RedisRegistrations {
    async fn register(&self, registration: Registration) -> Result<Credentials, StoreError> {
        if let Some((domain, node)) = self.located(&registration.key).await? {
            if domain == registration.domain {
                if let Some(credentials) = self.update(&registration, &node).await? {
                    return Ok(credentials);
                }
            } else if let Some(old) = self.find(&domain, &node).await? {
                // Moved to another domain: same node and secret, in the new domain's slot.
                self.remove(&domain, &node).await?;
                let credentials = Credentials {
                    node: old.node,
                    secret: old.secret,
                };
                let now = unix(SystemTime::now());
                return self.insert(&registration, Some(credentials), now).await;
            }
        }
        let now = unix(SystemTime::now());
        self.insert(&registration, None, now).await
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
            .arg(TOUCH_EVERY)
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
        match self.find(&domain, &node).await? {
            Some(found) if found.key == *key => self.remove(&domain, &node).await,
            _ => Ok(false),
        }
    }

    async fn remove(&self, domain: &str, node: &str) -> Result<bool, StoreError> {
        if domain.is_empty() || node.is_empty() {
            return Ok(false);
        }
        Ok(!self.remove_in(domain, node, 0).await?.is_empty())
    }

    async fn clear_second_token(&self, domain: &str, node: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .connection()
            .hdel(self.keys.registration(domain, node), "v")
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn sweep(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = unix(before);
        let mut removed = 0;
        for domain in self.domains().await? {
            loop {
                let batch = self.remove_in(&domain, "", before).await?.len();
                removed += batch as u64;
                if batch < SWEEP_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let counts: HashMap<String, i64> = self
            .connection()
            .hgetall(self.keys.counts())
            .await
            .map_err(failed)?;
        let mut counts: Vec<(String, u64)> = counts
            .into_iter()
            .filter_map(|(service, count)| Some((service, u64::try_from(count).ok()?)))
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
        let (mut start, mut offset) = match after.as_deref().map(|c| c.split_once('\n')) {
            None => (String::new(), 0),
            Some(Some((domain, offset))) => match offset.parse() {
                Ok(offset) => (domain.to_owned(), offset),
                Err(_) => return Err(StoreError::Unusable("bad cursor".into())),
            },
            Some(None) => return Err(StoreError::Unusable("bad cursor".into())),
        };
        let mut registrations = Vec::new();
        for domain in self.domains().await? {
            if domain < start {
                continue;
            }
            if domain != start {
                (start, offset) = (domain.clone(), 0);
            }
            let want = limit.max(1) - registrations.len();
            let page = self.page_of(&domain, offset, want).await?;
            let full = page.len() == want;
            registrations.extend(page);
            if full {
                let next = Some(format!("{domain}\n{}", offset + want));
                return Ok(RegistrationPage {
                    registrations,
                    next,
                });
            }
        }
        Ok(RegistrationPage {
            registrations,
            next: None,
        })
    }

    async fn restore(&self, registration: Registration) -> Result<(), StoreError> {
        self.unregister(&registration.key).await?;
        let credentials = Credentials {
            node: registration.node.clone(),
            secret: registration.secret.clone(),
        };
        let last_used = unix(registration.last_used);
        self.insert(&registration, Some(credentials), last_used)
            .await
            .map(drop)
    }
}
