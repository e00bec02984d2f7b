"""The pack's table of labelled types (policies/rules/label_fields.py) agrees with pulumi-gcp.

The pack cannot import pulumi-gcp (its venv holds only the policy SDK), so it carries a table;
this test reads the SDK in the dev venv and fails when the table and the SDK disagree: a type
that takes labels but is missing, a wrong field, or a wrong claim about provider default labels.
"""

from __future__ import annotations

import importlib.util
import re
import runpy
from pathlib import Path

import pytest

TABLE: dict[str, tuple[str, bool]] = runpy.run_path(
    str(Path(__file__).resolve().parents[2] / "policies" / "rules" / "label_fields.py")
)["LABEL_FIELDS"]
# The services the platform builds with: every labelled type in them must be in the table.
MODULES = (
    "artifactregistry", "bigquery", "certificatemanager", "compute", "container", "dns", "kms",
    "monitoring", "networkconnectivity", "pubsub", "redis", "secretmanager", "storage",
)  # fmt: skip
# `labels` that are not resource labels: label descriptors, notification-channel settings.
NOT_RESOURCE_LABELS = {
    "gcp:monitoring/metricDescriptor:MetricDescriptor",
    "gcp:monitoring/notificationChannel:NotificationChannel",
}
_GETTER = re.compile(r'@pulumi\.getter(?:\(name="(\w+)"\))?\n    def (\w+)')
_TOKEN = re.compile(r"'(gcp:[a-zA-Z]+/[a-zA-Z]+:\w+)'")
# Other clouds' GKE flavours (container/aws*, azure*, attached*) are not ours.
_SKIP = re.compile(r"^gcp:container/(aws|azure|attached)")


def sdk_resources() -> dict[str, set[str]]:
    """type token → camelCase properties, for every resource of MODULES in pulumi-gcp (read from
    the SDK's source text: importing hundreds of modules would take half a minute)."""
    root = Path(importlib.util.find_spec("pulumi_gcp").origin).parent  # type: ignore[union-attr]
    found: dict[str, set[str]] = {}
    for module in MODULES:
        for path in sorted((root / module).glob("*.py")):
            if path.name.startswith(("_", "get_")):
                continue
            for chunk in path.read_text().split("\nclass ")[1:]:
                if not chunk.split("\n", 1)[0].endswith("(pulumi.CustomResource):"):
                    continue
                token = _TOKEN.search(chunk)
                if token and not _SKIP.match(token.group(1)):
                    found[token.group(1)] = {a or b for a, b in _GETTER.findall(chunk)}
    return found


@pytest.fixture(scope="module")
def sdk() -> dict[str, set[str]]:
    return sdk_resources()


def test_every_labelled_type_is_in_the_table(sdk: dict[str, set[str]]) -> None:
    labelled = {
        token
        for token, props in sdk.items()
        if props & {"labels", "resourceLabels", "userLabels"} and token not in NOT_RESOURCE_LABELS
    }
    assert sorted(labelled - set(TABLE)) == []


def test_table_fields_exist_and_default_labels_claims_hold(sdk: dict[str, set[str]]) -> None:
    for token, (path, defaults_apply) in TABLE.items():
        assert token in sdk, f"{token} is not a pulumi-gcp resource"
        top = path.split(".")[0]
        assert top in sdk[token], f"{token} has no {top}"
        # Provider defaultLabels reach exactly the types whose labels have effectiveLabels.
        assert defaults_apply == ("effectiveLabels" in sdk[token]), token
