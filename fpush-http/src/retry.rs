//! [`RetryPolicy`]: the "retry once, renew credentials once" loop both providers share.
//!
//! A push gets at most one retry, and only when the provider cannot have accepted it
//! ([`ProviderAnswer::Retry`]), after a short pause; and at most one renewal of refused
//! credentials ([`ProviderAnswer::Renew`]), at once. Anything else ends the push. So no device is
//! notified twice for one push, and a broken credential costs one extra request, not a loop.

use std::future::Future;
use std::time::Duration;

use fpush_traits::{Delivered, PushError};

use crate::{LoudLog, ProviderAnswer, PushLabel};

/// What the earlier attempts of a push already used up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tries {
    /// The one retry was taken: this is the last attempt a `Retry` would get.
    pub retried: bool,
    /// The credentials were renewed once already.
    pub renewed: bool,
}

/// The retry rules of one platform.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Pause before the one retry: long enough for a restarted frontend or a new connection,
    /// short enough that the XMPP server still gets its answer promptly.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// Runs `attempt` until it delivers or fails for good, and tells `loud` how it ended. A
    /// `Retry` with the retry used up becomes [`PushError::Transient`]; a second `Renew` becomes
    /// [`PushError::Misconfigured`] (fresh credentials were refused too).
    pub async fn run<F, Fut>(
        &self,
        loud: &LoudLog,
        push: PushLabel<'_>,
        attempt: F,
    ) -> Result<Delivered, PushError>
    where
        F: FnMut(Tries) -> Fut,
        Fut: Future<Output = ProviderAnswer>,
    {
        let result = self.attempts(loud, push, attempt).await;
        loud.outcome(push, &result);
        result
    }

    async fn attempts<F, Fut>(
        &self,
        loud: &LoudLog,
        push: PushLabel<'_>,
        mut attempt: F,
    ) -> Result<Delivered, PushError>
    where
        F: FnMut(Tries) -> Fut,
        Fut: Future<Output = ProviderAnswer>,
    {
        let context = loud.subject();
        let mut tries = Tries::default();
        loop {
            match attempt(tries).await {
                ProviderAnswer::Delivered(delivered) => return Ok(delivered),
                ProviderAnswer::Failed(error) => return Err(error),
                ProviderAnswer::Retry(reason) if tries.retried => {
                    return Err(PushError::Transient(reason))
                }
                ProviderAnswer::Retry(reason) => {
                    log::debug!("{context}: {push}: {reason}; retrying once");
                    tries.retried = true;
                    tokio::time::sleep(self.backoff).await;
                }
                ProviderAnswer::Renew(reason) if tries.renewed => {
                    return Err(PushError::Misconfigured(format!(
                        "{reason} (also with renewed credentials)"
                    )))
                }
                ProviderAnswer::Renew(reason) => {
                    log::debug!("{context}: {reason}; trying once more with renewed credentials");
                    tries.renewed = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const POLICY: RetryPolicy = RetryPolicy {
        backoff: Duration::from_millis(100),
    };

    /// Runs the policy over scripted answers; returns the result and the tries each attempt saw.
    async fn run(answers: Vec<ProviderAnswer>) -> (Result<Delivered, PushError>, Vec<Tries>) {
        let script = Mutex::new(answers.into_iter());
        let seen = Mutex::new(Vec::new());
        let loud = LoudLog::new("push module \"m\"");
        let push = PushLabel {
            provider: "test",
            token: "0123456789",
        };
        let result = POLICY
            .run(&loud, push, |tries| {
                seen.lock().unwrap().push(tries);
                let next = script.lock().unwrap().next();
                async move { next.expect("the policy asked for one attempt too many") }
            })
            .await;
        (result, seen.into_inner().unwrap())
    }

    fn retry() -> ProviderAnswer {
        ProviderAnswer::Retry("503".into())
    }

    fn renew() -> ProviderAnswer {
        ProviderAnswer::Renew("401".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_failure_is_retried_once_after_the_backoff() {
        let started = tokio::time::Instant::now();
        let (result, tries) = run(vec![retry(), retry()]).await;
        assert_eq!(result, Err(PushError::Transient("503".into())));
        assert_eq!(tries.len(), 2);
        assert!(tries[1].retried);
        assert_eq!(started.elapsed(), POLICY.backoff);

        let (result, _) = run(vec![
            retry(),
            ProviderAnswer::Delivered(Delivered::default()),
        ])
        .await;
        assert_eq!(result, Ok(Delivered::default()));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_are_renewed_once_at_once() {
        let started = tokio::time::Instant::now();
        let (result, tries) = run(vec![renew(), renew()]).await;
        let Err(PushError::Misconfigured(reason)) = result else {
            panic!("expected Misconfigured, got {result:?}");
        };
        assert!(reason.starts_with("401"), "{reason}");
        assert_eq!(tries.len(), 2);
        assert!(tries[1].renewed && !tries[1].retried);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_and_a_retry_are_each_allowed_once_in_one_push() {
        let (result, tries) = run(vec![renew(), retry(), renew()]).await;
        assert!(matches!(result, Err(PushError::Misconfigured(_))));
        assert_eq!(tries.len(), 3);
        assert_eq!(
            tries[2],
            Tries {
                retried: true,
                renewed: true
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_answer_ends_the_push_at_once() {
        let (result, tries) = run(vec![ProviderAnswer::Failed(PushError::Timeout)]).await;
        assert_eq!(result, Err(PushError::Timeout));
        assert_eq!(tries.len(), 1);
    }
}
