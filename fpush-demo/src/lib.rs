//! The demo push module (`type: "demo"`): it logs each push and reports it delivered.
//!
//! It exists so that an operator can watch fpush do its whole job — component link, parsing,
//! ratelimit, replies — without Apple or Google credentials. An optional `delay` simulates the
//! provider's latency, which is also how the benchmarks and load tests keep pushes in flight.
//! The platform's registry entry is [`PLATFORM`].

mod platform;

use std::time::Duration;

use fpush_traits::{async_trait, Delivered, PushError, PushNotification, PushTrait};
use serde::Deserialize;

pub use platform::PLATFORM;

/// Settings of a demo module (`pushModules.<id>.demo`); every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoConfig {
    /// Simulated provider latency before each push is reported delivered.
    #[serde(default, deserialize_with = "fpush_traits::settings::duration")]
    pub delay: Duration,
}

/// A push "provider" that only logs.
#[derive(Debug)]
pub struct DemoPush {
    module_id: String,
    delay: Duration,
}

impl DemoPush {
    pub fn new(module_id: &str, cfg: DemoConfig) -> Self {
        Self {
            module_id: module_id.to_owned(),
            delay: cfg.delay,
        }
    }
}

#[async_trait]
impl PushTrait for DemoPush {
    async fn send(&self, notification: &PushNotification) -> Result<Delivered, PushError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        log::info!(
            "demo module {}: push delivered to token {}… (sender {:?}, body {:?})",
            self.module_id,
            notification.token_prefix(),
            notification
                .summary
                .last_message_sender
                .as_deref()
                .unwrap_or(""),
            notification
                .summary
                .last_message_body
                .as_deref()
                .unwrap_or(""),
        );
        Ok(Delivered::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delivers_after_the_configured_delay() {
        let demo = DemoPush::new(
            "demo",
            DemoConfig {
                delay: Duration::from_millis(250),
            },
        );
        let started = tokio::time::Instant::now();
        let notification = PushNotification {
            token: "abcdef0123456789".into(),
            module_id: "demo".into(),
            ..Default::default()
        };
        assert_eq!(demo.send(&notification).await, Ok(Delivered::default()));
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }
}
