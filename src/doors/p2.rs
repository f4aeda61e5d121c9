//! p2, the protocol of Conversations and the apps built from it: a client first registers its
//! device token with an ad-hoc command (`register-push-fcm` / `register-push-apns`) and gets a
//! `node` and a `secret`; its server then pushes naming only that node, with the secret in the
//! publish-options. The token never reaches the user's server.
//!
//! Registrations are keyed by (service, device, channel): `device` is the hex SHA-1 of the
//! sender's bare JID and the client's device id, `channel` that of a room's JID and the device id
//! (empty for the account itself). The app checks the `account` key of each push against its own
//! `device` hash and drops pushes that are not its own.

mod command;
mod measured;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fpush_traits::{PushNotification, SentTo};

pub(crate) use command::{
    account_of, bare, non_empty, store_refusal as command_store_refusal, unregister_result,
};
pub use command::{
    command_items, parse_node, CommandAnswer, CommandKind, CommandRefusal, Completed,
    COMMAND_RESULTS,
};
pub use measured::Measured;

use super::{Refusal, Target, TargetKey};
use crate::access::{domain_of, sender_domain};
use crate::config::RegistrationProtocol;
use crate::modules::ModuleSet;
use crate::outcome::Outcome;
use crate::request::PushRequest;
use crate::store::{touch_due, Registration, RegistrationStore, StoreError};

/// The protocol this door serves, as modules name it in `registration`.
pub const PROTOCOL: RegistrationProtocol = RegistrationProtocol::P2;

/// The p2 door: the registration store and the JID register replies name.
pub struct P2Door {
    store: Arc<dyn RegistrationStore>,
    /// Our component JID (older Conversations builds read it from the register reply).
    jid: String,
    /// Registrations per service, as last counted (for the metrics); `None` until counted.
    counted: Mutex<Option<Vec<(String, u64)>>>,
}

impl fmt::Debug for P2Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2Door").field("jid", &self.jid).finish()
    }
}

/// Whether a push is p2's to answer: it names no `pushModule` and carries a `secret` (the caller
/// checks that some module serves p2). Such a push is never handed to the default module: its
/// node would go to the provider as if it were a token.
pub fn claims(push: &PushRequest) -> bool {
    push.module.is_none() && secret_of(push).is_some()
}

fn secret_of(push: &PushRequest) -> Option<&str> {
    push.options
        .iter()
        .find(|(var, _)| var == "secret")
        .map(|(_, value)| value.as_str())
}

impl P2Door {
    pub fn new(store: Arc<dyn RegistrationStore>, jid: impl Into<String>) -> Self {
        P2Door {
            store,
            jid: jid.into(),
            counted: Mutex::default(),
        }
    }

    /// Counts the registrations per service again (a store scan: call it now and then).
    pub async fn recount(&self) {
        match self.store.counts().await {
            Ok(counts) => {
                *self.counted.lock().unwrap_or_else(|p| p.into_inner()) = Some(counts);
            }
            Err(error) => log::debug!("p2: cannot count registrations: {error}"),
        }
    }

    /// The registrations of `service` at the last count.
    pub fn registrations(&self, service: &str) -> Option<u64> {
        let counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        let counted = counted.as_ref()?;
        let found = counted.iter().find(|(name, _)| name == service);
        Some(found.map_or(0, |(_, count)| *count))
    }

    /// Our component JID, as configured when the door was made.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Our JID as a request addressed to `to` reached it: its domain, which is the component's
    /// JID even after a reload renamed the component (the door keeps the name it was made
    /// with); the configured one when the request named none.
    pub fn jid_reached_at<'a>(&'a self, to: &'a str) -> &'a str {
        match domain_of(to) {
            "" => &self.jid,
            domain => domain,
        }
    }

