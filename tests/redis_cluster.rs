//! The Redis backend on a real Redis Cluster: each test starts six `redis-server` processes on
//! loopback (three masters, one replica each, no persistence, temp dirs, free ports, a node
//! timeout of one second so a failover takes seconds), joins them with `redis-cli --cluster
//! create`, and kills them when it ends, passing or not.
//!
//! Two real fpush daemons on the fake XMPP server share one module's ratelimit through
//! `redis.cluster`: a burst for one token, sent alternately to both, is decided exactly (one send
//! now, one queued, the rest refused) for tokens on every master, without a single local
//! fallback; after a master is killed and its replica promoted, every push is answered once
//! (the local decisions counted, `/health` still 200) and the burst is exact again.
//!
//! These tests need Debian's `redis-server` and `redis-cli` (7.0, with `cluster-port`).

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fpush_testkit::redis_server;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFIX: &str = "fpush-cluster:";
const MODULE: &str = "app";
/// The shared module's ratelimit window.
const WINDOW: Duration = Duration::from_secs(1);
/// Pushes per burst, alternately to the two instances.
const BURST: usize = 10;

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Six nodes joined into a cluster of three masters with one replica each.
struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<Node> = (0..6)
            .map(|n| start_node(&dir.path().join(format!("node-{n}"))))
            .collect();
        let cluster = RedisCluster { nodes, _dir: dir };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create (Debian's redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.wait_until_serving(Duration::from_secs(20));
        cluster
    }

    fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}/", node.port))
            .collect()
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|node| node.child.is_some())
    }

    /// Waits until every running node says `cluster_state:ok` and agrees on who serves every
    /// slot (three masters, each a running node).
    fn wait_until_serving(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let states_ok = self.running().all(|node| {
                query::<String>(node.port, &["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            });
            let maps: Vec<_> = self.running().map(|node| slot_map(node.port)).collect();
            let agreed = maps.windows(2).all(|pair| pair[0] == pair[1])
                && maps.first().is_some_and(|map| {
                    let masters: HashSet<u16> = map.iter().map(|(_, _, port)| *port).collect();
                    masters.len() == 3 && masters.iter().all(|port| self.is_running(*port))
                });
            if states_ok && agreed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not serve every slot within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn is_running(&self, port: u16) -> bool {
        self.running().any(|node| node.port == port)
    }

    /// The port of the master that serves `key`, asked of a running node.
    fn master_of(&self, key: &str) -> u16 {
        let port = self.running().next().expect("a running node").port;
        let slot: i64 = query(port, &["CLUSTER", "KEYSLOT", key]).expect("CLUSTER KEYSLOT");
        slot_map(port)
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, master)| master)
            .expect("a master for every slot")
    }

    fn masters(&self) -> Vec<u16> {
        let port = self.running().next().expect("a running node").port;
        let masters: HashSet<u16> = slot_map(port).into_iter().map(|(_, _, m)| m).collect();
        let mut masters: Vec<u16> = masters.into_iter().collect();
        masters.sort_unstable();
        masters
    }

    /// Keys under `pattern` held by the node on `port`.
    fn keys_on(&self, port: u16, pattern: &str) -> Vec<String> {
        query(port, &["KEYS", pattern]).unwrap_or_default()
    }

    fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|node| node.port == port) {
            stop(node);
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.iter_mut().for_each(stop);
    }
}

fn stop(node: &mut Node) {
    if let Some(mut child) = node.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Starts one cluster node in `dir` and returns once it accepts connections (on fresh ports
/// again when a port found free was taken before the node bound it).
fn start_node(dir: &std::path::Path) -> Node {
    std::fs::create_dir_all(dir).expect("node dir");
    for _ in 0..3 {
        let (port, bus_port) = (free_port(), free_port());
        let bus_port = bus_port.to_string();
        let cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus_port,
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            // A replica of a fresh cluster may have heard nothing from its master for longer
            // than the default validity allows, and would then refuse to take over.
            "--cluster-replica-validity-factor",
            "0",
        ];
        match redis_server::start_on(port, dir, &cluster) {
            Ok(child) => {
                return Node {
                    port,
                    child: Some(child),
                }
            }
            // The next attempt starts with a fresh cluster configuration.
            Err(_) => drop(std::fs::remove_file(dir.join("nodes.conf"))),
        }
    }
    panic!("a cluster node exited at start-up three times (its output is above)");
}

/// One command on the node at `port`; `None` when it does not answer.
fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut connection).ok()
}

