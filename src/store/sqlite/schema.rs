//! The SQLite file's schema and its versions (`PRAGMA user_version`): created or migrated only
//! at start-up, after the old file is copied aside; a newer schema is refused. Tables an older
//! fpush never reads are added without a version ([`UNVERSIONED`]).
//!
//! The per-domain, per-service and total counts are kept by triggers, so that the caps and the
//! registrations gauge cost a point read instead of a count over a million rows.

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::failed;
use crate::store::StoreError;

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this fpush writes.
pub(crate) fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The secondary indexes: by key (register, unregister), by account (its cap) and by last use
/// (the sweep).
macro_rules! indexes {
    () => {
        "
CREATE UNIQUE INDEX registrations_by_key ON registrations (service, device, channel);
CREATE INDEX registrations_by_account ON registrations (account, last_used);
CREATE INDEX registrations_by_last_use ON registrations (last_used);
"
    };
}

/// The triggers that keep the per-domain and total counts.
macro_rules! domain_count_triggers {
    () => {
        "
CREATE TRIGGER registrations_added AFTER INSERT ON registrations BEGIN
    INSERT INTO domain_counts VALUES (NEW.domain, 1)
        ON CONFLICT (domain) DO UPDATE SET registrations = registrations + 1;
    UPDATE total_count SET registrations = registrations + 1;
END;
CREATE TRIGGER registrations_removed AFTER DELETE ON registrations BEGIN
    UPDATE domain_counts SET registrations = registrations - 1 WHERE domain = OLD.domain;
    DELETE FROM domain_counts WHERE domain = OLD.domain AND registrations <= 0;
    UPDATE total_count SET registrations = registrations - 1;
END;
CREATE TRIGGER registrations_moved AFTER UPDATE OF domain ON registrations
WHEN OLD.domain <> NEW.domain BEGIN
    UPDATE domain_counts SET registrations = registrations - 1 WHERE domain = OLD.domain;
    DELETE FROM domain_counts WHERE domain = OLD.domain AND registrations <= 0;
    INSERT INTO domain_counts VALUES (NEW.domain, 1)
        ON CONFLICT (domain) DO UPDATE SET registrations = registrations + 1;
END;
"
    };
}

/// The triggers that keep the per-service counts. A registration's service is part of its key,
/// so no update moves it.
macro_rules! service_count_triggers {
    () => {
        "
CREATE TRIGGER registrations_added_to_service AFTER INSERT ON registrations BEGIN
    INSERT INTO service_counts VALUES (NEW.service, 1)
        ON CONFLICT (service) DO UPDATE SET registrations = registrations + 1;
END;
CREATE TRIGGER registrations_removed_from_service AFTER DELETE ON registrations BEGIN
    UPDATE service_counts SET registrations = registrations - 1 WHERE service = OLD.service;
    DELETE FROM service_counts WHERE service = OLD.service AND registrations <= 0;
END;
"
    };
}

