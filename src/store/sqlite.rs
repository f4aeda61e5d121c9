//! The embedded backend: one SQLite file (rusqlite, SQLite compiled in) in WAL mode, so that
//! push look-ups read while a registration is written.
//!
//! Writes go through one connection (SQLite has one writer at a time anyway), on tokio's blocking
//! threads; reads wait for one of a fixed set of reading connections. A push's look-up runs in
//! place while the store answers from memory ([`lookups`]), since handing it to another thread
//! would cost more than the read.

mod disk;
mod in_place;
mod lookups;
mod readers;
mod schema;
mod write;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use super::{
    Credentials, Registration, RegistrationKey, RegistrationPage, RegistrationStore, StoreError,
    StoreLimits, TOUCH_INTERVAL,
};
use lookups::Lookups;
use readers::Readers;
use write::Mode;

pub(super) use schema::{
    backup_path, current_version, directory, foreign as foreign_schema, newer as newer_schema,
    other_program,
};

/// How long a call waits for another connection's write lock (a backup, a second process).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Registrations deleted per transaction by a sweep, so pushes are not kept waiting.
const SWEEP_BATCH: i64 = 1_000;

/// The columns a push's look-up reads, in [`registration`]'s order (it knows the key, the
/// last two columns a listing reads).
macro_rules! columns {
    () => {
        "service, device, channel, account, token, second_token, secret, last_used"
    };
}
/// A push's look-up: one descent of the table's B-tree, keyed by (node, domain).
const FIND: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM registrations WHERE node = ?1 AND domain = ?2"
);
/// A page of `fpush store export`, in key order after the cursor (the last page's key).
const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    ", domain, node FROM registrations WHERE (node, domain) > (?1, ?2) ORDER BY node, domain LIMIT ?3"
);

/// The SQLite registration store.
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    limits: StoreLimits,
    /// See [`RegistrationStore::created`]: read once, at opening.
    created: Option<SystemTime>,
    writer: Mutex<Connection>,
    readers: Readers,
    lookups: Lookups,
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the file at `path`. Blocking: call it at
    /// start-up, or from a blocking thread.
    pub fn open(path: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        Self::open_unnamed(path, limits).map_err(|error| naming(path, error))
    }

    fn open_unnamed(path: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        schema::create_private(path)?;
        let mut writer = connect(path, OpenFlags::default())?;
        writer
            .pragma_update(None, "journal_mode", "wal")
            .map_err(failed)?;
        writer
            .pragma_update(None, "synchronous", "normal")
            .map_err(failed)?;
        schema::migrate(&mut writer, path, schema::MIGRATIONS)?;
        writer.execute_batch(schema::UNVERSIONED).map_err(failed)?;
        let created = created(&writer)?;
        let readers = Readers::open(path, readers::count())?;
        let lookups = Lookups::open(path)?;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                limits,
                created,
                writer: Mutex::new(writer),
                readers,
                lookups,
            }),
        })
    }

    async fn write<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &StoreLimits) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        blocking(move || {
            let mut writer = shared.writer.lock().unwrap_or_else(PoisonError::into_inner);
            // An in-place snapshot open while this write commits would hold back the commit's
            // checkpoint; one held across every write (pushes between them) keeps the WAL from
            // ever being checkpointed whole and started over, and it grows without bound.
            shared.lookups.writing();
            let written = job(&mut writer, &shared.limits);
            shared.lookups.wrote();
            written
        })
        .await
    }

    async fn read<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.shared.read(job).await
    }
}

impl Shared {
    /// Runs `job` on a reading connection, on a blocking thread.
    async fn read<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let mut lease = self.readers.lease().await?;
        blocking(move || job(lease.connection()?)).await
    }
}

/// Runs `job` on tokio's blocking threads.
async fn blocking<T, F>(job: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|error| StoreError::Unavailable(format!("sqlite call did not finish: {error}")))?
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .map_err(|error| StoreError::Unavailable(format!("{}: {error}", path.display())))?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    Ok(connection)
}

