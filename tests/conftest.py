"""Fixtures shared by every test folder: the repository's plans, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools import golden
from tools.engine import plan
from tools.inventory import Inventory

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


# Each stack's plan, and the files it opened (tests/tools/test_golden.py compares both).
_PLANS: dict[str, tuple[Inventory, set[str]]] = {}


def recorded_plan(stack: str) -> tuple[Inventory, set[str]]:
    if stack not in _PLANS:
        with golden.recording() as opened:
            inventory = plan(REPO, stack)
        _PLANS[stack] = (inventory, set(opened))
    return _PLANS[stack]


@pytest.fixture(scope="session")
def dev_plan() -> Inventory:
    return recorded_plan("dev")[0]


@pytest.fixture(scope="session")
def prod_plan() -> Inventory:
    return recorded_plan("prod")[0]


@pytest.fixture(scope="session", params=["dev", "prod"])
def stack_plan(
    request: pytest.FixtureRequest, dev_plan: Inventory, prod_plan: Inventory
) -> Inventory:
    """Each of the repository's stacks in turn."""
    return {"dev": dev_plan, "prod": prod_plan}[request.param]
