//! Counters an operator watches, the once-a-minute summary line, and the optional HTTP listener
//! serving them at `/metrics` (Prometheus text) and the link's state at `/health`.
//!
//! The hot path only touches pre-resolved handles ([`ModuleMetrics`]): one atomic add per
//! outcome, no label lookup per push. Gauges that describe state (cache sizes, the link) are
//! read when scraped rather than kept up to date on every push.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::component::LinkState;
use crate::outcome::Outcome;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PushLabels {
    module: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModuleLabel {
    module: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabel {
    result: &'static str,
}

/// Why a ratelimit decision was taken locally instead of in Redis: the `cause` label of
/// `fpush_redis_fallbacks_total`, a fixed set (never text from outside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FallbackCause {
    /// No connection (refused, reset, no cluster node reachable).
    unreachable,
    /// No answer within the store's timeout.
    timeout,
    /// Keys of one call in different cluster slots.
    crossslot,
    /// Any other refusal or failure.
    error,
}

impl FallbackCause {
    pub const ALL: [FallbackCause; 4] = [
        FallbackCause::unreachable,
        FallbackCause::timeout,
        FallbackCause::crossslot,
        FallbackCause::error,
    ];

    /// Its position in [`FallbackCause::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label value (and the word in the logs).
    pub fn name(self) -> &'static str {
        match self {
            FallbackCause::unreachable => "unreachable",
            FallbackCause::timeout => "timeout",
            FallbackCause::crossslot => "crossslot",
            FallbackCause::error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabel {
    cause: FallbackCause,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s: provider round trips, timeouts included.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric fpush exports, and the totals behind the summary log line.
pub struct Metrics {
    registry: Registry,
    per_push: PushSeries,
    state: StateSeries,
    /// Counters for pushes that name no module (unknown module, malformed push); its shared
    /// handle also holds the process-wide totals per outcome.
    unattributed: ModuleMetrics,
}

/// The series counted per push, by module.
struct PushSeries {
    pushes: Family<PushLabels, Counter>,
    received: Family<ModuleLabel, Counter>,
    latency: Family<ModuleLabel, Histogram, fn() -> Histogram>,
}

/// The series that describe the daemon's state, set at scrape time or on rare events.
struct StateSeries {
    in_flight: Gauge,
    ratelimit_entries: Family<ModuleLabel, Gauge>,
    dead_tokens: Family<ModuleLabel, Gauge>,
    connected: Gauge,
    reconnects: Counter,
    reloads: Family<ReloadLabel, Counter>,
    redis_fallbacks: Family<CauseLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Pre-resolved metric handles of one module: what the dispatcher touches per push.
#[derive(Clone)]
pub struct ModuleMetrics {
    outcomes: Vec<Counter>,
    received: Counter,
    latency: Histogram,
    totals: Arc<OutcomeTotals>,
}

/// Process-wide totals per outcome, shared by every [`ModuleMetrics`], for the summary log line.
type OutcomeTotals = [AtomicU64; Outcome::ALL.len()];

impl std::fmt::Debug for ModuleMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleMetrics").finish_non_exhaustive()
    }
}

impl ModuleMetrics {
    /// A push arrived for this module.
    pub fn received(&self) {
        self.received.inc();
    }

    /// Count one outcome.
    pub fn count(&self, outcome: Outcome) {
        self.outcomes[outcome.index()].inc();
        self.totals[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Record how long one provider call took.
    pub fn observe_latency(&self, took: Duration) {
        self.latency.observe(took.as_secs_f64());
    }

    /// Handles that count nowhere (for tests and benchmarks that build modules by hand).
    pub fn detached() -> Self {
        Metrics::new().module("")
    }
}

/// Pre-resolved fallback counters of a Redis store, one per [`FallbackCause`].
#[derive(Clone)]
pub struct RedisFallbacks {
    by_cause: [Counter; FallbackCause::ALL.len()],
}

impl RedisFallbacks {
    /// One decision taken locally.
    pub fn count(&self, cause: FallbackCause) {
        self.by_cause[cause.index()].inc();
    }

    /// Decisions counted so far for `cause`.
    pub fn get(&self, cause: FallbackCause) -> u64 {
        self.by_cause[cause.index()].get()
    }

    /// Decisions counted so far, all causes together.
    pub fn total(&self) -> u64 {
        self.by_cause.iter().map(Counter::get).sum()
    }

    /// Counters that count nowhere (a store built outside the daemon).
    pub fn detached() -> Self {
        Metrics::new().redis_fallbacks()
    }
}

impl std::fmt::Debug for RedisFallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFallbacks")
            .field("total", &self.total())
            .finish()
    }
}

/// Registers a metric and hands it back, so that `Metrics::new` reads as a list.
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

impl PushSeries {
    fn register(r: &mut Registry) -> Self {
        PushSeries {
            pushes: registered(
                r,
                "pushes",
                "Pushes by module and outcome (queued is counted when queued, and again with its final outcome)",
                Family::default(),
            ),
            received: registered(
                r,
                "pushes_received",
                "Push IQs received, by the module they named",
                Family::default(),
            ),
            latency: registered(
                r,
                "provider_latency_seconds",
                "Time the provider took per push",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
        }
    }
}

impl StateSeries {
    fn register(r: &mut Registry) -> Self {
        let family = Family::default;
        StateSeries {
            in_flight: registered(
                r,
                "pushes_in_flight",
                "Provider calls in flight",
                Gauge::default(),
            ),
            ratelimit_entries: registered(
                r,
                "ratelimit_entries",
                "Tokens the module's ratelimit remembers",
                family(),
            ),
            dead_tokens: registered(
                r,
                "dead_tokens",
                "Dead tokens the module remembers",
                family(),
            ),
            connected: registered(
                r,
                "component_connected",
                "1 while the component stream is up and authenticated",
                Gauge::default(),
            ),
            reconnects: registered(
                r,
                "component_reconnects",
                "Times the component link was re-established",
                Counter::default(),
            ),
            reloads: registered(
                r,
                "config_reloads",
                "Settings reloads (SIGHUP) by result",
                Family::default(),
            ),
            redis_fallbacks: registered(
                r,
                "redis_fallbacks",
                "Ratelimit decisions taken locally because Redis was unreachable, slow or refusing, by cause",
                Family::default(),
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("fpush");
        let per_push = PushSeries::register(&mut registry);
        let state = StateSeries::register(&mut registry);
        // Pushes that name no module are only counted by outcome.
        let unattributed = ModuleMetrics {
            outcomes: outcome_counters(&per_push.pushes, ""),
            received: Counter::default(),
            latency: latency_histogram(),
            totals: Arc::default(),
        };
        Arc::new(Metrics {
            registry,
            per_push,
            state,
            unattributed,
        })
    }

    /// The handles for one module (created on first use, shared afterwards).
    pub fn module(&self, id: &str) -> ModuleMetrics {
        let label = ModuleLabel {
            module: id.to_owned(),
        };
        ModuleMetrics {
            outcomes: outcome_counters(&self.per_push.pushes, id),
            received: self.per_push.received.get_or_create(&label).clone(),
            latency: self.per_push.latency.get_or_create(&label).clone(),
            totals: self.unattributed.totals.clone(),
        }
    }

    /// Counters for pushes that belong to no module.
    pub fn unattributed(&self) -> &ModuleMetrics {
        &self.unattributed
    }

    pub fn count_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.state
            .reloads
            .get_or_create(&ReloadLabel { result })
            .inc();
    }

    pub fn count_reconnect(&self) {
        self.state.reconnects.inc();
    }

    /// The handles a Redis store counts its fallbacks with.
    pub fn redis_fallbacks(&self) -> RedisFallbacks {
        RedisFallbacks {
            by_cause: FallbackCause::ALL.map(|cause| {
                self.state
                    .redis_fallbacks
                    .get_or_create(&CauseLabel { cause })
                    .clone()
            }),
        }
    }

    /// Ratelimit decisions taken without Redis so far, all causes together.
    fn redis_fallback_total(&self) -> u64 {
        self.redis_fallbacks().total()
    }

    /// Process-wide totals per outcome, in [`Outcome::ALL`] order.
    pub fn totals(&self) -> [u64; Outcome::ALL.len()] {
        let shared = &self.unattributed.totals;
        std::array::from_fn(|i| shared[i].load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition, with the state gauges from `state`.
    pub fn render(&self, state: &StateSnapshot) -> String {
        self.state.in_flight.set(state.in_flight as i64);
        self.state
            .connected
            .set(i64::from(matches!(state.link, LinkState::Up { .. })));
        for gauges in &state.modules {
            let label = ModuleLabel {
                module: gauges.module.clone(),
            };
            self.state
                .ratelimit_entries
                .get_or_create(&label)
                .set(gauges.ratelimit_entries as i64);
            self.state
                .dead_tokens
                .get_or_create(&label)
                .set(gauges.dead_tokens as i64);
        }
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            log::error!("cannot render metrics: {error}");
        }
        out
    }
}

/// The per-outcome counters of module `id` (`""` for pushes that name no module).
fn outcome_counters(pushes: &Family<PushLabels, Counter>, id: &str) -> Vec<Counter> {
    Outcome::ALL
        .iter()
        .map(|outcome| {
            let labels = PushLabels {
                module: id.to_owned(),
                outcome: *outcome,
            };
            pushes.get_or_create(&labels).clone()
        })
        .collect()
}

/// The sizes of one module an operator watches, read when scraped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleGauges {
    pub module: String,
    pub ratelimit_entries: usize,
    pub dead_tokens: usize,
}

/// Everything the gauges show, read at one scrape.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    pub modules: Vec<ModuleGauges>,
    pub in_flight: usize,
    pub link: LinkState,
}

/// Log one line a minute with the counts by outcome (only when something happened).
pub fn spawn_summary_log(metrics: Arc<Metrics>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut last = (metrics.totals(), metrics.redis_fallback_total());
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = (metrics.totals(), metrics.redis_fallback_total());
            if let Some(line) = summary_line(&now.0, &last.0, now.1.saturating_sub(last.1)) {
                log::info!("last minute: {line}");
            }
            last = now;
        }
    });
}

/// The summary of one minute from the outcome totals at its end and start and the decisions
/// taken without Redis in it; `None` when nothing happened.
fn summary_line(now: &[u64], last: &[u64], fallbacks: u64) -> Option<String> {
    let mut parts: Vec<String> = Outcome::ALL
        .iter()
        .zip(now.iter().zip(last.iter()))
        .filter(|(_, (now, last))| now > last)
        .map(|(outcome, (now, last))| format!("{} {}", outcome.name(), now - last))
        .collect();
    if fallbacks > 0 {
        parts.push(format!(
            "ratelimit: local fallback ({fallbacks} decisions without Redis)"
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// What the HTTP listener reads when asked: the counters, and a way to read the state now
/// (given by the daemon, so that this module needs to know nothing of the modules or the link).
pub struct Observed {
    pub metrics: Arc<Metrics>,
    pub state: Arc<dyn Fn() -> StateSnapshot + Send + Sync>,
}

/// Serve `/metrics` and `/health` on `listen` until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    observed: Arc<Observed>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    log::info!("metrics and health on http://{}", listener.local_addr()?);
    loop {
        let (socket, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    log::warn!("metrics listener: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let observed = observed.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let observed = observed.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&observed, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service);
            if let Err(error) = connection.await {
                log::debug!("metrics connection: {error}");
            }
        });
    }
}

fn answer(observed: &Observed, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let state = (observed.state)();
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            observed.metrics.render(&state),
        ),
        "/health" => match state.link {
            LinkState::Up { stream_id } => (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                format!("up (stream {stream_id})\n"),
            ),
            other => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("component link {other:?}\n").to_lowercase(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /health\n".to_owned(),
        ),
    };
    log::trace!(
        "{} answered in {:?}",
        request.uri().path(),
        started.elapsed()
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_when_ratelimits_were_decided_without_redis() {
        let zero = [0; Outcome::ALL.len()];
        let mut now = zero;
        now[Outcome::delivered.index()] = 3;
        assert_eq!(summary_line(&now, &zero, 0).as_deref(), Some("delivered 3"));
        assert_eq!(
            summary_line(&now, &zero, 2).as_deref(),
            Some("delivered 3, ratelimit: local fallback (2 decisions without Redis)")
        );
        assert_eq!(summary_line(&zero, &zero, 0), None);
    }

    #[test]
    fn fallbacks_are_exported_by_cause() {
        let metrics = Metrics::new();
        let fallbacks = metrics.redis_fallbacks();
        fallbacks.count(FallbackCause::crossslot);
        fallbacks.count(FallbackCause::crossslot);
        fallbacks.count(FallbackCause::timeout);
        assert_eq!(metrics.redis_fallback_total(), 3);
        let text = metrics.render(&StateSnapshot {
            modules: Vec::new(),
            in_flight: 0,
            link: LinkState::Down,
        });
        assert!(
            text.contains("fpush_redis_fallbacks_total{cause=\"crossslot\"} 2"),
            "{text}"
        );
        assert!(text.contains("fpush_redis_fallbacks_total{cause=\"timeout\"} 1"));
    }
}
