//! One benchmark run: start the APNS test server and the real `fpush` binary with generated
//! settings (with a store of registrations for pushes by node), accept its component
//! connection, warm it up, play the scenario, and measure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpListener;

use crate::apns_server::{ApnsServer, P12_PASSWORD};
use crate::load::{self, Percentiles, Tracker, WARMUP_TOKEN_BASE};
use crate::p2_store;
use crate::procfs::{self, Proc};
use crate::scenario::{Door, Pacing, Provider, Scenario};
use crate::xmpp::{accept_component, PushTemplate, ReplyScanner};
use crate::BenchError;

/// Pushes sent (and answered) before measuring: TLS and HTTP/2 set-up are not part of a figure.
pub const WARMUP: u64 = 20;
/// The push module the generator names in its publish-options.
pub const MODULE: &str = "bench";
/// How long fpush may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the settings and the binary's log go, and which binary runs.
pub struct Setup {
    pub fpush: PathBuf,
    /// Extra `ratelimitCleanupInterval` for soak runs (default 300s).
    pub cleanup_interval: Option<String>,
    /// Where stores of registrations are made once and kept between runs.
    pub store_dir: PathBuf,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub run: usize,
    pub pushes_sent: u64,
    pub replies: u64,
    pub replies_by_type: BTreeMap<String, u64>,
    pub replies_missing: u64,
    pub duplicate_replies: u64,
    pub unknown_replies: u64,
    /// Wall seconds from the first measured push written to the last reply read.
    pub seconds: f64,
    pub pushes_per_second: f64,
    /// fpush's user + system CPU over the same span.
    pub fpush_cpu_seconds: f64,
    /// The kernel's share of `fpush_cpu_seconds`.
    pub fpush_system_cpu_seconds: f64,
    pub pushes_per_cpu_second: f64,
    pub generator_cpu_seconds: f64,
    pub apns_server_cpu_seconds: f64,
    pub apns_requests: u64,
    /// Connections fpush opened to the APNS server in the whole session (warm-up included).
    pub apns_connections: u64,
    pub latency_us: Percentiles,
    /// fpush's RSS after start-up and warm-up, before the load.
    pub fpush_rss_start_kib: u64,
    /// fpush's peak RSS (VmHWM) over its life.
    pub fpush_peak_rss_kib: u64,
    /// Scenario e: pushes held at the provider when the connection was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight_at_drop: Option<u64>,
}

/// The `fpush` child process; stopped when dropped (SIGTERM, so that a profiler wrapping it
/// writes its results; SIGKILL after a few seconds).
pub struct Fpush {
    child: Child,
    pub log_path: PathBuf,
}

