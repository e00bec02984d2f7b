"""`python -m tools diff` on a scratch git repository: a small Pulumi program, committed, changed.

The change between the base commit and the working tree: the GPU pool moves from g2-standard-8
(1 L4) to g2-standard-24 (2 L4s), the team label changes, topic `alerts` is added and `legacy`
removed, and two credentials change (one marked secret by the program, one only by its name).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tools import diff_command
from tools.cost import CATEGORIES, Category
from tools.diff import (
    ABSENT,
    MASK,
    Options,
    ResourceChange,
    StackDiff,
    cost_chart,
    diff_stacks,
    flatten,
    is_secret,
    load_table,
    render_markdown,
    render_text,
    rule_for,
)
from tools.diff.rules import TABLE_PATH, TableError
from tools.inventory import Resource

REPO = Path(__file__).resolve().parents[2]

PROGRAM = """
import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

config = pulumi.Config()
pool = config.require_object("gpuPool")
labels = config.require_object("labels")
# The accelerator count follows the machine type, as a G2 machine type fixes it.
GPUS = {"g2-standard-8": 1, "g2-standard-24": 2}

cluster = gcp.container.Cluster(
    "gke", name="gke", location="us-central1", remove_default_node_pool=True,
    initial_node_count=1, deletion_protection=False, resource_labels=labels)
gcp.container.NodePool(
    "gpu", name="gpu", cluster=cluster.id, location="us-central1",
    node_locations=["us-central1-a"],
    autoscaling={"total_min_node_count": 0, "total_max_node_count": 2},
    node_config={
        "machine_type": pool["machineType"], "spot": True, "resource_labels": labels,
        "guest_accelerators": [{"type": "nvidia-l4", "count": GPUS[pool["machineType"]]}],
    })
for topic in config.require_object("topics"):
    gcp.pubsub.Topic(topic, name=topic, labels=labels)
secret = gcp.secretmanager.Secret("api-key", secret_id="api-key", replication={"auto": {}},
                                  labels=labels)
gcp.secretmanager.SecretVersion(
    "api-key-v1", secret=secret.id, secret_data=pulumi.Output.secret(config.require("apiKey")))
# Not marked secret by the program: masked because of its key's name.
k8s.core.v1.ConfigMap("db", metadata={"name": "db", "namespace": "signals"},
                      data={"db_password": config.require("dbPassword")})
