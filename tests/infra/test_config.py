"""StackConfig: the repository's stacks load, and bad configurations fail with precise messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.config import ConfigError, StackConfig, load_catalog
from tools.engine import read_stack_config

REPO = Path(__file__).resolve().parents[2]


def stack_values(stack: str) -> dict[str, str]:
    return read_stack_config(REPO / f"Pulumi.{stack}.yaml", "signal-platform")


def load(stack: str, **changes: object) -> StackConfig:
    """The stack's config with some top-level keys replaced (None removes the key)."""
    values = stack_values(stack)
    for key, value in changes.items():
        full = f"signal-platform:{key}"
        if value is None:
            values.pop(full, None)
        else:
            values[full] = value if isinstance(value, str) else json.dumps(value)
    return StackConfig.load(stack, values)


def edited(stack: str, key: str, edit) -> object:
    value = json.loads(stack_values(stack)[f"signal-platform:{key}"])
    edit(value)
    return value


def problems_of(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    return str(exc.value)


def test_repository_stacks_load():
    dev, prod = (
        StackConfig.load("dev", stack_values("dev")),
        StackConfig.load("prod", stack_values("prod")),
    )
    assert dev.regions == ("us-central1",) and not dev.is_prod
    assert prod.regions == ("us-central1", "us-east4", "europe-west4") and prod.is_prod
    assert prod.deletion_protection and not dev.deletion_protection
    assert dev.node_pools.gpu[0].spot and dev.node_pools.gpu[0].min_nodes == 0
    assert {p.spot for p in prod.node_pools.gpu} == {True, False}


def test_defaults_fill_what_is_not_set():
    cfg = load("dev", workloads=None, cluster=None, cost=None)
    triton = cfg.workloads.triton.resources
    assert triton.requests["nvidia.com/gpu"] == "1"
    assert triton.requests["memory"] == "8Gi" and triton.limits["memory"] == "16Gi"
    assert cfg.cluster.release_channel == "REGULAR"


def test_region_overrides_apply_to_their_region_only():
    prod = StackConfig.load("prod", stack_values("prod"))
    assert prod.region("europe-west4").redis.shard_count == 2
    assert prod.region("us-central1").redis.shard_count == 3
    networks = {prod.region(r).network.nodes_cidr for r in prod.regions}
    assert len(networks) == 3, "each region gets its own address plan"


# Each bad configuration and a fragment its error must contain (path, value and allowed values).
BAD = [
    pytest.param(
        "dev",
        {"regions": ["us-centrall1"]},
        [
            "Pulumi.dev.yaml: signal-platform:regions[0]",
            "unknown region (did you mean us-central1?)",
            "'us-centrall1'",
            "allowed: ",
        ],
        id="unknown-region",
    ),
    pytest.param(
        "dev",
        {"regions": ["us-west3"], "nodePools": {"gpu": [{"name": "l4-spot"}]}},
        [
            "signal-platform:nodePools.gpu[0].acceleratorType",
            "GPU type not offered in us-west3",
            "none: this region offers no GPUs",
        ],
        id="gpu-not-offered-in-region",
    ),
    pytest.param(
        "dev",
        {"regions": ["southamerica-east1"], "nodePools": {"gpu": [{"name": "l4-spot"}]}},
        [
            "signal-platform:nodePools.gpu[0].acceleratorType",
            "'nvidia-l4'",
            "allowed: nvidia-tesla-t4",
        ],
        id="gpu-type-wrong-for-region",
    ),
    pytest.param(
        "dev",
        {"nodePools": {"gpu": [{"name": "l4-spot", "minNodes": 5, "maxNodes": 2}]}},
        [
            "signal-platform:nodePools.gpu[0].minNodes",
            "minNodes is greater than maxNodes (2)",
            "got 5",
        ],
        id="min-greater-than-max",
    ),
    pytest.param(
        "prod",
        {"nodePools": {"gpu": [{"name": "l4-spot", "spot": True}]}},
        [
            "Pulumi.prod.yaml: signal-platform:nodePools.gpu[0].spot",
            "has no on-demand fallback",
            "spot: false",
        ],
        id="spot-without-fallback-in-prod",
    ),
    pytest.param(
        "dev",
        {"labels": {"env": "dev", "owner": "platform-team"}},
        ["signal-platform:labels.cost-center", "required cost label is missing"],
        id="missing-cost-center-label",
    ),
    pytest.param(
        "dev",
        {"budget": {"monthlyUsd": 0}},
        ["signal-platform:budget.monthlyUsd", "budget must be positive", "got 0", "allowed: > 0"],
        id="non-positive-budget",
    ),
    pytest.param(
        "prod",
        {
            "workloads": {
                "signalService": {
                    "image": "signal-service:latest",
                    "replicas": 3,
                    "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
                }
            }
        },
        [
            "signal-platform:workloads.signalService.image",
            "prod images must be pinned by digest",
            "'signal-service:latest'",
            "sha256",
        ],
        id="prod-image-not-pinned",
    ),
    pytest.param(
        "dev",
        {"nodePools": {"gpu": [{"name": "l4-spot", "machineType": "n1-standard-8"}]}},
        [
            "signal-platform:nodePools.gpu[0].acceleratorType",
            "n1-standard-8 carries nvidia-tesla-t4",
        ],
        id="machine-and-accelerator-mismatch",
    ),
    pytest.param(
        "dev",
        {"cluster": {"masterAuthorizedNetworks": [{"cidr": "0.0.0.0/0", "name": "anyone"}]}},
        ["signal-platform:cluster.masterAuthorizedNetworks[0].cidr", "expose the control plane"],
        id="authorized-network-open-to-internet",
    ),
    pytest.param(
        "dev",
        {"redis": {"shardCount": 3, "replicas": 1}},
        ["signal-platform:redis.replicas", "unknown key"],
        id="unknown-nested-key",
    ),
    pytest.param(
        "dev",
        {"nodepools": {}},
        ["signal-platform:nodepools", "did you mean signal-platform:nodePools?"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        "dev",
        {"cluster": {"releaseChannel": "BETA"}},
        ["signal-platform:cluster.releaseChannel", "'BETA'", "'RAPID', 'REGULAR' or 'STABLE'"],
        id="release-channel-not-allowed",
    ),
    pytest.param(
        "dev",
        {"regionOverrides": {"us-east4": {"redis": {"shardCount": 2}}}},
        [
            "signal-platform:regionOverrides.us-east4",
            "override for a region the stack does not deploy",
        ],
        id="override-for-undeployed-region",
    ),
    pytest.param(
        "dev",
        {"labels": {"cost-center": "Quant Research", "env": "dev", "owner": "platform-team"}},
        ["signal-platform:labels.cost-center", "not a valid GCP label"],
        id="label-value-not-valid",
    ),
]


@pytest.mark.parametrize(("stack", "changes", "expected"), BAD)
def test_bad_configuration_is_rejected_with_a_precise_message(stack, changes, expected):
    with pytest.raises(ConfigError) as exc:
        load(stack, **changes)
    message = problems_of(exc)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        load("dev", budget={"monthlyUsd": -1}, regions=["mars-north1"])
    assert len(exc.value.problems) >= 2
    paths = {p.path for p in exc.value.problems}
    assert {"signal-platform:budget.monthlyUsd", "signal-platform:regions[0]"} <= paths


def test_catalogue_is_dated_and_sourced():
    catalog = load_catalog()
    assert catalog.as_of >= "2026-01-01"
    assert catalog.source.startswith("https://cloud.google.com/")
    for region, gpus in catalog.gpu_zones.items():
        for gpu, zones in gpus.items():
            assert set(zones) <= set(catalog.zones[region]), (
                f"{gpu} zones of {region} not in its zones"
            )
