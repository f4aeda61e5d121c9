//! Reading what the kernel knows about a process: CPU time (`/proc/PID/stat`), memory
//! (`/proc/PID/status`), open file descriptors and threads.
//!
//! CPU time is the figure that stays stable on a shared 2-core machine: wall-clock throughput
//! moves with whoever else is building, the CPU seconds a push costs do not.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Clock ticks per second of `utime`/`stime` (`getconf CLK_TCK`; 100 on Linux in practice).
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks: &u64| *ticks > 0)
            .unwrap_or(100)
    })
}

/// User + system CPU seconds from a `stat` file (a process's or one thread's).
pub fn cpu_seconds(stat_path: &Path) -> io::Result<f64> {
    let text = std::fs::read_to_string(stat_path)?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the
    // last ')'. There, index 0 is field 3 (state), so utime (14) is index 11 and stime (15) 12.
    let after = text
        .rfind(')')
        .map(|at| &text[at + 1..])
        .ok_or_else(|| invalid(stat_path, "no ')' in stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |index: usize| -> io::Result<u64> {
        fields
            .get(index)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| invalid(stat_path, "short stat line"))
    };
    let ticks = field(11)? + field(12)?;
    Ok(ticks as f64 / clock_ticks_per_second() as f64)
}

/// System (kernel) CPU seconds alone from a `stat` file: on loopback, much of the cost of a
/// socket write is the receiver's TCP processing, charged to the writer here.
pub fn system_cpu_seconds(stat_path: &Path) -> io::Result<f64> {
    let text = std::fs::read_to_string(stat_path)?;
    let ticks: u64 = text
        .rfind(')')
        .and_then(|at| text[at + 1..].split_whitespace().nth(12)?.parse().ok())
        .ok_or_else(|| invalid(stat_path, "short stat line"))?;
    Ok(ticks as f64 / clock_ticks_per_second() as f64)
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// One process seen through `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: u32,
}

impl Proc {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{name}", self.pid))
    }

    /// User + system CPU seconds used so far by every thread of the process.
    pub fn cpu_seconds(&self) -> io::Result<f64> {
        cpu_seconds(&self.path("stat"))
    }

    /// System CPU seconds alone.
    pub fn system_cpu_seconds(&self) -> io::Result<f64> {
        system_cpu_seconds(&self.path("stat"))
    }

    /// A `kB` line of `/proc/PID/status` (`VmHWM`, `VmRSS`), in KiB.
    pub fn status_kib(&self, key: &str) -> io::Result<u64> {
        self.status_value(key)?
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| invalid(&self.path("status"), key))
    }

    /// Peak resident set size (`VmHWM`), KiB.
    pub fn peak_rss_kib(&self) -> io::Result<u64> {
        self.status_kib("VmHWM")
    }

    /// Current resident set size (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> io::Result<u64> {
        self.status_kib("VmRSS")
    }

    /// Number of threads.
    pub fn threads(&self) -> io::Result<u64> {
        self.status_value("Threads")?
            .trim()
            .parse()
            .map_err(|_| invalid(&self.path("status"), "Threads"))
    }

    /// Number of open file descriptors.
    pub fn open_fds(&self) -> io::Result<usize> {
        Ok(std::fs::read_dir(self.path("fd"))?.count())
    }

    fn status_value(&self, key: &str) -> io::Result<String> {
        let text = std::fs::read_to_string(self.path("status"))?;
        text.lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                (name == key).then(|| value.to_string())
            })
            .ok_or_else(|| invalid(&self.path("status"), key))
    }
}

/// The `stat` file of the calling thread, for CPU accounting of one runtime thread of the
/// benchmark itself (the generator and the APNS server each run on their own thread).
pub fn current_thread_stat() -> io::Result<PathBuf> {
    // "/proc/thread-self" links to "PID/task/TID".
    let target = std::fs::read_link("/proc/thread-self")?;
    Ok(Path::new("/proc").join(target).join("stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = Proc::new(std::process::id());
        // Burn CPU until the kernel has counted a tick of it (on a busy machine 30 ms of wall
        // time may bring none), so the figure cannot be a parse of zeros by accident.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while me.cpu_seconds().unwrap() == 0.0
            && start.elapsed() < std::time::Duration::from_secs(10)
        {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert!(
            me.cpu_seconds().unwrap() > 0.0,
            "no CPU time counted in 10 s"
        );
        // The peak is read after the current size (other test threads may be allocating).
        let rss = me.rss_kib().unwrap();
        assert!(rss > 0);
        assert!(me.peak_rss_kib().unwrap() >= rss);
        assert!(me.threads().unwrap() >= 1);
        assert!(me.open_fds().unwrap() >= 3);
        assert!(current_thread_stat().unwrap().exists());
    }
}
