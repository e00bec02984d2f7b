"""Inference backends, the circuit breaker and the micro-batcher."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from app.batcher import BatcherClosedError, MicroBatcher, QueueFullError
from app.inference import (
    CircuitBreaker,
    Inference,
    InferenceBackend,
    InferenceError,
    LocalOnnxBackend,
    ResilientBackend,
    check_inputs,
)
from app.model.build import ModelArtifacts, ModelMismatchError, run_onnx
from app.model.contract import N_INPUTS
from app.model.train import make_dataset
from tests.app.conftest import run

X = make_dataset(4, 600, seed=5).x[:300]  # realistic model inputs from the engine


class CountingBackend(InferenceBackend):
    """Wraps a real backend; records every call's batch size, optionally slows calls down."""

    name = "counting"

    def __init__(self, inner: InferenceBackend, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []
        self.fail_with: Exception | None = None

    async def infer(self, inputs: np.ndarray) -> Inference:
        self.batch_sizes.append(inputs.shape[0])
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        return await self.inner.infer(inputs)


@pytest.fixture
def local(model: ModelArtifacts) -> LocalOnnxBackend:
    return LocalOnnxBackend(model.path("fp32"), model.model_version)


def test_local_backend_matches_onnxruntime(local: LocalOnnxBackend, model: ModelArtifacts) -> None:
    result = run(local.infer(X))
    np.testing.assert_allclose(result.probabilities, run_onnx(model.path("fp32"), X), rtol=1e-6)
    assert result.model_version == "signal_mlp/1" and result.backend == "local"
    big = np.tile(X, (5, 1))  # >= offload_rows: runs in a worker thread, same answer
    np.testing.assert_allclose(run(local.infer(big)).probabilities[:300], result.probabilities)


@pytest.mark.parametrize("shape", [(0, N_INPUTS), (3, N_INPUTS + 1), (N_INPUTS,)])
def test_inputs_must_be_rows_of_model_inputs(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"inputs: shape .*must be \(n >= 1, 6\)"):
        check_inputs(np.zeros(shape, np.float32))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=2.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 1.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # one trial at a time
    breaker.record_failure()
    assert breaker.state == "open" and breaker.times_opened == 2
    clock.now += 2.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0 and breaker.allow()


def test_a_success_resets_the_consecutive_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_resilient_backend_falls_back_and_recovers(local: LocalOnnxBackend) -> None:
    clock = FakeClock()
    primary = CountingBackend(local)
    primary.fail_with = InferenceError("server down")
    fallback = CountingBackend(local)
    backend = ResilientBackend(primary, fallback, CircuitBreaker(2, 5.0, clock=clock))

    async def scenario() -> None:
        for _ in range(5):
            result = await backend.infer(X[:4])
            assert result.probabilities.shape == (4, 3)  # every call is answered
        assert len(primary.batch_sizes) == 2  # breaker opened after 2 failures
        assert len(fallback.batch_sizes) == 5
        primary.fail_with = None
        await backend.infer(X[:4])
        assert len(primary.batch_sizes) == 2  # still open: not even tried
        clock.now += 5.0
        await backend.infer(X[:4])  # half-open trial succeeds
        assert backend.breaker.state == "closed" and len(primary.batch_sizes) == 3
        await backend.infer(X[:4])
        assert len(primary.batch_sizes) == 4 and len(fallback.batch_sizes) == 6

    run(scenario())


def test_batcher_coalesces_concurrent_requests(local: LocalOnnxBackend) -> None:
    counting = CountingBackend(local, delay_s=0.005)
    batcher = MicroBatcher(counting, max_batch_size=64, max_queue_delay_us=2000,
                           max_concurrent_batches=1)  # fmt: skip

    async def scenario() -> list[Inference]:
        results = await asyncio.gather(*(batcher.infer(X[i : i + 1]) for i in range(200)))
        await batcher.close()
        return results

    results = run(scenario())
    assert sum(counting.batch_sizes) == 200
    assert max(counting.batch_sizes) <= 64
    assert len(counting.batch_sizes) <= 200 // 64 + 2  # batched, not one call per request
    expected = run_onnx(local.model_path, X[:200])
    got = np.concatenate([r.probabilities for r in results])
    np.testing.assert_allclose(got, expected, rtol=1e-5)  # each caller gets its own row back
    assert batcher.stats.requests == 200 and batcher.stats.batches == len(counting.batch_sizes)


def test_multi_row_requests_are_never_split(local: LocalOnnxBackend) -> None:
    counting = CountingBackend(local)
    batcher = MicroBatcher(counting, max_batch_size=10, max_queue_delay_us=1000)

    async def scenario() -> list[Inference]:
        sizes = [4, 4, 4, 25, 1]
        starts = np.cumsum([0, *sizes[:-1]])
        out = await asyncio.gather(
            *(batcher.infer(X[s : s + n]) for s, n in zip(starts, sizes, strict=True))
        )
        await batcher.close()
        return out

    results = run(scenario())
    assert [r.probabilities.shape[0] for r in results] == [4, 4, 4, 25, 1]
    assert 25 in counting.batch_sizes  # an oversized request forms its own batch
    assert all(b <= 10 or b == 25 for b in counting.batch_sizes)


def test_lone_request_waits_at_most_the_queue_delay(local: LocalOnnxBackend) -> None:
    async def latency(delay_us: int) -> float:
        batcher = MicroBatcher(local, max_batch_size=256, max_queue_delay_us=delay_us)
        await batcher.infer(X[:1])  # warm
        t = time.perf_counter()
        await batcher.infer(X[:1])
        elapsed = time.perf_counter() - t
        await batcher.close()
        return elapsed

    waited = run(latency(20_000))
    assert 0.019 <= waited < 0.5  # it did wait for company, and not forever
    assert run(latency(0)) < waited / 4


def test_full_queue_pushes_back_instead_of_growing(local: LocalOnnxBackend) -> None:
    slow = CountingBackend(local, delay_s=0.05)
    batcher = MicroBatcher(slow, max_batch_size=8, max_queue_delay_us=0, max_queue_rows=16,
                           max_concurrent_batches=1)  # fmt: skip

    async def scenario() -> None:
        first = [batcher.submit(X[i : i + 1]) for i in range(8)]
        await asyncio.sleep(0.01)  # first batch now in flight, queue empty again
        queued = [batcher.submit(X[i : i + 1]) for i in range(16)]
        with pytest.raises(QueueFullError, match="max_queue_rows = 16"):
            batcher.submit(X[:1])
        assert batcher.stats.rejected == 1
        await asyncio.gather(*first, *queued)  # everything accepted is still answered
        assert batcher.free_rows() == 16
        await batcher.close()
        with pytest.raises(BatcherClosedError):
            batcher.submit(X[:1])

    run(scenario())


def test_backend_failure_reaches_every_caller_of_the_batch(local: LocalOnnxBackend) -> None:
    failing = CountingBackend(local)
    failing.fail_with = InferenceError("boom")
    batcher = MicroBatcher(failing, max_batch_size=4, max_queue_delay_us=1000)

    async def scenario() -> list[object]:
        out = await asyncio.gather(*(batcher.infer(X[i : i + 1]) for i in range(4)),
                                   return_exceptions=True)  # fmt: skip
        failing.fail_with = None
        ok = await batcher.infer(X[:1])  # the batcher survives a failed batch
        await batcher.close()
        return [*out, ok]

    results = run(scenario())
    assert all(isinstance(r, InferenceError) for r in results[:4])
    assert isinstance(results[4], Inference)


def test_close_serves_what_is_queued(local: LocalOnnxBackend) -> None:
    batcher = MicroBatcher(local, max_batch_size=256, max_queue_delay_us=1_000_000)

    async def scenario() -> int:
        futures = [batcher.submit(X[i : i + 1]) for i in range(10)]
        t = time.perf_counter()
        await batcher.close()  # does not wait out the 1 s delay
        assert time.perf_counter() - t < 0.5
        return sum(1 for f in futures if f.done() and f.exception() is None)

    assert run(scenario()) == 10


def test_one_signal_per_symbol_from_its_last_warm_tick() -> None:
    from app.pipeline import last_warm_row_per_symbol

    symbol = np.array([3, 1, 3, 2, 1, 3, 2], np.int32)
    warm = np.array([True, True, True, True, False, False, False])
    # 3: rows 0, 2 warm (row 5 cold) -> 2; 1: row 1 (row 4 cold) -> 1; 2: row 3 -> 3.
    assert last_warm_row_per_symbol(symbol, warm).tolist() == [1, 2, 3]
    assert last_warm_row_per_symbol(symbol[:1], warm[:1]).tolist() == [0]
    assert last_warm_row_per_symbol(symbol, np.zeros(7, bool)).tolist() == []


def test_local_backend_names_the_model_it_loaded(
    local: LocalOnnxBackend, model: ModelArtifacts
) -> None:
    identity = local.identity
    assert (identity.variant, identity.model_version) == ("fp32", "signal_mlp/1")
    assert identity.sha256 == model.manifest["variants"]["fp32"]["sha256"]
    assert identity.sha256 == hashlib.sha256(model.path("fp32").read_bytes()).hexdigest()
    assert identity.direction_threshold == model.manifest["decision"]["direction_threshold"]
    int4 = LocalOnnxBackend(model.path("int4"), model.model_version)
    result = run(int4.infer(X[:3]))
    assert (result.identity.variant, result.backend) == ("int4", "local")
    assert result.identity.sha256 == model.manifest["variants"]["int4"]["sha256"]


def test_a_model_file_that_is_no_variant_of_its_build_is_refused(
    model: ModelArtifacts, tmp_path: Path
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model.root, copy)
    swapped = onnx.load(str(copy / "fp32" / "model.onnx"))
    swapped.doc_string = "someone else's model"
    onnx.save(swapped, str(copy / "fp32" / "model.onnx"))
    with pytest.raises(
        ModelMismatchError, match=r"fp32/model.onnx: sha256 [0-9a-f]{12}\.\.\. is no variant"
    ):
        LocalOnnxBackend(copy / "fp32" / "model.onnx", model.model_version)


def test_signals_carry_the_model_variant_hash_and_backend(local: LocalOnnxBackend) -> None:
    from app.signals import LatestSignals, signals_from_inference

    result = run(local.infer(X[:50]))
    signals = signals_from_inference(np.arange(50), np.arange(50) + 1000, result)
    threshold = local.identity.direction_threshold
    assert threshold is not None
    strength = result.probabilities[:, 2] - result.probabilities[:, 0]
    expected = np.where(strength > threshold, 3, np.where(strength < -threshold, 1, 2))
    np.testing.assert_array_equal(signals.direction, expected)  # the model's own rule
    cls = expected - 1
    np.testing.assert_allclose(signals.confidence, result.probabilities[np.arange(50), cls])
    store = LatestSignals(50)
    store.update(signals, seq=1)
    got = store.get(7)
    assert got is not None
    assert (got.model_version, got.model_variant, got.backend) == ("signal_mlp/1", "fp32", "local")
    assert got.model_sha256 == local.identity.sha256


def test_every_batch_is_timed_in_the_inference_latency_histogram(local: LocalOnnxBackend) -> None:
    from prometheus_client import REGISTRY

    def count(backend: str) -> float:
        value = REGISTRY.get_sample_value(
            "signal_inference_duration_seconds_count", {"backend": backend}
        )
        return value or 0.0

    before = count("local"), count("counting")
    failing = CountingBackend(local)
    failing.fail_with = InferenceError("down")

    async def scenario() -> None:
        batcher = MicroBatcher(local, max_batch_size=8, max_queue_delay_us=100)
        await asyncio.gather(*(batcher.infer(X[i : i + 1]) for i in range(16)))
        await batcher.close()
        broken = MicroBatcher(failing, max_batch_size=8, max_queue_delay_us=100)
        with pytest.raises(InferenceError):
            await broken.infer(X[:1])
        await broken.close()

    run(scenario())
    assert count("local") - before[0] >= 2  # one observation per backend call
    assert count("counting") - before[1] == 1  # failed calls are timed too


def test_a_sub_millisecond_queue_delay_is_kept_without_spinning(local: LocalOnnxBackend) -> None:
    async def scenario() -> tuple[float, float]:
        batcher = MicroBatcher(local, max_batch_size=256, max_queue_delay_us=400)
        await batcher.infer(X[:1])  # warm
        waits, cpu = [], []
        for _ in range(20):
            t, c = time.perf_counter(), time.process_time()
            await batcher.infer(X[:1])
            waits.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        await batcher.close()
        return float(np.median(waits)), float(np.median(cpu))

    waited, cpu = run(scenario())
    # The delay was waited for (not rounded away, not rounded up to asyncio's milliseconds).
    assert 0.0002 <= waited < 0.05
    assert cpu < waited  # and not by burning the core meanwhile
