"""The stack config's rules, one class of bad input at a time: each refused with one line naming
the file, the key path, the value and what is allowed; the repository's stacks accepted."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from infra.config import ConfigError, StackConfig, system_pods
from infra.config.cluster import recurrence_problems
from infra.config.resources import parse_quantity
from tests.infra.stack_config import REPO, load, section
from tools.engine import read_stack_config

LINE = re.compile(r"^Pulumi\.(dev|prod)\.yaml: \S+: .+ \(got .+\); allowed: .+$")


def refused(stack: str, **changes: object) -> list[str]:
    """The problem lines of a configuration that must be refused."""
    with pytest.raises(ConfigError) as exc:
        load(stack, **changes)
    lines = str(exc.value).splitlines()
    assert lines and len(lines) == len(exc.value.problems)
    return lines


def edited(stack: str, key: str, edit: Callable[[Any], object]) -> Any:
    value = section(stack, key)
    edit(value)
    return value


def one_line(lines: list[str], *fragments: str) -> str:
    """The one line holding every fragment; it names file, key, value and what is allowed."""
    matching = [line for line in lines if all(f in line for f in fragments)]
    assert len(matching) == 1, f"{fragments} in:\n" + "\n".join(lines)
    assert LINE.match(matching[0]), matching[0]
    return matching[0]


def test_the_repository_stacks_load():
    for stack in ("dev", "prod"):
        cfg = load(stack)
        assert cfg.stack == stack and cfg.environment == stack


# ---------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    ("key", "value", "path"),
    [
        ("budget", lambda n: {"monthlyUsd": n}, "budget.monthlyUsd"),
        ("cost", lambda n: {"averageNodes": {"system": n}}, "cost.averageNodes.system"),
        ("cost", lambda n: {"spotShare": n}, "cost.spotShare"),
        ("mesh", lambda n: {"traceSamplingPercent": n}, "mesh.traceSamplingPercent"),
        (
            "intelligence",
            lambda n: {"predictiveScaling": {"targetUtilisation": n}},
            "intelligence.predictiveScaling.targetUtilisation",
        ),
        (
            "observability",
            lambda n: {"alerts": {"latencyP95Ms": n}},
            "observability.alerts.latencyP95Ms",
        ),
    ],
)
def test_non_finite_numbers_are_refused_everywhere(key, value, path, number):
    # JSON as the language host passes it: NaN and Infinity are what json.dumps writes.
    lines = refused("dev", **{key: json.dumps(value(number))})
    line = one_line(lines, f"signal-platform:{path}:")
    assert "finite number" in line


# ---------------------------------------------------------------- address plans


def test_ranges_of_one_region_may_not_overlap():
    network = {
        "nodesCidr": "10.40.0.0/20",
        "podsCidr": "10.40.0.0/14",
        "servicesCidr": "10.44.0.0/20",
        "masterCidr": "172.16.9.0/24",
    }
    lines = refused("dev", regionOverrides={"us-central1": {"network": network}})
    base = "signal-platform:regionOverrides.us-central1.network"
    one_line(lines, f"{base}.podsCidr:", "overlaps nodesCidr (10.40.0.0/20)")
    one_line(lines, f"{base}.masterCidr:", "GKE's control plane takes a /28")


def test_ranges_may_not_overlap_another_regions():
    # europe-west4 is prod's third region: its derived pods range is 10.72.0.0/14.
    network = {
        "nodesCidr": "10.200.0.0/20",
        "podsCidr": "10.64.0.0/14",
        "servicesCidr": "10.201.0.0/20",
        "masterCidr": "172.16.200.0/28",
    }
    override = section("prod", "regionOverrides")
    override["europe-west4"]["network"] = network
    lines = refused("prod", regionOverrides=override)
    one_line(
        lines,
        "signal-platform:regionOverrides.europe-west4.network.podsCidr:",
        "overlaps regions[0] (derived).podsCidr (10.64.0.0/14)",
    )


def test_a_range_with_host_bits_is_refused():
    network = {
        "nodesCidr": "10.40.0.1/20",
        "podsCidr": "10.48.0.0/14",
        "servicesCidr": "10.44.0.0/20",
        "masterCidr": "172.16.9.0/28",
    }
    lines = refused("dev", regionOverrides={"us-central1": {"network": network}})
    one_line(lines, "network.nodesCidr:", "has host bits set")


# ---------------------------------------------------------------- Kubernetes quantities


@pytest.mark.parametrize(
    ("resource", "quantity", "message"),
    [
        ("memory", "8Gx", "not a Kubernetes quantity"),
        ("cpu", "lots", "not a Kubernetes quantity"),
        ("memory", "-1Gi", "a negative quantity"),
        ("cpu", "1.5.2", "not a Kubernetes quantity"),
        ("nvidia.com/gpu", "0.5", "extended resources are whole units"),
    ],
)
def test_bad_quantities_are_refused(resource: str, quantity: str, message: str):
    workloads = edited(
        "dev",
        "workloads",
        lambda w: w["triton"]["resources"]["requests"].update({resource: quantity}),
    )
    lines = refused("dev", workloads=workloads)
    one_line(
        lines,
        f"signal-platform:workloads.triton.resources.requests.{resource}:",
        message,
        repr(quantity),
    )


def test_a_request_above_its_limit_and_an_unknown_resource_name_are_refused():
    def edit(w: dict) -> None:
        w["signalService"]["resources"]["requests"].update({"memory": "3Gi", "mem": "1Gi"})

    lines = refused("dev", workloads=edited("dev", "workloads", edit))
    one_line(lines, "signalService.resources.requests.mem:", "not a Kubernetes resource name")

    # The name problem stops the model before its cross-field rule: fix it, then see the next.
    def over(w: dict) -> None:
        w["signalService"]["resources"]["requests"]["memory"] = "3Gi"

    lines = refused("dev", workloads=edited("dev", "workloads", over))
    one_line(lines, "signalService.resources.requests.memory:", "request above its limit (1Gi)")


def test_intelligence_and_mesh_resources_are_quantities_too():
    lines = refused(
        "dev",
        intelligence={
            "resources": {"requests": {"cpu": "1x", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
        },
    )
    one_line(
        lines, "signal-platform:intelligence.resources.requests.cpu:", "not a Kubernetes quantity"
    )
    lines = refused(
        "dev", mesh={"proxyResources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}
    )
    one_line(lines, "signal-platform:mesh.proxyResources.requests.cpu:", "request above its limit")


def test_quantities_parse_as_kubernetes_does():
    assert parse_quantity("500m") == parse_quantity("0.5")
    assert parse_quantity("1Gi") == 2**30 and parse_quantity("1G") == 10**9
    assert parse_quantity("1e3") == 1000 and parse_quantity("1.5Ki") == 1536
    for bad in ("", "Gi", "1 Gi", "1gi", "0x10"):
        with pytest.raises(ValueError):
            parse_quantity(bad)


# ---------------------------------------------------------------- maintenance windows


@pytest.mark.parametrize(
    ("maintenance", "path", "fragment"),
    [
        ({"startTime": "2026-01-03T25:99:00Z"}, "maintenance.startTime", "not a valid date-time"),
        ({"endTime": "2026-01-03 10:00"}, "maintenance.endTime", "not an RFC 3339 date-time"),
        ({"startTime": "2026-01-03T04:00:00"}, "maintenance.startTime", "RFC 3339"),
        (
            {"startTime": "2026-01-03T10:00:00Z", "endTime": "2026-01-03T04:00:00Z"},
            "maintenance.endTime",
            "not after startTime",
        ),
        ({"recurrence": "FREQ=SOMETIMES"}, "maintenance.recurrence", "FREQ=SOMETIMES is not valid"),
        ({"recurrence": "FREQ=WEEKLY;BYDAY=SA,XX"}, "maintenance.recurrence", "BYDAY=SA,XX"),
        ({"recurrence": "BYDAY=SA"}, "maintenance.recurrence", "needs FREQ"),
        ({"recurrence": "FREQ=DAILY;FREQ=WEEKLY"}, "maintenance.recurrence", "given twice"),
        ({"recurrence": "FREQ=DAILY;COUNT=3;UNTIL=20270101"}, "maintenance.recurrence", "exclude"),
        ({"recurrence": "FREQ=WEEKLY;WHEN=SA"}, "maintenance.recurrence", "'WHEN=SA'"),
    ],
)
def test_bad_maintenance_windows_are_refused(maintenance: dict, path: str, fragment: str):
    lines = refused("dev", cluster={"maintenance": maintenance})
    one_line(lines, f"signal-platform:cluster.{path}:", fragment)


def test_valid_recurrences_pass():
    for rule in (
        "FREQ=WEEKLY;BYDAY=SA,SU",
        "FREQ=DAILY",
        "FREQ=MONTHLY;BYDAY=1SA",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=-1SU;WKST=MO",
        "FREQ=DAILY;UNTIL=20270101T000000Z",
    ):
        assert list(recurrence_problems(rule)) == [], rule


# ---------------------------------------------------------------- control-plane access


def test_the_internet_split_in_two_is_refused():
    networks = [{"cidr": "0.0.0.0/1", "name": "low"}, {"cidr": "128.0.0.0/1", "name": "high"}]
    lines = refused("dev", cluster={"masterAuthorizedNetworks": networks})
    for i, cidr in enumerate(("0.0.0.0/1", "128.0.0.0/1")):
        line = one_line(lines, f"cluster.masterAuthorizedNetworks[{i}].cidr:", cidr)
        assert "would expose the control plane to the internet" in line


def test_public_ranges_must_be_marked_and_stay_small_together():
    office = {"cidr": "203.0.113.0/24", "name": "office"}
    lines = refused("dev", cluster={"masterAuthorizedNetworks": [office]})
    one_line(lines, "masterAuthorizedNetworks[0].cidr:", "public: true")
    marked = {**office, "public": True}
    cluster = section("dev", "cluster")
    assert load("dev", cluster={**cluster, "masterAuthorizedNetworks": [marked]}).cluster
    halves = [
        {"cidr": "0.0.0.0/1", "name": "low", "public": True},
        {"cidr": "128.0.0.0/1", "name": "high", "public": True},
    ]
    lines = refused("dev", cluster={"masterAuthorizedNetworks": halves})
    line = one_line(lines, "signal-platform:cluster.masterAuthorizedNetworks:", "4,294,967,296")
    assert "at most 65,536 public addresses" in line
    # Many small public ranges add up the same way.
    many = [{"cidr": f"198.{i}.0.0/16", "name": f"r{i}", "public": True} for i in range(18, 20)]
    one_line(refused("dev", cluster={"masterAuthorizedNetworks": many}), "131,072 addresses")


# ---------------------------------------------------------------- namespaces and keys


def test_a_misspelled_namespace_is_refused_with_a_did_you_mean():
    values = read_stack_config(REPO / "Pulumi.dev.yaml", "signal-platform")
    values["signal-platfrom:redis"] = '{"shardCount": 2}'
    values["gpc:region"] = "us-east4"
    values["acme:thing"] = "1"
    with pytest.raises(ConfigError) as exc:
        StackConfig.load("dev", values)
    lines = str(exc.value).splitlines()
    one_line(lines, "signal-platfrom:redis:", "did you mean signal-platform:redis?")
    one_line(lines, "gpc:region:", "did you mean gcp:region?")
    line = one_line(lines, "acme:thing:", "unknown namespace 'acme'")
    assert "signal-platform:, gcp:, kubernetes:, pulumi:" in line


def test_provider_keys_are_the_ones_the_installed_providers_read():
    """`gcp:` and `kubernetes:` keys are checked against the SDKs' own declarations (the
    generated config module, the provider arguments), with the closest key they do read."""
    values = read_stack_config(REPO / "Pulumi.dev.yaml", "signal-platform")
    values["gcp:regoin"] = "us-central1"
    values["gcp:defaultLabel"] = '{"team": "quant"}'
    values["kubernetes:contxt"] = "dev"
    values["kubernetes:enableServerSideAply"] = "true"
    values["gcp:qqqqqqqq"] = "1"
    with pytest.raises(ConfigError) as exc:
        StackConfig.load("dev", values)
    lines = str(exc.value).splitlines()
    assert len(lines) == 5, lines
    line = one_line(lines, "Pulumi.dev.yaml: gcp:regoin: unknown key, did you mean gcp:region?")
    assert "(got 'us-central1'); allowed: a key the installed pulumi_gcp provider reads" in line
    one_line(lines, "gcp:defaultLabel:", "did you mean gcp:defaultLabels?")
    one_line(lines, "kubernetes:contxt:", "did you mean kubernetes:context?", "pulumi_kubernetes")
    one_line(
        lines, "kubernetes:enableServerSideAply:", "did you mean kubernetes:enableServerSideApply?"
    )
    one_line(lines, "gcp:qqqqqqqq: unknown key, no such key")


def test_every_key_the_providers_declare_is_accepted():
    import pulumi_gcp
    import pulumi_kubernetes

    from infra.config.providers import provider_config_keys

    gcp, kubernetes = provider_config_keys("gcp"), provider_config_keys("kubernetes")
    # Provider arguments and the config-only keys of gcp's generated config module.
    assert {"project", "region", "zone", "defaultLabels", "skipRegionValidation"} <= gcp
    assert {"kubeconfig", "context", "namespace", "enableServerSideApply"} <= kubernetes
    assert all(
        hasattr(pulumi_gcp.ProviderArgs, _snake(k))
        for k in gcp - {"skipRegionValidation", "disableGlobalProjectWarning"}
    )
    assert all(hasattr(pulumi_kubernetes.ProviderArgs, _snake(k)) for k in kubernetes)
    values = read_stack_config(REPO / "Pulumi.dev.yaml", "signal-platform")
    values.update({f"gcp:{k}": "x" for k in gcp if k != "project"})
    values.update({f"kubernetes:{k}": "x" for k in kubernetes})
    assert StackConfig.load("dev", values).project_id == "signal-platform-dev"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_a_nested_unknown_key_gets_a_did_you_mean():
    lines = refused("dev", redis={"shardCount": 1, "replicaCont": 0})
    line = one_line(lines, "signal-platform:redis.replicaCont:", "did you mean replicaCount?")
    assert "shardCount, replicaCount" in line


def test_the_provider_project_must_be_the_stacks():
    values = read_stack_config(REPO / "Pulumi.dev.yaml", "signal-platform")
    values["gcp:project"] = "someone-elses-project"
    with pytest.raises(ConfigError) as exc:
        StackConfig.load("dev", values)
    one_line(str(exc.value).splitlines(), "signal-platform:projectId:", "differs from gcp:project")


# ---------------------------------------------------------------- the environment


@pytest.mark.parametrize("stack", ["prod", "prod-eu", "production", "eu-prd"])
def test_a_stack_named_for_prod_must_be_prod(stack: str):
    values = read_stack_config(REPO / "Pulumi.dev.yaml", "signal-platform")
    with pytest.raises(ConfigError) as exc:
        StackConfig.load(stack, values, source="Pulumi.prod.yaml")
    line = one_line(str(exc.value).splitlines(), "signal-platform:environment:")
    assert f"stack {stack!r} is named for prod (got 'dev')" in line
    assert "environmentMismatchReason" in line


def test_the_mismatch_needs_a_reason_and_only_a_real_one():
    values = read_stack_config(REPO / "Pulumi.dev.yaml", "signal-platform")
    reason = "a rehearsal of prod's layout at dev's size"
    values["signal-platform:environmentMismatchReason"] = reason
    assert StackConfig.load("prod-rehearsal", values).environment == "dev"
    with pytest.raises(ConfigError) as exc:
        StackConfig.load("dev", values)
    line = one_line(str(exc.value).splitlines(), "signal-platform:environmentMismatchReason:")
    assert "no mismatch to explain" in line


def test_a_stack_claiming_another_environment_is_told_that_first_and_alone():
    # Dev's file claiming prod: prod's rules (digests, spot fallback, replicas, Redis replicas,
    # the env label) would judge a stack that is not prod; the mismatch is the one problem.
    lines = refused("dev", environment="prod")
    assert len(lines) == 1, lines
    line = one_line(lines, "signal-platform:environment:")
    assert (
        "stack 'dev' is named for dev (got 'prod'); allowed: dev, or environmentMismatchReason"
        in line
    )
    # With a section that fails on its own, the mismatch still comes first, and that
    # section's own problem is still there.
    redis = {**section("dev", "redis"), "shardCount": 0}
    lines = refused("dev", environment="prod", redis=redis)
    assert lines[0] == line
    one_line(lines, "signal-platform:redis.shardCount:")
    assert not [line for line in lines if "prod" in line.split("(got")[0]], lines


def test_a_mismatch_with_its_reason_gets_the_environments_rules():
    reason = "a rehearsal of prod's layout at dev's size"
    lines = refused("dev", environment="prod", environmentMismatchReason=reason)
    assert not [line for line in lines if "signal-platform:environment:" in line]
    one_line(lines, "signal-platform:workloads.triton.image:", "prod images must be pinned")
    one_line(lines, "signal-platform:workloads.signalService.replicas:", "prod needs at least two")
    # The env label follows a settled environment.
    labels = {**section("prod", "labels"), "env": "dev"}
    one_line(refused("prod", labels=labels), "signal-platform:labels.env:", "(got 'dev')")


# ---------------------------------------------------------------- every line's shape


def test_every_problem_is_one_line_with_file_key_value_and_allowed():
    lines = refused(
        "prod",
        budget={"monthlyUsd": -1, "billingAccount": "000000-000000-000000"},
        regions=["us-central1", "mars-north1"],
        pubsub={"ticksTopic": "goog-ticks"},
    )
    for path in ("regions[1]", "budget.billingAccount", "pubsub.ticksTopic"):
        one_line(lines, f"signal-platform:{path}:")
    for line in lines:
        assert LINE.match(line), line


def test_the_readme_documents_every_top_level_key():
    readme = (REPO / "README.md").read_text()
    section_text = readme[readme.index("## Stack configuration") :]
    table = section_text[: section_text.index("\n\n", section_text.index("| key |"))]
    keys = {f.alias or n for n, f in StackConfig.model_fields.items()} - {"stack"}
    missing = sorted(k for k in keys if f"`{k}" not in table)
    assert missing == [], f"README's configuration table lacks {missing}"


def test_average_nodes_stay_within_the_pools_size():
    # dev's spot pool has at most 2 nodes; its system pool 3, all in the zonal cluster's zone.
    lines = refused("dev", cost={"averageNodes": {"l4-spot": 3, "system": 7}})
    one_line(lines, "signal-platform:cost.averageNodes.l4-spot:", "most nodes (2)", "<= 2")
    one_line(lines, "signal-platform:cost.averageNodes.system:", "most nodes (3)", "<= 3")
    assert load("dev", cost={"averageNodes": {"l4-spot": 2, "system": 3}}).cost


def test_average_nodes_never_price_fewer_nodes_than_the_pool_always_runs():
    """An average below what the pool keeps running would price capacity the stack cannot
    shed: the system pool runs at least what its pods request, and at least minNodes per zone."""
    line = one_line(
        refused("dev", cost={"averageNodes": {"system": 1}}),
        "signal-platform:cost.averageNodes.system: fewer than the pool always runs in us-central1",
    )
    cfg = load("dev")
    pods = system_pods(cfg.mesh, cfg.cluster, cfg.workloads, cfg.intelligence)
    cpu, memory = (
        sum(p.cpu * p.replicas for p in pods),
        sum(p.memory_gib * p.replicas for p in pods),
    )
    assert f"request {cpu:.2f} vCPU, {memory:.2f} GiB: 2 e2-standard-4 node(s)) (got 1.0)" in line
    assert line.endswith("allowed: >= 2")
    # More replicas of the signal service: the same pool must average more nodes.
    workloads = section("dev", "workloads")
    workloads["signalService"]["replicas"] = 4
    line = one_line(refused("dev", workloads=workloads), "cost.averageNodes.system:")
    assert "3 e2-standard-4 node(s)) (got 2.0); allowed: >= 3" in line
    # minNodes per zone sets the floor when it is higher; prod's pools are checked per region.
    pools = section("prod", "nodePools")
    pools["system"]["minNodes"] = 2
    line = one_line(refused("prod", nodePools=pools), "cost.averageNodes.system:")
    assert "(6: minNodes 2 x 3 zone(s)) (got 3.0); allowed: >= 6" in line
    # A per-region entry is held to its own region's floor.
    lines = refused(
        "prod", cost={**section("prod", "cost"), "averageNodes": {"us-east4/system": 1}}
    )
    one_line(lines, "averageNodes.us-east4/system: fewer than the pool always runs in us-east4")


def test_a_zonal_cluster_runs_in_the_first_zone_that_offers_its_gpus():
    dev = load("dev")
    region = dev.region("us-central1")
    assert dev.cluster.zonal
    assert (region.zone, region.location) == ("us-central1-a", "us-central1-a")
    assert region.node_zones == ("us-central1-a",)
    assert region.gpu_zones("nvidia-l4") == ("us-central1-a",)
    # Another region: its own first zone with L4s (us-east4-b has none).
    moved = load("dev", regions=["us-east4"]).region("us-east4")
    assert (moved.location, moved.gpu_zones("nvidia-l4")) == ("us-east4-a", ("us-east4-a",))
    # T4s and H100s together: the first zone offering both.
    pools = section("dev", "nodePools")
    pools["gpu"] = [
        {
            **pools["gpu"][0],
            "name": "t4",
            "machineType": "n1-standard-8",
            "acceleratorType": "nvidia-tesla-t4",
        },
        {
            **pools["gpu"][0],
            "name": "h100",
            "machineType": "a3-highgpu-8g",
            "acceleratorType": "nvidia-h100-80gb",
            "acceleratorCount": 8,
            "maxSharedClientsPerGpu": 1,
        },
    ]
    workloads = section("dev", "workloads")
    workloads["triton"]["maxReplicas"] = 1
    east = load("dev", regions=["us-east4"], nodePools=pools, workloads=workloads, cost=None)
    assert east.region("us-east4").zone == "us-east4-a"
    # L4s and A100s: no zone of us-east4 offers both (it has no A100 at all).
    pools["gpu"] = [
        {
            **pools["gpu"][0],
            "name": "l4",
            "machineType": "g2-standard-8",
            "acceleratorType": "nvidia-l4",
            "acceleratorCount": 1,
            "maxSharedClientsPerGpu": 4,
        },
        {
            **pools["gpu"][1],
            "name": "a100",
            "machineType": "a2-highgpu-1g",
            "acceleratorType": "nvidia-tesla-a100",
            "acceleratorCount": 1,
        },
    ]
    line = one_line(
        refused("dev", regions=["us-east4"], nodePools=pools, workloads=workloads, cost=None),
        "signal-platform:cluster.zonal: no zone of us-east4 offers every GPU type",
    )
    assert "nvidia-l4 in us-east4-a, us-east4-c; nvidia-tesla-a100 in none" in line
    cluster = section("dev", "cluster")
    one_line(
        refused("dev", cluster={**cluster, "nodeZones": 3}),
        "signal-platform:cluster.nodeZones: a zonal cluster runs its nodes in its one zone",
    )
    # Regional (zonal false): the first nodeZones zones, GPU pools in every zone with the GPU.
    regional = load("prod").region("us-east4")
    assert regional.zone is None and regional.location == "us-east4"
    assert regional.node_zones == ("us-east4-a", "us-east4-b", "us-east4-c")
    assert regional.gpu_zones("nvidia-l4") == ("us-east4-a", "us-east4-c")


def test_every_pod_the_program_sizes_sets_its_requests_and_memory_limit():
    lines = refused("dev", mesh={"cniResources": {"requests": {"cpu": "100m"}, "limits": {}}})
    one_line(lines, "signal-platform:mesh.cniResources.requests:", "requests lack memory")
    one_line(lines, "signal-platform:mesh.cniResources.limits:", "limits lack memory")
    adapter = {"metricsAdapterResources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {}}}
    one_line(refused("dev", cluster=adapter), "cluster.metricsAdapterResources.limits:")


# ---------------------------------------------------------------- once per problem


def test_a_problem_of_a_setting_regions_share_is_one_line_naming_them():
    # Two of prod's three regions share the Redis settings (europe-west4 overrides its own),
    # all three the cluster's: each problem once, naming the regions it applies to.
    redis = {**section("prod", "redis"), "replicaCount": 0}
    lines = refused("prod", redis=redis, mesh={"istioVersion": "1.28.1"})
    one_line(lines, "signal-platform:cluster.kubernetesMinorVersion:", "Istio 1.28.1")
    line = one_line(lines, "signal-platform:redis.replicaCount:")
    assert "prod Redis in us-central1, us-east4 needs a replica" in line
    override = section("prod", "regionOverrides")
    override["europe-west4"]["redis"]["replicaCount"] = 0
    lines = refused("prod", redis=redis, regionOverrides=override)
    one_line(lines, "signal-platform:redis.replicaCount:", "in us-central1, us-east4 needs")
    one_line(lines, "regionOverrides.europe-west4.redis.replicaCount:", "in europe-west4 needs")


# ---------------------------------------------------------------- what the cloud can carry


def _set(path: list[str | int], value: object) -> Callable[[Any], None]:
    def edit(section_value: Any) -> None:
        for part in path[:-1]:
            section_value = section_value[part]
        section_value[path[-1]] = value

    return edit


# (top-level key, path inside it, the first value past the limit, what the line allows).
LIMITS = [
    ("budget", ["monthlyUsd"], 1e308, "< 9223372036854775808 (2^63)"),  # int64 units
    ("nodePools", ["system", "diskSizeGb"], 99_999_999_999, "<= 65536"),  # boot disk
    ("nodePools", ["system", "maxNodes"], 1_001, "<= 1000"),  # per node pool zone
    ("nodePools", ["gpu", 0, "maxNodes"], 15_001, "<= 15000"),  # per cluster
    ("workloads", ["signalService", "maxReplicas"], 150_001, "<= 150000"),  # pods per cluster
    ("workloads", ["triton", "maxReplicas"], 150_001, "<= 150000"),
    ("bigquery", ["partitionExpirationDays"], 10_001, "<= 10000"),  # partitions per table
    ("pubsub", ["messageRetentionDays"], 32, "<= 31"),
    ("mesh", ["connectionPool", "maxRequestsPerConnection"], 2**31, "<= 2147483647"),
    ("mesh", ["api", "timeout"], "999999999999s", "matching"),  # protobuf Duration seconds
    ("cost", ["bigqueryStorageGib"], 1e308, "<= 1073741824"),  # usage no bill shows
    ("cost", ["signalsPerMonth"], 10**30, "<= 1000000000000000"),
]


@pytest.mark.parametrize(("key", "path", "value", "allowed"), LIMITS)
def test_values_beyond_what_the_cloud_carries_are_refused(key, path, value, allowed):
    if key in ("mesh", "bigquery", "pubsub"):
        base: dict = {}
        _set(path, value)(_nested(base, path))
    else:
        base = edited("dev", key, _set(path, value))
    lines = refused("dev", **{key: base})
    dotted = ".".join(f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "[")
    line = one_line(lines, f"signal-platform:{key}.{dotted}:")
    assert f"; allowed: {allowed}" in line


def _nested(base: dict, path: list[str | int]) -> dict:
    """``base`` with the mappings ``path`` goes through (to set its last key in)."""
    here = base
    for part in path[:-1]:
        here = here.setdefault(part, {})
    return base


def test_the_limits_themselves_are_accepted():
    pools = edited("dev", "nodePools", _set(["system", "diskSizeGb"], 65_536))
    assert load("dev", nodePools=pools).node_pools.system.disk_size_gb == 65_536
    assert load("dev", pubsub={"messageRetentionDays": 31}).pubsub.message_retention_days == 31
    days = load("dev", bigquery={"partitionExpirationDays": 10_000})
    assert days.bigquery.partition_expiration_days == 10_000