"""

BASE = {
    "gpuPool": {"machineType": "g2-standard-8"},
    "labels": {"cost-center": "quant", "env": "dev", "owner": "platform", "team": "alpha"},
    "topics": ["ticks", "legacy"],
    "apiKey": "hunter2-old-key",
    "dbPassword": "pw-one-secret",
}
HEAD = {
    **BASE,
    "gpuPool": {"machineType": "g2-standard-24"},
    "labels": {**BASE["labels"], "team": "beta"},
    "topics": ["ticks", "alerts"],
    "apiKey": "hunter2-new-key",
    "dbPassword": "pw-two-secret",
}
COST = {"spotShare": 0.95, "utilisation": 0.5, "signalsPerMonth": 1000}


def stack_file(values: dict) -> str:
    config = {f"scratch:{k}": v for k, v in values.items()}
    config.update(
        {"gcp:project": "scratch-dev", "scratch:cost": COST, "scratch:budget": {"monthlyUsd": 400}}
    )
    return yaml.safe_dump({"config": config})


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    root = tmp_path_factory.mktemp("scratch-repo")
    git(root, "init", "--quiet", "--initial-branch", "main")
    (root / "Pulumi.yaml").write_text("name: scratch\nruntime: python\nmain: infra/\n")
    (root / "infra").mkdir()
    # An early commit whose program cannot run: a base that predates a working program.
    (root / "infra" / "__main__.py").write_text("raise RuntimeError('the old program is broken')\n")
    (root / "Pulumi.dev.yaml").write_text(stack_file(BASE))
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "broken")
    broken = git(root, "rev-parse", "HEAD")
    (root / "infra" / "__main__.py").write_text(textwrap.dedent(PROGRAM))
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "base")
    (root / "Pulumi.dev.yaml").write_text(stack_file(HEAD))  # the change, uncommitted
    (root / "Pulumi.qa.yaml").write_text(stack_file(BASE))  # a stack new in this change
    return {"root": root, "broken": broken}


@pytest.fixture(scope="module")
def result(scratch) -> StackDiff:
    [stack_diff] = diff_stacks(scratch["root"], ["dev"], "main")
    return stack_diff


@pytest.fixture(scope="module")
def rendered(result: StackDiff) -> dict[str, str]:
    return {"text": render_text([result]), "markdown": render_markdown([result])}


def change(result: StackDiff, type_suffix: str, name: str) -> ResourceChange:
    for c in result.changes:
        if c.type.endswith(type_suffix) and c.name == name:
            return c
    raise AssertionError(
        f"no change to {type_suffix} {name}: {[(c.type, c.name) for c in result.changes]}"
    )


def test_gpu_pool_machine_type_change_is_a_replacement(result: StackDiff, rendered):
    pool = change(result, "NodePool", "gpu")
    assert pool.kind == "replace"
    by_path = {c.path: c for c in pool.changes}
    count = by_path["nodeConfig.guestAccelerators[0].count"]
    assert (count.old, count.new, count.effect) == (1, 2, "replace")
    assert "node_config.go" in count.source
    machine = by_path["nodeConfig.machineType"]
    assert (machine.old, machine.new) == ("g2-standard-8", "g2-standard-24")
    assert machine.effect == "disruptive" and "recreates every node" in machine.why
    text = rendered["text"]
    assert "+- gcp:container/nodePool:NodePool gpu (us-central1)  REPLACE" in text
    assert 'nodeConfig.machineType: "g2-standard-8" → "g2-standard-24"' in text
    assert "nodeConfig.guestAccelerators[0].count: 1 → 2" in text
    assert "forces replacement: the node template is immutable" in text
    assert "**Replaced (deleted and created again): 1**" in rendered["markdown"]


def test_label_change_is_an_update(result: StackDiff, rendered):
    topic = change(result, "Topic", "ticks")
    assert topic.kind == "update"
    assert [(c.path, c.old, c.new, c.effect) for c in topic.changes] == [
        ("labels.team", "alpha", "beta", "update")
    ]
    assert change(result, "cluster:Cluster", "gke").kind == "update"
    assert "~  gcp:pubsub/topic:Topic ticks" in rendered["text"]
    assert 'labels.team: "alpha" → "beta"' in rendered["text"]


def test_new_topic_is_an_add_and_a_removed_one_a_delete(result: StackDiff, rendered):
    assert change(result, "Topic", "alerts").kind == "add"
    assert change(result, "Topic", "legacy").kind == "remove"
    assert result.count("add") == 1 and result.count("remove") == 1
    # Updated: the cluster, topic ticks and the secret (labels), the secret version, the map.
    assert result.count("update") == 5 and result.count("replace") == 1
    assert result.unchanged == 3  # the stack, and the default providers of gcp and kubernetes
    assert "+  gcp:pubsub/topic:Topic alerts" in rendered["text"]
    assert "-  gcp:pubsub/topic:Topic legacy" in rendered["text"]
    assert "| dev | 1 |" in rendered["markdown"]


def test_secrets_are_masked_everywhere(result: StackDiff, rendered):
    version = change(result, "SecretVersion", "api-key-v1")
    [secret_data] = version.changes
    assert secret_data.path == "secretData" and secret_data.secret
    config_map = change(result, "ConfigMap", "db")
    [password] = config_map.changes
    assert password.path == "data.db_password" and password.secret
    for output in rendered.values():
        for value in ("hunter2", "pw-one", "pw-two"):
            assert value not in output
        assert f"secretData: {MASK} → {MASK} (changed)" in output
        assert f"data.db_password: {MASK} → {MASK} (changed)" in output


def test_policy_findings_that_appear_and_disappear(result: StackDiff, rendered):
    assert result.policy_error is None
    added = {(v.policy, v.urn) for v in result.policy_added}
    removed = {(v.policy, v.urn) for v in result.policy_removed}
    alerts, legacy = change(result, "Topic", "alerts"), change(result, "Topic", "legacy")
    # Topics without a CMEK key violate cmek-required: a new one brings it, a deleted one takes
    # it away, the unchanged one is in neither list.
    assert ("cmek-required", alerts.urn) in added
    assert ("cmek-required", legacy.urn) in removed
    ticks = change(result, "Topic", "ticks").urn
    assert ("cmek-required", ticks) not in added | removed
    # The bigger GPU pool pushes the estimate over the $400 budget: the budget rule now fails.
    assert result.base.estimate and result.head.estimate
    assert result.base.estimate.total < 400 < result.head.estimate.total
    assert any(
        v.policy == "cost-monthly-budget" and v.level == "mandatory" for v in result.policy_added
    )
    assert (
        "new:      [mandatory] cmek-required on gcp:pubsub/topic:Topic alerts" in rendered["text"]
    )
    assert (
        "resolved: [mandatory] cmek-required on gcp:pubsub/topic:Topic legacy" in rendered["text"]
    )


def test_cost_delta_is_shown(result: StackDiff, rendered):
    assert result.cost_delta == pytest.approx(
        result.head.estimate.total - result.base.estimate.total  # type: ignore[union-attr]
    )
    assert result.cost_delta and result.cost_delta > 0
    assert "cost: $" in rendered["text"] and "/month (+$" in rendered["text"]
    assert "GKE node pool gpu: g2-standard-24 + 2 x nvidia-l4 spot" in rendered["markdown"]


def test_the_pr_comment_charts_the_cost_by_category_at_base_and_head(result: StackDiff, rendered):
    """A mermaid bar chart GitHub renders, next to the same figures as a table."""
    base, head = result.base.estimate, result.head.estimate
    assert base and head
    markdown = rendered["markdown"]
    block = markdown.split("```mermaid\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0] == "xychart-beta"
    assert block[1] == '    title "dev: monthly cost by category, base and head (USD)"'
    labels = json.loads(block[2].removeprefix("    x-axis "))
    values = json.loads(block[4].removeprefix("    bar "))
    categories: list[Category] = [
        c for c in CATEGORIES if c in base.by_category() or c in head.by_category()
    ]
    assert labels == [f"{c} {side}" for c in categories for side in ("base", "head")]
    expected = [
        round(estimate.by_category().get(c, 0.0), 2)
        for c in categories
        for estimate in (base, head)
    ]
    assert values == pytest.approx(expected, abs=0.005)
    low, high = block[3].removeprefix('    y-axis "USD per month" ').split(" --> ")
    assert int(low) <= min(values) and max(values) <= int(high)
    # The GPU pool's change is where the money moves, and the table says it in words.
    gpus = head.by_category()["GPUs"] - base.by_category()["GPUs"]
    assert gpus > 0
    assert (
        f"| GPUs | ${base.by_category()['GPUs']:,.2f} | ${head.by_category()['GPUs']:,.2f} | +${gpus:,.2f} |"
        in markdown
    )
    assert cost_chart(result) == ["```mermaid", *block, "```", ""]


def test_a_new_stack_charts_its_head_alone(scratch):
    [new] = diff_stacks(scratch["root"], ["qa"], "main", options=Options(policy=False))
    chart = cost_chart(new)
    assert '    title "qa: monthly cost by category, head (USD)"' in chart
    labels = json.loads(chart[3].removeprefix("    x-axis "))
    assert labels and not [label for label in labels if label.endswith((" base", " head"))]


def test_the_replacement_table_is_data_with_a_source_for_every_entry(tmp_path: Path):
    table = load_table()
    assert "gcp:container/nodePool:NodePool" in table.types
    for entries in table.types.values():
        for entry in entries:
            assert entry.paths and entry.why and entry.source
    assert set(table.identity) == {"gcp", "kubernetes"}
    raw = yaml.safe_load(TABLE_PATH.read_text())
    raw["types"]["gcp:pubsub/topic:Topic"][0]["effect"] = "explode"
    del raw["types"]["gcp:pubsub/topic:Topic"][0]["source"]
    broken = tmp_path / "table.yaml"
    broken.write_text(yaml.safe_dump(raw))
    with pytest.raises(TableError) as error:
        load_table(broken)
    lines = str(error.value).splitlines()
    assert any(
        "types.gcp:pubsub/topic:Topic[0].effect" in line and "'explode'" in line for line in lines
    )
    assert any("types.gcp:pubsub/topic:Topic[0].source" in line for line in lines)


def test_worktrees_are_removed(scratch, result: StackDiff):
    assert git(scratch["root"], "worktree", "list").count("\n") == 0


def test_the_same_ref_on_both_sides_changes_nothing(scratch):
    [same] = diff_stacks(
        scratch["root"], ["dev"], "main", "main", Options(policy=False, cost=False)
    )
    assert same.changes == [] and same.unchanged == len(same.head.inventory.resources)  # type: ignore[union-attr]
    assert "0 to add, 0 to update, 0 to replace, 0 to delete" in render_text([same])


def test_a_stack_new_in_the_change_is_all_adds(scratch):
    [new] = diff_stacks(scratch["root"], ["qa"], "main", options=Options(policy=False, cost=False))
    assert new.base.inventory is not None and new.base.inventory.resources == []
    assert new.head.inventory is not None
    assert new.count("add") == len(new.head.inventory.resources) > 0
    assert {c.kind for c in new.changes} == {"add"}


def run_diff(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    diff_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["diff", *argv])
    return args.run(args)


def test_a_base_that_fails_to_plan_is_reported_not_fatal(scratch, tmp_path: Path, capsys):
    markdown = tmp_path / "comment.md"
    code = run_diff(
        "--base",
        scratch["broken"],
        "--stack",
        "dev",
        "--program",
        str(scratch["root"]),
        "--markdown",
        str(markdown),
        "--no-policy",
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "the base could not be planned" in out and "the old program is broken" in out
    assert "head: " in out and "resources" in out
    assert "base failed to plan" in markdown.read_text()
    assert git(scratch["root"], "worktree", "list").count("\n") == 0


def test_a_head_that_fails_to_plan_exits_1(scratch, capsys):
    code = run_diff(
        "--base",
        "main",
        "--head",
        scratch["broken"],
        "--stack",
        "dev",
        "--program",
        str(scratch["root"]),
        "--no-policy",
        "--no-cost",
    )
    assert code == 1
    assert "the head could not be planned" in capsys.readouterr().out


def test_an_unknown_ref_exits_2(scratch, capsys):
    assert run_diff("--base", "no-such-ref", "--program", str(scratch["root"])) == 2
    assert "unknown git ref 'no-such-ref'" in capsys.readouterr().err


# --------------------------------------------------------------------------- units


def resource(type_: str, inputs: dict, options: dict | None = None) -> Resource:
    return Resource(
        type_, "r", f"urn:pulumi:s::p::{type_}::r", None, None, inputs, options=options or {}
    )


@pytest.mark.parametrize(
    ("type_", "path", "effect"),
    [
        ("gcp:container/nodePool:NodePool", "nodeConfig.guestAccelerators[0].type", "replace"),
        ("gcp:container/nodePool:NodePool", "nodeConfig.spot", "replace"),
        ("gcp:container/nodePool:NodePool", "nodeConfig.machineType", "disruptive"),
        ("gcp:container/nodePool:NodePool", "autoscaling.totalMaxNodeCount", None),
        ("gcp:container/nodePool:NodePool", "nodeConfig.labels.team", None),
        ("gcp:container/cluster:Cluster", "privateClusterConfig.masterIpv4CidrBlock", "replace"),
        ("gcp:container/cluster:Cluster", "datapathProvider", "replace"),
        ("gcp:container/cluster:Cluster", "releaseChannel.channel", None),
        ("gcp:bigquery/table:Table", "timePartitioning.field", "replace"),
        ("gcp:bigquery/table:Table", "rangePartitioning.range.end", "replace"),
        ("gcp:bigquery/table:Table", "clustering", "disruptive"),
        ("gcp:redis/cluster:Cluster", "shardCount", "disruptive"),
        ("gcp:redis/cluster:Cluster", "zoneDistributionConfig.mode", "replace"),
        ("gcp:redis/cluster:Cluster", "redisConfigs.maxmemory-policy", None),
        ("gcp:storage/bucket:Bucket", "location", "replace"),  # identity heuristic
        ("kubernetes:apps/v1:Deployment", "spec.selector.matchLabels.app", "replace"),
        ("kubernetes:apps/v1:Deployment", "spec.replicas", None),
        # A new cluster means a new membership: its endpoint is immutable.
        ("gcp:gkehub/membership:Membership", "endpoint.gkeCluster.resourceLink", "replace"),
        ("gcp:gkehub/membership:Membership", "labels.env", None),
    ],
)
def test_replacement_table(type_: str, path: str, effect: str | None):
    rule = rule_for(resource(type_, {}), path)
    assert (rule.effect if rule else None) == effect
    if rule:
        assert rule.source and rule.why


def test_replace_on_changes_option_wins():
    r = resource("gcp:pubsub/topic:Topic", {}, {"replaceOnChanges": ["labels"]})
    rule = rule_for(r, "labels.team")
    assert rule and rule.effect == "replace" and rule.source == "Pulumi"


def test_bigquery_schema_drop_replaces_and_add_updates():
    from tools.diff import diff_resource

    def table(columns: list[tuple[str, str]]) -> Resource:
        schema = json.dumps([{"name": n, "type": t} for n, t in columns])
        return resource("gcp:bigquery/table:Table", {"schema": schema})

    base = table([("ts", "TIMESTAMP"), ("px", "FLOAT64")])
    added = diff_resource(
        base, table([("ts", "TIMESTAMP"), ("px", "FLOAT64"), ("q", "INT64")]), None
    )
    dropped = diff_resource(base, table([("ts", "TIMESTAMP")]), None)
    retyped = diff_resource(base, table([("ts", "TIMESTAMP"), ("px", "NUMERIC")]), None)
    assert added and added.kind == "update"
    assert dropped and dropped.kind == "replace" and "px removed" in dropped.changes[0].why
    assert retyped and retyped.kind == "replace" and "px retyped" in retyped.changes[0].why


def test_flatten_and_masking_rules():
    flat = flatten({"a": {"b": [{"c": 1}], "tags": ["x", "y"], "empty": {}}})
    assert flat == {"a.b[0].c": 1, "a.tags": ["x", "y"], "a.empty": {}}
    assert is_secret("t", "settings.password", "pw", ())
    assert is_secret("t", "a.b[0].c", 1, ("a.b",))  # under a secret path, even a number
    assert is_secret("t", "a", {"b": 1}, ("a.b",))  # above one
    assert not is_secret("t", "secretManagerConfig.enabled", True, ())  # a flag, not a secret
    assert not is_secret("t", "labels.team", "alpha", ())
    assert is_secret("kubernetes:core/v1:Secret", "data.tls.crt", "x", ())
    assert not is_secret("t", "x", ABSENT, ())


def test_tools_cli_imports_no_program_modules():
    """`python -m tools plan` runs other refs' programs in its process: the CLI itself must
    not import `infra`, or a base ref's program would run against the head's modules."""
    code = (
        "import sys, tools.__main__; print([m for m in sys.modules if m.split('.')[0] == 'infra'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
