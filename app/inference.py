"""Inference backends behind one interface: in-process ONNX Runtime and KServe-v2 over gRPC.

* ``LocalOnnxBackend``: ONNX Runtime in this process; ``app.fused.FusedBackend`` is the
  other in-process backend (the model compiled into the feature path), the default;
  ``in_process_backend`` picks one (``model.backend``).
* ``KServeBackend``: Triton (production) or MLServer (local runs and tests) through
  ``tritonclient.grpc.aio``: one persistent channel, a deadline on every call.
* ``ResilientBackend``: a primary behind a ``CircuitBreaker`` with a fallback: when
  the server fails, requests go to the in-process model; after ``reset_timeout_s`` one
  trial request probes the server and, if it answers, traffic returns to it.

A backend takes float32 ``[n, N_INPUTS]`` and returns an ``Inference``: float32
``[n, N_CLASSES]`` probabilities, the ``ModelIdentity`` of the model that computed them
(name, version, variant, SHA-256 of its ONNX file, direction threshold) and the backend
that ran it. The in-process backend hashes the bytes it loads; a KServe server is
believed when it names its model's hash in the response parameters (``model_sha256``,
as this project's MLServer runtime does), else the build's manifest says what its
Triton repository holds. Requests larger than the server's ``max_batch_size`` are split.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.breaker import CircuitBreaker
from app.model.contract import INPUT_NAME, N_CLASSES, N_INPUTS, OUTPUT_NAME
from app.model.manifest import (
    SHA256_PARAMETER,
    UNKNOWN_VARIANT,
    VARIANT_PARAMETER,
    ModelArtifacts,
    ModelIdentity,
    Variant,
    sha256_of,
)

log = logging.getLogger(__name__)


class InferenceError(RuntimeError):
    """The backend could not produce probabilities for a batch."""


@dataclass(frozen=True)
class Inference:
    probabilities: np.ndarray  # float32 [n, N_CLASSES]
    identity: ModelIdentity  # the model that computed them
    backend: str  # which backend served the call ("local", "kserve")

    @property
    def model_version(self) -> str:
        """``name/version`` of the model that computed them."""
        return self.identity.model_version

    def rows(self, lo: int, hi: int) -> Inference:
        return Inference(self.probabilities[lo:hi], self.identity, self.backend)


class InferenceBackend(abc.ABC):
    """Turns model inputs into class probabilities. Safe to call concurrently."""

    name: str = "backend"
    artifacts: ModelArtifacts | None = None  # the build whose manifest describes its model

    @abc.abstractmethod
    async def infer(self, inputs: np.ndarray) -> Inference:
        """Probabilities for ``inputs`` (float32 ``[n, N_INPUTS]``, n >= 1)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections; the backend is unusable afterwards."""


def check_inputs(inputs: np.ndarray) -> np.ndarray:
    """``inputs`` as C-contiguous float32 ``[n, N_INPUTS]`` with n >= 1, or ValueError."""
    arr = np.ascontiguousarray(inputs, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != N_INPUTS or arr.shape[0] < 1:
        raise ValueError(f"inputs: shape {arr.shape}: must be (n >= 1, {N_INPUTS})")
    return arr


def model_identity(
    model_path: Path, data: bytes, model_version: str
) -> tuple[ModelArtifacts | None, ModelIdentity]:
    """The build a model file belongs to and the identity of its bytes (``ModelMismatchError``
    if they are no variant of that build); with no manifest beside it, ``model_version`` of
    unknown variant with the file's hash."""
    artifacts = ModelArtifacts.beside(model_path)
    if artifacts is not None:
        return artifacts, artifacts.identity_of_bytes(data, model_path)
    name, _, version = model_version.partition("/")
    return None, ModelIdentity(name, version, UNKNOWN_VARIANT, sha256_of(data))


