//! Push look-ups, run where they are cheapest: on the caller's thread while the store answers
//! from memory, and gathered into batches on blocking threads for a while after several had to
//! wait for the disk.
//!
//! A point read from pages in memory takes microseconds, less than handing it to another
//! thread and back (two wake-ups). Reads that wait for the disk must not hold up the runtime:
//! [`STRIKES`] slow ones within a second send the look-ups to blocking threads for
//! [`OFF_THREAD_FOR`], then they are tried in place again. There, the look-ups that arrive in
//! one turn of the runtime share one blocking call, so a busy store pays the wake-ups once per
//! batch.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::in_place::InPlaceReader;
use super::{disk, failed, found_at, Shared, FIND};
use crate::store::{Registration, StoreError};

/// A look-up in place that takes longer than this and read from the disk is a strike; from
/// memory one takes 5–20 µs.
const SLOW: Duration = Duration::from_micros(500);
/// This many strikes within [`STRIKE_WINDOW`] send the next look-ups to blocking threads. A
/// store in memory still reads a page from the disk now and then (measured: 10–20 slow look-ups
/// with a major fault in a 10 s run of 100,000 look-ups, never 10 within a second); a store
/// that is not strikes on most look-ups. At worst, this many waits for the disk per second
/// hold up the runtime: about 1% of its time.
pub(super) const STRIKES: u64 = 10;
const STRIKE_WINDOW: Duration = Duration::from_secs(1);
/// How long look-ups stay on blocking threads after the strikes. Short: a store that is not in
/// memory pays for a few reads in place per period, no more.
const OFF_THREAD_FOR: Duration = Duration::from_secs(1);
/// At most this many look-ups per blocking call; a larger batch is split, so that a burst
/// spreads over the reading connections instead of queueing behind one.
const MAX_BATCH: usize = 32;

type Answer = Result<Option<Registration>, StoreError>;

/// One look-up waiting for a batch.
struct Lookup {
    domain: String,
    node: String,
    answer: oneshot::Sender<Answer>,
}

/// Where look-ups run, and those waiting for the next batch.
pub(super) struct Lookups {
    /// The connection look-ups in place use.
    pub(super) reader: Mutex<InPlaceReader>,
    /// Writes this process has committed: a snapshot older than the last one is renewed.
    pub(super) writes: AtomicU64,
    /// Since `epoch`, in milliseconds: look-ups before it go to blocking threads.
    off_thread_until: AtomicU64,
    /// Strikes since `strikes_since` (milliseconds since `epoch`).
    strikes: AtomicU64,
    strikes_since: AtomicU64,
    epoch: Instant,
    waiting: Mutex<Vec<Lookup>>,
}

