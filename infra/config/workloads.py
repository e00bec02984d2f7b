"""The workloads the program deploys on every cluster: the signal service and Triton."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from app.config_errors import Problem
from infra.config.base import Model, StackContext
from infra.config.images import ImageReference, image_problems
from infra.config.resources import Resources, resource_gaps

# GKE's Cloud Storage FUSE sidecar, injected into pods that mount the models bucket, sized by
# annotations; only limits are annotated, so its requests equal them
# (cloud.google.com/kubernetes-engine/docs/how-to/cloud-storage-fuse-csi-driver-sidecar).
GCS_FUSE_SIDECAR = Resources(
    requests={"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"},
    limits={"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"},
)
# GKE runs at most 150,000 pods per cluster (cloud.google.com/kubernetes-engine/quotas).
MAX_PODS_PER_CLUSTER = 150_000


class Workload(Model):
    image: ImageReference = Field(min_length=1)
    replicas: int = Field(default=2, ge=1, le=MAX_PODS_PER_CLUSTER)
    max_replicas: int = Field(default=20, ge=1, le=MAX_PODS_PER_CLUSTER)
    resources: Resources
    # Spot VMs get 30 s notice before preemption: drain and exit inside it.
    termination_grace_seconds: int = Field(default=25, ge=5, le=25)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if self.replicas > self.max_replicas:
            yield Problem(
                "replicas", "replicas exceed maxReplicas", self.replicas, f"<= {self.max_replicas}"
            )
        yield from resource_gaps(self.resources, "resources")
        stack = StackContext.of(context)
        yield from image_problems("image", self.image, stack.prod, stack.unpinned_images)
        if stack.prod and self.max_replicas < 10 * self.replicas:
            yield Problem(
                "maxReplicas",
                "prod must be able to scale to 10x its baseline replicas",
                self.max_replicas,
                f">= {10 * self.replicas}",
            )


class SignalServiceWorkload(Workload):
    target_cpu_percent: int = Field(default=70, ge=10, le=95)
    # gRPC requests per second one pod serves at its target latency.
    target_requests_per_second: int = Field(default=500, ge=1)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if StackContext.of(context).prod and self.replicas < 2:
            yield Problem(
                "replicas", "prod needs at least two replicas across zones", self.replicas, ">= 2"
            )


class TritonModel(Model):
    """The model Triton serves and its dynamic batching: the values of its `config.pbtxt`
    (app.model.triton renders it); the service's micro-batcher never exceeds maxBatchSize."""

    # The name `python -m app.model build` gives the model (app.model.triton).
    name: str = Field(default="signal_mlp", pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    max_batch_size: int = Field(default=256, ge=1, le=4096)
    preferred_batch_sizes: tuple[int, ...] = (64, 128, 256)
    max_queue_delay_microseconds: int = Field(default=500, ge=0, le=1_000_000)
    instance_count: int = Field(default=2, ge=1, le=16)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        for i, size in enumerate(self.preferred_batch_sizes):
            if not 1 <= size <= self.max_batch_size:
                yield Problem(
                    f"preferredBatchSizes[{i}]",
                    "preferred batch size outside 1..maxBatchSize",
                    size,
                    f"1 to {self.max_batch_size}",
                )
        if list(self.preferred_batch_sizes) != sorted(set(self.preferred_batch_sizes)):
            yield Problem(
                "preferredBatchSizes",
                "preferred batch sizes must be unique and ascending",
                list(self.preferred_batch_sizes),
                "e.g. [64, 128, 256]",
            )


GPU = "nvidia.com/gpu"


class TritonWorkload(Workload):
    # Bounded by GPU capacity: the default GPU pool holds 4 nodes x 2 shared clients.
    max_replicas: int = Field(default=8, ge=1, le=MAX_PODS_PER_CLUSTER)
    # The GPU utilisation target: scale out when the average duty cycle passes it.
    target_gpu_duty_cycle: int = Field(default=85, ge=10, le=100)
    model: TritonModel = TritonModel()

    @property
    def gpu_request(self) -> str | None:
        return self.resources.requests.get(GPU)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        limit = self.resources.limits.get(GPU)
        if self.gpu_request is None or self.gpu_request != limit:
            yield Problem(
                "resources",
                f"Triton must request and limit the same number of {GPU}",
                {"requests": self.gpu_request, "limits": limit},
                'requests and limits both "1"',
            )


class Workloads(Model):
    signal_service: SignalServiceWorkload = SignalServiceWorkload(
        # As the image workflow pins it (`<repository>@<digest>`): it pushes no other tag.
        image="us-central1-docker.pkg.dev/signal-platform-dev/signal/signal-service"
        "@sha256:4f2a9c1e7b3d5a6f8e0c2b4d6a8f0e1c3b5d7a9f1e3c5b7d9a1f3e5c7b9d1a3f",
        resources=Resources(
            requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "2", "memory": "2Gi"}
        ),
    )
    triton: TritonWorkload = TritonWorkload(
        image="nvcr.io/nvidia/tritonserver:25.06-py3",
        resources=Resources(
            requests={"cpu": "2", "memory": "8Gi", GPU: "1"},
            limits={"cpu": "4", "memory": "16Gi", GPU: "1"},
        ),
    )
