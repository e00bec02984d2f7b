"""The policy pack, running for real, and reset to its default config before each test."""

from __future__ import annotations

import pytest

from tests.policies.pack_process import shared_pack
from tools.analyzer import PolicyPackProcess


@pytest.fixture(scope="session")
def pack_process(request: pytest.FixtureRequest) -> PolicyPackProcess:
    return shared_pack(request)


@pytest.fixture
def pack(pack_process: PolicyPackProcess) -> PolicyPackProcess:
    pack_process.configure({})
    return pack_process
