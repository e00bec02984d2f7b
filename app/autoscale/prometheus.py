"""A minimal Prometheus HTTP API client: instant and range queries, one series each.

Both services read their input through it. Cloud Monitoring serves the Prometheus HTTP
API for Managed Service for Prometheus data at
``https://monitoring.googleapis.com/v1/projects/<project>/location/global/prometheus``,
with the workload's OAuth access token (`app.gcp_auth.AccessTokens`: Workload Identity on
GKE); a plain Prometheus needs none. Tests run a real HTTP server on loopback that answers
like one. urllib, no retries: the services skip a minute they could not read (a token
that could not be had included), which their models tolerate.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np

# Both services read Prometheus on a grid of whole minutes (step 60 s).
MINUTE = 60


def minute_of(ts: float) -> int:
    """Minutes since the epoch of the minute holding ``ts``."""
    return int(ts // MINUTE)


class PrometheusError(RuntimeError):
    """A query failed: names the URL, the query and what went wrong."""


class PrometheusClient:
    """Queries over HTTP; ``token`` gives a bearer token per request (e.g. `AccessTokens`)."""

    def __init__(
        self, base_url: str, timeout: float = 10.0, token: Callable[[], str] | None = None
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        headers: dict[str, str] = {}
        if self.token is not None:
            try:
                headers["Authorization"] = f"Bearer {self.token()}"
            except Exception as exc:  # google-auth's refresh errors, the metadata server down
                raise PrometheusError(f"{url}: no access token: {exc!r}") from exc
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode(errors="replace")
            try:  # Prometheus' error envelope: {"status": "error", "errorType", "error"}
                envelope = json.loads(raw)
                detail = f"{envelope.get('errorType')}: {envelope.get('error')}"
            except (json.JSONDecodeError, AttributeError):
                detail = raw[:200]
            raise PrometheusError(f"{url}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as exc:
            raise PrometheusError(f"{url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{url}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at: float) -> float:
        """The value of ``promql`` at ``at`` (unix seconds): the sum over the series it
        returns, NaN when it returns none (nothing to observe this minute)."""
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        result = data.get("result") or []
        if data.get("resultType") == "scalar":
            return float(result[1])
        values = [float(series["value"][1]) for series in result]
        finite = [v for v in values if math.isfinite(v)]
        return float(sum(finite)) if finite else math.nan

    def query_range(self, promql: str, start: float, end: float, step: float) -> np.ndarray:
        """Values of ``promql`` on the grid ``start, start + step, ... <= end``, summed over
        series; NaN where no series had a sample."""
        if step <= 0 or end < start:
            raise ValueError(f"need step > 0 and end >= start (got {start}, {end}, {step})")
        data = self._get(
            "/api/v1/query_range",
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        points = math.floor((end - start) / step + 1e-9) + 1
        out = np.full(points, np.nan)
        for series in data.get("result") or []:
            for ts, raw in series.get("values") or []:
                index = round((float(ts) - start) / step)
                value = float(raw)
                if 0 <= index < points and math.isfinite(value):
                    out[index] = value if math.isnan(out[index]) else out[index] + value
        return out