/// `CLUSTER SLOTS` as (first slot, last slot, master's port), sorted; empty when not answered.
fn slot_map(port: u16) -> Vec<(i64, i64, u16)> {
    let ranges: Vec<Vec<redis::Value>> = query(port, &["CLUSTER", "SLOTS"]).unwrap_or_default();
    let mut map: Vec<(i64, i64, u16)> = ranges
        .iter()
        .filter_map(|range| {
            let start: i64 = redis::from_redis_value_ref(range.first()?).ok()?;
            let end: i64 = redis::from_redis_value_ref(range.get(1)?).ok()?;
            let master: Vec<redis::Value> = redis::from_redis_value_ref(range.get(2)?).ok()?;
            let port: u16 = redis::from_redis_value_ref(master.get(1)?).ok()?;
            Some((start, end, port))
        })
        .collect();
    map.sort_unstable();
    map
}

/// The documented name of a token's ratelimit key: `<prefix><module>:{<digest>}:rl`.
fn ratelimit_key(token: &str) -> String {
    let digest: String = Sha256::digest(token.as_bytes())[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{PREFIX}{MODULE}:{{{digest}}}:rl")
}

/// A fresh token (never used before in this test) whose keys live on `master`.
fn token_on(cluster: &RedisCluster, master: u16, tag: &str) -> String {
    (0..)
        .map(|n| format!("{tag}-{n:04}-{}", "5e0a3f7c9b1d2e4f".repeat(3)))
        .find(|token| cluster.master_of(&ratelimit_key(token)) == master)
        .expect("some token hashes onto every master")
}

/// One fpush daemon: its process, its component link and its metrics port.
struct Instance {
    daemon: Daemon,
    link: ComponentLink,
    metrics_port: u16,
}

/// Two fpush daemons on the fake XMPP server, sharing module `app` through the cluster.
async fn two_instances(cluster: &RedisCluster, server: &mut FakeXmppServer) -> [Instance; 2] {
    let first = start_instance(cluster, server).await;
    let second = start_instance(cluster, server).await;
    [first, second]
}

async fn start_instance(cluster: &RedisCluster, server: &mut FakeXmppServer) -> Instance {
    let nodes: Vec<String> = cluster.urls().iter().map(json_str).collect();
    let module = format!(
        r#"{{ "{MODULE}": {{ "type": "demo", "is_default_module": true,
              "ratelimit": {{ "enabled": true, "ratelimitTime": "{}ms", "backend": "redis" }} }} }}"#,
        WINDOW.as_millis()
    );
    let metrics_port = free_port();
    let extra = format!(
        r#""redis": {{ "cluster": [{}], "keyPrefix": "{PREFIX}" }},
           "metrics": {{ "listen": "127.0.0.1:{metrics_port}" }},"#,
        nodes.join(", ")
    );
    let daemon = Daemon::start(&settings(server, &module, &extra));
    let link = server
        .accept(WAIT)
        .await
        .expect("an fpush instance connects");
    Instance {
        daemon,
        link,
        metrics_port,
    }
}

/// What one push was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Answer {
    Result,
    Wait,
}

fn answer(reply: &Stanza) -> Answer {
    match (reply.kind(), reply.error_type.as_deref()) {
        (Some("result"), _) => Answer::Result,
        (Some("error"), Some("wait")) => Answer::Wait,
        _ => panic!("unexpected reply: {}", reply.raw),
    }
}