const V1: &str = concat!(
    "
CREATE TABLE registrations (
    id INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    device TEXT NOT NULL,
    channel TEXT NOT NULL,
    account TEXT NOT NULL,
    domain TEXT NOT NULL,
    token TEXT NOT NULL,
    second_token TEXT,
    node TEXT NOT NULL,
    secret TEXT NOT NULL,
    last_used INTEGER NOT NULL
);
CREATE UNIQUE INDEX registrations_by_node ON registrations (domain, node);
CREATE TABLE domain_counts (domain TEXT PRIMARY KEY, registrations INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE total_count (id INTEGER PRIMARY KEY CHECK (id = 0), registrations INTEGER NOT NULL);
INSERT INTO total_count VALUES (0, 0);
",
    indexes!(),
    domain_count_triggers!()
);

/// Counts per service (the `fpush_registrations` gauge), once counted from the rows.
const V2: &str = concat!(
    "
CREATE TABLE service_counts (service TEXT PRIMARY KEY, registrations INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO service_counts SELECT service, count(*) FROM registrations GROUP BY service;
",
    service_count_triggers!()
);

/// The registrations stored in the order a push looks them up: keyed by (node, domain), so that
/// a look-up is one B-tree descent instead of an index's and then the table's, and its key
/// comparisons mostly end at the first column (nodes are random; a server's domain is the same
/// for all its users). The table is rebuilt: its indexes and triggers go with the old one
/// (dropping a table fires no trigger, and copying rows into the new one fires none either, so
/// the counts stand).
const V3: &str = concat!(
    "
CREATE TABLE registrations_v3 (
    node TEXT NOT NULL,
    domain TEXT NOT NULL,
    service TEXT NOT NULL,
    device TEXT NOT NULL,
    channel TEXT NOT NULL,
    account TEXT NOT NULL,
    token TEXT NOT NULL,
    second_token TEXT,
    secret TEXT NOT NULL,
    last_used INTEGER NOT NULL,
    PRIMARY KEY (node, domain)
) WITHOUT ROWID;
INSERT INTO registrations_v3
    SELECT node, domain, service, device, channel, account, token, second_token, secret, last_used
    FROM registrations;
DROP TABLE registrations;
ALTER TABLE registrations_v3 RENAME TO registrations;
",
    indexes!(),
    domain_count_triggers!(),
    service_count_triggers!()
);

/// Tables an older fpush never reads, created at every start without a new schema version:
/// they need no migration (no copy aside), and a downgrade keeps working. Here, how long the
/// sweeps that would remove most of the store have been skipped in a row (one row while such a
/// run is on), so that the sweeper's day of grace is not started anew by a restart; and when
/// the store was made (see [`CREATED`]).
pub(super) const UNVERSIONED: &str = "
CREATE TABLE IF NOT EXISTS sweeps_skipped (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seconds INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS store_created (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    unix_seconds INTEGER NOT NULL
);
";

/// Notes when the store was made, once: now (?1) for a store that holds no registration, 0
/// (not known) for one that held registrations before the time was kept.
pub(super) const CREATED: &str = "
INSERT OR IGNORE INTO store_created
    SELECT 0, CASE WHEN (SELECT registrations FROM total_count) > 0 THEN 0 ELSE ?1 END;
";

/// Creates the file (private to its owner: it holds secrets) when it is missing.
pub(super) fn create_private(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            give_to_directory_owner(&file, path);
            Ok(())
        }
        Err(_) if path.is_dir() => Err(directory(path)),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::Unusable(format!(
            "cannot create {}: {error}",
            path.display()
        ))),
    }
}

/// Gives a new file the owner of its directory, which only root may do: `sudo fpush store
/// import` before the first start would otherwise make a store the service (running as the
/// owner of its state directory) cannot open. Anyone else keeps the file, as they cannot give
/// it away; SQLite gives its side files (`-wal`, `-shm`) the file's owner likewise.
fn give_to_directory_owner(file: &std::fs::File, path: &Path) {
    let directory = path
        .parent()
        .filter(|directory| !directory.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(meta) = std::fs::metadata(directory) {
        let _ = std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()));
    }
}

pub(super) fn version(connection: &Connection) -> Result<i64, StoreError> {
    connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(failed)
}

/// The error for a `store.path` that names a directory (SQLite says only "disk I/O error").
pub(crate) fn directory(path: &Path) -> StoreError {
    StoreError::Unusable(format!(
        "{} is a directory: store.path names the store's file, such as {}",
        path.display(),
        path.join("registrations.sqlite3").display()
    ))
}

/// The error for a file written by a newer fpush.
pub(crate) fn newer(path: &Path, found: i64, known: i64) -> StoreError {
    StoreError::Unusable(format!(
        "{} has schema version {found}, newer than this fpush knows ({known}): run a newer fpush, \
         or restore a backup",
        path.display()
    ))
}

/// The error for a file whose schema version no fpush writes (SQLite's `user_version` may be
/// negative): another program's file, or a damaged one.
pub(crate) fn foreign(path: &Path, found: i64) -> StoreError {
    StoreError::Unusable(format!(
        "{} has schema version {found}, which no fpush writes: it is not a registration store",
        path.display()
    ))
}

/// The error for a file at schema version 0 that holds tables: another program's database,
/// which fpush would otherwise fill with its own tables.
pub(crate) fn other_program(path: &Path) -> StoreError {
    StoreError::Unusable(format!(
        "{} holds tables of another program (schema version 0): it is not a registration \
         store; point store.path at a new file",
        path.display()
    ))
}

/// Whether the file holds any table (a file fpush has not set up yet holds none).
pub(super) fn holds_tables(connection: &Connection) -> Result<bool, rusqlite::Error> {
    connection.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master)", [], |row| {
        row.get(0)
    })
}

/// Where the copy of a file at schema `version` goes before it is migrated.
pub(crate) fn backup_path(path: &Path, version: i64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".v{version}.backup"));
    PathBuf::from(name)
}

