"""The KServe-v2 client against a real MLServer (the same protocol Triton speaks)."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest

from app.batcher import MicroBatcher
from app.fused import FusedBackend
from app.inference import (
    CircuitBreaker,
    InferenceError,
    KServeBackend,
    LocalOnnxBackend,
    ResilientBackend,
)
from app.model.build import ModelArtifacts, run_onnx
from app.model.train import make_dataset
from app.serving.launch import free_port, write_mlserver_settings
from tests.app.conftest import run

pytestmark = pytest.mark.slow
X = make_dataset(4, 600, seed=6).x[:200]


def test_mlserver_serves_the_same_model(mlserver, model: ModelArtifacts) -> None:
    async def scenario() -> None:
        backend = KServeBackend(mlserver.url, model.name)
        assert await backend.server_ready()
        result = await backend.infer(X)
        again = await backend.infer(X[:1])
        await backend.close()
        np.testing.assert_allclose(result.probabilities, run_onnx(model.path("fp32"), X), rtol=1e-6)
        assert result.model_version == "signal_mlp/1" and result.backend == "kserve"
        # The server names the file that answered (its hash), not only the model's name.
        assert result.identity.variant == "fp32"
        assert result.identity.sha256 == model.manifest["variants"]["fp32"]["sha256"]
        np.testing.assert_allclose(again.probabilities, result.probabilities[:1], rtol=1e-6)
        assert backend.calls == 2

    run(scenario())


def test_server_rejects_bad_tensors_and_keeps_serving(mlserver, model: ModelArtifacts) -> None:
    import tritonclient.grpc.aio as grpcclient

    async def scenario() -> None:
        client = grpcclient.InferenceServerClient(mlserver.url)
        wrong = grpcclient.InferInput("features", [2, 4], "FP32")
        wrong.set_data_from_numpy(np.zeros((2, 4), np.float32))
        with pytest.raises(Exception, match=r"features: shape \[2, 4\]"):
            await client.infer(model.name, [wrong])
        await client.close()
        backend = KServeBackend(mlserver.url, model.name)
        assert (await backend.infer(X[:3])).probabilities.shape == (3, 3)
        await backend.close()

    run(scenario())


def test_unknown_model_and_dead_server_raise_inference_error(mlserver) -> None:
    async def scenario() -> None:
        unknown = KServeBackend(mlserver.url, "no_such_model")
        with pytest.raises(InferenceError):
            await unknown.infer(X[:1])
        await unknown.close()
        dead = KServeBackend(f"127.0.0.1:{free_port()}", "signal_mlp", timeout_s=0.3)
        with pytest.raises(InferenceError):
            await dead.infer(X[:1])
        assert not await dead.server_ready()
        await dead.close()

    run(scenario())


class TcpProxy:
    """A loopback TCP forwarder that can be cut (connections reset, port closed) and restored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._conns |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()


def test_breaker_falls_back_while_the_server_is_unreachable_and_recovers(
    mlserver, model: ModelArtifacts
) -> None:
    async def scenario() -> None:
        proxy = TcpProxy(mlserver.grpc_port)
        await proxy.start()
        remote = KServeBackend(f"127.0.0.1:{proxy.port}", model.name, timeout_s=0.5,
                               reconnect_backoff_ms=50)  # fmt: skip
        local = LocalOnnxBackend(model.path("fp32"), model.model_version)
        backend = ResilientBackend(remote, local, CircuitBreaker(2, reset_timeout_s=0.3))
        expected = run_onnx(model.path("fp32"), X[:5])

        first = await backend.infer(X[:5])
        assert first.backend == "kserve"
        await proxy.cut()
        fallen_back = [await backend.infer(X[:5]) for _ in range(6)]
        assert [r.backend for r in fallen_back] == ["local"] * 6  # every call answered
        # ... each naming the model that really ran: the in-process fp32 file.
        assert {(r.identity.variant, r.identity.sha256) for r in fallen_back} == {
            ("fp32", model.manifest["variants"]["fp32"]["sha256"])
        }
        assert backend.breaker.state == "open" and remote.calls == 3  # 2 failures, then skipped

        await proxy.restore()
        await asyncio.sleep(0.35)  # past reset_timeout_s: the next call is the trial
        recovered = None
        for _ in range(40):  # the channel may need a moment to reconnect
            result = await backend.infer(X[:5])
            if result.backend == "kserve":
                recovered = result
                break
            await asyncio.sleep(0.35)
        assert recovered is not None, "traffic never returned to the server"
        assert backend.breaker.state == "closed"
        np.testing.assert_allclose(recovered.probabilities, expected, rtol=1e-6)
        await backend.close()
        await proxy.cut()

    run(scenario())


