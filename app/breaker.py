"""The circuit breaker: stop calling a dependency that keeps failing, then probe it once in a while.

Used wherever a failing dependency has a cheaper answer: the inference server (the
in-process model answers, `app.inference.ResilientBackend`) and the L2 cache (a miss
answers, `app.cache.RedisL2`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

log = structlog.get_logger("app.breaker")

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures; open → half-open after
    ``reset_timeout_s``; half-open lets one trial call through: success closes, failure reopens.
    ``name`` says what it protects, in its log lines.
    """

    failure_threshold: int = 3
    reset_timeout_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    name: str = "primary backend"
    state: BreakerState = "closed"
    failures: int = 0
    opened_at: float = 0.0
    times_opened: int = 0
    _trial_in_flight: bool = field(default=False, repr=False)

    def allow(self) -> bool:
        """Whether a call may go to the protected dependency now (claims the half-open trial)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self.clock() - self.opened_at < self.reset_timeout_s:
                return False
            self.state = "half_open"
            self._trial_in_flight = False
        if self._trial_in_flight:
            return False
        self._trial_in_flight = True
        return True

    def record_success(self) -> None:
        if self.state != "closed":
            log.info("circuit_closed", name=self.name)
        self.state = "closed"
        self.failures = 0
        self._trial_in_flight = False

    def abandon(self) -> None:
        """A claimed call ended without a verdict (cancelled, bad input): free the trial."""
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._trial_in_flight = False
        if self.state == "half_open":
            self._open()
            return
        self.failures += 1
        if self.state == "closed" and self.failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self.state = "open"
        self.opened_at = self.clock()
        self.times_opened += 1
        log.warning("circuit_open", name=self.name, retry_in_s=self.reset_timeout_s)
