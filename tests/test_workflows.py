""".github/workflows: valid GitHub workflows whose commands exist, with the promised shape.

Each workflow is validated against the GitHub workflow schema (check-jsonschema's vendored
copy, offline); every action is pinned by commit SHA; every `make` target a step runs is a
Makefile target the README documents, and every `python -m tools ...` line parses with the
real command line. The deploy jobs install only the program's and the pack's requirements, and
what they run works with nothing else installed. The image workflow's scripts (the stack
file's image, the vulnerability gate) run for real on copies of the stack files.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from itertools import takewhile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.__main__ import COMMANDS

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
NAMES = ("ci", "preview", "deploy", "image")
SCRIPTS = REPO / ".github" / "scripts"
MAKE_RE = re.compile(r"\bmake\s+([a-z][\w-]*)")
TOOLS_RE = re.compile(r"python -m tools (.+)")
EXPRESSION_RE = re.compile(r"\$\{\{.*?\}\}")
SHELL_OPERATORS = {">", ">>", "|", "&&", "||", ";", "2>&1"}


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
    [step] = uses_all(job, action)
    return step


def uses_all(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(action + "@")]


def job_run_lines(job: dict[str, Any]) -> list[str]:
    return [line for step in job["steps"] for line in str(step.get("run", "")).splitlines()]


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


@pytest.mark.parametrize("name", ("ci", "preview"))  # deploy and image run no make target
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
        words = shlex.split(EXPRESSION_RE.sub("dev", line))
        # The command's own words: up to the first shell operator (`>> "$GITHUB_ENV"`).
        argv = list(takewhile(lambda w: w not in SHELL_OPERATORS, words))
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
        # A preview with the pack first: a mandatory violation (resource or stack rule) fails
        # the job before `up` changes anything.
        preview, up = (s["with"] for s in uses_all(job, "pulumi/actions"))
        assert (preview["command"], up["command"]) == ("preview", "up")
        for step in (preview, up):
            assert step["stack-name"] == stack
            assert step["policyPacks"] == "policies"
            assert step["policyPackConfigs"] == f"plans/budget-{stack}.json"
            assert step["pulumi-version"] == pin_of(REPO / "requirements.txt", "pulumi")
        assert f"--policy-config plans/budget-{stack}.json" in " ".join(job_run_lines(job))
    assert "credentials_json" not in (WORKFLOWS / "deploy.yml").read_text()


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_deploy_creates_its_stack_in_the_bucket_and_key_the_bootstrap_names(stack: str):
    """An empty backend has no stack: the first deploy creates it (`upsert`, on the preview that
    runs first and on `up`) with the bootstrap's secrets key, in the bootstrap's bucket. The job
    takes both URLs from the bootstrap's own names for the stack's project, not from variables
    set by hand, and later runs read the secrets provider back from the state."""
    from infra.bootstrap import state_env
    from infra.config import StackConfig
    from tools.bootstrap import script
    from tools.engine import read_stack_config
    from tools.stack_file import read_mapping

    job = load("deploy")["jobs"][stack]
    assert job["env"]["PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER"] == "true"
    command = f".venv/bin/python -m tools bootstrap --stack {stack} --state-env"
    (step,) = [s for s in job["steps"] if str(s.get("run", "")).startswith(command)]
    assert step["run"].strip() == f'{command} >> "$GITHUB_ENV"'
    order = [s.get("uses", s.get("run", "")) for s in job["steps"]]
    at = order.index(step["run"])
    assert at < min(i for i, s in enumerate(order) if str(s).startswith("pulumi/actions@"))
    assert any(".venv/bin/pip install" in str(s) for s in order[:at])  # its virtualenv first
    for action in uses_all(job, "pulumi/actions"):
        settings = action["with"]
        assert settings["upsert"] is True
        assert settings["cloud-url"] == "${{ env.PULUMI_BACKEND_URL }}"
        assert settings["secrets-provider"] == "${{ env.PULUMI_SECRETS_PROVIDER }}"
    assert "vars.PULUMI_" not in (WORKFLOWS / "deploy.yml").read_text()
    # What the step writes to $GITHUB_ENV: exactly the two names the actions read, with the
    # values of the bucket and key the bootstrap script creates for the stack.
    done = subprocess.run(
        [sys.executable, "-m", "tools", "bootstrap", "--stack", stack, "--state-env"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = dict(line.split("=", 1) for line in done.stdout.splitlines())
    config = StackConfig.load(
        stack, read_stack_config(REPO / f"Pulumi.{stack}.yaml", "signal-platform")
    )
    assert written == state_env(config.project_id)
    assert set(written) == {"PULUMI_BACKEND_URL", "PULUMI_SECRETS_PROVIDER"}
    text = script(config, stack, "acme-markets/signal-platform")
    assert f"gcloud storage buckets create {written['PULUMI_BACKEND_URL']} " in text
    key = written["PULUMI_SECRETS_PROVIDER"].removeprefix("gcpkms://").split("/")
    assert key[0] == "projects" and key[1] == config.project_id
    assert f"gcloud kms keys create {key[7]} --keyring={key[5]} --location={key[3]} " in text
    # The stack file names the same key, so a stack created by a first run that stopped before
    # writing any state still never falls back to the passphrase provider.
    assert (
        read_mapping(REPO / f"Pulumi.{stack}.yaml")["secretsprovider"]
        == (written["PULUMI_SECRETS_PROVIDER"])
    )


def test_preview_reads_each_stack_from_the_bootstraps_bucket_and_key():
    """Each stack is its own project: the preview job runs in that stack's environment (its
    Workload Identity pool and preview identity) and takes the state bucket and secrets key
    from the bootstrap's names, as the deploy does; only the deploy creates stacks."""
    job = load("preview")["jobs"]["pulumi"]
    assert job["environment"] == "preview-${{ matrix.stack }}"
    assert job["env"]["PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER"] == "true"
    command = ".venv/bin/python -m tools bootstrap --stack ${{ matrix.stack }} --state-env"
    order = [str(s.get("uses", s.get("run", ""))).strip() for s in job["steps"]]
    at = order.index(f'{command} >> "$GITHUB_ENV"')
    assert at < min(i for i, s in enumerate(order) if s.startswith("pulumi/actions@"))
    settings = uses(job, "pulumi/actions")["with"]
    assert "upsert" not in settings
    assert settings["cloud-url"] == "${{ env.PULUMI_BACKEND_URL }}"
    assert settings["secrets-provider"] == "${{ env.PULUMI_SECRETS_PROVIDER }}"
    assert "vars.PULUMI_" not in (WORKFLOWS / "preview.yml").read_text()


