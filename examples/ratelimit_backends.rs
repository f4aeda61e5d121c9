//! What a ratelimit decision costs on each backend: the memory limiter against the Redis one.
//!
//! Needs a Redis to talk to, for example one started for the occasion:
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no &
//! cargo run --release --example ratelimit_backends -- redis://127.0.0.1:6390/ 100000
//! ```
//!
//! Several comma-separated URLs are the seed nodes of a Redis Cluster (`redis.cluster`), e.g.
//! `redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002`.
//!
//! Prints the wall time per decision one at a time (the latency a push sees) and with many
//! decisions in flight (what one instance can push through the shared limiter), plus this
//! process's CPU time per decision. Tokens repeat, so sends, queued pushes and rejections mix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fpush::metrics::RedisFallbacks;
use fpush::ratelimit::{
    DeadTokens, RatelimitConfig, Ratelimiter, RedisOptions, RedisServers, RedisStore,
};

/// Distinct tokens: each is decided several times over a run.
const TOKENS: usize = 10_000;
/// Decisions in flight at once in the concurrent run.
const IN_FLIGHT: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let decisions: usize = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let tokens: Arc<Vec<String>> = Arc::new((0..TOKENS).map(|i| format!("{i:064x}")).collect());
    let config = RatelimitConfig {
        enabled: true,
        window: Duration::from_secs(20),
        cleanup_interval: Duration::from_secs(300),
    };
    run_memory(config, &tokens, decisions);

    // Each run gets its own key prefix, so earlier runs' keys do not change the mix.
    let prefix = format!("fpush-bench-{}:", std::process::id());
    let options = RedisOptions {
        timeout: Duration::from_secs(5),
        ..RedisOptions::default()
    };
    let servers = if url.contains(',') {
        RedisServers::Cluster(url.split(',').map(str::to_owned).collect())
    } else {
        RedisServers::Single(url.clone())
    };
    let store = RedisStore::open(servers, &prefix, options, RedisFallbacks::detached())?;
    let dead = Arc::new(DeadTokens::with_redis(
        Duration::from_secs(3600),
        store.clone(),
        "bench",
    ));
    let redis = Arc::new(Ratelimiter::with_redis(config, store.clone(), "bench"));
    let _ = redis.admit(&dead, "warm-up").await;
    if store.fallbacks() > 0 {
        return Err(format!("no Redis answers at {url}").into());
    }
    run_redis(&redis, &dead, &tokens, decisions).await?;
    println!("fallbacks to the local limiter: {}", store.fallbacks());
    Ok(())
}

/// A hundred times as many memory decisions as Redis ones: fewer would stay below the CPU
/// clock's tick.
fn run_memory(config: RatelimitConfig, tokens: &[String], decisions: usize) {
    let memory = Ratelimiter::new(config);
    let memory_decisions = decisions * 100;
    let (wall, cpu) = timed(|| {
        for i in 0..memory_decisions {
            let _ = memory.check(&tokens[i % TOKENS]);
        }
    });
    report("memory, one at a time", memory_decisions, wall, cpu);
}

/// The Redis limiter one decision at a time, then with `IN_FLIGHT` decisions at once.
async fn run_redis(
    redis: &Arc<Ratelimiter>,
    dead: &Arc<DeadTokens>,
    tokens: &Arc<Vec<String>>,
    decisions: usize,
) -> Result<(), tokio::task::JoinError> {
    let started = (Instant::now(), cpu_time());
    for i in 0..decisions {
        let _ = redis.admit(dead, &tokens[i % TOKENS]).await;
    }
    let (wall, cpu) = (started.0.elapsed(), cpu_time() - started.1);
    report("redis, one at a time", decisions, wall, cpu);

    let started = (Instant::now(), cpu_time());
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|worker| {
            let (redis, dead, tokens) = (redis.clone(), dead.clone(), tokens.clone());
            tokio::spawn(async move {
                for i in (worker..decisions).step_by(IN_FLIGHT) {
                    let _ = redis.admit(&dead, &tokens[i % TOKENS]).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let (wall, cpu) = (started.0.elapsed(), cpu_time() - started.1);
    report(
        &format!("redis, {IN_FLIGHT} in flight"),
        decisions,
        wall,
        cpu,
    );
    Ok(())
}

fn timed(work: impl FnOnce()) -> (Duration, Duration) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    work();
    (wall.elapsed(), cpu_time() - cpu)
}

fn report(what: &str, decisions: usize, wall: Duration, cpu: Duration) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / decisions as f64;
    println!(
        "{what:<24} {decisions} decisions: {:>8.3} µs wall, {:>8.3} µs CPU (fpush side) per decision",
        per(wall),
        per(cpu)
    );
}

/// This process's user + system CPU time, from /proc (zero where there is none).
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line: the 12th and 13th after the name.
    let clock_ticks = 100; // USER_HZ on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / clock_ticks)
}
