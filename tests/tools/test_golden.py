"""The engine's speed work changes nothing a plan declares.

Two guards: the golden digests of dev and prod (`tests/tools/golden.py`: same program
files, same inventory), and the same plan made the SDK's default way (a thread-pool hop per
monitor call, the default garbage-collector thresholds) against the engine's fast path.
"""

from __future__ import annotations

import pytest

from tests.conftest import REPO, recorded_plan
from tests.tools import golden
from tools.engine import plan_here, read_project, stack_config
from tools.inventory import Inventory

FIXTURES = REPO / "tests" / "tools" / "fixtures"


@pytest.mark.parametrize("stack", golden.STACKS)
def test_the_inventory_matches_the_golden_digests(stack: str):
    expected = golden.load()[stack]
    inventory, opened = recorded_plan(stack)
    program = golden.fingerprint(opened, expected["program"])
    changed = sorted(
        name for name in program if program[name] != expected["program"].get(name, "missing")
    )
    if changed:
        pytest.skip(
            f"the program changed since the golden was made ({', '.join(changed[:5])}"
            f"{' ...' if len(changed) > 5 else ''}): regenerate with"
            " `.venv/bin/python -m tests.tools.golden` if the new inventory is intended"
        )
    actual = golden.digests(inventory)
    rows, want = actual["resources"], expected["resources"]
    assert sorted(set(want) - set(rows)) == [], "resources the golden plan had and this one lacks"
    assert sorted(set(rows) - set(want)) == [], "resources this plan has that the golden lacked"
    assert [urn for urn in rows if rows[urn] != want[urn]] == [], "resources whose rows differ"
    assert actual["outputs"] == expected["outputs"]


def test_the_fast_path_plans_what_the_sdk_default_path_plans(dev_plan: Inventory):
    project = read_project(REPO)
    slow = plan_here(project, "dev", stack_config(project, "dev"), sdk_defaults=True)
    assert golden.digests(slow) == golden.digests(dev_plan)


@pytest.mark.parametrize("fixture", ["cloudrun_sql", "gke_canary"])
def test_both_paths_agree_on_default_providers_and_unknowns(fixture: str):
    project = read_project(FIXTURES / fixture)
    config = stack_config(project, "test")
    fast = plan_here(project, "test", config)
    slow = plan_here(project, "test", config, sdk_defaults=True)
    assert golden.digests(slow) == golden.digests(fast)
    assert [r.name for r in fast.resources if r.name.startswith("default_")]
