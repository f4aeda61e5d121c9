//! What a panic means in fpush. Inside a platform's `send` it costs one push: the push is
//! answered `wait` and the daemon goes on. Anywhere else the daemon can no longer be trusted to
//! answer every push, so the process ends at once with [`EXIT_ON_PANIC`] and systemd
//! (`Restart=always`) starts it afresh — never a silent exit 0.
//!
//! Either way the panic is told in one log record, escaped like every other (a panic message
//! can carry text from outside: control characters must neither forge log lines nor drive a
//! terminal), never by Rust's default report printed raw beside it.

use std::backtrace::Backtrace;
use std::cell::Cell;
use std::fmt::Write as _;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, PanicHookInfo};
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
    std::panic::set_hook(Box::new(move |info| {
        if CONTAINED.get() {
            CONTAINED_PANICS.log(
                log::Level::Error,
                "panic",
                &format_args!("panicked; the push is answered wait: {info}"),
            );
        } else {
            exit_after(info);
        }
    }));
}

/// A panic outside a push: one error record saying where it happened and, when
/// `RUST_BACKTRACE` asks for it, the backtrace; then the exit with [`EXIT_ON_PANIC`].
fn exit_after(info: &PanicHookInfo<'_>) -> ! {
    let text = fatal_text(info, backtrace_wanted().then(Backtrace::force_capture));
    if log::log_enabled!(log::Level::Error) {
        log::error!("{text}");
    } else {
        // No logger yet, or errors filtered out: printed all the same, escaped just as well.
        crate::systemd::journal::print_problem(log::Level::Error, &text);
    }
    // The record is queued for the log's own thread: let it out first.
    crate::systemd::journal::flush_logs();
    std::process::exit(EXIT_ON_PANIC);
}

/// Whether `RUST_BACKTRACE` asks for a panic's backtrace, as Rust's default report reads it.
fn backtrace_wanted() -> bool {
    std::env::var_os("RUST_BACKTRACE").is_some_and(|value| value != "0")
}

/// The record of a panic outside a push: the thread, the panic's place (`file:line:column`)
/// and message, and the backtrace if one was taken.
fn fatal_text(info: &PanicHookInfo<'_>, backtrace: Option<Backtrace>) -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let mut text =
        format!("fpush panicked outside a push (thread {name}); exiting to be restarted: {info}");
    if let Some(backtrace) = backtrace {
        let _ = write!(text, "\nstack backtrace:\n{backtrace}");
    }
    text
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
