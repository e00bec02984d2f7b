"""Load on the running service over loopback: N concurrent clients for T seconds.

Each client owns its own symbols (so its ticks stay in time order), and loops: one
``IngestTicks`` batch, then one ``GetSignal`` of one of its symbols. Reported per
concurrency level: requests per second, ticks per second, p50/p95/p99 latency of each
RPC, and errors by status code.

Setups, each a process of its own driven by the same clients at the same levels:

* ``floor``: a do-nothing ``grpc.aio`` server with the same API (decode the request, answer
  an ack shaped like the service's): what gRPC itself costs. The service is compared with
  it per level (req/s, IngestTicks p50, ratios), the headline last.
* ``essential``: the floor plus the least the service's promises cost, made of the service's
  own parts: the batch checked and applied (`SignalPipeline`: features and the fused model),
  its record made durable (`Spool`: group commit, fdatasync) before the ack, the read
  answered from the latest signals. No data path, metrics or idempotency. Where it stays
  under a ratio of the floor, no design of the service with those promises reaches it.
* ``embedded``: the service (``python -m app serve``) with the in-process model, L1 only.
* ``full``: the service with inference through MLServer (KServe-v2 gRPC) and L2 on a
  six-node Redis Cluster, beside the embedded one: what the real data path costs.

``--replay`` instead runs ``python -m app replay``'s load (500-tick batches at ``--rate``
ticks/s over 1,000 symbols) against the embedded service, with publishing on and then off.
The default rate, 400,000 ticks/s, is more than the service takes on a small machine, so the
figures are its capacity (the target is 200,000 ticks/s and 100,000 signals/s).

    .venv/bin/python bench/load.py [--quick] [--concurrency 1,4,16] [--seconds 5] [--setups ...]
    .venv/bin/python bench/load.py --replay [--rate 400000] [--seconds 8]
    .venv/bin/python bench/load.py --target 127.0.0.1:50051   # drive a running server only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    accepted: int = 0  # ticks the acks say were applied
    signals: int = 0  # signals the acks say were made

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
            f"{g50:.2f}/{g95:.2f}/{g99:.2f} ms | accepted {self.accepted / max(self.ticks, 1):.0%}"
            f", {self.signals / self.seconds:.0f} signals/s | errors: {errors}"
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
                ack = await stub.IngestTicks(request, timeout=10)
                if warm:
                    report.ingest_ms.append((time.perf_counter() - t0) * 1e3)
                    report.ticks += n
                    report.accepted += ack.accepted
                    report.signals += ack.signals
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
    # Ticks stamped in the recent past (the service refuses ticks ahead of its clock), each
    # client's in time order: a batch spans 20 us, so the measured phase, a second after the
    # warm-up's start, stays behind the clock for any allowed run.
    start_ns = time.time_ns() - int((2 * MAX_SECONDS * 1000 * 20e-6 + 10) * 1e9)
    report = LoadReport(concurrency, seconds)
    if warmup_s > 0:
        warm_deadline = time.monotonic() + warmup_s
        await asyncio.gather(*(_client(target, i, concurrency, warm_deadline, report, start_ns, False)
                               for i in range(concurrency)))  # fmt: skip
        start_ns += int(1e9)  # later ticks than any warm-up tick
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()
    await asyncio.gather(*(_client(target, i, concurrency, deadline, report, start_ns, True)
                           for i in range(concurrency)))  # fmt: skip
    report.seconds = time.monotonic() - t0
    return report


# --- the floor: what gRPC itself costs for the same API --------------------------------------


class FloorServicer:
    """``SignalService`` doing only what gRPC must: decode the request and answer. An ingest
    gets an ack shaped like the service's (every tick accepted, a signal per symbol), a read
    a fixed signal of the symbol asked for."""

    def __init__(self) -> None:
        self.signal = dict(ts_ns=time.time_ns(), direction=1, strength=0.25, confidence=0.6,
                           model_version="signal_mlp/1", computed_at_ns=time.time_ns(),
                           model_variant="fp32", model_sha256="0" * 64, backend="local")  # fmt: skip

    @staticmethod
    def ack(request: Any) -> Any:
        return pb2.IngestAck(batch_id=request.batch_id, accepted=len(request.symbol),
                             signals=len(set(request.symbol)))  # fmt: skip

    async def IngestTicks(self, request: Any, _context: Any) -> Any:
        return self.ack(request)

    async def GetSignal(self, request: Any, _context: Any) -> Any:
        return pb2.Signal(symbol=request.symbol, **self.signal)

    async def StreamSignals(self, requests: Any, _context: Any) -> Any:
        async for request in requests:
            yield pb2.SignalBatch(batch_id=request.batch_id, ack=self.ack(request))


class EssentialServicer(FloorServicer):
    """The floor plus what the service must do for its promises, with its own parts: an
    ingest is decoded and checked, applied (features and the fused model), its bytes made
    durable in the spool, then acknowledged with the counts; a read answers the symbol's
    latest signal (the floor's fixed one before it has any)."""

    def __init__(self, config_path: Path) -> None:
        import yaml

        from app.batch_format import signal_bytes
        from app.config import AppConfig
        from app.server import build_runtime, decode_tick_batch, spool_dir
        from app.spool import Spool

        super().__init__()
        self.decode, self.signal_bytes = decode_tick_batch, signal_bytes  # imported once
        config = AppConfig.model_validate(yaml.safe_load(config_path.read_text()))
        self.runtime = build_runtime(config)  # its data path is never started
        self.pipeline = self.runtime.pipeline
        self.spool = Spool(config.spool, spool_dir(config))
        self.spool.open()
        self.max_ticks = config.server.max_batch_ticks

    async def IngestTicks(self, request: Any, _context: Any) -> Any:
        ticks = self.decode(request, self.pipeline.n_symbols, self.max_ticks)
        applied = self.pipeline.apply(ticks.symbol, ticks.price, ticks.size, ticks.ts_ns)
        signals = (await self.pipeline.finish(applied)).signals
        await self.spool.append(self.spool.last_seq + 1, request.data)
        self.pipeline.store_signals(signals, applied.seq, time.time_ns())
        return pb2.IngestAck(batch_id=request.message.batch_id, accepted=int(applied.accepted.sum()),
                             signals=len(signals))  # fmt: skip

    async def GetSignal(self, request: Any, _context: Any) -> Any:
        found = self.pipeline.latest(request.symbol)
        if found is None:
            return await super().GetSignal(request, _context)
        return self.signal_bytes(*found)


async def serve_floor(essential_config: Path | None = None) -> None:
    """The floor server (or, with the service's config, the essential one) on a free loopback
    port (announced as the service does) until SIGTERM."""
    from app.server import SERVICE_NAME, serialize_signal, tolerant, warm_up

    servicer: FloorServicer = FloorServicer()
    ticks = pb2.TickBatch.FromString
    if essential_config is not None:
        servicer = EssentialServicer(essential_config)
        ticks = tolerant(pb2.TickBatch)  # its bytes kept, as the service keeps them
        await warm_up(servicer.runtime)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "IngestTicks": grpc.unary_unary_rpc_method_handler(
            servicer.IngestTicks, request_deserializer=ticks,
            response_serializer=pb2.IngestAck.SerializeToString),
        "GetSignal": grpc.unary_unary_rpc_method_handler(
            servicer.GetSignal, request_deserializer=pb2.SignalRequest.FromString,
            response_serializer=serialize_signal),
        "StreamSignals": grpc.stream_stream_rpc_method_handler(
            servicer.StreamSignals, request_deserializer=pb2.TickBatch.FromString,
            response_serializer=pb2.SignalBatch.SerializeToString),
    }),))  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"floor server listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    if isinstance(servicer, EssentialServicer):
        await servicer.spool.close()


