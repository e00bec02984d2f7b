"""Generated protobuf/gRPC stubs of ``signals.proto``, built on first import when missing.

The stubs are build output (never committed): ``make proto`` generates them, and so
does importing this package when they are missing or older than the ``.proto`` (a
fresh clone works without a build step). Generation needs ``grpcio-tools``.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from types import ModuleType

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parents[1]
PROTO = PROTO_DIR / "signals.proto"
GENERATED = ("signals_pb2.py", "signals_pb2.pyi", "signals_pb2_grpc.py")


def stubs_fresh() -> bool:
    mtime = PROTO.stat().st_mtime
    return all(
        (PROTO_DIR / name).is_file() and (PROTO_DIR / name).stat().st_mtime >= mtime
        for name in GENERATED
    )


def generate() -> None:
    """Run protoc (grpc_tools) on signals.proto; the stubs import as ``app.proto.*``."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - the image ships the stubs prebuilt
        raise ImportError("generating the gRPC stubs needs grpcio-tools (make setup)") from exc
    import grpc_tools

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    rel = PROTO.relative_to(REPO_ROOT)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{REPO_ROOT}",
            f"-I{include}",
            f"--python_out={REPO_ROOT}",
            f"--pyi_out={REPO_ROOT}",
            f"--grpc_python_out={REPO_ROOT}",
            str(rel),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed on {rel} with exit code {code}")


def load() -> tuple[ModuleType, ModuleType]:
    """``(signals_pb2, signals_pb2_grpc)``, generating them first if needed."""
    if not stubs_fresh():
        generate()
        importlib.invalidate_caches()
    pb2 = importlib.import_module("app.proto.signals_pb2")
    pb2_grpc = importlib.import_module("app.proto.signals_pb2_grpc")
    return pb2, pb2_grpc


@functools.cache
def reject_reason_name(code: int) -> str:
    """The RejectReason enum's name of ``code`` without its prefix (a metric label, a
    report's word), or the number for a code the enum lacks."""
    try:
        return load()[0].RejectReason.Name(code).removeprefix("REJECT_REASON_")
    except ValueError:
        return str(code)
