"""The offline engine: runs a Pulumi Python program as `pulumi preview` does, under mocks.

The program's `main` (from its `Pulumi.yaml`) runs as `__main__` through `runpy` inside
`pulumi.runtime.run_in_stack`, the entry point `pulumi-language-python-exec` uses, with the
stack's config set the way the language host sets it and the SDK in preview mode
(`dry_run=True`): what a provider computes is unknown, `.apply` callbacks on unknowns do not
run, exports built from unknowns are unknown. A monitor in the engine's place records every
registration as the Pulumi engine receives it (type, name, URN, parent, provider reference,
camelCase inputs, options) and registers each package's default provider, as the engine does,
for resources that name none. Unknowns are recorded as `tools.inventory.UNKNOWN`, secret
values as `tools.inventory.SECRET`.

When `Pulumi.yaml` names the program's own virtualenv and it is not the one running this
engine, the plan runs inside it (`tools.program_venv`), as the language host would.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import hashlib
import hmac
import json
import logging
import os
import re
import runpy
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2
from pulumi.runtime import mocks as sdk_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_in_stack

from tools import project_config, stack_file
from tools.inventory import SECRET, UNKNOWN, Inventory, Resource
from tools.mocks import PlanMocks

SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key
RESOURCE_SIG = rpc._special_resource_sig
UNKNOWN_WIRE = rpc.UNKNOWN
# Kept for callers of the previous name.
UNKNOWN_MARK = UNKNOWN
TOOLS_DIR = Path(__file__).resolve().parent
# The options the engine gives a default provider it registers itself.
DEFAULT_PROVIDER_OPTIONS: dict[str, Any] = {
    "aliases": [],
    "protect": False,
    "ignoreChanges": [],
    "replaceOnChanges": [],
    "deleteBeforeReplace": False,
    "retainOnDelete": False,
    "dependencies": [],
    "propertyDependencies": {},
}
# A diff's two plans share this key (hex), so each can digest its secrets comparably.
SECRET_DIGEST_KEY_ENV = "OFFLINE_PLAN_SECRET_DIGEST_KEY"


class PlanError(Exception):
    """Bad input to the engine (exit 2): project or stack file, arguments. One line each."""


class ProgramError(PlanError):
    """The program raised (exit 2): what to print, and the traceback for --verbose."""

    def __init__(self, lines: list[str], traceback_text: str = ""):
        super().__init__("\n".join(lines))
        self.lines = lines
        self.traceback_text = traceback_text


class UnknownInputsError(Exception):
    """The program passes inputs its provider does not declare (exit 1)."""


# --------------------------------------------------------------------------- project and stack


@dataclass(frozen=True)
class Project:
    name: str
    main: Path
    runtime: str
    root: Path
    # The program's own virtualenv (runtime.options.virtualenv), as Pulumi.yaml names it.
    virtualenv: str | None = None
    # Pulumi.yaml's `config:`: project-level defaults and values, types a stack must keep.
    config: tuple[project_config.Declaration, ...] = ()
    # Pulumi.yaml's `stackConfigDir`: where the stack files are, relative to the project.
    stack_config_dir: str | None = None

    def stack_path(self, stack: str) -> Path:
        """The stack's `Pulumi.<stack>.yaml`, in `stackConfigDir` when the project names one."""
        return self.root / (self.stack_config_dir or ".") / f"Pulumi.{stack_name(stack)}.yaml"

    @property
    def virtualenv_path(self) -> Path | None:
        return (self.root / self.virtualenv).resolve() if self.virtualenv else None

    @property
    def requirements(self) -> Path:
        return self.root / "requirements.txt"


_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def stack_name(value: str) -> str:
    """The stack's own name, which its file and URNs carry: `--stack` may name it fully
    (`org/project/stack`), as the CLI accepts; anything else but Pulumi's name characters is
    refused (an empty name, a path)."""
    parts = value.split("/")
    if len(parts) > 3 or any(not _STACK_NAME.match(p) or set(p) == {"."} for p in parts):
        raise PlanError(
            f"--stack {value!r}: not a stack name (letters, digits, '-', '_' and '.', optionally"
            " as org/project/stack)"
        )
    return parts[-1]