/// The schema version of the file at `path`, read without changing it (no migration, no
/// write-ahead log set up): what `--check` and the store commands that only read look at.
pub(super) fn schema_version_of(path: &Path) -> Result<i64, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags)?.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Whether the file at `path` holds any table, read without changing it: one at schema 0
/// that does is another program's.
pub(super) fn holds_tables_at(path: &Path) -> Result<bool, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    schema::holds_tables(&Connection::open_with_flags(path, flags)?)
}

/// When the store at `path` was first opened empty (see [`RegistrationStore::created`]), read
/// without changing anything; `None` when it does not say (made before it kept the time).
pub(super) fn created_of(path: &Path) -> Option<SystemTime> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let reader = Connection::open_with_flags(path, flags).ok()?;
    noted_created(&reader).ok()?
}

/// A consistent copy of the file at `path` into `target` (which must not exist or be empty),
/// read-only: whatever its schema, the file is left as it is, so a newer fpush can back up
/// the file an older one is serving without migrating it underneath. Blocking.
pub(super) fn backup_file(path: &Path, target: &Path) -> Result<(), StoreError> {
    if std::fs::metadata(target).is_ok_and(|meta| meta.len() > 0) {
        let shown = target.display();
        return Err(StoreError::Unusable(format!("{shown} exists already")));
    }
    let reader = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let found = schema::version(&reader).map_err(|error| naming(path, error))?;
    if found < 0 {
        return Err(schema::foreign(path, found));
    }
    schema::copy_aside(&reader, target)
}

/// A SQLite failure, as the callers see it; one that says the file is damaged (cut short, or
/// not a database at all) says what to do, since nothing fpush does mends it.
pub(super) fn failed(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match error.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => StoreError::Unavailable(format!(
            "sqlite: {error}: the file is damaged or no registration store: check store.path, \
             or restore a backup (a copy `fpush store backup` made, or the PATH.vN.backup a \
             migration left)"
        )),
        _ => StoreError::Unavailable(format!("sqlite: {error}")),
    }
}

/// `error` naming the file it is about, unless it does already: "file is not a database"
/// alone does not say which of the files a command names.
fn naming(path: &Path, error: StoreError) -> StoreError {
    let shown = path.display().to_string();
    let name = |text: String| match text.contains(&shown) {
        true => text,
        false => format!("{shown}: {text}"),
    };
    match error {
        StoreError::Unavailable(text) => StoreError::Unavailable(name(text)),
        StoreError::Unusable(text) => StoreError::Unusable(name(text)),
        full => full,
    }
}

/// When the store was made (noting it now when it is new and empty).
fn created(writer: &Connection) -> Result<Option<SystemTime>, StoreError> {
    let now = unix(SystemTime::now());
    writer.execute(schema::CREATED, [now]).map_err(failed)?;
    noted_created(writer).map_err(failed)
}

/// The time `store_created` holds; `None` when it holds 0 (the store held registrations then).
fn noted_created(connection: &Connection) -> Result<Option<SystemTime>, rusqlite::Error> {
    let at: i64 = connection.query_row("SELECT unix_seconds FROM store_created", [], |row| {
        row.get(0)
    })?;
    Ok((at > 0).then(|| from_unix(at)))
}

