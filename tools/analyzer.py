"""The Analyzer-protocol client: runs the real policy pack as the Pulumi engine does and asks it.

Launch, as `pulumi preview --policy-pack policies` does through the `pulumi-analyzer-policy-python`
shim: in the pack's folder, `<virtualenv>/bin/python -u -m pulumi.policy <engine-address> .`, with
the virtualenv's `bin` first on PATH, PYTHONHOME unset, and the stack in PULUMI_PROJECT,
PULUMI_STACK, PULUMI_DRY_RUN, PULUMI_ORGANIZATION and PULUMI_CONFIG. The pack prints the port of
its Analyzer gRPC server as the first line of stdout. The engine address is a loopback Engine
service that only collects log messages, so the pack has a real engine to talk to.

Conversation, in the engine's order: Handshake (Python packs answer UNIMPLEMENTED), ConfigureStack,
GetAnalyzerInfo, Configure (every policy, with schema defaults, `all` and per-policy overrides
reconciled and validated as the CLI does for `--policy-pack-config`), Analyze per resource (with
its provider's inputs) and one AnalyzeStack with every resource.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc, engine_pb2_grpc

from tools.inventory import UNKNOWN

REPO = Path(__file__).resolve().parent.parent
POLICY_PACK_DIR = REPO / "policies"
POLICY_README = POLICY_PACK_DIR / "README.md"
# The pack expects Pulumi's wire sentinel for a value unknown until the update (it raises
# UnknownValueError when a rule touches one); inventories write tools.inventory.UNKNOWN.
UNKNOWN_WIRE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
LEVELS = ("advisory", "mandatory", "remediate", "disabled")
_LEVEL_FROM_WIRE = {
    analyzer_pb2.ADVISORY: "advisory",
    analyzer_pb2.MANDATORY: "mandatory",
    analyzer_pb2.REMEDIATE: "remediate",
    analyzer_pb2.DISABLED: "disabled",
}
_LEVEL_TO_WIRE = {name: wire for wire, name in _LEVEL_FROM_WIRE.items()}
_POLICY_KIND = {
    analyzer_pb2.POLICY_TYPE_RESOURCE: "resource",
    analyzer_pb2.POLICY_TYPE_STACK: "stack",
}
# The engine's limit for messages to and from plugins (a stack's AnalyzeStack can be large).
_MAX_MESSAGE = 400 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
]


class AnalyzerError(Exception):
    """The policy pack could not be started or answered with an error."""


class PolicyConfigError(AnalyzerError):
    """A policy config names an unknown policy, an invalid level, or breaks a rule's schema."""


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    description: str
    level: str
    kind: str  # "resource" or "stack"
    config_schema: dict[str, Any] | None
    tags: tuple[str, ...] = ()

    def config_defaults(self) -> dict[str, Any]:
        properties = (self.config_schema or {}).get("properties", {})
        return {k: v["default"] for k, v in properties.items() if "default" in v}


@dataclass(frozen=True)
class PackInfo:
    name: str
    version: str
    description: str
    policies: tuple[PolicyInfo, ...]

    def policy(self, name: str) -> PolicyInfo:
        for policy in self.policies:
            if policy.name == name:
                return policy
        raise KeyError(f"the pack has no policy {name!r}")


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str
    urn: str | None
    message: str  # the rule's own message (the pack prefixes it with the description)
    description: str


@dataclass(frozen=True)
class AnalyzerResource:
    """A resource as the engine describes it to an analyzer."""

    type: str
    name: str
    urn: str
    inputs: Mapping[str, Any]
    parent: str | None = None
    provider: str | None = None  # provider reference: "<provider urn>::<provider id>"
    protect: bool = False
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ignore_changes: tuple[str, ...] = ()
    delete_before_replace: bool | None = None

    @classmethod
    def of(cls, resource: Any) -> AnalyzerResource:
        """From an inventory resource: a tools.inventory.Resource or its JSON dict."""
        if isinstance(resource, AnalyzerResource):
            return resource

        def read(key: str, default: Any = None) -> Any:
            if isinstance(resource, Mapping):
                return resource.get(key, default)
            return getattr(resource, key, default)

        def text(key: str) -> str:
            value = read(key)
            if not isinstance(value, str) or not value:
                raise AnalyzerError(f"inventory resource {resource!r:.200} has no {key}")
            return value

        options = read("options") or {}
        return cls(
            type=text("type"),
            name=text("name"),
            urn=text("urn"),
            inputs=read("inputs") or {},
            parent=read("parent") or None,
            provider=read("provider") or None,
            protect=bool(options.get("protect", read("protect", False))),
            dependencies=tuple(options.get("dependencies", read("dependencies", ())) or ()),
            property_dependencies=dict(
                options.get("propertyDependencies", read("property_dependencies", {})) or {}
            ),
            ignore_changes=tuple(options.get("ignoreChanges", ()) or ()),
            delete_before_replace=options.get("deleteBeforeReplace"),
        )

    @property
    def provider_urn(self) -> str | None:
        return self.provider.rsplit("::", 1)[0] if self.provider else None