impl Fpush {
    pub fn proc(&self) -> Proc {
        Proc::new(self.child.id())
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Whether it exited on its own (it must not, during a run).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Fpush {
    fn drop(&mut self) {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if terminated {
            for _ in 0..100 {
                if self.exited() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the settings and starts fpush; with a `door` by node, its module serves p2
/// registrations from the store made for it.
pub fn start_fpush(
    setup: &Setup,
    dir: &Path,
    xmpp_port: u16,
    apns: &ApnsServer,
    ratelimit: Option<&str>,
    door: Door,
) -> Result<Fpush, BenchError> {
    let ratelimit = match ratelimit {
        None => r#"{ "enabled": false }"#.to_string(),
        Some(window) => format!(
            r#"{{ "enabled": true, "ratelimitTime": "{window}", "ratelimitCleanupInterval": "{}" }}"#,
            setup.cleanup_interval.as_deref().unwrap_or("300s")
        ),
    };
    let mut settings = serde_json::json!({
        "component": {
            "componentHostname": crate::xmpp::COMPONENT_JID,
            "componentKey": crate::xmpp::SECRET,
            "serverHostname": "127.0.0.1",
            "serverPort": xmpp_port,
        },
        // No keepalive ping during a run (the generator does not answer pings).
        "timeout": { "xmppconnectionError": "200ms", "keepaliveInterval": "1h", "keepaliveTimeout": "20s" },
        // One sending domain pushes everything here: no per-domain share in the way.
        "access": { "perDomainRate": 0 },
        "pushModules": {
            MODULE: {
                "type": "apple",
                "apns": {
                    "certFilePath": apns.p12_path,
                    "certPassword": P12_PASSWORD,
                    "topic": "org.example.bench",
                    "endpoint": apns.origin,
                    "caFilePath": apns.ca_path,
                },
                "ratelimit": serde_json::from_str::<serde_json::Value>(&ratelimit)
                    .map_err(|e| BenchError::Setup(format!("ratelimit settings: {e}")))?,
            }
        }
    });
    if let Door::P2 { registrations } = door {
        let store = p2_store::store_path(&setup.store_dir, registrations);
        settings["store"] = p2_store::store_settings(&store, registrations);
        settings["pushModules"][MODULE]["registration"] = serde_json::json!({ "protocol": "p2" });
    }
    let settings_path = dir.join("settings.json");
    std::fs::write(&settings_path, settings.to_string())?;
    let log_path = dir.join("fpush.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(&setup.fpush)
        .arg(&settings_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| BenchError::Setup(format!("cannot start {}: {e}", setup.fpush.display())))?;
    Ok(Fpush { child, log_path })
}

/// A started fpush with its authenticated link and the tasks reading it.
pub struct Session {
    /// Holds the settings, credentials and log until the session ends.
    pub _dir: tempfile::TempDir,
    pub apns: ApnsServer,
    pub fpush: Fpush,
    pub listener: TcpListener,
    pub tracker: Arc<Tracker>,
    /// `None` between a dropped connection and the reconnect.
    pub writer: Option<tokio::net::tcp::OwnedWriteHalf>,
    pub reader: tokio::task::JoinHandle<Result<(), BenchError>>,
    pub template: PushTemplate,
    pub streams: u64,
}

impl Session {
    /// Writes the measured pushes `seqs` at `rate` per second.
    async fn send_at_rate(
        &mut self,
        scenario: &Scenario,
        seqs: std::ops::Range<u64>,
        rate: u64,
    ) -> Result<(), BenchError> {
        let tokens = scenario.tokens;
        let writer = self.writer.as_mut().ok_or(BenchError::NoLink)?;
        let token_of = move |seq: u64| tokens.of(seq - WARMUP);
        load::send_at_rate(writer, &self.template, &self.tracker, seqs, token_of, rate).await
    }

    /// Starts everything and sends the warm-up pushes; `pushes` is the measured count.
    pub async fn start(
        setup: &Setup,
        pushes: u64,
        ratelimit: Option<&str>,
        provider: Provider,
        door: Door,
    ) -> Result<Session, BenchError> {
        let dir = tempfile::Builder::new().prefix("fpush-bench-").tempdir()?;
        let apns = ApnsServer::start(dir.path(), provider)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        if let Door::P2 { registrations } = door {
            let store = p2_store::store_path(&setup.store_dir, registrations);
            p2_store::prepare(&setup.fpush, &store, registrations)?;
        }
        let mut fpush = start_fpush(setup, dir.path(), port, &apns, ratelimit, door)?;
        let (socket, leftover) = match accept_component(&listener, "bench-1", CONNECT_TIMEOUT).await
        {
            Ok(link) => link,
            Err(e) => {
                let exited = fpush.exited();
                return Err(BenchError::Setup(format!(
                    "fpush did not connect ({e}); exited: {exited}; log:\n{}",
                    fpush.log_tail()
                )));
            }
        };
        let tracker = Tracker::new(WARMUP + pushes, WARMUP);
        let (rd, mut writer) = socket.into_split();
        let reader = tokio::spawn(load::read_replies(
            rd,
            ReplyScanner::with_leftover(leftover),
            tracker.clone(),
        ));
        // Warm-up pushes by node go to registrations that exist; tokens in the node to tokens
        // no scenario uses.
        let (template, warmup_base) = match door {
            Door::TokenInNode => (PushTemplate::new(MODULE), WARMUP_TOKEN_BASE),
            Door::P2 { .. } => (PushTemplate::by_node(), 0),
        };
        load::send_windowed(
            &mut writer,
            &template,
            &tracker,
            0..WARMUP,
            |seq| warmup_base + seq,
            WARMUP,
        )
        .await?;
        if !tracker
            .wait_answered(WARMUP, Instant::now() + CONNECT_TIMEOUT)
            .await
        {
            return Err(BenchError::Setup(format!(
                "fpush did not answer the warm-up pushes; log:\n{}",
                fpush.log_tail()
            )));
        }
        Ok(Session {
            _dir: dir,
            apns,
            fpush,
            listener,
            tracker,
            writer: Some(writer),
            reader,
            template,
            streams: 1,
        })
    }

    /// Drops the connection abruptly, as a crashing server would: the reader stops and the
    /// socket is closed, unread input included.
    pub async fn disconnect(&mut self) {
        self.reader.abort();
        let _ = (&mut self.reader).await;
        // The read half went with the reader task; dropping the write half closes the socket.
        self.writer = None;
    }

    /// Accepts fpush's reconnect after [`Session::disconnect`].
    pub async fn accept_reconnect(&mut self) -> Result<(), BenchError> {
        self.streams += 1;
        let stream_id = format!("bench-{}", self.streams);
        let (socket, leftover) =
            accept_component(&self.listener, &stream_id, CONNECT_TIMEOUT).await?;
        let (rd, writer) = socket.into_split();
        self.writer = Some(writer);
        self.reader = tokio::spawn(load::read_replies(
            rd,
            ReplyScanner::with_leftover(leftover),
            self.tracker.clone(),
        ));
        Ok(())
    }
}

/// Runs one scenario once.
pub async fn run_once(
    setup: &Setup,
    scenario: &Scenario,
    run: usize,
) -> Result<RunReport, BenchError> {
    let mut session = Session::start(
        setup,
        scenario.pushes,
        scenario.ratelimit,
        scenario.provider,
        scenario.door,
    )
    .await?;
    let before = Readings::take(&session)?;
    let in_flight_at_drop = play(&mut session, scenario).await?;
    let all = session.tracker.capacity();
    session
        .tracker
        .wait_answered(all, Instant::now() + scenario.drain)
        .await;
    if session.fpush.exited() {
        return Err(BenchError::Protocol(format!(
            "fpush exited during the run; log:\n{}",
            session.fpush.log_tail()
        )));
    }
    before.report(&session, scenario, run, in_flight_at_drop)
}

/// Writes the scenario's measured pushes at its pacing. Returns, for a run that drops the
/// link half-way, the pushes in flight when it was dropped.
async fn play(session: &mut Session, scenario: &Scenario) -> Result<Option<u64>, BenchError> {
    let measured = WARMUP..WARMUP + scenario.pushes;
    match scenario.pacing {
        Pacing::Window(window) => {
            let tokens = scenario.tokens;
            let writer = session.writer.as_mut().ok_or(BenchError::NoLink)?;
            let token_of = move |seq: u64| tokens.of(seq - WARMUP);
            let (template, tracker) = (&session.template, &session.tracker);
            load::send_windowed(writer, template, tracker, measured, token_of, window).await?;
            Ok(None)
        }
        Pacing::Rate(rate) => {
            session.send_at_rate(scenario, measured, rate).await?;
            Ok(None)
        }
        Pacing::RateWithDrop(rate) => play_with_drop(session, scenario, rate).await.map(Some),
    }
}

/// The first half at `rate`; then a tenth of a second of pushes held at the provider, the link
/// dropped under them, the answers released while fpush reconnects; then the rest.
async fn play_with_drop(
    session: &mut Session,
    scenario: &Scenario,
    rate: u64,
) -> Result<u64, BenchError> {
    let half = WARMUP + scenario.pushes / 2;
    let held_end = half + rate / 10;
    session.send_at_rate(scenario, WARMUP..half, rate).await?;
    // Hold the provider's answers so that pushes are certainly in flight at fpush, let the
    // replies already on the wire arrive, then drop the link.
    session.apns.hold(true);
    session.send_at_rate(scenario, half..held_end, rate).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let in_flight = session.tracker.sent() - session.tracker.answered();
    session.disconnect().await;
    // Released while fpush is reconnecting: their replies must wait for the new stream.
    session.apns.hold(false);
    session.accept_reconnect().await?;
    let end = WARMUP + scenario.pushes;
    session.send_at_rate(scenario, held_end..end, rate).await?;
    Ok(in_flight)
}

/// The counters read when the load starts, so that a run's figures exclude start-up.
struct Readings {
    fpush: Proc,
    generator_stat: PathBuf,
    rss_kib: u64,
    cpu: f64,
    system_cpu: f64,
    generator_cpu: f64,
    apns_cpu: f64,
    apns_requests: u64,
    started: Instant,
}

impl Readings {
    fn take(session: &Session) -> Result<Self, BenchError> {
        let fpush = session.fpush.proc();
        let generator_stat = procfs::current_thread_stat()?;
        Ok(Readings {
            rss_kib: fpush.rss_kib()?,
            cpu: fpush.cpu_seconds()?,
            system_cpu: fpush.system_cpu_seconds()?,
            generator_cpu: procfs::cpu_seconds(&generator_stat)?,
            apns_cpu: session.apns.cpu_seconds(),
            apns_requests: session.apns.requests(),
            started: Instant::now(),
            fpush,
            generator_stat,
        })
    }

    /// The run's figures: the counters now, less what they read at the start.
    fn report(
        &self,
        session: &Session,
        scenario: &Scenario,
        run: usize,
        in_flight_at_drop: Option<u64>,
    ) -> Result<RunReport, BenchError> {
        let cpu = self.fpush.cpu_seconds()? - self.cpu;
        let last = session.tracker.last_answer().max(self.started);
        let seconds = last.duration_since(self.started).as_secs_f64();
        let mut stats = session.tracker.stats();
        let per = |over: f64| {
            if over > 0.0 {
                scenario.pushes as f64 / over
            } else {
                0.0
            }
        };
        let measured = WARMUP..WARMUP + scenario.pushes;
        Ok(RunReport {
            scenario: scenario.name.to_string(),
            run,
            pushes_sent: scenario.pushes,
            replies: stats.latencies_us.len() as u64,
            replies_by_type: stats.by_kind(),
            replies_missing: session.tracker.unanswered(measured),
            duplicate_replies: stats.duplicates,
            unknown_replies: stats.unknown,
            seconds,
            pushes_per_second: per(seconds),
            fpush_cpu_seconds: cpu,
            fpush_system_cpu_seconds: self.fpush.system_cpu_seconds()? - self.system_cpu,
            pushes_per_cpu_second: per(cpu),
            generator_cpu_seconds: procfs::cpu_seconds(&self.generator_stat)? - self.generator_cpu,
            apns_server_cpu_seconds: session.apns.cpu_seconds() - self.apns_cpu,
            apns_requests: session.apns.requests() - self.apns_requests,
            apns_connections: session.apns.connections(),
            latency_us: Percentiles::of(&mut stats.latencies_us),
            fpush_rss_start_kib: self.rss_kib,
            fpush_peak_rss_kib: self.fpush.peak_rss_kib()?,
            in_flight_at_drop,
        })
    }
}
