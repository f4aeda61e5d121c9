//! The HTTP listener for `/metrics` (OpenMetrics text), `/health` (liveness: the process serves)
//! and `/ready` (the component link is up). It cannot be tied up: a bounded number of
//! connections (the oldest gives way to a newcomer, idle ones first, see `slots`), one request
//! per connection, and a total deadline per connection. Only GET and HEAD are served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::slots::{Slots, Taken};
use super::Observed;
use crate::component::LinkState;

/// How much the listener serves at once, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// From accept to the last byte of the answer.
    pub deadline: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 64,
            deadline: Duration::from_secs(10),
        }
    }
}

/// Serve on `listen` with the default limits until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    observed: Arc<Observed>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    log::info!("metrics, health and readiness on http://{local}");
    if let Some(warning) = exposure_warning(local) {
        log::warn!("{warning}");
    }
    serve_on(listener, ListenerLimits::default(), observed, shutdown).await;
    Ok(())
}

/// Serve on a bound `listener` within `limits` until `shutdown`.
pub async fn serve_on(
    listener: TcpListener,
    limits: ListenerLimits,
    observed: Arc<Observed>,
    shutdown: CancellationToken,
) {
    let slots = Slots::new(limits.max_connections);
    loop {
        let socket = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) => {
                    log::warn!("metrics listener: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let taken = slots.take();
        let observed = observed.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(serve_connection(socket, taken, limits, observed, shutdown));
    }
}

/// One request on `socket`, then close; cut short by the deadline, eviction or shutdown.
async fn serve_connection(
    socket: TcpStream,
    taken: Taken,
    limits: ListenerLimits,
    observed: Arc<Observed>,
    shutdown: CancellationToken,
) {
    let slot = taken.slot.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        slot.start_answering();
        let response = match *request.method() {
            Method::GET | Method::HEAD => answer(&observed, request.uri().path()),
            _ => method_not_allowed(),
        };
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.deadline)
        .serve_connection(hyper_util::rt::TokioIo::new(socket), service);
    tokio::select! {
        served = tokio::time::timeout(limits.deadline, connection) => match served {
            Ok(Ok(())) => {}
            Ok(Err(error)) => log::debug!("metrics connection: {error}"),
            Err(_) => log::debug!("metrics connection closed at its deadline"),
        },
        _ = taken.slot.evicted.cancelled() => log::debug!("metrics connection closed for a newer one"),
        _ = shutdown.cancelled() => {}
    }
}

/// The answer to a GET or HEAD of `path`.
fn answer(observed: &Observed, path: &str) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            observed.metrics.render_read(&*observed.state),
        ),
        "/health" => (StatusCode::OK, TEXT, "ok\n".to_owned()),
        "/ready" => match (observed.state)().link {
            LinkState::Up { stream_id } => (
                StatusCode::OK,
                TEXT,
                format!("ready (stream {stream_id})\n"),
            ),
            other => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("component link {other:?}\n").to_lowercase(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics, /health or /ready\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// The answer to any method but GET and HEAD (hyper leaves the body out of a HEAD answer).
/// Every path here is read-only; and a 2xx answer to CONNECT would open a tunnel, not carry a
/// body (RFC 9110, 9.3.6).
fn method_not_allowed() -> Response<Full<Bytes>> {
    let body = Bytes::from_static(b"method not allowed: use GET or HEAD\n");
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static("GET, HEAD"),
    );
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A warning when the listener is reachable from other machines: it has no authentication.
fn exposure_warning(local: SocketAddr) -> Option<String> {
    (!local.ip().is_loopback()).then(|| {
        format!(
            "the metrics listener on {local} is reachable from other machines and has no \
             authentication: bind it to loopback or an internal address behind a firewall"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, StateSnapshot};

    fn observed(link: LinkState) -> Observed {
        Observed {
            metrics: Metrics::new(),
            state: Arc::new(move || StateSnapshot {
                modules: Vec::new(),
                in_flight: 0,
                link: link.clone(),
            }),
        }
    }

    #[test]
    fn health_answers_while_the_link_is_down_and_ready_does_not() {
        let down = observed(LinkState::Down);
        assert_eq!(answer(&down, "/health").status(), StatusCode::OK);
        assert_eq!(
            answer(&down, "/ready").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let up = observed(LinkState::Up {
            stream_id: "s1".into(),
        });
        assert_eq!(answer(&up, "/ready").status(), StatusCode::OK);
        assert_eq!(answer(&up, "/nothing").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn warns_only_when_bound_beyond_loopback() {
        assert!(exposure_warning("127.0.0.1:9357".parse().unwrap()).is_none());
        assert!(exposure_warning("[::1]:9357".parse().unwrap()).is_none());
        assert!(exposure_warning("0.0.0.0:9357".parse().unwrap()).is_some());
        assert!(exposure_warning("192.0.2.7:9357".parse().unwrap()).is_some());
    }
}