@dataclass
class Analysis:
    """Everything one run found: violations sorted mandatory first, and what was analyzed."""

    violations: list[Violation]
    policies: int
    resources: int

    def by_level(self) -> dict[str, list[Violation]]:
        grouped: dict[str, list[Violation]] = {}
        for violation in self.violations:
            grouped.setdefault(violation.level, []).append(violation)
        return grouped

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]


# ---------------------------------------------------------------------------------------------
# Policy config: the `--policy-pack-config` file format and the CLI's reconciliation.


def parse_policy_config(raw: Mapping[str, Any]) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """`{"policy": "mandatory" | {"enforcementLevel": ..., prop: value}}` → name → (level, props),
    exactly the shapes `pulumi preview --policy-pack-config FILE` accepts."""
    if not isinstance(raw, Mapping):
        raise PolicyConfigError(f"policy config must be a JSON object, got {type(raw).__name__}")
    parsed: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for name, value in raw.items():
        if isinstance(value, str):
            level, props = value, {}
        elif isinstance(value, Mapping):
            props = dict(value)
            level = props.pop("enforcementLevel", None)
        else:
            raise PolicyConfigError(f"{name}: {value!r} must be an enforcement level or an object")
        if level is not None and level not in LEVELS:
            raise PolicyConfigError(
                f"{name}: enforcementLevel {level!r} is not one of {', '.join(LEVELS)}"
            )
        parsed[name] = (level, props)
    return parsed


def load_policy_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyConfigError(f"{path}: {exc.strerror}") from exc
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyConfigError(f"{path}: not JSON: {exc}") from exc


