"""What one owner per shard costs: the same replay through `SignalClient` to one unsharded
service and to sharded replicas (leases, journal appends and snapshots in Redis Cluster).

Both setups run `python -m app serve` processes with the L2 cache on a local six-node Redis
Cluster and the in-process model; the client replays the same seeded synthetic stream at a
fixed rate (`app.replay`: each batch split by shard, each part sent to its owner, latency
from the batch's scheduled send to its last reply). The baseline, measured in the same run,
is one unsharded process: the ratio says what sharding costs a batch (one journal append
per part before its ack, parts of at most one shard each).

    .venv/bin/python bench/shards.py [--quick] [--replicas 2] [--rate 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from load import N_SYMBOLS, ServiceProcess, service_yaml  # noqa: E402

from app.replay import ReplayReport, replay  # noqa: E402


def sharded_yaml(base: str, shards: int) -> str:
    """``base`` with sharding on (a lease TTL of 10 s, snapshots every 5 s)."""
    return base + f"sharding: {{enabled: true, shards: {shards}}}\n"


def run_replay(targets: list[str], rate: float, seconds: float, batch: int) -> ReplayReport:
    return asyncio.run(replay(targets, rate=rate, seconds=seconds, batch_size=batch,
                              n_symbols=N_SYMBOLS, seed=7))  # fmt: skip


def line(label: str, r: ReplayReport) -> str:
    return (
        f"{label:<28} {r.ticks_per_s:8,.0f} ticks/s | batch p50/p95/p99 "
        f"{r.percentile_us(50) / 1e3:.2f}/{r.percentile_us(95) / 1e3:.2f}/"
        f"{r.percentile_us(99) / 1e3:.2f} ms | accepted {r.accepted:,} of {r.ticks:,}"
        f" | parts retried {r.retries}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 s per setup")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--rate", type=float, default=2000.0, help="ticks per second")
    parser.add_argument("--batch", type=int, default=50, help="ticks per batch")
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args(argv)
    if args.replicas < 1 or args.rate <= 0 or args.batch < 1:
        print("shards: --replicas, --rate and --batch must be positive", file=sys.stderr)
        return 2
    seconds = args.seconds or (4.0 if args.quick else 10.0)

    from app.model.build import BuildOptions, build_model
    from tests.app.redis_cluster import PASSWORD, LocalRedisCluster

    work = Path(tempfile.mkdtemp(prefix="signal-shards-"))
    print("building the model and starting a 6-node Redis Cluster ...", flush=True)
    model = build_model(work / "model", BuildOptions(train_symbols=16, heldout_symbols=8,
                        ticks_per_symbol=1500, epochs=4, qat_epochs=3), log=lambda _m: None)  # fmt: skip
    cluster = LocalRedisCluster(work / "redis").start()
    processes: list[ServiceProcess] = []
    try:

        def config(name: str) -> str:
            return service_yaml(model.root, work / name, redis_nodes=cluster.startup_nodes,
                                password=PASSWORD)  # fmt: skip

        single = ServiceProcess(config("pub-single"), work).launch()
        replicas = [
            ServiceProcess(sharded_yaml(config(f"pub-shard-{i}"), args.shards), work).launch()
            for i in range(args.replicas)
        ]
        processes = [single, *replicas]
        for p in processes:
            p.wait_ready()
        print(f"\nreplay of {args.rate:g} ticks/s in batches of {args.batch}, {seconds:g} s each",
              flush=True)  # fmt: skip
        run_replay([single.target], args.rate, 1.0, args.batch)  # warm-up, unmeasured
        base = run_replay([single.target], args.rate, seconds, args.batch)
        print(line("one unsharded replica", base), flush=True)
        targets = [p.target for p in replicas]
        run_replay(targets, args.rate, 1.0, args.batch)
        sharded = run_replay(targets, args.rate, seconds, args.batch)
        print(line(f"{args.replicas} replicas, {args.shards} shards", sharded), flush=True)
    finally:
        for p in processes:
            p.stop()
        cluster.close()
    ok = sharded.accepted == sharded.ticks and base.accepted == base.ticks
    print(
        f"\nheadline: sharded ({args.replicas} replicas, {args.shards} shards) "
        f"{sharded.ticks_per_s:,.0f} ticks/s, batch p50/p99 {sharded.percentile_us(50) / 1e3:.2f}/"
        f"{sharded.percentile_us(99) / 1e3:.2f} ms vs one unsharded replica "
        f"{base.percentile_us(50) / 1e3:.2f}/{base.percentile_us(99) / 1e3:.2f} ms: "
        f"p50 ratio {sharded.percentile_us(50) / base.percentile_us(50):.2f}x, "
        f"p99 ratio {sharded.percentile_us(99) / base.percentile_us(99):.2f}x"
        f"{'' if ok else '; NOT every tick was accepted'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
