//! What a panic means in fpush. Inside a platform's `send` it costs one push: the push is
//! answered `wait` and the daemon goes on. Anywhere else the daemon can no longer be trusted to
//! answer every push, so the process ends at once with [`EXIT_ON_PANIC`] and systemd
//! (`Restart=always`) starts it afresh — never a silent exit 0.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use fpush_http::LoudLog;

/// The exit status after a panic outside a push (EX_SOFTWARE).
pub const EXIT_ON_PANIC: i32 = 70;

thread_local! {
    /// Set while a [`Contained`] future is polled: a panic there is survived.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Contained panics are logged like the other loud lines: a platform that panics on every push
/// would otherwise write a line per push. Each line counts those held back since the last.
static CONTAINED_PANICS: LazyLock<LoudLog> = LazyLock::new(|| LoudLog::new("a push module"));

/// Installs the process-wide rule above (the binary does this once, before anything runs).
pub fn install_hook() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CONTAINED.get() {
            CONTAINED_PANICS.log(
                log::Level::Error,
                "panic",
                &format_args!("panicked; the push is answered wait: {info}"),
            );
        } else {
            report(info);
            log::error!("fpush panicked outside a push; exiting to be restarted: {info}");
            // Under journald the line is queued for the log's own thread: let it out first.
            crate::systemd::journal::flush_logs();
            std::process::exit(EXIT_ON_PANIC);
        }
    }));
}

/// A future whose panic is caught and returned as [`Panicked`].
pub struct Contained<F>(pub F);

/// The contained future panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panicked;

impl<F: Future + Unpin> Future for Contained<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        CONTAINED.set(true);
        let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx)));
        CONTAINED.set(false);
        match polled {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(Panicked)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_inside_is_returned_and_the_flag_cleared() {
        let panicking: Pin<Box<dyn Future<Output = u8> + Send>> =
            Box::pin(async { panic!("provider bug") });
        assert_eq!(Contained(panicking).await, Err(Panicked));
        assert!(!CONTAINED.get());
        let fine: Pin<Box<dyn Future<Output = u8> + Send>> = Box::pin(async { 7 });
        assert_eq!(Contained(fine).await, Ok(7));
    }
}
