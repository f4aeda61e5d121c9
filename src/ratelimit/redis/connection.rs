//! Where the shared store lives and how fpush talks to it: one Redis (the `redis` crate's
//! reconnecting `ConnectionManager`) or a Redis Cluster (its cluster client, which keeps the slot
//! map, follows `MOVED`/`ASK` and reconnects), behind one connection type.
//!
//! Both connect lazily, so building the modules (and `fpush --check`) needs no Redis.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

/// Retries the cluster client makes within one call (a `MOVED` after a failover, a node that
/// just went away); our own timeout bounds them all.
const CLUSTER_RETRIES: u32 = 2;
/// The cluster client's wait between two retries, in milliseconds.
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (10, 100);

/// The Redis fpush shares its decisions in (`redis.url` or `redis.cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisServers {
    /// One Redis server (`redis://…`, `rediss://…`).
    Single(String),
    /// Seed nodes of a Redis Cluster; the others are learnt from them.
    Cluster(Vec<String>),
}

/// A `redis.url` or `redis.cluster` the `redis` crate cannot use.
#[derive(Debug, thiserror::Error)]
pub enum RedisUrlError {
    #[error("redis.url: {0}")]
    Url(#[source] RedisError),
    #[error("redis.cluster[{index}]: {source}")]
    ClusterNode {
        index: usize,
        #[source]
        source: RedisError,
    },
    #[error("redis.cluster: {0}")]
    Cluster(#[source] RedisError),
}

/// A checked [`RedisServers`], not connected yet.
pub(crate) struct Endpoint {
    /// The one Redis, or each seed node on its own (to tell at start-up which of them answer).
    nodes: Vec<Client>,
    /// For a Redis Cluster: the client that follows its slot map.
    cluster: Option<ClusterClient>,
}

impl Endpoint {
    /// Checks every URL (scheme, host, port, user and password as the `redis` crate accepts
    /// them) without connecting.
    pub(crate) fn open(servers: &RedisServers, timeout: Duration) -> Result<Self, RedisUrlError> {
        match servers {
            RedisServers::Single(url) => Ok(Endpoint {
                nodes: vec![Client::open(url.as_str()).map_err(RedisUrlError::Url)?],
                cluster: None,
            }),
            RedisServers::Cluster(urls) => {
                let mut nodes = Vec::with_capacity(urls.len());
                for (index, url) in urls.iter().enumerate() {
                    nodes.push(
                        Client::open(url.as_str())
                            .map_err(|source| RedisUrlError::ClusterNode { index, source })?,
                    );
                }
                let client = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(CLUSTER_RETRY_WAIT_MS.0)
                    .max_retry_wait(CLUSTER_RETRY_WAIT_MS.1)
                    .build()
                    .map_err(RedisUrlError::Cluster)?;
                Ok(Endpoint {
                    nodes,
                    cluster: Some(client),
                })
            }
        }
    }

    /// A connection that connects on first use and reconnects by itself after a failure.
    pub(crate) fn connect_lazily(&self, timeout: Duration) -> Result<Connection, RedisError> {
        if let Some(cluster) = &self.cluster {
            let config = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            return Ok(Connection::Cluster(
                cluster.get_pending_async_connection_with_config(config),
            ));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Our own retry period paces reconnects; the manager's backoff would only keep a
            // connect pending past the timeout.
            .set_number_of_retries(0);
        let client = self.nodes.first().cloned().ok_or_else(|| {
            RedisError::from((
                ::redis::ErrorKind::InvalidClientConfig,
                "no Redis configured",
            ))
        })?;
        ConnectionManager::new_lazy_with_config(client, config).map(Connection::Single)
    }

    /// The servers to ask at start-up: the one Redis, or each seed node.
    pub(super) fn nodes(&self) -> &[Client] {
        &self.nodes
    }

    pub(super) fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Where it points, without credentials (URLs may carry a password).
    pub(super) fn describe(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(address).collect();
        if self.is_cluster() {
            format!("cluster {}", nodes.join(", "))
        } else {
            nodes.join(", ")
        }
    }
}

/// `host:port` of one server.
pub(super) fn address(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// The shared connection, cheap to clone.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}
