"""A real Redis Cluster for tests: six `redis-server` processes on loopback, 3 masters + 3 replicas.

Every node requires a password (the tests' stand-in for a Memorystore IAM token, which
is sent the same way: as the AUTH password). The cluster node timeout is short so a
killed master fails over within about two seconds. Node files live under one temporary
directory; a stopped node restarts from its own ``nodes.conf`` and rejoins the cluster.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
PASSWORD = "test-iam-token"  # what the fake IAM credential provider hands out
CLUSTER_BUS_OFFSET = 10_000  # Redis listens for the cluster bus on port + 10000


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports whose cluster-bus ports (port + 10000) are free as well."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        bus = port + CLUSTER_BUS_OFFSET
        if bus < 65_536 and port not in ports and _port_free(bus):
            ports.append(port)
    return ports


@dataclass
class RedisNode:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, node_timeout_ms: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-replica-validity-factor", "0",  # a replica may always take over
            "--dir", str(self.workdir),
            "--save", "",
            "--repl-diskless-sync-delay", "0",  # replicas sync at once, not after 5 s
            "--appendonly", "no",
            "--requirepass", PASSWORD,
            "--masterauth", PASSWORD,
            "--logfile", "redis.log",
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("PING", check=False) != "PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on {self.port} did not start:\n{log}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the node vanishes as a crashed pod would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cli(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), "-a", PASSWORD,
             "--no-auth-warning", *args],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"redis-cli {args} on {self.port}: {done.stderr or done.stdout}")
        return done.stdout.strip()

    def info(self, section: str) -> dict[str, str]:
        text = self.cli("CLUSTER", "INFO") if section == "cluster" else self.cli("INFO", section)
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, v in pairs}


@dataclass
class LocalRedisCluster:
    """Six nodes on loopback; `start()` creates the cluster, `close()` removes every trace."""

    root: Path
    node_timeout_ms: int = 1000
    nodes: list[RedisNode] = field(default_factory=list)

    def start(self) -> LocalRedisCluster:
        self.nodes = [RedisNode(p, self.root / str(p)) for p in free_ports(6)]
        for node in self.nodes:
            node.start(self.node_timeout_ms)
        done = subprocess.run(
            [REDIS_CLI, "-a", PASSWORD, "--no-auth-warning", "--cluster", "create",
             *(n.address for n in self.nodes), "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            self.close()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        self.wait_healthy()
        return self

    @property
    def startup_nodes(self) -> list[str]:
        return [n.address for n in self.nodes]

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> list[RedisNode]:
        """Running nodes that currently serve slots as masters."""
        live = [n for n in self.nodes if n.running]
        return [n for n in live if n.info("replication").get("role") == "master"]

    def master_of(self, key: str) -> RedisNode:
        """The node now serving ``key``'s slot."""
        live = next(n for n in self.nodes if n.running)
        slot = int(live.cli("CLUSTER", "KEYSLOT", key))
        for line in live.cli("CLUSTER", "NODES").splitlines():
            parts = line.split()
            flags = parts[2].split(",")
            if "master" not in flags or "fail" in flags:
                continue
            for span in parts[8:]:
                lo, _, hi = span.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return self.node(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
        raise LookupError(f"no master serves slot {slot} of {key!r}")

    def stop_all(self) -> None:
        for node in self.nodes:
            node.kill()

    def start_all(self) -> None:
        for node in self.nodes:
            if not node.running:
                node.start(self.node_timeout_ms)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every node is up and sees cluster_state:ok with all 16384 slots served."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                infos = [n.info("cluster") for n in self.nodes if n.running]
                masters = self.masters()
            except (RuntimeError, subprocess.TimeoutExpired):
                infos, masters = [], []
            ok = len(infos) == len(self.nodes) and all(
                i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384"
                and i.get("cluster_known_nodes") == str(len(self.nodes))
                for i in infos
            )  # fmt: skip
            if ok and len(masters) == 3 and self._replicas_synced():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster not healthy after {timeout} s: {infos}")
            time.sleep(0.1)

    def _replicas_synced(self) -> bool:
        replicas = [n.info("replication") for n in self.nodes if n.running]
        replicas = [r for r in replicas if r.get("role") == "slave"]
        return len(replicas) == 3 and all(r.get("master_link_status") == "up" for r in replicas)

    def ensure_healthy(self) -> None:
        """Restart whatever a test killed and wait for the cluster to settle."""
        self.start_all()
        self.wait_healthy()

    def flush(self) -> None:
        for node in self.masters():
            node.cli("FLUSHALL")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_all()
        shutil.rmtree(self.root, ignore_errors=True)
