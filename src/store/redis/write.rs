//! The Redis writes: a registration inserted (with the per-account replacement within the
//! domain and the domain cap in one script) or updated in its domain's slot, then the index and
//! counts outside it.

use std::time::SystemTime;

use ::redis::{AsyncCommands, Script, ScriptInvocation};

use super::{failed, unexpected, unix, RedisRegistrations, NODE_ATTEMPTS, SWEEP_BATCH};
use crate::store::{
    random, Credentials, Registration, RegistrationKey, RegistrationStore, StoreError,
};

/// Why a registration is inserted: what its key's index entry must hold for the insert to
/// point it at the new registration, and what an account at `store.maxPerAccount` does.
#[derive(Debug, Clone, Copy)]
pub(super) enum InsertMode<'a> {
    /// A register: the entry must still hold what the register read (as stored; `None`: no
    /// entry), another value means that a concurrent register of the same key got there first;
    /// the account's least recently used registrations make room.
    Register(Option<&'a str>),
    /// A registration moving from another domain: the entry is set whatever it holds; room is
    /// made as for a register.
    Move,
    /// A line of `fpush store import`: the entry is set whatever it holds; an account at its
    /// cap refuses it, as the import must not evict what it just wrote.
    Restore,
}

impl RedisRegistrations {
    /// Updates a known registration in place; `None` when it is not where the index says.
    pub(super) async fn update(
        &self,
        registration: &Registration,
        node: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let secret: Option<String> = self
            .on_registration(&self.scripts.update, registration, node)
            .arg(unix(SystemTime::now()))
            .arg(self.keys.account_stem(&registration.domain))
            .invoke_async(&mut self.connection())
            .await
            .map_err(failed)?;
        Ok(secret.map(|secret| Credentials {
            node: node.to_owned(),
            secret,
        }))
    }

    /// Stores a registration not in the store yet, with `given` credentials or fresh ones;
    /// `None` when `claim` did not hold (the insert was taken back).
    pub(super) async fn insert(
        &self,
        registration: &Registration,
        given: Option<Credentials>,
        last_used: u64,
        mode: InsertMode<'_>,
    ) -> Result<Option<Credentials>, StoreError> {
        self.insert_leaving(registration, given, last_used, 0, mode)
            .await
    }

    /// [`Self::insert`] for a registration moving from another domain: its old copy, removed
    /// right after, is the one of `leaving` (0 or 1) that `store.maxTotal` does not count.
    pub(super) async fn insert_leaving(
        &self,
        registration: &Registration,
        given: Option<Credentials>,
        last_used: u64,
        leaving: u64,
        mode: InsertMode<'_>,
    ) -> Result<Option<Credentials>, StoreError> {
        let domain = &registration.domain;
        if domain.is_empty() {
            return Err(StoreError::Unusable("a registration needs a domain".into()));
        }
        self.check_total(registration, leaving).await?;
        let restoring = given.is_some();
        let mut credentials = match given {
            Some(credentials) => credentials,
            None => random::credentials()?,
        };
        for _ in 0..NODE_ATTEMPTS {
            let answer = self
                .insert_once(registration, &credentials, last_used, mode)
                .await?;
            match answer.first().map(String::as_str) {
                Some("ok") => {
                    let node = &credentials.node;
                    let claimed = self.inserted(registration, node, &answer[1..], mode);
                    return Ok(claimed.await?.then_some(credentials));
                }
                Some("full") => return Err(StoreError::Full("store.maxPerDomain")),
                Some("account-full") => return Err(StoreError::Full("store.maxPerAccount")),
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
        mode: InsertMode<'_>,
    ) -> Result<Vec<String>, StoreError> {
        let makes_room = !matches!(mode, InsertMode::Restore);
        self.on_registration(&self.scripts.insert, registration, &credentials.node)
            .arg(&credentials.secret)
            .arg(last_used)
            .arg(self.limits.max_per_account)
            .arg(self.limits.max_per_domain)
            .arg(self.keys.registration_stem(&registration.domain))
            .arg(u8::from(makes_room))
            .invoke_async(&mut self.connection())
            .await
            .map_err(failed)
    }

    /// `script` on the registration stored at `node` in its domain's slot, with the keys and
    /// the leading arguments the insert and update scripts share: the registration's hash, the
    /// domain's last-use set and the account's set; node, service, device, channel, account,
    /// token and second token.
    fn on_registration<'s>(
        &self,
        script: &'s Script,
        registration: &Registration,
        node: &str,
    ) -> ScriptInvocation<'s> {
        let (domain, key) = (&registration.domain, &registration.key);
        let mut invocation = script.key(self.keys.registration(domain, node));
        invocation
            .key(self.keys.last_use(domain))
            .key(self.keys.account(domain, &registration.account))
            .arg(node)
            .arg(&key.service)
            .arg(&key.device)
            .arg(&key.channel)
            .arg(&registration.account)
            .arg(&registration.token)
            .arg(registration.second_token.as_deref().unwrap_or(""));
        invocation
    }

