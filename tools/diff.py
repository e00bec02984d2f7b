"""The plan diff: what a change does to each stack, as a reviewer needs to read it.

Both sides are planned by the offline engine in their own process (`python -m tools plan`), the
base from a temporary `git worktree` of the base ref, the head from the working tree or another
worktree, so one program's modules never leak into the other's plan. Resources are matched by
URN: added, removed, updated in place or replaced, with every changed input path shown old → new,
secrets masked. Replacements come from `REPLACE_ON_CHANGE`, a table of the input paths that
force a new resource for the types where that matters, each with its source; paths that update
in place but disrupt (GKE recreating nodes, Redis resharding) are flagged too. Policy findings
that appear or disappear and the cost delta complete the picture.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tools.analyzer import AnalyzerError, PolicyPackProcess, Violation
from tools.cost import Estimate, StackUsage, budget_policy_config, estimate, usage_from_stack, usd
from tools.engine import SECRET_DIGEST_KEY_ENV, read_project, read_stack_config
from tools.inventory import SECRET, UNKNOWN, Inventory, Resource

TOOLS_REPO = Path(__file__).resolve().parent.parent
COMMENT_MARKER = "<!-- signal-platform:plan-diff -->"
PLAN_TIMEOUT_S = 600
MASK = SECRET

Effect = Literal["update", "replace", "disruptive"]
Kind = Literal["add", "remove", "update", "replace"]


class DiffError(Exception):
    """The diff cannot run: not a git repository, an unknown ref, a bad argument."""


# --------------------------------------------------------------------------- replacement table

_TF = "terraform-provider-google (wrapped by pulumi-gcp 10.x)"
_NODE_CONFIG = f"{_TF} google/services/container/node_config.go: ForceNew"
_NODE_POOL = f"{_TF} google/services/container/resource_container_node_pool.go: ForceNew"
_CLUSTER = f"{_TF} google/services/container/resource_container_cluster.go: ForceNew"
_NODE_UPDATE = (
    f"{_TF} updates it in place (nodePoolNodeConfigUpdate), and GKE then recreates every node "
    "by surge upgrade"
)
_REDIS = f"{_TF} google/services/redis/resource_redis_cluster.go"
_BQ_TABLE = f"{_TF} google/services/bigquery/resource_bigquery_table.go"
_KUBERNETES = "pulumi-kubernetes: immutable field, the object is replaced"


@dataclass(frozen=True)
class Rule:
    """An input path (`[*]` for any index) whose change at or below it has this effect."""

    path: str
    effect: Effect
    why: str
    source: str


def _replace(paths: Sequence[str], why: str, source: str) -> tuple[Rule, ...]:
    return tuple(Rule(p, "replace", why, source) for p in paths)


def _disrupt(paths: Sequence[str], why: str, source: str) -> tuple[Rule, ...]:
    return tuple(Rule(p, "disruptive", why, source) for p in paths)


REPLACE_ON_CHANGE: dict[str, tuple[Rule, ...]] = {
    "gcp:container/nodePool:NodePool": (
        *_replace(
            ("name", "namePrefix", "location", "cluster", "project", "initialNodeCount"),
            "identity of the node pool",
            _NODE_POOL,
        ),
        *_replace(
            ("maxPodsPerNode", "placementPolicy", "queuedProvisioning"),
            "fixed when the node pool is created",
            _NODE_POOL,
        ),
        *_replace(
            (
                "nodeConfig.guestAccelerators",
                "nodeConfig.spot",
                "nodeConfig.preemptible",
                "nodeConfig.serviceAccount",
                "nodeConfig.oauthScopes",
                "nodeConfig.metadata",
                "nodeConfig.minCpuPlatform",
                "nodeConfig.localSsdCount",
                "nodeConfig.shieldedInstanceConfig",
                "nodeConfig.reservationAffinity",
                "nodeConfig.gvnic",
                "nodeConfig.gcfsConfig",
                "nodeConfig.bootDiskKmsKey",
                "nodeConfig.ephemeralStorageLocalSsdConfig",
                "nodeConfig.localNvmeSsdBlockConfig",
                "nodeConfig.secondaryBootDisks",
            ),
            "the node template is immutable for this setting",
            _NODE_CONFIG,
        ),
        *_disrupt(
            (
                "nodeConfig.machineType",
                "nodeConfig.diskSizeGb",
                "nodeConfig.diskType",
                "nodeConfig.imageType",
            ),
            "recreates every node",
            _NODE_UPDATE,
        ),
        *_disrupt(("version",), "upgrades every node", _NODE_UPDATE),
    ),
    "gcp:container/cluster:Cluster": (
        *_replace(
            (
                "name",
                "location",
                "project",
                "network",
                "subnetwork",
                "description",
                "initialNodeCount",
                "clusterIpv4Cidr",
                "ipAllocationPolicy",
                "networkingMode",
                "datapathProvider",
                "defaultMaxPodsPerNode",
                "enableAutopilot",
                "enableKubernetesAlpha",
                "enableTpu",
                "privateClusterConfig.enablePrivateNodes",
                "privateClusterConfig.masterIpv4CidrBlock",
                "privateClusterConfig.privateEndpointSubnetwork",
                "nodeConfig",
            ),
            "fixed when the cluster is created",
            _CLUSTER,
        ),
        *_disrupt(("minMasterVersion",), "upgrades the control plane", _CLUSTER),
    ),
    "gcp:redis/cluster:Cluster": (
        *_replace(
            (
                "name",
                "region",
                "project",
                "authorizationMode",
                "transitEncryptionMode",
                "zoneDistributionConfig",
                "gcsSource",
                "managedBackupSource",
                "allowFewerZonesDeployment",
            ),
            "fixed when the Redis cluster is created (all cached data is lost)",
            f"{_REDIS}: ForceNew",
        ),
        *_disrupt(
            ("shardCount", "replicaCount", "nodeType"),
            "reshards the cluster in place: slots migrate, clients follow MOVED redirects",
            f"{_REDIS}: updatable (scaling)",
        ),
    ),
    "gcp:bigquery/table:Table": (
        *_replace(
            (
                "datasetId",
                "tableId",
                "project",
                "encryptionConfiguration",
                "materializedView.query",
            ),
            "fixed when the table is created (its data is dropped)",
            f"{_BQ_TABLE}: ForceNew",
        ),
        *_replace(
            ("timePartitioning.type", "timePartitioning.field", "rangePartitioning"),
            "BigQuery cannot change a table's partitioning: the table and its data are dropped",
            f"{_BQ_TABLE}: ForceNew; BigQuery docs, 'Managing partitioned tables'",
        ),
        *_disrupt(
            ("clustering",),
            "changes clustering in place: only data written afterwards is clustered anew",
            f"{_BQ_TABLE}: updatable; BigQuery docs, 'Modifying clustering specification'",
        ),
    ),
    "gcp:bigquery/dataset:Dataset": _replace(
        ("datasetId", "location", "project"),
        "fixed when the dataset is created",
        f"{_TF} google/services/bigquery/resource_bigquery_dataset.go: ForceNew",
    ),
    "gcp:pubsub/subscription:Subscription": _replace(
        ("name", "topic", "project", "enableMessageOrdering", "filter"),
        "fixed when the subscription is created (undelivered messages are lost)",
        f"{_TF} google/services/pubsub/resource_pubsub_subscription.go: ForceNew",
    ),
    "gcp:pubsub/topic:Topic": _replace(
        ("name", "project"),
        "identity of the topic",
        f"{_TF} google/services/pubsub/resource_pubsub_topic.go: ForceNew",
    ),
    "gcp:kms/cryptoKey:CryptoKey": _replace(
        (
            "name",
            "keyRing",
            "purpose",
            "importOnly",
            "skipInitialVersionCreation",
            "versionTemplate.protectionLevel",
        ),
        "fixed when the key is created (data encrypted with the old key needs it)",
        f"{_TF} google/services/kms/resource_kms_crypto_key.go: ForceNew",
    ),
    "kubernetes:apps/v1:Deployment": _replace(
        ("spec.selector",), "a Deployment's selector is immutable", _KUBERNETES
    ),
    "kubernetes:apps/v1:StatefulSet": _replace(
        ("spec.selector", "spec.serviceName", "spec.volumeClaimTemplates"),
        "immutable StatefulSet field",
        _KUBERNETES,
    ),
    "kubernetes:batch/v1:Job": _replace(
        ("spec.template", "spec.selector"), "a Job's pod template is immutable", _KUBERNETES
    ),
}
# Identity inputs: a new name, project or place is a new resource for virtually every GCP type.
GCP_IDENTITY = _replace(
    ("name", "project", "location", "region", "zone"),
    "identity input",
    f"{_TF}: ForceNew on identity inputs of nearly every resource (heuristic for types "
    "without a table entry)",
)
KUBERNETES_IDENTITY = _replace(
    ("metadata.name", "metadata.namespace"), "the object's identity", _KUBERNETES
)


def _normalize(path: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", path)


def _covers(rule_path: str, path: str) -> bool:
    normalized = _normalize(path)
    return (
        normalized == rule_path
        or normalized.startswith(rule_path + ".")
        or normalized.startswith(rule_path + "[")
    )


def rule_for(resource: Resource, path: str) -> Rule | None:
    """The rule a change at `path` falls under: Pulumi's own replaceOnChanges option first,
    then the type's table, then identity inputs."""
    for option in resource.options.get("replaceOnChanges", []) or []:
        if option == "*" or _covers(_normalize(str(option)), path):
            return Rule(str(option), "replace", "replaceOnChanges resource option", "Pulumi")
    rules = REPLACE_ON_CHANGE.get(resource.type, ())
    if resource.type.startswith("gcp:"):
        rules = (*rules, *GCP_IDENTITY)
    elif resource.type.startswith("kubernetes:"):
        rules = (*rules, *KUBERNETES_IDENTITY)
    for rule in rules:
        if _covers(rule.path, path):
            return rule
    return None