def read_project(program_dir: Path) -> Project:
    path = Path(program_dir) / "Pulumi.yaml"
    if not path.is_file():
        raise PlanError(f"{program_dir}: no Pulumi.yaml: not a Pulumi project directory")
    try:
        raw = stack_file.read_mapping(path)
    except stack_file.StackFileError as exc:
        raise PlanError(str(exc)) from None
    runtime = raw.get("runtime")
    runtime_name = runtime.get("name") if isinstance(runtime, dict) else runtime
    if runtime_name != "python":
        raise PlanError(
            f"{path.name}: runtime is {runtime_name!r}; the offline engine runs python programs"
        )
    if not raw.get("name") or not isinstance(raw["name"], str):
        raise PlanError(f"{path.name}: 'name' is required (a string)")
    main = (path.parent / str(raw.get("main", "."))).resolve()
    if not main.exists():
        raise PlanError(f"{path.name}: main {raw.get('main')!r} does not exist")
    options = runtime.get("options") if isinstance(runtime, dict) else None
    options = options if isinstance(options, dict) else {}
    virtualenv = options.get("virtualenv")
    if virtualenv is None and options.get("toolchain") == "uv":
        virtualenv = ".venv"  # uv's default, as the language host uses it
    if virtualenv is not None and not isinstance(virtualenv, str):
        raise PlanError(f"{path.name}: runtime.options.virtualenv must be a path (a string)")
    config, stack_dir = raw.get("config"), raw.get("stackConfigDir")
    if isinstance(config, str):  # the deprecated spelling of stackConfigDir
        if stack_dir is not None:
            raise PlanError(
                f"{path.name}: config: {config!r} and stackConfigDir both name the stack files'"
                " directory; keep stackConfigDir"
            )
        config, stack_dir = None, config
    if stack_dir is not None and not isinstance(stack_dir, str):
        raise PlanError(f"{path.name}: stackConfigDir must be a path (a string)")
    try:
        declared = project_config.declarations(config, raw["name"], path.name)
    except project_config.ProjectConfigError as exc:
        raise PlanError(str(exc)) from None
    return Project(
        name=raw["name"],
        main=main,
        runtime="python",
        root=path.parent.resolve(),
        virtualenv=virtualenv,
        config=declared,
        stack_config_dir=stack_dir,
    )


@dataclass(frozen=True)
class StackConfig:
    """A stack's config as the language host hands it to the program."""

    values: dict[str, str]
    secret_keys: tuple[str, ...] = ()


def read_stack_config(path: Path, project: str) -> dict[str, str]:
    """`config:` of `Pulumi.<stack>.yaml` as the language host passes it to the program:
    `namespace:key` → string, objects and lists JSON-encoded, bare keys in the project's
    namespace. A missing file, invalid YAML or the wrong shape is a PlanError naming it.
    Encrypted values (which need the Pulumi CLI to decrypt) are left out: a plan refuses
    them unless overridden (`stack_config`), readers of other keys need not."""
    return _stack_config(path, project, {}, refuse_encrypted=False).values


def stack_config(
    project: Project, stack: str, overrides: Mapping[str, str] | None = None
) -> StackConfig:
    """The stack file's config with command-line overrides applied, over Pulumi.yaml's
    project-level defaults and values. An encrypted value (`secure:`) must be overridden, and
    stays a secret as Pulumi keeps it."""
    path = project.stack_path(stack)
    config = _stack_config(path, project.name, overrides or {}, raw_out=(raw := {}))
    try:
        values = project_config.apply(
            project.config, stack, path.name, config.values, raw, config.secret_keys
        )
    except project_config.ProjectConfigError as exc:
        raise PlanError(str(exc)) from None
    return StackConfig(values, config.secret_keys)


