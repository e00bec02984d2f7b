"""Telemetry: metrics over HTTP, sampled JSON logs, traces across gRPC and into inference."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request
from typing import Any

import grpc
import numpy as np
import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from app.settings.telemetry import TelemetryConfig
from app.telemetry import (
    LATENCY_BUCKETS,
    Metrics,
    MetricsServer,
    client_interceptors,
    configure_logging,
    configure_tracing,
    measured,
    server_interceptors,
    trace_headers,
)
from tests.app.conftest import run


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    raise KeyError(f"{prefix!r} not exposed")


def test_metrics_are_served_on_a_port_with_standard_names_and_fine_buckets() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.request_latency.labels("GetSignal").observe(30e-6)
    metrics.request_latency.labels("GetSignal").observe(0.2)
    metrics.inference_batch_size.observe(37)
    metrics.inference_queue_depth.set(12)
    metrics.inference_fallbacks.labels("circuit_open").inc(2)
    metrics.publish_backlog.labels("ticks").set(345)
    for _ in range(3):
        metrics.cache_requests.labels("l1", "hit").inc()
    metrics.cache_requests.labels("l1", "miss").inc()
    server = MetricsServer("127.0.0.1", 0, registry)
    try:
        text = scrape(server.port)
    finally:
        server.close()
    assert LATENCY_BUCKETS[0] == 1e-5
    b = "signal_request_duration_seconds_bucket"
    assert sample(text, b, le="1e-05", method="GetSignal") == 0
    assert sample(text, b, le="2.5e-05", method="GetSignal") == 0
    assert sample(text, b, le="5e-05", method="GetSignal") == 1  # 30 µs lands in a fine bucket
    assert sample(text, b, le="0.25", method="GetSignal") == 2
    assert sample(text, "signal_inference_batch_size_bucket", le="64.0") == 1
    assert sample(text, "signal_inference_batch_size_bucket", le="32.0") == 0
    assert sample(text, "signal_inference_queue_depth") == 12
    assert sample(text, "signal_inference_fallbacks_total", reason="circuit_open") == 2
    assert sample(text, "signal_publish_backlog_messages", topic="ticks") == 345
    assert sample(text, "signal_cache_requests_total", level="l1", result="hit") == 3
    assert sample(text, "signal_cache_requests_total", level="l1", result="miss") == 1
    # Hit and miss counters, not a since-start ratio: a hit ratio is a ratio of their rates.
    assert "hit_ratio" not in text
    assert "# TYPE signal_request_duration_seconds histogram" in text


def test_every_request_is_counted_by_method_and_code() -> None:
    """`signal_requests_total` is the request rate the HPA scales on and, by code, the errors
    the SLO and the alerts count (no second counter of errors). Through a real grpc.aio
    server: the handlers `measured` wraps are counted by their final status (OK, the code
    they end with, UNKNOWN for an exception, CANCELLED for a client that went away, a stream
    at its end); a service registered without it (health) is not counted."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    started = asyncio.Event()

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("unreachable")

    async def broken(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("a bug")

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started.set()
        await asyncio.sleep(30)
        return request

    async def chat(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        async for request in requests:
            yield request

    def count(method: str, code: str) -> float:
        labels = {"method": method, "code": code}
        return registry.get_sample_value("signal_requests_total", labels) or 0.0

    async def scenario() -> None:
        server = grpc.aio.server(interceptors=server_interceptors(tracing=False))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", measured({
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
            "Broken": grpc.unary_unary_rpc_method_handler(broken),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        }, metrics)),))  # fmt: skip
        checks = health.aio.HealthServicer()  # pyright: ignore[reportAttributeAccessIssue]
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                for _ in range(3):
                    assert await channel.unary_unary("/test.Svc/Echo")(b"hi") == b"hi"
                for method, code in (("Missing", grpc.StatusCode.NOT_FOUND),
                                     ("Broken", grpc.StatusCode.UNKNOWN)):  # fmt: skip
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await channel.unary_unary(f"/test.Svc/{method}")(b"x")
                    assert err.value.code() == code
                replies = channel.stream_stream("/test.Svc/Chat")(iter([b"a", b"b"]))
                assert [r async for r in replies] == [b"a", b"b"]
                call = channel.unary_unary("/test.Svc/Slow")(b"x")
                await asyncio.wait_for(started.wait(), 5)
                call.cancel()
                for _ in range(500):  # the server learns of the cancel asynchronously
                    if count("Slow", "CANCELLED"):
                        break
                    await asyncio.sleep(0.01)
                health_stub: Any = health_pb2_grpc.HealthStub(channel)
                await health_stub.Check(health_pb2.HealthCheckRequest(service=""))
                with pytest.raises(grpc.aio.AioRpcError):
                    await health_stub.Check(health_pb2.HealthCheckRequest(service="no-such"))
        finally:
            await server.stop(None)

    run(scenario())
    server = MetricsServer("127.0.0.1", 0, registry)
    try:
        text = scrape(server.port)
    finally:
        server.close()
    assert sample(text, "signal_requests_total", code="OK", method="Echo") == 3
    assert sample(text, "signal_requests_total", code="NOT_FOUND", method="Missing") == 1
    assert sample(text, "signal_requests_total", code="UNKNOWN", method="Broken") == 1
    assert sample(text, "signal_requests_total", code="OK", method="Chat") == 1
    assert sample(text, "signal_requests_total", code="CANCELLED", method="Slow") == 1
    assert sample(text, "signal_request_duration_seconds_count", method="Echo") == 3
    assert sample(text, "signal_request_duration_seconds_count", method="Slow") == 1
    assert 'method="Check"' not in text  # health is not the signal API
    assert "signal_request_errors_total" not in text
    counted = [line for line in text.splitlines() if line.startswith("signal_requests_total{")]
    assert sum(not line.endswith(" 0.0") for line in counted) == 5  # no other method or code
    # Each method's OK series exists from registration on (a rate over it starts at 0).
    assert sample(text, "signal_requests_total", code="OK", method="Missing") == 0


