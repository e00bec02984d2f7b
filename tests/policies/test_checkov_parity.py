"""The pack finds at least every finding Checkov's Kubernetes framework reports on the same objects.

A deliberately bad program (fixtures/bad_kubernetes) is planned offline; the pack judges its
inventory over the Analyzer protocol, and its Kubernetes objects are written out as manifests.
Each Checkov finding (check id, object) must be matched by a pack violation on that object (for
Checkov's graph checks, in that namespace) from a rule whose source cites that Checkov id.

Checkov runs for real from its own virtualenv (policies/.checkov-venv, made by `make setup` or,
when missing, here from the package registry, pinned in policies/requirements-checkov.txt), and
its findings must equal the checked-in list (fixtures/checkov_findings.json, with the Checkov
version it came from), which the pack is always held to, registry or not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.analyzer import Analysis, PolicyPackProcess
from tools.engine import plan
from tools.inventory import Inventory

HERE = Path(__file__).resolve().parent
PROGRAM = HERE / "fixtures" / "bad_kubernetes"
EXPECTED = HERE / "fixtures" / "checkov_findings.json"
POLICIES = HERE.parents[1] / "policies"
CHECKOV_VENV = POLICIES / ".checkov-venv"
CHECKOV_REQUIREMENTS = POLICIES / "requirements-checkov.txt"
_CHECK_ID = re.compile(r"\bCKV2?_K8S_\d+\b")

Finding = tuple[str, str]  # (check id, Checkov's resource id: Kind.namespace.name[...])


def object_id(inputs: dict[str, Any]) -> str:
    """Checkov's id of a manifest: Kind.namespace.name (namespace `default` when unset)."""
    metadata = inputs.get("metadata") or {}
    namespace = metadata.get("namespace") or "default"
    return f"{inputs['kind']}.{namespace}.{metadata['name']}"


def manifests(inventory: Inventory) -> dict[str, dict[str, Any]]:
    """The program's Kubernetes objects as manifests, by URN."""
    return {
        r.urn: dict(r.inputs)
        for r in inventory.resources
        if r.type.startswith("kubernetes:") and "kind" in r.inputs and "apiVersion" in r.inputs
    }


def cited_ids(analysis: Analysis, descriptions: dict[str, str]) -> Iterable[tuple[str, str]]:
    """(Checkov id, URN) for every pack violation, one per id its rule's source cites."""
    for violation in analysis.violations:
        for check_id in _CHECK_ID.findall(descriptions[violation.policy]):
            yield check_id, violation.urn or ""


def uncovered(
    findings: Iterable[Finding], analysis: Analysis, descriptions: dict[str, str], objects: dict
) -> list[Finding]:
    """Checkov findings no pack violation matches."""
    ids = {urn: object_id(obj) for urn, obj in objects.items()}
    # The namespace an object is in; a Namespace is "in" itself (stack rules report there).
    namespaces = {
        urn: obj["metadata"]["name"] if obj["kind"] == "Namespace" else ids[urn].split(".")[1]
        for urn, obj in objects.items()
    }
    reported = set(cited_ids(analysis, descriptions))
    missing = []
    for check_id, resource in findings:
        on_object = any(c == check_id and ids.get(urn) == resource for c, urn in reported)
        # Graph checks name a derived object (Pod.<ns>.<workload>.<labels>): match its namespace.
        in_namespace = check_id.startswith("CKV2_") and any(
            c == check_id and namespaces.get(urn) == resource.split(".")[1] for c, urn in reported
        )
        if not (on_object or in_namespace):
            missing.append((check_id, resource))
    return missing


@pytest.fixture(scope="module")
def program() -> Inventory:
    return plan(PROGRAM, "test")


@pytest.fixture(scope="module")
def verdict(program: Inventory, pack_process: PolicyPackProcess) -> tuple[Analysis, dict[str, str]]:
    pack_process.configure({})
    analysis = pack_process.analyze_all(program.resources)
    descriptions = {p.name: p.description for p in pack_process.info().policies}
    return analysis, descriptions


def expected() -> dict[str, Any]:
    return json.loads(EXPECTED.read_text())


def test_pack_finds_every_checked_in_checkov_finding(
    program: Inventory, verdict: tuple[Analysis, dict[str, str]]
) -> None:
    analysis, descriptions = verdict
    findings = [tuple(f) for f in expected()["findings"]]
    assert len(findings) >= 30  # the bad program trips most of Checkov's Kubernetes checks
    assert uncovered(findings, analysis, descriptions, manifests(program)) == []


def test_checked_in_findings_name_the_checkov_version_pinned() -> None:
    pinned = re.search(r"^checkov==(\S+)$", CHECKOV_REQUIREMENTS.read_text(), re.M)
    assert pinned is not None, f"{CHECKOV_REQUIREMENTS} pins no checkov version"
    assert expected()["checkov"] == pinned.group(1)


def _checkov() -> Path:
    """Checkov's executable in its own virtualenv, installed from the package registry when
    missing; skips (the checked-in findings still hold the pack) when it cannot be installed."""
    binary = CHECKOV_VENV / "bin" / "checkov"
    if binary.exists():
        return binary
    commands = [
        [sys.executable, "-m", "venv", str(CHECKOV_VENV)],
        [
            str(CHECKOV_VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(CHECKOV_REQUIREMENTS),
        ],
    ]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            pytest.skip(
                "checkov could not be installed from the package registry "
                f"({done.stderr.strip().splitlines()[-1:]}); the pack was compared with the "
                f"checked-in findings of Checkov {expected()['checkov']} instead"
            )
    return binary


def run_checkov(objects: dict[str, dict[str, Any]], folder: Path) -> list[Finding]:
    manifest = folder / "program.yaml"
    manifest.write_text(yaml.safe_dump_all(list(objects.values()), sort_keys=True))
    environment = {**os.environ, "HOME": str(folder)}
    environment.pop("COVERAGE_PROCESS_START", None)
    done = subprocess.run(
        [
            str(_checkov()),
            "--directory",
            str(folder),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    return sorted(
        (check["check_id"], check["resource"])
        for r in reports
        for check in r["results"]["failed_checks"]
    )


def test_checkov_for_real(
    program: Inventory, verdict: tuple[Analysis, dict[str, str]], tmp_path: Path
) -> None:
    objects = manifests(program)
    findings = run_checkov(objects, tmp_path)
    analysis, descriptions = verdict
    assert uncovered(findings, analysis, descriptions, objects) == []
    assert [list(f) for f in findings] == expected()["findings"], (
        f"Checkov's findings changed: update {EXPECTED.name} (its version with it)"
    )


def test_a_finding_no_rule_answers_is_reported(
    program: Inventory, verdict: tuple[Analysis, dict[str, str]]
) -> None:
    """The comparison can fail: an id no rule cites, or a cited id on another object."""
    analysis, descriptions = verdict
    findings = [
        ("CKV_K8S_999", "Deployment.default.root-shell"),
        ("CKV_K8S_16", "Service.default.public"),
        ("CKV2_K8S_6", "Pod.elsewhere.x"),
        ("CKV_K8S_16", "Deployment.default.root-shell"),
    ]
    assert uncovered(findings, analysis, descriptions, manifests(program)) == findings[:3]


def test_no_checkov_means_a_clear_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Checkov cannot be installed, the real run skips with the reason and the checked-in
    findings stand in (here the virtualenv cannot even be made: its parent is a file)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setitem(globals(), "CHECKOV_VENV", blocker / "venv")
    with pytest.raises(pytest.skip.Exception, match="checked-in findings of Checkov 3"):
        _checkov()
