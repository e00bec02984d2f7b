""".github/workflows: valid GitHub workflows whose commands exist, with the promised shape.

Each workflow is validated against the GitHub workflow schema (check-jsonschema's vendored
copy, offline); every `make` target a step runs is a Makefile target the README documents, and
every `python -m tools ...` line parses with the real command line.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.__main__ import COMMANDS

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
NAMES = ("ci", "preview", "deploy")
MAKE_RE = re.compile(r"\bmake\s+([a-z][\w-]*)")
TOOLS_RE = re.compile(r"python -m tools (.+)")
EXPRESSION_RE = re.compile(r"\$\{\{.*?\}\}")


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text())
    # YAML 1.1 reads the `on:` key as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def run_lines(workflow: dict[str, Any]) -> list[str]:
    return [line for step in steps(workflow) for line in str(step.get("run", "")).splitlines()]


def uses(job: dict[str, Any], action: str) -> dict[str, Any]:
    [step] = [s for s in job["steps"] if str(s.get("uses", "")).startswith(action + "@")]
    return step


def test_workflows_match_the_github_workflow_schema():
    files = [str(WORKFLOWS / f"{name}.yml") for name in NAMES]
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*):(?!=)", text, flags=re.MULTILINE))


@pytest.mark.parametrize("name", NAMES)
def test_make_targets_exist_and_are_documented(name: str):
    readme = (REPO / "README.md").read_text()
    targets = makefile_targets()
    used = {m for line in run_lines(load(name)) for m in MAKE_RE.findall(line)}
    assert used, f"{name}.yml runs no make target"
    assert used <= targets, f"{name}.yml runs make targets the Makefile lacks: {used - targets}"
    undocumented = {t for t in used if f"make {t}" not in readme}
    assert not undocumented, f"README.md does not mention: {undocumented}"


def tools_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools", exit_on_error=False)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


@pytest.mark.parametrize("name", NAMES)
def test_tools_commands_parse(name: str):
    parser = tools_parser()
    lines = [m.group(1) for line in run_lines(load(name)) if (m := TOOLS_RE.search(line))]
    for line in lines:
        argv = shlex.split(EXPRESSION_RE.sub("dev", line))
        try:
            parser.parse_args(argv)
        except (SystemExit, argparse.ArgumentError) as exc:
            raise AssertionError(f"{name}.yml: `python -m tools {line}` does not parse") from exc


def test_ci_lints_tests_and_checks_both_stacks():
    ci = load("ci")
    assert set(ci["on"]) == {"push", "pull_request"}
    lines = run_lines(ci)
    for command in ("make setup", "make lint", "make test"):
        assert any(line.startswith(command) for line in lines), command
    assert "make check STACK=dev" in lines and "make check STACK=prod" in lines


def test_preview_is_fork_safe_and_previews_only_with_workload_identity():
    preview = load("preview")
    assert set(preview["on"]) == {"pull_request"}  # never pull_request_target
    text = (WORKFLOWS / "preview.yml").read_text()
    assert "secrets." not in text
    offline = preview["jobs"]["offline"]
    assert any("make diff" in str(s.get("run", "")) for s in offline["steps"])
    assert uses(offline, "actions/checkout")["with"]["fetch-depth"] == 0
    comment = uses(offline, "actions/github-script")
    assert "<!-- signal-platform:plan-diff -->" in comment["with"]["script"]
    assert "head.repo.full_name == github.repository" in comment["if"]
    cloud = preview["jobs"]["pulumi"]
    assert "vars.GCP_WORKLOAD_IDENTITY_PROVIDER" in cloud["if"]
    assert "head.repo.full_name == github.repository" in cloud["if"]
    assert cloud["permissions"]["id-token"] == "write"
    assert cloud["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    auth = uses(cloud, "google-github-actions/auth")["with"]
    assert set(auth) == {"workload_identity_provider", "service_account"}  # no key file
    pulumi = uses(cloud, "pulumi/actions")["with"]
    assert pulumi["command"] == "preview" and pulumi["diff"] is True
    assert pulumi["policyPacks"] == "policies"


def test_deploy_goes_dev_then_prod_behind_an_approval():
    deploy = load("deploy")
    assert deploy["on"]["push"]["branches"] == ["main"]
    dev, prod = deploy["jobs"]["dev"], deploy["jobs"]["prod"]
    assert prod["needs"] == "dev"
    assert dev["environment"] == "dev" and prod["environment"] == "prod"
    for job, stack in ((dev, "dev"), (prod, "prod")):
        assert job["permissions"]["id-token"] == "write"
        pulumi = uses(job, "pulumi/actions")["with"]
        assert (pulumi["command"], pulumi["stack-name"]) == ("up", stack)
        assert pulumi["policyPacks"] == "policies"
        assert pulumi["policyPackConfigs"] == f"plans/budget-{stack}.json"
        assert f"make check STACK={stack}" in [s.get("run") for s in job["steps"]]
    assert "credentials_json" not in (WORKFLOWS / "deploy.yml").read_text()


@pytest.mark.parametrize(("name", "jobs"), [("deploy", ("dev", "prod")), ("preview", ("pulumi",))])
def test_jobs_that_reach_the_clusters_install_the_auth_plugin_first(name: str, jobs: tuple):
    """The Kubernetes provider's kubeconfig (infra/cluster.py) runs gke-gcloud-auth-plugin to
    reach the clusters through Connect Gateway: the job installs it after authenticating and
    before Pulumi runs."""
    workflow = load(name)
    for job_name in jobs:
        job = workflow["jobs"][job_name]
        gcloud = uses(job, "google-github-actions/setup-gcloud")
        components = str(gcloud["with"]["install_components"]).replace(",", " ").split()
        assert "gke-gcloud-auth-plugin" in components, job_name
        order = [str(s.get("uses", "")).split("@")[0] for s in job["steps"]]
        auth = order.index("google-github-actions/auth")
        setup = order.index("google-github-actions/setup-gcloud")
        assert auth < setup < order.index("pulumi/actions"), order


def test_the_kubeconfig_calls_the_plugin_the_workflows_install():
    from infra.cluster import gateway_server, kubeconfig

    config = yaml.safe_load(kubeconfig("c", gateway_server("123", "us-central1", "c")))
    (user,) = config["users"]
    assert user["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"


def test_pulumi_type_checks_the_program_with_pyright_from_its_virtualenv():
    """`pulumi preview`/`up` run pyright over the program first, as `make lint` does; the
    language host refuses to run the program when the typechecker is not installed in the
    program's virtualenv, so pyright is one of the program's requirements."""
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    options = project["runtime"]["options"]
    assert options == {"toolchain": "pip", "virtualenv": ".venv", "typechecker": "pyright"}
    pins = (REPO / "requirements.txt").read_text().splitlines()
    assert any(re.fullmatch(r"pyright==[\d.]+", line) for line in pins)


def test_no_program_module_shadows_the_standard_library():
    """The language host runs `python -m pyright <program dir>` from the program directory, and
    `python -m` puts that directory first on sys.path: a module there named like a standard
    library one (infra/platform.py was) replaces it inside pyright itself, which then crashes."""
    program = REPO / yaml.safe_load((REPO / "Pulumi.yaml").read_text())["main"]
    modules = {path.stem for path in program.glob("*.py")}
    modules |= {path.parent.name for path in program.glob("*/__init__.py")}
    assert "observability" in modules and "config" in modules
    assert not modules & sys.stdlib_module_names