def test_a_deploy_job_outlasts_a_first_apply():
    """A first prod apply's critical path (CMEK cluster, pools, four Istio charts in sequence,
    rollouts) and Memorystore's Redis Cluster beside it take well over an hour; a job killed by
    GitHub mid-update leaves pending operations in the state (review.md #5)."""
    for job in load("deploy")["jobs"].values():
        assert job["timeout-minutes"] >= 180


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


# ---------------------------------------------------------------- actions pinned by commit SHA

USES_RE = re.compile(r"^\s*(?:- )?uses:\s*(\S+)(.*)$")
PINNED_RE = re.compile(r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40})$")
VERSION_COMMENT_RE = re.compile(r"^\s+# (?P<version>v\d+\.\d+\.\d+)$")


def pinned_actions() -> list[tuple[str, str, str, str]]:
    """(workflow, action, sha, version) for every `uses:` line of every workflow."""
    found = []
    for name in NAMES:
        for line in (WORKFLOWS / f"{name}.yml").read_text().splitlines():
            match = USES_RE.match(line)
            if not match:
                continue
            reference, rest = match.groups()
            pinned, comment = PINNED_RE.match(reference), VERSION_COMMENT_RE.match(rest)
            assert pinned and comment, (
                f"{name}.yml: `{line.strip()}` is not `owner/repo@<sha> # vX.Y.Z`"
            )
            found.append((name, pinned["action"], pinned["sha"], comment["version"]))
    return found