def test_batching_to_mlserver_cuts_calls(mlserver, model: ModelArtifacts) -> None:
    async def scenario() -> tuple[int, int]:
        remote = KServeBackend(mlserver.url, model.name)
        batcher = MicroBatcher(remote, max_batch_size=64, max_queue_delay_us=2000)
        results = await asyncio.gather(*(batcher.infer(X[i : i + 1]) for i in range(128)))
        await batcher.close()
        await remote.close()
        got = np.concatenate([r.probabilities for r in results])
        np.testing.assert_allclose(got, run_onnx(model.path("fp32"), X[:128]), rtol=1e-6)
        return remote.calls, len(results)

    calls, answered = run(scenario())
    assert answered == 128 and calls <= 8


def test_settings_written_for_mlserver(tmp_path, model: ModelArtifacts) -> None:
    import json

    write_mlserver_settings(tmp_path, model.path("int4"), model_name="m", model_version="7",
                            host="127.0.0.1", grpc_port=1234, http_port=1235)  # fmt: skip
    server = json.loads((tmp_path / "settings.json").read_text())
    settings = json.loads((tmp_path / "m" / "model-settings.json").read_text())
    assert (server["host"], server["grpc_port"], server["parallel_workers"]) == (
        "127.0.0.1",
        1234,
        0,
    )
    assert settings["implementation"] == "app.serving.runtime.OnnxSignalRuntime"
    assert settings["parameters"] == {"uri": str(model.path("int4").resolve()), "version": "7"}


def _serve_and_get_signal(config, model: ModelArtifacts):
    """Run the service with ``config``, ingest synthetic ticks of 10 symbols, GetSignal(4)."""
    import grpc

    from app.server import SignalServer, build_runtime, pb2, pb2_grpc
    from app.synthetic import synthetic_ticks

    async def scenario():
        runtime = build_runtime(config)
        server = SignalServer(config, runtime)
        port = await server.start()
        ticks, _ = synthetic_ticks(10, 80, seed=8)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb2_grpc.SignalServiceStub(channel)
                ack = await stub.IngestTicks(
                    pb2.TickBatch(symbol=ticks.symbol.tolist(), price=ticks.price.tolist(),
                                  size=ticks.size.tolist(), ts_ns=ticks.ts_ns.tolist())
                )  # fmt: skip
                assert ack.accepted == 800 and ack.signals == 10
                signal = await stub.GetSignal(pb2.SignalRequest(symbol=4))
        finally:
            await server.stop(grace_s=1.0)
        return runtime, signal

    return run(scenario())


def test_service_serves_signals_through_mlserver(mlserver, model: ModelArtifacts) -> None:
    """The whole service configured with a KServe-v2 server: signals come from MLServer, and
    each says so: the variant and file hash the server reported, backend kserve."""
    from app.config import AppConfig, FeatureConfig, KServeConfig, ModelConfig, ServerConfig

    config = AppConfig(
        features=FeatureConfig(n_symbols=10),
        model=ModelConfig(dir=model.root, variant="int8", build_if_missing=False),
        kserve=KServeConfig(url=mlserver.url, model_name=model.name),
        server=ServerConfig(port=0),
    )
    runtime, signal = _serve_and_get_signal(config, model)
    assert signal.model_version == "signal_mlp/1"
    # MLServer serves fp32; the in-process fallback would have been int8.
    assert (signal.model_variant, signal.backend) == ("fp32", "kserve")
    assert signal.model_sha256 == model.manifest["variants"]["fp32"]["sha256"]
    backend = runtime.backend
    assert isinstance(backend, ResilientBackend)
    assert isinstance(backend.primary, KServeBackend) and backend.primary.calls >= 2
    assert backend.fallback_calls == 0 and backend.breaker.state == "closed"


