"""Unknown inputs: caught statically by pyright and at plan time by the engine's input check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.engine import plan
from tools.input_check import args_class, check_inputs, closest, unchecked_types
from tools.inventory import Inventory

REPO = Path(__file__).resolve().parents[2]
TYPO_PROGRAM = Path(__file__).parent / "fixtures" / "typo_program"


@pytest.fixture(scope="module")
def typo_plan() -> Inventory:
    return plan(TYPO_PROGRAM, "dev")


def test_every_typo_is_reported_with_its_path_and_the_valid_name(typo_plan: Inventory):
    found = {(p.resource.name, p.path, p.suggestion) for p in check_inputs(typo_plan)}
    assert found == {
        ("public", "privateClusterConfig.enable_private_node", "enablePrivateNodes"),
        ("gpu", "nodeConfig.machine_typ", "machineType"),
        ("gpu", "nodeConfig.shieldedInstanceConfig.enable_secure_bot", "enableSecureBoot"),
        ("app", "spec.template.spec.containers[0].securityContext.runAsNonroot", "runAsNonRoot"),
        ("mtls", "spec.selecter", "selector"),
        ("mtls", "spec.mtls.mode", None),
    }
    (mode,) = [p for p in check_inputs(typo_plan) if p.path == "spec.mtls.mode"]
    assert "STRICT" in mode.reason and "'STRICTT'" in mode.reason


def test_the_repository_stacks_have_no_unknown_inputs(stack_plan: Inventory):
    assert [str(p) for p in check_inputs(stack_plan)] == []
    assert unchecked_types(stack_plan) == []


def test_plan_fails_on_unknown_inputs_unless_allowed():
    command = [
        sys.executable,
        "-m",
        "tools",
        "plan",
        "--stack",
        "dev",
        "--program",
        str(TYPO_PROGRAM),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    failed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert failed.returncode == 1
    assert (
        "error: gcp:container/cluster:Cluster 'public': privateClusterConfig.enable_private_node:"
        " unknown input; did you mean 'enablePrivateNodes'?" in failed.stderr
    )
    assert "6 input(s) the provider does not know" in failed.stderr
    allowed = subprocess.run(
        [*command, "--allow-unknown-inputs"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert allowed.returncode == 0, allowed.stderr
    assert (
        "warning: gcp:container/nodePool:NodePool 'gpu': nodeConfig.machine_typ" in allowed.stderr
    )


def test_args_classes_resolve_for_resources_and_providers():
    def name(type_token: str) -> str | None:
        return getattr(args_class(type_token), "__name__", None)

    assert name("gcp:container/cluster:Cluster") == "ClusterArgs"
    assert name("kubernetes:apps/v1:Deployment") == "DeploymentArgs"
    assert name("pulumi:providers:gcp") == "ProviderArgs"
    assert args_class("kubernetes:security.istio.io/v1:PeerAuthentication") is None
    assert args_class("acme:thing/widget:Widget") is None


def test_closest_name_compares_snake_case_as_camel_case():
    assert (
        closest("enable_private_node", ["enablePrivateNodes", "enablePrivateEndpoint"])
        == "enablePrivateNodes"
    )
    assert closest("zzz", ["enablePrivateNodes"]) is None


def test_unmodelled_custom_resources_are_listed_as_unchecked(tmp_path: Path):
    (tmp_path / "Pulumi.yaml").write_text("name: crd\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text("")  # an empty stack file: no config
    (tmp_path / "__main__.py").write_text(
        "import pulumi_kubernetes as k8s\n"
        "k8s.apiextensions.CustomResource('w', api_version='acme.io/v1', kind='Widget', spec={'x': 1})\n"
    )
    inventory = plan(tmp_path, "dev")
    assert check_inputs(inventory) == []
    assert unchecked_types(inventory) == ["kubernetes:acme.io/v1:Widget"]


def pyright(path: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("pyright", path=str(Path(sys.executable).parent))
    assert binary, "pyright is installed by requirements-dev.txt"
    return subprocess.run(
        [binary, "--project", str(REPO / "pyproject.toml"), str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


@pytest.mark.slow
def test_static_gate_fails_on_exactly_the_literal_typo(tmp_path: Path):
    source = (TYPO_PROGRAM / "__main__.py").read_text()
    literal_line = (
        source.splitlines().index('    private_cluster_config={"enable_private_node": True},') + 1
    )
    typo = tmp_path / "typo.py"
    typo.write_text(source)
    result = pyright(typo)
    assert result.returncode == 1, result.stdout
    assert f"typo.py:{literal_line}:" in result.stdout
    assert '"private_cluster_config"' in result.stdout
    assert "1 error" in result.stdout, "only the literal typo is a static error"

    fixed = tmp_path / "fixed.py"
    fixed.write_text(source.replace('"enable_private_node"', '"enable_private_nodes"'))
    assert pyright(fixed).returncode == 0
