"""What every stack-config section shares: the base model, the error type, common patterns.

Keys are camelCase in `Pulumi.<stack>.yaml` (Pulumi's convention) and snake_case in Python.
Each model checks its own cross-field rules in `rules(context)` (paths relative to the model);
prod rules read the environment from the validation context (`StackContext`); rules that span
sections or regions live on `StackConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from app.config_errors import CamelConfigModel, Invalid, Problem
from app.config_errors import ConfigError as AppConfigError

NAMESPACE = "signal-platform"
# A protobuf duration as Istio and Envoy take it: "500ms", "2s", "3600s". Its seconds stop at
# 315,576,000,000 (google.protobuf.Duration): 11 digits stay below.
DURATION_PATTERN = r"^\d{1,11}(ms|s)$"


class Model(CamelConfigModel):
    """Base of every stack-config section: camelCase keys, unknown keys and non-finite
    numbers refused, immutable, cross-field rules in `rules()`."""


class ConfigError(AppConfigError, pulumi.RunError):
    """Every problem of one stack's configuration, one line each, each line starting with the
    stack file's name. A `pulumi.RunError`: Pulumi (and the offline engine) print its
    message without a stack trace."""


@dataclass(frozen=True)
class StackContext:
    """What a section's rules may know of the stack being loaded (the validation context)."""

    # Prod's rules apply: the stack says prod and its name agrees (or says why not).
    prod: bool = False
    # Prod images that may go without a digest, by exact reference, with the reason.
    unpinned_images: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> StackContext:
        found = context.get("stack")
        return found if isinstance(found, cls) else cls()


def refuse(message: str, value: object, allowed: str = "") -> Invalid:
    """A field validator's one problem, at the field itself."""
    return Invalid([Problem("", message, value, allowed)])
