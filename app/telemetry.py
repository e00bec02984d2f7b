"""The service's telemetry: Prometheus metrics, sampled structured JSON logs, OpenTelemetry traces.

* Metrics follow Prometheus naming (``signal_`` prefix, base units, ``_total`` counters)
  and live on one ``Metrics`` object per registry, so tests get a fresh registry each
  and the process exposes the default one on ``TelemetryConfig.metrics_port``.
  Latency histograms start at 10 µs: the in-process tick → signal path is tens of µs.
* Logs are one JSON object per line (structlog). High-volume events are sampled, one
  kept in N, counted deterministically; warnings and errors are never sampled away.
* Request metrics come from the service's handlers, wrapped once at registration
  (`measured`): a call pays the timing and the count, not a grpc.aio interceptor.
* Traces: gRPC server and client interceptors from opentelemetry-instrumentation-grpc,
  and ``trace_headers()`` for calls that are not made through an instrumented channel
  (the tritonclient inference call passes them as gRPC metadata), so a request's trace
  continues into the inference server. The server's tracing interceptor is installed when
  spans are exported (``otlp_endpoint``), and only then.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import grpc
import structlog
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server
from structlog.typing import EventDict

from app.settings.telemetry import TelemetryConfig

# 10 µs .. 2.5 s, three steps per decade: fine where the hot path lives, coarse for outliers.
LATENCY_BUCKETS: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5,
    1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3,
    1e-2, 2.5e-2, 5e-2,
    0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(15))  # 1 .. 16384
BYTES_BUCKETS: tuple[float, ...] = tuple(float(4**i) for i in range(3, 13))  # 64 B .. 16 MiB


class Metrics:
    """Every metric the service exports, registered once on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        self.request_latency = Histogram(
            "signal_request_duration_seconds",
            "gRPC request latency by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        # Every finished request of the signal API (signals.v1.SignalService's methods, by
        # `measured`; health checks and reflection are not counted) by method and final
        # status: the request rate the infra's HPA scales on (infra/workloads.py
        # REQUEST_RATE_METRIC), and, by code, the errors of the SLO and the alerts
        # (infra/metrics.py SERVER_ERROR_CODES). A cancelled call is CANCELLED, a client's
        # mistake INVALID_ARGUMENT or NOT_FOUND: answers, not errors.
        self.requests = Counter(
            "signal_requests_total",
            "gRPC requests by method and final status code (OK, CANCELLED, or the error's).",
            ["method", "code"],
            registry=reg,
        )
        self.inference_latency = Histogram(
            "signal_inference_duration_seconds",
            "Latency of one inference call (one micro-batch) by backend.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.inference_batch_size = Histogram(
            "signal_inference_batch_size",
            "Rows per inference call.",
            buckets=SIZE_BUCKETS,
            registry=reg,
        )
        self.inference_queue_depth = Gauge(
            "signal_inference_queue_depth",
            "Rows waiting in the micro-batcher.",
            registry=reg,
        )
        self.inference_fallbacks = Counter(
            "signal_inference_fallbacks_total",
            "Inference calls served by the in-process model because the server failed.",
            ["reason"],
            registry=reg,
        )
        self.cache_requests = Counter(
            "signal_cache_requests_total",
            "Cache lookups by level and result (hit or miss).",
            ["level", "result"],
            registry=reg,
        )
        self.cache_errors = Counter(
            "signal_cache_errors_total",
            "Cache operations that failed (and were answered as misses) by level.",
            ["level"],
            registry=reg,
        )
        self.cache_available = Gauge(
            "signal_cache_available",
            "1 while a cache level is in use, 0 while it is skipped after failures.",
            ["level"],
            registry=reg,
        )
        self.cache_entries = Gauge(
            "signal_cache_l1_entries",
            "Entries in the in-process cache.",
            registry=reg,
        )
        self.publish_backlog = Gauge(
            "signal_publish_backlog_messages",
            "Messages accepted but not yet acknowledged by the sink, by topic.",
            ["topic"],
            registry=reg,
        )
        self.publish_batch_messages = Histogram(
            "signal_publish_batch_messages",
            "Messages per published batch.",
            ["topic"],
            buckets=SIZE_BUCKETS,
            registry=reg,
        )
        self.publish_batch_bytes = Histogram(
            "signal_publish_batch_bytes",
            "Compressed bytes per published batch.",
            ["topic"],
            buckets=BYTES_BUCKETS,
            registry=reg,
        )
        self.publish_bytes = Counter(
            "signal_publish_bytes_total",
            "Bytes published before (raw) and after (compressed) compression.",
            ["topic", "stage"],
            registry=reg,
        )
        self.publish_failures = Counter(
            "signal_publish_failures_total",
            "Failed publish attempts (each is retried with backoff), by topic.",
            ["topic"],
            registry=reg,
        )
        self.publish_rejected = Counter(
            "signal_publish_rejected_total",
            "Messages refused because the retry buffer was full (back-pressure), by topic.",
            ["topic"],
            registry=reg,
        )
        self.publish_dead_lettered = Counter(
            "signal_publish_dead_lettered_total",
            "Messages a sink refused permanently, written to the dead-letter file, by topic.",
            ["topic"],
            registry=reg,
        )
        self.warehouse_rows = Counter(
            "signal_warehouse_rows_total",
            "Rows written to the warehouse, by table.",
            ["table"],
            registry=reg,
        )
        self.warehouse_backlog = Gauge(
            "signal_warehouse_backlog_rows",
            "Rows accepted but not yet written, by table.",
            ["table"],
            registry=reg,
        )
        self.warehouse_failures = Counter(
            "signal_warehouse_failures_total",
            "Failed warehouse writes (retried), by table.",
            ["table"],
            registry=reg,
        )
        self.feature_drift = Gauge(
            "signal_feature_drift_psi",
            "Population stability index of each model input over the last window of served "
            "rows against the model's training distribution.",
            ["input"],
            registry=reg,
        )
        # Ingestion (app/ingest.py) and its spool (app/spool.py).
        self.ticks_rejected = Counter(
            "signal_ticks_rejected_total",
            "Ticks rejected by ingestion, by reason (the RejectReason enum's names).",
            ["reason"],
            registry=reg,
        )
        self.duplicate_batches = Counter(
            "signal_ingest_duplicate_batches_total",
            "Batches answered with the reply of an earlier one (same producer and batch_id).",
            registry=reg,
        )
        self.signal_failures = Counter(
            "signal_ingest_inference_failures_total",
            "Applied batches acknowledged without signals because inference failed.",
            registry=reg,
        )
        self.spool_commit_latency = Histogram(
            "signal_spool_commit_duration_seconds",
            "Time of one group commit (write and fsync) of the spool.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.spool_group_records = Histogram(
            "signal_spool_group_records",
            "Records (batches) made durable by one group commit.",
            buckets=SIZE_BUCKETS,
            registry=reg,
        )
        self.spool_bytes = Gauge(
            "signal_spool_bytes",
            "Bytes the spool holds on disk (undelivered and retained records).",
            registry=reg,
        )
        self.spool_replayed = Counter(
            "signal_spool_replayed_batches_total",
            "Batches found undelivered in the spool at start and delivered again.",
            registry=reg,
        )


_default_metrics: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process's metrics on Prometheus's default registry (created on first use)."""
    global _default_metrics
    with _default_lock:
        if _default_metrics is None:
            _default_metrics = Metrics()
        return _default_metrics


class MetricsServer:
    """Prometheus's text exposition over HTTP on a background thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry | None = None) -> None:
        self._server, self._thread = _start_http_server(
            port, addr=host, registry=registry if registry is not None else REGISTRY
        )
        self.host = host
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --- logs ---------------------------------------------------------------------------------

_ALWAYS_KEPT = frozenset({"warning", "warn", "error", "critical", "exception"})


class LogSampler:
    """A structlog processor keeping one of every N events of each sampled kind.

    Counting (not randomness) makes the kept share exact and testable; events at
    warning level and above are always kept, and so is every event not listed.
    """

    def __init__(self, every: Mapping[str, int]) -> None:
        self.every = dict(every)
        self._seen: dict[str, int] = {}
        self.dropped = 0

    def __call__(self, _logger: Any, method: str, event_dict: EventDict) -> EventDict:
        if method in _ALWAYS_KEPT:
            return event_dict
        event = event_dict.get("event")
        every = self.every.get(event, 1) if isinstance(event, str) else 1
        if every == 1:
            return event_dict
        n = self._seen.get(event, 0)  # type: ignore[arg-type]
        self._seen[event] = n + 1  # type: ignore[index]
        if n % every:
            self.dropped += 1
            raise structlog.DropEvent
        event_dict["sampled_one_in"] = every
        return event_dict


def configure_logging(config: TelemetryConfig, stream: TextIO | None = None) -> LogSampler:
    """JSON lines on ``stream`` (stdout by default); returns the sampler for inspection."""
    sampler = LogSampler(config.log_sampling)
    level = logging.getLevelNamesMapping()[config.log_level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            sampler,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _add_trace_ids,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    return sampler


def _add_trace_ids(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Correlate a log line with its trace when a span is active."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


# --- traces -------------------------------------------------------------------------------


def configure_tracing(
    config: TelemetryConfig, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A tracer provider sampling ``trace_sample_ratio`` of new traces (always following a
    sampled parent), exporting to ``exporter`` or, when set, OTLP at ``otlp_endpoint``."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name}),
        sampler=ParentBased(TraceIdRatioBased(config.trace_sample_ratio)),
    )
    if exporter is None and config.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def server_interceptors(provider: TracerProvider | None = None, *, tracing: bool = True
                        ) -> list[Any]:  # fmt: skip
    """Interceptors for ``grpc.aio.server(interceptors=...)``: one span per RPC continuing
    the caller's trace from its ``traceparent``, where ``tracing`` (none otherwise). The
    server traces only when spans go somewhere (``otlp_endpoint``): the tracing interceptor
    costs tens of microseconds a call, sampled or not. Metrics are not an interceptor:
    `measured` wraps a service's handlers once, at registration."""
    if not tracing:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=provider)]


STREAM_CLOSE_WAIT_S = 0.01  # `measured`: 1 ms caught every cancel of 40 on loopback


def measured(handlers: Mapping[str, grpc.RpcMethodHandler], metrics: Metrics | None = None
             ) -> dict[str, grpc.RpcMethodHandler]:  # fmt: skip
    """A service's method handlers (method name -> handler, as for
    ``grpc.method_handlers_generic_handler``), each wrapped once to count its calls:
    ``signal_request_duration_seconds{method}`` and ``signal_requests_total{method,code}``
    (a streaming call is timed from its start to its end). The code is the call's final
    status: OK, the code it was ended with (``context.abort``, ``set_code``), UNKNOWN for
    an unexpected exception, CANCELLED where the client went away. A call pays only the
    timing and the count (the metrics' children are resolved here), not the per-call
    interceptor machinery of grpc.aio. Only the services registered through it are
    counted: health checks and reflection are not. Handlers must be coroutines or async
    generators, as grpc.aio's are."""
    m = metrics if metrics is not None else default_metrics()
    return {method: _measured(method, handler, m) for method, handler in handlers.items()}


def _measured(method: str, handler: grpc.RpcMethodHandler, metrics: Metrics
              ) -> grpc.RpcMethodHandler:  # fmt: skip
    observe = metrics.request_latency.labels(method).observe
    requests = metrics.requests
    count_ok = requests.labels(method, "OK").inc
    counters: dict[str, Any] = {}  # code -> its child's inc, resolved on first use
    clock = time.perf_counter

    def finished(start: float, context: Any, exc: BaseException | None) -> None:
        observe(clock() - start)
        code = context.code()
        if code is not None and code != grpc.StatusCode.OK:
            name = code.name if hasattr(code, "name") else str(code)
        elif isinstance(exc, asyncio.CancelledError) or context.cancelled():  # client gone
            name = "CANCELLED"
        elif exc is None:
            count_ok()
            return
        else:
            name = "UNKNOWN"
        inc = counters.get(name)
        if inc is None:
            inc = counters[name] = requests.labels(method, name).inc
        inc()

    unary_reply = handler.unary_unary or handler.stream_unary
    if unary_reply is not None:
        inner = unary_reply

        async def unary(request: Any, context: Any) -> Any:
            start = clock()
            try:
                reply = await inner(request, context)
            except BaseException as exc:
                finished(start, context, exc)
                raise
            finished(start, context, None)
            return reply

        wrap = (grpc.unary_unary_rpc_method_handler if handler.unary_unary is not None
                else grpc.stream_unary_rpc_method_handler)  # fmt: skip
        return wrap(unary, handler.request_deserializer, handler.response_serializer)
    inner_stream: Any = handler.stream_stream or handler.unary_stream  # an async generator
    assert inner_stream is not None, f"{method}: a handler without a behaviour"

    async def stream(request: Any, context: Any) -> Any:
        start = clock()
        try:
            async for reply in inner_stream(request, context):
                yield reply
            # A client that went away ends the request stream as one that finished sending
            # does; gRPC tells them apart a few turns of the loop later, when it takes the
            # stream's close and cancels a call still running. Waiting that long before the
            # status goes out counts a cancelled stream as CANCELLED (not OK), every time.
            await asyncio.sleep(STREAM_CLOSE_WAIT_S)
        except BaseException as exc:
            finished(start, context, exc)
            raise
        finished(start, context, None)

    wrap = (grpc.stream_stream_rpc_method_handler if handler.stream_stream is not None
            else grpc.unary_stream_rpc_method_handler)  # fmt: skip
    return wrap(stream, handler.request_deserializer, handler.response_serializer)


def client_interceptors(provider: TracerProvider | None = None) -> Sequence[Any]:
    """Interceptors for ``grpc.aio.insecure_channel(..., interceptors=...)``."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return aio_client_interceptors(tracer_provider=provider)


def trace_headers() -> dict[str, str]:
    """The active trace context as W3C headers (``traceparent``, ``tracestate``), for gRPC
    metadata on calls made outside an instrumented channel, e.g. tritonclient's
    ``infer(..., headers=trace_headers())``. Empty when no span is active."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
