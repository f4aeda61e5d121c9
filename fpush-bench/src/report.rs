//! Turning runs into figures: medians with min–max over repeated runs, the table printed at
//! the end, the JSON written next to it, and the costs read back from that JSON to compare
//! binaries.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::run::RunReport;

/// Median, min and max of one figure over the runs of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.into_iter().collect();
        if values.is_empty() {
            return Spread {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Spread {
            median,
            min: values[0],
            max: values[n - 1],
        }
    }

    fn show(&self, scale: f64, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median / scale,
            self.min / scale,
            self.max / scale,
            d = decimals
        )
    }
}

/// Every figure of one scenario over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub what: String,
    pub runs: usize,
    pub pushes_per_run: u64,
    pub pushes_per_second: Spread,
    pub pushes_per_cpu_second: Spread,
    pub fpush_cpu_us_per_push: Spread,
    pub fpush_system_cpu_us_per_push: Spread,
    pub generator_cpu_us_per_push: Spread,
    pub apns_server_cpu_us_per_push: Spread,
    pub latency_p50_us: Spread,
    pub latency_p90_us: Spread,
    pub latency_p99_us: Spread,
    pub latency_max_us: Spread,
    pub peak_rss_mib: Spread,
    /// Connections fpush opened to the provider per run.
    pub connections: Spread,
    /// Pushes answered other than `result` per run (refused, failed).
    pub not_delivered: Spread,
    pub replies_missing_max: u64,
    pub duplicate_replies_max: u64,
    /// The reply mix of the first run.
    pub replies_by_type: std::collections::BTreeMap<String, u64>,
    pub runs_detail: Vec<RunReport>,
}

impl Summary {
    pub fn of(what: &str, runs: Vec<RunReport>) -> Summary {
        let per_push = |cpu: fn(&RunReport) -> f64| {
            Spread::of(
                runs.iter()
                    .map(|r| cpu(r) * 1e6 / r.pushes_sent.max(1) as f64),
            )
        };
        let spread = |f: fn(&RunReport) -> f64| Spread::of(runs.iter().map(f));
        Summary {
            scenario: runs.first().map(|r| r.scenario.clone()).unwrap_or_default(),
            what: what.to_string(),
            runs: runs.len(),
            pushes_per_run: runs.first().map(|r| r.pushes_sent).unwrap_or(0),
            pushes_per_second: spread(|r| r.pushes_per_second),
            pushes_per_cpu_second: spread(|r| r.pushes_per_cpu_second),
            fpush_cpu_us_per_push: per_push(|r| r.fpush_cpu_seconds),
            fpush_system_cpu_us_per_push: per_push(|r| r.fpush_system_cpu_seconds),
            generator_cpu_us_per_push: per_push(|r| r.generator_cpu_seconds),
            apns_server_cpu_us_per_push: per_push(|r| r.apns_server_cpu_seconds),
            latency_p50_us: spread(|r| f64::from(r.latency_us.p50)),
            latency_p90_us: spread(|r| f64::from(r.latency_us.p90)),
            latency_p99_us: spread(|r| f64::from(r.latency_us.p99)),
            latency_max_us: spread(|r| f64::from(r.latency_us.max)),
            peak_rss_mib: spread(|r| r.fpush_peak_rss_kib as f64 / 1024.0),
            connections: spread(|r| r.apns_connections as f64),
            not_delivered: spread(|r| {
                let delivered = r.replies_by_type.get("result").copied().unwrap_or(0);
                r.pushes_sent.saturating_sub(delivered) as f64
            }),
            replies_missing_max: runs.iter().map(|r| r.replies_missing).max().unwrap_or(0),
            duplicate_replies_max: runs.iter().map(|r| r.duplicate_replies).max().unwrap_or(0),
            replies_by_type: runs
                .first()
                .map(|r| r.replies_by_type.clone())
                .unwrap_or_default(),
            runs_detail: runs,
        }
    }
}

/// The figures of one scenario that `compare` reads back from a `summary.json`; the other
/// fields there are ignored, so older files still load.
#[derive(Debug, Clone, Deserialize)]
pub struct ScenarioCost {
    pub scenario: String,
    pub pushes_per_cpu_second: Spread,
    pub fpush_cpu_us_per_push: Spread,
}

