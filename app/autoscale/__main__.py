"""`python -m app.autoscale`: run the predictive scaler (or one tick of it, `--once`)."""

from __future__ import annotations

import json

from app.autoscale.cli import run_service
from app.autoscale.config import load
from app.autoscale.service import ScalerService


def _once(service: ScalerService) -> int:
    decisions = service.tick()
    print(json.dumps({region: d.__dict__ for region, d in decisions.items()}, indent=2))
    return 0 if decisions else 1


def main(argv: list[str] | None = None) -> int:
    return run_service(
        argv,
        service_name="signal-autoscaler",
        prog="python -m app.autoscale",
        description="Forecast each region's request rate and export signal_desired_replicas.",
        config_env="SIGNAL_AUTOSCALE_CONFIG",
        once_help="one tick, print decisions as JSON",
        load=load,
        make_service=ScalerService,
        once=_once,
    )


if __name__ == "__main__":
    raise SystemExit(main())
