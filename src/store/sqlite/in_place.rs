//! The connection that push look-ups in place use, and the read snapshot it keeps open between
//! them: beginning and ending a read transaction takes SQLite's WAL lock and checks the file's
//! size (system calls) on every look-up otherwise.
//!
//! The snapshot must never hide a registration a client was told about: every write of this
//! process counts itself ([`SqliteStore`](super::SqliteStore)'s writes bump `writes` after they
//! commit, and end the snapshot before and after, when the connection is free), and a look-up
//! that finds the count changed begins a new one. A snapshot open while a write commits holds
//! that commit's checkpoint short of the WAL's end; if that happened at every write, the WAL
//! would never start over and would grow until a restart. Another process's writes (`fpush store import`) are seen within
//! [`MAX_AGE`].

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{failed, readers};
use crate::store::StoreError;

/// How long a snapshot serves at most: the bound on seeing another process's writes, and on
/// holding back the WAL's checkpoint.
const MAX_AGE: Duration = Duration::from_secs(1);

/// The in-place reading connection.
pub(super) struct InPlaceReader {
    connection: Connection,
    snapshot: Option<Snapshot>,
}

/// An open read transaction: the write count when it began, and when.
struct Snapshot {
    writes: u64,
    began: Instant,
}

impl InPlaceReader {
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(InPlaceReader {
            connection: readers::open_one(path)?,
            snapshot: None,
        })
    }

    /// The connection, inside a snapshot that has seen every write counted up to `writes`.
    pub(super) fn current(&mut self, writes: u64) -> Result<&Connection, StoreError> {
        if let Some(snapshot) = &self.snapshot {
            if snapshot.writes == writes && snapshot.began.elapsed() < MAX_AGE {
                return Ok(&self.connection);
            }
            self.end();
        }
        if !self.connection.is_autocommit() {
            // A transaction left over by a failed end: never let it pin an old snapshot.
            let _ = self.connection.execute_batch("ROLLBACK");
        }
        self.connection.execute_batch("BEGIN").map_err(failed)?;
        self.snapshot = Some(Snapshot {
            writes,
            began: Instant::now(),
        });
        Ok(&self.connection)
    }

    /// Ends the snapshot, if one is open (after a write, or a failed look-up).
    pub(super) fn end(&mut self) {
        if self.snapshot.take().is_some() && self.connection.execute_batch("COMMIT").is_err() {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
    }
}
