"""A Prometheus HTTP API on loopback that answers from a function of (query, time).

The scaler and the detector service speak the real HTTP API to it (instant and range
queries, Prometheus' JSON shapes and error envelope); tests choose the data.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.app.loopback import serving

# (query, unix seconds) -> value, or None for "no series at that time".
Source = Callable[[str, float], float | None]


class PrometheusApi:
    def __init__(self, source: Source):
        self.source = source
        self.fail = False  # answer 503 with Prometheus' error envelope
        self.queries: list[tuple[str, dict[str, str]]] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each query
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                api.queries.append((url.path, params))
                api.authorizations.append(self.headers.get("Authorization"))
                if api.fail:
                    self._send(
                        503,
                        {"status": "error", "errorType": "unavailable", "error": "storage is down"},
                    )
                    return
                if url.path == "/api/v1/query":
                    at = float(params["time"])
                    value = api.source(params["query"], at)
                    result = [] if value is None else [{"metric": {}, "value": [at, str(value)]}]
                    self._send(
                        200,
                        {"status": "success", "data": {"resultType": "vector", "result": result}},
                    )
                elif url.path == "/api/v1/query_range":
                    start, end = float(params["start"]), float(params["end"])
                    step = float(params["step"])
                    values = []
                    t = start
                    while t <= end + 1e-9:
                        v = api.source(params["query"], t)
                        if v is not None:
                            values.append([t, str(v)])
                        t += step
                    result = [{"metric": {}, "values": values}] if values else []
                    self._send(
                        200,
                        {"status": "success", "data": {"resultType": "matrix", "result": result}},
                    )
                else:
                    self._send(
                        404, {"status": "error", "errorType": "not_found", "error": url.path}
                    )

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


@contextmanager
def serve(source: Source) -> Iterator[PrometheusApi]:
    api = PrometheusApi(source)
    with serving(api.server):
        yield api
