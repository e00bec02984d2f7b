"""The command line both metric services share (`python -m app.autoscale`, `app.alerting`):
load and validate the config, then tick every minute until SIGTERM, or tick once (`--once`).

They log as the signal service does (`app.telemetry.configure_logging`): one JSON object per
line, each naming the service. A long-running service logs to stdout; `--once` prints its
result on stdout, so its log lines go to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, start_http_server

from app.autoscale.config import ConfigError
from app.autoscale.prometheus import MINUTE, minute_of
from app.config_errors import print_error
from app.settings.telemetry import TelemetryConfig
from app.telemetry import configure_logging

log = structlog.get_logger("app.autoscale.cli")


class Service(Protocol):
    registry: CollectorRegistry
    clock: Callable[[], float]

    def start(self) -> None:
        """Before the first tick."""

    def tick(self) -> object:
        """Read the last complete minute, update, export."""


def run_service(
    argv: list[str] | None,
    *,
    prog: str,
    service_name: str,
    description: str,
    config_env: str,
    once_help: str,
    load: Callable[[Path | None], Any],
    make_service: Callable[[Any, Any], Service],
    once: Callable[[Any], int],
) -> int:
    """Exit codes: 0 done, 2 bad configuration; `once` decides its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, help=f"JSON or YAML (default: ${config_env})")
    parser.add_argument("--once", action="store_true", help=once_help)
    parser.add_argument("--check", action="store_true", help="validate the configuration, exit")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except (ConfigError, OSError) as exc:
        print_error(exc)  # one `error:` line per problem
        return 2
    if args.check:
        print(config.model_dump_json(by_alias=True, indent=2))
        return 0
    # Nothing of these services is sampled: a line a minute per region at most.
    configure_logging(
        TelemetryConfig(service_name=service_name, log_sampling={}),
        stream=sys.stderr if args.once else sys.stdout,
    )
    structlog.contextvars.bind_contextvars(service=service_name)
    service = make_service(config, config.prometheus_client())
    if args.once:
        service.start()
        return once(service)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    start_http_server(config.listen_port, config.listen_host, registry=service.registry)
    service.start()
    run_every_minute(service, stop)
    return 0


def run_every_minute(service: Service, stop: threading.Event) -> None:
    """Tick a few seconds after every minute boundary until ``stop`` is set."""
    while not stop.is_set():
        try:
            service.tick()
        except Exception:  # one bad minute must not stop the service
            log.exception("tick_failed")
        now = service.clock()
        # Scrapes land a few seconds after the minute: read 5 s past the boundary.
        stop.wait(max((minute_of(now) + 1) * MINUTE + 5 - now, 1.0))