def test_every_action_is_pinned_by_commit_sha_with_its_version():
    """A tag can be moved to other code; a commit cannot. The version comment says which
    release the commit is (Dependabot keeps both up to date)."""
    found = pinned_actions()
    assert {workflow for workflow, *_ in found} == set(NAMES)
    by_action: dict[str, set[tuple[str, str]]] = {}
    for _, action, sha, version in found:
        by_action.setdefault(action, set()).add((sha, version))
    # One release of each action across the workflows.
    assert all(len(pins) == 1 for pins in by_action.values()), by_action
    assert "actions/checkout" in by_action and "pulumi/actions" in by_action


# ---------------------------------------------------------------- what deploying installs

REQUIREMENT_FILES = {".venv": "requirements.lock", "policies/venv": "policies/requirements.lock"}
PIP_RE = re.compile(r"(?P<venv>[\w./-]+)/bin/pip install .*--require-hashes -r (?P<file>\S+)")


def pin_of(path: Path, name: str) -> str:
    for line in path.read_text().splitlines():
        match = re.match(rf"^{re.escape(name)}==(\S+)", line.strip(), flags=re.IGNORECASE)
        if match:
            return match.group(1)
    raise AssertionError(f"{path.name} pins no {name}")


@pytest.mark.parametrize(
    ("name", "job_name"), [("deploy", "dev"), ("deploy", "prod"), ("preview", "pulumi")]
)
def test_jobs_that_run_pulumi_install_only_the_programs_and_the_packs_requirements(
    name: str, job_name: str
):
    job = load(name)["jobs"][job_name]
    lines = job_run_lines(job)
    assert not [line for line in lines if MAKE_RE.search(line)], "no make setup: test tooling"
    installs = {m["venv"]: m["file"] for line in lines if (m := PIP_RE.search(line))}
    assert installs == REQUIREMENT_FILES
    assert not [line for line in lines if "requirements-dev" in line or "app/requirements" in line]


def locked(path: Path) -> set[str]:
    """The distributions `pip install --require-hashes -r path` installs: every one the lock
    pins (it holds the whole closure), names normalised as pip does."""
    names = re.findall(r"^([A-Za-z0-9][\w.-]*)==", path.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names}


