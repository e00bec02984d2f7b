"""Bad stack configuration through the real command line: exit 2, one `error:` line per
problem naming the file, the key path, the value and what is allowed, no traceback, no hang.

Most cases run in-process (`tools.__main__.main`); a stack file per case is written into a
temporary project whose program is this repository's `infra/`. A handful run as a real
`python -m tools plan` process under a timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.stack_config import REPO
from tools.__main__ import main

ERROR = re.compile(r"^error: Pulumi\.(dev|prod)\.yaml: \S+: .+ \(got .+\); allowed: .+$")


def stack_file(stack: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project directory whose program is the repository's `infra/`, for stack files."""
    root = tmp_path_factory.mktemp("project")
    spec = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    spec["main"] = str(REPO / "infra")
    (root / "Pulumi.yaml").write_text(yaml.safe_dump(spec))
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.startswith("error:")]


def the_line(lines: list[str], *fragments: str) -> str:
    matching = [line for line in lines if all(f in line for f in fragments)]
    assert len(matching) == 1, f"{fragments} in:\n" + "\n".join(lines)
    assert ERROR.match(matching[0]), matching[0]
    return matching[0]


def config(key: str, value: Any) -> list[str]:
    return ["--config", f"signal-platform:{key}={json.dumps(value)}"]


def edited(stack: str, key: str, edit: Callable[[Any], None]) -> Any:
    value = stack_file(stack)["config"][f"signal-platform:{key}"]
    edit(value)
    return value


# Each case: the stack, --config overrides, and fragments of the one line it must print.
OVERRIDES = [
    pytest.param(
        "dev",
        config("budget", {"monthlyUsd": float("nan")}),
        ["signal-platform:budget.monthlyUsd:", "finite number", "(got nan)"],
        id="budget-nan",
    ),
    pytest.param(
        "prod",
        config("budget", {"monthlyUsd": float("inf")}),
        ["signal-platform:budget.monthlyUsd:", "finite number", "(got inf)"],
        id="budget-inf",
    ),
    pytest.param(
        "dev",
        config("cost", {"averageNodes": {"system": float("nan")}}),
        ["signal-platform:cost.averageNodes.system:", "finite number"],
        id="average-nodes-nan",
    ),
    pytest.param(
        "dev",
        config(
            "regionOverrides",
            {
                "us-central1": {
                    "network": {
                        "nodesCidr": "10.40.0.0/20",
                        "podsCidr": "10.40.0.0/14",
                        "servicesCidr": "10.44.0.0/20",
                        "masterCidr": "172.16.9.0/28",
                    }
                }
            },
        ),
        ["regionOverrides.us-central1.network.podsCidr:", "overlaps nodesCidr"],
        id="overlapping-ranges",
    ),
    pytest.param(
        "dev",
        config(
            "workloads",
            edited(
                "dev",
                "workloads",
                lambda w: w["triton"]["resources"]["limits"].update(memory="8Gx"),
            ),
        ),
        ["workloads.triton.resources.limits.memory:", "not a Kubernetes quantity", "'8Gx'"],
        id="quantity-8Gx",
    ),
    pytest.param(
        "dev",
        config(
            "workloads",
            edited(
                "dev",
                "workloads",
                lambda w: w["signalService"]["resources"]["requests"].update(cpu="-1"),
            ),
        ),
        ["workloads.signalService.resources.requests.cpu:", "a negative quantity"],
        id="quantity-negative",
    ),
    pytest.param(
        "dev",
        config(
            "workloads",
            edited(
                "dev", "workloads", lambda w: w["signalService"].update(terminationGraceSeconds=11)
            ),
        ),
        ["workloads.signalService.terminationGraceSeconds:", "server.grace_s", "(got -1)"],
        id="service-file-refused",
    ),
    pytest.param(
        "dev",
        config("cluster", {"maintenance": {"startTime": "2026-01-03T25:99:00Z"}}),
        ["cluster.maintenance.startTime:", "not a valid date-time"],
        id="maintenance-25-99",
    ),
    pytest.param(
        "dev",
        config("cluster", {"maintenance": {"recurrence": "FREQ=SOMETIMES"}}),
        ["cluster.maintenance.recurrence:", "FREQ=SOMETIMES is not valid"],
        id="maintenance-freq",
    ),
    pytest.param(
        "dev",
        config(
            "cluster",
            {
                "masterAuthorizedNetworks": [
                    {"cidr": "0.0.0.0/1", "name": "a", "public": True},
                    {"cidr": "128.0.0.0/1", "name": "b", "public": True},
                ]
            },
        ),
        ["cluster.masterAuthorizedNetworks:", "4,294,967,296 addresses"],
        id="internet-in-two-halves",
    ),
    pytest.param(
        "dev",
        ["--config", 'signal-platfrom:redis={"shardCount": 2}'],
        ["signal-platfrom:redis:", "did you mean signal-platform:redis?"],
        id="misspelled-namespace",
    ),
    pytest.param(
        "dev",
        ["--config", "gcp:regoin=us-east4"],
        ["gcp:regoin:", "did you mean gcp:region?"],
        id="misspelled-provider-key",
    ),
    pytest.param(
        "prod",
        ["--config", "signal-platform:environment=dev"],
        ["signal-platform:environment:", "stack 'prod' is named for prod"],
        id="dev-inside-prod",
    ),
    pytest.param(
        "dev",
        config("cluster", {"vulnerabilityScanning": "VULNERABILITY_BASIC"}),
        ["cluster.vulnerabilityScanning:", "GKE no longer supports basic"],
        id="vulnerability-basic",
    ),
    pytest.param(
        "prod",
        config("budget", {"monthlyUsd": 9000, "billingAccount": "000000-000000-000000"}),
        ["budget.billingAccount:", "a placeholder"],
        id="placeholder-billing-account",
    ),
    pytest.param(
        "prod",
        config(
            "workloads",
            edited(
                "prod", "workloads", lambda w: w["triton"].update(image="tritonserver:24.08-py3")
            ),
        ),
        ["workloads.triton.image:", "names no registry host"],
        id="image-without-registry",
    ),
    pytest.param(
        "dev",
        config("nodePools", {"system": {"machineType": "e2-standard-2", "maxNodes": 1}})
        + config("cluster", {"nodeZones": 1}),
        ["nodePools.system.maxNodes:", "the pods the program schedules on it request"],
        id="system-pool-too-small",
    ),
]