    /// The target of a push from `from` (a bare JID) naming a registration by its node:
    /// looked up by (sender's domain, node), delivered only when the secret matches.
    pub async fn resolve(
        &self,
        modules: &ModuleSet,
        from: &str,
        push: PushRequest,
    ) -> Result<Target, Refusal> {
        let found = find_registration(&*self.store, from, &push.token).await;
        let registration = match found {
            Ok(Some(registration)) => registration,
            Ok(None) => return Err(lacking(&*self.store, modules).await.into()),
            Err(error) => return Err(store_refusal(&error)),
        };
        let given = secret_of(&push).unwrap_or_default();
        if !same_secret(given.as_bytes(), registration.secret.as_bytes()) {
            return Err(Refusal {
                outcome: Outcome::forbidden,
                text: "The secret does not match the registration.".into(),
            });
        }
        let service = registration.key.service.as_str();
        let Some(module) = modules.registration_module(PROTOCOL, service) else {
            let what = format!("p2 registrations for {service}");
            return Err(Refusal::unserved(modules, PROTOCOL, service, &what));
        };
        let mut extra = vec![("account".to_owned(), registration.key.device.clone())];
        if !registration.key.channel.is_empty() {
            extra.push(("channel".to_owned(), registration.key.channel.clone()));
        }
        let key = target_key(&registration);
        let stale = touch_due(registration.last_used, SystemTime::now());
        let notification = PushNotification {
            token: registration.token,
            module_id: module.id.clone(),
            summary: push.summary,
            options: push.options,
            extra,
            ..PushNotification::default()
        };
        let domain = &registration.domain;
        let registered = Registered::new(self.store.clone(), domain, push.token, stale);
        let target = Target::new(module.clone(), notification, TargetKey::Composite(key));
        Ok(target.bounded().registered(registered))
    }

    /// The store, for the register and unregister commands.
    fn store(&self) -> &dyn RegistrationStore {
        &*self.store
    }
}

