//! `fpush store …` and the store part of `fpush --check`, run as the real binary: backup,
//! export/import (SQLite → Redis), import-p2 from p2's CSV, usage on error, and what `--check`
//! reports about the store file and the `store` settings.

mod store_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fpush::store::{RedisRegistrations, RegistrationStore, SqliteStore, StoreLimits};
use fpush_testkit::fcm::TestServiceAccount;
use store_support::{registration, RedisServer};

fn fpush(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fpush"))
        .args(args)
        .output()
        .expect("fpush runs")
}

/// fpush, where no file may grow past 1024 blocks (of 512 or 1024 bytes, as the shell counts):
/// writing a few megabytes fails half-way, as on a full disk.
fn fpush_on_a_full_disk(args: &[&str]) -> Output {
    Command::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 1024; exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_fpush"))
        .args(args)
        .output()
        .expect("fpush runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A settings file with a module that serves p2 registrations (so that the store is used)
/// and the given `store` (and optional `redis`) sections.
fn settings(dir: &Path, store: &str, redis: Option<&str>) -> PathBuf {
    let redis = redis.map_or(String::new(), |url| {
        format!(r#""redis": {{"url": "{url}", "keyPrefix": "fpush-test:"}},"#)
    });
    let account = dir.join("fcm-service-account.json");
    TestServiceAccount::generate("fpush-test", "https://127.0.0.1:1/token")
        .write(&account)
        .unwrap();
    std::fs::set_permissions(&account, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        r#"{{
  "component": {{"componentHostname": "push.example.org", "componentKey": "secret",
                 "serverHostname": "127.0.0.1", "serverPort": 5347}},
  "pushModules": {{"conversations": {{"type": "google", "fcm": {{"fcmSecretPath": "{}"}},
                                      "registration": {{"protocol": "p2"}}}}}},
  {redis}
  "store": {store}
}}
"#,
        account.display()
    );
    let path = dir.join("settings.json");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn sqlite_settings(dir: &Path) -> (PathBuf, PathBuf) {
    let file = dir.join("registrations.sqlite3");
    let store = format!(r#"{{"backend": "sqlite", "path": "{}"}}"#, file.display());
    (settings(dir, &store, None), file)
}

/// Settings whose SQLite store holds one registration of about 2 MB: its copies are larger
/// than a small file size limit lets through.
async fn store_of_one_large_registration(dir: &Path) -> PathBuf {
    let (settings, file) = sqlite_settings(dir);
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let mut large = registration("fcm", "d1", "a@example.org");
    large.token = "t".repeat(2_000_000);
    store.register(large).await.unwrap();
    settings
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs `fpush store import` with `settings` on a file `in.jsonl` in `dir` holding `lines`.
fn import(dir: &Path, settings: &Path, lines: impl AsRef<[u8]>) -> Output {
    let file = dir.join("in.jsonl");
    std::fs::write(&file, lines).unwrap();
    fpush(&[
        "store",
        "import",
        settings.to_str().unwrap(),
        file.to_str().unwrap(),
    ])
}

#[tokio::test]
async fn an_export_that_fails_leaves_no_file_that_could_pass_for_a_whole_one() {
    let dir = tempfile::tempdir().unwrap();
    let settings = store_of_one_large_registration(dir.path()).await;
    let out = dir.path().join("export.jsonl");
    let export = [
        "store",
        "export",
        settings.to_str().unwrap(),
        out.to_str().unwrap(),
    ];
    let output = fpush_on_a_full_disk(&export);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("cannot write"),
        "{}",
        text(&output.stderr)
    );
    assert!(!out.exists(), "{}", text(&output.stderr));
}

#[test]
fn a_store_file_that_is_no_database_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    std::fs::write(&file, vec![b'x'; 4096]).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let copy = dir.path().join("copy.sqlite3");
    let (settings, copy) = (settings.to_str().unwrap(), copy.to_str().unwrap());
    for command in [
        &["store", "backup", settings, copy][..],
        &["store", "export", settings],
    ] {
        let output = fpush(command);
        assert_eq!(output.status.code(), Some(1), "{command:?}");
        let errors = text(&output.stderr);
        let named = format!("{}: ", file.display());
        assert!(
            errors.contains(&named) && errors.contains("not a database"),
            "{errors}"
        );
    }
}

#[tokio::test]
async fn a_truncated_store_file_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    for device in ["d1", "d2"] {
        let mut large = registration("fcm", device, "a@example.org");
        large.token = "t".repeat(100_000);
        store.register(large).await.unwrap();
    }
    drop(store);
    let connection = rusqlite::Connection::open(&file).unwrap();
    connection
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(connection);
    // Cut short (a copy onto a full disk, a crashed file system): two pages are left.
    let whole = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    whole.set_len(8192).unwrap();
    drop(whole);
    let output = fpush(&["store", "export", settings.to_str().unwrap()]);
    let errors = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains(&file.display().to_string()), "{errors}");
    assert!(errors.contains("restore a backup"), "{errors}");
}

