"""`python -m app.alerting`: run the anomaly detectors (or one tick of them, `--once`)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from app.alerting.config import load
from app.alerting.service import DetectorService
from app.autoscale.config import ConfigError, prometheus_client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.alerting",
        description="Score latency, error-rate and GPU series against seasonal baselines.",
    )
    parser.add_argument(
        "--config", type=Path, help="JSON or YAML (default: $SIGNAL_ALERTING_CONFIG)"
    )
    parser.add_argument("--once", action="store_true", help="backfill, one tick, print JSON")
    parser.add_argument("--check", action="store_true", help="validate the configuration, exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load(args.config)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(config.model_dump_json(by_alias=True, indent=2))
        return 0
    client = prometheus_client(
        config.prometheus_url, config.prometheus_auth, config.query_timeout_seconds
    )
    service = DetectorService(config, client)
    if args.once:
        if config.backfill:
            service.backfill()
        verdicts = service.tick()
        out = {f"{name}/{region}": v.__dict__ for (name, region), v in verdicts.items()}
        print(json.dumps(out, indent=2))
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    service.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
