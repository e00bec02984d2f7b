"""`python -m tools check` end to end: the offline engine plans a program, the real pack judges it."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from tools import check
from tools.analyzer import POLICY_README, Analysis, Violation
from tools.inventory import Inventory

BAD_PROGRAM = Path(__file__).resolve().parent / "fixtures" / "bad_program"
STACK_URN = "urn:pulumi:test::bad-platform::pulumi:pulumi:Stack"


def bad_urn(type_: str, name: str) -> str:
    """A top-level resource's URN: the engine names no parent type for the root stack."""
    return f"urn:pulumi:test::bad-platform::{type_}::{name}"


CLUSTER = bad_urn("gcp:container/cluster:Cluster", "public")
DATASET = bad_urn("gcp:bigquery/dataset:Dataset", "open")
POD = bad_urn("kubernetes:core/v1:Pod", "root-shell")
OWNER = bad_urn("gcp:projects/iAMMember:IAMMember", "owner")

# What the bad program must be caught doing: (policy, level, urn, type).
EXPECTED = [
    ("gke-private-nodes", "mandatory", CLUSTER, "gcp:container/cluster:Cluster"),
    ("gke-control-plane-access", "mandatory", CLUSTER, "gcp:container/cluster:Cluster"),
    ("gke-no-legacy-abac", "mandatory", CLUSTER, "gcp:container/cluster:Cluster"),
    ("gke-intranode-visibility", "advisory", CLUSTER, "gcp:container/cluster:Cluster"),
    ("bigquery-no-public-access", "mandatory", DATASET, "gcp:bigquery/dataset:Dataset"),
    ("cost-required-labels", "mandatory", DATASET, "gcp:bigquery/dataset:Dataset"),
    ("k8s-no-privileged", "mandatory", POD, "kubernetes:core/v1:Pod"),
    ("k8s-no-default-namespace", "mandatory", POD, "kubernetes:core/v1:Pod"),
    ("k8s-image-tag-pinned", "mandatory", POD, "kubernetes:core/v1:Pod"),
    ("stack-namespace-mtls", "mandatory", POD, "kubernetes:core/v1:Pod"),
    ("iam-no-primitive-roles", "mandatory", OWNER, "gcp:projects/iAMMember:IAMMember"),
]


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str]:
    """One real run over the bad program: exit code, JSON report, printed report."""
    out = tmp_path_factory.mktemp("check") / "report.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = check.main(["--stack", "test", "--program", str(BAD_PROGRAM), "--json", str(out)])
    return code, json.loads(out.read_text()), printed.getvalue()


def test_bad_program_fails_with_each_expected_violation(bad_run: tuple[int, dict, str]) -> None:
    code, report, _ = bad_run
    assert code == 1
    found = {(v["policy"], v["level"], v["urn"], v["type"]) for v in report["violations"]}
    missing = [e for e in EXPECTED if e not in found]
    assert missing == []
    # The stack, the four resources, and the default providers (gcp, kubernetes) the engine
    # registers for them, as `pulumi preview` does.
    assert report["resources"] == 7
    assert report["policies"] >= 50
    privileged = next(v for v in report["violations"] if v["policy"] == "k8s-no-privileged")
    assert privileged["message"] == 'container "shell": securityContext.privileged is true'
    assert set(report) == {"violations", "policies", "resources"}
    for row in report["violations"]:
        assert set(row) == {"policy", "level", "urn", "type", "message"}


def test_bad_program_report_groups_by_level(bad_run: tuple[int, dict, str]) -> None:
    _, report, text = bad_run
    mandatory = sum(v["level"] == "mandatory" for v in report["violations"])
    advisory = sum(v["level"] == "advisory" for v in report["violations"])
    assert text.index(f"mandatory ({mandatory}):") < text.index(f"advisory ({advisory}):")
    assert f"  [gke-private-nodes] {CLUSTER}\n" in text
    assert "      privateClusterConfig.enablePrivateNodes must be true" in text
    assert text.rstrip().endswith("mandatory violations block the update")


