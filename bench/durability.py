"""What an ack that means durable costs: ingest with the spool on (fsync per group) vs off.

The service (``python -m app serve``, embedded setup: in-process model, L1, DuckDB, local
publishing) runs in its own process three times, each driven by the same load as
``bench/load.py`` (N clients, each looping IngestTicks of 20 ticks then GetSignal):

* **spool off** (the baseline): an ack means applied in memory; a crash loses what the
  sinks had not yet written.
* **spool, fsync**: the default. Each accepted batch is appended to the spool and the ack
  waits for the group commit (one ``write`` + ``fdatasync`` per group of concurrent
  batches).
* **spool, no fsync**: durable against a process crash (``kill -9``), not a machine crash.

Reported per setup: ingest throughput (ticks/s, IngestTicks calls/s), IngestTicks p50 /
p95 latency, and, from the service's own metrics, the mean group commit time and batches
per group. The headline (last line) gives the spool-on/spool-off ratios of throughput and
p95 ack latency, measured in the same run.

    .venv/bin/python bench/durability.py [--quick] [--concurrency 8] [--seconds 10] [--model-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import REPO, LoadReport, ServiceProcess, drive, service_yaml


def metric_sums(port: int, name: str) -> tuple[float, float]:
    """``(sum, count)`` of a histogram on the service's Prometheus endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_sum":
                total = sample.value
            elif sample.name == f"{name}_count":
                count = sample.value
    return total, count


def run_setup(label: str, service: ServiceProcess, concurrency: int, seconds: float,
              warmup: float, metrics_port: int) -> tuple[LoadReport, str]:  # fmt: skip
    try:
        report = asyncio.run(drive(service.target, concurrency, seconds, warmup))
        commit_s, groups = metric_sums(metrics_port, "signal_spool_commit_duration_seconds")
        batches, _ = metric_sums(metrics_port, "signal_spool_group_records")
    finally:
        service.stop()
    i50, i95, _ = report.percentiles(report.ingest_ms)
    spool = (
        f"group commit {commit_s / groups * 1e3:.2f} ms mean, {batches / groups:.1f} batches/group"
        if groups
        else "no spool"
    )
    errors = sum(report.errors.values())
    line = (f"  {label:<16} {report.ticks / report.seconds:>8,.0f} ticks/s "
            f"{len(report.ingest_ms) / report.seconds:>6,.0f} ingests/s | IngestTicks p50/p95 "
            f"{i50:.2f}/{i95:.2f} ms | {spool} | errors {errors}")  # fmt: skip
    return report, line


def small_model(root: Path) -> Any:
    """A small model (the same build, fewer steps), built once and reused by later runs."""
    from app.config import FeatureConfig
    from app.model.build import BuildOptions, ModelArtifacts, ModelMismatchError, build_model

    try:
        model = ModelArtifacts.load(root)
        model.check_serving(FeatureConfig())
        return model
    except (FileNotFoundError, ModelMismatchError):
        shutil.rmtree(root, ignore_errors=True)
    print(f"building a small model in {root} (once) ...", flush=True)
    options = BuildOptions(train_symbols=16, heldout_symbols=8, ticks_per_symbol=1500, epochs=4,
                           qat_epochs=3)  # fmt: skip
    return build_model(root, options, log=lambda _m: None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per setup")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--model-dir", type=Path, help="a built model (default: a small one, "
                        "built once into artifacts/bench-model)")  # fmt: skip
    args = parser.parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    warmup = 0.5 if args.quick else 1.0

    from app.serving.launch import free_port

    work = Path(tempfile.mkdtemp(prefix="signal-durability-"))
    if args.model_dir is not None:
        from app.model.build import ModelArtifacts

        model = ModelArtifacts.load(args.model_dir)
    else:
        model = small_model(REPO / "artifacts" / "bench-model")
    setups = {"spool off": "enabled: false", "spool, fsync": "fsync: true",
              "spool, no fsync": "fsync: false"}  # fmt: skip
    services: dict[str, tuple[ServiceProcess, int]] = {}
    for i, (label, spool) in enumerate(setups.items()):  # started side by side, run in turn
        port = free_port()
        text = service_yaml(model.root, work / f"pub-{i}", spool=spool, metrics_port=port)
        services[label] = (ServiceProcess(text, work).launch(), port)
    results: dict[str, LoadReport] = {}
    print(f"{args.concurrency} clients, {seconds:g} s per setup (after {warmup:g} s warm-up)",
          flush=True)  # fmt: skip
    try:
        for service, _ in services.values():  # all up before any is measured
            service.wait_ready()
        for label, (service, port) in services.items():
            report, line = run_setup(label, service, args.concurrency, seconds, warmup, port)
            results[label] = report
            print(line, flush=True)
    finally:
        for service, _ in services.values():
            service.stop()
    off, on = results["spool off"], results["spool, fsync"]
    throughput = (on.ticks / on.seconds) / (off.ticks / off.seconds)
    p95_on, p95_off = on.percentiles(on.ingest_ms)[1], off.percentiles(off.ingest_ms)[1]
    errors = sum(sum(r.errors.values()) for r in results.values())
    print(
        f"\nheadline: spool on (fsync per group) vs off at c={args.concurrency}: ingest "
        f"{on.ticks / on.seconds:,.0f} vs {off.ticks / off.seconds:,.0f} ticks/s (ratio "
        f"{throughput:.2f}x), IngestTicks p95 {p95_on:.2f} vs {p95_off:.2f} ms (ratio "
        f"{p95_on / p95_off:.2f}x), {errors} errors"
    )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