impl Lookups {
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Lookups {
            reader: Mutex::new(InPlaceReader::open(path)?),
            writes: AtomicU64::new(0),
            off_thread_until: AtomicU64::new(0),
            strikes: AtomicU64::new(0),
            strikes_since: AtomicU64::new(0),
            epoch: Instant::now(),
            waiting: Mutex::default(),
        })
    }

    /// Counts a committed write, and ends the in-place snapshot now if the connection is free
    /// (so that no snapshot holds back the WAL's checkpoint while no push comes).
    pub(super) fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Release);
        if let Ok(mut reader) = self.reader.try_lock() {
            reader.end();
        }
    }

    /// Ends the in-place snapshot before a write, if the connection is free: a snapshot open
    /// while the write commits keeps its checkpoint from reaching the end of the WAL.
    pub(super) fn writing(&self) {
        if let Ok(mut reader) = self.reader.try_lock() {
            reader.end();
        }
    }

    /// The registration `domain` names by `node`.
    pub(super) async fn find(shared: &Arc<Shared>, domain: &str, node: &str) -> Answer {
        let lookups = &shared.lookups;
        if lookups.in_place() {
            if let Ok(mut reader) = lookups.reader.try_lock() {
                disk::baseline();
                let started = Instant::now();
                let writes = lookups.writes.load(Ordering::Acquire);
                let found = find_one(reader.current(writes)?, domain, node);
                if found.is_err() {
                    reader.end();
                }
                if started.elapsed() > SLOW && disk::read_since() {
                    lookups.strike();
                }
                return found;
            }
        }
        lookups.in_batch(shared, domain, node).await
    }

    pub(super) fn in_place(&self) -> bool {
        self.millis_now() >= self.off_thread_until.load(Ordering::Relaxed)
    }

    /// Counts a slow look-up that read from the disk; the [`STRIKES`]th within
    /// [`STRIKE_WINDOW`] sends look-ups off the thread.
    pub(super) fn strike(&self) {
        let now = self.millis_now();
        let window = STRIKE_WINDOW.as_millis() as u64;
        if now.saturating_sub(self.strikes_since.load(Ordering::Relaxed)) > window {
            self.strikes_since.store(now, Ordering::Relaxed);
            self.strikes.store(0, Ordering::Relaxed);
        }
        if self.strikes.fetch_add(1, Ordering::Relaxed) + 1 >= STRIKES {
            self.strikes.store(0, Ordering::Relaxed);
            self.go_off_thread();
        }
    }

    pub(super) fn go_off_thread(&self) {
        let until = self.millis_now() + OFF_THREAD_FOR.as_millis() as u64;
        self.off_thread_until.store(until, Ordering::Relaxed);
        log::debug!("registration look-ups go to blocking threads: several waited for the disk");
    }

    fn millis_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Queues a look-up for the next batch and waits for its answer. The first look-up of a
    /// batch starts a task that lets the runtime's other ready tasks (the rest of the pushes
    /// just read) queue theirs, then sends the whole batch off.
    async fn in_batch(&self, shared: &Arc<Shared>, domain: &str, node: &str) -> Answer {
        let (answer, answered) = oneshot::channel();
        let lookup = Lookup {
            domain: domain.to_owned(),
            node: node.to_owned(),
            answer,
        };
        let first = {
            let mut waiting = self.lock();
            waiting.push(lookup);
            waiting.len() == 1
        };
        if first {
            tokio::spawn(send_batch(shared.clone()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("sqlite look-up dropped".into())))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Lookup>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// After one yield, takes every waiting look-up and answers them in chunks, each on a reading
/// connection of its own. A chunk that cannot be run drops its senders: those callers read
/// the store as unavailable.
async fn send_batch(shared: Arc<Shared>) {
    tokio::task::yield_now().await;
    let mut batch = std::mem::take(&mut *shared.lookups.lock());
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(MAX_BATCH));
        let chunk = std::mem::replace(&mut batch, rest);
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(error) = shared.read(move |reader| answer_chunk(reader, chunk)).await {
                log::debug!("a batch of registration look-ups failed: {error}");
            }
        });
    }
}

/// Answers a chunk in one read transaction (SQLite takes its file locks once, not per
/// look-up), all at the end: answered together, the pushes go on in one turn of the runtime
/// and their provider requests and replies share writes.
fn answer_chunk(reader: &Connection, chunk: Vec<Lookup>) -> Result<(), StoreError> {
    let snapshot = reader.unchecked_transaction().map_err(failed)?;
    let found: Vec<Answer> = chunk
        .iter()
        .map(|lookup| find_one(&snapshot, &lookup.domain, &lookup.node))
        .collect();
    snapshot.finish().map_err(failed)?;
    for (lookup, found) in chunk.into_iter().zip(found) {
        let _ = lookup.answer.send(found);
    }
    Ok(())
}

/// One point read on the table's key.
fn find_one(reader: &Connection, domain: &str, node: &str) -> Answer {
    let mut statement = reader.prepare_cached(FIND).map_err(failed)?;
    let found = statement.query_row(rusqlite::params![node, domain], |row| {
        found_at(row, domain, node)
    });
    found.optional().map_err(failed)
}