def test_telemetry_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        TelemetryConfig(log_sampling={"ticks_ingested": 0})
    assert "log_sampling.ticks_ingested = 0: must be >= 1" in str(err.value)
    with pytest.raises(ValidationError) as err:
        TelemetryConfig(trace_sample_ratio=1.5)
    assert "trace_sample_ratio" in str(err.value) and "less than or equal to 1" in str(err.value)


def test_logs_are_json_sampled_for_volume_and_keep_every_error() -> None:
    out = io.StringIO()
    sampler = configure_logging(
        TelemetryConfig(log_sampling={"ticks_ingested": 50}, log_level="info"), stream=out
    )
    log = structlog.get_logger("test")
    try:
        for i in range(1000):
            log.info("ticks_ingested", batch=i)
        for i in range(30):
            log.error("ticks_ingested", batch=i, reason="sink down")  # errors are never sampled
        log.warning("publish_failed", topic="ticks")
        log.info("started", port=50051)  # not a sampled event: kept
        log.debug("noise")  # below the level
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    infos = [x for x in lines if x["event"] == "ticks_ingested" and x["level"] == "info"]
    errors = [x for x in lines if x["level"] == "error"]
    assert len(infos) == 20 and [x["batch"] for x in infos[:3]] == [0, 50, 100]
    assert all(x["sampled_one_in"] == 50 for x in infos)
    assert len(errors) == 30
    assert any(x["event"] == "publish_failed" for x in lines)
    assert any(x["event"] == "started" and x["port"] == 50051 for x in lines)
    assert not any(x["event"] == "noise" for x in lines)
    assert all("timestamp" in x for x in lines)
    assert sampler.dropped == 980


# --- tracing ---------------------------------------------------------------------------------


def _tracer(exporter: InMemorySpanExporter) -> Any:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = configure_tracing(TelemetryConfig(trace_sample_ratio=1.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_grpc_calls_carry_the_trace_from_client_to_server() -> None:
    exporter = InMemorySpanExporter()
    provider = _tracer(exporter)
    seen: dict[str, Any] = {}

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen["metadata"] = dict(context.invocation_metadata() or ())
        return request

    async def scenario() -> None:
        server = grpc.aio.server(interceptors=server_interceptors(provider))
        handler = grpc.method_handlers_generic_handler(
            "test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=client_interceptors(provider)
        ) as channel:
            call = channel.unary_unary("/test.Echo/Call")
            assert await call(b"ping") == b"ping"
        await server.stop(None)

    run(scenario())
    spans = {s.kind.name: s for s in exporter.get_finished_spans()}
    client, server = spans["CLIENT"], spans["SERVER"]
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert "traceparent" in seen["metadata"]


def test_the_inference_call_passes_trace_context_as_grpc_metadata() -> None:
    """The KServe backend's tritonclient call carries ``traceparent``: a real gRPC server
    speaking KServe-v2's ModelInfer records the metadata it receives."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from app.inference import KServeBackend
    from app.model.contract import N_CLASSES, N_INPUTS, OUTPUT_NAME

    exporter = InMemorySpanExporter()
    provider = _tracer(exporter)
    received: list[dict[str, str]] = []

    class V2(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            received.append(dict(context.invocation_metadata() or ()))
            rows = request.inputs[0].shape[0]
            probs = np.full((rows, N_CLASSES), 1 / N_CLASSES, np.float32)
            return service_pb2.ModelInferResponse(
                model_name=request.model_name, model_version="7",
                outputs=[service_pb2.ModelInferResponse.InferOutputTensor(
                    name=OUTPUT_NAME, datatype="FP32", shape=list(probs.shape))],
                raw_output_contents=[probs.tobytes()],
            )  # fmt: skip

    async def scenario() -> str:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(V2(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        backend = KServeBackend(f"127.0.0.1:{port}", "signal_mlp", timeout_s=5)
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("GetSignal") as span:
            headers = trace_headers()
            result = await backend.infer(np.zeros((3, N_INPUTS), np.float32))
            trace_id = format(span.get_span_context().trace_id, "032x")
        await backend.close()
        await server.stop(None)
        assert result.model_version == "signal_mlp/7"
        assert headers["traceparent"].split("-")[1] == trace_id
        return trace_id

    trace_id = run(scenario())
    assert received and received[0]["traceparent"].split("-")[1] == trace_id
    assert trace_headers() == {}  # outside any span: nothing to propagate


def test_a_method_is_wrapped_once_and_tracing_only_where_spans_are_exported() -> None:
    """`measured` wraps each method's handler once, at registration: the generic handler
    hands grpc.aio the same wrapped handler for every call (no handler built, no label
    looked up per call), with the method's own deserializer and serializer. The tracing
    interceptor is the only server interceptor, installed where spans are exported."""

    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.unary_unary_rpc_method_handler(call, bytes.upper, bytes.lower)
    generic = grpc.method_handlers_generic_handler(
        "signals.v1.SignalService", measured({"IngestTicks": handler}, Metrics(CollectorRegistry()))
    )

    class Details:
        method = "/signals.v1.SignalService/IngestTicks"

    first, again = generic.service(Details()), generic.service(Details())  # type: ignore[arg-type]
    assert first is not None and first is again and first is not handler
    assert first.request_deserializer is bytes.upper and first.response_serializer is bytes.lower
    assert first.unary_unary is not call
    assert server_interceptors(tracing=False) == []
    assert len(server_interceptors()) == 1
