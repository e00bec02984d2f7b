"""Secret values never leave the engine: every file it writes and every line it prints shows
`[secret]` in their place, with their paths kept (plan, check, cost, diff)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.tools.test_plan import run_tools
from tools.inventory import SECRET

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "cloudrun_sql"
PASSWORD = "correct-horse-battery-staple"


def assert_hidden(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert "postgresql://" not in text  # the DATABASE_URL built from the password


def test_plan_json_masks_values_and_keeps_paths(tmp_path: Path):
    out = tmp_path / "plan.json"
    result = run_tools("plan", "--stack", "test", "--program", str(FIXTURE), "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert_hidden(out.read_text(), result.stdout, result.stderr)
    rows = {(r["type"], r["name"]): r for r in json.loads(out.read_text())["resources"]}
    user = rows[("gcp:sql/user:User", "app")]
    assert user["inputs"]["password"] == SECRET and user["secrets"] == ["password"]
    service = rows[("gcp:cloudrun/service:Service", "api")]
    assert service["secrets"] == ["template.spec.containers[0].envs[0].value"]
    assert json.loads(out.read_text())["outputs"]["databaseUrl"] == SECRET
    version = rows[("gcp:secretmanager/secretVersion:SecretVersion", "db-password")]
    assert version["inputs"]["secretData"] == SECRET and version["secrets"] == ["secretData"]


def test_check_output_and_json_mask_them(tmp_path: Path):
    out = tmp_path / "check.json"
    result = run_tools("check", "--stack", "test", "--program", str(FIXTURE), "--json", str(out))
    assert result.returncode in (0, 1), result.stderr
    assert_hidden(out.read_text(), result.stdout, result.stderr)


def test_cost_output_and_json_mask_them(tmp_path: Path):
    out = tmp_path / "cost.json"
    result = run_tools("cost", "--stack", "test", "--program", str(FIXTURE), "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert_hidden(out.read_text(), result.stdout, result.stderr)


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def changed_password(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture program committed, then its password changed in the working tree."""
    root = tmp_path_factory.mktemp("secret-diff") / "repo"
    shutil.copytree(FIXTURE, root)
    git(root, "init", "--quiet", "--initial-branch", "main")
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "base")
    stack = root / "Pulumi.test.yaml"
    stack.write_text(stack.read_text().replace(PASSWORD, "tr0ub4dor-and-3"))
    return root


def test_diff_shows_a_changed_secret_without_either_value(changed_password: Path, tmp_path: Path):
    markdown = tmp_path / "diff.md"
    result = run_tools(
        "diff",
        "--base",
        "main",
        "--stack",
        "test",
        "--program",
        str(changed_password),
        "--no-policy",
        "--no-cost",
        "--markdown",
        str(markdown),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert_hidden(result.stdout, result.stderr, markdown.read_text())
    assert "tr0ub4dor" not in result.stdout + markdown.read_text()
    assert f"password: {SECRET} → {SECRET} (changed)" in result.stdout
    assert f"secretData: {SECRET} → {SECRET} (changed)" in result.stdout
    # The DATABASE_URL is built from the instance's connection name: unknown in a preview,
    # so it cannot be said to change.
    assert "envs[0].value" not in result.stdout
    # Progress: each side announced, and when it finished.
    assert "planning test at base (main (" in result.stderr
    assert "planning test at head (working tree) ..." in result.stderr
    assert "planned test at head: 9 resources in " in result.stderr
