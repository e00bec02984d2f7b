"""The offline engine: runs a Pulumi Python program as the language host does, under mocks.

The program's `main` (from its `Pulumi.yaml`) runs as `__main__` through `runpy` inside
`pulumi.runtime.run_in_stack`, exactly the entry point `pulumi-language-python-exec` uses,
with the stack's config set the way the language host sets it. The SDK's mock monitor stands
in for the engine; a recording monitor keeps every registration as the engine would see it
(type, name, URN, parent, provider reference, camelCase inputs, options) and the stack outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import runpy
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as sdk_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_in_stack

from tools.inventory import Inventory, Resource
from tools.mocks import PlanMocks

SECRET = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key
RESOURCE_SIG = rpc._special_resource_sig
UNKNOWN = rpc.UNKNOWN
UNKNOWN_MARK = "<unknown>"


class PlanError(Exception):
    """The program could not be planned: bad project files or arguments."""


class UnknownInputsError(Exception):
    """The program passes inputs its provider does not declare."""


@dataclass(frozen=True)
class Project:
    name: str
    main: Path
    runtime: str
    root: Path


def read_project(program_dir: Path) -> Project:
    path = program_dir / "Pulumi.yaml"
    if not path.is_file():
        raise PlanError(f"{program_dir}: no Pulumi.yaml: not a Pulumi project directory")
    raw = yaml.safe_load(path.read_text()) or {}
    runtime = raw.get("runtime")
    runtime_name = runtime.get("name") if isinstance(runtime, dict) else runtime
    if runtime_name != "python":
        raise PlanError(
            f"{path}: runtime is {runtime_name!r}; the offline engine runs python programs"
        )
    if not raw.get("name"):
        raise PlanError(f"{path}: 'name' is required")
    main = (program_dir / raw.get("main", ".")).resolve()
    if not main.exists():
        raise PlanError(f"{path}: main {raw.get('main')!r} does not exist")
    return Project(name=raw["name"], main=main, runtime="python", root=program_dir.resolve())


def read_stack_config(path: Path, project: str) -> dict[str, str]:
    """`config:` of `Pulumi.<stack>.yaml` as the language host passes it to the program:
    `namespace:key` → string, objects and lists JSON-encoded, bare keys in the project's namespace."""
    if not path.is_file():
        return {}
    raw = yaml.safe_load(path.read_text()) or {}
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise PlanError(f"{path.name}: 'config' must be a mapping, got {type(config).__name__}")
    values: dict[str, str] = {}
    for key, value in config.items():
        full = key if ":" in key else f"{project}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise PlanError(
                f"{path.name}: {full} is an encrypted secret; pass it with --config {full}=VALUE"
            )
        values[full] = value if isinstance(value, str) else json.dumps(value)
    return values


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


def plan(
    program_dir: Path, stack: str, config_overrides: Mapping[str, str] | None = None
) -> Inventory:
    """Run the program for one stack and return everything it declares."""
    project = read_project(Path(program_dir))
    config = read_stack_config(project.root / f"Pulumi.{stack}.yaml", project.name)
    config.update(config_overrides or {})
    gcp_project = config.get("gcp:project", f"{project.name}-{stack}")
    monitor = RecordingMonitor(PlanMocks(gcp_project))

    with _program_context(project):
        settings.configure(
            sdk_mocks.MockSettings(
                monitor=monitor,
                monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
                engine=sdk_mocks.MockEngine(None),
                project=project.name,
                stack=stack,
                dry_run=False,
                organization="organization",
                callbacks=None,
            )
        )
        settings.set_root_resource(None)  # type: ignore[arg-type]
        set_all_config(config)
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(run_in_stack(lambda: _run_main(project.main)))
        finally:
            loop.close()
            asyncio.set_event_loop(None)
    # Registrations complete in whatever order the event loop runs them: sort for stable plans.
    resources = sorted(monitor.recorded, key=lambda r: r.urn)
    return Inventory(
        stack=stack, project=project.name, resources=resources, outputs=monitor.outputs
    )


def _run_main(main: Path) -> None:
    runpy.run_path(str(main), run_name="__main__")


@contextlib.contextmanager
def _program_context(project: Project) -> Iterator[None]:
    """Run with the program's working directory and import path, then undo both, and forget
    the program's own modules so the next plan (another stack or program) imports afresh."""
    program_dir = project.main if project.main.is_dir() else project.main.parent
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


class RecordingMonitor(sdk_mocks.MockMonitor):
    """The SDK's mock monitor, keeping each registration as the Pulumi engine receives it."""

    def __init__(self, mocks: PlanMocks):
        super().__init__(mocks)
        self.recorded: list[Resource] = []
        self.outputs: dict[str, Any] = {}
        self.stack_urn: str | None = None

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = response.urn
        secrets: list[str] = []
        inputs = _plain(json_format.MessageToDict(request.object), "", secrets)
        options = {
            "protect": bool(request.protect),
            "ignoreChanges": list(request.ignoreChanges),
            "replaceOnChanges": list(request.replaceOnChanges),
            "deleteBeforeReplace": bool(request.deleteBeforeReplace),
            "retainOnDelete": bool(request.retainOnDelete),
            "dependencies": sorted(request.dependencies),
        }
        self.recorded.append(
            Resource(
                type=request.type,
                name=request.name,
                urn=response.urn,
                parent=request.parent or None,
                provider=request.provider or None,
                inputs=inputs,
                secrets=tuple(secrets),
                custom=bool(request.custom),
                options=options,
            )
        )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn == self.stack_urn:
            self.outputs = _plain(json_format.MessageToDict(request.outputs), "", [])
        return super().RegisterResourceOutputs(request)


def _plain(value: Any, path: str, secrets: list[str]) -> Any:
    """Wire-format property values → plain JSON: secrets unwrapped (their paths noted),
    resource references as their URN, unknowns as a marker."""
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET:
            secrets.append(path)
            return _plain(value.get("value"), path, secrets)
        if sig == RESOURCE_SIG:
            return value.get("urn")
        return {k: _plain(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if value == UNKNOWN:
        return UNKNOWN_MARK
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