#[tokio::test]
async fn backup_copies_the_sqlite_store_into_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let credentials = store
        .register(registration("fcm", "d1", "a@example.org"))
        .await
        .unwrap();
    let copy = dir.path().join("copy.sqlite3");
    let output = fpush(&[
        "store",
        "backup",
        settings.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(mode(&copy), 0o600);
    assert_eq!(mode(&file), 0o600);
    let wal = PathBuf::from(format!("{}-wal", file.display()));
    assert_eq!(
        mode(&wal),
        0o600,
        "SQLite's side files follow the file's mode"
    );
    let again = fpush(&[
        "store",
        "backup",
        settings.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert!(
        !again.status.success(),
        "an existing backup is never overwritten"
    );
    assert!(text(&again.stderr).contains("exists already"));
    let restored = SqliteStore::open(&copy, StoreLimits::default()).unwrap();
    let found = restored
        .find("example.org", &credentials.node)
        .await
        .unwrap();
    assert_eq!(found.unwrap().secret, credentials.secret);
}

#[tokio::test]
async fn export_then_import_moves_registrations_from_sqlite_to_redis() {
    let dir = tempfile::tempdir().unwrap();
    let (sqlite, file) = sqlite_settings(dir.path());
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let mut wanted = Vec::new();
    for (device, account) in [("d1", "a@example.org"), ("d2", "b@example.net")] {
        wanted.push(
            store
                .register(registration("apns", device, account))
                .await
                .unwrap(),
        );
    }
    let lines = dir.path().join("registrations.jsonl");
    let output = fpush(&[
        "store",
        "export",
        sqlite.to_str().unwrap(),
        lines.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(mode(&lines), 0o600);
    assert_eq!(std::fs::read_to_string(&lines).unwrap().lines().count(), 2);

    let server = RedisServer::start();
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = settings(
        redis_dir.path(),
        r#"{"backend": "redis"}"#,
        Some(&server.url()),
    );
    let output = fpush(&[
        "store",
        "import",
        redis.to_str().unwrap(),
        lines.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("imported 2 registrations, skipped 0"));
    let shared = RedisRegistrations::open(&server.settings(), StoreLimits::default()).unwrap();
    for (credentials, domain) in wanted.iter().zip(["example.org", "example.net"]) {
        let found = shared
            .find(domain, &credentials.node)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.secret, credentials.secret);
        assert_eq!(found.key.service, "apns");
    }
}

#[tokio::test]
async fn import_reports_bad_lines_by_number_and_imports_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let good = r#"{"service":"fcm","device":"d1","channel":"","account":"a@example.org","domain":"example.org","token":"t1","node":"node-1","secret":"s1","lastUsed":1700000000}"#;
    let no_token = r#"{"service":"fcm","device":"d2","channel":"","account":"a@example.org","domain":"example.org","token":"","node":"node-2","secret":"s2","lastUsed":1700000000}"#;
    let far = r#"{"service":"fcm","device":"d3","channel":"","account":"a@example.org","domain":"example.org","token":"t3","node":"node-3","secret":"s3","lastUsed":18446744073709551615}"#;
    let output = import(
        dir.path(),
        &settings,
        format!("{good}\nnot json\n\n{no_token}\n{far}\n"),
    );
    assert_eq!(output.status.code(), Some(1));
    let errors = text(&output.stderr);
    assert!(errors.contains("in.jsonl:2: "), "{errors}");
    assert!(
        errors.contains("in.jsonl:4: `token` is empty; skipped"),
        "{errors}"
    );
    assert!(
        errors.contains("in.jsonl:5: `last_used` 18446744073709551615 is out of range; skipped"),
        "{errors}"
    );
    assert!(text(&output.stdout).contains("imported 1 registrations, skipped 3"));
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let found = store.find("example.org", "node-1").await.unwrap().unwrap();
    assert_eq!((found.token.as_str(), found.secret.as_str()), ("t1", "s1"));
}

#[tokio::test]
async fn a_line_that_is_not_utf8_is_skipped_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let line = |n: u8| {
        format!(
            r#"{{"service":"fcm","device":"d{n}","channel":"","account":"a@example.org","domain":"example.org","token":"t{n}","node":"node-{n}","secret":"s{n}","lastUsed":1700000000}}"#
        )
        .into_bytes()
    };
    let mut bytes = line(1);
    bytes.extend_from_slice(b"\n{\"service\":\"fcm\xff\xfe\"}\n");
    bytes.extend(line(3));
    bytes.push(b'\n');
    let output = import(dir.path(), &settings, bytes);
    assert_eq!(output.status.code(), Some(1));
    let errors = text(&output.stderr);
    assert!(errors.contains("in.jsonl:2: "), "{errors}");
    assert!(errors.contains("; skipped"), "{errors}");
    let out = text(&output.stdout);
    assert!(out.contains("imported 2 registrations, skipped 1"), "{out}");
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    assert!(store.find("example.org", "node-3").await.unwrap().is_some());
}

#[tokio::test]
async fn an_empty_second_token_is_imported_as_none() {
    // As the Redis backend stores it: a call then goes as an alert, never to an empty token.
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let line = r#"{"service":"snikket:apns:1","device":"a@example.org","channel":"t1","account":"a@example.org","domain":"example.org","token":"t1","secondToken":"","node":"node-1","secret":"s1","lastUsed":1700000000}"#;
    let output = import(dir.path(), &settings, format!("{line}\n"));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let found = store.find("example.org", "node-1").await.unwrap().unwrap();
    assert_eq!(found.second_token, None);
}

#[tokio::test]
async fn a_last_use_in_the_future_is_imported_as_now() {
    // Otherwise the sweep would keep the registration until that date, however unused.
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let line = r#"{"service":"fcm","device":"d1","channel":"","account":"a@example.org","domain":"example.org","token":"t1","node":"node-1","secret":"s1","lastUsed":32503680000}"#;
    let output = import(dir.path(), &settings, format!("{line}\n"));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let found = store.find("example.org", "node-1").await.unwrap().unwrap();
    let now = std::time::SystemTime::now();
    assert!(found.last_used <= now);
    // The time of the import, not some time long past the sweep would remove it for.
    assert!(found.last_used > now - std::time::Duration::from_secs(60));
}

#[tokio::test]
async fn import_p2_maps_services_keeps_node_and_secret_and_skips_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let csv = dir.path().join("target.csv");
    std::fs::write(
        &csv,
        "service,device,channel,domain,token,node,secret\n\
         FCM,dev1,,example.org,\"fcm:token,with comma\",AAAAAAAAAAAA,SSSSSSSSSSSSSSSSSSSSSSSS\n\
         XMPP,dev2,,example.org,tok,BBBBBBBBBBBB,SSSSSSSSSSSSSSSSSSSSSSSS\n\
         APNS,dev3,chan3,example.net,apnstoken,CCCCCCCCCCCC,TTTTTTTTTTTTTTTTTTTTTTTT\n\
         FCM,dev4,,example.org,,DDDDDDDDDDDD,SSSSSSSSSSSSSSSSSSSSSSSS\n",
    )
    .unwrap();
    let output = fpush(&[
        "store",
        "import-p2",
        settings.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let errors = text(&output.stderr);
    assert!(
        errors.contains("target.csv:3: unknown service \"XMPP\""),
        "{errors}"
    );
    assert!(
        errors.contains("target.csv:5: `token` is empty; skipped"),
        "{errors}"
    );
    assert!(
        text(&output.stdout).contains("imported 2 registrations from p2, skipped 2"),
        "{}",
        text(&output.stdout)
    );
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let fcm = store
        .find("example.org", "AAAAAAAAAAAA")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fcm.key.service, "fcm");
    assert_eq!(fcm.token, "fcm:token,with comma");
    assert_eq!(fcm.secret, "SSSSSSSSSSSSSSSSSSSSSSSS");
    assert_eq!(fcm.account, "p2:example.org:dev1");
    let apns = store
        .find("example.net", "CCCCCCCCCCCC")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(apns.key.service, "apns");
    assert_eq!(apns.key.channel, "chan3");
    assert_eq!(apns.account, "p2:example.net:dev3:chan3");
}

#[test]
fn a_bad_store_command_prints_the_usage() {
    for args in [
        &["store"][..],
        &["store", "drop", "s.json"],
        &["store", "backup", "s.json"],
    ] {
        let output = fpush(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(text(&output.stderr).contains("usage: fpush store COMMAND SETTINGS"));
    }
    let help = fpush(&["store", "--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("import-p2 SETTINGS --csv FILE"));
}

#[test]
fn check_names_a_store_file_open_to_everyone_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let output = fpush(&["--check", settings.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("is missing; start-up creates it"));
    assert!(!file.exists(), "--check must not create the store");

    drop(SqliteStore::open(&file, StoreLimits::default()).unwrap());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = fpush(&["--check", settings.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("is open to everyone (mode 644) but holds secrets"),
        "{}",
        text(&output.stderr)
    );
    // `ExecReload` runs --check: a failed check says no "OK".
    assert!(
        !text(&output.stdout).contains("OK"),
        "{}",
        text(&output.stdout)
    );

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = fpush(&["--check", settings.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("schema 3"));
    assert!(
        text(&output.stdout).contains("was first opened empty at 20"),
        "{}",
        text(&output.stdout)
    );
    if std::os::unix::fs::chown(&file, Some(65534), None).is_ok() {
        let output = fpush(&["--check", settings.to_str().unwrap()]);
        assert!(!output.status.success());
        let errors = text(&output.stderr);
        assert!(
            errors.contains("belongs to uid 65534, not to the user fpush runs as"),
            "{errors}"
        );
    }
}

#[test]
fn a_store_path_naming_a_directory_is_said_to_be_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        r#"{{"backend": "sqlite", "path": "{}"}}"#,
        dir.path().display()
    );
    let settings = settings(dir.path(), &store, None);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = fpush(&["--check", settings.to_str().unwrap()]);
    assert!(!output.status.success());
    let errors = text(&output.stderr);
    assert!(errors.contains("is a directory"), "{errors}");
    assert!(
        !errors.contains("chmod"),
        "no advice about its mode: {errors}"
    );
    let output = import(dir.path(), &settings, "");
    let errors = text(&output.stderr);
    assert!(errors.contains("is a directory"), "{errors}");
}

#[test]
fn check_names_a_write_ahead_log_open_to_everyone() {
    // The file was made private while fpush ran: the log SQLite made beside it kept its old
    // mode, and holds the latest registrations, secrets included.
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let wal = PathBuf::from(format!("{}-wal", file.display()));
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = fpush(&["--check", settings.to_str().unwrap()]);
    let errors = text(&output.stderr);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    assert!(
        errors.contains(&format!("{} is open to everyone (mode 644)", wal.display())),
        "{errors}"
    );
    drop(store);
}

#[test]
fn check_leaves_alone_a_store_no_module_uses() {
    // The daemon opens the store only for a module that registers; a reload must not fail on
    // a store it would never open.
    let dir = tempfile::tempdir().unwrap();
    let text_of = format!(
        r#"{{"component": {{"componentHostname": "push.example.org", "componentKey": "secret",
                          "serverHostname": "127.0.0.1", "serverPort": 5347}},
            "pushModules": {{"demo": {{"type": "demo", "is_default_module": true}}}},
            "store": {{"path": "{}/missing-dir/registrations.sqlite3"}}}}"#,
        dir.path().display()
    );
    let settings = dir.path().join("settings.json");
    std::fs::write(&settings, text_of).unwrap();
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = fpush(&["--check", settings.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(said.contains(": OK"), "{said}");
    assert!(
        said.contains("store: not opened, no module has a `registration` block"),
        "{said}"
    );
}

#[test]
fn check_refuses_a_schema_newer_than_this_fpush_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    drop(SqliteStore::open(&file, StoreLimits::default()).unwrap());
    let connection = rusqlite::Connection::open(&file).unwrap();
    connection.pragma_update(None, "user_version", 99).unwrap();
    drop(connection);
    let output = fpush(&["--check", settings.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("schema version 99, newer than this fpush knows (3)"),
        "{}",
        text(&output.stderr)
    );
    let connection = rusqlite::Connection::open(&file).unwrap();
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 99);
}

#[test]
fn a_negative_schema_version_is_a_problem_for_check_and_an_error_for_the_store_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let connection = rusqlite::Connection::open(&file).unwrap();
    connection.pragma_update(None, "user_version", -1).unwrap();
    drop(connection);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = fpush(&["--check", settings.to_str().unwrap()]);
    assert!(!check.status.success());
    assert!(
        text(&check.stderr).contains("schema version -1"),
        "{}",
        text(&check.stderr)
    );
    let export = fpush(&["store", "export", settings.to_str().unwrap()]);
    assert_eq!(export.status.code(), Some(1), "{}", text(&export.stderr));
    assert!(
        text(&export.stderr).contains("schema version -1"),
        "{}",
        text(&export.stderr)
    );
}

#[test]
fn another_programs_sqlite_file_is_refused_and_left_alone() {
    // A store.path pointing at another program's database, whose schema version is 0 too.
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let connection = rusqlite::Connection::open(&file).unwrap();
    connection
        .execute_batch("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
        .unwrap();
    drop(connection);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = fpush(&["--check", settings.to_str().unwrap()]);
    assert!(!check.status.success(), "{}", text(&check.stdout));
    assert!(
        text(&check.stderr).contains("not a registration store"),
        "{}",
        text(&check.stderr)
    );
    let import = import(dir.path(), &settings, "");
    assert_eq!(import.status.code(), Some(1), "{}", text(&import.stdout));
    assert!(
        text(&import.stderr).contains("not a registration store"),
        "{}",
        text(&import.stderr)
    );
    let connection = rusqlite::Connection::open(&file).unwrap();
    let tables: i64 = connection
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 1, "fpush's tables were added to it");
}

#[test]
fn backup_copies_and_export_refuses_an_older_schema_without_migrating_it() {
    // A newer fpush run beside the older one still serving the file must not migrate it.
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    drop(SqliteStore::open(&file, StoreLimits::default()).unwrap());
    let version = |path: &Path| -> i64 {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    };
    let older = version(&file) - 1;
    let connection = rusqlite::Connection::open(&file).unwrap();
    connection
        .pragma_update(None, "user_version", older)
        .unwrap();
    drop(connection);
    let export = fpush(&["store", "export", settings.to_str().unwrap()]);
    assert_eq!(export.status.code(), Some(1), "{}", text(&export.stderr));
    let refusal = format!("has schema {older}, older than this fpush's {}", older + 1);
    assert!(
        text(&export.stderr).contains(&refusal),
        "{}",
        text(&export.stderr)
    );
    let copy = dir.path().join("copy.sqlite3");
    let backup = [
        "store",
        "backup",
        settings.to_str().unwrap(),
        copy.to_str().unwrap(),
    ];
    let output = fpush(&backup);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!((version(&file), version(&copy)), (older, older));
    assert!(!Path::new(&format!("{}.v{older}.backup", file.display())).exists());
}

#[test]
fn store_settings_problems_name_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = r#"{"backend": "sqlite", "maxPerAccount": 0, "expireAfter": "soon"}"#;
    let settings = settings(dir.path(), store, None);
    let output = fpush(&["--check", settings.to_str().unwrap()]);
    assert!(!output.status.success());
    let errors = text(&output.stderr);
    for expected in [
        "store.path: missing: the sqlite backend needs its file",
        "store.maxPerAccount: must be at least 1",
        "store.expireAfter: invalid duration",
    ] {
        assert!(errors.contains(expected), "{expected} in {errors}");
    }
    assert!(errors.contains("(line 7"), "{errors}");

    let redis = r#"{"backend": "redis"}"#;
    let settings = self::settings(dir.path(), redis, None);
    let errors = text(&fpush(&["--check", settings.to_str().unwrap()]).stderr);
    assert!(
        errors.contains("store.backend: the redis backend needs the top-level `redis` section"),
        "{errors}"
    );
}

#[tokio::test]
async fn a_backup_cut_short_by_a_full_disk_leaves_no_partial_copy_behind() {
    let dir = tempfile::tempdir().unwrap();
    let settings = store_of_one_large_registration(dir.path()).await;
    let copy = dir.path().join("copy.sqlite3");
    let output = fpush_on_a_full_disk(&[
        "store",
        "backup",
        settings.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(copy.to_str().unwrap()), "{stderr}");
    let partial = PathBuf::from(format!("{}.partial", copy.display()));
    assert!(!partial.exists(), "half a copy stays, taking the space");
    assert!(!copy.exists());
}

#[test]
fn backup_and_export_of_a_store_file_that_is_not_there_fail_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let copy = dir.path().join("copy.sqlite3");
    let out = dir.path().join("out.jsonl");
    for args in [
        ["backup", settings.to_str().unwrap(), copy.to_str().unwrap()],
        ["export", settings.to_str().unwrap(), out.to_str().unwrap()],
    ] {
        let output = fpush(&[&["store"][..], &args[..]].concat());
        assert!(
            !output.status.success(),
            "{args:?}: a mistyped store.path is no empty store"
        );
        let stderr = text(&output.stderr);
        assert!(stderr.contains("does not exist"), "{args:?}: {stderr}");
        assert!(!file.exists(), "{args:?} created the store file");
    }
}

#[tokio::test]
async fn export_names_a_damaged_redis_registration_and_writes_the_rest() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let redis = settings(dir.path(), r#"{"backend": "redis"}"#, Some(&server.url()));
    let store = RedisRegistrations::open(&server.settings(), StoreLimits::default()).unwrap();
    let mut nodes = Vec::new();
    for (device, account) in [("d1", "a@example.org"), ("d2", "b@example.org")] {
        let registered = store.register(registration("fcm", device, account));
        nodes.push(registered.await.unwrap().node);
    }
    // Another writer on the shared Redis left a field out of the first.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let _: i64 = ::redis::cmd("HDEL")
        .arg(format!("fpush-test:{{example.org}}:r:{}", nodes[0]))
        .arg("t")
        .query(&mut connection)
        .unwrap();
    let lines = dir.path().join("registrations.jsonl");
    let output = fpush(&[
        "store",
        "export",
        redis.to_str().unwrap(),
        lines.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "one was left out: {stderr}");
    assert!(stderr.contains(&nodes[0]), "{stderr}");
    let written = std::fs::read_to_string(&lines).unwrap();
    assert_eq!(written.lines().count(), 1, "{written}");
    assert!(written.contains(&nodes[1]), "{written}");
}

#[tokio::test]
async fn export_names_a_damaged_sqlite_registration_and_writes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let mut nodes = Vec::new();
    for (device, account) in [("d1", "a@example.org"), ("d2", "b@example.org")] {
        let registered = store.register(registration("fcm", device, account));
        nodes.push(registered.await.unwrap().node);
    }
    drop(store);
    // Edited by hand: a last use that is no number.
    let connection = rusqlite::Connection::open(&file).unwrap();
    connection
        .execute(
            "UPDATE registrations SET last_used = 'yesterday' WHERE node = ?1",
            [&nodes[0]],
        )
        .unwrap();
    drop(connection);
    let lines = dir.path().join("registrations.jsonl");
    let output = fpush(&[
        "store",
        "export",
        settings.to_str().unwrap(),
        lines.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "one was left out: {stderr}");
    assert!(stderr.contains(&nodes[0]), "{stderr}");
    let written = std::fs::read_to_string(&lines).unwrap_or_default();
    assert_eq!(written.lines().count(), 1, "{stderr}");
    assert!(written.contains(&nodes[1]), "{written}");
}

#[test]
fn a_store_an_import_run_as_root_creates_belongs_to_the_owner_of_its_directory() {
    // `sudo fpush store import` before the first start: a store only root can open would stop
    // the service, which runs as the owner of /var/lib/fpush.
    let dir = tempfile::tempdir().unwrap();
    let (settings, file) = sqlite_settings(dir.path());
    if std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).is_err() {
        return; // not root: the store is the running user's, as it should be
    }
    let output = import(dir.path(), &settings, "");
    assert!(output.status.success(), "{}", text(&output.stderr));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(mode(&file), 0o600);
}

#[tokio::test]
async fn an_import_never_drops_an_imported_registration_without_saying_so() {
    // Moving a store to one with a lower `maxPerAccount` (or p2 rows, or a Redis store filled
    // under other caps): each line over the account's cap silently deletes a registration the
    // same import just wrote, and the run still reports every line imported, exit status 0.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registrations.sqlite3");
    let store = format!(
        r#"{{"backend": "sqlite", "path": "{}", "maxPerAccount": 1}}"#,
        file.display()
    );
    let settings = settings(dir.path(), &store, None);
    let line = |n: u32| {
        format!(
            r#"{{"service":"fcm","device":"d{n}","channel":"","account":"a@example.org","domain":"example.org","token":"t{n}","node":"node-{n}","secret":"s{n}","lastUsed":{}}}"#,
            1_700_000_000 + n
        )
    };
    let output = import(dir.path(), &settings, format!("{}\n{}\n", line(1), line(2)));
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    let store = SqliteStore::open(&file, StoreLimits::default()).unwrap();
    let mut held = 0;
    for node in ["node-1", "node-2"] {
        held += usize::from(store.find("example.org", node).await.unwrap().is_some());
    }
    assert!(
        held == 2 || !output.status.success(),
        "{held} of 2 registrations in the store, yet: status {:?}, stdout {stdout:?}, stderr {stderr:?}",
        output.status.code()
    );
}
