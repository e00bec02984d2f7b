"""Run MLServer with the signal model as a child process on loopback (tests, local runs).

``MLServerProcess`` writes ``settings.json`` and ``<model>/model-settings.json`` into its
own folder, starts ``python -m mlserver.cli.main start`` there on free ports, and waits
until the model answers ``ModelReady`` over gRPC. Nothing here imports MLServer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def write_mlserver_settings(
    root: Path,
    model_file: Path,
    *,
    model_name: str,
    model_version: str,
    host: str,
    grpc_port: int,
    http_port: int,
    max_batch_size: int | None = None,
) -> None:
    """MLServer's server and model settings for serving ``model_file`` as ``model_name``
    (refusing requests of more than ``max_batch_size`` rows, as Triton does)."""
    root.mkdir(parents=True, exist_ok=True)
    server = {
        "debug": False,
        "host": host,
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_endpoint": None,  # no Prometheus server: one less port to collide on
        "parallel_workers": 0,  # infer in the server process: no extra hop per request
        "load_models_at_startup": True,
        "model_repository_root": str(root),
    }
    (root / "settings.json").write_text(json.dumps(server, indent=2))
    model_dir = root / model_name
    model_dir.mkdir(exist_ok=True)
    parameters: dict[str, object] = {"uri": str(model_file.resolve()), "version": model_version}
    if max_batch_size is not None:
        parameters["extra"] = {"max_batch_size": max_batch_size}
    model = {
        "name": model_name,
        "implementation": "app.serving.runtime.OnnxSignalRuntime",
        "parameters": parameters,
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model, indent=2))


class MLServerProcess:
    """MLServer serving one ONNX model; ``url`` is its gRPC address once ``start`` returns."""

    def __init__(
        self,
        workdir: Path,
        model_file: Path,
        *,
        model_name: str = "signal_mlp",
        model_version: str = "1",
        host: str = "127.0.0.1",
        grpc_port: int | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.max_batch_size = max_batch_size
        self.model_file = model_file
        self.model_name = model_name
        self.model_version = model_version
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mlserver.log"

    @property
    def url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def start(self, timeout_s: float = 60.0) -> MLServerProcess:
        write_mlserver_settings(
            self.workdir,
            self.model_file,
            model_name=self.model_name,
            model_version=self.model_version,
            host=self.host,
            grpc_port=self.grpc_port,
            http_port=self.http_port,
            max_batch_size=self.max_batch_size,
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlserver.cli.main", "start", str(self.workdir)],
                cwd=self.workdir,  # MLServer writes .envs/.metrics folders into its cwd
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        import grpc

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"MLServer exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if _model_ready(grpc, self.url, self.model_name):
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(
            f"MLServer not ready on {self.url} after {timeout_s} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)

    def __enter__(self) -> MLServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _model_ready(grpc, url: str, model_name: str) -> bool:
    """``ModelReady`` over the raw V2 gRPC method (no generated stubs needed here)."""
    # ModelReadyRequest{name=1: string}; ModelReadyResponse{ready=1: bool}.
    name = model_name.encode()
    request = b"\x0a" + bytes([len(name)]) + name
    try:
        with grpc.insecure_channel(url) as channel:
            call = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelReady",
                request_serializer=None,
                response_deserializer=None,
            )
            response = call(request, timeout=1.0)
    except grpc.RpcError:
        return False
    return response == b"\x08\x01"