/// Sends `BURST` pushes for `token`, alternately to both instances, and returns how they were
/// answered (each id exactly once) and how long the last answer took.
async fn burst(instances: &mut [Instance; 2], token: &str, tag: &str) -> (Vec<Answer>, Duration) {
    let started = Instant::now();
    for n in 0..BURST {
        let iq = push_iq(&format!("{tag}-{n}"), token, None);
        instances[n % 2].link.send(&iq).await.expect("send push");
    }
    let mut answers = HashMap::new();
    for (i, instance) in instances.iter_mut().enumerate() {
        let sent_here = (0..BURST).filter(|n| n % 2 == i).count();
        for reply in instance
            .link
            .collect(sent_here, WAIT)
            .await
            .expect("replies")
        {
            let id = reply.attr("id").unwrap_or_default().to_owned();
            assert!(
                id.starts_with(tag),
                "a reply to another push: {}",
                reply.raw
            );
            assert!(
                answers.insert(id, answer(&reply)).is_none(),
                "answered twice"
            );
        }
    }
    (answers.into_values().collect(), started.elapsed())
}

/// The burst's answers must be exactly one send now, one queued (answered after the window)
/// and a `wait` for every other push.
fn assert_exact(answers: &[Answer], took: Duration, context: &str) {
    let results = answers.iter().filter(|a| **a == Answer::Result).count();
    assert_eq!(
        (results, answers.len() - results),
        (2, BURST - 2),
        "{context}: {answers:?}"
    );
    assert!(took >= WINDOW, "{context}: the queued push went out early");
}

/// GET `/metrics` from an instance.
async fn metrics(port: u16) -> String {
    http_get(port, "/metrics").await
}

