//! The soak run: a bounded stretch (10 minutes by default) at a steady 2,000 pushes/s with
//! tokens drawn from a pool of a million and the ratelimit on, with a short cleanup interval so
//! the cache sweep runs several times. fpush's RSS, open file descriptors and threads are
//! sampled every second; the summary shows whether memory plateaus once the sweep runs.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::load::{self, Tokens, Tracker};
use crate::procfs::Proc;
use crate::run::{Session, Setup, WARMUP};
use crate::BenchError;

/// Soak parameters.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub duration: Duration,
    pub rate: u64,
    pub pool: u64,
    /// `ratelimitCleanupInterval`, in seconds (the sweep runs this often).
    pub cleanup_secs: u64,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(600),
            rate: 2_000,
            pool: 1_000_000,
            cleanup_secs: 60,
        }
    }
}

/// One sample per second.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub second: u64,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: u64,
    pub sent: u64,
    pub answered: u64,
    /// Distinct tokens pushed within the last two cleanup intervals: an upper bound on the
    /// ratelimit cache's entries (a sweep every interval drops those older than one interval).
    pub cached_bound: u64,
}

impl Sample {
    /// fpush's resources now, and the pushes sent and answered so far (warm-up left out).
    fn take(
        fpush: &Proc,
        tracker: &Tracker,
        second: u64,
        cached_bound: u64,
    ) -> Result<Self, BenchError> {
        Ok(Sample {
            second,
            rss_kib: fpush.rss_kib()?,
            fds: fpush.open_fds()?,
            threads: fpush.threads()?,
            sent: tracker.sent() - WARMUP,
            answered: tracker.answered().saturating_sub(WARMUP),
            cached_bound,
        })
    }

    /// One progress line.
    fn print(&self, elapsed: Duration) {
        println!(
            "  soak {:>4}s: RSS {:.1} MiB, {} fds, {} threads, {} sent, {} answered, ≤{} cached tokens ({:.0} s elapsed)",
            self.second,
            self.rss_kib as f64 / 1024.0,
            self.fds,
            self.threads,
            self.sent,
            self.answered,
            self.cached_bound,
            elapsed.as_secs_f64()
        );
    }
}

/// The whole soak.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub duration_secs: u64,
    pub rate: u64,
    pub pool: u64,
    pub cleanup_secs: u64,
    pub pushes_sent: u64,
    pub replies: u64,
    pub replies_missing: u64,
    pub duplicate_replies: u64,
    pub replies_by_type: std::collections::BTreeMap<String, u64>,
    pub fpush_cpu_seconds: f64,
    pub rss_start_kib: u64,
    pub peak_rss_kib: u64,
    pub mib_per_100k_cached_tokens: f64,
    pub samples: Vec<Sample>,
}

/// Distinct tokens whose last push lies within a sliding window of seconds.
struct RecentTokens {
    last_second: Vec<u32>,
    per_second: Vec<u64>,
}

impl RecentTokens {
    fn new(pool: u64, seconds: u64) -> Self {
        Self {
            last_second: vec![0; pool as usize],
            per_second: vec![0; seconds as usize + 2],
        }
    }

    /// Records that `token` was pushed in `second` (1-based).
    fn push(&mut self, token: u64, second: u32) {
        let slot = &mut self.last_second[token as usize];
        if *slot != 0 {
            self.per_second[*slot as usize] -= 1;
        }
        *slot = second;
        self.per_second[second as usize] += 1;
    }

    /// Distinct tokens last pushed in `(now - window, now]`.
    fn within(&self, now: u32, window: u32) -> u64 {
        let from = now.saturating_sub(window) + 1;
        self.per_second[from as usize..=now as usize].iter().sum()
    }
}

