//! `fpush-bench`: the load generator and figures for fpush.
//!
//! It plays the XMPP server (XEP-0114, server side) and Apple's provider API (HTTP/2 over TLS,
//! answering 200) on loopback, runs the real `fpush` binary against them with generated
//! settings, and reports per run: pushes sent, replies by type, replies missing, throughput,
//! pushes per CPU-second of the fpush process, latency percentiles and fpush's peak RSS — with
//! its own CPU next to fpush's, to show the generator is not the bottleneck. Next to the JSON
//! it draws one latency chart per scenario; `compare` draws the cost of several binaries from
//! the `summary.json` of their runs.
//!
//! ```text
//! fpush-bench [--fpush PATH] [--runs N] [--interleave] [--out DIR] [--pushes N] [--window N] [all | a … k | smoke]
//! fpush-bench soak [--duration SECS] [--rate N] [--pool N] [--cleanup SECS]
//! fpush-bench compare [--out DIR] DIR_A DIR_B …
//! ```

mod apns_server;
mod charts;
mod load;
mod p2_store;
mod procfs;
mod report;
mod run;
mod scenario;
mod soak;
mod xmpp;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::report::Summary;
use crate::run::Setup;
use crate::scenario::Scenario;

/// Why a run could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("set-up failed: {0}")]
    Setup(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the link to fpush is down")]
    NoLink,
    #[error("usage: {0}")]
    Usage(String),
    #[error(transparent)]
    SummaryFile(#[from] report::SummaryFileError),
}

const USAGE: &str = "\
usage: fpush-bench [--fpush PATH] [--runs N] [--interleave] [--out DIR] [--pushes N] [--window N] [all | a … k | smoke]
       fpush-bench [--fpush PATH] [--out DIR] soak [--duration SECS] [--rate N] [--pool N] [--cleanup SECS]
       fpush-bench compare [--out DIR] DIR_A DIR_B …

  all (default)  scenarios a–k, each --runs times (default 5), then the table
                 (j pushes by node to 1M p2 registrations: the first run makes their
                 SQLite store in --out with `fpush store import-p2`; k is j's load with the
                 token in the node)
  smoke          2,000 pushes; exits non-zero unless every one is answered exactly once
  soak           a steady run (default 600 s at 2,000/s, tokens from 1M, cleanup 60 s)
  --fpush PATH   the binary to measure (default target/release/fpush)
  --interleave   run the chosen scenarios in turn, --runs rounds, instead of one
                 scenario's runs in a row (for comparisons on a shared machine)
  --out DIR      where JSON results go (default target/bench)
  --pushes N     every chosen scenario sends N pushes instead of its own count
  --window N     every chosen scenario keeps N pushes in flight instead of its own pacing
  compare        reads DIR/summary.json of earlier runs and draws compare.svg in --out,
                 one bar per DIR (named after it) for each scenario
  Every scenario also gets latency-<scenario>.svg next to its JSON.";

struct Options {
    fpush: PathBuf,
    runs: usize,
    out: PathBuf,
    scenarios: Vec<String>,
    soak: Option<soak::SoakConfig>,
    /// Overrides every chosen scenario's push count (`--pushes`).
    pushes: Option<u64>,
    /// Overrides every chosen scenario's pacing with this many in flight (`--window`).
    window: Option<u64>,
    /// Rounds of one run per scenario instead of each scenario's runs in a row.
    interleave: bool,
}

fn parse_args(args: Vec<String>) -> Result<Options, BenchError> {
    let mut options = Options {
        fpush: PathBuf::from("target/release/fpush"),
        runs: 5,
        out: PathBuf::from("target/bench"),
        scenarios: Vec::new(),
        soak: None,
        pushes: None,
        window: None,
        interleave: false,
    };
    let mut args = args.into_iter();
    let number = |flag: &str, value: Option<String>| -> Result<u64, BenchError> {
        value
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| BenchError::Usage(format!("{flag} needs a number")))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fpush" => {
                options.fpush = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| BenchError::Usage("--fpush needs a path".into()))?
            }
            "--out" => {
                options.out = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| BenchError::Usage("--out needs a path".into()))?
            }
            "--runs" => options.runs = number("--runs", args.next())?.max(1) as usize,
            "--interleave" => options.interleave = true,
            "--pushes" => options.pushes = Some(number("--pushes", args.next())?.max(1)),
            "--window" => options.window = Some(number("--window", args.next())?.max(1)),
            "soak" => options.soak = Some(soak::SoakConfig::default()),
            "--duration" | "--rate" | "--pool" | "--cleanup" => {
                let value = number(&arg, args.next())?;
                let soak = options
                    .soak
                    .as_mut()
                    .ok_or_else(|| BenchError::Usage(format!("{arg} belongs to soak")))?;
                match arg.as_str() {
                    "--duration" => soak.duration = Duration::from_secs(value),
                    "--rate" => soak.rate = value.max(1),
                    "--pool" => soak.pool = value.max(1),
                    _ => soak.cleanup_secs = value.max(1),
                }
            }
            "--help" | "-h" => return Err(BenchError::Usage(USAGE.into())),
            "all" => options
                .scenarios
                .extend(scenario::all().iter().map(|s| s.name.to_string())),
            name if Scenario::by_name(name).is_some() => options.scenarios.push(name.into()),
            other => return Err(BenchError::Usage(format!("unknown argument {other}"))),
        }
    }
    if options.scenarios.is_empty() && options.soak.is_none() {
        options
            .scenarios
            .extend(scenario::all().iter().map(|s| s.name.to_string()));
    }
    Ok(options)
}