fn unix(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

fn from_unix(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// A row of the `columns!()` in their order, found at `domain` and `node`.
fn found_at(row: &Row<'_>, domain: &str, node: &str) -> rusqlite::Result<Registration> {
    Ok(Registration {
        key: RegistrationKey {
            service: row.get(0)?,
            device: row.get(1)?,
            channel: row.get(2)?,
        },
        account: row.get(3)?,
        token: row.get(4)?,
        second_token: row.get(5)?,
        secret: row.get(6)?,
        last_used: from_unix(row.get(7)?),
        domain: domain.to_owned(),
        node: node.to_owned(),
    })
}

/// The cursor after the registration at `node` and `domain`: the node's length first, since
/// either may hold any character (an imported line's, a line break included).
fn cursor_of(node: &str, domain: &str) -> String {
    format!("{}\n{node}{domain}", node.len())
}

/// The node and domain of a [`cursor_of`].
fn cut_cursor(cursor: &str) -> Option<(&str, &str)> {
    let (length, key) = cursor.split_once('\n')?;
    let length: usize = length.parse().ok()?;
    key.is_char_boundary(length).then(|| key.split_at(length))
}

/// The page of [`LIST`] after `node` and `domain`. A row whose columns cannot be read (a value
/// another writer, or a hand edit, left) is named in `unreadable` and left out, so that the
/// rest can still be exported.
fn page_after(
    reader: &Connection,
    node: &str,
    domain: &str,
    limit: i64,
) -> Result<RegistrationPage, StoreError> {
    let mut statement = reader.prepare(LIST).map_err(failed)?;
    let mut rows = statement
        .query(params![node, domain, limit])
        .map_err(failed)?;
    let (mut registrations, mut unreadable) = (Vec::new(), Vec::new());
    let (mut read, mut last) = (0, None);
    while let Some(row) = rows.next().map_err(failed)? {
        let domain: String = row.get(8).map_err(failed)?;
        let node: String = row.get(9).map_err(failed)?;
        match found_at(row, &domain, &node) {
            Ok(registration) => registrations.push(registration),
            Err(error) => unreadable.push(format!("sqlite: registration {domain} {node}: {error}")),
        }
        read += 1;
        last = Some(cursor_of(&node, &domain));
    }
    Ok(RegistrationPage {
        registrations,
        unreadable,
        next: last.filter(|_| read == limit),
    })
}

#[async_trait]
impl RegistrationStore for SqliteStore {
    async fn register(&self, registration: Registration) -> Result<Credentials, StoreError> {
        self.write(move |writer, limits| {
            write::upsert(writer, &registration, limits, Mode::Register)
        })
        .await
    }

    async fn find(&self, domain: &str, node: &str) -> Result<Option<Registration>, StoreError> {
        Lookups::find(&self.shared, domain, node).await
    }

    async fn touch(&self, domain: &str, node: &str) -> Result<(), StoreError> {
        let (domain, node) = (domain.to_owned(), node.to_owned());
        let now = unix(SystemTime::now());
        let select = "SELECT last_used FROM registrations WHERE domain = ?1 AND node = ?2";
        let (d, n) = (domain.clone(), node.clone());
        let stored: Option<i64> = self
            .read(move |reader| {
                let mut statement = reader.prepare_cached(select).map_err(failed)?;
                let found = statement.query_row(params![d, n], |row| row.get(0));
                found.optional().map_err(failed)
            })
            .await?;
        let every = i64::try_from(TOUCH_INTERVAL.as_secs()).unwrap_or(i64::MAX);
        if stored.is_none_or(|last_used| last_used > now.saturating_sub(every)) {
            return Ok(());
        }
        self.write(move |writer, _| {
            writer
                .execute(
                    "UPDATE registrations SET last_used = ?3 WHERE domain = ?1 AND node = ?2",
                    params![domain, node, now],
                )
                .map(drop)
                .map_err(failed)
        })
        .await
    }

    async fn unregister(&self, key: &RegistrationKey) -> Result<bool, StoreError> {
        let key = key.clone();
        self.write(move |writer, _| {
            writer
                .execute(
                    "DELETE FROM registrations WHERE service = ?1 AND device = ?2 AND channel = ?3",
                    params![key.service, key.device, key.channel],
                )
                .map(|deleted| deleted > 0)
                .map_err(failed)
        })
        .await
    }

    async fn remove(&self, domain: &str, node: &str, token: &str) -> Result<bool, StoreError> {
        let (domain, node, token) = (domain.to_owned(), node.to_owned(), token.to_owned());
        self.write(move |writer, _| {
            writer
                .execute(
                    "DELETE FROM registrations WHERE domain = ?1 AND node = ?2 AND token = ?3",
                    params![domain, node, token],
                )
                .map(|deleted| deleted > 0)
                .map_err(failed)
        })
        .await
    }

    async fn clear_second_token(
        &self,
        domain: &str,
        node: &str,
        second_token: &str,
    ) -> Result<(), StoreError> {
        let (domain, node) = (domain.to_owned(), node.to_owned());
        let second_token = second_token.to_owned();
        self.write(move |writer, _| {
            writer
                .execute(
                    "UPDATE registrations SET second_token = NULL \
                     WHERE domain = ?1 AND node = ?2 AND second_token = ?3",
                    params![domain, node, second_token],
                )
                .map(drop)
                .map_err(failed)
        })
        .await
    }

    async fn sweep(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = unix(before);
        let mut removed = 0;
        loop {
            let batch = self
                .write(move |writer, _| {
                    writer
                        .execute(
                            "DELETE FROM registrations WHERE (node, domain) IN (SELECT node, domain \
                             FROM registrations WHERE last_used < ?1 LIMIT ?2)",
                            params![before, SWEEP_BATCH],
                        )
                        .map_err(failed)
                })
                .await?;
            removed += batch as u64;
            if (batch as i64) < SWEEP_BATCH {
                return Ok(removed);
            }
        }
    }

    async fn count_unused(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = unix(before);
        self.read(move |reader| {
            let count = "SELECT count(*) FROM registrations WHERE last_used < ?1";
            reader
                .query_row(count, [before], |row| row.get(0))
                .map_err(failed)
        })
        .await
    }

    async fn sweeps_skipped_for(&self) -> Result<Duration, StoreError> {
        self.read(|reader| {
            let seconds: Option<i64> = reader
                .query_row("SELECT seconds FROM sweeps_skipped", [], |row| row.get(0))
                .optional()
                .map_err(failed)?;
            Ok(Duration::from_secs(
                u64::try_from(seconds.unwrap_or(0)).unwrap_or(0),
            ))
        })
        .await
    }

    async fn created(&self) -> Result<Option<SystemTime>, StoreError> {
        Ok(self.shared.created)
    }

    async fn record_sweeps_skipped(&self, skipped: Option<Duration>) -> Result<(), StoreError> {
        let seconds = skipped.map(|skipped| i64::try_from(skipped.as_secs()).unwrap_or(i64::MAX));
        self.write(move |writer, _| {
            match seconds {
                Some(seconds) => writer.execute(
                    "INSERT INTO sweeps_skipped VALUES (0, ?1) \
                     ON CONFLICT (id) DO UPDATE SET seconds = excluded.seconds",
                    [seconds],
                ),
                None => writer.execute("DELETE FROM sweeps_skipped", []),
            }
            .map(drop)
            .map_err(failed)
        })
        .await
    }

    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|reader| {
            let mut statement = reader
                .prepare("SELECT service, registrations FROM service_counts")
                .map_err(failed)?;
            let rows = statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(failed)?;
            rows.collect::<Result<_, _>>().map_err(failed)
        })
        .await
    }

    async fn list(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<RegistrationPage, StoreError> {
        let (node, domain) = match &after {
            None => ("", ""),
            Some(cursor) => cut_cursor(cursor)
                .ok_or_else(|| StoreError::Unusable(format!("bad cursor {cursor:?}")))?,
        };
        let (node, domain) = (node.to_owned(), domain.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |reader| page_after(reader, &node, &domain, limit))
            .await
    }

    async fn restore(&self, registration: Registration) -> Result<(), StoreError> {
        self.write(move |writer, limits| {
            write::upsert(writer, &registration, limits, Mode::Restore).map(drop)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
