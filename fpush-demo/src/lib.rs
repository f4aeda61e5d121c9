//! The demo push module (`type: "demo"`): it logs each push (at debug level) and reports it
//! delivered.
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
        // Debug only: anyone can address pushes to the component, and message bodies and
        // senders are the users' business, not the journal's.
        log::debug!(
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
    use std::sync::Mutex;

    /// Every log record of the test process, with its level.
    struct Capture(Mutex<Vec<(log::Level, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            let line = record.args().to_string();
            self.0.lock().unwrap().push((record.level(), line));
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

    #[tokio::test]
    async fn no_body_or_sender_is_logged_above_debug() {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
        let demo = DemoPush::new("demo-privacy", DemoConfig::default());
        let notification = PushNotification {
            token: "abcdef0123456789".into(),
            module_id: "demo-privacy".into(),
            summary: fpush_traits::PushSummary {
                message_count: Some("1".into()),
                last_message_sender: Some("juliet@capulet.example".into()),
                last_message_body: Some("wherefore art thou".into()),
            },
            ..Default::default()
        };
        demo.send(&notification).await.unwrap();
        let records = CAPTURE.0.lock().unwrap();
        let ours: Vec<_> = records
            .iter()
            .filter(|(_, line)| line.contains("demo-privacy"))
            .collect();
        assert!(!ours.is_empty(), "the push is logged at some level");
        for (level, line) in records.iter() {
            if line.contains("juliet") || line.contains("wherefore") {
                assert!(*level >= log::Level::Debug, "{level}: {line}");
            }
        }
    }

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