def reconcile_policy_config(
    policies: Iterable[PolicyInfo], raw: Mapping[str, Any] | None
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Schema defaults, then `all`, then each policy's own entry; validated against each schema.
    Unlike the CLI, an entry naming no policy of the pack is an error, not silently ignored."""
    policies = list(policies)
    known = {p.name: p for p in policies}
    given = parse_policy_config(raw or {})
    unknown = sorted(set(given) - set(known) - {"all"})
    if unknown:
        raise PolicyConfigError(
            f"policy config names unknown policies: {', '.join(unknown)} (see policies/README.md)"
        )
    all_level = given.get("all", (None, {}))[0]
    result: dict[str, tuple[str, dict[str, Any]]] = {}
    errors: list[str] = []
    for policy in policies:
        level, props = policy.level, policy.config_defaults()
        if all_level is not None:
            level = all_level
        own_level, own_props = given.get(policy.name, (None, {}))
        level = own_level or level
        props.update(own_props)
        if policy.config_schema is not None:
            schema = {"type": "object", **policy.config_schema}
            validator = jsonschema.Draft7Validator(schema)
            for error in sorted(validator.iter_errors(props), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in error.path)
                errors.append(f"{policy.name}{'.' + where if where else ''}: {error.message}")
        elif own_props:
            errors.append(
                f"{policy.name}: takes no configuration, got {', '.join(sorted(own_props))}"
            )
        result[policy.name] = (level, props)
    if errors:
        raise PolicyConfigError("invalid policy config:\n  " + "\n  ".join(errors))
    return result


# ---------------------------------------------------------------------------------------------
# Wire helpers.


def _integral(value: Any) -> Any:
    """Struct numbers are doubles: give whole numbers back their int type (schemas, defaults)."""
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _wire_value(value: Any) -> Any:
    """Inventory values → JSON-able wire values, unknown markers → Pulumi's unknown sentinel."""
    if isinstance(value, Mapping):
        return {str(k): _wire_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire_value(v) for v in value]
    if value == UNKNOWN:
        return UNKNOWN_WIRE
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(_wire_value(values))
    return struct


def _options(resource: AnalyzerResource) -> analyzer_pb2.AnalyzerResourceOptions:
    return analyzer_pb2.AnalyzerResourceOptions(
        protect=resource.protect,
        parent=resource.parent or "",
        ignoreChanges=list(resource.ignore_changes),
        deleteBeforeReplace=bool(resource.delete_before_replace),
        deleteBeforeReplaceDefined=resource.delete_before_replace is not None,
    )


def _violation(diagnostic: Any, urn: str | None = None) -> Violation:
    """A diagnostic as a Violation; resource diagnostics carry no URN, so the engine's (the
    analyzed resource's) is filled in, as the engine does."""
    message, description = diagnostic.message, diagnostic.description
    if description and message.startswith(description):
        message = message[len(description) :].lstrip("\n") or description
    return Violation(
        policy=diagnostic.policyName,
        level=_LEVEL_FROM_WIRE.get(diagnostic.enforcementLevel, "advisory"),
        urn=diagnostic.urn or urn,
        message=message,
        description=description,
    )


def sort_violations(violations: Iterable[Violation]) -> list[Violation]:
    rank = {"mandatory": 0, "remediate": 1, "advisory": 2, "disabled": 3}
    return sorted(
        violations, key=lambda v: (rank.get(v.level, 9), v.policy, v.urn or "", v.message)
    )


class _EngineLogs(engine_pb2_grpc.EngineServicer):
    """The engine end a plugin is pointed at; here it only keeps what the pack logs."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def Log(self, request: Any, context: Any) -> empty_pb2.Empty:
        self.messages.append(request.message)
        return empty_pb2.Empty()


# ---------------------------------------------------------------------------------------------
# The pack process.


@dataclass(frozen=True)
class PackProject:
    """PulumiPolicy.yaml: the runtime's virtualenv and the pack's version."""

    directory: Path
    python: Path
    version: str

    @classmethod
    def load(cls, directory: Path) -> PackProject:
        path = directory / "PulumiPolicy.yaml"
        if not path.is_file():
            raise AnalyzerError(f"{directory}: no PulumiPolicy.yaml: not a policy pack")
        raw = yaml.safe_load(path.read_text()) or {}
        runtime = raw.get("runtime")
        name = runtime.get("name") if isinstance(runtime, dict) else runtime
        if name != "python":
            raise AnalyzerError(f"{path}: runtime {name!r}; only python packs are supported")
        options = (runtime.get("options") if isinstance(runtime, dict) else None) or {}
        virtualenv = options.get("virtualenv")
        python = (directory / virtualenv / "bin" / "python") if virtualenv else Path(sys.executable)
        if not python.exists():
            raise AnalyzerError(
                f"{python} does not exist: create the pack's virtualenv with `make setup`"
            )
        return cls(directory.resolve(), python.absolute(), str(raw.get("version") or ""))


def launch_command(project: PackProject, engine_address: str) -> list[str]:
    """The exact argv `pulumi-analyzer-policy-python` runs (it passes on only its first two args)."""
    return [str(project.python), "-u", "-m", "pulumi.policy", engine_address, "."]


class PolicyPackProcess:
    """The real pack, running in its own virtualenv, and a gRPC client to it.

    Use as a context manager; `close()` stops the process it started and nothing else.
    """

    def __init__(
        self,
        pack_dir: Path = POLICY_PACK_DIR,
        *,
        project: str,
        stack: str,
        organization: str = "organization",
        dry_run: bool = True,
        stack_config: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
        rpc_timeout: float = 120.0,
    ) -> None:
        self.pack = PackProject.load(Path(pack_dir))
        self.project, self.stack, self.organization = project, stack, organization
        self.dry_run = dry_run
        self.stack_config = dict(stack_config or {})
        self.startup_timeout, self.rpc_timeout = startup_timeout, rpc_timeout
        self.engine_logs = _EngineLogs()
        self.argv: list[str] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._process: subprocess.Popen[bytes] | None = None
        self._engine: grpc.Server | None = None
        self._channel: grpc.Channel | None = None
        self._stub: analyzer_pb2_grpc.AnalyzerStub | None = None
        self._info: PackInfo | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> PolicyPackProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        # The caller's own venv (protobuf 6) must not leak into the pack's (protobuf 5).
        env.pop("PYTHONPATH", None)
        env["PATH"] = f"{self.pack.python.parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            PULUMI_PROJECT=self.project,
            PULUMI_STACK=self.stack,
            PULUMI_ORGANIZATION=self.organization,
            PULUMI_DRY_RUN="true" if self.dry_run else "false",
        )
        if self.stack_config:
            env["PULUMI_CONFIG"] = json.dumps(self.stack_config)
        else:
            env.pop("PULUMI_CONFIG", None)
        return env

    def start(self) -> None:
        if self._process is not None:
            return
        self._engine = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        engine_pb2_grpc.add_EngineServicer_to_server(self.engine_logs, self._engine)
        engine_port = self._engine.add_insecure_port("127.0.0.1:0")
        self._engine.start()
        self.argv = launch_command(self.pack, f"127.0.0.1:{engine_port}")
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.pack.directory,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        port = self._read_port()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=_CHANNEL_OPTIONS)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=self.startup_timeout)
        except grpc.FutureTimeoutError as exc:
            self.close()
            raise AnalyzerError(f"policy pack listens on port {port} but does not answer") from exc
        self._stub = analyzer_pb2_grpc.AnalyzerStub(self._channel)
        self._handshake()
        self._configure_stack()

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout and self._process.stderr
        first_line: list[bytes] = []
        got_line = threading.Event()

        def read_stdout(stream: Any) -> None:
            for index, line in enumerate(iter(stream.readline, b"")):
                if index == 0:
                    first_line.append(line)
                    got_line.set()
                else:
                    self._stderr.append(line.decode(errors="replace").rstrip())
            got_line.set()

        def read_stderr(stream: Any) -> None:
            for line in iter(stream.readline, b""):
                self._stderr.append(line.decode(errors="replace").rstrip())

        threading.Thread(target=read_stdout, args=(self._process.stdout,), daemon=True).start()
        threading.Thread(target=read_stderr, args=(self._process.stderr,), daemon=True).start()
        got_line.wait(self.startup_timeout)
        text = first_line[0].decode(errors="replace").strip() if first_line else ""
        if not text.isdigit():
            try:  # stdout closed: the process is exiting; give it a moment to be reaped
                exit_code = self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                exit_code = None
            self.close()
            state = "timed out" if exit_code is None else f"exited with {exit_code}"
            raise AnalyzerError(
                f"policy pack {self.pack.directory} {state} before reporting its port "
                f"(first stdout line {text!r}):\n" + self.stderr_tail()
            )
        return int(text)

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def close(self) -> None:
        self._stub = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._engine is not None:
            self._engine.stop(grace=None)
            self._engine = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- protocol ----------------------------------------------------------------------------

    def _call(self, method: str, request: Any) -> Any:
        if self._stub is None:
            raise AnalyzerError("the policy pack is not running: call start() first")
        try:
            return getattr(self._stub, method)(request, timeout=self.rpc_timeout)
        except grpc.RpcError as exc:
            raise AnalyzerError(
                f"policy pack {method} failed: {exc.code().name}: {exc.details()}\n{self.stderr_tail()}"
            ) from exc

    def _handshake(self) -> None:
        directory = str(self.pack.directory)
        request = analyzer_pb2.AnalyzerHandshakeRequest(
            engine_address=self.argv[4], root_directory=directory, program_directory=directory
        )
        with contextlib.suppress(AnalyzerError):  # Python packs do not implement it (UNIMPLEMENTED)
            self._call("Handshake", request)

    def _configure_stack(self) -> None:
        request = analyzer_pb2.AnalyzerStackConfigureRequest(
            stack=self.stack,
            project=self.project,
            organization=self.organization,
            dry_run=self.dry_run,
            config=self.stack_config,
        )
        self._call("ConfigureStack", request)

    def info(self) -> PackInfo:
        """GetAnalyzerInfo; the version comes from PulumiPolicy.yaml, as the engine does."""
        if self._info is None:
            response = self._call("GetAnalyzerInfo", empty_pb2.Empty())
            policies = []
            for p in response.policies:
                has_schema = p.HasField("configSchema") and (
                    p.configSchema.properties or p.configSchema.required
                )
                schema: dict[str, Any] | None = None
                if has_schema:
                    schema = {
                        "properties": _integral(
                            json_format.MessageToDict(p.configSchema.properties)
                        )
                    }
                    if p.configSchema.required:
                        schema["required"] = list(p.configSchema.required)
                policies.append(
                    PolicyInfo(
                        name=p.name,
                        description=p.description,
                        level=_LEVEL_FROM_WIRE[p.enforcementLevel],
                        kind=_POLICY_KIND.get(p.policy_type, "resource"),
                        config_schema=schema,
                        tags=tuple(p.tags),
                    )
                )
            self._info = PackInfo(
                name=response.name,
                version=self.pack.version or response.version,
                description=response.description,
                policies=tuple(policies),
            )
        return self._info

    def configure(
        self, policy_config: Mapping[str, Any] | None = None
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """Configure every policy: its level and config after reconciling `policy_config`
        (the `--policy-pack-config` shape) with the schemas' defaults. Replaces earlier config."""
        reconciled = reconcile_policy_config(self.info().policies, policy_config)
        self.send_config(reconciled)
        return reconciled

    def send_config(self, config: Mapping[str, tuple[str, Mapping[str, Any]]]) -> None:
        """Configure exactly as given (name → (level, properties)), without reconciling or
        validating: what an engine with a different notion of the schema might send."""
        request = analyzer_pb2.ConfigureAnalyzerRequest()
        for name, (level, props) in config.items():
            entry = request.policyConfig[name]
            entry.enforcementLevel = _LEVEL_TO_WIRE[level]
            entry.properties.update(_wire_value(props))
        self._call("Configure", request)

    def analyze(self, resource: Any, provider: Any | None = None) -> list[Violation]:
        """Analyze one resource; `provider` is its provider resource, if it has one."""
        resource = AnalyzerResource.of(resource)
        request = analyzer_pb2.AnalyzeRequest(
            type=resource.type,
            name=resource.name,
            urn=resource.urn,
            properties=to_struct(resource.inputs),
            options=_options(resource),
        )
        if provider is not None:
            provider = AnalyzerResource.of(provider)
            request.provider.CopyFrom(self._provider(provider))
        response = self._call("Analyze", request)
        return [_violation(d, resource.urn) for d in response.diagnostics]

    @staticmethod
    def _provider(provider: AnalyzerResource) -> analyzer_pb2.AnalyzerProviderResource:
        return analyzer_pb2.AnalyzerProviderResource(
            type=provider.type,
            name=provider.name,
            urn=provider.urn,
            properties=to_struct(provider.inputs),
        )

    def analyze_stack(self, resources: Iterable[Any]) -> list[Violation]:
        resources = [AnalyzerResource.of(r) for r in resources]
        by_urn = {r.urn: r for r in resources}
        request = analyzer_pb2.AnalyzeStackRequest()
        for r in resources:
            entry = request.resources.add(
                type=r.type,
                name=r.name,
                urn=r.urn,
                properties=to_struct(r.inputs),
                options=_options(r),
                parent=r.parent or "",
                dependencies=list(r.dependencies),
            )
            for key, urns in r.property_dependencies.items():
                entry.propertyDependencies[key].urns.extend(urns)
            provider = by_urn.get(r.provider_urn or "")
            if provider is not None:
                entry.provider.CopyFrom(self._provider(provider))
        response = self._call("AnalyzeStack", request)
        return [_violation(d) for d in response.diagnostics]

    def analyze_all(self, resources: Iterable[Any]) -> Analysis:
        """What a preview does: Analyze each resource with its provider, then AnalyzeStack."""
        resources = [AnalyzerResource.of(r) for r in resources]
        by_urn = {r.urn: r for r in resources}
        violations: list[Violation] = []
        for resource in resources:
            violations += self.analyze(resource, by_urn.get(resource.provider_urn or ""))
        violations += self.analyze_stack(resources)
        return Analysis(sort_violations(violations), len(self.info().policies), len(resources))
