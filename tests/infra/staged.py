"""The repository's stacks planned at an earlier deploy stage (`signal-platform:stage`), each
made once per session: what a new project's first `pulumi up` and the one after it declare."""

from __future__ import annotations

from functools import cache

from tests.conftest import REPO
from tools.engine import plan
from tools.inventory import Inventory


@cache
def staged_plan(stack: str, stage: str) -> Inventory:
    return plan(REPO, stack, {"signal-platform:stage": stage})
