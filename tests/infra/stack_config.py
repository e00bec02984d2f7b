"""Helpers for the data-platform tests: the repository's stack config, with edits."""

from __future__ import annotations

import json
from pathlib import Path

from infra.config import StackConfig
from tools.engine import read_stack_config

REPO = Path(__file__).resolve().parents[2]


def load(stack: str, **changes: object) -> StackConfig:
    """`Pulumi.<stack>.yaml`'s config with some top-level keys replaced (None removes one)."""
    values = read_stack_config(REPO / f"Pulumi.{stack}.yaml", "signal-platform")
    for key, value in changes.items():
        full = f"signal-platform:{key}"
        if value is None:
            values.pop(full, None)
        else:
            values[full] = value if isinstance(value, str) else json.dumps(value)
    return StackConfig.load(stack, values)


def section(stack: str, key: str) -> dict:
    """One top-level key of the stack file, decoded (to edit and pass back to `load`)."""
    values = read_stack_config(REPO / f"Pulumi.{stack}.yaml", "signal-platform")
    return json.loads(values[f"signal-platform:{key}"])