pub async fn run(setup: &Setup, cfg: &SoakConfig) -> Result<SoakReport, BenchError> {
    let secs = cfg.duration.as_secs().max(1);
    let total = secs * cfg.rate;
    let mut session = Session::start(
        setup,
        total,
        Some("20s"),
        crate::scenario::LOOPBACK,
        crate::scenario::Door::TokenInNode,
    )
    .await?;
    let fpush = session.fpush.proc();
    let rss_start = fpush.rss_kib()?;
    let cpu_start = fpush.cpu_seconds()?;
    let tokens = Tokens::Random(cfg.pool);
    let token_of = move |seq: u64| tokens.of(seq - WARMUP);

    let mut recent = RecentTokens::new(cfg.pool, secs);
    let mut samples = Vec::with_capacity(secs as usize);
    let started = Instant::now();
    let mut peak_cached = 0u64;
    for second in 1..=secs {
        let range = WARMUP + (second - 1) * cfg.rate..WARMUP + second * cfg.rate;
        for seq in range.clone() {
            recent.push(token_of(seq), second as u32);
        }
        load::send_at_rate(
            session.writer.as_mut().ok_or(BenchError::NoLink)?,
            &session.template,
            &session.tracker,
            range,
            token_of,
            cfg.rate,
        )
        .await?;
        let cached_bound = recent.within(second as u32, 2 * cfg.cleanup_secs as u32);
        peak_cached = peak_cached.max(cached_bound);
        let sample = Sample::take(&fpush, &session.tracker, second, cached_bound)?;
        if second % 30 == 0 || second == secs {
            sample.print(started.elapsed());
        }
        samples.push(sample);
    }
    let all = session.tracker.capacity();
    session
        .tracker
        .wait_answered(all, Instant::now() + Duration::from_secs(30))
        .await;
    let stats = session.tracker.stats();
    let peak = fpush.peak_rss_kib()?;
    let growth_mib = peak.saturating_sub(rss_start) as f64 / 1024.0;
    Ok(SoakReport {
        duration_secs: secs,
        rate: cfg.rate,
        pool: cfg.pool,
        cleanup_secs: cfg.cleanup_secs,
        pushes_sent: total,
        replies: stats.latencies_us.len() as u64,
        replies_missing: session.tracker.unanswered(WARMUP..WARMUP + total),
        duplicate_replies: stats.duplicates,
        replies_by_type: stats.by_kind(),
        fpush_cpu_seconds: fpush.cpu_seconds()? - cpu_start,
        rss_start_kib: rss_start,
        peak_rss_kib: peak,
        mib_per_100k_cached_tokens: if peak_cached > 0 {
            growth_mib / (peak_cached as f64 / 100_000.0)
        } else {
            0.0
        },
        samples,
    })
}

/// The curve in a few lines: RSS each minute, and fds / threads ranges.
pub fn summary(report: &SoakReport) -> String {
    let mut out = String::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    out.push_str(&format!(
        "soak: {} s at {}/s, tokens from {}, ratelimit 20s, cleanup every {} s\n",
        report.duration_secs, report.rate, report.pool, report.cleanup_secs
    ));
    out.push_str(&format!(
        "  pushes {}, replies {}, missing {}, duplicates {}, mix {:?}\n",
        report.pushes_sent,
        report.replies,
        report.replies_missing,
        report.duplicate_replies,
        report.replies_by_type
    ));
    out.push_str(&format!(
        "  fpush CPU {:.1} s ({:.1} µs/push); RSS at start {:.1} MiB, peak {:.1} MiB; {:.2} MiB per 100k cached tokens (upper bound of the cache)\n",
        report.fpush_cpu_seconds,
        report.fpush_cpu_seconds * 1e6 / report.pushes_sent.max(1) as f64,
        mib(report.rss_start_kib),
        mib(report.peak_rss_kib),
        report.mib_per_100k_cached_tokens
    ));
    out.push_str("  RSS (MiB) / cached-token bound, each minute:");
    for s in report.samples.iter().filter(|s| s.second % 60 == 0) {
        out.push_str(&format!(
            " {}m {:.1}/{}k",
            s.second / 60,
            mib(s.rss_kib),
            s.cached_bound / 1000
        ));
    }
    out.push('\n');
    let range = |f: fn(&Sample) -> u64| {
        let values = report.samples.iter().map(f);
        (values.clone().min().unwrap_or(0), values.max().unwrap_or(0))
    };
    let (fd_min, fd_max) = range(|s| s.fds as u64);
    let (th_min, th_max) = range(|s| s.threads);
    let first_fds = report.samples.first().map(|s| s.fds).unwrap_or(0);
    let last_fds = report.samples.last().map(|s| s.fds).unwrap_or(0);
    out.push_str(&format!(
        "  open fds {fd_min}–{fd_max} (first {first_fds}, last {last_fds}); threads {th_min}–{th_max}\n"
    ));
    let half = report.samples.len() / 2;
    let second_half = &report.samples[half..];
    if let (Some(lo), Some(hi)) = (
        second_half.iter().map(|s| s.rss_kib).min(),
        second_half.iter().map(|s| s.rss_kib).max(),
    ) {
        out.push_str(&format!(
            "  second half RSS {:.1}–{:.1} MiB\n",
            mib(lo),
            mib(hi)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_tokens_count_distinct_tokens_in_the_window() {
        let mut recent = RecentTokens::new(10, 10);
        recent.push(1, 1);
        recent.push(2, 1);
        recent.push(1, 3);
        recent.push(3, 5);
        assert_eq!(recent.within(5, 5), 3);
        assert_eq!(
            recent.within(5, 3),
            2,
            "token 2 was last pushed in second 1"
        );
        assert_eq!(recent.within(5, 1), 1);
    }
}
