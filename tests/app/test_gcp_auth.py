"""The workload's access tokens: google-auth against a metadata server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.app.loopback import serving

REPO = Path(__file__).resolve().parents[2]
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
INFO_PATH = "/computeMetadata/v1/instance/service-accounts/default/"


class MetadataServer:
    """GKE's metadata server as google-auth speaks to it (the true edge: Google's): the
    detection ping, the service account's info and its access tokens, each answered only
    with the ``Metadata-Flavor: Google`` header, as the real one does."""

    def __init__(self) -> None:
        self.token_requests: list[str] = []
        self.refused = 0
        self.deny_tokens = False  # answer token requests 403, as for an unbound identity
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = urlparse(self.path).path
                if self.headers.get("Metadata-Flavor") != "Google":
                    server.refused += 1
                    self._send(403, {"error": "missing Metadata-Flavor header"})
                elif path == TOKEN_PATH and server.deny_tokens:
                    self._send(403, {"error": "the identity may not get tokens"})
                elif path == TOKEN_PATH:
                    server.token_requests.append(self.path)
                    n = len(server.token_requests)
                    self._send(200, {"access_token": f"token-{n}", "expires_in": 3599,
                                     "token_type": "Bearer"})  # fmt: skip
                elif path == INFO_PATH:
                    self._send(200, {"email": "signal@proj.iam.gserviceaccount.com",
                                     "aliases": ["default"], "scopes": []})  # fmt: skip
                else:  # the detection ping (and anything else): "this is GCE"
                    self._send(200, {})

            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_port}"


@contextmanager
def metadata_server() -> Iterator[MetadataServer]:
    server = MetadataServer()
    with serving(server.httpd):
        yield server


def run_as_workload(code: str, server: MetadataServer, tmp_path: Path) -> list[str]:
    """Run ``code`` in a process whose only Google identity is the metadata server's (google-auth
    reads the metadata host when it is imported, so a process of its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_"))}
    env.update(GCE_METADATA_HOST=server.host, GCE_METADATA_IP=server.host,
               CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), HOME=str(tmp_path))  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_environments_identity_is_found_and_its_token_reused_until_due(
    tmp_path: Path,
) -> None:
    """With no credentials given, google-auth finds the metadata server (as on GKE with
    Workload Identity); the token is fetched once, with the metadata header, and reused."""
    code = (
        "from app.gcp_auth import AccessTokens\n"
        "tokens = AccessTokens()\n"
        "print(tokens(), tokens(), tokens.fresh, tokens.refreshes)\n"
    )
    with metadata_server() as server:
        out = run_as_workload(code, server, tmp_path)
    assert out == ["token-1", "token-1", "True", "1"]
    assert len(server.token_requests) == 1 and "cloud-platform" in server.token_requests[0]
    assert server.refused == 0  # every request carried Metadata-Flavor: Google


def test_the_async_path_refreshes_off_the_event_loop_and_errors_reach_the_caller(
    tmp_path: Path,
) -> None:
    code = (
        "import asyncio, threading\n"
        "from google.auth import compute_engine\n"
        "from app.gcp_auth import AccessTokens\n"
        "tokens = AccessTokens(compute_engine.Credentials())\n"
        "async def main():\n"
        "    loop_thread = threading.get_ident()\n"
        "    seen = []\n"
        "    orig = tokens.credentials.refresh\n"
        "    def refresh(request):\n"
        "        seen.append(threading.get_ident() != loop_thread)\n"
        "        orig(request)\n"
        "    tokens.credentials.refresh = refresh\n"
        "    print(await tokens.token_async(), await tokens.token_async(), seen)\n"
        "asyncio.run(main())\n"
    )
    with metadata_server() as server:
        out = run_as_workload(code, server, tmp_path)
    assert out == ["token-1", "token-1", "[True]"]  # refreshed once, on a worker thread

    denied = "from google.auth import compute_engine\nfrom app.gcp_auth import AccessTokens\n"
    denied += "AccessTokens(compute_engine.Credentials())()\n"
    with metadata_server() as server:
        server.deny_tokens = True
        with pytest.raises(AssertionError, match="RefreshError"):
            run_as_workload(denied, server, tmp_path)