    /// The writes outside the domain's slot after an insert: the index (if `mode`'s claim holds), the
    /// domain list, the counts, and the index entries of the registrations it replaced. When
    /// the claim fails, the registration just inserted is removed again (which uncounts it);
    /// answers whether it stays.
    async fn inserted(
        &self,
        registration: &Registration,
        node: &str,
        evicted: &[String],
        mode: InsertMode<'_>,
    ) -> Result<bool, StoreError> {
        let domain = &registration.domain;
        let mut connection = self.connection();
        let index = self.keys.index(&registration.key);
        let located = format!("{domain}\n{node}");
        let claimed = match mode {
            InsertMode::Move | InsertMode::Restore => {
                let () = connection.set(index, located).await.map_err(failed)?;
                true
            }
            InsertMode::Register(read) => {
                let claimed: i64 = self
                    .scripts
                    .claim_index
                    .key(index)
                    .arg(located)
                    .arg(read.unwrap_or(""))
                    .invoke_async(&mut connection)
                    .await
                    .map_err(failed)?;
                claimed == 1
            }
        };
        let _: i64 = connection
            .sadd(self.keys.domains(), domain)
            .await
            .map_err(failed)?;
        let _: i64 = self
            .scripts
            .count
            .key(self.keys.counts())
            .arg(&registration.key.service)
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        self.forget(domain, evicted).await?;
        if !claimed {
            self.remove_in(domain, node, 0, "").await?;
        }
        Ok(claimed)
    }

    /// Drops the index entries and counts of registrations a script removed (each as
    /// `service\ndevice\nchannel\nnode`, the parts a damaged hash lacked empty). The channel
    /// is what lies between the device and the node: a tigase channel is the client's device
    /// token, which may hold line breaks itself.
    async fn forget(&self, domain: &str, removed: &[String]) -> Result<(), StoreError> {
        for entry in removed {
            let mut parts = entry.splitn(3, '\n');
            let (Some(service), Some(device), Some(rest)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(unexpected("remove"));
            };
            let Some((channel, node)) = rest.rsplit_once('\n') else {
                return Err(unexpected("remove"));
            };
            let key = RegistrationKey {
                service: service.to_owned(),
                device: device.to_owned(),
                channel: channel.to_owned(),
            };
            let located = format!("{domain}\n{node}");
            let counted = match service {
                "" => self.counted_as(key, &located).await?,
                _ => Some(key),
            };
            if let Some(key) = counted {
                self.forget_one(&key, &located).await?;
            }
        }
        Ok(())
    }