@pytest.mark.parametrize(("stack", "overrides", "fragments"), OVERRIDES)
def test_bad_config_exits_2_with_its_line(
    stack: str, overrides: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]
):
    code, lines = run(["plan", "--stack", stack, "--program", str(REPO), *overrides], capsys)
    assert code == 2
    the_line(lines, *fragments)


def test_cost_refuses_a_nan_assumption_instead_of_pricing_it(capsys: pytest.CaptureFixture[str]):
    overrides = config("cost", {"averageNodes": {"l4-spot": float("nan")}})
    code, lines = run(["cost", "--stack", "dev", "--program", str(REPO), *overrides], capsys)
    assert code == 2
    the_line(lines, "signal-platform:cost.averageNodes.l4-spot:", "finite number")


# ---------------------------------------------------------------- stack files


FILES = [
    pytest.param(
        "prod",
        lambda f: f["config"].update({"signal-platform:environment": "dev"}),
        ["signal-platform:environment:", "named for prod"],
        id="environment-dev-in-prod-file",
    ),
    pytest.param(
        "dev",
        lambda f: f["config"].update({"signal-platfrom:redis": {"shardCount": 2}}),
        ["signal-platfrom:redis:", "did you mean signal-platform:redis?"],
        id="misspelled-namespace-in-file",
    ),
    pytest.param(
        "dev",
        lambda f: f["config"].update({"kubernetes:contxt": "dev"}),
        ["kubernetes:contxt:", "did you mean kubernetes:context?"],
        id="misspelled-provider-key-in-file",
    ),
    pytest.param(
        "dev",
        lambda f: f["config"]["signal-platform:budget"].update(monthlyUsd=float("nan")),
        ["signal-platform:budget.monthlyUsd:", "finite number"],
        id="yaml-nan",
    ),
    pytest.param(
        "dev",
        lambda f: f["config"]["signal-platform:nodePools"]["gpu"][0].update(minNodes=9),
        ["nodePools.gpu[0].minNodes:", "minNodes is greater than maxNodes"],
        id="cross-field",
    ),
    pytest.param(
        "dev",
        # As `pulumi config set --secret --path budget.monthlyUsd 400` writes it.
        lambda f: f["config"]["signal-platform:budget"].update(monthlyUsd={"secure": "AAABAMz="}),
        ["budget.monthlyUsd: cannot be a secret: secure values cannot be read offline"],
        id="secure-value-for-a-number",
    ),
    pytest.param(
        "prod",
        # Too small a node in all three regions, which share the setting: one line, not three.
        lambda f: f["config"]["signal-platform:nodePools"]["system"].update(
            machineType="e2-medium"
        ),
        ["nodePools.system.machineType:", "one e2-medium node has"],
        id="shared-problem-once",
    ),
]


@pytest.mark.parametrize(("stack", "edit", "fragments"), FILES)
def test_a_bad_stack_file_exits_2_naming_it(
    project: Path,
    stack: str,
    edit: Callable[[dict], None],
    fragments: list[str],
    capsys: pytest.CaptureFixture[str],
):
    content = stack_file(stack)
    edit(content)
    (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(content))
    code, lines = run(["plan", "--stack", stack, "--program", str(project)], capsys)
    assert code == 2
    the_line(lines, *fragments)


def test_a_duplicated_key_is_refused_not_silently_dropped(
    project: Path, capsys: pytest.CaptureFixture[str]
):
    text = (REPO / "Pulumi.dev.yaml").read_text()
    text += "  signal-platform:budget:\n    monthlyUsd: 1\n"
    (project / "Pulumi.dev.yaml").write_text(text)
    code, lines = run(["plan", "--stack", "dev", "--program", str(project)], capsys)
    assert code == 2
    (line,) = lines
    assert line.startswith("error: Pulumi.dev.yaml:") and "signal-platform:budget" in line


def test_a_dev_file_claiming_prod_is_told_the_mismatch_not_prods_rules(
    project: Path, capsys: pytest.CaptureFixture[str]
):
    content = stack_file("dev")
    content["config"]["signal-platform:environment"] = "prod"
    (project / "Pulumi.dev.yaml").write_text(yaml.safe_dump(content))
    code, lines = run(["plan", "--stack", "dev", "--program", str(project)], capsys)
    assert code == 2
    (line,) = lines
    assert line.startswith(
        "error: Pulumi.dev.yaml: signal-platform:environment: stack 'dev' is named for dev"
        " (got 'prod')"
    )


# ---------------------------------------------------------------- real processes


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (config("budget", {"monthlyUsd": float("nan")}), "signal-platform:budget.monthlyUsd:"),
        (["--config", "signal-platform:environment=dev"], "signal-platform:environment:"),
        (
            config("cluster", {"maintenance": {"recurrence": "FREQ=SOMETIMES"}}),
            "cluster.maintenance.recurrence:",
        ),
    ],
)
def test_the_real_command_exits_2_promptly(overrides: list[str], fragment: str):
    done = subprocess.run(
        [sys.executable, "-m", "tools", "plan", "--stack", "prod", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    the_line(errors, fragment)