# --------------------------------------------------------------------------- resource diff


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class InputChange:
    path: str
    old: Any
    new: Any
    effect: Effect
    secret: bool = False
    why: str = ""
    source: str = ""


@dataclass(frozen=True)
class ResourceChange:
    kind: Kind
    type: str
    name: str
    urn: str
    region: str | None
    changes: tuple[InputChange, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)  # added/removed: all inputs, flat
    secret_paths: frozenset[str] = frozenset()
    protected: bool = False

    @property
    def replacing(self) -> list[InputChange]:
        return [c for c in self.changes if c.effect == "replace"]

    @property
    def disruptive(self) -> list[InputChange]:
        return [c for c in self.changes if c.effect == "disruptive"]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Inputs as leaf paths (`a.b[0].c`, the engine's secret-path syntax). Lists of scalars
    are one leaf; empty objects and lists are leaves, so adding or clearing one shows."""
    if isinstance(value, dict):
        if not value:
            return {prefix: {}} if prefix else {}
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


# Keys whose string values are credentials, whatever the provider says.
SECRET_KEY_RE = re.compile(
    r"(password|passwd|secret|token|private_?key|credential|api_?key|auth_?string|"
    r"client_?key|key_?data|access_?key|ssh_?key)",
    re.IGNORECASE,
)
SECRET_TYPES = {
    "kubernetes:core/v1:Secret": ("data", "stringData"),
    "gcp:secretmanager/secretVersion:SecretVersion": ("secretData",),
}


def is_secret(resource_type: str, path: str, value: Any, secret_paths: Sequence[str]) -> bool:
    for secret in secret_paths:
        if path == secret or any(
            path.startswith(secret + sep) or secret.startswith(path + sep) for sep in ".["
        ):
            return True
    for root in SECRET_TYPES.get(resource_type, ()):
        if path == root or path.startswith(root + ".") or path.startswith(root + "["):
            return True
    if isinstance(value, bool | int | float) or value is None or value is ABSENT:
        return False
    segments = re.split(r"[.\[\]]+", path)
    return any(SECRET_KEY_RE.search(segment) for segment in segments if segment)


def _schema_change(old: Any, new: Any) -> tuple[Effect, str] | None:
    """A BigQuery table schema (JSON): removing or retyping a column replaces the table."""
    try:
        old_fields = {f["name"]: f.get("type") for f in json.loads(old)}
        new_fields = {f["name"]: f.get("type") for f in json.loads(new)}
    except (TypeError, ValueError, KeyError):
        return None
    dropped = sorted(set(old_fields) - set(new_fields))
    retyped = sorted(n for n in old_fields if n in new_fields and old_fields[n] != new_fields[n])
    if dropped or retyped:
        what = ", ".join([*(f"{n} removed" for n in dropped), *(f"{n} retyped" for n in retyped)])
        return "replace", f"columns {what}: BigQuery cannot drop or retype in place"
    return None


def diff_resource(base: Resource, head: Resource, region: str | None) -> ResourceChange | None:
    old, new = flatten(base.inputs), flatten(head.inputs)
    secret_paths = (*base.secrets, *head.secrets)
    changes: list[InputChange] = []
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path, ABSENT), new.get(path, ABSENT)
        if before == after and not _secret_changed(base, head, path, before):
            continue
        rule = rule_for(head, path)
        effect: Effect = rule.effect if rule else "update"
        why, source = (rule.why, rule.source) if rule else ("", "")
        if head.type == "gcp:bigquery/table:Table" and path == "schema":
            schema = _schema_change(before, after)
            if schema is not None:
                effect, why, source = schema[0], schema[1], f"{_BQ_TABLE}: schema CustomizeDiff"
        secret = is_secret(head.type, path, after if after is not ABSENT else before, secret_paths)
        changes.append(InputChange(path, before, after, effect, secret, why, source))
    if not changes:
        return None
    kind: Kind = "replace" if any(c.effect == "replace" for c in changes) else "update"
    return ResourceChange(
        kind,
        head.type,
        head.name,
        head.urn,
        region,
        tuple(changes),
        secret_paths=frozenset(secret_paths),
        protected=bool(base.options.get("protect")),
    )


def _secret_changed(base: Resource, head: Resource, path: str, value: Any) -> bool:
    """Both sides show SECRET at `path`: their digests (made with the diff's shared key) tell
    whether the value behind it changed."""
    if value != SECRET:
        return False
    old, new = base.secret_digests.get(path), head.secret_digests.get(path)
    return old is not None and new is not None and old != new


def diff_inventories(base: Inventory, head: Inventory) -> tuple[list[ResourceChange], int]:
    """Every resource that is added, removed, updated or replaced, and how many are unchanged."""
    before, after = base.by_urn(), head.by_urn()
    base_regions, head_regions = base.regions(), head.regions()
    changes: list[ResourceChange] = []
    unchanged = 0
    for urn in sorted(set(before) | set(after)):
        if urn not in before:
            r = after[urn]
            changes.append(_whole(r, "add", head_regions.get(urn)))
        elif urn not in after:
            r = before[urn]
            changes.append(_whole(r, "remove", base_regions.get(urn)))
        else:
            change = diff_resource(before[urn], after[urn], head_regions.get(urn))
            if change is None:
                unchanged += 1
            else:
                changes.append(change)
    return changes, unchanged


def _whole(resource: Resource, kind: Kind, region: str | None) -> ResourceChange:
    return ResourceChange(
        kind,
        resource.type,
        resource.name,
        resource.urn,
        region,
        inputs=flatten(resource.inputs),
        secret_paths=frozenset(resource.secrets),
        protected=bool(resource.options.get("protect")),
    )


# --------------------------------------------------------------------------- a stack's two sides


@dataclass
class Side:
    label: str  # "main (abc1234)" or "working tree"
    inventory: Inventory | None = None
    error: str | None = None  # why it could not be planned
    estimate: Estimate | None = None
    estimate_error: str | None = None
    violations: list[Violation] | None = None


@dataclass
class StackDiff:
    stack: str
    base: Side
    head: Side
    changes: list[ResourceChange] = field(default_factory=list)
    unchanged: int = 0
    policy_added: list[Violation] = field(default_factory=list)
    policy_removed: list[Violation] = field(default_factory=list)
    policy_error: str | None = None
    notes: list[str] = field(default_factory=list)

    def count(self, kind: Kind) -> int:
        return sum(c.kind == kind for c in self.changes)

    @property
    def cost_delta(self) -> float | None:
        if self.base.estimate is None or self.head.estimate is None:
            return None
        return self.head.estimate.total - self.base.estimate.total


def compare(stack: str, base: Side, head: Side) -> StackDiff:
    result = StackDiff(stack, base, head)
    if head.inventory is not None and base.inventory is not None:
        result.changes, result.unchanged = diff_inventories(base.inventory, head.inventory)
    if base.violations is not None and head.violations is not None:
        key = _violation_key
        base_keys = {key(v) for v in base.violations}
        head_keys = {key(v) for v in head.violations}
        result.policy_added = [v for v in head.violations if key(v) not in base_keys]
        result.policy_removed = [v for v in base.violations if key(v) not in head_keys]
    return result


def _violation_key(v: Violation) -> tuple[str, str, str]:
    return (v.policy, v.urn or "", v.message)


# --------------------------------------------------------------------------- git and planning


def git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def repo_root(path: Path) -> Path:
    try:
        return Path(git(path, "rev-parse", "--show-toplevel")).resolve()
    except DiffError as exc:
        raise DiffError(f"{path} is not inside a git repository ({exc})") from None


def resolve_ref(root: Path, ref: str) -> str:
    try:
        return git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except DiffError:
        raise DiffError(f"unknown git ref {ref!r} in {root}") from None


@contextlib.contextmanager
def worktree(root: Path, commit: str) -> Iterator[Path]:
    """A temporary detached worktree of `commit`, removed afterwards even on failure."""
    parent = Path(tempfile.mkdtemp(prefix="plan-diff-"))
    path = parent / "tree"
    try:
        git(root, "worktree", "add", "--detach", "--quiet", str(path), commit)
        yield path
    finally:
        with contextlib.suppress(DiffError):
            git(root, "worktree", "remove", "--force", str(path))
        shutil.rmtree(parent, ignore_errors=True)
        with contextlib.suppress(DiffError):
            git(root, "worktree", "prune")


def plan_program(
    program: Path, stack: str, allow_unknown_inputs: bool, secret_digest_key: str = ""
) -> tuple[Inventory | None, str | None]:
    """Plan one stack of a program in a fresh process: its modules cannot meet another
    program's, and a program that crashes or hangs fails only its own side. Plans made with
    the same `secret_digest_key` can tell whether a masked secret changed."""
    if not (program / f"Pulumi.{stack}.yaml").is_file():
        return None, f"no Pulumi.{stack}.yaml: the stack does not exist there"
    with tempfile.TemporaryDirectory(prefix="plan-") as tmp:
        out = Path(tmp) / "plan.json"
        command = [sys.executable, "-m", "tools", "plan", "--stack", stack]
        command += ["--program", str(program), "--json", str(out)]
        if allow_unknown_inputs:
            command.append("--allow-unknown-inputs")
        env = {**os.environ, "PYTHONPATH": str(TOOLS_REPO)}
        if secret_digest_key:
            env[SECRET_DIGEST_KEY_ENV] = secret_digest_key
        try:
            result = subprocess.run(
                command,
                cwd=TOOLS_REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=PLAN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, f"planning did not finish in {PLAN_TIMEOUT_S}s"
        if result.returncode != 0 or not out.is_file():
            return None, _error_tail(result.stderr)
        return Inventory.from_json(json.loads(out.read_text())), None


def _error_tail(stderr: str, lines: int = 12) -> str:
    """The end of a failed plan's output: the error line and the traceback's last frames."""
    kept = [line for line in stderr.strip().splitlines() if not line.startswith("planning ")]
    return "\n".join(kept[-lines:]) or "the plan failed without output"


@dataclass(frozen=True)
class Options:
    policy: bool = True
    cost: bool = True


def diff_stacks(
    program: Path,
    stacks: Sequence[str],
    base_ref: str,
    head_ref: str | None = None,
    options: Options = Options(),
) -> list[StackDiff]:
    """Plan every stack at base and head and compare them."""
    program = Path(program).resolve()
    root = repo_root(program)
    relative = program.relative_to(root)
    base_commit = resolve_ref(root, base_ref)
    head_commit = resolve_ref(root, head_ref) if head_ref else None
    base_label = _label(base_ref, base_commit)
    head_label = _label(head_ref, head_commit) if head_ref and head_commit else "working tree"
    with contextlib.ExitStack() as stack:
        base_tree = stack.enter_context(worktree(root, base_commit)) / relative
        head_tree = (
            stack.enter_context(worktree(root, head_commit)) / relative if head_commit else program
        )
        digest_key = secrets.token_hex(16)
        jobs = [
            _PlanJob(tree, name, side, label)
            for name in stacks
            for tree, side, label in (
                (base_tree, "base", base_label),
                (head_tree, "head", head_label),
            )
        ]
        # Each plan is its own process: as many at once as there are cores.
        with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 2)) as pool:
            planned = list(pool.map(lambda job: job.run(digest_key), jobs))
        results: list[StackDiff] = []
        for index, name in enumerate(stacks):
            base = Side(base_label, *planned[2 * index])
            head = Side(head_label, *planned[2 * index + 1])
            if base.inventory is None and base.error and base.error.startswith("no Pulumi."):
                # A stack new in this change: everything in it is added.
                base.inventory = Inventory(name, head.inventory.project if head.inventory else "")
            if options.cost:
                _price(base, base_tree, name)
                _price(head, head_tree, name)
            policy_error = (
                _analyze(base, head, name, _stack_config(head_tree, name))
                if options.policy
                else None
            )
            results.append(_finish(compare(name, base, head), policy_error))
    return results


@dataclass(frozen=True)
class _PlanJob:
    """One side of one stack to plan, announcing its start and end on stderr."""

    tree: Path
    stack: str
    side: str  # "base" or "head"
    label: str

    def run(self, digest_key: str) -> tuple[Inventory | None, str | None]:
        print(f"planning {self.stack} at {self.side} ({self.label}) ...", file=sys.stderr)
        started = time.perf_counter()
        inventory, error = plan_program(self.tree, self.stack, self.side == "base", digest_key)
        took = f"{time.perf_counter() - started:.1f}s"
        if inventory is not None:
            done = f"planned {self.stack} at {self.side}: {len(inventory.resources)} resources"
        else:
            done = f"could not plan {self.stack} at {self.side}"
        print(f"{done} in {took}", file=sys.stderr)
        return inventory, error


def _label(ref: str, commit: str) -> str:
    return commit[:7] if commit.startswith(ref) else f"{ref} ({commit[:7]})"


def _stack_config(program: Path, stack: str) -> dict[str, str]:
    """The head's stack config, handed to the pack as `pulumi preview` does (PULUMI_CONFIG)."""
    try:
        project = read_project(program)
        return read_stack_config(project.root / f"Pulumi.{stack}.yaml", project.name)
    except Exception:  # the plan already reported what is wrong with the project
        return {}


def _price(side: Side, program: Path, stack: str) -> None:
    if side.inventory is None:
        return
    try:
        usage: StackUsage = usage_from_stack(program, stack)
    except Exception as exc:  # an older ref's cost config this code no longer reads
        side.estimate_error = f"cost config unreadable ({exc}); priced with defaults"
        from infra.config import CostSettings

        usage = StackUsage(CostSettings(), None)
    side.estimate = estimate(side.inventory, usage.usage, usage.budget_usd)


def _analyze(
    base: Side, head: Side, stack: str, stack_config: Mapping[str, str] | None = None
) -> str | None:
    """Run the real policy pack over both sides (one process), each with its cost estimate as
    the budget rule's config. Returns why the comparison is missing, if it is."""
    sides = [s for s in (base, head) if s.inventory is not None and s.inventory.resources]
    if base.inventory is not None and not base.inventory.resources:
        base.violations = []  # a new stack: every finding at head is new
    if not sides:
        return None
    project = next(s.inventory.project for s in sides if s.inventory is not None)
    try:
        with PolicyPackProcess(project=project, stack=stack, stack_config=stack_config) as pack:
            for side in sides:
                assert side.inventory is not None
                pack.configure(budget_policy_config(side.estimate) if side.estimate else {})
                side.violations = pack.analyze_all(side.inventory.resources).violations
    except AnalyzerError as exc:
        base.violations = head.violations = None
        return str(exc).splitlines()[0]
    return None


def _finish(result: StackDiff, policy_error: str | None) -> StackDiff:
    result.policy_error = policy_error
    for side, name in ((result.base, "base"), (result.head, "head")):
        if side.estimate_error:
            result.notes.append(f"{name}: {side.estimate_error}")
    return result


# --------------------------------------------------------------------------- rendering

_SYMBOL = {"add": "+", "remove": "-", "update": "~", "replace": "+-"}
_TITLE = {
    "replace": "Replaced (deleted and created again)",
    "remove": "Deleted",
    "update": "Updated in place",
    "add": "Added",
}
_ORDER: tuple[Kind, ...] = ("replace", "remove", "update", "add")
MAX_VALUE = 80
# Longer groups of changes fold into <details> in a PR comment.
FOLD_AFTER = 15


def show(value: Any, secret: bool = False) -> str:
    if value is ABSENT:
        return "(absent)"
    if secret:
        return MASK
    if value == UNKNOWN:
        return "(known after apply)"
    if isinstance(value, str):
        lines = value.splitlines()
        if len(lines) > 1:
            first = lines[0].strip() or lines[1].strip()
            return _clip(json.dumps(first)) + f" (+{len(lines) - 1} lines)"
        return _clip(json.dumps(value))
    return _clip(json.dumps(value, sort_keys=True, default=str))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _change_line(change: InputChange) -> str:
    old, new = show(change.old, change.secret), show(change.new, change.secret)
    if change.secret and change.old is not ABSENT and change.new is not ABSENT:
        new += " (changed)"
    return f"{change.path}: {old} → {new}"


def _effect_note(change: InputChange) -> str:
    if change.effect == "replace":
        return f"forces replacement: {change.why} [{change.source}]"
    if change.effect == "disruptive":
        return f"in place, but {change.why} [{change.source}]"
    return ""


_VERBS: tuple[tuple[Kind, str], ...] = (
    ("add", "add"),
    ("update", "update"),
    ("replace", "replace"),
    ("remove", "delete"),
)


def _headline(d: StackDiff) -> str:
    counts = ", ".join(f"{d.count(kind)} to {verb}" for kind, verb in _VERBS)
    return f"{counts}, {d.unchanged} unchanged"


def _cost_summary(d: StackDiff) -> str | None:
    base, head = d.base.estimate, d.head.estimate
    if head is None:
        return None
    if base is None or d.base.inventory is None or not d.base.inventory.resources:
        return f"{usd(head.total)}/month"
    delta = head.total - base.total
    percent = f", {delta / base.total:+.0%}" if base.total else ""
    sign = "+" if delta >= 0 else ""
    return f"{usd(base.total)} → {usd(head.total)}/month ({sign}{usd(delta)}{percent})"


def cost_deltas(d: StackDiff) -> list[tuple[str, str, float, float]]:
    """(line item, region, base, head) for every line whose monthly cost changed."""
    if d.base.estimate is None or d.head.estimate is None:
        return []
    before, after = d.base.estimate.by_price(), d.head.estimate.by_price()
    rows = []
    for key in sorted(set(before) | set(after), key=lambda k: (k[1], k[0])):
        old, new = before.get(key, 0.0), after.get(key, 0.0)
        if abs(new - old) >= 0.005:
            rows.append((key[0], key[1], old, new))
    return rows


def _describe(v: Violation, inventory: Inventory | None) -> str:
    where = "the stack"
    if v.urn and inventory is not None:
        resource = inventory.by_urn().get(v.urn)
        where = f"{resource.type} {resource.name}" if resource else v.urn
    elif v.urn:
        where = v.urn
    return f"[{v.level}] {v.policy} on {where}: {v.message}"


def render_text(diffs: Sequence[StackDiff]) -> str:
    out: list[str] = []
    for d in diffs:
        out.append(f"stack {d.stack}: {d.base.label} → {d.head.label}")
        if d.head.inventory is None:
            out += ["  the head could not be planned:", _indent(d.head.error or "", 4), ""]
            continue
        if d.base.inventory is None:
            out += [
                "  the base could not be planned, so there is nothing to compare with:",
                _indent(d.base.error or "", 4),
                f"  head: {len(d.head.inventory.resources)} resources",
            ]
        else:
            out.append(f"  {_headline(d)}")
        for kind in _ORDER:
            for change in (c for c in d.changes if c.kind == kind):
                where = f" ({change.region})" if change.region else ""
                flag = "  REPLACE" if kind == "replace" else ""
                protect = (
                    "  (protected: the delete will fail)"
                    if change.protected and kind in ("remove", "replace")
                    else ""
                )
                out.append(
                    f"  {_SYMBOL[kind]:<2} {change.type} {change.name}{where}{flag}{protect}"
                )
                for item in change.changes:
                    out.append(f"       {_change_line(item)}")
                    note = _effect_note(item)
                    if note:
                        out.append(f"         {note}")
        cost = _cost_summary(d)
        if cost:
            out += ["", f"  cost: {cost}"]
            for item, region, old, new in cost_deltas(d):
                out.append(f"    {region}: {item}: {usd(old)} → {usd(new)}")
            if d.head.estimate is not None:
                out.append(f"    {_per_signal(d.head.estimate)}")
        out += _policy_text(d)
        out += [f"  note: {n}" for n in d.notes]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _per_signal(e: Estimate) -> str:
    text = f"head: ${e.per_signal:,.4f} per signal at {e.signals_per_month:,} signals/month"
    if e.budget_usd is not None:
        text += f"; budget {usd(e.budget_usd)}" + (" EXCEEDED" if e.over_budget else "")
    return text


def _policy_text(d: StackDiff) -> list[str]:
    if d.policy_error:
        return ["", f"  policy: not compared ({d.policy_error})"]
    if d.head.violations is None:
        return []
    out = ["", "  policy findings:"]
    out += [f"    new:      {_describe(v, d.head.inventory)}" for v in d.policy_added]
    out += [f"    resolved: {_describe(v, d.base.inventory)}" for v in d.policy_removed]
    if not d.policy_added and not d.policy_removed:
        out.append("    no change")
    levels = _levels(d.head.violations)
    out.append(f"    head: {levels}")
    return out


def _levels(violations: Sequence[Violation]) -> str:
    counts: dict[str, int] = {}
    for v in violations:
        counts[v.level] = counts.get(v.level, 0) + 1
    return ", ".join(f"{n} {level}" for level, n in sorted(counts.items())) or "no findings"


def _indent(text: str, width: int) -> str:
    return "\n".join(" " * width + line for line in text.splitlines())


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def render_markdown(diffs: Sequence[StackDiff]) -> str:
    out = [COMMENT_MARKER, "## Offline plan diff", ""]
    if diffs:
        out.append(
            f"{diffs[0].base.label} → {diffs[0].head.label}, planned offline with no cloud credentials."
        )
    out += [
        "",
        "| Stack | Add | Update | Replace | Delete | Unchanged | Policy (new / resolved) | Monthly cost |",
        "|---|--:|--:|--:|--:|--:|---|---|",
    ]
    for d in diffs:
        if d.head.inventory is None:
            out.append(f"| {d.stack} | | | | | | | head failed to plan |")
            continue
        policy = (
            "not compared"
            if d.policy_error or d.head.violations is None
            else f"{len(d.policy_added)} / {len(d.policy_removed)}"
        )
        cost = _md(_cost_summary(d) or "")
        if d.base.inventory is None:
            out.append(f"| {d.stack} | base failed to plan | | | | | {policy} | {cost} |")
            continue
        out.append(
            f"| {d.stack} | {d.count('add')} | {d.count('update')} | {d.count('replace')} "
            f"| {d.count('remove')} | {d.unchanged} | {policy} | {cost} |"
        )
    for d in diffs:
        out += ["", f"### {d.stack}", ""]
        if d.head.inventory is None:
            out += ["The head could not be planned:", "", "```", d.head.error or "", "```"]
            continue
        if d.base.inventory is None:
            out += [
                f"The base ({d.base.label}) could not be planned, so there is nothing to "
                "compare with:",
                "",
                "```",
                d.base.error or "",
                "```",
            ]
        for kind in _ORDER:
            group = [c for c in d.changes if c.kind == kind]
            if not group:
                continue
            out += [f"**{_TITLE[kind]}: {len(group)}**", ""]
            folded = len(group) > FOLD_AFTER
            if folded:
                out += [f"<details><summary>{len(group)} resources</summary>", ""]
            for change in group:
                where = f" ({change.region})" if change.region else ""
                protect = (
                    " — protected: the delete will fail"
                    if change.protected and kind in ("remove", "replace")
                    else ""
                )
                out.append(f"- {_code(change.type)} **{_md(change.name)}**{where}{protect}")
                for item in change.changes:
                    line = f"  - {_code(_change_line(item))}"
                    note = _effect_note(item)
                    if note:
                        line += f" — {'**' if item.effect == 'replace' else '_'}{_md(note)}{'**' if item.effect == 'replace' else '_'}"
                    out.append(line)
            out += ["", "</details>", ""] if folded else [""]
        out += _cost_markdown(d)
        out += _policy_markdown(d)
        out += [f"> {n}" for n in d.notes]
    return "\n".join(out).rstrip() + "\n"


def _cost_markdown(d: StackDiff) -> list[str]:
    cost = _cost_summary(d)
    if not cost or d.head.estimate is None:
        return []
    out = [f"**Cost:** {cost}. {_per_signal(d.head.estimate)}.", ""]
    rows = cost_deltas(d)
    if rows:
        out += ["<details><summary>Cost lines that changed</summary>", ""]
        out += ["| Region | Line item | Base | Head |", "|---|---|--:|--:|"]
        out += [f"| {r} | {_md(i)} | {usd(o)} | {usd(n)} |" for i, r, o, n in rows]
        out += ["", "</details>", ""]
    if d.head.estimate.unpriced:
        names = ", ".join(sorted({_code(u.type) for u in d.head.estimate.unpriced}))
        out += [f"Unpriced (not in the total): {names}", ""]
    return out


def _policy_markdown(d: StackDiff) -> list[str]:
    if d.policy_error:
        return [f"**Policy:** not compared ({_md(d.policy_error)})", ""]
    if d.head.violations is None:
        return []
    out = [f"**Policy findings at head:** {_levels(d.head.violations)}", ""]
    out += [f"- new: {_md(_describe(v, d.head.inventory))}" for v in d.policy_added]
    out += [f"- resolved: {_md(_describe(v, d.base.inventory))}" for v in d.policy_removed]
    if d.policy_added or d.policy_removed:
        out.append("")
    return out
