//! The contract between the fpush core and its push platforms.
//!
//! A front door of the core turns a request into a [`PushNotification`] and hands it to a module
//! through [`PushTrait::send`]. A platform answers with [`Delivered`] or a [`PushError`] that says
//! what the XMPP server should do next, not what the provider's HTTP status was: the core maps
//! each kind to exactly one reply type (see `ARCHITECTURE.md`, "Replies"), and learns about the
//! token the platform says it asked ([`PushTrait::send_attributed`]). Each platform makes itself
//! known through one [`Platform`] entry.
//!
//! Nothing here knows about XMPP, and no platform crate imports core code.

pub mod bytes;
mod error;
mod notification;
mod platform;
pub mod settings;
mod snapshot;
pub mod text;

pub use async_trait::async_trait;

pub use error::{DeadTokenReason, Delivered, PushError, Rejection};
pub use notification::{
    token_prefix, EncryptedPayload, Priority, PushKind, PushNotification, PushSummary, SentTo,
};
pub use platform::{
    parse_block, BlockError, BuildError, Capabilities, ParsedConfig, Platform, PlatformConfig,
};
pub use snapshot::{ConnectionGauge, PoolGauges, ProviderSnapshot};

/// A push platform: one configured app on one provider.
///
/// Modules live as `Arc<dyn PushTrait>` and are called concurrently from many tasks, so `send`
/// must be cheap to call in parallel (share pooled connections, not one per push).
#[async_trait]
pub trait PushTrait: Send + Sync {
    /// Deliver one push. Must finish in bounded time (the module owns its request timeout).
    async fn send(&self, notification: &PushNotification) -> Result<Delivered, PushError>;

    /// Deliver one push, and say which of its tokens it went to: what the core learns from the
    /// answer (a dead token above all) is about that token. A platform may send a push meant
    /// for the second token ([`PushNotification::planned`]) to the device token instead, and
    /// then says so here; the others keep the default. The core asks this way only for pushes
    /// meant for the second token: every other push goes to the device token, through `send`.
    async fn send_attributed(
        &self,
        notification: &PushNotification,
    ) -> (Result<Delivered, PushError>, SentTo) {
        (self.send(notification).await, notification.planned())
    }

    /// What the platform knows about its credentials and connections, for the metrics. Read
    /// when scraped, so it may take a lock; platforms without such state keep the default.
    fn snapshot(&self) -> ProviderSnapshot {
        ProviderSnapshot::default()
    }

    /// The name by which a stateless relay's message addresses the app this module serves
    /// (push2's APNS form: `apns:<production|sandbox>:<topic>`); `None` when no message can.
    fn relay_name(&self) -> Option<&str> {
        None
    }
}
