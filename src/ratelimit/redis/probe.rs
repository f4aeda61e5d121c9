//! The start-up look at the configured Redis: which nodes answer, and for a cluster whether it
//! says it is serving, logged once. Only informative: decisions never wait for it, and a node
//! that does not answer now is used as soon as it does.

use std::time::Duration;

use ::redis::{AsyncConnectionConfig, Client, RedisError};

use super::connection::{address, Endpoint};

/// What one node said.
enum Answer {
    /// It answered; for a cluster node, its `cluster_state`.
    Up(Option<String>),
    Down(RedisError),
}

/// Asks every configured node (the one Redis, or each seed node) and logs what they answered.
pub(super) async fn log_nodes(endpoint: &Endpoint, timeout: Duration) {
    let cluster = endpoint.is_cluster();
    let mut answered = 0;
    for node in endpoint.nodes() {
        match ask(node, cluster, timeout).await {
            Answer::Up(state) => {
                answered += 1;
                let state =
                    state.map_or_else(String::new, |state| format!(" (cluster_state:{state})"));
                log::info!("Redis node {} answered{state}", address(node));
            }
            Answer::Down(error) => {
                log::warn!("Redis node {} did not answer: {error}", address(node));
            }
        }
    }
    if cluster {
        log::info!(
            "Redis Cluster: {answered} of {} seed nodes answered",
            endpoint.nodes().len()
        );
    }
}

/// One node: `PING`, and `CLUSTER INFO` for a cluster node, within `timeout` each.
async fn ask(node: &Client, cluster: bool, timeout: Duration) -> Answer {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let result = async {
        let mut connection = node
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        ::redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        if !cluster {
            return Ok(None);
        }
        let info: String = ::redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut connection)
            .await?;
        Ok(Some(cluster_state(&info)))
    }
    .await;
    match result {
        Ok(state) => Answer::Up(state),
        Err(error) => Answer::Down(error),
    }
}

/// The `cluster_state` line of a `CLUSTER INFO` answer.
fn cluster_state(info: &str) -> String {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("cluster_state:"))
        .unwrap_or("unknown")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_state_is_read_from_cluster_info() {
        let info = "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(cluster_state(info), "ok");
        assert_eq!(cluster_state("garbage"), "unknown");
    }
}