    /// The key under which a registration that lost its service was indexed and counted: the
    /// counted service whose index entry for its device and channel still points at it
    /// (`located`). `None` when none does: it was never counted, or the index entry went.
    async fn counted_as(
        &self,
        key: RegistrationKey,
        located: &str,
    ) -> Result<Option<RegistrationKey>, StoreError> {
        let mut connection = self.connection();
        let services: Vec<String> = connection.hkeys(self.keys.counts()).await.map_err(failed)?;
        for service in services {
            let candidate = RegistrationKey {
                service,
                ..key.clone()
            };
            let pointed: Option<String> = connection
                .get(self.keys.index(&candidate))
                .await
                .map_err(failed)?;
            if pointed.as_deref() == Some(located) {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    /// Drops one removed registration's index entry (if it still points at it) and its count.
    async fn forget_one(&self, key: &RegistrationKey, located: &str) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let _: i64 = self
            .scripts
            .forget_index
            .key(self.keys.index(key))
            .arg(located)
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        let _: i64 = self
            .scripts
            .uncount
            .key(self.keys.counts())
            .arg(&key.service)
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// Refuses a new registration when the store holds `store.maxTotal`, counted after the
    /// account's replacement as the SQLite backend counts (the account's set is read only when
    /// the store is at its cap; the script may replace fewer if the set shrank meanwhile).
    async fn check_total(
        &self,
        registration: &Registration,
        leaving: u64,
    ) -> Result<(), StoreError> {
        let Some(max_total) = self.limits.max_total else {
            return Ok(());
        };
        let total: u64 = self.counts().await?.iter().map(|(_, count)| count).sum();
        let total = total.saturating_sub(leaving);
        if total < max_total {
            return Ok(());
        }
        let account = self
            .keys
            .account(&registration.domain, &registration.account);
        let held: u64 = self.connection().zcard(account).await.map_err(failed)?;
        let replaced = (held + 1).saturating_sub(u64::from(self.limits.max_per_account));
        if total.saturating_sub(replaced) >= max_total {
            return Err(StoreError::Full("store.maxTotal"));
        }
        Ok(())
    }

    /// Removes `node` if it holds `token` (any token when empty), or, with `node` empty, a batch
    /// last used before `before`, from `domain`; answers how many nodes it took, and the
    /// registrations removed. A node whose hash is gone is taken but reports no registration,
    /// so only the first says whether a sweep batch was full. A domain left empty is dropped
    /// from the domain list.
    pub(super) async fn remove_in(
        &self,
        domain: &str,
        node: &str,
        before: u64,
        token: &str,
    ) -> Result<(usize, Vec<String>), StoreError> {
        let mut removed: Vec<String> = self
            .scripts
            .remove
            .key(self.keys.last_use(domain))
            .arg(self.keys.registration_stem(domain))
            .arg(self.keys.account_stem(domain))
            .arg(node)
            .arg(SWEEP_BATCH)
            .arg(before)
            .arg(token)
            .invoke_async(&mut self.connection())
            .await
            .map_err(failed)?;
        let counted = |at: usize| removed.get(at).and_then(|count| count.parse::<u64>().ok());
        let (Some(taken), Some(left)) = (counted(0), counted(1)) else {
            return Err(unexpected("remove"));
        };
        removed.drain(..2);
        self.forget(domain, &removed).await?;
        if left == 0 {
            self.forget_domain(domain).await?;
        }
        Ok((usize::try_from(taken).unwrap_or(usize::MAX), removed))
    }

    /// Drops `domain`, which the remove script just left empty, from the domain list, so that
    /// the list (which every sweep and count walks) is bounded by the registrations, not by
    /// every domain that ever registered. A registration inserted meanwhile keeps it listed: by
    /// its own insert when that adds the domain after this removal, or by the second look here.
    async fn forget_domain(&self, domain: &str) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let _: i64 = connection
            .srem(self.keys.domains(), domain)
            .await
            .map_err(failed)?;
        let held: u64 = connection
            .zcard(self.keys.last_use(domain))
            .await
            .map_err(failed)?;
        if held > 0 {
            let _: i64 = connection
                .sadd(self.keys.domains(), domain)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }
}
