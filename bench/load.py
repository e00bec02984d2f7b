"""Load on the running service over loopback: N concurrent clients for T seconds.

Each client owns its own symbols (so its ticks stay in time order), and loops: one
``IngestTicks`` batch, then one ``GetSignal`` of one of its symbols. Reported per
concurrency level: requests per second, ticks per second, p50/p95/p99 latency of each
RPC, and errors by status code.

By default the bench brings up the whole loop itself: a built model, MLServer serving
it over KServe-v2 gRPC, a six-node Redis Cluster, and the service (``python -m app
serve`` in its own process) with L2 on that cluster and inference through MLServer. The
baseline, measured in the same run at the same concurrency, is the embedded service
(in-process model, L1 only): the ratio says what the real data path costs.

    .venv/bin/python bench/load.py [--quick] [--concurrency 1,4,16] [--seconds 5]
    .venv/bin/python bench/load.py --target 127.0.0.1:50051   # drive a running server only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.proto import load as load_stubs  # noqa: E402

pb2, pb2_grpc = load_stubs()

MAX_CLIENTS = 256
MAX_SECONDS = 600
N_SYMBOLS = 1000
SYMBOLS_PER_CLIENT = 5
TICKS_PER_SYMBOL = 4  # per batch: 20 ticks a batch


@dataclass
class LoadReport:
    concurrency: int
    seconds: float
    ingest_ms: list[float] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    ticks: int = 0

    @property
    def requests(self) -> int:
        return len(self.ingest_ms) + len(self.get_ms)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentiles(self, values: list[float]) -> tuple[float, float, float]:
        if not values:
            return (float("nan"),) * 3  # type: ignore[return-value]
        p = np.percentile(values, [50, 95, 99])
        return float(p[0]), float(p[1]), float(p[2])

    def render(self) -> str:
        i50, i95, i99 = self.percentiles(self.ingest_ms)
        g50, g95, g99 = self.percentiles(self.get_ms)
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"  c={self.concurrency:<3} {self.rps:>8.0f} req/s {self.ticks / self.seconds:>9.0f} "
            f"ticks/s | IngestTicks p50/p95/p99 {i50:.2f}/{i95:.2f}/{i99:.2f} ms | GetSignal "
            f"{g50:.2f}/{g95:.2f}/{g99:.2f} ms | errors: {errors}"
        )


async def _client(
    target: str, index: int, concurrency: int, deadline: float, report: LoadReport,
    start_ns: int, warm: bool,
) -> None:  # fmt: skip
    symbols = np.array(
        [(index + k * concurrency) % N_SYMBOLS for k in range(SYMBOLS_PER_CLIENT)], np.int32
    )
    rng = np.random.default_rng(index)
    price = 100.0 + rng.random(SYMBOLS_PER_CLIENT) * 50
    ts = start_ns + index
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb2_grpc.SignalServiceStub(channel)
        batch_id = 0
        while time.monotonic() < deadline:
            n = SYMBOLS_PER_CLIENT * TICKS_PER_SYMBOL
            sym = np.tile(symbols, TICKS_PER_SYMBOL)
            price = np.round(price * np.exp(rng.normal(0, 1e-3, SYMBOLS_PER_CLIENT)), 2)
            prices = (
                np.tile(price, TICKS_PER_SYMBOL)
                + np.repeat(np.arange(TICKS_PER_SYMBOL), SYMBOLS_PER_CLIENT) * 0.01
            )
            stamps = ts + np.arange(n, dtype=np.int64) * 1000
            ts = int(stamps[-1]) + 1000
            batch_id += 1
            request = pb2.TickBatch(symbol=sym.tolist(), price=prices.tolist(),
                                    size=rng.integers(1, 500, n).astype(float).tolist(),
                                    ts_ns=stamps.tolist(), batch_id=batch_id)  # fmt: skip
            t0 = time.perf_counter()
            try:
                await stub.IngestTicks(request, timeout=10)
                if warm:
                    report.ingest_ms.append((time.perf_counter() - t0) * 1e3)
                    report.ticks += n
            except grpc.aio.AioRpcError as exc:
                if warm:
                    report.errors[f"IngestTicks {exc.code().name}"] += 1
            t0 = time.perf_counter()
            try:
                await stub.GetSignal(pb2.SignalRequest(symbol=int(symbols[batch_id % len(symbols)])),
                                     timeout=10)  # fmt: skip
                if warm:
                    report.get_ms.append((time.perf_counter() - t0) * 1e3)
            except grpc.aio.AioRpcError as exc:
                if warm and exc.code() != grpc.StatusCode.NOT_FOUND:
                    report.errors[f"GetSignal {exc.code().name}"] += 1
                elif warm:
                    report.get_ms.append((time.perf_counter() - t0) * 1e3)


async def drive(target: str, concurrency: int, seconds: float, warmup_s: float = 1.0) -> LoadReport:
    """``concurrency`` clients for ``seconds`` (after ``warmup_s`` unmeasured) at ``target``."""
    if not 1 <= concurrency <= MAX_CLIENTS:
        raise ValueError(f"concurrency = {concurrency}: must be 1 to {MAX_CLIENTS}")
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds = {seconds}: must be in (0, {MAX_SECONDS}]")
    start_ns = time.time_ns()
    report = LoadReport(concurrency, seconds)
    if warmup_s > 0:
        warm_deadline = time.monotonic() + warmup_s
        await asyncio.gather(*(_client(target, i, concurrency, warm_deadline, report, start_ns, False)
                               for i in range(concurrency)))  # fmt: skip
        start_ns += int(1e12)  # later ticks than any warm-up tick
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()
    await asyncio.gather(*(_client(target, i, concurrency, deadline, report, start_ns, True)
                           for i in range(concurrency)))  # fmt: skip
    report.seconds = time.monotonic() - t0
    return report


# --- bringing the loop up --------------------------------------------------------------------


class ServiceProcess:
    """``python -m app serve --config FILE`` on a free port; the port read from its output."""

    def __init__(self, config_yaml: str, workdir: Path) -> None:
        self.config_path = workdir / f"service-{os.getpid()}-{time.monotonic_ns()}.yaml"
        self.config_path.write_text(config_yaml)
        self.log_path = self.config_path.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout_s: float = 120) -> ServiceProcess:
        return self.launch().wait_ready(timeout_s)

    def launch(self) -> ServiceProcess:
        """Start the process without waiting (several can start side by side)."""
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--config", str(self.config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        return self

    def wait_ready(self, timeout_s: float = 120) -> ServiceProcess:
        """Wait until it listens (its port read from its output)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = re.search(rb"listening on [\d.]+:(\d+)", self.log_path.read_bytes())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"service did not start:\n{self.log_path.read_text()[-3000:]}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def service_yaml(model_root: Path, publish_dir: Path, *, kserve: str | None = None,
                 model_name: str = "", model_version: str = "",
                 redis_nodes: list[str] | None = None, password: str = "",
                 spool: str = "", metrics_port: int | None = None) -> str:  # fmt: skip
    """The service's config: its spool next to ``publish_dir`` (``spool``: more settings of
    that section), metrics on ``metrics_port`` if given."""
    metrics = "null" if metrics_port is None else str(metrics_port)
    lines = [
        f"features: {{n_symbols: {N_SYMBOLS}}}",
        f"model: {{dir: '{model_root}', build_if_missing: false}}",
        "server: {port: 0, grace_s: 5}",
        f"publish: {{local_dir: '{publish_dir}'}}",
        f"spool: {{dir: '{publish_dir}-spool'{', ' + spool if spool else ''}}}",
        f"telemetry: {{metrics_port: {metrics}, log_level: warning}}",
    ]
    if kserve:
        lines.append(
            f"kserve: {{url: '{kserve}', model_name: '{model_name}', "
            f"model_version: '{model_version}', timeout_s: 1.0}}"
        )
    if redis_nodes:
        nodes = ", ".join(f"'{n}'" for n in redis_nodes)
        lines.append(
            f"cache: {{redis: {{nodes: [{nodes}], auth: password, password: '{password}'}}}}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two levels, 3 s each")
    parser.add_argument("--concurrency", default=None, help="levels, e.g. 1,4,16")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--target", help="drive this running server only (host:port)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in (args.concurrency or ("1,8" if args.quick else "1,4,16")).split(",")]
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    if args.target:
        for c in levels:
            print(asyncio.run(drive(args.target, c, seconds)).render(), flush=True)
        return 0

    from app.model.build import BuildOptions, build_model
    from app.serving.launch import MLServerProcess
    from tests.app.redis_cluster import PASSWORD, LocalRedisCluster

    work = Path(tempfile.mkdtemp(prefix="signal-load-"))
    print("building the model, starting MLServer and a 6-node Redis Cluster ...", flush=True)
    # A small model: the load is about the service around it (same code path, same shape).
    model = build_model(work / "model", BuildOptions(train_symbols=16, heldout_symbols=8,
                        ticks_per_symbol=1500, epochs=4, qat_epochs=3), log=lambda _m: None)  # fmt: skip
    mlserver = MLServerProcess(work / "mlserver", model.path("fp32"), model_name=model.name,
                               model_version=str(model.version)).start(timeout_s=120)  # fmt: skip
    cluster = LocalRedisCluster(work / "redis").start()
    results: dict[str, list[LoadReport]] = {}
    try:
        setups = {
            "embedded (in-process model, L1 only)": service_yaml(model.root, work / "pub-embedded"),
            "full (MLServer + Redis Cluster L2)": service_yaml(
                model.root, work / "pub-full", kserve=mlserver.url, model_name=model.name,
                model_version=str(model.version), redis_nodes=cluster.startup_nodes,
                password=PASSWORD,
            ),
        }  # fmt: skip
        for label, yaml_text in setups.items():
            service = ServiceProcess(yaml_text, work).start()
            print(f"\n{label} on {service.target}", flush=True)
            try:
                results[label] = []
                for c in levels:
                    warmup = 0.5 if args.quick else 1.0
                    report = asyncio.run(drive(service.target, c, seconds, warmup))
                    results[label].append(report)
                    print(report.render(), flush=True)
            finally:
                service.stop()
    finally:
        cluster.close()
        mlserver.stop()
    base, full = results.values()
    ratios = [f.rps / b.rps for b, f in zip(base, full, strict=True)]
    top_b, top_f = base[-1], full[-1]
    f50, f95, f99 = top_f.percentiles(top_f.get_ms)
    i50, i95, i99 = top_f.percentiles(top_f.ingest_ms)
    errors = sum(sum(r.errors.values()) for r in full)
    print(
        f"\nheadline: full loop at c={top_f.concurrency}: {top_f.rps:.0f} req/s, IngestTicks "
        f"p50/p95/p99 {i50:.1f}/{i95:.1f}/{i99:.1f} ms, GetSignal {f50:.2f}/{f95:.2f}/{f99:.2f} ms, "
        f"{errors} errors; vs embedded {top_b.rps:.0f} req/s: ratio "
        + ", ".join(f"c={r.concurrency} {x:.2f}x" for r, x in zip(full, ratios, strict=True))
    )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
