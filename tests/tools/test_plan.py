"""`python -m tools plan`: the command, its JSON, and programs other than this repository's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.engine import PlanError, parse_overrides, plan, read_project

REPO = Path(__file__).resolve().parents[2]


def run_tools(*args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.fixture(scope="module")
def small_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A separate Pulumi program with its own helper module and stack file."""
    root = tmp_path_factory.mktemp("small-program")
    (root / "Pulumi.yaml").write_text("name: small\nruntime:\n  name: python\nmain: src/\n")
    (root / "Pulumi.test.yaml").write_text(
        "config:\n  gcp:project: small-test-project\n  small:buckets:\n    - alpha\n    - beta\n"
    )
    src = root / "src"
    src.mkdir()
    (src / "naming.py").write_text("def bucket_name(stack, name):\n    return f'{stack}-{name}'\n")
    (src / "__main__.py").write_text(
        textwrap.dedent("""
        import pulumi
        import pulumi_gcp as gcp
        from naming import bucket_name  # imported from the program directory, as Pulumi does

        config = pulumi.Config()
        buckets = [
            gcp.storage.Bucket(name, name=bucket_name(pulumi.get_stack(), name), location="EU",
                               labels={"team": config.get("team") or "none"})
            for name in config.require_object("buckets")
        ]
        pulumi.export("urls", [b.url for b in buckets])
    """)
    )
    return root


def test_plan_json_shape_for_the_repository_stacks(tmp_path: Path):
    for stack in ("dev", "prod"):
        out = tmp_path / f"{stack}.json"
        result = run_tools("plan", "--stack", stack, "--json", str(out))
        assert result.returncode == 0, result.stderr
        assert f"stack {stack} of signal-platform" in result.stdout
        assert "planned" in result.stderr and "resources in" in result.stderr
        data = json.loads(out.read_text())
        assert set(data) == {"stack", "project", "resources", "outputs"}
        assert data["stack"] == stack and data["project"] == "signal-platform"
        for row in data["resources"]:
            assert {"type", "name", "urn", "parent", "provider", "inputs"} <= set(row)
            assert row["urn"].startswith(f"urn:pulumi:{stack}::signal-platform::")
        types = {row["type"] for row in data["resources"]}
        assert "gcp:compute/network:Network" in types and "pulumi:pulumi:Stack" in types
        assert data["outputs"]["project"] == f"signal-platform-{stack}"


def test_summary_counts_by_type_and_region(prod_plan):
    summary = prod_plan.summary()
    for region in ("us-central1", "us-east4", "europe-west4", "global"):
        assert region in summary
    assert "gcp:compute/subnetwork:Subnetwork" in summary


def test_inputs_are_camel_case_as_a_policy_pack_sees_them(prod_plan):
    subnet = prod_plan.of_type("gcp:compute/subnetwork:Subnetwork")[0]
    assert (
        "privateIpGoogleAccess" in subnet.inputs and "private_ip_google_access" not in subnet.inputs
    )


def test_parents_and_providers_are_recorded(prod_plan):
    by_urn = prod_plan.by_urn()
    subnet = prod_plan.named("gcp:compute/subnetwork:Subnetwork", "us-east4-subnet")
    assert by_urn[subnet.parent].type == "signal:infra:RegionalNetwork"
    assert by_urn[by_urn[subnet.parent].parent].type == "signal:infra:Region"
    assert prod_plan.regions()[subnet.urn] == "us-east4"


def test_plan_is_deterministic(dev_plan):
    again = plan(REPO, "dev")
    assert again.to_json() == dev_plan.to_json()


def test_other_program_with_its_own_modules_and_config(small_program: Path):
    inventory = plan(small_program, "test", parse_overrides(["team=quant"], "small"))
    buckets = inventory.of_type("gcp:storage/bucket:Bucket")
    assert [b.inputs["name"] for b in buckets] == ["test-alpha", "test-beta"]
    assert {b.inputs["labels"]["team"] for b in buckets} == {"quant"}
    assert inventory.outputs["urls"] == ["gs://test-alpha", "gs://test-beta"]


def test_other_program_through_the_command(small_program: Path, tmp_path: Path):
    out = tmp_path / "small.json"
    result = run_tools(
        "plan", "--stack", "test", "--program", str(small_program), "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["project"] == "small"


def test_config_override_reaches_the_program():
    inventory = plan(REPO, "dev", {"signal-platform:regions": '["us-east4"]'})
    assert [s.inputs["region"] for s in inventory.of_type("gcp:compute/subnetwork:Subnetwork")] == [
        "us-east4"
    ]


def test_not_a_project_and_bad_override_are_usage_errors(tmp_path: Path):
    with pytest.raises(PlanError, match=r"no Pulumi\.yaml"):
        read_project(tmp_path)
    with pytest.raises(PlanError, match="expected KEY=VALUE"):
        parse_overrides(["regions"], "signal-platform")
    result = run_tools("plan", "--stack", "dev", "--program", str(tmp_path))
    assert result.returncode == 2 and "no Pulumi.yaml" in result.stderr


def test_encrypted_secrets_are_reported_not_guessed(tmp_path: Path):
    (tmp_path / "Pulumi.yaml").write_text("name: s\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  s:token:\n    secure: AAABAJ==\n")
    (tmp_path / "__main__.py").write_text("import pulumi\n")
    with pytest.raises(PlanError, match=r"s:token is an encrypted secret"):
        plan(tmp_path, "dev")
