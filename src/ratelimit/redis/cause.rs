//! Which of the fixed fallback causes a `redis` crate error stands for: the `cause` label of the
//! fallback counter and the word in the warning, never the error's own text.

use ::redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::metrics::FallbackCause;

/// The cause a failed call counts under.
pub(super) fn cause_of(error: &RedisError) -> FallbackCause {
    match error.kind() {
        ErrorKind::Server(ServerErrorKind::CrossSlot) => FallbackCause::crossslot,
        _ if error.is_timeout() => FallbackCause::timeout,
        ErrorKind::Io
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::Server(ServerErrorKind::ClusterDown) => FallbackCause::unreachable,
        _ if error.is_connection_dropped() || error.is_connection_refusal() => {
            FallbackCause::unreachable
        }
        _ => FallbackCause::error,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn server(kind: ServerErrorKind) -> RedisError {
        RedisError::from((ErrorKind::Server(kind), "test"))
    }

    #[test]
    fn errors_map_onto_the_fixed_causes() {
        assert_eq!(
            cause_of(&server(ServerErrorKind::CrossSlot)),
            FallbackCause::crossslot
        );
        assert_eq!(
            cause_of(&io::Error::from(io::ErrorKind::TimedOut).into()),
            FallbackCause::timeout
        );
        for error in [
            io::Error::from(io::ErrorKind::ConnectionRefused).into(),
            io::Error::from(io::ErrorKind::ConnectionReset).into(),
            server(ServerErrorKind::ClusterDown),
            RedisError::from((ErrorKind::ClusterConnectionNotFound, "test")),
        ] {
            assert_eq!(cause_of(&error), FallbackCause::unreachable, "{error}");
        }
        for error in [
            server(ServerErrorKind::NoScript),
            server(ServerErrorKind::ReadOnly),
            RedisError::from((ErrorKind::AuthenticationFailed, "test")),
        ] {
            assert_eq!(cause_of(&error), FallbackCause::error, "{error}");
        }
    }
}