/// Brings the schema to `migrations.len()`: nothing for a current file, create for a new one,
/// copy aside then migrate (in one transaction) for an older one.
pub(super) fn migrate(
    connection: &mut Connection,
    path: &Path,
    migrations: &[&str],
) -> Result<(), StoreError> {
    let known = migrations.len() as i64;
    let found = version(connection)?;
    if found > known {
        return Err(newer(path, found, known));
    }
    if found < 0 {
        return Err(foreign(path, found));
    }
    if found == 0 && holds_tables(connection).map_err(failed)? {
        return Err(other_program(path));
    }
    if found == known {
        return Ok(());
    }
    if found > 0 {
        let backup = backup_path(path, found);
        if std::fs::metadata(&backup).is_ok_and(|meta| meta.len() > 0) {
            // From an earlier migration of this schema, maybe weeks ago and rolled back since:
            // only a copy of the file as it is now can undo this one.
            log::warn!("{}: replacing the older copy", backup.display());
        }
        copy_aside(connection, &backup)?;
        log::warn!(
            "{}: migrating the registration store from schema {found} to {known}",
            path.display()
        );
    }
    let transaction = connection.transaction().map_err(failed)?;
    for migration in &migrations[found as usize..] {
        transaction.execute_batch(migration).map_err(failed)?;
    }
    transaction
        .pragma_update(None, "user_version", known)
        .map_err(failed)?;
    transaction.commit().map_err(failed)?;
    if found > 0 {
        compact(connection)?;
    }
    Ok(())
}

/// Gives back the space a migration freed (a rebuilt table leaves the old one's pages free,
/// which would keep the file at the size of both) and empties the write-ahead log it filled.
fn compact(connection: &Connection) -> Result<(), StoreError> {
    connection.execute_batch("VACUUM").map_err(failed)?;
    connection
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(failed)
}

/// A consistent copy with `VACUUM INTO`, private like the original, in place of whatever
/// `target` held.
pub(super) fn copy_aside(connection: &Connection, target: &Path) -> Result<(), StoreError> {
    // Written under another name and renamed when complete, so that a copy cut short (a stop
    // during a long copy) is never taken for a backup.
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    for leftover in [partial.clone(), journal_of(&partial)] {
        let _ = std::fs::remove_file(leftover);
    }
    create_private(&partial)?;
    let name = partial
        .to_str()
        .ok_or_else(|| StoreError::Unusable(format!("{} is not a UTF-8 path", target.display())))?;
    let cannot = |error: &dyn std::fmt::Display| {
        StoreError::Unusable(format!("cannot copy to {}: {error}", target.display()))
    };
    let copied = connection
        .execute("VACUUM INTO ?1", [name])
        .map_err(|error| cannot(&error))
        .and_then(|_| std::fs::rename(&partial, target).map_err(|error| cannot(&error)));
    if copied.is_err() {
        // Half a copy, on a full disk most likely: it would keep the disk full.
        let _ = std::fs::remove_file(&partial);
    }
    copied
}

