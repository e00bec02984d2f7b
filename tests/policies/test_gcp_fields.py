"""The pack's table of label and location fields (policies/rules/gcp_fields.json) is what
policies/generate_gcp_fields.py derives from the installed pulumi-gcp SDK, and the derivation
reads the SDK right for the types whose semantics are documented."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest

POLICIES = Path(__file__).resolve().parents[2] / "policies"
GENERATOR: dict[str, Any] = runpy.run_path(str(POLICIES / "generate_gcp_fields.py"))


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    return GENERATOR["scan"](GENERATOR["sdk_root"]())


def test_checked_in_table_matches_the_sdk(table: dict[str, Any]) -> None:
    checked_in = (POLICIES / "rules" / "gcp_fields.json").read_text()
    assert checked_in == GENERATOR["render"](table), (
        "policies/rules/gcp_fields.json is stale: run .venv/bin/python policies/generate_gcp_fields.py"
    )


@pytest.mark.parametrize(
    ("token", "path", "provider_defaults"),
    [
        ("gcp:storage/bucket:Bucket", "labels", True),
        ("gcp:container/cluster:Cluster", "resourceLabels", True),
        ("gcp:cloudrunv2/service:Service", "labels", True),
        ("gcp:cloudfunctionsv2/function:Function", "labels", True),
        ("gcp:cloudrun/service:Service", "metadata.labels", True),
        ("gcp:sql/databaseInstance:DatabaseInstance", "settings.userLabels", False),
        ("gcp:container/nodePool:NodePool", "nodeConfig.resourceLabels", False),
        # Its `labels` are channel settings; its resource labels are userLabels.
        ("gcp:monitoring/notificationChannel:NotificationChannel", "userLabels", False),
    ],
)
def test_label_fields(
    table: dict[str, Any], token: str, path: str, provider_defaults: bool
) -> None:
    assert table["labels"][token] == {"path": path, "providerDefaults": provider_defaults}


def test_types_without_resource_labels_are_absent(table: dict[str, Any]) -> None:
    for token in (
        "gcp:serviceaccount/account:Account",
        "gcp:monitoring/metricDescriptor:MetricDescriptor",  # labels are descriptors (a list)
        "gcp:billing/budget:Budget",  # budgetFilter.labels filters spend, it labels nothing
    ):
        assert token not in table["labels"], token


def test_provider_locations(table: dict[str, Any]) -> None:
    locations = table["providerLocations"]
    assert locations["gcp:cloudfunctions/function:Function"] == {"region": "region"}
    assert locations["gcp:compute/instance:Instance"] == {"zone": "zone"}
    assert locations["gcp:redis/cluster:Cluster"] == {"region": "region"}
    # A bucket's location is required; a dataset's defaults to US, not to the provider.
    assert "gcp:storage/bucket:Bucket" not in locations
    assert "gcp:bigquery/dataset:Dataset" not in locations


def test_check_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "gcp_fields.json"
    stale.write_text(json.dumps({"labels": {}}))
    main = GENERATOR["main"]
    monkeypatch.setitem(main.__globals__, "OUTPUT", stale)
    assert main(["--check"]) == 1
    assert main([]) == 0
    assert main(["--check"]) == 0
