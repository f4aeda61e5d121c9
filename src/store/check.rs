//! What `fpush --check` says about the store: it opens the SQLite file read-only and never
//! creates or migrates anything (only start-up does).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::sqlite::{
    backup_path, created_of, current_version, directory, foreign_schema, holds_tables_at,
    newer_schema, other_program, schema_version_of,
};
use crate::config::{RedisSettings, StoreBackend, StoreSettings};

/// The findings of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCheck {
    /// What would stop start-up or expose secrets.
    pub problems: Vec<String>,
    /// What is fine, or will be fixed by start-up (a file to create, a schema to migrate).
    pub notes: Vec<String>,
}

/// Checks the store `settings` name without changing it.
pub fn check(settings: &StoreSettings, redis: Option<&RedisSettings>) -> StoreCheck {
    let mut report = StoreCheck::default();
    match (settings.backend, settings.path.as_deref()) {
        (StoreBackend::Redis, _) if redis.is_none() => report
            .problems
            .push("store: the redis backend needs the `redis` section".into()),
        (StoreBackend::Redis, _) => report
            .notes
            .push("store: redis (the `redis` section; not contacted by --check)".into()),
        (StoreBackend::Sqlite, None) => report
            .problems
            .push("store.path: the sqlite backend needs its file".into()),
        (StoreBackend::Sqlite, Some(path)) => check_file(path, &mut report),
    }
    report
}

fn check_file(path: &Path, report: &mut StoreCheck) {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                Some(dir) if !dir.is_dir() => report.problems.push(format!(
                    "store.path: {shown} is missing and so is its directory {}",
                    dir.display()
                )),
                _ => report.notes.push(format!(
                    "store: {shown} is missing; start-up creates it empty, and for \
                     modules.retiredGrace pushes for registrations it lacks are answered wait \
                     (if registrations are kept elsewhere, point store.path there first)"
                )),
            }
            return;
        }
        Err(error) => {
            report
                .problems
                .push(format!("store.path: {shown}: {error}"));
            return;
        }
    };
    if meta.is_dir() {
        // Its mode and owner are the directory's: advice about them would mislead.
        report
            .problems
            .push(format!("store.path: {}", directory(path)));
        return;
    }
    // `/proc/self` belongs to the process's effective user.
    if let Ok(me) = std::fs::metadata("/proc/self").map(|me| me.uid()) {
        if meta.uid() != me {
            report.problems.push(format!(
                "store.path: {shown} belongs to uid {}, not to the user fpush runs as (uid {me})",
                meta.uid()
            ));
        }
    }
    private(path, &meta, report);
    // SQLite gives its write-ahead log the file's mode when it makes it: a log made before the
    // file was made private keeps the old mode while fpush runs, and holds the latest writes.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = Path::new(&wal);
    if let Ok(meta) = std::fs::metadata(wal) {
        private(wal, &meta, report);
    }
    schema(path, report);
}

/// Reports `path` (the store or its log) when everyone may read or write it.
fn private(path: &Path, meta: &std::fs::Metadata, report: &mut StoreCheck) {
    let (shown, mode) = (path.display(), meta.mode() & 0o777);
    if mode & 0o007 != 0 {
        report.problems.push(format!(
            "store.path: {shown} is open to everyone (mode {mode:03o}) but holds secrets: run `chmod o-rwx {shown}`"
        ));
    }
}

fn schema(path: &Path, report: &mut StoreCheck) {
    let shown = path.display();
    let version = schema_version_of(path);
    let known = current_version();
    match version {
        Err(error) => report
            .problems
            .push(format!("store.path: {shown} is not a readable SQLite file: {error}")),
        Ok(found) if found > known => report
            .problems
            .push(format!("store.path: {}", newer_schema(path, found, known))),
        Ok(found) if found < 0 => report
            .problems
            .push(format!("store.path: {}", foreign_schema(path, found))),
        Ok(0) if holds_tables_at(path).unwrap_or(false) => report
            .problems
            .push(format!("store.path: {}", other_program(path))),
        Ok(0) => report
            .notes
            .push(format!("store: {shown} is empty; start-up creates the schema")),
        Ok(found) if found < known => report.notes.push(format!(
            "store: {shown} has schema {found}; start-up migrates it to {known} after copying it to {}",
            backup_path(path, found).display()
        )),
        Ok(_) => report
            .notes
            .push(format!("store: {shown}, schema {known}")),
    }
    if let Some(made) = created_of(path) {
        report.notes.push(format!(
            "store: {shown} was first opened empty at {}; while it is younger than \
             modules.retiredGrace, pushes for registrations it lacks are answered wait",
            humantime::format_rfc3339_seconds(made)
        ));
    }
}