/// GET `path` from an instance's metrics listener: the whole response, status line included.
async fn http_get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            socket.write_all(request.as_bytes()).await.expect("request");
            let mut response = String::new();
            socket
                .read_to_string(&mut response)
                .await
                .expect("response");
            return response;
        }
        assert!(Instant::now() < deadline, "metrics listener never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `fpush_redis_fallbacks_total` of an instance, all causes together.
async fn fallbacks(instance: &Instance) -> u64 {
    metrics(instance.metrics_port)
        .await
        .lines()
        .filter(|line| line.starts_with("fpush_redis_fallbacks_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// Fails with both daemons' logs.
fn logs(instances: &[Instance; 2]) -> String {
    instances
        .iter()
        .map(|instance| instance.daemon.log())
        .collect::<Vec<_>>()
        .join("\n--- next instance ---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn a_burst_across_two_instances_is_exact_for_tokens_on_every_master() {
    let cluster = RedisCluster::start();
    let mut server = FakeXmppServer::bind(SECRET).await.expect("bind");
    let mut instances = two_instances(&cluster, &mut server).await;

    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    for (m, master) in masters.iter().enumerate() {
        let token = token_on(&cluster, *master, &format!("m{m}"));
        let (answers, took) = burst(&mut instances, &token, &format!("b{m}")).await;
        assert_exact(
            &answers,
            took,
            &format!("master {master}\n{}", logs(&instances)),
        );
        let keys = cluster.keys_on(*master, &format!("{PREFIX}*"));
        assert_eq!(
            keys,
            [ratelimit_key(&token)],
            "the token's key is on its master"
        );
    }
    for instance in &instances {
        assert_eq!(fallbacks(instance).await, 0, "{}", logs(&instances));
    }
    let log = instances[0]
        .daemon
        .log_with("Redis Cluster: 6 of 6 seed nodes answered");
    assert!(
        log.contains("Redis Cluster: 6 of 6 seed nodes answered"),
        "start-up names the nodes that answered:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_master_fails_over_every_push_is_answered_once_and_the_burst_is_exact_again() {
    let mut cluster = RedisCluster::start();
    let mut server = FakeXmppServer::bind(SECRET).await.expect("bind");
    let mut instances = two_instances(&cluster, &mut server).await;
    let victim = cluster.masters()[0];
    let token = token_on(&cluster, victim, "before");
    let (answers, took) = burst(&mut instances, &token, "before").await;
    assert_exact(&answers, took, "before the failover");

    cluster.kill(victim);
    // Pushes while the cluster notices and promotes the replica: each answered once, at once.
    let mut n = 0;
    let started = Instant::now();
    let failover = std::thread::spawn(move || {
        cluster.wait_until_serving(Duration::from_secs(30));
        (cluster, started.elapsed())
    });
    while !failover.is_finished() {
        if n == 3 {
            let health = http_get(instances[0].metrics_port, "/health").await;
            assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        }
        let instance = &mut instances[n % 2];
        let reply =
            push_and_reply(&mut instance.link, &format!("during-{n}"), &format!("t{n}")).await;
        assert_eq!(answer(&reply), Answer::Result, "fail open: {}", reply.raw);
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cluster, took) = failover.join().expect("failover watcher");
    assert!(n > 0 && took < Duration::from_secs(30));
    let during = fallbacks(&instances[0]).await + fallbacks(&instances[1]).await;
    assert!(during > 0, "the failover was decided locally, and counted");
    let promoted = cluster.master_of(&ratelimit_key(&token));
    assert_ne!(promoted, victim, "a replica took over the slot");

    // The instances use Redis again after their retry period: fresh probes until a push is
    // decided by Redis on both (their fallback counts stand still).
    for i in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(15);
        for probe in 0.. {
            let before = fallbacks(&instances[i]).await;
            let id = format!("probe-{i}-{probe}");
            push_and_reply(&mut instances[i].link, &id, &id).await;
            if fallbacks(&instances[i]).await == before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Redis was not used again\n{}",
                logs(&instances)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let token = token_on(&cluster, promoted, "after");
    let (answers, took) = burst(&mut instances, &token, "after").await;
    assert_exact(
        &answers,
        took,
        &format!("after the failover\n{}", logs(&instances)),
    );
    for instance in &mut instances {
        let extra = instance.link.next_stanza(Duration::from_millis(300)).await;
        assert!(extra.is_err(), "no push is answered twice: {extra:?}");
    }
}

/// `fpush --check` on settings whose `redis` section is `redis`: (success, stdout + stderr).
fn check(redis: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("settings.json");
    let settings = format!(
        r#"{{
  "component": {{ "componentHostname": "{JID}", "componentKey": "{SECRET}",
                  "serverHostname": "127.0.0.1", "serverPort": 5347 }},
  "redis": {redis},
  "pushModules": {{ "{MODULE}": {{ "type": "demo", "is_default_module": true,
                                   "ratelimit": {{ "backend": "redis" }} }} }}
}}"#
    );
    std::fs::write(&path, settings).expect("write settings");
    let out = Command::new(env!("CARGO_BIN_EXE_fpush"))
        .arg("--check")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fpush --check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_passes_with_cluster_nodes_that_do_not_answer() {
    let nodes = format!(
        r#"{{ "cluster": ["redis://127.0.0.1:{}", "redis://user:n0t-for-logs@127.0.0.1:{}"] }}"#,
        free_port(),
        free_port()
    );
    let (ok, text) = check(&nodes);
    assert!(ok, "{text}");
    assert!(!text.contains("n0t-for-logs"), "{text}");
}

#[test]
fn check_names_the_cluster_node_that_is_not_a_redis_url() {
    let (ok, text) = check(r#"{ "cluster": ["redis://127.0.0.1:7000", "http://127.0.0.1:7001"] }"#);
    assert!(!ok);
    assert!(text.contains("redis.cluster[1]"), "{text}");
    assert!(text.contains("line 4"), "{text}");
}

#[test]
fn check_refuses_both_a_url_and_a_cluster_and_neither() {
    let (ok, text) =
        check(r#"{ "url": "redis://127.0.0.1:6379", "cluster": ["redis://127.0.0.1:7000"] }"#);
    assert!(!ok);
    assert!(
        text.contains("redis.cluster") && text.contains("not both"),
        "{text}"
    );
    let (ok, text) = check(r#"{ "keyPrefix": "fpush:" }"#);
    assert!(!ok);
    assert!(
        text.contains("redis.url") && text.contains("cluster"),
        "{text}"
    );
}
