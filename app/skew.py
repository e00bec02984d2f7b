"""Training/serving skew: the model inputs served, against the distribution the model trained on.

The model build records each input's training deciles and the share of training rows
in each bin (``manifest.json``, ``input_distribution``). ``SkewMonitor`` counts the rows
sent to the model into the same bins and, every ``window_rows`` rows, sets
``signal_feature_drift_psi{input}`` to the population stability index of that window
against training (0: same distribution; above 0.1 shifted, above 0.25 a different
population), then starts a new window. One served row in ``log_every`` is logged as a
``served_features`` JSON line (the inputs by name and the model's hash) so skew can be
studied offline.
"""

from __future__ import annotations

import numpy as np
import structlog

from app.model.manifest import ModelArtifacts
from app.telemetry import Metrics, default_metrics

log = structlog.get_logger("app.skew")
CHUNK_ROWS = 1024  # rows binned at a time
PSI_FLOOR = 1e-4  # share given to an empty bin, so a bin seen on one side only is finite


class SkewMonitor:
    """PSI per model input over windows of served rows; sampled logs of served rows."""

    def __init__(
        self,
        artifacts: ModelArtifacts,
        *,
        window_rows: int = 20_000,
        log_every: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        reference = artifacts.manifest.get("input_distribution")
        if not isinstance(reference, dict):
            raise ValueError(
                f"{artifacts.manifest_path}: no input_distribution (built before it was "
                "recorded); rebuild the model to monitor skew"
            )
        if window_rows < 1 or log_every < 1:
            raise ValueError(f"window_rows = {window_rows}, log_every = {log_every}: both >= 1")
        self.inputs: list[str] = list(reference["inputs"])
        self.edges = [np.asarray(e, dtype=np.float64) for e in reference["edges"]]
        self.expected = [
            np.maximum(np.asarray(s, np.float64), PSI_FLOOR) for s in reference["shares"]
        ]
        self.window_rows = window_rows
        self.log_every = log_every
        self.metrics = metrics or default_metrics()
        self._counts = [np.zeros(e.shape[0] + 1, np.int64) for e in self.edges]
        self._chunk = np.empty((min(CHUNK_ROWS, window_rows), len(self.inputs)), np.float32)
        self._filled = 0  # rows in the chunk, not yet binned
        self._rows = 0  # rows binned in this window
        self._seen = 0  # rows ever observed: picks the sampled ones
        self.last_psi: dict[str, float] = {}

    def observe(self, inputs: np.ndarray, model_sha256: str = "") -> None:
        """Count the rows ``inputs`` (float32 ``[n, N_INPUTS]``) sent to the model.

        Rows are copied into a preallocated chunk and binned a chunk at a time, so the cost
        per inference call is one copy, whatever its size.
        """
        n = int(inputs.shape[0])
        first = -self._seen % self.log_every  # the rows whose overall index is a multiple
        for r in range(first, n, self.log_every):
            log.info(
                "served_features",
                model_sha256=model_sha256,
                **{name: float(inputs[r, i]) for i, name in enumerate(self.inputs)},
            )
        self._seen += n
        done = 0
        while done < n:
            take = min(n - done, self._chunk.shape[0] - self._filled)
            self._chunk[self._filled : self._filled + take] = inputs[done : done + take]
            self._filled += take
            done += take
            if (
                self._filled == self._chunk.shape[0]
                or self._rows + self._filled >= self.window_rows
            ):
                self._bin()

    def _bin(self) -> None:
        rows = self._chunk[: self._filled]
        for i, edges in enumerate(self.edges):
            self._counts[i] += np.bincount(
                np.searchsorted(edges, rows[:, i], side="right"), minlength=edges.shape[0] + 1
            )
        self._rows += self._filled
        self._filled = 0
        if self._rows >= self.window_rows:
            self._close_window()

    def _close_window(self) -> None:
        for i, name in enumerate(self.inputs):
            served = np.maximum(self._counts[i] / self._rows, PSI_FLOOR)
            psi = float(((served - self.expected[i]) * np.log(served / self.expected[i])).sum())
            self.last_psi[name] = psi
            self.metrics.feature_drift.labels(name).set(psi)
            self._counts[i][:] = 0
        self._rows = 0
