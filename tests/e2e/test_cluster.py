"""Two fpush instances behind one ejabberd (which accepts several connections for one component
and spreads the pushes among them), sharing their ratelimit through one Redis: a burst of pushes
for one token reaches APNS exactly as often as one instance alone would let it.

Prosody accepts one connection per component, so this runs on ejabberd only.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import xmpp_client
from fpush_daemon import Fpush
from processes import Process, free_port, port_accepts, wait_for
from servers import Ejabberd, installed, link_settings
from wiretap import Wiretap

PASSWORD = "cluster-password"
WINDOW = 2.0  # seconds: the ratelimit window of the shared module
MODULE = "apns-cluster"
INSTANCES = 2
BURST = 8  # messages, so pushes, per attempt
ATTEMPTS = 3  # bursts tried until ejabberd's random balancing has used both instances


class RedisServer:
    """A throw-away redis-server on a free loopback port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/"

    def start(self) -> "RedisServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            "redis-server",
            [
                installed("redis-server"),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
            ],
            self.workdir / "redis.log",
        ).start()
        wait_for(
            f"redis-server to listen on {self.port}",
            lambda: port_accepts(self.port),
            timeout=20,
            on_timeout=self.process.log_tail,
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)


def cluster_settings(server: Ejabberd, wiretap: Wiretap, apns, redis: dict) -> dict:
    """Settings of one instance; `redis` is the `redis` section (`url` or `cluster`)."""
    return {
        **link_settings(server, wiretap.port),
        "redis": redis,
        "pushModules": {
            MODULE: {
                "type": "apple",
                "is_default_module": True,
                "apns": {
                    "certFilePath": apns.info["p12"],
                    "certPassword": apns.info["p12Password"],
                    "topic": apns.info["topic"],
                    "endpoint": apns.endpoint,
                    "caFilePath": apns.info["ca"],
                    "requestTimeout": "2s",
                },
                "ratelimit": {
                    "enabled": True,
                    "ratelimitTime": f"{WINDOW:g}s",
                    "ratelimitCleanupInterval": "60s",
                    "backend": "redis",
                },
            }
        },
    }


class Cluster:
    def __init__(self, server: Ejabberd, wiretap: Wiretap, instances: list, apns) -> None:
        self.server = server
        self.wiretap = wiretap
        self.instances = instances
        self.apns = apns
        self._numbers = itertools.count(1)
        self.sender = self.new_user("sender")

    def new_user(self, prefix: str) -> str:
        name = f"{prefix}{next(self._numbers)}"
        self.server.register(name, PASSWORD)
        return f"{name}@{self.server.domain}"

    def diagnostics(self) -> str:
        return "\n".join(
            [self.wiretap.summary(30)] + [fpush.log_tail() for fpush in self.instances] + [self.server.log_tail(30)]
        )


@pytest.fixture(scope="module")
def cluster(fake_providers, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster")
    server = Ejabberd(workdir / "ejabberd")
    redis = RedisServer(workdir / "redis")
    wiretap = None
    instances = []
    try:
        redis.start()
        server.start()
        wiretap = Wiretap(server.component_port).start()
        settings = cluster_settings(server, wiretap, fake_providers["apns"], {"url": redis.url, "keyPrefix": "fpush-e2e:"})
        for n in range(INSTANCES):
            (workdir / f"fpush-{n}").mkdir()
            instances.append(Fpush(workdir / f"fpush-{n}", settings).start())
            wiretap.wait_for_handshake(after=n)
        yield Cluster(server, wiretap, instances, fake_providers["apns"])
    finally:
        for fpush in instances:
            fpush.stop()
        if wiretap is not None:
            wiretap.stop()
        server.stop()
        redis.stop()


def test_ejabberd_keeps_one_component_connection_per_instance(cluster: Cluster):
    for fpush in cluster.instances:
        fpush.assert_running()
    assert cluster.wiretap.handshakes() == INSTANCES, cluster.diagnostics()


def test_a_burst_for_one_token_is_limited_across_the_cluster(cluster: Cluster):
    """Each attempt: one send now, one at the end of the window, the rest refused, however
    ejabberd spread the pushes. An attempt whose pushes all went to one instance proves nothing
    about sharing, so another burst (with a fresh token) is tried, up to ATTEMPTS in all."""
    for attempt in range(1, ATTEMPTS + 1):
        user = cluster.new_user("device")
        token = f"ok-cluster-{attempt}-{cluster.server.dist_port}"
        xmpp_client.enable_push(
            user, PASSWORD, cluster.server.c2s_port, cluster.server.component_jid, token, MODULE
        )
        xmpp_client.send_messages(
            cluster.sender, PASSWORD, cluster.server.c2s_port, user, [f"burst {n}" for n in range(BURST)]
        )
        pushes = cluster.wiretap.wait_for_replies(token, BURST, timeout=WINDOW + 30)
        assert len(pushes) == BURST, cluster.diagnostics()

        requests = cluster.apns.requests(token)
        assert len(requests) == 2, f"{requests}\n{cluster.diagnostics()}"
        results = [p for p in pushes if p.reply.kind == "result"]
        refused = [p for p in pushes if p.reply.kind == "error"]
        assert len(results) == 2, cluster.diagnostics()
        for push in refused:
            assert (push.reply.error_type, push.reply.condition) == ("wait", "resource-constraint"), push.describe()
        # The queued push goes out (and is answered) only when the first one's window is over.
        queued_answered = max(p.answered_at for p in results)
        assert queued_answered - pushes[0].stanza.at >= WINDOW, cluster.diagnostics()

        if len({p.stanza.connection for p in pushes}) == INSTANCES:
            return
    pytest.fail(f"ejabberd sent every burst to a single instance in {ATTEMPTS} attempts\n{cluster.diagnostics()}")
