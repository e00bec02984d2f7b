"""``python -m app serve`` (the gRPC service) and ``python -m app replay`` (a load client)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config import ConfigError, load_config
from app.config_errors import print_error

# replay generates its ticks up front (~30 bytes each): a run is at most this many.
MAX_REPLAY_TICKS = 20_000_000


def _bounded(kind: type, low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` from ``low`` to ``high`` (bad values exit 2)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a{'n integer' if kind is int else ' number'}"
            ) from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is not between {low:g} and {high:g}")
        return value

    return parse


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC signal service (embedded defaults)")
    serve.add_argument("--config", type=Path, help="YAML file with sections of app.config")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 50051; 0 = any free)")
    serve.add_argument("--model-dir", type=Path, help="built model (default artifacts/model)")
    serve.add_argument("--variant", help="in-process model: fp32, int8 or int4")
    serve.add_argument("--kserve-url", help="KServe-v2 gRPC server host:port (Triton, MLServer)")
    serve.add_argument("--grace", type=float, help="seconds in-flight calls get at shutdown")
    serve.add_argument("--advertise", help="host:port other replicas and clients reach this one "
                       "at (sharding; default: --host and the listening port)")  # fmt: skip

    rp = sub.add_parser("replay", help="stream synthetic ticks to a server, print latency")
    rp.add_argument("--target", action="append", help="host:port of the service, or of any of "
                    "its replicas (repeat for several; default 127.0.0.1:50051)")  # fmt: skip
    rp.add_argument("--rate", type=_bounded(float, 1e-3, 1e7), required=True,
                    help="ticks per second")  # fmt: skip
    rp.add_argument("--seconds", type=_bounded(float, 1e-3, 7 * 86_400), required=True)
    rp.add_argument("--batch-size", type=_bounded(int, 1, 1_000_000), default=50,
                    help="ticks per TickBatch")  # fmt: skip
    rp.add_argument("--symbols", type=_bounded(int, 1, 10_000_000), default=100)
    rp.add_argument("--seed", type=int, default=0)
    rp.add_argument("--producer", help="idempotency name of this client (default replay-<pid>)")
    rp.add_argument("--tls-ca", type=_existing_file, help="CA bundle to verify a TLS server with")
    rp.add_argument("--tls-cert", type=_existing_file, help="client certificate (mutual TLS)")
    rp.add_argument("--tls-key", type=_existing_file, help="client private key (mutual TLS)")

    args = parser.parse_args(argv)
    if args.command == "replay" and args.rate * args.seconds > MAX_REPLAY_TICKS:
        parser.error(f"--rate x --seconds = {args.rate * args.seconds:.3g} ticks; a replay "
                     f"sends at most {MAX_REPLAY_TICKS:,} (ticks are generated up front)")  # fmt: skip
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        try:
            config = load_config(
                args.config,
                {
                    "server.host": args.host,
                    "server.port": args.port,
                    "server.grace_s": args.grace,
                    "model.dir": None if args.model_dir is None else str(args.model_dir),
                    "model.variant": args.variant,
                    "kserve.url": args.kserve_url,
                    "sharding.advertise": args.advertise,
                },
            )
        except ConfigError as exc:
            print_error(exc)  # one `error:` line per problem, as the tools print them
            return 2
        from app.model.manifest import ModelMismatchError
        from app.server import serve as run_server
        from app.spool import SpoolError

        try:
            asyncio.run(run_server(config))
        except (ModelMismatchError, SpoolError, OSError) as exc:
            # What the configuration points at does not fit: the model, the spool, the port.
            print_error(exc)
            return 2
        return 0

    import grpc

    from app.client import ServiceRefused
    from app.replay import ClientTls, replay

    try:
        report = asyncio.run(
            replay(
                args.target or ["127.0.0.1:50051"],
                rate=args.rate,
                seconds=args.seconds,
                batch_size=args.batch_size,
                n_symbols=args.symbols,
                seed=args.seed,
                producer=args.producer,
                tls=ClientTls(args.tls_ca, args.tls_cert, args.tls_key),
            )
        )
    except (ConnectionError, ValueError, OSError, ServiceRefused) as exc:
        print_error(f"replay: {exc}")
        return 1
    except grpc.aio.AioRpcError as exc:
        print_error(f"replay: the server answered {exc.code().name}: {exc.details()}")
        return 1
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
