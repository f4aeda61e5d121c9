"""A throw-away Redis Cluster on loopback: six redis-server processes (three masters, one replica
each) in temp dirs on free ports, without persistence, joined by `redis-cli --cluster create`.
A node timeout of one second makes a failover take seconds. `stop()` ends every node."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from processes import Process, free_port, port_accepts, run, wait_for
from servers import installed

NODES = 6


class RedisCluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = [free_port() for _ in range(NODES)]
        self.processes: Dict[int, Process] = {}

    @property
    def urls(self) -> List[str]:
        return [f"redis://127.0.0.1:{port}" for port in self.ports]

    def start(self) -> "RedisCluster":
        for port in self.ports:
            node_dir = self.workdir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            process = Process(
                f"redis-server {port}",
                [
                    installed("redis-server"),
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-port", str(free_port()),
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "1000",
                    # A replica of a fresh cluster may not have heard from its master for
                    # longer than the default validity allows, and would refuse to take over.
                    "--cluster-replica-validity-factor", "0",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(node_dir),
                ],
                node_dir / "redis.log",
            ).start()
            self.processes[port] = process
            wait_for(f"redis-server to listen on {port}", lambda p=port: port_accepts(p), timeout=20,
                     on_timeout=process.log_tail)
        run(
            [installed("redis-cli"), "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", "1", "--cluster-yes"],
            "redis-cli --cluster create",
        )
        self.wait_until_serving()
        return self

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop(grace=5)

    def running(self) -> List[int]:
        return [port for port, process in self.processes.items() if process.running()]

    def cli(self, port: int, *args: str) -> Optional[str]:
        """One redis-cli command on the node at `port`; None when it does not answer."""
        try:
            done = subprocess.run([installed("redis-cli"), "-p", str(port), *args], capture_output=True,
                                  text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return None
        return done.stdout if done.returncode == 0 and done.stdout.strip() else None

    def slot_map(self, port: int) -> List[Tuple[int, int, int]]:
        """(first slot, last slot, master port) per range, from `CLUSTER NODES` on `port`."""
        out = self.cli(port, "CLUSTER", "NODES") or ""
        ranges = []
        for line in out.splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2].split(",") or "fail" in fields[2]:
                continue
            master = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated
                first, _, last = part.partition("-")
                ranges.append((int(first), int(last or first), master))
        return sorted(ranges)

    def masters(self) -> List[int]:
        return sorted({master for _, _, master in self.slot_map(self.running()[0])})

    def master_of(self, key: str) -> int:
        port = self.running()[0]
        slot = int((self.cli(port, "CLUSTER", "KEYSLOT", key) or "-1").strip())
        for first, last, master in self.slot_map(port):
            if first <= slot <= last:
                return master
        raise AssertionError(f"no master serves slot {slot}")

    def wait_until_serving(self, timeout: float = 30) -> None:
        """Until every running node says cluster_state:ok and all agree on three running masters
        covering every slot."""

        def serving() -> bool:
            running = self.running()
            if not all("cluster_state:ok" in (self.cli(p, "CLUSTER", "INFO") or "") for p in running):
                return False
            maps = [self.slot_map(p) for p in running]
            masters = {master for _, _, master in maps[0]}
            covered = sum(last - first + 1 for first, last, _ in maps[0]) == 16384
            return all(m == maps[0] for m in maps) and len(masters) == 3 and masters <= set(running) and covered

        wait_for("the Redis Cluster to serve every slot", serving, timeout=timeout)

    def kill(self, port: int) -> None:
        """SIGKILL, as a crash."""
        self.processes[port].stop(grace=0.1, signum=9)

    def keys_on(self, port: int, pattern: str) -> List[str]:
        return (self.cli(port, "KEYS", pattern) or "").split()


def ratelimit_key(prefix: str, module: str, token: str) -> str:
    """The documented key of a token's ratelimit entry: `<prefix><module>:{<digest>}:rl`."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    return f"{prefix}{module}:{{{digest}}}:rl"


def token_on(cluster: RedisCluster, master: int, prefix: str, module: str, tag: str) -> str:
    """A fresh token whose keys live on `master`."""
    for n in range(10_000):
        token = f"ok-{tag}-{n}-{time.monotonic_ns()}"
        if cluster.master_of(ratelimit_key(prefix, module, token)) == master:
            return token
    raise AssertionError(f"no token found for master {master}")
