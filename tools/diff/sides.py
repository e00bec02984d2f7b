"""Both sides of each stack: planned in their own processes (the base from a temporary worktree,
the head from the working tree or another ref), priced with each side's own cost config, and
checked by one run of the real policy pack, each side with its estimate as the budget rule's
config."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tools.analyzer import AnalyzerError, PolicyPackProcess
from tools.cost import StackUsage, budget_policy_config, estimate, usage_from_stack
from tools.diff.compare import Side, StackDiff, compare
from tools.diff.worktree import repo_root, resolve_ref, worktree
from tools.engine import SECRET_DIGEST_KEY_ENV, read_project, read_stack_config
from tools.inventory import Inventory

TOOLS_REPO = Path(__file__).resolve().parent.parent.parent
PLAN_TIMEOUT_S = 600


def plan_program(
    program: Path, stack: str, allow_unknown_inputs: bool, secret_digest_key: str = ""
) -> tuple[Inventory | None, str | None]:
    """Plan one stack of a program in a fresh process: its modules cannot meet another
    program's, and a program that crashes or hangs fails only its own side. Plans made with
    the same `secret_digest_key` can tell whether a masked secret changed."""
    if not _stack_path(program, stack).is_file():
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


def _stack_path(program: Path, stack: str) -> Path:
    """Where the stack's file is (Pulumi.yaml's stackConfigDir); a project that cannot be
    read is left for its plan to report."""
    try:
        return read_project(program).stack_path(stack)
    except Exception:
        return program / f"Pulumi.{stack}.yaml"


def _stack_config(program: Path, stack: str) -> dict[str, str]:
    """The head's stack config, handed to the pack as `pulumi preview` does (PULUMI_CONFIG)."""
    try:
        project = read_project(program)
        return read_stack_config(project.stack_path(stack), project.name)
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
