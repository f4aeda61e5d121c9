//! What the registering doors' tests share: a registration store in memory, with failures on
//! demand, a provider that records what it is sent, a dispatcher to drive with both, the
//! commands' forms, and an exchange with the real binary.
#![allow(dead_code)]

pub mod daemon;
pub mod dispatcher;
pub mod forms;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use fpush::store::{Credentials, Registration, RegistrationKey, RegistrationStore, StoreError};
use fpush_traits::{
    async_trait, DeadTokenReason, Delivered, PushError, PushNotification, PushTrait, SentTo,
};

/// Records every notification and the token it went to; answers per token as scripted,
/// delivered by default. A call (a VoIP push with a second token) goes to the VoIP token, or,
/// once [`RecordingProvider::send_calls_as_alerts`] is set, to the device token, as the APNS
/// module sends it without PushKit credentials; either way it says where it went
/// ([`PushTrait::send_attributed`]), as the APNS module does.
#[derive(Default)]
pub struct RecordingProvider {
    sent: Mutex<Vec<PushNotification>>,
    asked: Mutex<Vec<String>>,
    script: Mutex<HashMap<String, VecDeque<Result<Delivered, PushError>>>>,
    calls_as_alerts: AtomicBool,
    relay_name: Option<String>,
}

impl RecordingProvider {
    /// A provider a push2 message can address as `name` (`apns:production:<topic>`).
    pub fn relaying(name: &str) -> Self {
        RecordingProvider {
            relay_name: Some(name.to_owned()),
            ..RecordingProvider::default()
        }
    }

    pub fn answer(&self, token: &str, answer: Result<Delivered, PushError>) {
        let mut script = self.script.lock().unwrap();
        script
            .entry(token.to_owned())
            .or_default()
            .push_back(answer);
    }

    /// Answers the next push to `token` that the token is no longer registered.
    pub fn unregister(&self, token: &str) {
        self.answer(
            token,
            Err(PushError::TokenInvalid(DeadTokenReason::Unregistered)),
        );
    }

    pub fn sent(&self) -> Vec<PushNotification> {
        self.sent.lock().unwrap().clone()
    }

    /// The token each push went to, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    /// Calls go to the device token as alerts from now on (or over PushKit again).
    pub fn send_calls_as_alerts(&self, as_alerts: bool) {
        self.calls_as_alerts.store(as_alerts, Ordering::Relaxed);
    }

    /// Which token `notification` goes to.
    fn route(&self, notification: &PushNotification) -> SentTo {
        match notification.planned() {
            SentTo::SecondToken if !self.calls_as_alerts.load(Ordering::Relaxed) => {
                SentTo::SecondToken
            }
            _ => SentTo::Token,
        }
    }

    fn deliver(&self, notification: &PushNotification, to: SentTo) -> Result<Delivered, PushError> {
        self.sent.lock().unwrap().push(notification.clone());
        let token = match (to, &notification.voip_token) {
            (SentTo::SecondToken, Some(voip)) => voip,
            _ => &notification.token,
        };
        self.asked.lock().unwrap().push(token.clone());
        let mut script = self.script.lock().unwrap();
        script
            .get_mut(token)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Ok(Delivered::default()))
    }
}

#[async_trait]
impl PushTrait for RecordingProvider {
    async fn send(&self, notification: &PushNotification) -> Result<Delivered, PushError> {
        self.deliver(notification, self.route(notification))
    }

    async fn send_attributed(
        &self,
        notification: &PushNotification,
    ) -> (Result<Delivered, PushError>, SentTo) {
        let to = self.route(notification);
        (self.deliver(notification, to), to)
    }

    fn relay_name(&self) -> Option<&str> {
        self.relay_name.as_deref()
    }
}

/// A registration store in memory: enough of the contract for the door's rules.
#[derive(Default)]
pub struct MemoryStore {
    registrations: Mutex<Vec<Registration>>,
    next: AtomicU32,
    failing: AtomicBool,
    failing_removals: AtomicBool,
    made: Mutex<Option<SystemTime>>,
}