def _stack_config(
    path: Path,
    project: str,
    overrides: Mapping[str, str],
    *,
    refuse_encrypted: bool = True,
    raw_out: dict[str, Any] | None = None,
) -> StackConfig:
    try:
        stack_file.stack_file(path.parent, path.name.removeprefix("Pulumi.").removesuffix(".yaml"))
        raw = stack_file.read_stack_config(path, project)
    except stack_file.StackFileError as exc:
        raise PlanError(str(exc)) from None
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in raw.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            if key not in overrides and refuse_encrypted:
                raise PlanError(
                    f"{path.name}: {key} is an encrypted secret; pass it with --config {key}=VALUE"
                )
            secret_keys.append(key)
            continue
        values[key] = stack_file.config_string(value)
    if raw_out is not None:  # the values as YAML gave them (the project's types judge them)
        raw_out.update({**raw, **overrides})
    return StackConfig({**values, **overrides}, tuple(secret_keys))


def parse_overrides(pairs: list[str] | None, project: str) -> dict[str, str]:
    """`KEY=VALUE` pairs from the command line; KEY without a namespace is the project's."""
    values: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PlanError(
                f"--config {pair!r}: expected KEY=VALUE, e.g. {project}:regions='[\"us-east4\"]'"
            )
        values[key if ":" in key else f"{project}:{key}"] = value
    return values


# --------------------------------------------------------------------------- planning


@dataclass
class PlanResult:
    """A plan and the input check made where the program ran (against its own SDKs)."""

    inventory: Inventory
    unknown_inputs: list[str] = field(default_factory=list)
    unchecked_types: list[str] = field(default_factory=list)


def plan(
    program_dir: Path, stack: str, config_overrides: Mapping[str, str] | None = None
) -> Inventory:
    """Run the program for one stack and return everything it declares."""
    return plan_checked(program_dir, stack, config_overrides, check=False).inventory


def plan_checked(
    program_dir: Path,
    stack: str,
    config_overrides: Mapping[str, str] | None = None,
    *,
    check: bool = True,
) -> PlanResult:
    """Plan one stack, in the program's own virtualenv where it has one, and check its
    inputs against the SDKs the program ran with."""
    project = read_project(Path(program_dir))
    stack = stack_name(stack)
    config = stack_config(project, stack, config_overrides)
    python = program_python(project)
    if python is not None:
        from tools.program_venv import plan_in_virtualenv

        return plan_in_virtualenv(python, project, stack, config, check=check)
    inventory = plan_here(project, stack, config)
    return checks(inventory) if check else PlanResult(inventory)


def program_python(project: Project) -> Path | None:
    """The program virtualenv's interpreter, when it exists and is not the one running now."""
    venv = project.virtualenv_path
    if venv is None or not venv.is_dir():
        return None
    if venv == Path(sys.prefix).resolve():
        return None
    for candidate in (venv / "bin" / "python", venv / "Scripts" / "python.exe"):
        if candidate.exists():
            return candidate
    return None


def checks(inventory: Inventory) -> PlanResult:
    """The unknown-input check over a plan, as text lines (they travel between processes)."""
    from tools.input_check import check_inputs, unchecked_types

    return PlanResult(
        inventory, [str(p) for p in check_inputs(inventory)], unchecked_types(inventory)
    )


def missing_module(exc: ModuleNotFoundError, project: Project, where: str = "") -> str:
    """One line: the module the program imports (and where), where it is missing, and what
    to do."""
    name = exc.name or str(exc)
    venv = project.virtualenv_path
    python = f"the engine's Python ({sys.prefix})"
    if venv is not None and venv.is_dir():
        python = f"the program's virtualenv ({venv})"
    hint = f"list it in {project.requirements} and install it there"
    if venv is not None and not venv.is_dir():
        hint += (
            f"; Pulumi.yaml names the virtualenv {project.virtualenv!r}, which does not exist"
            f" (python -m venv {project.virtualenv} && {project.virtualenv}/bin/pip install"
            " -r requirements.txt)"
        )
    at = f" ({where})" if where else ""
    return f"the program imports {name!r}{at}, which is not installed in {python}: {hint}"


