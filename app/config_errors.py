"""How every configuration surface refuses bad input: strict models, problems, one formatter.

Every config loader of the repository (the stack config in `infra/config`, the service's
`app/config.py`, the scaler's and the detector's configs, the cost settings of `tools/cost.py`)
validates with pydantic models built on `ConfigModel` and reports a failure as a `ConfigError`:
one line per problem, ``file: key.path: message (got value); allowed: ...``. A model's
cross-field rules live on the model, in `rules(context)`, next to the fields they check; each yields
`Problem`s with key paths relative to the model, and the formatter places them under the
model's own path. This module needs nothing but pydantic: the service image carries only app/.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import sys
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "CamelConfigModel",
    "ConfigError",
    "ConfigModel",
    "Invalid",
    "Problem",
    "checked",
    "format_problems",
    "key_path",
    "load_model",
    "problems_from",
    "read_config_file",
]

# A value too long to read in one line is cut here.
MAX_VALUE_CHARS = 120


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


NO_VALUE: Any = _Missing()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration: where, what, the value found, what is allowed."""

    path: str
    message: str
    value: Any = NO_VALUE
    allowed: str = ""

    def under(self, prefix: str) -> Problem:
        """The same problem, its path placed under ``prefix`` (a model's own path)."""
        return replace(self, path=join_path(prefix, self.path))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.value is not NO_VALUE:
            text += f" (got {show(self.value)})"
        return f"{text}; allowed: {self.allowed}" if self.allowed else text


class Invalid(ValueError):
    """Raised by a validator with every problem it found, paths relative to its model.

    pydantic keeps the exception in the error's context, so `problems_from` can place each
    problem at its own key instead of at the model's.
    """

    def __init__(self, problems: Iterable[Problem]):
        self.problems = tuple(problems)
        super().__init__("; ".join(map(str, self.problems)))


V = TypeVar("V")


def checked(value: V, problems: Iterable[Problem]) -> V:
    """A validator's return: ``value`` when there are no ``problems``, else `Invalid`."""
    found = list(problems)
    if found:
        raise Invalid(found)
    return value


class ConfigError(ValueError):
    """A configuration that does not validate: one line per problem, each naming the file."""

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.source = source
        # The same problem found twice (a rule run per region on shared settings) is one line.
        unique: dict[str, Problem] = {}
        for problem in problems:
            unique.setdefault(str(problem), problem)
        self.problems = list(unique.values())
        super().__init__(format_problems(source, self.problems))


def print_error(error: BaseException | str) -> None:
    """A refusal on stderr as the commands print it: one ``error:`` line per line of it (a
    ConfigError has one per problem)."""
    for line in str(error).splitlines() or [""]:
        print(f"error: {line}", file=sys.stderr)


def format_problems(source: str, problems: Iterable[Problem]) -> str:
    """``source: key.path: message (got value); allowed: ...``, one line per problem."""
    return "\n".join(f"{source}: {problem}" for problem in problems)


def show(value: Any) -> str:
    """``repr(value)`` cut to `MAX_VALUE_CHARS`, built only that far: a YAML file's aliases can
    nest a few lines into a value whose full repr would take gigabytes (and hang)."""
    text = _bounded_repr(value, MAX_VALUE_CHARS)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


class _Enough(Exception):
    pass


def _bounded_repr(value: Any, limit: int) -> str:
    """The first ``limit`` characters (or a few more) of ``repr(value)``, for plain containers
    without building the rest; a self-referencing one stops at the limit too."""
    out: list[str] = []
    size = 0

    def put(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text)
        if size > limit:
            raise _Enough

    def walk(item: Any) -> None:
        kind = type(item)
        if kind is dict:
            put("{")
            for i, (key, inner) in enumerate(item.items()):
                put(", " if i else "")
                walk(key)
                put(": ")
                walk(inner)
            put("}")
        elif kind is list or kind is tuple:
            put("[" if kind is list else "(")
            for i, inner in enumerate(item):
                put(", " if i else "")
                walk(inner)
            put("]" if kind is list else ",)" if len(item) == 1 else ")")
        else:
            put(repr(item))

    with contextlib.suppress(_Enough):
        walk(value)
    return "".join(out)


def join_path(prefix: str, path: str) -> str:
    """``a.b`` + ``c`` → ``a.b.c``; ``a`` + ``[0].c`` → ``a[0].c``; ``ns:`` + ``c`` → ``ns:c``."""
    if not prefix or not path:
        return prefix or path
    if path.startswith("[") or prefix.endswith(":"):
        return prefix + path
    return f"{prefix}.{path}"


def key_path(loc: Iterable[Any]) -> str:
    """A pydantic location as a key path: ``("gpu", 0, "minNodes")`` → ``gpu[0].minNodes``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path = join_path(path, str(part))
    return path


# A Pulumi stack file's encrypted value (`key: {secure: <ciphertext>}`) where a plain one is
# expected: only the Pulumi CLI can decrypt it, and a key of a non-secret setting needs none.
SECURE_VALUE_MESSAGE = (
    "cannot be a secret: secure values cannot be read offline, and this setting is not secret"
)
SECURE_VALUE_ALLOWED = "the value in plain text"


def _is_secure_value(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and isinstance(value.get("secure"), str)


# --------------------------------------------------------------------------- models


class ConfigModel(BaseModel):
    """Base of every configuration section: unknown keys and non-finite numbers (NaN,
    infinities) refused, immutable once validated, cross-field rules in `rules(context)`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        """Rules that span this model's fields, paths relative to the model; ``context`` is
        what the loader passed to `load_model` (e.g. the stack's environment). Override and
        ``yield from super().rules(context)``."""
        return iter(())

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """pydantic's lax mode reads ``true`` as 1: a number field given a boolean is refused.
        (Strings of digits stay numbers: Pulumi writes `pulumi config set` values as strings.)"""
        if isinstance(data, Mapping):
            numeric = _numeric_keys(cls)
            checked(data, (
                Problem(str(key), "Input should be a number, not a boolean", value, "a number")
                for key, value in data.items() if isinstance(value, bool) and key in numeric
            ))  # fmt: skip
        return data

    @model_validator(mode="before")
    @classmethod
    def _not_a_secret(cls, data: Any) -> Any:
        """A whole section given as a secure value: that, not "unknown key 'secure'"."""
        if _is_secure_value(data):
            raise Invalid([Problem("", SECURE_VALUE_MESSAGE, data, SECURE_VALUE_ALLOWED)])
        return data

    @model_validator(mode="after")
    def _apply_rules(self, info: ValidationInfo) -> Self:
        return checked(self, self.rules(info.context or {}))


