"""Two fpush instances behind one ejabberd sharing their ratelimit through a real Redis Cluster
(`redis.cluster`, six nodes on loopback): a burst of pushes for one token is limited exactly for
tokens on every master, with no local fallback; when a master is killed, pushes during the
failover are answered (fail open) and none twice, and after it the burst is exact again.

Runs on ejabberd only (it accepts several connections for one component)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import Counter

import pytest

import xmpp_client
from fpush_daemon import Fpush
from processes import free_port
from redis_cluster import RedisCluster, ratelimit_key, token_on
from servers import Ejabberd
from test_cluster import MODULE, PASSWORD, WINDOW, Cluster, cluster_settings
from wiretap import Wiretap

PREFIX = "fpush-e2e-cluster:"
INSTANCES = 2
BURST = 10  # pushes per burst: one sent now, one queued, eight refused
ATTEMPTS = 3  # bursts per master until ejabberd's random balancing has used both instances


class Deployment(Cluster):
    """The instances of test_cluster's `Cluster`, deciding on a Redis Cluster, with their metrics."""

    def __init__(self, server: Ejabberd, wiretap: Wiretap, redis: RedisCluster, instances: list,
                 metrics_ports: list, apns) -> None:
        super().__init__(server, wiretap, instances, apns)
        self.redis = redis
        self.metrics_ports = metrics_ports

    def push(self, token: str, count: int) -> list:
        """`count` offline messages to a fresh user whose push token is `token`; returns the
        pushes once all are answered."""
        user = self.new_user("device")
        xmpp_client.enable_push(user, PASSWORD, self.server.c2s_port, self.server.component_jid, token, MODULE)
        xmpp_client.send_messages(self.sender, PASSWORD, self.server.c2s_port, user,
                                  [f"message {n}" for n in range(count)])
        pushes = self.wiretap.wait_for_replies(token, count, timeout=WINDOW + 30)
        assert len(pushes) == count, self.diagnostics()
        return pushes

    def fallbacks(self) -> list:
        """`fpush_redis_fallbacks_total` of each instance, all causes together."""
        totals = []
        for port in self.metrics_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            totals.append(sum(float(v) for v in re.findall(r"^fpush_redis_fallbacks_total\{[^}]*\} (\S+)$", text,
                                                              re.MULTILINE)))
        return totals

    def answered_twice(self) -> dict:
        """Push ids with more replies than pushes (servers may repeat ids, so counts compare)."""
        pushes = Counter(p.id for p in list(self.wiretap.pushes))
        replies = Counter(
            s.element.get("id") for s in list(self.wiretap.stanzas)
            if s.direction == "to_server" and s.name == "iq" and s.element.get("id") in pushes
        )
        return {push_id: n for push_id, n in replies.items() if n > pushes[push_id]}


@pytest.fixture(scope="module")
def deployment(fake_providers, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("redis-cluster")
    server = Ejabberd(workdir / "ejabberd")
    redis = RedisCluster(workdir / "redis")
    wiretap = None
    instances = []
    try:
        redis.start()
        server.start()
        wiretap = Wiretap(server.component_port).start()
        metrics_ports = []
        for n in range(INSTANCES):
            metrics_ports.append(free_port())
            settings = cluster_settings(server, wiretap, fake_providers["apns"], {"cluster": redis.urls,
                                                                                  "keyPrefix": PREFIX})
            settings["metrics"] = {"listen": f"127.0.0.1:{metrics_ports[-1]}"}
            (workdir / f"fpush-{n}").mkdir()
            instances.append(Fpush(workdir / f"fpush-{n}", settings).start())
            wiretap.wait_for_handshake(after=n)
        yield Deployment(server, wiretap, redis, instances, metrics_ports, fake_providers["apns"])
    finally:
        for fpush in instances:
            fpush.stop()
        if wiretap is not None:
            wiretap.stop()
        server.stop()
        redis.stop()


def exact_burst(deployment: Deployment, master: int, tag: str) -> str:
    """Bursts for fresh tokens on `master` until one reached both instances; each must be exact:
    one push sent at once, one when the window ends, every other refused with `wait`."""
    for attempt in range(1, ATTEMPTS + 1):
        token = token_on(deployment.redis, master, PREFIX, MODULE, f"{tag}-{attempt}")
        pushes = deployment.push(token, BURST)
        results = [p for p in pushes if p.reply.kind == "result"]
        refused = [p for p in pushes if p.reply.kind == "error"]
        assert (len(results), len(refused)) == (2, BURST - 2), deployment.diagnostics()
        for push in refused:
            assert (push.reply.error_type, push.reply.condition) == ("wait", "resource-constraint"), push.describe()
        assert len(deployment.apns.requests(token)) == 2, deployment.diagnostics()
        assert max(p.answered_at for p in results) - pushes[0].stanza.at >= WINDOW, deployment.diagnostics()
        if len({p.stanza.connection for p in pushes}) == INSTANCES:
            return token
    pytest.fail(f"ejabberd sent every burst to a single instance in {ATTEMPTS} attempts\n{deployment.diagnostics()}")


def test_a_burst_is_exact_for_tokens_on_every_master(deployment: Deployment):
    masters = deployment.redis.masters()
    assert len(masters) == 3
    for master in masters:
        token = exact_burst(deployment, master, f"m{master}")
        key = ratelimit_key(PREFIX, MODULE, token)
        assert key in deployment.redis.keys_on(master, f"{PREFIX}*"), f"{key} is not on master {master}"
    assert deployment.fallbacks() == [0] * INSTANCES, deployment.diagnostics()
    for fpush in deployment.instances:
        assert "Redis Cluster: 6 of 6 seed nodes answered" in fpush.process.log_text()


def test_after_a_master_fails_over_pushes_are_answered_once_and_the_burst_is_exact_again(deployment: Deployment):
    redis = deployment.redis
    victim = redis.masters()[0]
    token = token_on(redis, victim, PREFIX, MODULE, "victim")
    redis.kill(victim)

    # While the cluster notices and promotes the replica: every push answered, at once.
    during = 0
    started = time.monotonic()
    while True:
        pushes = deployment.push(f"ok-during-{during}-{time.monotonic_ns()}", 1)
        assert pushes[0].reply.kind == "result", pushes[0].describe()
        during += 1
        try:
            redis.wait_until_serving(timeout=0.5)
            break
        except AssertionError:
            assert time.monotonic() - started < 60, "no failover within 60s"
    promoted = redis.master_of(ratelimit_key(PREFIX, MODULE, token))
    assert promoted != victim

    # Each instance goes back to Redis with its first push after its retry period: push until a
    # burst reaching both instances leaves their fallback counts unchanged.
    deadline = time.monotonic() + 30
    while True:
        before = deployment.fallbacks()
        pushes = deployment.push(f"ok-warm-up-{time.monotonic_ns()}", 4)
        if deployment.fallbacks() == before and len({p.stanza.connection for p in pushes}) == INSTANCES:
            break
        assert time.monotonic() < deadline, f"Redis was not used again\n{deployment.diagnostics()}"
        time.sleep(1)

    exact_burst(deployment, promoted, "after")
    twice = deployment.answered_twice()
    assert not twice, f"answered twice: {json.dumps(twice)}\n{deployment.diagnostics()}"
