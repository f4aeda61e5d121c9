//! Driving one component stream: a writer that sends push IQs (as fast as a window of pushes in
//! flight allows, or at a fixed rate) and a reader that matches replies to pushes, counts them by
//! type and records each push's latency (written → reply read).
//!
//! Both run as tasks of the generator's single-threaded runtime and share a [`Tracker`] of
//! atomics: the send time of every push, and how many were answered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

use crate::xmpp::{kind_label, PushTemplate, ReplyScanner, ScannedReply};
use crate::BenchError;

/// Send time sentinel: the push was answered.
const ANSWERED: u64 = u64::MAX;
/// Most pushes written with one `write` call.
const MAX_BATCH: u64 = 256;

/// What every push's fate is, shared by the writer and the reader.
pub struct Tracker {
    origin: Instant,
    /// Per push: 0 = not sent, `ANSWERED`, or nanoseconds since `origin` + 1 when it was written.
    sent_at: Vec<AtomicU64>,
    sent: AtomicU64,
    answered: AtomicU64,
    /// Nanoseconds since `origin` of the latest answer.
    last_answer: AtomicU64,
    /// Wakes a writer waiting for room in its window.
    room: Notify,
    stats: Mutex<ReplyStats>,
    /// Pushes below this number are warm-up: tracked, but not in the statistics.
    measured_from: u64,
}

/// What the reader saw.
#[derive(Default, Clone)]
pub struct ReplyStats {
    /// Raw `type` or `type'><condition` → count (see [`kind_label`]).
    kinds: Vec<(Vec<u8>, u64)>,
    /// Microseconds from write to reply, measured pushes only.
    pub latencies_us: Vec<u32>,
    /// Second answers to one push.
    pub duplicates: u64,
    /// Answers whose id is not one of ours.
    pub unknown: u64,
    /// get/set IQs fpush sent us (keepalive pings).
    pub requests: u64,
}

impl ReplyStats {
    /// Reply counts by `result` or `type/condition`.
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (kind, count) in &self.kinds {
            *out.entry(kind_label(kind)).or_insert(0) += count;
        }
        out
    }

    fn count(&mut self, kind: &[u8]) {
        match self.kinds.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => self.kinds.push((kind.to_vec(), 1)),
        }
    }
}

