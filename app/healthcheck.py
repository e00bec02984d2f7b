"""The container's health probe: ``python -m app.healthcheck`` asks the gRPC health service.

Distroless images have no shell, so Docker's HEALTHCHECK runs this module (exec form);
Kubernetes probes the same service natively (``grpc:`` probes). Exit status 0 when the
service reports SERVING, 1 otherwise (not serving, unreachable, or too slow).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str = "", timeout_s: float = 2.0,
          credentials: grpc.ChannelCredentials | None = None) -> bool:  # fmt: skip
    """Whether the health service at ``target`` reports ``service`` as SERVING (over TLS
    with ``credentials``)."""
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code: Any = exc.code()  # type: ignore[attr-defined]
            print(f"unhealthy: {target}: {code.name}", file=sys.stderr)
            return False
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    if not serving:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"unhealthy: {target}: {name}", file=sys.stderr)
    return serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.healthcheck")
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--service", default="", help="'' is the whole server")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--tls-ca", type=Path, help="CA bundle of a TLS server (server.tls)")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="client private key (mutual TLS)")
    args = parser.parse_args(argv)
    credentials = None
    if args.tls_ca is not None or args.tls_cert is not None:
        read = lambda p: None if p is None else p.read_bytes()  # noqa: E731
        credentials = grpc.ssl_channel_credentials(
            read(args.tls_ca), read(args.tls_key), read(args.tls_cert)
        )
    return 0 if check(args.target, args.service, args.timeout, credentials) else 1


if __name__ == "__main__":
    sys.exit(main())
