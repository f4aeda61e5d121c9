//! The `fpush` command line: `fpush [--check] [settings.json]`, `--version`, `--help`.
//! Sets up logging, loads and checks the settings, runs the daemon and stops it on SIGTERM/SIGINT.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use fpush::component::LinkState;
use fpush::config::Settings;
use fpush::daemon::{self, Control};
use fpush::metrics::Metrics;
use fpush::modules::{self, ModuleSet};
use fpush::systemd::journal::print_problem;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// mimalloc instead of glibc's malloc: a push allocates a few dozen small blocks across threads,
/// which mimalloc serves in fewer instructions (measured in docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: fpush [--check] [SETTINGS]
       fpush store COMMAND SETTINGS ...   (the registration store: `fpush store --help`)

An XEP-0357 push app server: connects to an XMPP server as an external component and delivers
push notifications to Apple (APNS), Google (FCM) and browsers' Web Push services.

  SETTINGS      the settings file (default: ./settings.json)
  --check       load and validate SETTINGS (credential files included), print a summary, exit
  --version     print the version
  --help        print this help

Signals: SIGTERM/SIGINT stop in order (pushes in flight are finished and answered);
SIGHUP reloads SETTINGS (a file with problems is refused and the running settings stay).
Logging: RUST_LOG (default: info), e.g. RUST_LOG=fpush=debug.";

#[derive(Debug, PartialEq)]
enum Command {
    Run(PathBuf),
    Check(PathBuf),
    Version,
    Help,
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut check = false;
    let mut path = None;
    for arg in args {
        match arg.to_str() {
            Some("--check") => check = true,
            Some("--version" | "-V") => return Ok(Command::Version),
            Some("--help" | "-h") => return Ok(Command::Help),
            Some(flag) if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ if path.is_some() => return Err("more than one settings file given".into()),
            _ => path = Some(PathBuf::from(arg)),
        }
    }
    let path = path.unwrap_or_else(|| PathBuf::from("settings.json"));
    Ok(if check {
        Command::Check(path)
    } else {
        Command::Run(path)
    })
}