impl Tracker {
    pub fn new(pushes: u64, measured_from: u64) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            sent_at: (0..pushes).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            last_answer: AtomicU64::new(0),
            room: Notify::new(),
            stats: Mutex::new(ReplyStats {
                latencies_us: Vec::with_capacity(pushes as usize),
                ..ReplyStats::default()
            }),
            measured_from,
        })
    }

    pub fn capacity(&self) -> u64 {
        self.sent_at.len() as u64
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// When the latest answer was read.
    pub fn last_answer(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last_answer.load(Ordering::Acquire))
    }

    pub fn stats(&self) -> ReplyStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Pushes in `range` that were written but never answered.
    pub fn unanswered(&self, range: std::ops::Range<u64>) -> u64 {
        range
            .filter(|&seq| {
                let at = self.sent_at[seq as usize].load(Ordering::Relaxed);
                at != 0 && at != ANSWERED
            })
            .count() as u64
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Waits until `target` pushes are answered or `deadline` passes; true if all were.
    pub async fn wait_answered(&self, target: u64, deadline: Instant) -> bool {
        while self.answered() < target {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

/// Which device token push number `seq` goes to.
#[derive(Debug, Clone, Copy)]
pub enum Tokens {
    /// Round robin over this many tokens.
    Pool(u64),
    /// A new token for every push.
    Distinct,
    /// Drawn (pseudo-randomly, repeatably) from this many tokens.
    Random(u64),
}

impl Tokens {
    pub fn of(self, seq: u64) -> u64 {
        match self {
            Tokens::Pool(n) => seq % n.max(1),
            Tokens::Distinct => seq,
            Tokens::Random(n) => {
                let mut x = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
                x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
                x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
                (x ^ (x >> 33)) % n.max(1)
            }
        }
    }
}

/// Warm-up pushes use tokens far from every scenario's.
pub const WARMUP_TOKEN_BASE: u64 = 1 << 40;

/// Writes pushes `range` as fast as `window` pushes in flight allow.
pub async fn send_windowed(
    wr: &mut OwnedWriteHalf,
    template: &PushTemplate,
    tracker: &Tracker,
    range: std::ops::Range<u64>,
    tokens: impl Fn(u64) -> u64,
    window: u64,
) -> Result<(), BenchError> {
    let mut buf = Vec::with_capacity(template.len() * MAX_BATCH as usize);
    let mut next = range.start;
    while next < range.end {
        let in_flight = tracker.sent() - tracker.answered();
        let room = window.saturating_sub(in_flight);
        if room == 0 {
            tracker.room.notified().await;
            continue;
        }
        let count = room.min(MAX_BATCH).min(range.end - next);
        write_batch(wr, template, tracker, &mut buf, next..next + count, &tokens).await?;
        next += count;
    }
    Ok(())
}

/// Writes pushes `range` at `rate` per second (in 1 ms steps), without waiting for answers.
pub async fn send_at_rate(
    wr: &mut OwnedWriteHalf,
    template: &PushTemplate,
    tracker: &Tracker,
    range: std::ops::Range<u64>,
    tokens: impl Fn(u64) -> u64,
    rate: u64,
) -> Result<(), BenchError> {
    let mut buf = Vec::with_capacity(template.len() * MAX_BATCH as usize);
    let start = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next = range.start;
    while next < range.end {
        ticks.tick().await;
        let due_total = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        let due = range.start + due_total.min(range.end - range.start);
        while next < due {
            let count = (due - next).min(MAX_BATCH);
            write_batch(wr, template, tracker, &mut buf, next..next + count, &tokens).await?;
            next += count;
        }
    }
    Ok(())
}

async fn write_batch(
    wr: &mut OwnedWriteHalf,
    template: &PushTemplate,
    tracker: &Tracker,
    buf: &mut Vec<u8>,
    batch: std::ops::Range<u64>,
    tokens: &impl Fn(u64) -> u64,
) -> Result<(), BenchError> {
    buf.clear();
    let at = tracker.now_ns() + 1;
    for seq in batch.clone() {
        template.write(buf, seq, tokens(seq));
        tracker.sent_at[seq as usize].store(at, Ordering::Relaxed);
    }
    tracker
        .sent
        .fetch_add(batch.end - batch.start, Ordering::Release);
    wr.write_all(buf).await?;
    Ok(())
}

/// Reads replies until the stream ends; returns why it ended.
pub async fn read_replies(
    mut rd: OwnedReadHalf,
    mut scanner: ReplyScanner,
    tracker: Arc<Tracker>,
) -> Result<(), BenchError> {
    let mut local = ReplyStats::default();
    loop {
        let now = tracker.now_ns();
        let mut answered = 0u64;
        let mut ended = false;
        while let Some(reply) = scanner.next_reply() {
            match reply {
                ScannedReply::Answer { seq, kind } => {
                    let Some(slot) = seq.and_then(|s| tracker.sent_at.get(s as usize)) else {
                        local.unknown += 1;
                        continue;
                    };
                    let sent = slot.swap(ANSWERED, Ordering::Relaxed);
                    if sent == ANSWERED {
                        local.duplicates += 1;
                        continue;
                    }
                    if sent == 0 {
                        local.unknown += 1;
                        continue;
                    }
                    answered += 1;
                    if seq.unwrap_or(0) >= tracker.measured_from {
                        local.count(kind);
                        let us = now.saturating_sub(sent - 1) / 1000;
                        local.latencies_us.push(us.min(u64::from(u32::MAX)) as u32);
                    }
                }
                ScannedReply::Request => local.requests += 1,
                ScannedReply::Other => {}
                ScannedReply::StreamEnd => ended = true,
            }
        }
        if answered > 0 {
            tracker.last_answer.store(now, Ordering::Release);
            tracker.answered.fetch_add(answered, Ordering::Release);
            tracker.room.notify_one();
        }
        flush_stats(&tracker, &mut local);
        if ended {
            return Err(BenchError::Protocol("fpush closed its stream".into()));
        }
        match rd.read_buf(scanner.buffer()).await {
            Ok(0) => return Err(BenchError::Protocol("fpush closed the connection".into())),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Moves what the reader counted into the shared statistics (one lock per read).
fn flush_stats(tracker: &Tracker, local: &mut ReplyStats) {
    if local.kinds.is_empty()
        && local.latencies_us.is_empty()
        && local.duplicates == 0
        && local.unknown == 0
        && local.requests == 0
    {
        return;
    }
    if let Ok(mut shared) = tracker.stats.lock() {
        for (kind, count) in local.kinds.drain(..) {
            match shared.kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += count,
                None => shared.kinds.push((kind, count)),
            }
        }
        shared.latencies_us.append(&mut local.latencies_us);
        shared.duplicates += std::mem::take(&mut local.duplicates);
        shared.unknown += std::mem::take(&mut local.unknown);
        shared.requests += std::mem::take(&mut local.requests);
    }
}

/// p50/p90/p99/max of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub max: u32,
}

impl Percentiles {
    pub fn of(latencies: &mut [u32]) -> Self {
        if latencies.is_empty() {
            return Self::default();
        }
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: latencies[latencies.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_ranks() {
        let mut values: Vec<u32> = (1..=100).rev().collect();
        let p = Percentiles::of(&mut values);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (51, 90, 99, 100));
        assert_eq!(Percentiles::of(&mut []).max, 0);
    }

    #[test]
    fn token_plans() {
        assert_eq!(Tokens::Pool(10).of(23), 3);
        assert_eq!(Tokens::Distinct.of(23), 23);
        let drawn: std::collections::HashSet<u64> =
            (0..1000).map(|s| Tokens::Random(1_000_000).of(s)).collect();
        assert!(drawn.len() > 990, "random draws rarely repeat");
        assert!(drawn.iter().all(|&t| t < 1_000_000));
    }
}
