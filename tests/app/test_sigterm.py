"""SIGTERM under load, as a spot preemption delivers it: ``python -m app serve`` stops taking
new work, finishes the calls in flight, flushes its publish and warehouse buffers and exits
0 within the grace period; every acknowledged tick and signal is delivered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.model.build import ModelArtifacts
from app.publish import read_published
from app.serving.launch import REPO_ROOT, free_port

GRACE_S = 5.0
CLIENTS = 4
SYMBOLS_PER_CLIENT = 10


def wait_serving(port: int, proc: subprocess.Popen[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                request = health_pb2.HealthCheckRequest()
                if stub.Check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError("server did not become healthy")


class Client(threading.Thread):
    """Sends tick batches back to back until the server refuses (or a bound is reached),
    keeping every acknowledgement."""

    def __init__(self, port: int, index: int, pb2: Any, pb2_grpc: Any):
        super().__init__(daemon=True)
        self.port, self.index, self.pb2, self.pb2_grpc = port, index, pb2, pb2_grpc
        self.acks: list[tuple[Any, Any]] = []  # (request, ack)
        self.refused: list[tuple[Any, str]] = []  # (request, status)
        self.failures: list[str] = []

    def run(self) -> None:
        pb2 = self.pb2
        symbols = np.arange(SYMBOLS_PER_CLIENT, dtype=np.int32) + self.index * SYMBOLS_PER_CLIENT
        rng = np.random.default_rng(self.index)
        price = 50 + rng.random(symbols.size) * 50
        ts = time.time_ns()
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = self.pb2_grpc.SignalServiceStub(channel)
            for batch_id in range(1, 5000):  # bounded: at most ~50 s of load
                price = np.round(price * np.exp(rng.normal(0, 2e-3, symbols.size)), 2)
                stamps = ts + np.arange(symbols.size, dtype=np.int64) * 1000
                ts = int(stamps[-1]) + 1000
                request = pb2.TickBatch(
                    symbol=symbols.tolist(),
                    price=price.tolist(),
                    size=rng.integers(1, 300, symbols.size).astype(float).tolist(),
                    ts_ns=stamps.tolist(),
                    batch_id=batch_id,
                )
                try:
                    self.acks.append((request, stub.IngestTicks(request, timeout=10)))
                except grpc.RpcError as exc:
                    code = exc.code()  # type: ignore[attr-defined]
                    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                        # The server is going away: no ack, so a client retries elsewhere.
                        self.refused.append((request, code.name))
                        return
                    self.failures.append(f"{code.name}: {exc.details()}")  # type: ignore[attr-defined]
                    return
                time.sleep(0.002)


@pytest.mark.slow
def test_sigterm_under_load_drains_flushes_and_loses_nothing(
    model: ModelArtifacts, tmp_path: Path
) -> None:
    from app.server import pb2, pb2_grpc

    published = tmp_path / "published"
    warehouse = tmp_path / "warehouse.duckdb"
    config = tmp_path / "serve.yaml"
    # Buffers that never flush on their own during the test: whatever is delivered, the
    # shutdown delivered.
    config.write_text(
        yaml.safe_dump(
            {
                "features": {"n_symbols": CLIENTS * SYMBOLS_PER_CLIENT},
                "model": {"build_if_missing": False},
                "publish": {
                    "local_dir": str(published),
                    "max_latency_ms": 60_000,
                    "max_messages": 100_000,
                },
                "warehouse": {
                    "duckdb_path": str(warehouse),
                    "flush_interval_s": 3_600,
                    "batch_rows": 500_000,
                },
                "telemetry": {"metrics_port": None},
            }
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "app", "serve", "--config", str(config), "--port", str(port),
            "--model-dir", str(model.root), "--grace", str(GRACE_S),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    clients: list[Client] = []
    try:
        wait_serving(port, proc)
        clients = [Client(port, i, pb2, pb2_grpc) for i in range(CLIENTS)]
        for c in clients:
            c.start()
        deadline = time.monotonic() + 30
        while sum(len(c.acks) for c in clients) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Under load and still buffered: nothing has reached the publish sink yet.
        frames = list(published.glob("*.sgb")) if published.exists() else []
        assert all(f.stat().st_size == 0 for f in frames), frames
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=GRACE_S + 30)
        exited_after = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for c in clients:
            c.join(timeout=15)

    assert proc.returncode == 0, out
    assert "shutting down" in out and "stopped" in out, out
    assert exited_after < GRACE_S + 2.0, (exited_after, out)
    failures = [f for c in clients for f in c.failures]
    assert failures == [], failures[:5]
    # Every client was under way when the signal came, then refused: UNAVAILABLE, or
    # CANCELLED for a call racing the shutdown (it then took no effect, checked below).
    assert all(c.acks for c in clients) and all(c.refused for c in clients)

    acks = [(request, ack) for c in clients for request, ack in c.acks]
    accepted = sum(ack.accepted for _, ack in acks)
    signals = sum(ack.signals for _, ack in acks)
    assert accepted >= 200 * SYMBOLS_PER_CLIENT and signals > 0
    acked_ticks = {
        (symbol, ts)
        for request, _ in acks
        for symbol, ts in zip(request.symbol, request.ts_ns, strict=True)
    }
    assert len(acked_ticks) == accepted  # every tick of every acked batch was accepted
    published_ticks: list[tuple[int, int]] = []
    for _, entry in read_published(published, "ticks-batches"):
        published_ticks += zip(entry.symbol, entry.ts_ns, strict=True)
    signals_published = [
        (symbol, ts)
        for _, entry in read_published(published, "signals-batches")
        for symbol, ts in zip(entry.symbol, entry.ts_ns, strict=True)
    ]
    # Nothing acknowledged is lost, nothing is published twice; a call refused during the
    # shutdown either took effect whole or not at all.
    assert acked_ticks <= set(published_ticks)
    assert len(published_ticks) == len(set(published_ticks))
    unacked = set(published_ticks) - acked_ticks
    refused_ticks = {
        (symbol, ts)
        for c in clients
        for request, _ in c.refused
        for symbol, ts in zip(request.symbol, request.ts_ns, strict=True)
    }
    assert unacked <= refused_ticks
    assert len(signals_published) == len(set(signals_published)) >= signals
    with duckdb.connect(str(warehouse), read_only=True) as con:
        (ticks_rows,) = con.execute("SELECT count(*) FROM ticks").fetchone() or (0,)
        (signal_rows,) = con.execute("SELECT count(*) FROM signals").fetchone() or (0,)
    assert ticks_rows == len(published_ticks)
    assert signal_rows == len(signals_published)
