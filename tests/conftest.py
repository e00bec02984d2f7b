"""Fixtures shared by every test folder: the repository's plans, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.engine import plan
from tools.inventory import Inventory

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def dev_plan() -> Inventory:
    return plan(REPO, "dev")


@pytest.fixture(scope="session")
def prod_plan() -> Inventory:
    return plan(REPO, "prod")


@pytest.fixture(scope="session", params=["dev", "prod"])
def stack_plan(
    request: pytest.FixtureRequest, dev_plan: Inventory, prod_plan: Inventory
) -> Inventory:
    """Each of the repository's stacks in turn."""
    return {"dev": dev_plan, "prod": prod_plan}[request.param]
