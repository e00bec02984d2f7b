"""The Kubernetes HPA algorithm and a Deployment's start-up delay, minute by minute.

What the simulations run both scalers through, so they differ only in what they ask for.
`HorizontalPodAutoscaler.recommend` follows the autoscaling/v2 controller:

* per metric, ``desired = ceil(ready * usage / target)``, no change while the usage
  ratio is within the tolerance (10%);
* per-pod metrics (CPU utilisation, a Pods metric such as requests per second) on
  scale-up count pods that are not ready yet as using nothing, and give up the scale-up
  if that brings the ratio back within the tolerance (so a scale-up in flight is not
  doubled);
* an External metric with an ``AverageValue`` target proposes ``ceil(value / target)``
  (the predictive scaler publishes replicas and the target is 1);
* the largest proposal wins, clamped to [min, max];
* scale-down takes the highest recommendation of the stabilisation window (5 minutes by
  default); scale-up is immediate.

`Deployment` holds pods with the minute each becomes ready; scaling down removes pods
that are not ready first, then the youngest, as the ReplicaSet controller does.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class HpaSpec:
    min_replicas: int
    max_replicas: int
    # Target average CPU utilisation as a fraction of the request; None: no CPU metric.
    cpu_target: float | None = 0.7
    # AverageValue target of a Pods metric (requests per second per pod); None: none.
    pods_target: float | None = None
    # AverageValue target of the external desired-replicas metric; None: no such metric.
    external_target: float | None = None
    tolerance: float = 0.1
    scale_down_window_minutes: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 1 <= min_replicas <= max_replicas "
                f"(got {self.min_replicas}, {self.max_replicas})"
            )
        if self.cpu_target is None and self.external_target is None and self.pods_target is None:
            raise ValueError("an HPA needs at least one metric")
        if self.pods_target is not None and self.pods_target <= 0:
            raise ValueError(f"pods_target must be > 0 (got {self.pods_target})")
        if self.cpu_target is not None and not 0 < self.cpu_target <= 1.5:
            raise ValueError(f"cpu_target must be in (0, 1.5] (got {self.cpu_target})")
        if self.external_target is not None and self.external_target <= 0:
            raise ValueError(f"external_target must be > 0 (got {self.external_target})")


class HorizontalPodAutoscaler:
    def __init__(self, spec: HpaSpec):
        self.spec = spec
        self._recent: deque[int] = deque(maxlen=max(spec.scale_down_window_minutes, 1))

    def _per_pod_proposal(self, current: int, ready: int, usage: float, target: float) -> int:
        """A per-pod average (CPU utilisation, or a Pods metric) over the ready pods."""
        if ready == 0:
            return current
        ratio = usage / target
        if abs(ratio - 1.0) <= self.spec.tolerance:
            return current
        if ratio > 1.0 and current > ready:
            # Not-ready pods count as using nothing on the way up.
            ratio = usage * ready / (target * current)
            if ratio <= 1.0 + self.spec.tolerance:
                return current
            return math.ceil(ratio * current)
        return math.ceil(ratio * ready)

    def _external_proposal(self, current: int, value: float) -> int:
        target = self.spec.external_target
        assert target is not None
        if current > 0 and abs(value / (target * current) - 1.0) <= self.spec.tolerance:
            return current
        return math.ceil(value / target - 1e-9)

    def recommend(
        self,
        current: int,
        ready: int,
        cpu_utilisation: float | None = None,
        external_value: float | None = None,
        pods_value: float | None = None,
    ) -> int:
        """The replica count the controller sets, given last interval's metrics (per-pod
        averages over the ready pods for CPU and the Pods metric)."""
        spec = self.spec
        proposals: list[int] = []
        if spec.cpu_target is not None and cpu_utilisation is not None:
            proposals.append(
                self._per_pod_proposal(current, ready, cpu_utilisation, spec.cpu_target)
            )
        if spec.pods_target is not None and pods_value is not None:
            proposals.append(self._per_pod_proposal(current, ready, pods_value, spec.pods_target))
        if spec.external_target is not None and external_value is not None:
            proposals.append(self._external_proposal(current, external_value))
        proposal = max(proposals) if proposals else current
        proposal = min(max(proposal, spec.min_replicas), spec.max_replicas)
        self._recent.append(proposal)
        if proposal >= current:
            return proposal
        # Scale down only as far as the highest recommendation of the window allows.
        return min(current, max(self._recent))


class Deployment:
    """Pods and the minute each is (or will be) ready; counts pod-minutes as it goes."""

    def __init__(self, replicas: int, startup_minutes: int, now: int = 0):
        if replicas < 0 or startup_minutes < 0:
            raise ValueError("replicas and startup_minutes must be >= 0")
        self.startup_minutes = startup_minutes
        # Ready-at minutes, oldest first; the initial pods are ready already.
        self._ready_at: list[int] = [now - startup_minutes] * replicas
        self.pod_minutes = 0

    @property
    def replicas(self) -> int:
        return len(self._ready_at)

    def ready(self, now: int) -> int:
        return sum(1 for t in self._ready_at if t <= now)

    def scale(self, replicas: int, now: int) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0 (got {replicas})")
        current = len(self._ready_at)
        if replicas > current:
            self._ready_at += [now + self.startup_minutes] * (replicas - current)
        elif replicas < current:
            # Not-ready pods go first, then the youngest ready ones.
            self._ready_at.sort(key=lambda t: (t <= now, -t))
            del self._ready_at[: current - replicas]
            self._ready_at.sort()

    def tick(self) -> None:
        """Account one minute of every pod that exists (starting pods cost too)."""
        self.pod_minutes += len(self._ready_at)
