//! `fpush store COMMAND SETTINGS …`: the operator's commands on the registration store the
//! settings file names (its `store` section, and `redis` for the Redis backend).

mod lines;
mod p2;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::{sqlite, RegistrationStore, StoreCheck};
use crate::config::{Settings, StoreBackend, StoreSettings};

pub const USAGE: &str = "\
usage: fpush store COMMAND SETTINGS [ARGUMENTS]

Commands on the registration store of SETTINGS (its `store` section):
  backup SETTINGS FILE             a consistent copy of the SQLite file into FILE (new or empty),
                                   also while fpush runs
  export SETTINGS [FILE]           every registration as JSON lines, to FILE or standard output
  import SETTINGS [FILE]           JSON lines (as export writes them) from FILE or standard input
  import-p2 SETTINGS --csv FILE    p2's `target` table as CSV with a header line
                                   (service,device,channel,domain,token,node,secret)

Lines that cannot be imported are reported by line number and skipped; the exit status is 1
when any was skipped.";

/// What was asked.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Backup(PathBuf, PathBuf),
    Export(PathBuf, Option<PathBuf>),
    Import(PathBuf, Option<PathBuf>),
    ImportP2(PathBuf, PathBuf),
}

fn parse(args: &[OsString]) -> Result<Command, String> {
    let text: Vec<&str> = args
        .iter()
        .map(|arg| arg.to_str().ok_or("arguments must be UTF-8"))
        .collect::<Result<_, _>>()?;
    let path = PathBuf::from;
    match text.as_slice() {
        ["backup", settings, file] => Ok(Command::Backup(path(settings), path(file))),
        ["export", settings] => Ok(Command::Export(path(settings), None)),
        ["export", settings, file] => Ok(Command::Export(path(settings), Some(path(file)))),
        ["import", settings] => Ok(Command::Import(path(settings), None)),
        ["import", settings, file] => Ok(Command::Import(path(settings), Some(path(file)))),
        ["import-p2", settings, "--csv", file] => Ok(Command::ImportP2(path(settings), path(file))),
        [] => Err("a command is needed".into()),
        [command, ..] => Err(format!("cannot read `fpush store {command} …`")),
    }
}

/// Runs `fpush store` with the arguments after `store`.
pub fn main(args: &[OsString]) -> ExitCode {
    if matches!(args.first().and_then(|a| a.to_str()), Some("--help" | "-h")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let command = match parse(args) {
        Ok(command) => command,
        Err(problem) => {
            eprintln!("fpush store: {problem}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fpush store: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(problem) => {
            eprintln!("fpush store: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)` when some lines were skipped.
async fn run(command: Command) -> Result<bool, String> {
    match command {
        Command::Backup(settings, file) => {
            let settings = load(&settings)?;
            backup(&store_section(&settings)?, file)
                .await
                .map(|()| true)
        }
        Command::Export(settings, file) => {
            lines::export(open(&settings, Opening::Existing)?, file.as_deref()).await
        }
        Command::Import(settings, file) => {
            lines::import(open(&settings, Opening::MayCreate)?, file.as_deref()).await
        }
        Command::ImportP2(settings, file) => {
            p2::import(open(&settings, Opening::MayCreate)?, &file).await
        }
    }
}

fn load(path: &Path) -> Result<Settings, String> {
    crate::config::load(path, &crate::modules::platforms())
        .map(|loaded| loaded.settings)
        .map_err(|errors| format!("{}: {errors}", path.display()))
}

fn store_section(settings: &Settings) -> Result<StoreSettings, String> {
    settings
        .store
        .clone()
        .ok_or_else(|| "the settings have no `store` section".into())
}

/// Whether a command may create the SQLite file the settings name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// Only an import fills a new store.
    MayCreate,
    /// Reading a file that is not there would create an empty store and copy nothing: a
    /// mistyped `store.path` must not pass for an empty store.
    Existing,
}

fn open(path: &Path, opening: Opening) -> Result<Arc<dyn RegistrationStore>, String> {
    let settings = load(path)?;
    let store = store_section(&settings)?;
    if opening == Opening::Existing {
        must_exist(&store)?;
        not_older(&store)?;
    }
    super::open(&store, settings.redis.as_ref(), (&store).into()).map_err(|e| e.to_string())
}

/// Refuses a SQLite store whose file is missing.
fn must_exist(store: &StoreSettings) -> Result<(), String> {
    match (store.backend, &store.path) {
        (StoreBackend::Sqlite, Some(path)) => match std::fs::metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("store.path: {} does not exist", path.display()))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Refuses a SQLite store of an older schema to a command that only reads it: opening it would
/// migrate it, under the fpush that may be serving it.
fn not_older(store: &StoreSettings) -> Result<(), String> {
    let (StoreBackend::Sqlite, Some(path)) = (store.backend, &store.path) else {
        return Ok(());
    };
    let known = sqlite::current_version();
    match sqlite::schema_version_of(path) {
        Ok(found) if found > 0 && found < known => Err(format!(
            "store.path: {} has schema {found}, older than this fpush's {known}: fpush migrates it \
             when the service starts with it; read it after that, or with the fpush that wrote it",
            path.display()
        )),
        _ => Ok(()),
    }
}

async fn backup(store: &StoreSettings, file: PathBuf) -> Result<(), String> {
    let path = match (store.backend, &store.path) {
        (StoreBackend::Sqlite, Some(path)) => path,
        _ => return Err(
            "backup copies a SQLite store; back Redis up with its own persistence (BGSAVE, AOF)"
                .into(),
        ),
    };
    must_exist(store)?;
    let (from, to) = (path.clone(), file.clone());
    tokio::task::spawn_blocking(move || sqlite::backup_file(&from, &to))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    println!("backed up {} to {}", path.display(), file.display());
    Ok(())
}

/// What `fpush --check` says about the store: nothing when no module registers (the daemon
/// then never opens it, so its settings cannot stop a start or a reload).
pub fn check_for(settings: &Settings) -> StoreCheck {
    match &settings.store {
        Some(store) if settings.serves_registrations() => {
            super::check(store, settings.redis.as_ref())
        }
        Some(_) => StoreCheck {
            problems: Vec::new(),
            notes: vec!["store: not opened, no module has a `registration` block".to_owned()],
        },
        None => StoreCheck::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_each_command_and_refuses_the_rest() {
        assert_eq!(
            parse(&args(&["backup", "s.json", "copy.sqlite3"])),
            Ok(Command::Backup("s.json".into(), "copy.sqlite3".into()))
        );
        assert_eq!(
            parse(&args(&["export", "s.json"])),
            Ok(Command::Export("s.json".into(), None))
        );
        assert_eq!(
            parse(&args(&["import", "s.json", "in.jsonl"])),
            Ok(Command::Import("s.json".into(), Some("in.jsonl".into())))
        );
        assert_eq!(
            parse(&args(&["import-p2", "s.json", "--csv", "t.csv"])),
            Ok(Command::ImportP2("s.json".into(), "t.csv".into()))
        );
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["backup", "s.json"])).is_err());
        assert!(parse(&args(&["import-p2", "s.json", "t.csv"])).is_err());
        assert!(parse(&args(&["drop", "s.json"])).is_err());
    }
}