fn main() -> ExitCode {
    fpush::systemd::journal::init_logger("info");
    if let Some(cap) = release_log_cap() {
        log::set_max_level(log::max_level().min(cap));
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = command(args);
    // Under journald log lines are written by a thread of their own: let it finish.
    fpush::systemd::journal::flush_logs();
    code
}

fn command(args: Vec<OsString>) -> ExitCode {
    if args.first().is_some_and(|command| command == "store") {
        return fpush::store::cli::main(&args[1..]);
    }
    match parse_args(args) {
        Ok(Command::Version) => {
            println!("fpush {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Check(path)) => check(&path),
        Ok(Command::Run(path)) => run(&path),
        Err(problem) => {
            eprintln!("fpush: {problem}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The logging cap chosen at build time by the `release_max_level_*` features (release builds only).
fn release_log_cap() -> Option<log::LevelFilter> {
    if cfg!(debug_assertions) {
        None
    } else if cfg!(feature = "release_max_level_warn") {
        Some(log::LevelFilter::Warn)
    } else if cfg!(feature = "release_max_level_info") {
        Some(log::LevelFilter::Info)
    } else {
        None
    }
}

/// Load the settings and build every module, printing all problems (at error priority under
/// journald). `None` when anything is wrong. `--check` prints warnings to stderr itself, so that
/// `RUST_LOG` cannot hide them; the daemon logs them.
fn load_and_build(
    path: &std::path::Path,
    metrics: &Metrics,
    checking: bool,
) -> Option<daemon::Prepared> {
    match daemon::prepare(path, metrics, None) {
        Ok(prepared) => {
            let exposed = fpush::config::exposure_warnings(path, &prepared.settings);
            for warning in prepared.warnings.iter().chain(&exposed) {
                if checking {
                    let text = format!("warning: {}: {warning}", path.display());
                    print_problem(log::Level::Warn, &text);
                } else {
                    log::warn!("{}: {warning}", path.display());
                }
            }
            Some(prepared)
        }
        Err(problems) => {
            print_problem(
                log::Level::Error,
                &format!("{}: {problems}", path.display()),
            );
            None
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let Some(prepared) = load_and_build(path, &Metrics::new(), true) else {
        return ExitCode::FAILURE;
    };
    let settings = &prepared.settings;
    let store = fpush::store::cli::check_for(settings);
    // Filed as errors like the settings' problems (`ExecReload` runs this under journald), and
    // no "OK" line before them.
    for problem in &store.problems {
        print_problem(log::Level::Error, problem);
    }
    // The warnings went through the log's queue: out with them before the summary on stdout, so
    // that a terminal shows them in the order they were found.
    fpush::systemd::journal::flush_logs();
    if !store.problems.is_empty() {
        return ExitCode::FAILURE;
    }
    println!(
        "{}: OK — component {} via {}:{}",
        path.display(),
        settings.component.component_hostname,
        settings.component.server_hostname,
        settings.component.server_port
    );
    for module in &settings.push_modules {
        println!("  {}", modules::describe(module));
    }
    for note in &store.notes {
        println!("  {note}");
    }
    ExitCode::SUCCESS
}

fn run(path: &std::path::Path) -> ExitCode {
    fpush::panics::install_hook();
    let Some(runtime) = single_thread_runtime() else {
        return ExitCode::FAILURE;
    };
    // Before anything that takes time: SIGHUP's default action ends the process, and loading
    // the settings and building the modules (credential files) can take seconds. A SIGHUP that
    // comes meanwhile waits in this stream and reloads once the daemon runs.
    let hangup = match runtime.block_on(async { signal(SignalKind::hangup()) }) {
        Ok(hangup) => hangup,
        Err(error) => return signal_handlers_failed(&error),
    };
    let metrics = Metrics::new();
    let Some(daemon::Prepared {
        settings, modules, ..
    }) = load_and_build(path, &metrics, false)
    else {
        return ExitCode::FAILURE;
    };
    if !metrics_address_free(path, &settings) {
        return ExitCode::FAILURE;
    }
    for module in &settings.push_modules {
        log::info!("{}", modules::describe(module));
    }
    let prepared = (settings, modules, metrics);
    runtime.block_on(serve(path, prepared, hangup))
}

/// One thread: measured cheaper per push than the multi-threaded scheduler, and one core
/// carries far more pushes than any XMPP server sends. `None` (said) when it cannot start.
fn single_thread_runtime() -> Option<tokio::runtime::Runtime> {
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    built
        .map_err(|error| {
            let text = format!("fpush: cannot start the async runtime: {error}");
            print_problem(log::Level::Error, &text);
        })
        .ok()
}

/// The daemon with its signal handlers and its registration store, until it ends; its exit code.
async fn serve(
    path: &std::path::Path,
    (settings, modules, metrics): (Settings, ModuleSet, Arc<Metrics>),
    hangup: Signal,
) -> ExitCode {
    let control = Control::default();
    let (state, _) = tokio::sync::watch::channel(LinkState::Connecting);
    let signals = match spawn_signal_handler(control.clone(), hangup) {
        Ok(handle) => handle,
        Err(error) => return signal_handlers_failed(&error),
    };
    let registrations = match daemon::open_registrations(&settings).await {
        Ok(registrations) => registrations,
        Err(error) => {
            let text = format!("{}: store: {error}", path.display());
            print_problem(log::Level::Error, &text);
            return ExitCode::FAILURE;
        }
    };
    log::info!("fpush {} starting", env!("CARGO_PKG_VERSION"));
    let path = path.to_path_buf();
    let ending = daemon::run(
        path,
        settings,
        modules,
        metrics,
        control,
        state,
        registrations,
    )
    .await;
    signals.abort();
    match ending {
        daemon::Ending::Asked => ExitCode::SUCCESS,
        daemon::Ending::LinkLost => ExitCode::FAILURE,
    }
}

/// Binds `metrics.listen` once, so that an address in use stops start-up instead of only being
/// logged by the listener later; false (with the error printed) when it is taken.
fn metrics_address_free(path: &std::path::Path, settings: &fpush::config::Settings) -> bool {
    let Some(listen) = settings.metrics.as_ref().map(|m| m.listen) else {
        return true;
    };
    match std::net::TcpListener::bind(listen) {
        Ok(_) => true,
        Err(error) => {
            let shown = path.display();
            let text = format!("{shown}: metrics.listen: cannot listen on {listen}: {error}");
            print_problem(log::Level::Error, &text);
            false
        }
    }
}

fn signal_handlers_failed(error: &std::io::Error) -> ExitCode {
    let text = format!("fpush: cannot install signal handlers: {error}");
    print_problem(log::Level::Error, &text);
    ExitCode::FAILURE
}

/// SIGTERM (systemd) and SIGINT (a terminal) both ask for an orderly stop; SIGHUP (`hup`,
/// installed at start-up) for a reload. Installed before the registration store opens: a stop
/// asked for meanwhile is acted on once it is open (a migration is not cut short), and the
/// daemon then stops at once.
fn spawn_signal_handler(
    control: Control,
    mut hup: Signal,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM received"),
                _ = int.recv() => log::info!("SIGINT received"),
                _ = hup.recv() => {
                    log::info!("SIGHUP received");
                    control.reload.notify_one();
                    continue;
                }
            }
            control.shutdown.cancel();
            return;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_the_command_line() {
        assert_eq!(
            parse_args(args(&[])),
            Ok(Command::Run("settings.json".into()))
        );
        assert_eq!(
            parse_args(args(&["/etc/fpush/settings.json"])),
            Ok(Command::Run("/etc/fpush/settings.json".into()))
        );
        assert_eq!(
            parse_args(args(&["--check", "s.json"])),
            Ok(Command::Check("s.json".into()))
        );
        assert_eq!(parse_args(args(&["--version"])), Ok(Command::Version));
        assert_eq!(parse_args(args(&["--help"])), Ok(Command::Help));
        assert!(parse_args(args(&["--bogus"])).is_err());
        assert!(parse_args(args(&["a.json", "b.json"])).is_err());
    }
}
