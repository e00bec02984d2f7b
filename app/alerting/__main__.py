"""`python -m app.alerting`: run the anomaly detectors (or one tick of them, `--once`)."""

from __future__ import annotations

import json

from app.alerting.config import load
from app.alerting.service import DetectorService
from app.autoscale.cli import run_service


def _once(service: DetectorService) -> int:
    verdicts = service.tick()
    out = {f"{name}/{region}": v.__dict__ for (name, region), v in verdicts.items()}
    print(json.dumps(out, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_service(
        argv,
        service_name="signal-anomaly-detector",
        prog="python -m app.alerting",
        description="Score latency, error-rate and GPU series against seasonal baselines.",
        config_env="SIGNAL_ALERTING_CONFIG",
        once_help="backfill, one tick, print JSON",
        load=load,
        make_service=DetectorService,
        once=_once,
    )


if __name__ == "__main__":
    raise SystemExit(main())
