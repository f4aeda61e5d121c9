//! The reading connections: a fixed set, opened once with the store, lent out one call at a
//! time. A call waits for a free connection instead of opening one: opening costs a file open,
//! a shared-memory map and a schema parse, far more than the point look-up a push needs.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{connect, failed};
use crate::store::StoreError;

/// Reading connections per store, one per core within these bounds. Calls beyond them wait.
/// Each connection maps the file anew (its own page faults, its own share of the resident
/// size), so not many more; at least 4, since a look-up also waits for pages from the disk
/// (measured on 2 cores: 2 readers put look-ups in a queue, p90 latency 87 ms against 2 ms).
const MIN_READERS: usize = 4;
const MAX_READERS: usize = 8;
/// Bytes of the file each reader maps into memory, so that a look-up reads pages without a
/// system call; the mapped pages are the kernel's page cache, shared and reclaimable.
const MMAP_BYTES: i64 = 1 << 30;
/// Each reader's own page cache, in KiB (SQLite's `cache_size` takes negative KiB).
const CACHE_KIB: i64 = 8 * 1024;

/// The pool: idle connections and one permit for each.
pub(super) struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

/// A connection lent for one call; it goes back to the pool when dropped, even after a panic.
pub(super) struct Lease {
    connection: Option<Connection>,
    idle: Arc<Mutex<Vec<Connection>>>,
    _permit: OwnedSemaphorePermit,
}

/// How many readers a store opens on this machine.
pub(super) fn count() -> usize {
    std::thread::available_parallelism()
        .map_or(MIN_READERS, usize::from)
        .clamp(MIN_READERS, MAX_READERS)
}

/// One read-only connection that maps the file and keeps its own page cache.
pub(super) fn open_one(path: &Path) -> Result<Connection, StoreError> {
    let reader = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    reader
        .pragma_update(None, "mmap_size", MMAP_BYTES)
        .map_err(failed)?;
    reader
        .pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(failed)?;
    Ok(reader)
}

impl Readers {
    /// Opens `count` read-only connections to the store at `path`.
    pub(super) fn open(path: &Path, count: usize) -> Result<Self, StoreError> {
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            idle.push(open_one(path)?);
        }
        Ok(Readers {
            idle: Arc::new(Mutex::new(idle)),
            permits: Arc::new(Semaphore::new(count)),
        })
    }

    /// Waits for a free connection. Call it on the runtime, then use the lease on a blocking
    /// thread.
    pub(super) async fn lease(&self) -> Result<Lease, StoreError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| {
            StoreError::Unavailable("sqlite: the reading connections are closed".into())
        })?;
        Ok(Lease {
            connection: None,
            idle: self.idle.clone(),
            _permit: permit,
        })
    }
}

#[cfg(test)]
impl Readers {
    /// Connections idle now.
    pub(super) fn idle_count(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

impl Lease {
    /// The lent connection (taken from the pool on first use, on the blocking thread).
    pub(super) fn connection(&mut self) -> Result<&Connection, StoreError> {
        if self.connection.is_none() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            self.connection = idle.pop();
        }
        // A permit is held, so a connection is idle; the error only guards the invariant.
        self.connection
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("sqlite: no reading connection left".into()))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.push(connection);
        }
    }
}