@pytest.mark.parametrize(("backend", "kind"), [(None, FusedBackend),
                                               ("onnxruntime", LocalOnnxBackend)])  # fmt: skip
def test_service_signals_name_the_in_process_model(model: ModelArtifacts, backend, kind) -> None:
    from app.config import AppConfig, FeatureConfig, ModelConfig, ServerConfig

    chosen = {} if backend is None else {"backend": backend}  # None: model.backend's default
    config = AppConfig(
        features=FeatureConfig(n_symbols=10),
        model=ModelConfig(dir=model.root, variant="int4", build_if_missing=False, **chosen),
        server=ServerConfig(port=0),
    )
    runtime, signal = _serve_and_get_signal(config, model)
    assert isinstance(runtime.backend, kind)
    assert (signal.model_version, signal.model_variant, signal.backend) == (
        "signal_mlp/1", "int4", "local"
    )  # fmt: skip
    assert signal.model_sha256 == model.manifest["variants"]["int4"]["sha256"]


@pytest.fixture(scope="module")
def small_batch_server(tmp_path_factory, model: ModelArtifacts):
    """MLServer serving the build's Triton file (int4) and refusing more than 32 rows a call,
    as a Triton with max_batch_size 32 does."""
    from app.serving.launch import MLServerProcess

    triton_file = model.triton_repository / model.name / str(model.version) / "model.onnx"
    server = MLServerProcess(tmp_path_factory.mktemp("mlserver-small"), triton_file,
                             model_name=model.name, model_version=str(model.version),
                             max_batch_size=32)  # fmt: skip
    server.start(timeout_s=90)
    yield server
    server.stop()


def test_requests_larger_than_the_servers_max_batch_size_are_split(
    small_batch_server, model: ModelArtifacts
) -> None:
    rows = np.tile(X, (2, 1))[:100]

    async def scenario() -> None:
        whole = KServeBackend(small_batch_server.url, model.name)  # knows no limit
        with pytest.raises(InferenceError, match="batch-size must be <= 32"):
            await whole.infer(rows)
        await whole.close()
        split = KServeBackend(small_batch_server.url, model.name, max_batch_size=32)
        result = await split.infer(rows)
        await split.close()
        assert split.calls == 4  # 32 + 32 + 32 + 4 rows
        np.testing.assert_allclose(result.probabilities, run_onnx(model.path("int4"), rows),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
        assert (result.identity.variant, result.backend) == ("int4", "kserve")
        assert result.identity.sha256 == model.manifest["variants"]["int4"]["sha256"]
        # Given the build, the backend takes the limit from the build's Triton configuration.
        assert (
            KServeBackend(small_batch_server.url, model.name, artifacts=model).max_batch_size == 256
        )

    run(scenario())


def test_a_server_running_another_build_is_refused(
    small_batch_server, model: ModelArtifacts
) -> None:
    variants = {
        **model.manifest["variants"],
        "int4": {**model.manifest["variants"]["int4"], "sha256": "0" * 64},
    }
    other_build = ModelArtifacts(model.root, {**model.manifest, "variants": variants})

    async def scenario() -> None:
        backend = KServeBackend(small_batch_server.url, model.name, artifacts=other_build)
        with pytest.raises(
            InferenceError, match=r"no variant of the build in .* the server runs another build"
        ):
            await backend.infer(X[:3])
        await backend.close()

    run(scenario())
    # Triton says nothing about its file: the manifest's record of the Triton repository does.
    triton = model.triton_identity(model.name, str(model.version))
    assert triton is not None and triton.variant == "int4"
    assert model.triton_identity("another_model", "1") is None