/// Why a `summary.json` could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum SummaryFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a fpush-bench summary: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads the per-scenario costs from the `summary.json` a bench run wrote.
pub fn read_costs(path: &Path) -> Result<Vec<ScenarioCost>, SummaryFileError> {
    #[derive(Deserialize)]
    struct File {
        scenarios: Vec<ScenarioCost>,
    }
    let text = std::fs::read_to_string(path).map_err(|source| SummaryFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str::<File>(&text)
        .map(|file| file.scenarios)
        .map_err(|source| SummaryFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// One line per run, printed as runs finish.
pub fn run_line(r: &RunReport) -> String {
    format!(
        "  {} run {}: {} pushes, {} replies, {} missing, {:.0}/s, {:.0} pushes/CPU-s \
         (fpush {:.2}s of which kernel {:.2}s, generator {:.2}s, APNS server {:.2}s CPU), latency p50 {} p90 {} p99 {} \
         max {} µs, peak RSS {:.1} MiB, {} provider connections, replies {:?}{}",
        r.scenario,
        r.run,
        r.pushes_sent,
        r.replies,
        r.replies_missing,
        r.pushes_per_second,
        r.pushes_per_cpu_second,
        r.fpush_cpu_seconds,
        r.fpush_system_cpu_seconds,
        r.generator_cpu_seconds,
        r.apns_server_cpu_seconds,
        r.latency_us.p50,
        r.latency_us.p90,
        r.latency_us.p99,
        r.latency_us.max,
        r.fpush_peak_rss_kib as f64 / 1024.0,
        r.apns_connections,
        r.replies_by_type,
        r.in_flight_at_drop
            .map(|n| format!(", {n} in flight at the drop"))
            .unwrap_or_default(),
    )
}

/// The results table (Markdown), medians with (min–max).
pub fn table(summaries: &[Summary]) -> String {
    let mut out = String::from(
        "| scenario | runs | pushes/s | pushes per CPU-second | fpush µs CPU/push | generator + APNS server µs CPU/push | latency p50 / p90 / p99 / max (ms) | peak RSS (MiB) | not delivered | provider connections | missing |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in summaries {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} + {:.1} | {:.2} / {:.2} / {:.2} / {:.1} | {} | {} | {} | {} |\n",
            s.scenario,
            s.runs,
            s.pushes_per_second.show(1.0, 0),
            s.pushes_per_cpu_second.show(1.0, 0),
            s.fpush_cpu_us_per_push.show(1.0, 1),
            s.generator_cpu_us_per_push.median,
            s.apns_server_cpu_us_per_push.median,
            s.latency_p50_us.median / 1000.0,
            s.latency_p90_us.median / 1000.0,
            s.latency_p99_us.median / 1000.0,
            s.latency_max_us.median / 1000.0,
            s.peak_rss_mib.show(1.0, 1),
            s.not_delivered.show(1.0, 0),
            s.connections.show(1.0, 0),
            s.replies_missing_max,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median_of_odd_and_even_counts() {
        let s = Spread::of([5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        let s = Spread::of([4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn read_costs_takes_each_scenarios_cost_and_ignores_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("summary.json");
        let spread = |m: f64| serde_json::json!({ "median": m, "min": m - 1.0, "max": m + 1.0 });
        let file = serde_json::json!({
            "machine": "test",
            "scenarios": [
                { "scenario": "a", "runs": 3, "pushes_per_cpu_second": spread(100.0),
                  "fpush_cpu_us_per_push": spread(10.0), "latency_p50_us": spread(5.0) },
                { "scenario": "d", "pushes_per_cpu_second": spread(40.0),
                  "fpush_cpu_us_per_push": spread(25.0) }
            ]
        });
        std::fs::write(&path, file.to_string()).expect("write");
        let costs = read_costs(&path).expect("readable");
        assert_eq!(costs.len(), 2);
        assert_eq!(costs[0].scenario, "a");
        assert_eq!(
            costs[0].pushes_per_cpu_second,
            Spread {
                median: 100.0,
                min: 99.0,
                max: 101.0
            }
        );
        assert_eq!(costs[1].fpush_cpu_us_per_push.median, 25.0);
    }

    #[test]
    fn read_costs_names_the_file_it_cannot_use() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nothing.json");
        let error = read_costs(&missing).expect_err("missing file");
        assert!(error.to_string().contains("nothing.json"), "{error}");
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\"scenarios\": 3}").expect("write");
        let error = read_costs(&broken).expect_err("not a summary");
        assert!(matches!(error, SummaryFileError::Parse { .. }), "{error}");
        assert!(error.to_string().contains("broken.json"), "{error}");
    }
}
