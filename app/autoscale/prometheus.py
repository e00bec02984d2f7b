"""A minimal Prometheus HTTP API client: instant and range queries, one series each.

Both services read their input through it. Cloud Monitoring serves the Prometheus HTTP
API for Managed Service for Prometheus data at
``https://monitoring.googleapis.com/v1/projects/<project>/location/global/prometheus``,
with an OAuth token that `MetadataToken` fetches from the GKE metadata server (Workload
Identity); a plain Prometheus needs none. Tests run a real HTTP server on loopback that
answers like one. Standard library only (urllib), no retries: the services skip a minute
they could not read, which their models tolerate.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np


class PrometheusError(RuntimeError):
    """A query failed: names the URL, the query and what went wrong."""


METADATA_TOKEN_URL = (
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
)


class MetadataToken:
    """An OAuth access token from the metadata server, refreshed a minute before it expires."""

    def __init__(self, url: str = METADATA_TOKEN_URL, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() > self._expires - 60:
                request = urllib.request.Request(self.url, headers={"Metadata-Flavor": "Google"})
                try:
                    with urllib.request.urlopen(request, timeout=self.timeout) as response:
                        body = json.loads(response.read())
                except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
                    raise PrometheusError(f"{self.url}: no access token: {exc}") from exc
                self._token = str(body["access_token"])
                self._expires = time.monotonic() + float(body.get("expires_in", 300))
            return self._token


class PrometheusClient:
    def __init__(
        self, base_url: str, timeout: float = 10.0, token: Callable[[], str] | None = None
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        headers = {"Authorization": f"Bearer {self.token()}"} if self.token else {}
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