def plan_here(
    project: Project, stack: str, config: StackConfig, *, sdk_defaults: bool = False
) -> Inventory:
    """Run the program in this process, as a preview, and record what it declares.

    `sdk_defaults` runs it the way the SDK's own mock harness does (a thread-pool hop per
    call to the monitor, the default garbage-collector thresholds): the same inventory,
    slower; the speed bench and the equivalence test compare against it."""
    monitor = RecordingMonitor(project.name, stack, config)
    paused = contextlib.nullcontext() if sdk_defaults else _collector_paused()
    with _program_context(project), paused:
        settings.configure(
            sdk_mocks.MockSettings(
                monitor=monitor,
                monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
                engine=sdk_mocks.MockEngine(_program_log()),
                project=project.name,
                stack=stack,
                dry_run=True,
                organization="organization",
                callbacks=None,
            )
        )
        settings.set_root_resource(None)  # type: ignore[arg-type]
        set_all_config(dict(config.values), list(config.secret_keys))
        loop = asyncio.new_event_loop()
        if not sdk_defaults:
            # The monitor answers at once: call it inline rather than through a thread per
            # registration (no thread hops, no event loops left behind in worker threads).
            loop.run_in_executor = _inline_executor(loop)  # type: ignore[method-assign]
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(run_in_stack(lambda: _run_main(project.main)))
        except SystemExit as exc:
            _abandon(loop)
            # sys.exit(0) ends the program early and cleanly, as it would under the language
            # host (what it declared so far is the plan); any other code fails it.
            if exc.code not in (None, 0):
                raise program_error(exc, project, stack) from None
        except Exception as exc:
            _abandon(loop)
            raise program_error(exc, project, stack) from None
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)
    # Registrations complete in whatever order the event loop runs them: sort for stable plans.
    resources = sorted(monitor.recorded, key=lambda r: r.urn)
    return Inventory(
        stack=stack, project=project.name, resources=resources, outputs=monitor.outputs
    )


def _abandon(loop: asyncio.AbstractEventLoop) -> None:
    """After the program failed: cancel what it left running and let it unwind, so no
    "Task was destroyed but it is pending" or "exception was never retrieved" noise follows
    the one error line (the failure itself is reported from the exception)."""
    loop.set_exception_handler(lambda _loop, _context: None)
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _run_main(main: Path) -> None:
    runpy.run_path(str(main), run_name="__main__")


