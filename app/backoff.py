"""Exponential backoff: how long to wait before retrying after consecutive failures."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """``initial_s`` after the first failure, doubling with each one after it, at most
    ``max_s``; a success starts over."""

    initial_s: float
    max_s: float
    failures: int = 0

    def failed(self) -> float:
        """Count a failure; returns the seconds to wait before the next try."""
        self.failures += 1
        return min(self.initial_s * 2.0 ** min(self.failures - 1, 64), self.max_s)

    def succeeded(self) -> None:
        self.failures = 0
