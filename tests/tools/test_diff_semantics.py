"""What the engine would do with a change, beyond each resource's own inputs: aliases, ignored
changes, providers and the replacements a replacement causes.

One small program planned twice by the real engine (the change switched on by config), the two
inventories compared as `tools diff` compares a base and a head.
"""

from __future__ import annotations

import textwrap

import pytest

from tools.diff import ResourceChange
from tools.diff.compare import diff_inventories
from tools.engine import plan

PROGRAM = """
    import pulumi
    import pulumi_gcp as gcp
    import pulumi_kubernetes as k8s

    cfg = pulumi.Config()
    changed = cfg.get_bool("changed") or False

    # A cluster moved to another region is replaced: so is the provider that names it, and so
    # is every object that provider manages.
    cluster = gcp.container.Cluster(
        "gke",
        name="gke",
        location="us-east1" if changed else "us-central1",
        initial_node_count=1,
        deletion_protection=False,
    )
    cluster_provider = k8s.Provider(
        "k8s",
        kubeconfig=cluster.endpoint.apply(lambda endpoint: f"server: https://{endpoint}"),
        cluster_identifier=cluster.endpoint,
    )
    k8s.apps.v1.Deployment(
        "app",
        metadata={"name": "app", "namespace": "default"},
        spec={
            "selector": {"match_labels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
        opts=pulumi.ResourceOptions(provider=cluster_provider),
    )

    # Renamed with an alias, its label change ignored: nothing happens to it.
    gcp.pubsub.Topic(
        "events-topic" if changed else "events",
        name="events",
        labels={"team": "b" if changed else "a"},
        opts=pulumi.ResourceOptions(
            aliases=[pulumi.Alias(name="events")] if changed else None,
            ignore_changes=["labels"],
        ),
    )

    # Moved from the default provider to an explicit one with the same project: kept.
    explicit = gcp.Provider("explicit", project="p") if changed else None
    gcp.storage.Bucket(
        "data", name="data-p", location="US", opts=pulumi.ResourceOptions(provider=explicit)
    )
"""


@pytest.fixture(scope="module")
def diff(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ResourceChange]:
    root = tmp_path_factory.mktemp("diff-semantics")
    (root / "Pulumi.yaml").write_text("name: semantics\nruntime: python\n")
    (root / "Pulumi.dev.yaml").write_text("config:\n  gcp:project: p\n")
    (root / "__main__.py").write_text(textwrap.dedent(PROGRAM))
    base = plan(root, "dev")
    head = plan(root, "dev", {"semantics:changed": "true"})
    changes, _ = diff_inventories(base, head)
    return {f"{c.kind} {c.type.rsplit(':', 1)[-1]} {c.name}": c for c in changes}


def test_a_replaced_cluster_replaces_its_provider_and_every_object_it_manages(diff):
    assert "replace Cluster gke" in diff
    provider = diff["replace kubernetes k8s"]
    assert [c.path for c in provider.replacing] == ["clusterIdentifier"]
    deployment = diff["replace Deployment app"]
    assert [(c.path, c.old, c.why) for c in deployment.replacing] == [
        (
            "(provider)",
            "urn:pulumi:dev::semantics::pulumi:providers:kubernetes::k8s",
            "its provider is replaced",
        )
    ]


def test_a_resource_renamed_with_an_alias_is_neither_deleted_nor_created(diff):
    assert not [key for key in diff if "Topic" in key], diff.keys()


def test_a_move_to_a_provider_with_the_same_configuration_keeps_the_resource(diff):
    assert not [key for key in diff if "Bucket" in key], diff.keys()
    assert "add gcp explicit" in diff


def test_nothing_else_changes(diff):
    assert sorted(diff) == [
        "add gcp explicit",
        "replace Cluster gke",
        "replace Deployment app",
        "replace kubernetes k8s",
    ]