/// The rollback journal SQLite keeps beside a file it writes outside WAL mode.
fn journal_of(path: &Path) -> PathBuf {
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    PathBuf::from(journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: &str = "ALTER TABLE registrations ADD COLUMN note TEXT";

    #[test]
    fn an_older_schema_is_copied_aside_before_it_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let mut connection = Connection::open(&path).unwrap();
        migrate(&mut connection, &path, &[V1]).unwrap();
        assert!(
            !backup_path(&path, 0).exists(),
            "a new file has nothing to keep"
        );
        migrate(&mut connection, &path, &[V1, NOTE]).unwrap();
        assert_eq!(version(&connection).unwrap(), 2);
        let backup = Connection::open(backup_path(&path, 1)).unwrap();
        assert_eq!(version(&backup).unwrap(), 1);
        connection
            .execute("INSERT INTO registrations (service, device, channel, account, domain, token, node, secret, last_used, note) VALUES ('s', 'd', '', 'a', 'e', 't', 'n', 'x', 0, 'y')", [])
            .unwrap();
    }

    #[test]
    fn version_2_counts_the_registrations_a_version_1_file_holds_and_keeps_counting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let mut connection = Connection::open(&path).unwrap();
        migrate(&mut connection, &path, &[V1]).unwrap();
        let insert = "INSERT INTO registrations (service, device, channel, account, domain, token, node, secret, last_used) VALUES (?1, ?2, '', 'a', 'e', 't', ?2, 'x', 0)";
        for (service, device) in [("fcm", "d1"), ("fcm", "d2"), ("apns", "d3")] {
            connection.execute(insert, [service, device]).unwrap();
        }
        migrate(&mut connection, &path, MIGRATIONS).unwrap();
        connection.execute(insert, ["apns", "d4"]).unwrap();
        connection
            .execute("DELETE FROM registrations WHERE device = 'd1'", [])
            .unwrap();
        let mut counts = connection
            .prepare("SELECT service, registrations FROM service_counts ORDER BY service")
            .unwrap();
        let counts: Vec<(String, i64)> = counts
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(counts, [("apns".into(), 2), ("fcm".into(), 1)]);
    }

    #[test]
    fn version_3_keeps_every_registration_with_its_counts_and_keys_the_table_by_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let mut connection = Connection::open(&path).unwrap();
        migrate(&mut connection, &path, &[V1, V2]).unwrap();
        let insert = "INSERT INTO registrations (service, device, channel, account, domain, token, node, secret, last_used) VALUES (?1, ?2, '', 'a', ?3, 't', ?2, 'x', 0)";
        for (service, device, domain) in [("fcm", "d1", "a.example"), ("apns", "d2", "b.example")] {
            connection
                .execute(insert, [service, device, domain])
                .unwrap();
        }
        migrate(&mut connection, &path, MIGRATIONS).unwrap();
        let free_pages: i64 = connection
            .query_row("PRAGMA freelist_count", [], |row| row.get(0))
            .unwrap();
        assert_eq!(free_pages, 0, "the old table's pages are given back");
        let plan: String = connection
            .query_row(
                "EXPLAIN QUERY PLAN SELECT token FROM registrations WHERE node = 'd2' AND domain = 'b.example'",
                [],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("PRIMARY KEY"), "{plan}");
        connection
            .execute(insert, ["fcm", "d3", "a.example"])
            .unwrap();
        let duplicate = connection.execute(insert, ["apns", "d3", "a.example"]);
        assert!(duplicate.is_err(), "(node, domain) stays unique");
        let count = |sql: &str| -> i64 { connection.query_row(sql, [], |row| row.get(0)).unwrap() };
        assert_eq!(count("SELECT registrations FROM total_count"), 3);
        assert_eq!(
            count("SELECT registrations FROM domain_counts WHERE domain = 'a.example'"),
            2
        );
        assert_eq!(
            count("SELECT registrations FROM service_counts WHERE service = 'fcm'"),
            2
        );
        assert_eq!(
            count("SELECT count(*) FROM registrations WHERE node = 'd1'"),
            1
        );
    }

    #[test]
    fn a_copy_cut_short_is_not_taken_for_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let mut connection = Connection::open(&path).unwrap();
        migrate(&mut connection, &path, &[V1]).unwrap();
        let backup = backup_path(&path, 1);
        let mut partial = backup.as_os_str().to_owned();
        partial.push(".partial");
        std::fs::write(&partial, b"half a copy").unwrap();
        migrate(&mut connection, &path, &[V1, NOTE]).unwrap();
        let copy = Connection::open(&backup).unwrap();
        assert_eq!(version(&copy).unwrap(), 1, "a whole copy, made anew");
        assert!(!PathBuf::from(partial).exists());
    }

    #[test]
    fn a_backup_left_by_an_earlier_migration_is_replaced_by_a_copy_of_the_file_as_it_is() {
        // Migrated once, rolled back by copying that backup over the file, used for weeks by
        // the older fpush, migrated again: undoing this migration needs today's file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let backup = backup_path(&path, 1);
        let stale = Connection::open(&backup).unwrap();
        migrate(&mut Connection::open(&backup).unwrap(), &backup, &[V1]).unwrap();
        stale.execute_batch("CREATE TABLE stale (x)").unwrap();
        drop(stale);
        let mut connection = Connection::open(&path).unwrap();
        migrate(&mut connection, &path, &[V1]).unwrap();
        connection
            .execute_batch("CREATE TABLE weeks_of_use (x)")
            .unwrap();
        migrate(&mut connection, &path, &[V1, NOTE]).unwrap();
        let copy = Connection::open(&backup).unwrap();
        let tables = |name: &str| -> i64 {
            let sql = "SELECT count(*) FROM sqlite_master WHERE name = ?1";
            copy.query_row(sql, [name], |row| row.get(0)).unwrap()
        };
        assert_eq!((tables("stale"), tables("weeks_of_use")), (0, 1));
        assert_eq!(version(&copy).unwrap(), 1);
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let mut connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 7).unwrap();
        let error = migrate(&mut connection, &path, &[V1]).unwrap_err();
        assert!(
            error.to_string().contains("schema version 7, newer"),
            "{error}"
        );
        assert_eq!(version(&connection).unwrap(), 7);
    }

    #[test]
    fn a_negative_schema_version_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let mut connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", -1).unwrap();
        let error = migrate(&mut connection, &path, MIGRATIONS).unwrap_err();
        assert!(error.to_string().contains("schema version -1"), "{error}");
        assert_eq!(version(&connection).unwrap(), -1);
    }
}
