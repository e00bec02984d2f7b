"""One real policy-pack process for the whole pytest session, shared by every test folder."""

from __future__ import annotations

import pytest

from tests.policies.cases import PROJECT, STACK
from tools.analyzer import PolicyPackProcess

_shared: PolicyPackProcess | None = None


def shared_pack(request: pytest.FixtureRequest) -> PolicyPackProcess:
    """Start the pack on first use; stop it when the session ends."""
    global _shared
    if _shared is None or not _shared.alive():
        _shared = PolicyPackProcess(project=PROJECT, stack=STACK)
        _shared.start()
        request.config.add_cleanup(_shared.close)
    return _shared