# --- bringing the loop up --------------------------------------------------------------------


class ServiceProcess:
    """``python -m app serve --config FILE`` on a free port; the port read from its output."""

    def __init__(self, config_yaml: str, workdir: Path, command: list[str] | None = None) -> None:
        self.config_path = workdir / f"service-{os.getpid()}-{time.monotonic_ns()}.yaml"
        self.config_path.write_text(config_yaml)
        self.log_path = self.config_path.with_suffix(".log")
        self.command = command or [sys.executable, "-m", "app", "serve", "--config",
                                   str(self.config_path)]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout_s: float = 120) -> ServiceProcess:
        return self.launch().wait_ready(timeout_s)

    def launch(self) -> ServiceProcess:
        """Start the process without waiting (several can start side by side)."""
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.command, cwd=REPO, stdout=log,
                                     stderr=subprocess.STDOUT, env=env)  # fmt: skip
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
                 spool: str = "", metrics_port: int | None = None,
                 publishing: bool = True) -> str:  # fmt: skip
    """The service's config: its spool next to ``publish_dir`` (``spool``: more settings of
    that section), metrics on ``metrics_port`` if given, publishing off if not ``publishing``."""
    metrics = "null" if metrics_port is None else str(metrics_port)
    lines = [
        f"features: {{n_symbols: {N_SYMBOLS}}}",
        f"model: {{dir: '{model_root}', build_if_missing: false}}",
        "server: {port: 0, grace_s: 5}",
        f"publish: {{local_dir: '{publish_dir}'{'' if publishing else ', enabled: false'}}}",
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


SETUPS = {"floor": "floor (do-nothing grpc.aio server, same API)",
          "essential": "essential (floor + apply with the fused model + spool fsync)",
          "embedded": "embedded (in-process model, L1 only)",
          "full": "full (MLServer + Redis Cluster L2)"}  # fmt: skip
FLOOR_RPS_TARGET = 0.8  # the service's req/s at the most clients, at least this x the floor's
FLOOR_P50_TARGET = 2.0  # the service's IngestTicks p50 at one client, at most this x the floor's


# The bench's model, kept between runs (a build takes ~40 s; the service checks it on start).
MODEL_DIR = Path(tempfile.gettempdir()) / "signal-platform" / "load-bench-model"


def bench_model() -> None:
    """A small model at `MODEL_DIR` that this code serves, built if it is missing or stale:
    the load is about the service around it (same code path, same shape)."""
    import shutil

    from app.config import FeatureConfig
    from app.model.build import BuildOptions, ModelArtifacts, build_model

    try:
        ModelArtifacts.load(MODEL_DIR).check_serving(FeatureConfig(n_symbols=N_SYMBOLS))
        return
    except Exception:  # missing, half-built or built by other code: build it afresh
        shutil.rmtree(MODEL_DIR, ignore_errors=True)
    print("building the model ...", flush=True)
    build_model(MODEL_DIR, BuildOptions(train_symbols=16, heldout_symbols=8, ticks_per_symbol=1500,
                                        epochs=4, qat_epochs=3), log=lambda _m: None)  # fmt: skip


def medians(reports: list[LoadReport]) -> tuple[float, float]:
    """req/s and IngestTicks p50 (ms), medians over rounds."""
    return (float(np.median([r.rps for r in reports])),
            float(np.median([r.percentiles(r.ingest_ms)[0] for r in reports])))  # fmt: skip


def floor_lines(levels: list[int], floor: dict[int, list[LoadReport]],
                service: dict[int, list[LoadReport]],
                essential: dict[int, list[LoadReport]] | None = None) -> list[str]:  # fmt: skip
    """Per level, the service beside the floor (medians over rounds), and the essential
    server's req/s beside both where it ran; last, the headline with both targets: req/s at
    the most clients, IngestTicks p50 at the fewest."""
    lines = []
    for c in levels:
        (f_rps, f50), (s_rps, s50) = medians(floor[c]), medians(service[c])
        lines.append(f"  c={c:<3} floor {f_rps:>6.0f} req/s p50 {f50:.2f} ms | service "
                     f"{s_rps:>6.0f} req/s p50 {s50:.2f} ms | req/s {s_rps / f_rps:.2f}x, "
                     f"p50 {s50 / f50:.2f}x")  # fmt: skip
        if essential is not None:
            e_rps, e50 = medians(essential[c])
            lines.append(f"        essential {e_rps:>6.0f} req/s p50 {e50:.2f} ms: "
                         f"{e_rps / f_rps:.2f}x the floor's req/s; the service "
                         f"{s_rps / e_rps:.2f}x the essential's")  # fmt: skip
    top, one = max(levels), min(levels)
    (f_rps, _), (s_rps, _) = medians(floor[top]), medians(service[top])
    rps = s_rps / f_rps
    p50 = medians(service[one])[1] / medians(floor[one])[1]

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    lines.append(
        f"headline: service vs gRPC floor: c={top} req/s {s_rps:.0f} vs {f_rps:.0f} = {rps:.2f}x "
        f"(target >= {FLOOR_RPS_TARGET}: {verdict(rps >= FLOOR_RPS_TARGET)}); c={one} "
        f"IngestTicks p50 {p50:.2f}x the floor's (target <= {FLOOR_P50_TARGET:g}: "
        f"{verdict(p50 <= FLOOR_P50_TARGET)})"
    )
    return lines


def run_replay(work: Path, model_root: Path, seconds: float, rate: float) -> int:
    """``python -m app replay --rate R --batch-size 500 --symbols 1000`` against the embedded
    service, with publishing on, then off (``publish.enabled: false``), one after the other."""
    from app.replay import replay

    reports = {}
    for label, publishing in (("publishing on", True), ("publishing off", False)):
        text = service_yaml(model_root, work / f"pub-replay-{len(reports)}", publishing=publishing)
        service = ServiceProcess(text, work).start()
        try:
            report = asyncio.run(replay(service.target, rate=rate, seconds=seconds, batch_size=500,
                                        n_symbols=N_SYMBOLS))  # fmt: skip
        finally:
            service.stop()
        reports[label] = report
        print(f"\n{label}:\n{report.render()}", flush=True)
    on, off = reports.values()
    met = on.ticks_per_s >= 200_000 and on.signals / on.elapsed_s >= 100_000
    print(
        f"\nheadline: replay at {rate:g} ticks/s, 500-tick batches, {N_SYMBOLS} symbols: "
        f"{on.ticks_per_s:,.0f} ticks/s, {on.signals / on.elapsed_s:,.0f} signals/s with "
        f"publishing (off: {off.ticks_per_s:,.0f} ticks/s, {off.signals / off.elapsed_s:,.0f} "
        f"signals/s); target >= 200,000 ticks/s and >= 100,000 signals/s: "
        f"{'met' if met else 'not met'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="levels 1,16, 3 s each, 2 rounds, floor and embedded only")  # fmt: skip
    parser.add_argument("--concurrency", default=None, help="levels, e.g. 1,4,16")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every level")
    parser.add_argument("--setups", default=None,
                        help=f"of {','.join(SETUPS)} (default all; --quick: floor,embedded)")  # fmt: skip
    parser.add_argument("--target", help="drive this running server only (host:port)")
    parser.add_argument("--replay", action="store_true",
                        help="replay 500-tick batches at --rate, publishing on then off")  # fmt: skip
    parser.add_argument("--rate", type=float, default=400_000.0, help="ticks/s for --replay")
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-essential", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor or args.serve_essential:
        asyncio.run(serve_floor(args.serve_essential))
        return 0
    levels = [int(c) for c in (args.concurrency or ("1,16" if args.quick else "1,4,16")).split(",")]
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    warmup = 0.5 if args.quick else 1.0
    rounds = args.rounds or (2 if args.quick else 3)
    if args.target:
        for c in levels:
            print(asyncio.run(drive(args.target, c, seconds)).render(), flush=True)
        return 0
    chosen = (args.setups or ("floor,embedded" if args.quick else ",".join(SETUPS))).split(",")
    unknown = [name for name in chosen if name not in SETUPS]
    if unknown:
        parser.error(f"--setups: {', '.join(unknown)} unknown; choose from {', '.join(SETUPS)}")

    work = Path(tempfile.mkdtemp(prefix="signal-load-"))
    model_root = MODEL_DIR
    if args.replay or {"essential", "embedded", "full"} & set(chosen):
        bench_model()
    if args.replay:
        return run_replay(work, model_root, args.seconds or (3.0 if args.quick else 8.0), args.rate)
    # Setups side by side, levels interleaved round by round: a machine whose other load
    # drifts during the run weighs on every setup alike.
    results: dict[str, dict[int, list[LoadReport]]] = {}
    with contextlib.ExitStack() as stack:
        setups: dict[str, ServiceProcess] = {}
        if "floor" in chosen:
            setups["floor"] = ServiceProcess("", work, [sys.executable, __file__, "--serve-floor"])
        if "essential" in chosen:
            essential = ServiceProcess(service_yaml(model_root, work / "pub-essential",
                                                    publishing=False), work)  # fmt: skip
            essential.command = [sys.executable, __file__, "--serve-essential",
                                 str(essential.config_path)]  # fmt: skip
            setups["essential"] = essential
        if "embedded" in chosen:
            setups["embedded"] = ServiceProcess(service_yaml(model_root, work / "pub-embedded"),
                                                work)  # fmt: skip
        if "full" in chosen:
            setups["full"] = full_service(stack, work, model_root)
        for service in setups.values():
            stack.callback(service.stop)
            service.launch()
        for name, service in setups.items():
            service.wait_ready()
            print(f"{SETUPS[name]} on {service.target}", flush=True)
            results[name] = {c: [] for c in levels}
        for r in range(rounds):
            print(f"\nround {r + 1} of {rounds}", flush=True)
            for c in levels:
                for name, service in setups.items():
                    report = asyncio.run(drive(service.target, c, seconds, warmup))
                    results[name][c].append(report)
                    print(f"{name:>8} {report.render()}", flush=True)
    errors = sum(sum(r.errors.values()) for by_level in results.values()
                 for reports in by_level.values() for r in reports)  # fmt: skip
    if "embedded" in results and "full" in results:
        base, full = results["embedded"], results["full"]
        top_f = full[max(levels)][-1]
        f50, f95, f99 = top_f.percentiles(top_f.get_ms)
        i50, i95, i99 = top_f.percentiles(top_f.ingest_ms)
        ratios = ", ".join(
            f"c={c} {medians(full[c])[0] / medians(base[c])[0]:.2f}x" for c in levels
        )
        print(
            f"\nfull loop at c={top_f.concurrency}: {top_f.rps:.0f} req/s, IngestTicks "
            f"p50/p95/p99 {i50:.1f}/{i95:.1f}/{i99:.1f} ms, GetSignal {f50:.2f}/{f95:.2f}/"
            f"{f99:.2f} ms; full vs embedded req/s (medians): {ratios}"
        )
    service_name = "embedded" if "embedded" in results else "full"
    if "floor" in results and service_name in results:
        print(f"\n{service_name} service beside the floor (medians of {rounds} rounds):")
        print("\n".join(floor_lines(levels, results["floor"], results[service_name],
                                     results.get("essential"))))  # fmt: skip
    return 0 if errors == 0 else 1


def full_service(stack: contextlib.ExitStack, work: Path, model_root: Path) -> ServiceProcess:
    """MLServer and a 6-node Redis Cluster (closed with ``stack``), and the service using them."""
    from app.model.build import ModelArtifacts
    from app.serving.launch import MLServerProcess
    from tests.app.redis_cluster import PASSWORD, LocalRedisCluster

    print("starting MLServer and a 6-node Redis Cluster ...", flush=True)
    model = ModelArtifacts.load(model_root)
    mlserver = MLServerProcess(work / "mlserver", model.path("fp32"), model_name=model.name,
                               model_version=str(model.version)).start(timeout_s=120)  # fmt: skip
    stack.callback(mlserver.stop)
    cluster = LocalRedisCluster(work / "redis").start()
    stack.callback(cluster.close)
    return ServiceProcess(service_yaml(
        model_root, work / "pub-full", kserve=mlserver.url, model_name=model.name,
        model_version=str(model.version), redis_nodes=cluster.startup_nodes, password=PASSWORD,
    ), work)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
