"""Safe reads of resource properties: absent fields, lists of objects, and preview unknowns.

The pack receives properties wrapped in pulumi_policy's unknown-checking proxies, which raise
`UnknownValueError` the moment an unknown value (one only known after `pulumi up`) is touched.
`plain()` turns those proxies into ordinary dicts and lists once, replacing every unknown by the
`UNKNOWN` sentinel, so rules can walk properties freely and decide explicitly what an unknown
means for them (always: "cannot tell yet", never a violation).
"""

# pulumi_policy lives only in policies/venv (it pins protobuf 5), not in the .venv pyright
# checks against; the pack's own tests exercise these imports through the real process.

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

_UNKNOWN_SENTINELS = frozenset(
    {
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    }
)


class _Unknown:
    """A value that is only known after the update (an output of another resource)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unknown>"

    def __bool__(self) -> bool:
        # Falsy so `if value:` never treats an unknown as "set"; rules that need a value
        # to be present test `is_unknown` first.
        return False


UNKNOWN: Any = _Unknown()


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN


def plain(value: Any) -> Any:
    """Proxies (or raw wire values) → plain dicts/lists, unknowns → UNKNOWN."""
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key in value:
            try:
                item = value[key]
            except UnknownValueError:
                item = UNKNOWN
            result[str(key)] = plain(item)
        return result
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                item = value[index]
            except UnknownValueError:
                item = UNKNOWN
            items.append(plain(item))
        return items
    return value


def get(obj: Any, *path: str | int, default: Any = None) -> Any:
    """The value at `path` (keys and list indices), `default` when any step is absent or
    null, UNKNOWN when any step is unknown."""
    current = obj
    for key in path:
        if current is UNKNOWN:
            return UNKNOWN
        if isinstance(key, int):
            if not isinstance(current, list) or not -len(current) <= key < len(current):
                return default
            current = current[key]
        elif isinstance(current, dict) and key in current:
            current = current[key]
        else:
            return default
    return default if current is None else current


def as_list(value: Any) -> list[Any]:
    """A list value as a list; absent, unknown or non-list → []."""
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    """An object value as a dict; absent, unknown or non-object → {}."""
    return value if isinstance(value, dict) else {}


def as_str_map(value: Any) -> dict[str, Any]:
    """A string map that may arrive JSON-encoded (provider inputs such as `defaultLabels`
    reach analyzers as JSON strings from some engines) → dict; anything else → {}."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return as_dict(value)


def as_int(value: Any) -> int | None:
    """A whole number (the wire carries every number as a float, and some as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def duration_seconds(value: Any) -> float | None:
    """A protobuf duration string ("7776000s", "86400.5s") → seconds; else None."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def shown(value: Any) -> str:
    """A value as a message shows it: `unset` for absent, repr otherwise."""
    return "unset" if value is None else repr(value)
