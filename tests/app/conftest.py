"""Session fixtures for the app tests: one built model and one MLServer, shared by all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
import yaml

from app.model.build import BuildOptions, ModelArtifacts, build_model

T = TypeVar("T")

# Smaller than the default build (the same code path), so the session builds in seconds.
TEST_BUILD = BuildOptions(
    train_symbols=16, heldout_symbols=8, ticks_per_symbol=1500, epochs=4, qat_epochs=3
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async scenario on a fresh event loop (no pytest-asyncio needed)."""
    return asyncio.run(coro)


@pytest.fixture(scope="session", autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The platform state directory (XDG_STATE_HOME) of every server the tests start, in-process
    or not: embedded defaults (the spool) never write into the real home directory."""
    path = tmp_path_factory.mktemp("state")
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(path)
    yield path
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifacts:
    root = tmp_path_factory.mktemp("model")
    return build_model(root, TEST_BUILD, log=lambda _msg: None)


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory, model: ModelArtifacts) -> Iterator[Any]:
    """MLServer serving the fp32 model over KServe-v2 gRPC on a free loopback port."""
    from app.serving.launch import MLServerProcess

    server = MLServerProcess(
        tmp_path_factory.mktemp("mlserver"),
        model.path("fp32"),
        model_name=model.name,
        model_version=str(model.version),
    )
    server.start(timeout_s=90)
    yield server
    server.stop()


@pytest.fixture
def json_logs() -> Iterator[None]:
    """For tests that run a command configuring the JSON logs (`app.telemetry`): they point at
    the test's captured streams, so put structlog back to its defaults afterwards."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def model_path(model: ModelArtifacts) -> Path:
    return model.path("fp32")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real six-node Redis Cluster (3 masters, 3 replicas) on loopback, shared by the
    session; tests that kill nodes call ``ensure_healthy()`` when they are done."""
    from tests.app.redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.close()


class ServiceProcess:
    """``python -m app serve`` in its own process, as a user runs it: started on a free port
    with a YAML config, waited for until SERVING, then stopped (SIGTERM) or killed (SIGKILL).
    Its output goes to a file (``log``), so a test can read every line it printed."""

    def __init__(self, root: Path, config: dict[str, Any], model: ModelArtifacts) -> None:
        from app.serving.launch import free_port

        self.root = root
        self.port = free_port()
        self.config_path = root / f"serve-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.model = model
        self.log = root / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90, credentials: Any = None) -> ServiceProcess:
        """Launch and wait until SERVING (over TLS with ``credentials``)."""
        from app.serving.launch import REPO_ROOT

        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--config", str(self.config_path),
                 "--port", str(self.port), "--model-dir", str(self.model.root)],
                cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.wait_serving(timeout_s, credentials)
        return self

    def wait_serving(self, timeout_s: float = 90, credentials: Any = None) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        channel = (grpc.insecure_channel(self.target) if credentials is None
                   else grpc.secure_channel(self.target, credentials))  # fmt: skip
        with channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, self.output()
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"server did not become healthy: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then wait for the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
