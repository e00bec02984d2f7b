"""Resources with a fixed name that a later `pulumi up` may replace: Pulumi creates the
replacement before it deletes the original, so under the same name the create collides with
the original ("already exists") unless the resource is deleted first.

Which inputs force a replacement is rules/replace_on_change.yaml, the table `python -m tools
diff` reads too; the inputs that name a resource, and the types that cannot be deleted, are in
apply_order.yaml (`fixed_names`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rules.apply_order import TABLES, read_tables
from rules.kit import MANDATORY, Rules, StackResource
from rules.stack_graph import Finding

RULES = Rules("apply-order")

REPLACE_TABLE = read_tables(Path(__file__).with_name("replace_on_change.yaml"))
NAME_INPUTS: tuple[str, ...] = tuple(TABLES["fixed_names"]["name_inputs"])
NEVER_DELETED: dict[str, str] = dict(TABLES["fixed_names"]["never_deleted"])


def forcing_paths(token: str) -> list[str]:
    """The inputs of `token` whose change replaces a resource under the same name: the table's
    replace paths other than what names or places it (a new name or place collides with
    nothing)."""
    provider = token.split(":", 1)[0]
    identity = set(REPLACE_TABLE["identity"].get(provider, {}).get("paths", []))
    identity |= set(NAME_INPUTS) | set(TABLES["fixed_names"]["placement_inputs"]) | {"namePrefix"}
    paths: list[str] = []
    for entry in REPLACE_TABLE["types"].get(token, []):
        if entry.get("effect") == "replace":
            paths += [p for p in entry["paths"] if p not in identity and p not in paths]
    return paths


def fixed_name(r: StackResource) -> tuple[str, str] | None:
    """The input that names `r`, when the program sets it (a name known only after the update
    is not judged)."""
    for key in NAME_INPUTS:
        value = r.props.get(key)
        if isinstance(value, str) and value:
            return key, value
    return None


@RULES.stack(
    "apply-fixed-name-replace",
    level=MANDATORY,
    description="A Google Cloud resource with an explicit name and an input whose change forces "
    "a replacement (table in rules/replace_on_change.yaml: node pools, clusters, memberships, "
    "Redis clusters, BigQuery tables, subscriptions ...) is deleteBeforeReplace (or protected, "
    "so a replacement is refused up front): created first under the same name, the replacement "
    "fails with 409 already exists.",
    source=TABLES["fixed_names"]["source"],
)
def fixed_name_replace(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    for r in resources:
        if not r.type.startswith("gcp:") or r.type in NEVER_DELETED:
            continue
        if r.delete_before_replace or r.protect:
            continue
        paths = forcing_paths(r.type)
        name = fixed_name(r)
        if not paths or name is None:
            continue
        key, value = name
        listed = ", ".join(paths[:4]) + (" ..." if len(paths) > 4 else "")
        yield (
            r.urn,
            f"has a fixed {key} ({value!r}) and is replaced when {listed} change: Pulumi creates "
            "the replacement first, under the same name, and the create fails with 409; set "
            "deleteBeforeReplace",
        )
