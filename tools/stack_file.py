"""Strict reading of Pulumi's YAML project and stack files, as the Pulumi CLI reads them.

The CLI parses `Pulumi.yaml` and `Pulumi.<stack>.yaml` with Go's yaml.v3: YAML 1.2 scalars
(`on`, `yes` and `01:30` stay strings), duplicate keys refused. PyYAML's safe loader follows
YAML 1.1 and keeps the last of two duplicated keys silently, so a stack file that `pulumi
preview` rejects, or reads differently, would plan here. This loader resolves scalars as YAML
1.2's core schema does and refuses what Pulumi refuses, each problem as one line naming the
file (with line and column where the parser has them), the key and what is allowed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml


class StackFileError(Exception):
    """A project or stack file Pulumi would refuse: missing, invalid YAML, the wrong shape."""


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars and no duplicate keys."""


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution): only these
# spellings are booleans, nulls, ints and floats; everything else is a string.
_IMPLICIT: list[tuple[str, str, str]] = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
]
_Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in _IMPLICIT:
    _Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
# The empty scalar (`key:` with nothing after it) is null; `<<` merges a mapping (yaml.v3 too).
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0) if text.startswith("0x") else int(text, 10)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    first_line: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        where = key_node.start_mark
        if not isinstance(key, str):
            raise _Refused(
                where, f"key {key!r} is a {_kind(key)}; mapping keys must be strings (quote it)"
            )
        if key in mapping:
            raise _Refused(
                where,
                f"duplicate key {key!r} (first at line {first_line[key]}); each key may appear"
                " once",
            )
        first_line[key] = where.line + 1
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


class _Refused(Exception):
    def __init__(self, mark: yaml.Mark, problem: str):
        super().__init__(problem)
        self.mark = mark
        self.problem = problem


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return "string" if isinstance(value, str) else type(value).__name__


# A config file's values once aliases are expanded (yaml.v3 refuses "excessive aliasing" in
# the same spirit): a few lines of nested aliases would otherwise expand to billions of values.
MAX_EXPANDED_NODES = 100_000


def _expanded_nodes(root: yaml.Node) -> int:
    """How many nodes `root` stands for with every alias expanded (shared nodes counted once
    per reference, each computed once)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        sizes[id(node)] = total
        return total

    return size(root)


def load_yaml(path: Path) -> Any:
    """A YAML file as Pulumi reads it; StackFileError (one line, file:line:column) otherwise."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise StackFileError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise StackFileError(
            f"{path.name}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); Pulumi reads YAML as UTF-8"
        ) from None
    try:
        loader = _Yaml12Loader(text)  # a SafeLoader subclass
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            expanded = _expanded_nodes(node)
            if expanded > MAX_EXPANDED_NODES:
                raise StackFileError(
                    f"{path.name}: aliases expand to {expanded:,} values (at most "
                    f"{MAX_EXPANDED_NODES:,}); write the values out instead of nesting aliases"
                )
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except RecursionError:
        raise StackFileError(f"{path.name}: nested too deeply for a configuration file") from None
    except _Refused as exc:
        raise StackFileError(
            f"{path.name}:{exc.mark.line + 1}:{exc.mark.column + 1}: {exc.problem}"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path.name}:{mark.line + 1}:{mark.column + 1}" if mark else path.name
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise StackFileError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise StackFileError(f"{path.name}: invalid YAML: {exc}") from None


def read_mapping(path: Path) -> dict[str, Any]:
    """A project or stack file's top level: a mapping, or empty for an empty file."""
    raw = load_yaml(path)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise StackFileError(
            f"{path.name}: the top level is a {_kind(raw)}; it must be a mapping of keys"
            " (config:, environment: ...)"
        )
    return raw


def stacks_in(project_root: Path) -> list[str]:
    """The stacks that have a `Pulumi.<stack>.yaml` in the project directory."""
    return sorted(
        p.name.removeprefix("Pulumi.").removesuffix(".yaml")
        for p in project_root.glob("Pulumi.*.yaml")
    )


def stack_file(project_root: Path, stack: str) -> Path:
    """The stack's file; StackFileError naming the stacks that do exist when it is missing."""
    path = project_root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        found = stacks_in(project_root)
        here = f"stacks here: {', '.join(found)}" if found else "no stack files here"
        raise StackFileError(f"{path.name}: no such stack file; {here}")
    return path


def read_stack_config(path: Path, project: str) -> dict[str, Any]:
    """`config:` of a stack file, each key fully qualified (`namespace:key`; a bare key is the
    project's), values as YAML gave them (strings, numbers, booleans, lists, mappings, or
    `{"secure": ...}` for an encrypted value)."""
    raw = read_mapping(path)
    config = raw.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise StackFileError(
            f"{path.name}: config: is a {_kind(config)}; it must be a mapping of"
            " `namespace:key: value` entries"
        )
    values: dict[str, Any] = {}
    written: dict[str, str] = {}  # full key -> as the file spells it
    for key, value in config.items():
        full = key if ":" in key else f"{project}:{key}"
        if full in values:
            raise StackFileError(
                f"{path.name}: config: {written[full]!r} and {key!r} name the same key; keep one"
            )
        values[full], written[full] = value, key
    return values


def config_string(value: Any) -> str:
    """A config value as the language host passes it to a program: strings as they are,
    everything else JSON (Pulumi's `config.Value` for objects, lists, numbers, booleans)."""
    return value if isinstance(value, str) else json.dumps(value)