# Runs a `python -m tools` command with every import from a distribution outside ALLOWED
# refused, as in a virtualenv holding only those: optional imports fall back as they would.
ISOLATED = """
import importlib.abc, importlib.machinery, importlib.metadata as md, os, re, runpy, sys
allowed = set(sys.argv[1].split(","))
owner = {}
for dist in md.distributions():  # the name parsed once per distribution, not once per file
    name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    root = os.path.realpath(dist.locate_file(""))
    for file in dist.files or ():
        owner[os.path.normpath(os.path.join(root, file))] = name
class OnlyAllowed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        origin = spec and spec.origin and os.path.realpath(spec.origin)
        if origin and owner.get(origin, None) not in (None, *allowed):
            raise ModuleNotFoundError(f"No module named {name!r} (not installed)", name=name)
        return None
sys.meta_path.insert(0, OnlyAllowed())
sys.argv = ["tools", *sys.argv[2:]]
runpy.run_module("tools", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_what_the_deploy_jobs_run_needs_nothing_but_the_programs_requirements(tmp_path: Path):
    """The deploy job's `tools cost --policy-config` (the engine planning the program) and
    `tools bootstrap --state-env` with only requirements.lock's distributions importable: they
    must not need the test tooling."""
    allowed = locked(REPO / "requirements.lock")
    assert {"pulumi", "pulumi-gcp", "pydantic", "pyright"} <= allowed
    assert "jsonschema" not in allowed and "pytest" not in allowed
    out = tmp_path / "budget.json"
    result = subprocess.run(
        [sys.executable, "-c", ISOLATED, ",".join(sorted(allowed)),
         "cost", "--stack", "dev", "--policy-config", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "budgetMonthlyUsd" in out.read_text()
    # And the state step's `tools bootstrap --state-env`.
    result = subprocess.run(
        [sys.executable, "-c", ISOLATED, ",".join(sorted(allowed)),
         "bootstrap", "--stack", "dev", "--state-env"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.startswith("PULUMI_BACKEND_URL=gs://")


# ---------------------------------------------------------------- the image workflow

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_image_is_built_once_scanned_and_pushed_by_digest_to_each_stack():
    image = load("image")
    assert image["on"]["push"]["branches"] == ["main"]
    assert "app/**" in image["on"]["push"]["paths"] and "workflow_dispatch" in image["on"]
    build, publish, pin = (image["jobs"][j] for j in ("build", "publish", "pin"))
    assert image["permissions"] == {"contents": "read"}
    # build: one build, two outputs; the scan gates before anything is uploaded.
    lines = job_run_lines(build)
    text = "\n".join(lines)
    assert text.count("docker buildx build") == 1 and "--file app/Dockerfile" in text
    assert "--output type=docker" in text and "--output type=oci,dest=image.tar" in text
    assert "gcloud artifacts docker images scan" in text
    gate = "python3 .github/scripts/scan_gate.py vulnerabilities.json .github/image-allowlist.toml"
    assert gate in lines
    assert (
        "local-extract"
        in uses(build, "google-github-actions/setup-gcloud")["with"]["install_components"]
    )
    order = [s.get("uses", s.get("run", "")) for s in build["steps"]]
    scan_at = next(i for i, s in enumerate(order) if "scan_gate.py" in s)
    assert scan_at < next(
        i for i, s in enumerate(order) if s.startswith("actions/upload-artifact@")
    )
    assert build["outputs"]["digest"] == "${{ steps.build.outputs.digest }}"
    # publish: by digest, per stack, in the stack's environment, checked against the build.
    assert publish["needs"] == "build" and publish["environment"] == "${{ matrix.stack }}"
    assert publish["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert publish["strategy"]["max-parallel"] == 1
    push = "\n".join(job_run_lines(publish))
    assert 'stack_image.py repository "Pulumi.$STACK.yaml"' in push
    assert "skopeo copy --preserve-digests --digestfile pushed oci-archive:image.tar" in push
    assert 'test "$(cat pushed)" = "$DIGEST"' in push
    (push_step,) = [s for s in publish["steps"] if "skopeo copy" in str(s.get("run"))]
    assert push_step["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    # pin: the only job that writes, and it writes the digest the build produced.
    assert pin["needs"] == ["build", "publish"]
    assert pin["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert 'stack_image.py pin "Pulumi.$stack.yaml" "$DIGEST"' in "\n".join(job_run_lines(pin))
    assert all(s.get("env", {}).get("DIGEST", "${{ needs.build.outputs.digest }}") ==
               "${{ needs.build.outputs.digest }}" for s in pin["steps"])  # fmt: skip
    for job in (build, publish):
        assert job["permissions"] == {"contents": "read", "id-token": "write"}
        auth = uses(job, "google-github-actions/auth")["with"]
        assert set(auth) == {"workload_identity_provider", "service_account"}  # no key
    assert "secrets." not in (WORKFLOWS / "image.yml").read_text()


def test_the_scan_api_is_one_the_program_enables():
    from infra.signal_platform import APIS

    assert "ondemandscanning.googleapis.com" in APIS  # `gcloud artifacts docker images scan`


def stack_image(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "stack_image.py"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_digest_flows_into_the_stack_file_as_the_program_reads_it(stack: str, tmp_path: Path):
    """The pin job's edit, run on a copy of the real stack file: one line changes, and the
    program's config loader then reads `<repository>@<digest>` as the service's image."""
    from infra.config import StackConfig
    from tools.engine import read_stack_config

    source = REPO / f"Pulumi.{stack}.yaml"
    config = StackConfig.load(stack, read_stack_config(source, "signal-platform"))
    repository = f"{config.image_registry}/signal-service"
    assert stack_image("repository", str(source)).stdout.strip() == repository
    copy = tmp_path / source.name
    copy.write_text(source.read_text())
    result = stack_image("pin", str(copy), DIGEST)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{repository}@{DIGEST}"
    before, after = source.read_text().splitlines(), copy.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    if stack == "prod" or config.workloads.signal_service.image != f"{repository}@{DIGEST}":
        assert len(changed) == 1 and changed[0][1].strip() == f"image: {repository}@{DIGEST}"
    pinned = StackConfig.load(stack, read_stack_config(copy, "signal-platform"))
    assert pinned.workloads.signal_service.image == f"{repository}@{DIGEST}"
    assert pinned.workloads.triton.image == config.workloads.triton.image


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_pinning_the_first_image_moves_a_new_project_to_the_workloads_stage(
    stack: str, tmp_path: Path
):
    """A new project deploys at stage infrastructure (no image exists yet); the pull request
    that pins the first pushed image also moves the stack to workloads, and only then do the
    workloads deploy. Later pins leave the stage alone."""
    from infra.config import StackConfig
    from tools.engine import read_stack_config

    source = (REPO / f"Pulumi.{stack}.yaml").read_text()
    assert "  signal-platform:stage: serving\n" in source
    first = tmp_path / f"Pulumi.{stack}.yaml"
    first.write_text(
        source.replace("signal-platform:stage: serving", "signal-platform:stage: infrastructure")
    )
    before = first.read_text().splitlines()
    assert (
        StackConfig.load(stack, read_stack_config(first, "signal-platform")).stage
        == "infrastructure"
    )
    assert stack_image("pin", str(first), DIGEST).returncode == 0
    after = first.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.strip() for _, b in changed] == [
        "signal-platform:stage: workloads",
        f"image: {stack_image('repository', str(first)).stdout.strip()}@{DIGEST}",
    ]
    pinned = StackConfig.load(stack, read_stack_config(first, "signal-platform"))
    assert pinned.stage == "workloads" and pinned.deploys_workloads and not pinned.has_slo
    # A stack already past infrastructure keeps its stage (serving stays serving).
    later = tmp_path / "later.yaml"
    later.write_text(source)
    stack_image("pin", str(later), DIGEST)
    assert "  signal-platform:stage: serving\n" in later.read_text()


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (["pin", "{file}", "sha256:abc"], None, "is not sha256:<64 lowercase hex digits>"),
        (["pin", "{file}", DIGEST], "config:\n  gcp:project: p\n", "no signal-platform:workloads"),
        (
            ["repository", "{file}"],
            "config:\n  signal-platform:workloads:\n    signalService:\n      image: not an image\n",
            "'not an image' is not an image reference",
        ),
        (["repository", "{file}.missing"], None, "No such file"),
        (["push", "{file}"], None, "usage:"),
    ],
)
def test_stack_image_refuses_bad_input_in_one_line(
    tmp_path: Path, args: list[str], content: str | None, message: str
):
    file = tmp_path / "Pulumi.test.yaml"
    file.write_text(content or (REPO / "Pulumi.prod.yaml").read_text())
    result = stack_image(*(a.format(file=file) for a in args))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and message in line, line


def occurrence(cve: str, severity: str, package: str, fix: bool = True) -> dict[str, Any]:
    """A vulnerability occurrence as Container Analysis returns it (v1 Occurrence)."""
    return {
        "kind": "VULNERABILITY",
        "name": f"projects/p/locations/us/occurrences/{cve.lower()}",
        "noteName": f"projects/goog-vulnz/notes/{cve}",
        "resourceUri": "signal-service:scan",
        "vulnerability": {
            "severity": "MEDIUM",
            "effectiveSeverity": severity,
            "shortDescription": cve,
            "fixAvailable": fix,
            "packageIssue": [{"affectedPackage": package, "packageType": "OS"}],
        },
    }


def gate(
    tmp_path: Path, found: list[dict[str, Any]], allow: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "v.json").write_text(json.dumps(found))
    (tmp_path / "allow.toml").write_text(allow)
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "scan_gate.py"), str(tmp_path / "v.json"), str(tmp_path / "allow.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_gate_fails_on_high_and_critical_findings_not_accepted(tmp_path: Path):
    found = [
        occurrence("CVE-2024-0001", "CRITICAL", "openssl"),
        occurrence("CVE-2024-0002", "HIGH", "glibc", fix=False),
        occurrence("CVE-2024-0003", "MEDIUM", "zlib"),  # below the bar
        occurrence("CVE-2024-0004", "LOW", "tar"),
    ]
    result = gate(tmp_path, found, "accept = []\n")
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("vulnerability:")]
    assert failures == [
        "vulnerability: CVE-2024-0001 CRITICAL in openssl (fix available): not accepted",
        "vulnerability: CVE-2024-0002 HIGH in glibc (no fix yet): not accepted",
    ]
    assert result.stdout.splitlines()[-1].endswith("the image fails the gate")
    assert gate(tmp_path, found[2:], "accept = []\n").returncode == 0


def test_the_allow_list_accepts_by_id_and_package_until_its_date(tmp_path: Path):
    found = [occurrence("CVE-2024-0002", "HIGH", "glibc", fix=False)]
    accepted = (
        '[[accept]]\nid = "CVE-2024-0002"\npackage = "glibc"\n'
        'reason = "not reachable: no iconv use in the service"\nexpires = 2999-01-01\n'
    )
    assert gate(tmp_path, found, accepted).returncode == 0
    other_package = accepted.replace('package = "glibc"', 'package = "musl"')
    assert gate(tmp_path, found, other_package).returncode == 1
    expired = gate(tmp_path, found, accepted.replace("2999-01-01", "2020-01-01"))
    assert (
        expired.returncode == 1 and "accepted until 2020-01-01, which has passed" in expired.stdout
    )
    stale = gate(tmp_path, [], accepted)
    assert (
        stale.returncode == 0 and "CVE-2024-0002: accepted but not found any more" in stale.stdout
    )


@pytest.mark.parametrize(
    ("found", "allow", "message"),
    [
        ("[]", 'accept = [{id = "CVE-1", reason = "because"}]', "accept[0].reason: say why"),
        (
            "[]",
            'accept = [{id = "CVE-1", reason = "no use of it here", expires = "soon"}]',
            "accept[0].expires: a date",
        ),
        (
            "[]",
            'accept = [{id = "CVE-1", reasn = "x"}]',
            "allowed keys are id, package, reason, expires",
        ),
        ("[]", "accept = [", "allow.toml"),
        ('{"not": "a list"}', "accept = []", "expected a JSON list of occurrences"),
        (
            '[{"kind": "VULNERABILITY"}]',
            "accept = []",
            "occurrence [0] has no vulnerability or noteName",
        ),
    ],
)
def test_the_gate_refuses_bad_input_in_one_line(
    tmp_path: Path, found: str, allow: str, message: str
):
    (tmp_path / "v.json").write_text(found)
    (tmp_path / "allow.toml").write_text(allow)
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "scan_gate.py"), str(tmp_path / "v.json"), str(tmp_path / "allow.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and message in line, line


def test_the_repositorys_allow_list_is_well_formed(tmp_path: Path):
    allow = (REPO / ".github" / "image-allowlist.toml").read_text()
    result = gate(tmp_path, [occurrence("CVE-2024-0003", "MEDIUM", "zlib")], allow)
    assert result.returncode == 0, result.stdout + result.stderr