@functools.cache
def _numeric_keys(model: type[BaseModel]) -> frozenset[str]:
    """The keys (names and aliases) of ``model``'s fields that take only numbers."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        inner = _without_none(field.annotation)
        kinds = typing.get_args(inner) if _is_union(inner) else (inner,)
        if all(isinstance(k, type) and issubclass(k, (int, float)) and k is not bool
               for k in kinds if k is not type(None)):  # fmt: skip
            keys.update(k for k in (name, field.alias) if k)
    return frozenset(keys)


class CamelConfigModel(ConfigModel):
    """A configuration section with camelCase keys (Pulumi's and the services' files)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


M = TypeVar("M", bound=BaseModel)


def load_model(
    model: type[M],
    source: str,
    data: Any,
    *,
    root: str = "",
    context: Mapping[str, Any] | None = None,
) -> M:
    """Validate ``data`` as ``model``; on failure raise one `ConfigError` listing every problem,
    each path under ``root`` (e.g. ``"signal-platform:cost"``)."""
    try:
        return model.model_validate(data, context=dict(context or {}))
    except ValidationError as exc:
        problems = [p.under(root) for p in problems_from(exc, model)]
        raise ConfigError(source, problems) from None


# --------------------------------------------------------------------------- files


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON (``.json``) or YAML configuration file's mapping; `ConfigError` naming the file
    (and line:column where the parser knows it) when it is missing, unreadable, not JSON or
    YAML, has a key twice, or is not a mapping at the top."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            str(path), [Problem("", f"cannot be read ({exc.strerror or exc})")]
        ) from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise ConfigError(
            str(path), [Problem("", f"not UTF-8 text (byte 0x{byte:02x} at offset {exc.start})")]
        ) from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except json.JSONDecodeError as exc:
        where = f"{path}:{exc.lineno}:{exc.colno}"
        raise ConfigError(where, [Problem("", f"not JSON: {exc.msg}")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(where, [Problem("", f"not valid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [Problem("", f"not valid YAML: {exc}")]) from None
    except RecursionError:  # both parsers recurse per level of nesting
        raise ConfigError(
            str(path), [Problem("", "nested too deeply to read; a configuration is a few levels")]
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(
            str(path), [Problem("", f"the top level is a {kind}", data, "a mapping of keys")]
        )
    return data


# --------------------------------------------------------------------------- pydantic → problems

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def problems_from(exc: ValidationError, model: type[BaseModel] | None = None) -> list[Problem]:
    """Each of pydantic's errors as a `Problem` (the `Invalid` a rule raised, expanded)."""
    problems: list[Problem] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        raised = (err.get("ctx") or {}).get("error")
        if isinstance(raised, Invalid):
            problems += [p.under(key_path(loc)) for p in raised.problems]
        else:
            problems.append(_problem(err, loc, model))
    return problems


def _problem(err: Any, loc: tuple[Any, ...], model: type[BaseModel] | None) -> Problem:
    path = key_path(loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input", NO_VALUE)
    if kind == "missing":
        return Problem(path, "required key is missing")
    if _is_secure_value(value):
        return Problem(path, SECURE_VALUE_MESSAGE, value, SECURE_VALUE_ALLOWED)
    if kind == "extra_forbidden":
        keys = _keys_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        hint = f"unknown key, did you mean {close[0]}?" if close else "unknown key"
        return Problem(path, hint, value, ", ".join(keys))
    allowed = ""
    if "expected" in ctx:
        allowed = str(ctx["expected"])
    elif any(k in ctx for k in _BOUNDS):
        allowed = ", ".join(f"{op} {ctx[k]}" for k, op in _BOUNDS.items() if k in ctx)
    elif "pattern" in ctx:
        allowed = f"matching {ctx['pattern']}"
    elif "min_length" in ctx or "max_length" in ctx:
        allowed = ", ".join(
            f"{word} {ctx[k]}"
            for k, word in (("min_length", "at least"), ("max_length", "at most"))
            if k in ctx
        )
    elif kind == "finite_number":
        allowed = "a finite number"
    return Problem(path, str(err["msg"]).removeprefix("Value error, "), value, allowed)


def _keys_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at ``loc`` (its aliases where it has them), to suggest from."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [field.alias or name for name, field in current.model_fields.items()]


def _step(annotation: Any, part: Any) -> Any:
    """The type one location step below ``annotation``."""
    model = _model_in(annotation)
    if model is not None and isinstance(part, str):
        for name, field in model.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    args = [a for a in typing.get_args(_without_none(annotation)) if a is not Ellipsis]
    origin = typing.get_origin(_without_none(annotation))
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if args and isinstance(part, int):
        return args[0]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    inner = _without_none(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _without_none(annotation: Any) -> Any:
    if _is_union(annotation):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation
