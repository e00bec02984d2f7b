"""The Analyzer-protocol client: how it launches the pack, what it sends, how config reconciles."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import grpc
import pytest
from pulumi.runtime import rpc
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc

from tests.policies.cases import COST_LABELS, UNKNOWN, mutate, resource, urn
from tests.policies.pack_process import shared_pack
from tests.policies.test_gke import GOLDEN as CLUSTER
from tools import engine
from tools.analyzer import (
    POLICY_PACK_DIR,
    POLICY_README,
    UNKNOWN_WIRE,
    AnalyzerError,
    AnalyzerResource,
    PackProject,
    PolicyConfigError,
    PolicyPackProcess,
    launch_command,
    load_policy_config,
    reconcile_policy_config,
)
from tools.inventory import Resource

CLUSTER_TYPE = "gcp:container/cluster:Cluster"
TOPIC = "gcp:pubsub/topic:Topic"
KEY = "gcp:kms/cryptoKey:CryptoKey"


@pytest.fixture
def pack(request: pytest.FixtureRequest) -> PolicyPackProcess:
    process = shared_pack(request)
    process.configure({})
    return process


def test_launches_the_pack_as_the_engine_plugin_does(pack: PolicyPackProcess) -> None:
    project = PackProject.load(POLICY_PACK_DIR)
    assert project.python == POLICY_PACK_DIR / "venv" / "bin" / "python"
    engine_address = pack.argv[4]
    assert pack.argv == [str(project.python), "-u", "-m", "pulumi.policy", engine_address, "."]
    assert launch_command(project, "127.0.0.1:1") == [
        str(project.python), "-u", "-m", "pulumi.policy", "127.0.0.1:1", ".",
    ]  # fmt: skip
    assert pack.pid is not None
    proc = Path("/proc") / str(pack.pid)
    assert Path(os.readlink(proc / "cwd")) == POLICY_PACK_DIR
    environ = dict(
        line.split("=", 1) for line in (proc / "environ").read_text().split("\0") if "=" in line
    )
    assert environ["PULUMI_PROJECT"] == "signal-platform"
    assert environ["PULUMI_STACK"] == "test"
    assert environ["PULUMI_DRY_RUN"] == "true"
    assert environ["PATH"].startswith(f"{project.python.parent}{os.pathsep}")
    assert "PYTHONPATH" not in environ and "PYTHONHOME" not in environ


def test_engine_address_is_a_live_engine_that_keeps_logs(pack: PolicyPackProcess) -> None:
    with grpc.insecure_channel(pack.argv[4]) as channel:
        engine_pb2_grpc.EngineStub(channel).Log(
            engine_pb2.LogRequest(severity=engine_pb2.INFO, message="hello from a plugin"),
            timeout=10,
        )
    assert "hello from a plugin" in pack.engine_logs.messages


def test_analyzer_info(pack: PolicyPackProcess) -> None:
    info = pack.info()
    assert info.name == "signal-platform"
    assert info.version == "0.1.0"  # PulumiPolicy.yaml's, not the SDK's 0.0.1
    gpu = info.policy("nodepool-gpu-max-nodes")
    assert gpu.kind == "resource" and gpu.level == "mandatory"
    assert gpu.config_defaults() == {"maxGpuNodes": 8}  # ints survive the Struct round trip
    assert info.policy("stack-deployment-pdb").kind == "stack"
    with pytest.raises(KeyError, match="no policy 'nope'"):
        info.policy("nope")


def test_unknown_markers_reach_the_pack_as_unknowns(pack: PolicyPackProcess) -> None:
    assert engine.UNKNOWN_MARK == UNKNOWN == "[unknown]"
    assert rpc.UNKNOWN == UNKNOWN_WIRE
    inputs = mutate(CLUSTER, {"privateClusterConfig": UNKNOWN, "workloadIdentityConfig": UNKNOWN})
    assert pack.analyze(resource(CLUSTER_TYPE, inputs)) == []
    # A literal string that merely looks odd is a value, not an unknown.
    inputs = mutate(CLUSTER, {"workloadIdentityConfig.workloadPool": "[unknown"})
    assert [v.policy for v in pack.analyze(resource(CLUSTER_TYPE, inputs))] == [
        "gke-workload-identity"
    ]


def test_resource_violations_carry_the_resource_urn(pack: PolicyPackProcess) -> None:
    (violation,) = pack.analyze(resource(CLUSTER_TYPE, mutate(CLUSTER, {"enableLegacyAbac": True})))
    assert violation.policy == "gke-no-legacy-abac"
    assert violation.urn == urn(CLUSTER_TYPE, "subject")
    assert violation.message == "enableLegacyAbac is true: legacy ABAC bypasses RBAC"
    assert violation.description.startswith("Legacy ABAC authorization is disabled.")


def test_enforcement_overrides(pack: PolicyPackProcess) -> None:
    public = resource(CLUSTER_TYPE, mutate(CLUSTER, {"privateClusterConfig": {}}))
    pack.configure({"gke-private-nodes": "advisory"})
    assert [(v.policy, v.level) for v in pack.analyze(public)] == [
        ("gke-private-nodes", "advisory")
    ]
    pack.configure({"all": "disabled"})
    assert pack.analyze(public) == []
    pack.configure({"all": "disabled", "gke-private-nodes": {"enforcementLevel": "mandatory"}})
    assert [(v.policy, v.level) for v in pack.analyze(public)] == [
        ("gke-private-nodes", "mandatory")
    ]
    pack.configure({})
    assert [v.level for v in pack.analyze(public)] == ["mandatory"]


def test_reconcile_fills_defaults_then_all_then_each(pack: PolicyPackProcess) -> None:
    policies = pack.info().policies
    config = reconcile_policy_config(
        policies,
        {
            "all": "advisory",
            "nodepool-gpu-max-nodes": {"enforcementLevel": "mandatory", "maxGpuNodes": 4},
        },
    )
    assert config["nodepool-gpu-max-nodes"] == ("mandatory", {"maxGpuNodes": 4})
    assert config["gke-release-channel"] == ("advisory", {"allowedChannels": ["REGULAR", "STABLE"]})
    assert set(config) == {p.name for p in policies}
    assert reconcile_policy_config(policies, None)["gke-private-nodes"] == ("mandatory", {})


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"gke-privat-nodes": "advisory"}, "unknown policies: gke-privat-nodes"),
        ({"gke-private-nodes": "sometimes"}, "'sometimes' is not one of advisory, mandatory"),
        ({"gke-private-nodes": 3}, "must be an enforcement level or an object"),
        ({"nodepool-gpu-max-nodes": {"maxGpuNodes": -1}}, "nodepool-gpu-max-nodes.maxGpuNodes: -1"),
        (
            {"gke-release-channel": {"allowedChannels": ["NIGHTLY"]}},
            "gke-release-channel.allowedChannels.0",
        ),
        ({"gke-private-nodes": {"strict": True}}, "gke-private-nodes: takes no configuration"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_invalid_policy_config_names_the_key(
    pack: PolicyPackProcess, config: object, error: str
) -> None:
    with pytest.raises(PolicyConfigError, match=error.replace("(", r"\(").replace(".", r"\.")):
        pack.configure(config)  # type: ignore[arg-type]


def test_policy_config_files(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"all": "advisory"}')
    assert load_policy_config(path) == {"all": "advisory"}
    path.write_text("  \n")
    assert load_policy_config(path) == {}
    path.write_text("{all: advisory}")
    with pytest.raises(PolicyConfigError, match=r"config\.json: not JSON"):
        load_policy_config(path)
    with pytest.raises(PolicyConfigError, match="No such file"):
        load_policy_config(tmp_path / "missing.json")


def test_readme_config_example_is_valid(pack: PolicyPackProcess) -> None:
    readme = POLICY_README.read_text()
    example = readme.split("```json\n", 1)[1].split("```", 1)[0]
    reconciled = pack.configure(json.loads(example))
    assert reconciled["nodepool-gpu-max-nodes"] == ("mandatory", {"maxGpuNodes": 12})
    assert reconciled["gke-security-posture"][0] == "advisory"


def test_a_rule_that_crashes_fails_closed_alone(pack: PolicyPackProcess) -> None:
    """Config the schema forbids (an engine that skipped validation) makes one rule raise: the
    failure is a violation of that rule at its level, and the other rules still run."""
    config = reconcile_policy_config(pack.info().policies, {})
    config["gke-release-channel"] = ("mandatory", {"allowedChannels": 5})
    pack.send_config(config)
    found = pack.analyze(resource(CLUSTER_TYPE, mutate(CLUSTER, {"enableLegacyAbac": True})))
    assert {v.policy: v.level for v in found} == {
        "gke-release-channel": "mandatory",
        "gke-no-legacy-abac": "mandatory",
    }
    crash = next(v for v in found if v.policy == "gke-release-channel")
    assert crash.message.startswith("internal error in rule gke-release-channel: TypeError")


def without_apply_order(pack: PolicyPackProcess) -> None:
    """Protocol tests send a few resources, not a whole stack: the apply-order stack rules
    (which ask for every API, agent and grant a real stack declares) stay out of them."""
    pack.configure({p.name: "disabled" for p in pack.info().policies if "apply-order" in p.tags})


def test_analyze_all_resolves_providers_and_options(pack: PolicyPackProcess) -> None:
    """Inventory resources (tools.inventory.Resource) carry their provider as a reference
    `urn::id` and their options; the client sends the provider's inputs and `protect`."""
    without_apply_order(pack)
    provider_urn = urn("pulumi:providers:gcp", "gcp")
    provider = Resource(
        type="pulumi:providers:gcp",
        name="gcp",
        urn=provider_urn,
        parent=None,
        provider=None,
        inputs={"project": "signal-test", "region": "us-central1", "defaultLabels": COST_LABELS},
    )
    topic_inputs = {
        "name": "signals",
        "kmsKeyName": "projects/p/locations/l/keyRings/r/cryptoKeys/k",
    }
    topic = Resource(
        TOPIC, "signals", urn(TOPIC, "signals"), None, f"{provider_urn}::a1b2", topic_inputs
    )
    orphan = Resource(TOPIC, "orphan", urn(TOPIC, "orphan"), None, None, topic_inputs)
    key_inputs = {"name": "k", "keyRing": "r", "rotationPeriod": "7776000s", "labels": COST_LABELS}
    key = Resource(KEY, "k", urn(KEY, "k"), None, None, key_inputs, options={"protect": True})
    analysis = pack.analyze_all([provider, topic, orphan, key])
    assert analysis.resources == 4
    assert analysis.policies == len(pack.info().policies)
    assert [(v.policy, v.urn) for v in analysis.violations] == [
        ("cost-required-labels", urn(TOPIC, "orphan"))
    ]


def test_analysis_sorts_mandatory_first(pack: PolicyPackProcess) -> None:
    without_apply_order(pack)
    cluster = AnalyzerResource(
        CLUSTER_TYPE,
        "c",
        urn(CLUSTER_TYPE, "c"),
        mutate(CLUSTER, {"enableIntranodeVisibility": False, "enableLegacyAbac": True}),
    )
    analysis = pack.analyze_all([cluster])
    assert [(v.level, v.policy) for v in analysis.violations] == [
        ("mandatory", "gke-no-legacy-abac"),
        ("mandatory", "stack-cluster-system-pool"),  # AnalyzeStack: a cluster without node pools
        ("advisory", "gke-intranode-visibility"),
    ]
    assert list(analysis.by_level()) == ["mandatory", "advisory"]
    assert len(analysis.mandatory) == 2


def test_inventory_resources_need_type_name_and_urn() -> None:
    with pytest.raises(AnalyzerError, match="has no urn"):
        AnalyzerResource.of({"type": TOPIC, "name": "t", "inputs": {}})


def _pack_dir(tmp_path: Path, main: str, virtualenv: str | None = None) -> Path:
    venv = virtualenv or str(POLICY_PACK_DIR / "venv")
    (tmp_path / "PulumiPolicy.yaml").write_text(
        f"runtime:\n  name: python\n  options:\n    virtualenv: {venv}\nversion: 9.9.9\n"
    )
    (tmp_path / "__main__.py").write_text(textwrap.dedent(main))
    return tmp_path


def test_a_pack_that_fails_to_start_reports_its_error(tmp_path: Path) -> None:
    pack_dir = _pack_dir(tmp_path, "raise RuntimeError('rules module is broken')\n")
    process = PolicyPackProcess(pack_dir, project="p", stack="s", startup_timeout=30)
    with pytest.raises(
        AnalyzerError, match=r"exited with 1 before reporting its port(.|\n)*rules module is broken"
    ):
        process.start()
    assert not process.alive()


def test_a_missing_virtualenv_says_how_to_create_it(tmp_path: Path) -> None:
    pack_dir = _pack_dir(tmp_path, "", virtualenv="no-such-venv")
    with pytest.raises(AnalyzerError, match="make setup"):
        PolicyPackProcess(pack_dir, project="p", stack="s")
    with pytest.raises(AnalyzerError, match=r"no PulumiPolicy\.yaml"):
        PolicyPackProcess(tmp_path / "nowhere", project="p", stack="s")


def test_close_stops_the_process_it_started() -> None:
    with PolicyPackProcess(project="signal-platform", stack="close-test") as process:
        pid = process.pid
        assert process.alive() and pid is not None
        assert len(process.info().policies) >= 50
    assert not process.alive()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    with pytest.raises(AnalyzerError, match="not running"):
        process.analyze(resource(TOPIC, {}))


def test_analyze_stack_sends_each_resources_provider(pack: PolicyPackProcess) -> None:
    """AnalyzeStack carries every resource's provider, as Analyze does: a Deployment with no
    namespace of its own lands in its Kubernetes provider's default namespace."""
    without_apply_order(pack)
    provider_urn = urn("pulumi:providers:kubernetes", "trading-cluster")
    provider = Resource(
        "pulumi:providers:kubernetes", "trading-cluster", provider_urn, None, None,
        {"namespace": "trading"},
    )  # fmt: skip
    deployment_type = "kubernetes:apps/v1:Deployment"
    deployment = Resource(
        deployment_type, "api", urn(deployment_type, "api"), None, f"{provider_urn}::id",
        {"metadata": {"name": "api"}, "spec": {"template": {"spec": {"containers": []}}}},
    )  # fmt: skip
    found = pack.analyze_stack([provider, deployment])
    messages = [v.message for v in found if v.policy == "stack-namespace-network-policy"]
    assert messages == [
        "namespace trading has no NetworkPolicy selecting all its pods (podSelector: {})"
    ]