impl MemoryStore {
    /// Every call fails (`Unavailable`) from now on, or works again.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Removing a registration fails (`Unavailable`) from now on, or works again; every other
    /// call works.
    pub fn fail_removals(&self, failing: bool) {
        self.failing_removals.store(failing, Ordering::Relaxed);
    }

    /// The store says it was made at `made` (`None`: not known, as by default).
    pub fn made_at(&self, made: Option<SystemTime>) {
        *self.made.lock().unwrap() = made;
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.failing.load(Ordering::Relaxed) {
            true => Err(StoreError::Unavailable("down".into())),
            false => Ok(()),
        }
    }

    pub fn all(&self) -> Vec<Registration> {
        self.registrations.lock().unwrap().clone()
    }
}

#[async_trait]
impl RegistrationStore for MemoryStore {
    async fn register(&self, mut new: Registration) -> Result<Credentials, StoreError> {
        self.check()?;
        let mut all = self.registrations.lock().unwrap();
        if let Some(old) = all.iter_mut().find(|r| r.key == new.key) {
            old.token = new.token;
            old.second_token = new.second_token;
            old.account = new.account;
            old.domain = new.domain;
            return Ok(Credentials {
                node: old.node.clone(),
                secret: old.secret.clone(),
            });
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        new.node = format!("node{n}");
        new.secret = format!("secret{n}");
        let credentials = Credentials {
            node: new.node.clone(),
            secret: new.secret.clone(),
        };
        all.push(new);
        Ok(credentials)
    }

    async fn find(&self, domain: &str, node: &str) -> Result<Option<Registration>, StoreError> {
        self.check()?;
        let all = self.registrations.lock().unwrap();
        Ok(all
            .iter()
            .find(|r| r.domain == domain && r.node == node)
            .cloned())
    }

    async fn touch(&self, domain: &str, node: &str) -> Result<(), StoreError> {
        self.check()?;
        let mut all = self.registrations.lock().unwrap();
        for r in all
            .iter_mut()
            .filter(|r| r.domain == domain && r.node == node)
        {
            r.last_used = SystemTime::now();
        }
        Ok(())
    }

    async fn unregister(&self, key: &RegistrationKey) -> Result<bool, StoreError> {
        self.check()?;
        let mut all = self.registrations.lock().unwrap();
        let before = all.len();
        all.retain(|r| r.key != *key);
        Ok(all.len() < before)
    }

    async fn remove(&self, domain: &str, node: &str, token: &str) -> Result<bool, StoreError> {
        self.check()?;
        if self.failing_removals.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable("down".into()));
        }
        let mut all = self.registrations.lock().unwrap();
        let before = all.len();
        all.retain(|r| !(r.domain == domain && r.node == node && r.token == token));
        Ok(all.len() < before)
    }

    async fn clear_second_token(
        &self,
        domain: &str,
        node: &str,
        second_token: &str,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut all = self.registrations.lock().unwrap();
        for r in all.iter_mut().filter(|r| {
            r.domain == domain && r.node == node && r.second_token.as_deref() == Some(second_token)
        }) {
            r.second_token = None;
        }
        Ok(())
    }

    async fn sweep(&self, _: SystemTime) -> Result<u64, StoreError> {
        self.check().map(|_| 0)
    }

    async fn count_unused(&self, _: SystemTime) -> Result<u64, StoreError> {
        self.check().map(|_| 0)
    }

    async fn sweeps_skipped_for(&self) -> Result<Duration, StoreError> {
        self.check().map(|_| Duration::ZERO)
    }

    async fn record_sweeps_skipped(&self, _: Option<Duration>) -> Result<(), StoreError> {
        self.check()
    }

    async fn created(&self) -> Result<Option<SystemTime>, StoreError> {
        self.check()?;
        Ok(*self.made.lock().unwrap())
    }

    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.check()?;
        Ok(vec![("fcm".into(), self.all().len() as u64)])
    }
}
