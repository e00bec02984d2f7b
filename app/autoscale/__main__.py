"""`python -m app.autoscale`: run the predictive scaler (or one tick of it, `--once`)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from app.autoscale.config import ConfigError, load, prometheus_client
from app.autoscale.service import ScalerService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.autoscale",
        description="Forecast each region's request rate and export signal_desired_replicas.",
    )
    parser.add_argument(
        "--config", type=Path, help="JSON or YAML (default: $SIGNAL_AUTOSCALE_CONFIG)"
    )
    parser.add_argument("--once", action="store_true", help="one tick, print decisions as JSON")
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
    service = ScalerService(config, client)
    if args.once:
        decisions = service.tick()
        print(json.dumps({region: d.__dict__ for region, d in decisions.items()}, indent=2))
        return 0 if decisions else 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    service.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