class LocalOnnxBackend(InferenceBackend):
    """ONNX Runtime in this process (CPU).

    Small batches run inline on the caller's thread: the model takes microseconds, less
    than a hop to a worker thread. Batches of ``offload_rows`` or more run in a thread
    (ONNX Runtime releases the GIL), so the event loop keeps serving meanwhile.
    """

    name = "local"

    def __init__(
        self,
        model_path: Path,
        model_version: str,
        *,
        intra_op_threads: int = 1,
        offload_rows: int = 1024,
    ) -> None:
        """Load ``model_path``; its identity comes from the manifest of the build it belongs
        to (``ModelMismatchError`` if its bytes are no variant of that build), or, with no
        manifest beside it, is ``model_version`` of unknown variant with the file's hash."""
        import onnxruntime as ort

        data = model_path.read_bytes()
        self.artifacts, self.identity = model_identity(model_path, data, model_version)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.model_version = self.identity.model_version
        self.model_path = model_path
        self._offload_rows = offload_rows

    def infer_sync(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities for ``inputs``, on this thread."""
        out = self._session.run([OUTPUT_NAME], {INPUT_NAME: check_inputs(inputs)})[0]
        return np.asarray(out, dtype=np.float32)

    async def infer(self, inputs: np.ndarray) -> Inference:
        if inputs.shape[0] >= self._offload_rows:
            probs = await asyncio.to_thread(self.infer_sync, inputs)
        else:
            probs = self.infer_sync(inputs)
        return Inference(probs, self.identity, self.name)


IN_PROCESS_BACKENDS: tuple[str, ...] = ("fused", "onnxruntime")


def in_process_backend(
    artifacts: ModelArtifacts,
    variant: Variant,
    backend: str = "fused",
    *,
    intra_op_threads: int = 1,
) -> InferenceBackend:
    """The built model's ``variant`` in this process (``model.backend``): ``fused``, the model
    compiled into the feature path (``app.fused``), or ``onnxruntime``."""
    path = artifacts.path(variant)
    if backend == "fused":
        from app.fused import FusedBackend  # it builds on this module

        return FusedBackend(path, artifacts.model_version)
    if backend == "onnxruntime":
        return LocalOnnxBackend(path, artifacts.model_version, intra_op_threads=intra_op_threads)
    raise ValueError(f"backend = {backend!r}: must be one of {', '.join(IN_PROCESS_BACKENDS)}")


class KServeBackend(InferenceBackend):
    """A KServe-v2 gRPC server (Triton, MLServer) through ``tritonclient.grpc.aio``.

    The client and its channel are created on first use, inside the running event loop,
    and reused for every call after that. Every call has a deadline of ``timeout_s``.
    ``artifacts`` (the build the server was given) names the model that answered when
    the server does not, and refuses one that answers with another build's hash.
    Requests of more than ``max_batch_size`` rows go as concurrent calls of at most that
    many: the server's own limit where it says (Triton's ModelConfig, asked once), else the
    one given, else the build's Triton ``max_batch_size``.
    """

    name = "kserve"

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        model_version: str = "",
        timeout_s: float = 0.5,
        reconnect_backoff_ms: int = 200,
        artifacts: ModelArtifacts | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.model_version = model_version
        self.timeout_s = timeout_s
        self.artifacts = artifacts
        if max_batch_size is None and artifacts is not None:
            max_batch_size = artifacts.triton_max_batch_size
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size = {max_batch_size}: must be >= 1")
        self.max_batch_size = max_batch_size
        self._reconnect_backoff_ms = reconnect_backoff_ms
        self._client: Any = None
        self._identities: dict[tuple[str, str, str], ModelIdentity] = {}
        self._limit_asked = False  # whether the server was asked for its max_batch_size
        self.calls = 0

    def _get_client(self) -> Any:
        if self._client is None:
            import tritonclient.grpc.aio as grpcclient

            backoff = self._reconnect_backoff_ms
            self._client = grpcclient.InferenceServerClient(
                self.url,
                channel_args=[
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    ("grpc.keepalive_time_ms", 30_000),
                    ("grpc.keepalive_timeout_ms", 10_000),
                    ("grpc.keepalive_permit_without_calls", 1),
                    # Reconnect quickly once the server is back: the breaker's probe
                    # should find the channel ready, not in a long backoff.
                    ("grpc.initial_reconnect_backoff_ms", backoff),
                    ("grpc.min_reconnect_backoff_ms", backoff),
                    ("grpc.max_reconnect_backoff_ms", 5 * backoff),
                ],
            )
        return self._client

    async def infer(self, inputs: np.ndarray) -> Inference:
        arr = check_inputs(inputs)
        limit = await self._batch_limit()
        if limit is None or arr.shape[0] <= limit:
            return await self._infer_once(arr)
        parts = await asyncio.gather(
            *(self._infer_once(arr[lo : lo + limit]) for lo in range(0, arr.shape[0], limit))
        )
        identities = {p.identity for p in parts}
        if len(identities) > 1:
            raise InferenceError(
                f"{self.url}: the parts of one request were answered by different models: "
                + ", ".join(sorted(f"{i.model_version} {i.variant}" for i in identities))
            )
        probs = np.concatenate([p.probabilities for p in parts])
        return Inference(probs, parts[0].identity, self.name)

    async def _batch_limit(self) -> int | None:
        """The most rows one call may carry: the server's own ``max_batch_size`` where it says
        (Triton's ModelConfig; the smaller, if one was also given), else the one given.
        Asked once, on the first call that reaches the server."""
        if self._limit_asked:
            return self.max_batch_size
        from tritonclient.utils import InferenceServerException

        try:
            answer = await self._get_client().get_model_config(
                self.model_name, self.model_version, client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            if "UNIMPLEMENTED" not in str(exc.status()):  # unreachable: so is inference
                raise InferenceError(f"{self.url}: {exc.status()} {exc.message()}") from exc
            self._limit_asked = True  # a server without the RPC (MLServer) never says
            return self.max_batch_size
        self._limit_asked = True
        served = int(answer.config.max_batch_size)
        if served > 0:
            self.max_batch_size = min(served, self.max_batch_size or served)
        return self.max_batch_size

    async def _infer_once(self, arr: np.ndarray) -> Inference:
        import tritonclient.grpc.aio as grpcclient
        from tritonclient.utils import InferenceServerException

        from app.telemetry import trace_headers

        client = self._get_client()
        tensor = grpcclient.InferInput(INPUT_NAME, list(arr.shape), "FP32")
        tensor.set_data_from_numpy(arr)
        self.calls += 1
        try:
            result = await client.infer(
                self.model_name,
                [tensor],
                model_version=self.model_version,
                outputs=[grpcclient.InferRequestedOutput(OUTPUT_NAME)],
                client_timeout=self.timeout_s,
                headers=trace_headers(),  # the trace continues in the inference server
            )
        except InferenceServerException as exc:
            raise InferenceError(f"{self.url}: {exc.status()} {exc.message()}") from exc
        probs = result.as_numpy(OUTPUT_NAME)
        if probs is None or probs.shape != (arr.shape[0], N_CLASSES):
            shape = None if probs is None else probs.shape
            raise InferenceError(
                f"{self.url}: output {OUTPUT_NAME} has shape {shape}, "
                f"expected ({arr.shape[0]}, {N_CLASSES})"
            )
        identity = self._identity(result.get_response())
        return Inference(np.asarray(probs, dtype=np.float32), identity, self.name)

    def _identity(self, response: Any) -> ModelIdentity:
        """Which model answered: the server's word (its model's hash), else the manifest's."""
        name = response.model_name
        version = response.model_version or self.model_version or "?"
        params = response.parameters
        sha = params[SHA256_PARAMETER].string_param if SHA256_PARAMETER in params else ""
        key = (name, version, sha)
        known = self._identities.get(key)
        if known is not None:
            return known
        if sha:
            found = self.artifacts.identity_of_sha(sha) if self.artifacts is not None else None
            if found is None and self.artifacts is not None:
                raise InferenceError(
                    f"{self.url}: model {name}/{version} has sha256 {sha[:12]}..., no variant "
                    f"of the build in {self.artifacts.manifest_path}: the server runs another build"
                )
            if found is None:
                said = params[VARIANT_PARAMETER].string_param if VARIANT_PARAMETER in params else ""
                found = ModelIdentity(name, version, said or UNKNOWN_VARIANT, sha)
        else:
            found = (
                self.artifacts.triton_identity(name, version)
                if self.artifacts is not None
                else None
            ) or ModelIdentity(name, version, UNKNOWN_VARIANT, "")
        identity = replace(found, name=name, version=version)
        self._identities[key] = identity
        return identity

    async def server_ready(self) -> bool:
        """Whether the server is up and the model loaded (never raises)."""
        try:
            client = self._get_client()
            return bool(
                await client.is_model_ready(
                    self.model_name, self.model_version, client_timeout=self.timeout_s
                )
            )
        except Exception:
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class ResilientBackend(InferenceBackend):
    """``primary`` while it works, ``fallback`` while the breaker is open or a call fails."""

    name = "resilient"

    def __init__(
        self, primary: InferenceBackend, fallback: InferenceBackend, breaker: CircuitBreaker
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self.fallback_calls = 0
        self.artifacts = fallback.artifacts or primary.artifacts

    async def infer(self, inputs: np.ndarray) -> Inference:
        from app.telemetry import default_metrics

        reason = "circuit_open"
        if self.breaker.allow():
            try:
                result = await self.primary.infer(inputs)
            except (TimeoutError, InferenceError, OSError) as exc:
                self.breaker.record_failure()
                reason = "primary_failed"
                log.debug("primary backend failed, using the fallback: %s", exc)
            except BaseException:
                self.breaker.abandon()
                raise
            else:
                self.breaker.record_success()
                return result
        self.fallback_calls += 1
        default_metrics().inference_fallbacks.labels(reason).inc()
        return await self.fallback.infer(inputs)

    async def close(self) -> None:
        await self.primary.close()
        await self.fallback.close()
