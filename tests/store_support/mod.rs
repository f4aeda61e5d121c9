//! What the store tests share: a `redis-server` of their own on a free loopback port (killed
//! when dropped), the backends to run the conformance suite on, and registrations to store.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fpush::config::RedisSettings;
use fpush::store::{
    RedisRegistrations, Registration, RegistrationKey, RegistrationStore, SqliteStore, StoreLimits,
};

/// A `redis-server` without persistence on a free loopback port.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = fpush_testkit::redis_server::start(dir.path(), extra);
        RedisServer {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            url: self.url(),
            cluster: Vec::new(),
            key_prefix: "fpush-test:".into(),
        }
    }

    /// A plain client connection, to look at (or damage) what the store wrote.
    pub fn connection(&self) -> ::redis::Connection {
        let client = ::redis::Client::open(self.url()).unwrap();
        client.get_connection().unwrap()
    }
}

/// A `redis-server` of its own and a registration store on it with `limits`.
pub fn redis_store(limits: StoreLimits) -> (RedisServer, RedisRegistrations) {
    let server = RedisServer::start();
    let store = RedisRegistrations::open(&server.settings(), limits).unwrap();
    (server, store)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three masters without replicas joined into a Redis Cluster.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_with(&["--cluster-enabled", "yes"]))
            .collect();
        let addresses = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port));
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create (Debian's redis-tools)");
        assert!(output.status.success(), "redis-cli --cluster create failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            let client = redis::Client::open(node.url()).unwrap();
            let mut connection = client.get_connection().unwrap();
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut connection)
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the cluster did not come up"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            url: String::new(),
            cluster: self.nodes.iter().map(RedisServer::url).collect(),
            key_prefix: "fpush-test:".into(),
        }
    }
}

/// Where a conformance test's registrations live; `open` may be called more than once (a
/// restart, or a second instance).
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Redis(RedisServer),
    RedisCluster(RedisCluster),
}

impl Backend {
    pub fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    pub fn redis() -> Self {
        Backend::Redis(RedisServer::start())
    }

    pub fn redis_cluster() -> Self {
        Backend::RedisCluster(RedisCluster::start())
    }

    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match self {
            Backend::Sqlite(dir) => Some(dir.path().join("registrations.sqlite3")),
            Backend::Redis(_) | Backend::RedisCluster(_) => None,
        }
    }

    /// Removes the store's note of when it was made, as a store an older fpush used has none.
    pub fn forget_when_made(&self) {
        let forget = |server: &RedisServer| {
            // A cluster node that does not hold the key answers MOVED: nothing to forget there.
            let _: Result<(), _> = ::redis::cmd("DEL")
                .arg("fpush-test:created")
                .query(&mut server.connection());
        };
        match self {
            Backend::Sqlite(_) => {
                let path = self.sqlite_path().unwrap();
                let connection = rusqlite::Connection::open(path).unwrap();
                connection.execute("DELETE FROM store_created", []).unwrap();
            }
            Backend::Redis(server) => forget(server),
            Backend::RedisCluster(cluster) => cluster.nodes.iter().for_each(forget),
        }
    }

    pub fn open(&self, limits: StoreLimits) -> Arc<dyn RegistrationStore> {
        match self {
            Backend::Sqlite(_) => {
                let path = self.sqlite_path().unwrap();
                Arc::new(SqliteStore::open(&path, limits).unwrap())
            }
            Backend::Redis(server) => {
                Arc::new(RedisRegistrations::open(&server.settings(), limits).unwrap())
            }
            Backend::RedisCluster(cluster) => {
                Arc::new(RedisRegistrations::open(&cluster.settings(), limits).unwrap())
            }
        }
    }
}

/// A registration of `device` for `account` in the account's domain.
pub fn registration(service: &str, device: &str, account: &str) -> Registration {
    let domain = account
        .split_once('@')
        .map_or(account, |(_, domain)| domain);
    Registration {
        key: RegistrationKey {
            service: service.into(),
            device: device.into(),
            channel: String::new(),
        },
        account: account.into(),
        domain: domain.into(),
        token: format!("token-of-{device}"),
        second_token: None,
        node: String::new(),
        secret: String::new(),
        last_used: SystemTime::UNIX_EPOCH,
    }
}

/// Registers `device` for `account` (see [`registration`]) and returns its credentials; a
/// failure fails the test.
pub async fn registered(
    store: &dyn RegistrationStore,
    service: &str,
    device: &str,
    account: &str,
) -> fpush::store::Credentials {
    let wanted = registration(service, device, account);
    match store.register(wanted).await {
        Ok(credentials) => credentials,
        Err(error) => panic!("registering {device} for {account}: {error:?}"),
    }
}