def _inline_executor(loop: asyncio.AbstractEventLoop) -> Callable[..., asyncio.Future]:
    def run_in_executor(executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future:
        future = loop.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # handed to the awaiting task, as a thread would
            future.set_exception(exc)
        return future

    return run_in_executor


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Run the program with the cyclic garbage collector mostly idle. A plan allocates a few
    hundred MB of short-lived SDK objects; with the default thresholds the collector walks
    the whole heap hundreds of times and takes close to half the plan's time."""
    thresholds = gc.get_threshold()
    gc.freeze()  # what is imported by now lives for the whole process anyway
    gc.set_threshold(200_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _program_log() -> logging.Logger:
    """Where the program's `pulumi.log` warnings and errors go: stderr, as Pulumi prints them."""
    logger = logging.getLogger("tools.engine.program")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LevelFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


@contextlib.contextmanager
def _program_context(project: Project) -> Iterator[None]:
    """Run with the program's working directory and import path, then undo both, and forget
    the program's own modules so the next plan (another stack or program) imports afresh."""
    program_dir = _program_dir(project)
    saved_cwd, saved_path = Path.cwd(), list(sys.path)
    saved_modules = set(sys.modules)
    os.chdir(program_dir)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            # The program's own modules, not the packages of a venv inside the project.
            if module_file.startswith(str(project.root)) and "site-packages" not in module_file:
                del sys.modules[name]


# --------------------------------------------------------------------------- program errors


def program_error(exc: BaseException, project: Project, stack: str = "") -> ProgramError:
    """What to print for an exception the program raised: a `pulumi.RunError`'s message, one
    `error:` line per line (Pulumi's error without a stack trace); anything else one line
    naming the program's own deepest frame and the exception. A config value the program
    requires but the stack lacks, or cannot read as the type it asks for, names the stack file,
    the key, the value and where the program reads it."""
    import pulumi
    from pulumi.config import ConfigMissingError, ConfigTypeError

    text = "".join(traceback.format_exception(exc))
    where, raised = _program_frame(exc, project)  # the program's own deepest frame
    if isinstance(exc, ModuleNotFoundError) and not _is_program_module(exc, project):
        return ProgramError([missing_module(exc, project, where)], text)
    stack_file = f"Pulumi.{stack}.yaml" if stack else "the stack file"
    if isinstance(exc, ConfigMissingError):
        return ProgramError(
            [
                f"{stack_file}: missing required configuration value '{exc.key}' (read at"
                f" {where}); set it in {stack_file} or with --config {exc.key}=VALUE"
            ],
            text,
        )
    if isinstance(exc, ConfigTypeError):
        return ProgramError(
            [
                f"{stack_file}: {exc.key}: {exc.value!r} is not a valid {exc.expect_type}"
                f" (read at {where})"
            ],
            text,
        )
    if isinstance(exc, SystemExit):
        return ProgramError([f"{where}: the program exited: sys.exit({exc.code!r})"], text)
    if isinstance(exc, pulumi.RunError):
        lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        return ProgramError(lines, text)
    syntax = _syntax_error(exc)
    if syntax is not None:
        return ProgramError([_syntax_line(syntax, project)], text)
    message = str(raised).strip().splitlines()
    summary = f"{type(raised).__name__}: {message[0]}" if message else type(raised).__name__
    return ProgramError([f"{where}: {summary}"], text)


def _syntax_error(exc: BaseException) -> SyntaxError | None:
    """The SyntaxError (or IndentationError) behind a failure, if one is: its traceback has
    only the importer's frames, the place is in the exception itself."""
    current: BaseException | None = exc
    seen: list[BaseException] = []
    while current is not None and current not in seen:
        if isinstance(current, SyntaxError):
            return current
        seen.append(current)
        current = current.__cause__ or current.__context__
    return None


def _syntax_line(exc: SyntaxError, project: Project) -> str:
    """`file:line:column: SyntaxError: message`, the file relative to the project."""
    where = "<unknown file>"
    if exc.filename:
        path = Path(exc.filename)
        path = path if path.is_absolute() else _program_dir(project) / path
        where = str(path.relative_to(project.root) if path.is_relative_to(project.root) else path)
    if exc.lineno:
        where += f":{exc.lineno}" + (f":{exc.offset}" if exc.offset else "")
    return f"{where}: {type(exc).__name__}: {exc.msg}"


def _program_dir(project: Project) -> Path:
    return project.main if project.main.is_dir() else project.main.parent


def _program_frame(exc: BaseException, project: Project) -> tuple[str, BaseException]:
    """`file:line in function` of the deepest frame in the program's own files, searched from
    the original cause outwards, and the exception it belongs to."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for candidate in reversed(chain):
        frames = [
            f
            for f in traceback.extract_tb(candidate.__traceback__)
            if _is_program_file(f.filename, project)
        ]
        if frames:
            frame = frames[-1]
            path = Path(frame.filename).resolve()
            shown = path.relative_to(project.root) if path.is_relative_to(project.root) else path
            return f"{shown}:{frame.lineno} in {frame.name}", candidate
    entry = project.main / "__main__.py" if project.main.is_dir() else project.main
    shown = entry.relative_to(project.root) if entry.is_relative_to(project.root) else entry
    return f"{shown} (raised outside the program's own code)", exc


def _is_program_module(exc: ModuleNotFoundError, project: Project) -> bool:
    """Whether the missing module is one of the program's own (a typo, not a dependency)."""
    top = (exc.name or "").split(".")[0]
    program_dir = _program_dir(project)
    return bool(top) and any(
        (base / top).exists() or (base / f"{top}.py").exists()
        for base in (project.root, program_dir)
    )


def _is_program_file(filename: str, project: Project) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>: no file
        return False
    path = Path(filename).resolve()
    if not path.is_relative_to(project.root) or path.is_relative_to(TOOLS_DIR):
        return False
    return not any(part in ("site-packages", "dist-packages") for part in path.parts)


# --------------------------------------------------------------------------- the monitor


ROOT_STACK_TYPE = "pulumi:pulumi:Stack"


def make_urn(stack: str, project: str, parent: str, type_: str, name: str) -> str:
    """`urn:pulumi:STACK::PROJECT::QUALIFIED_TYPE::NAME`, as the Pulumi engine names a resource:
    a child's type is prefixed by its parent's qualified type (the whole chain), except the root
    stack's (a top-level resource's URN names only its own type)."""
    if parent:
        parent_type = parent.split("::", 3)[2]
        if parent_type != ROOT_STACK_TYPE:
            type_ = f"{parent_type}${type_}"
    return f"urn:pulumi:{stack}::{project}::{type_}::{name}"


class RecordingMonitor(sdk_mocks.MockMonitor):
    """The engine's side of the resource monitor, as the Pulumi engine answers it in a preview:
    every registration recorded, inputs echoed with what the provider derives (tools.mocks),
    each package's default provider registered on first use."""

    def __init__(self, project: str, stack: str, config: StackConfig):
        self.provider_inputs: dict[str, dict[str, Any]] = {}
        self.plan_mocks = PlanMocks(self.provider_inputs)
        super().__init__(self.plan_mocks)
        self.project, self.stack = project, stack
        self.config = config
        self.recorded: list[Resource] = []
        self.outputs: dict[str, Any] = {}
        self.stack_urn: str | None = None
        self.default_providers: dict[tuple[str, str], str] = {}
        # The SDK's default path calls the monitor from worker threads.
        self.lock = threading.Lock()
        self.states: dict[str, tuple[str, struct_pb2.Struct]] = {}
        # URN -> the URNs its aliases name (children inherit them).
        self.aliases: dict[str, list[str]] = {}
        key = os.environ.get(SECRET_DIGEST_KEY_ENV, "")
        self.digest_key = bytes.fromhex(key) if key else None

    def urn(
        self,
        parent: str,
        type_: str,
        name: str,
        stack: str | None = None,
        project: str | None = None,
    ) -> str:
        """The engine's URN (resource.NewURN): the parent's qualified type (its whole chain),
        none for the root stack, before the type."""
        return make_urn(stack or self.stack, project or self.project, parent, type_, name)

    def alias_urns(self, request: Any) -> list[str]:
        """The URNs a registration's aliases name, as the engine resolves alias specs: name,
        type, stack, project and parent default to the resource's own; a child also answers
        to its name under each of its parent's aliases."""
        urns = []
        for alias in request.aliases:
            if alias.urn:
                urns.append(alias.urn)
                continue
            spec = alias.spec
            which = spec.WhichOneof("parent")
            parent = (
                ""
                if which == "noParent" and spec.noParent
                else spec.parentUrn
                if which == "parentUrn"
                else request.parent
            )
            urns.append(
                self.urn(
                    parent,
                    spec.type or request.type,
                    spec.name or request.name,
                    spec.stack or None,
                    spec.project or None,
                )
            )
        for parent_alias in self.aliases.get(request.parent, ()):
            urns.append(self.urn(parent_alias, request.type, request.name))
        own = self.urn(request.parent, request.type, request.name)
        return sorted(set(urns) - {own})

    # ---- registrations

    def RegisterResource(self, request: Any) -> Any:
        urn = self.urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = urn
        is_provider = request.type.startswith("pulumi:providers:")
        provider = request.provider or None
        if provider is None and request.custom and not is_provider:
            provider = self.default_provider(request.type.split(":")[0], request.version)
        wire, secrets = _decode_struct(request.object)
        secrets += [o for o in request.additionalSecretOutputs if o in wire]
        if is_provider:
            self.provider_inputs[urn] = wire
        resource_id, derived = self.plan_mocks.outputs(request.type, request.name, wire, provider)
        state = struct_pb2.Struct()
        state.CopyFrom(request.object)
        if request.custom:
            self.plan_mocks.mark_unknown_fields(request.type, state)
        if derived:
            state.update(derived)
        self.states[urn] = (resource_id or "", state)
        self._record(request, urn, provider, wire, secrets)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=resource_id or "", object=state)

    def _record(
        self, request: Any, urn: str, provider: str | None, wire: dict, secrets: list[str]
    ) -> None:
        aliases = self.alias_urns(request)
        if aliases:
            self.aliases[urn] = aliases
        options = {
            "aliases": aliases,
            "protect": bool(request.protect),
            "ignoreChanges": list(request.ignoreChanges),
            "replaceOnChanges": list(request.replaceOnChanges),
            "deleteBeforeReplace": bool(request.deleteBeforeReplace),
            "retainOnDelete": bool(request.retainOnDelete),
            "dependencies": sorted(request.dependencies),
            # Which resources each input's value came from (a key's id, a cluster's name ...).
            "propertyDependencies": {
                key: sorted(deps.urns) for key, deps in sorted(request.propertyDependencies.items())
            },
        }
        secret_paths = sorted(set(secrets))
        self.recorded.append(
            Resource(
                type=request.type,
                name=request.name,
                urn=urn,
                parent=request.parent or None,
                provider=provider,
                inputs=_present(wire, secret_paths),
                secrets=tuple(secret_paths),
                custom=bool(request.custom),
                options=options,
                secret_digests=self._digests(wire, secret_paths),
            )
        )

    def _digests(self, wire: dict, paths: list[str]) -> dict[str, str]:
        if self.digest_key is None:
            return {}
        digests = {}
        for path in paths:
            value = json.dumps(_at(wire, path), sort_keys=True, default=str).encode()
            digests[path] = hmac.new(self.digest_key, value, hashlib.sha256).hexdigest()[:24]
        return digests

    def default_provider(self, package: str, version: str) -> str:
        """The reference to the package's default provider, registered on first use as the
        engine does: `pulumi:providers:<pkg>` named `default_<version>`, its inputs the stack's
        `<pkg>:*` config (object values as objects), its id unknown until it exists."""
        if package == "pulumi":
            return ""
        with self.lock:
            return self._default_provider(package, version)

    def _default_provider(self, package: str, version: str) -> str:
        if (package, version) not in self.default_providers:
            name = "default" + (f"_{re.sub(r'[^0-9A-Za-z]', '_', version)}" if version else "")
            type_ = f"pulumi:providers:{package}"
            urn = self.urn("", type_, name)
            inputs: dict[str, Any] = {}
            secrets: list[str] = []
            for key, value in sorted(self.config.values.items()):
                namespace, _, name_in_package = key.partition(":")
                if namespace != package or not name_in_package:
                    continue
                inputs[name_in_package] = _config_value(value)
                if key in self.config.secret_keys:
                    secrets.append(name_in_package)
            if version:
                inputs["version"] = version
            self.provider_inputs[urn] = inputs
            self.recorded.append(
                Resource(
                    type=type_,
                    name=name,
                    urn=urn,
                    parent=None,
                    provider=None,
                    inputs=_present(inputs, secrets),
                    secrets=tuple(secrets),
                    custom=True,
                    options=copy.deepcopy(DEFAULT_PROVIDER_OPTIONS),
                    secret_digests=self._digests(inputs, secrets),
                )
            )
            self.default_providers[(package, version)] = f"{urn}::{UNKNOWN_WIRE}"
        return self.default_providers[(package, version)]

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn == self.stack_urn:
            wire, secrets = _decode_struct(request.outputs)
            self.outputs = _present(wire, secrets)
        return super().RegisterResourceOutputs(request)

    # ---- reads and invokes (answered inline, without the SDK mock's thread-side event loop)

    def ReadResource(self, request: Any) -> Any:
        urn = self.urn(request.parent, request.type, request.name)
        wire, _ = _decode_struct(request.properties)
        _, derived = self.plan_mocks.outputs(request.type, request.name, wire, request.provider)
        state = struct_pb2.Struct()
        state.CopyFrom(request.properties)
        if derived:
            state.update(derived)
        self.states[urn] = (request.id, state)
        return resource_pb2.ReadResourceResponse(urn=urn, properties=state)

    def Invoke(self, request: Any) -> Any:
        args, _ = _decode_struct(request.args)
        result = struct_pb2.Struct()
        if request.tok == "pulumi:pulumi:getResource":
            resource_id, state = self.states.get(str(args.get("urn")), ("", struct_pb2.Struct()))
            result.update({"urn": args.get("urn"), "id": resource_id})
            result.get_or_create_struct("state").CopyFrom(state)
        else:
            provider = request.provider or self.default_provider(
                request.tok.split(":")[0], request.version
            )
            answer, _ = self.plan_mocks.call(
                sdk_mocks.MockCallArgs(token=request.tok, args=args, provider=provider)
            )
            result.update(answer)
        return resource_pb2.ResourceInvokeResponse(**{"return": result, "failures": []})


def _config_value(value: str) -> Any:
    """A config value as a provider's input: objects and lists (JSON) as themselves."""
    if value[:1] in "[{":
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


# --------------------------------------------------------------------------- wire values


def _decode_struct(struct: struct_pb2.Struct) -> tuple[dict[str, Any], list[str]]:
    """A wire Struct as plain values: secrets unwrapped (their paths collected), resource
    references as their URN, unknowns as Pulumi's unknown sentinel, whole numbers as int."""
    secrets: list[str] = []
    return {k: _decode(v, k, secrets) for k, v in struct.fields.items()}, secrets


def _decode(value: struct_pb2.Value, path: str, secrets: list[str]) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "struct_value":
        fields = value.struct_value.fields
        sig = fields[SIG_KEY].string_value if SIG_KEY in fields else None
        if sig == SECRET_SIG:
            secrets.append(path)
            return _decode(fields["value"], path, secrets) if "value" in fields else None
        if sig == RESOURCE_SIG:
            return fields["urn"].string_value
        return {k: _decode(v, f"{path}.{k}" if path else k, secrets) for k, v in fields.items()}
    if kind == "list_value":
        return [_decode(v, f"{path}[{i}]", secrets) for i, v in enumerate(value.list_value.values)]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() else number
    if kind == "bool_value":
        return value.bool_value
    return None


def _present(value: Any, secret_paths: list[str], path: str = "") -> Any:
    """Plain values as the inventory shows them: secrets masked, unknowns marked."""
    if path in secret_paths and value is not None:
        return SECRET
    if isinstance(value, dict):
        return {
            k: _present(v, secret_paths, f"{path}.{k}" if path else k) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_present(v, secret_paths, f"{path}[{i}]") for i, v in enumerate(value)]
    if value == UNKNOWN_WIRE:
        return UNKNOWN
    return value


def _at(value: Any, path: str) -> Any:
    """The value at a secret path (`a.b[0].c`) of plain values."""
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        if index:
            value = value[int(index)] if isinstance(value, list) else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
    return value
