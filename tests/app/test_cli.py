"""``python -m app serve`` / ``replay`` as a user runs them, and configuration errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.config import ConfigError, load_config
from app.model.build import ModelArtifacts
from app.replay import replay
from app.serving.launch import REPO_ROOT, free_port
from tests.app.conftest import run


def _wait_serving(port: int, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError("server did not become healthy")


@pytest.mark.slow
def test_serve_replay_and_sigterm(model: ModelArtifacts, capsys: pytest.CaptureFixture) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--model-dir", str(model.root)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_serving(port, proc)
        report = run(replay(f"127.0.0.1:{port}", rate=2000, seconds=1.5, batch_size=50,
                            n_symbols=40))  # fmt: skip
        assert report.batches == 60 and report.ticks == 3000
        assert report.accepted == 3000 and report.rejected == 0 and report.signals > 0
        assert report.latencies_us.size == 60 and report.percentile_us(50) > 0
        text = report.render()
        assert "p50" in text and "p95" in text and "p99" in text and "ticks/s" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"listening on 127.0.0.1:{port}" in out and "shutting down" in out and "stopped" in out


def test_replay_without_a_server_says_so() -> None:
    with pytest.raises(ConnectionError, match=r"no server at 127\.0\.0\.1:.*python -m app serve"):
        run(replay(f"127.0.0.1:{free_port()}", rate=10, seconds=1, connect_timeout_s=0.5))


def test_defaults_are_the_embedded_setup() -> None:
    config = load_config()
    assert (config.server.host, config.server.port) == ("127.0.0.1", 50051)
    assert config.kserve.url is None and config.model.variant == "fp32"
    assert config.features.n_symbols == 1000 and config.batcher.max_queue_delay_us == 500


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("server:\n  port: 6000\nbatcher:\n  max_batch_size: 32\n")
    config = load_config(path, {"server.host": "0.0.0.0", "kserve.url": "triton.svc:8001"})
    assert (config.server.host, config.server.port) == ("0.0.0.0", 6000)
    assert config.batcher.max_batch_size == 32 and config.kserve.url == "triton.svc:8001"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("server:\n  port: 70000\n", "server.port: Input should be less than or equal to 65535 (got 70000)"),
        ("batcher:\n  max_batch_size: 0\n", "batcher.max_batch_size: Input should be greater than or equal to 1 (got 0)"),
        ("model:\n  variant: int3\n", "model.variant: Input should be 'fp32', 'int8' or 'int4' (got 'int3')"),
        ("features:\n  ema_fast: 30\n", "ema_fast = 30, ema_slow = 26: ema_fast must be smaller"),
        ("server:\n  prot: 1\n", "server.prot: unknown key, did you mean port? (got 1); allowed: host, port"),
        ("batcher:\n  max_queue_rows: 8\n  max_batch_size: 16\n", "max_queue_rows = 8: must be >= max_batch_size"),
        ("kserve:\n  url: 'not a url'\n", "kserve.url: String should match pattern"),
    ],
)  # fmt: skip
def test_config_errors_name_key_value_and_what_is_allowed(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_serve_cli_reports_config_errors(capsys: pytest.CaptureFixture) -> None:
    from app.__main__ import main

    assert main(["serve", "--port", "99999"]) == 2
    assert (
        "server.port: Input should be less than or equal to 65535 (got 99999)"
        in capsys.readouterr().err
    )