def test_policy_config_can_demote_everything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "advisory.json"
    config.write_text(json.dumps({"all": "advisory"}))
    out = tmp_path / "report.json"
    code = check.main(
        [
            "--stack",
            "test",
            "--program",
            str(BAD_PROGRAM),
            "--policy-config",
            str(config),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    levels = {v["level"] for v in json.loads(out.read_text())["violations"]}
    assert levels == {"advisory"}
    assert "no mandatory violations" in capsys.readouterr().out


def test_bad_policy_config_exits_2_before_planning(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "typo.json"
    config.write_text("{not json")
    assert (
        check.main(
            ["--stack", "test", "--program", str(BAD_PROGRAM), "--policy-config", str(config)]
        )
        == 2
    )
    assert "typo.json: not JSON" in capsys.readouterr().err


def test_unknown_policy_in_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "typo.json"
    config.write_text(json.dumps({"gke-private-node": "advisory"}))
    code = check.main(
        ["--stack", "test", "--program", str(BAD_PROGRAM), "--policy-config", str(config)]
    )
    assert code == 2
    assert "unknown policies: gke-private-node" in capsys.readouterr().err


def test_not_a_project_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert check.main(["--stack", "test", "--program", str(tmp_path)]) == 2
    assert "no Pulumi.yaml" in capsys.readouterr().err


def test_clean_report() -> None:
    inventory = Inventory(stack="dev", project="signal-platform")
    text = check.render_report(Analysis([], 88, 0), inventory)
    assert text.endswith("no policy violations")
    stack_level = Violation("cost-monthly-budget", "mandatory", None, "over budget", "d")
    rows = check.violation_rows(Analysis([stack_level], 88, 0), inventory)
    assert rows == [
        {
            "policy": "cost-monthly-budget",
            "level": "mandatory",
            "urn": None,
            "type": None,
            "message": "over budget",
        }
    ]
    assert "[cost-monthly-budget] (stack)" in check.render_report(
        Analysis([stack_level], 88, 0), inventory
    )


def test_cli_dispatches_check() -> None:
    from tools import __main__ as cli

    assert check in cli.COMMANDS


def accepted_advisories() -> set[tuple[str, str, str]]:
    """(stack, rule, resource name) rows of the README's accepted-advisories table."""
    text = POLICY_README.read_text()
    table = text.split("<!-- BEGIN ACCEPTED ADVISORIES -->", 1)[1].split("<!-- END", 1)[0]
    rows = set()
    for line in table.strip().splitlines()[2:]:
        stack, rule, name = (cell.strip().strip("`") for cell in line.strip("|").split("|")[:3])
        rows.add((stack, rule, name))
    return rows


def test_repository_stacks_pass_every_mandatory_rule(stack_plan: Inventory) -> None:
    """dev and prod: no mandatory violation, and exactly the advisories the README accepts."""
    analysis = check.check_inventory(stack_plan)
    assert analysis.resources == len(stack_plan.resources) > 50
    assert [(v.policy, v.urn, v.message) for v in analysis.mandatory] == []
    advisories = {
        (stack_plan.stack, v.policy, (v.urn or "").rsplit("::", 1)[-1])
        for v in analysis.violations
        if v.level == "advisory"
    }
    accepted = {row for row in accepted_advisories() if row[0] == stack_plan.stack}
    assert advisories == accepted


FUNCTIONS = Path(__file__).resolve().parent / "fixtures" / "functions"


def check_functions(tmp_path: Path, *overrides: str) -> list[tuple[str, str]]:
    """(policy, resource name) of each violation over the functions fixture."""
    out = tmp_path / "report.json"
    argv = ["--stack", "test", "--program", str(FUNCTIONS), "--json", str(out)]
    for override in overrides:
        argv += ["--config", override]
    with contextlib.redirect_stdout(io.StringIO()):
        check.main(argv)
    rows = json.loads(out.read_text())["violations"]
    return [(v["policy"], v["urn"].rsplit("::", 1)[-1] if v["urn"] else "") for v in rows]


def test_rules_see_the_default_providers_region_and_labels(tmp_path: Path) -> None:
    found = check_functions(tmp_path)
    # gcp:region me-central2 is where the 1st-gen function runs (it names no region).
    assert ("cost-allowed-regions", "hello") in found
    assert ("cost-allowed-regions", "hello-invoker") in found
    # gcp:defaultLabels carries the cost labels: the bucket (no labels of its own) has them.
    assert not [v for v in found if v[0] == "cost-required-labels"]


def test_without_default_labels_or_with_an_allowed_region_the_findings_follow(
    tmp_path: Path,
) -> None:
    found = check_functions(tmp_path, "gcp:defaultLabels={}", "gcp:region=europe-west4")
    assert ("cost-required-labels", "source") in found
    assert ("cost-allowed-regions", "hello") not in found
    # The 2nd-gen function names its own location: the provider's region does not move it.
    assert ("cost-allowed-regions", "hello-v2") in found