/// What `compare` draws: the run directories, named after their last component.
struct CompareOptions {
    out: PathBuf,
    dirs: Vec<PathBuf>,
}

fn parse_compare(args: Vec<String>) -> Result<CompareOptions, BenchError> {
    let mut options = CompareOptions {
        out: PathBuf::from("target/bench"),
        dirs: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => {
                options.out = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| BenchError::Usage("--out needs a path".into()))?
            }
            "--help" | "-h" => return Err(BenchError::Usage(USAGE.into())),
            dir => options.dirs.push(PathBuf::from(dir)),
        }
    }
    if options.dirs.is_empty() {
        return Err(BenchError::Usage(
            "compare needs at least one directory with a summary.json".into(),
        ));
    }
    Ok(options)
}

/// Reads each directory's `summary.json` and writes `compare.svg`.
fn compare(options: &CompareOptions) -> Result<(), BenchError> {
    let mut binaries = Vec::with_capacity(options.dirs.len());
    for dir in &options.dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        binaries.push((name, report::read_costs(&dir.join("summary.json"))?));
    }
    std::fs::create_dir_all(&options.out)?;
    let path = options.out.join("compare.svg");
    std::fs::write(&path, charts::compare(&binaries))?;
    println!("SVG: {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("compare") {
        return match parse_compare(args[1..].to_vec()).and_then(|o| compare(&o)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(BenchError::Usage(text)) => {
                eprintln!("{text}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("fpush-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse_args(args) {
        Ok(options) => options,
        Err(BenchError::Usage(text)) => {
            eprintln!("{text}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("fpush-bench: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread: the generator's CPU is then one thread's, read from /proc.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fpush-bench: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fpush-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs what was asked; `Ok(false)` when a run lost replies.
async fn run(options: Options) -> Result<bool, BenchError> {
    std::fs::create_dir_all(&options.out)?;
    let machine = machine_line();
    println!("machine: {machine}");
    println!("fpush: {}", options.fpush.display());
    let mut setup = Setup {
        fpush: options.fpush.clone(),
        cleanup_interval: None,
        store_dir: options.out.clone(),
    };
    let mut clean = true;
    if let Some(cfg) = &options.soak {
        setup.cleanup_interval = Some(format!("{}s", cfg.cleanup_secs));
        let report = soak::run(&setup, cfg).await?;
        print!("{}", soak::summary(&report));
        let path = options.out.join("soak.json");
        std::fs::write(&path, to_json(&report)?)?;
        println!("JSON: {}", path.display());
        clean &= report.replies_missing == 0 && report.duplicate_replies == 0;
        if options.scenarios.is_empty() {
            return Ok(clean);
        }
    }
    let summaries = run_scenarios(&setup, &options, &mut clean).await?;
    if !summaries.is_empty() {
        println!("\n{}", report::table(&summaries));
        let all = serde_json::json!({ "machine": machine, "scenarios": summaries });
        let path = options.out.join("summary.json");
        std::fs::write(&path, to_json(&all)?)?;
        println!("JSON: {}", path.display());
        println!("SVG: {}", options.out.join("latency-*.svg").display());
    }
    if !clean {
        eprintln!("fpush-bench: replies were missing or duplicated");
    }
    Ok(clean)
}

/// Runs the chosen scenarios (each one's runs in a row, or rounds of one run of each with
/// `--interleave`), writes each one's JSON and latency chart, and returns their summaries.
/// `clean` turns false when a run lost or doubled replies.
async fn run_scenarios(
    setup: &Setup,
    options: &Options,
    clean: &mut bool,
) -> Result<Vec<Summary>, BenchError> {
    let mut scenarios = Vec::new();
    for name in &options.scenarios {
        let Some(mut scenario) = Scenario::by_name(name) else {
            continue;
        };
        if let Some(pushes) = options.pushes {
            scenario.pushes = pushes;
        }
        if let Some(window) = options.window {
            scenario.pacing = scenario::Pacing::Window(window);
        }
        scenarios.push(scenario);
    }
    let runs: Vec<usize> = scenarios
        .iter()
        .map(|s| if s.name == "smoke" { 1 } else { options.runs })
        .collect();
    let mut reports: Vec<Vec<run::RunReport>> = vec![Vec::new(); scenarios.len()];
    for (index, run) in schedule(&runs, options.interleave) {
        let scenario = &scenarios[index];
        if reports[index].is_empty() {
            println!("scenario {}: {}", scenario.name, scenario.what);
        }
        let report = run::run_once(setup, scenario, run).await?;
        println!("{}", report::run_line(&report));
        *clean &= report.replies_missing == 0 && report.duplicate_replies == 0;
        reports[index].push(report);
    }
    let mut summaries = Vec::with_capacity(scenarios.len());
    for (scenario, reports) in scenarios.iter().zip(reports) {
        let summary = Summary::of(scenario.what, reports);
        let path = options.out.join(format!("{}.json", scenario.name));
        std::fs::write(&path, to_json(&summary)?)?;
        let chart = options.out.join(format!("latency-{}.svg", scenario.name));
        std::fs::write(&chart, charts::latency(&summary))?;
        summaries.push(summary);
    }
    Ok(summaries)
}

/// The order of runs as (scenario index, run number): scenario by scenario, or round by round
/// when `interleave` (a scenario with fewer runs sits out the later rounds).
fn schedule(runs: &[usize], interleave: bool) -> Vec<(usize, usize)> {
    let rounds = runs.iter().copied().max().unwrap_or(0);
    let mut order = Vec::with_capacity(runs.iter().sum());
    if interleave {
        for run in 1..=rounds {
            order.extend(
                (0..runs.len())
                    .filter(|&i| run <= runs[i])
                    .map(|i| (i, run)),
            );
        }
    } else {
        for (i, &count) in runs.iter().enumerate() {
            order.extend((1..=count).map(|run| (i, run)));
        }
    }
    order
}

fn to_json(value: &impl serde::Serialize) -> Result<String, BenchError> {
    serde_json::to_string_pretty(value).map_err(|e| BenchError::Setup(format!("JSON: {e}")))
}

/// CPU model, cores and memory, from /proc.
fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "? GiB".into());
    format!("{model}, {cores} cores, {memory}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn interleaved_runs_go_round_by_round() {
        assert_eq!(
            schedule(&[2, 1, 2], true),
            [(0, 1), (1, 1), (2, 1), (0, 2), (2, 2)]
        );
        assert_eq!(schedule(&[2, 1], false), [(0, 1), (0, 2), (1, 1)]);
    }

    #[test]
    fn interleave_is_an_option() {
        let options = parse_args(args(&["--interleave", "--runs", "3", "j", "k"])).expect("valid");
        assert!(options.interleave);
        assert_eq!(options.scenarios, ["j", "k"]);
    }

    #[test]
    fn compare_takes_directories_and_an_output_directory() {
        let options = parse_compare(args(&["old", "--out", "charts", "a"])).expect("valid");
        assert_eq!(options.out, PathBuf::from("charts"));
        assert_eq!(options.dirs, [PathBuf::from("old"), PathBuf::from("a")]);
    }

    #[test]
    fn compare_without_directories_is_a_usage_error() {
        assert!(matches!(
            parse_compare(args(&[])),
            Err(BenchError::Usage(_))
        ));
        assert!(matches!(
            parse_compare(args(&["x", "--out"])),
            Err(BenchError::Usage(_))
        ));
    }
}
