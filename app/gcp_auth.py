"""Access tokens of the workload's Google identity, from google-auth, for every client that needs one.

On GKE the identity is the pod's Kubernetes service account bound through Workload
Identity: ``google.auth.default()`` finds the metadata server and its token endpoint.
Two clients use the tokens: the L2 cache (Memorystore's IAM authentication takes one as
the Redis password, `app.cache`) and the Prometheus HTTP API of Managed Service for
Prometheus (a bearer token, `app.autoscale.prometheus`). google-auth decides when a
token is due for refresh (a few minutes before it expires); `AccessTokens` makes the
refresh thread-safe and keeps blocking HTTP off the event loop for async callers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class AccessTokens:
    """The current access token of ``credentials`` (default: the environment's, found by
    ``google.auth.default`` on first use), refreshed when google-auth says it is due."""

    def __init__(self, credentials: Any = None, scopes: Sequence[str] = (CLOUD_PLATFORM,)) -> None:
        self._credentials = credentials
        self._scopes = list(scopes)
        self._lock = threading.Lock()
        self.refreshes = 0

    @property
    def credentials(self) -> Any:
        if self._credentials is None:
            import google.auth

            self._credentials, _ = google.auth.default(scopes=self._scopes)
        return self._credentials

    @property
    def fresh(self) -> bool:
        """Whether the current token can be used without a refresh (no I/O)."""
        return self._credentials is not None and bool(self._credentials.valid)

    def __call__(self) -> str:
        """The current token, refreshing it first when due (blocking HTTP)."""
        with self._lock:
            credentials = self.credentials
            if not credentials.valid:
                from google.auth.transport.requests import Request

                credentials.refresh(Request())
                self.refreshes += 1
            return str(credentials.token)

    async def token_async(self) -> str:
        """`__call__` for the event loop: a refresh runs on a worker thread."""
        if self.fresh:
            return str(self._credentials.token)
        return await asyncio.to_thread(self)