/// The registration a push was delivered for: what its end means for the store.
pub struct Registered {
    store: Arc<dyn RegistrationStore>,
    domain: String,
    node: String,
    /// Its last use, as looked up, is old enough to record a new one.
    stale: bool,
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Registered {
    /// The registration `node` of `domain`; `stale` when its last use, as looked up, is old
    /// enough to record a new one.
    pub fn new(store: Arc<dyn RegistrationStore>, domain: &str, node: String, stale: bool) -> Self {
        Registered {
            store,
            domain: domain.to_owned(),
            node,
            stale,
        }
    }

    /// The bytes of text it holds (see [`Target::queued_size`](super::Target::queued_size)).
    pub fn text_len(&self) -> usize {
        self.domain.len() + self.node.len()
    }

    /// A delivered push keeps the registration from expiring (a store call only when its last
    /// use is stale, so most pushes cost one look-up); a dead token removes it (the
    /// server disables the push on the `cancel` that follows, and Conversations never
    /// unregisters by itself). A dead second token (`to`, the token the platform says the push
    /// went to) is only forgotten, and the push answered `wait` (the device token lives on). A
    /// token the registration no longer holds (`sent` went to it) removes nothing and is
    /// answered `wait`. A store failure here is logged: the reply stands. Answers the outcome
    /// the reply is made from.
    pub async fn settle(&self, outcome: Outcome, sent: &PushNotification, to: SentTo) -> Outcome {
        let dead = matches!(outcome, Outcome::token_invalid | Outcome::known_dead);
        if dead && to == SentTo::SecondToken {
            self.forget_second_token(sent).await;
            return Outcome::transient;
        }
        if dead {
            return self.remove(outcome, sent).await;
        }
        if outcome == Outcome::delivered && self.stale {
            if let Err(error) = self.store.touch(&self.domain, &self.node).await {
                log::debug!("after a registration's push (delivered): {error}");
            }
        }
        outcome
    }

    /// Removes the registration if it still holds the dead token `sent` went to: compared and
    /// removed in one store call, so that a token the client registered meanwhile (same node
    /// and secret) is never removed with the old one. A registration that holds another token
    /// is answered `wait`: the old token's death says nothing about it. A registration gone, or
    /// a store call that fails, is no replacement.
    async fn remove(&self, outcome: Outcome, sent: &PushNotification) -> Outcome {
        let removed = self.store.remove(&self.domain, &self.node, &sent.token);
        match removed.await {
            Ok(true) => outcome,
            Ok(false) if self.holds_another_token(sent).await => Outcome::transient,
            Ok(false) => outcome,
            Err(error) => {
                log::debug!("after a dead token: {error}");
                outcome
            }
        }
    }

    /// Whether the registration holds another token now than the one `sent` went to.
    async fn holds_another_token(&self, sent: &PushNotification) -> bool {
        match self.store.find(&self.domain, &self.node).await {
            Ok(Some(now)) => now.token != sent.token,
            Ok(None) => false,
            Err(error) => {
                log::debug!("after a dead token: {error}");
                false
            }
        }
    }

    /// Forgets the dead second token `sent` went to, if the registration still holds it (a new
    /// one registered meanwhile is kept).
    async fn forget_second_token(&self, sent: &PushNotification) {
        let Some(dead) = sent.voip_token.as_deref() else {
            return;
        };
        let forgotten = self
            .store
            .clear_second_token(&self.domain, &self.node, dead)
            .await;
        if let Err(error) = forgotten {
            log::debug!("after a dead VoIP token: {error}");
        }
    }
}

/// The registration a push from `from` names by `node`: stored under the sender's domain
/// folded ([`sender_domain`]), or, for a sender that spells its domain otherwise, under that
/// spelling, where an fpush that did not fold domains stored it (until the client registers
/// again, which moves it to the folded domain). Real servers send their domain folded: for them
/// this is one look-up.
pub(crate) async fn find_registration(
    store: &dyn RegistrationStore,
    from: &str,
    node: &str,
) -> Result<Option<Registration>, StoreError> {
    let (folded, spelled) = (sender_domain(from), domain_of(from));
    match store.find(&folded, node).await? {
        None if folded != spelled => store.find(spelled, node).await,
        found => Ok(found),
    }
}

/// How a push naming a registration the store lacks ends: `unknown_registration` (answered
/// `item-not-found`, so the server disables it and the app registers again), or
/// `unknown_in_new_store` (`wait`) while the store is younger than `modules.retiredGrace`: a
/// new store may be the wrong one, and ending every registration it lacks could not be undone.
pub(crate) async fn lacking(store: &dyn RegistrationStore, modules: &ModuleSet) -> Outcome {
    let young = match store.created().await {
        Ok(Some(created)) => created
            .elapsed()
            .map_or(true, |age| age < modules.retired_grace()),
        Ok(None) => false,
        // Not known: the cautious answer.
        Err(_) => true,
    };
    match young {
        true => Outcome::unknown_in_new_store,
        false => Outcome::unknown_registration,
    }
}

/// The ratelimit and dead-token key of a registration: its token and account (the devices of
/// one account that share a token share it), and for a room registration its channel too, so
/// that a busy room's pushes never hold back the account's, nor another room's. The register
/// command forgets the same key in the dead-token memory.
pub(crate) fn target_key(registration: &Registration) -> String {
    let (token, account) = (&registration.token, &registration.account);
    match registration.key.channel.as_str() {
        "" => format!("{token}\0{account}"),
        channel => format!("{token}\0{account}\0{channel}"),
    }
}

/// The refusal for a store failure: `wait`, never `item-not-found` (the server would drop a
/// registration that may be alive).
fn store_refusal(error: &StoreError) -> Refusal {
    log::debug!("p2: registration look-up failed: {error}");
    Outcome::store_failed.into()
}

/// Lowercase hex SHA-1 of `jid`, a NUL and `device_id`: p2's device and channel hashes.
pub fn device_hash(jid: &str, device_id: &str) -> String {
    // SHA-1 because p2 derives its identities so; ring offers it for such protocols.
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    hasher.update(jid.as_bytes());
    hasher.update(&[0u8]);
    hasher.update(device_id.as_bytes());
    hasher
        .finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(given: &[u8], stored: &[u8]) -> bool {
    if given.len() != stored.len() {
        return false;
    }
    let difference = given
        .iter()
        .zip(stored)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
pub(crate) mod tests;
