"""Preview semantics on programs in the style of Pulumi's public GCP examples (fixtures/).

What a provider computes is unknown, `.apply` callbacks on unknowns do not run, exports built
from unknowns are unknown (never dropped, never None), inputs the program knows stay exact,
values a provider derives from the inputs stay known, and each package's default provider is
registered with the stack's config and referenced by the resources that use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.engine import plan
from tools.inventory import SECRET, UNKNOWN, Inventory, Resource, provider_urn

FIXTURES = Path(__file__).resolve().parent / "fixtures"
UNKNOWN_ID = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's wire sentinel for unknowns


@pytest.fixture(scope="module")
def cloudrun() -> Inventory:
    return plan(FIXTURES / "cloudrun_sql", "test")


@pytest.fixture(scope="module")
def gke() -> Inventory:
    return plan(FIXTURES / "gke_canary", "test")


@pytest.fixture(scope="module")
def functions() -> Inventory:
    return plan(FIXTURES / "functions", "test")


def test_cloud_run_url_and_connection_name_are_unknown_not_dropped(cloudrun: Inventory):
    # `statuses[0].url` and `connection_name` come from the cloud: the exports exist, unknown.
    assert cloudrun.outputs["url"] == UNKNOWN
    assert cloudrun.outputs["connectionName"] == UNKNOWN
    # Known inputs stay exact.
    assert cloudrun.outputs["image"] == "us-docker.pkg.dev/cloudrun/container/hello"
    service = cloudrun.named("gcp:cloudrun/service:Service", "api")
    annotations = service.inputs["template"]["metadata"]["annotations"]
    assert annotations["run.googleapis.com/cloudsql-instances"] == UNKNOWN
    container = service.inputs["template"]["spec"]["containers"][0]
    assert container["image"] == "us-docker.pkg.dev/cloudrun/container/hello"


def test_an_auto_named_resource_has_an_unknown_name(cloudrun: Inventory):
    # The instance has no `name`: the provider generates one, unknown until it exists.
    database = cloudrun.named("gcp:sql/database:Database", "app")
    assert database.inputs["instance"] == UNKNOWN


def test_kubeconfig_from_endpoint_and_ca_is_unknown_and_its_apply_never_ran(gke: Inventory):
    # The program's kubeconfig() would raise on None; in a preview it does not run at all.
    assert gke.outputs["kubeconfig"] == UNKNOWN
    (provider,) = gke.of_type("pulumi:providers:kubernetes")
    assert provider.name == "gke"
    assert provider.inputs["kubeconfig"] == UNKNOWN
    # `status.load_balancer.ingress[0].ip` would raise AttributeError on None.
    assert gke.outputs["ip"] == UNKNOWN


def test_resources_on_an_explicit_provider_reference_it(gke: Inventory):
    (provider,) = gke.of_type("pulumi:providers:kubernetes")
    deployment = gke.named("kubernetes:apps/v1:Deployment", "canary")
    assert deployment.provider == f"{provider.urn}::{UNKNOWN_ID}"
    assert deployment.inputs["spec"]["replicas"] == 2  # from config: known and exact
    # The namespace's name was given, so the echoed metadata.name is known.
    assert deployment.inputs["metadata"]["namespace"] == "canary"


def test_invokes_answer_from_the_provider_config(gke: Inventory):
    cluster = gke.named("gcp:container/cluster:Cluster", "canary")
    assert cluster.inputs["minMasterVersion"].endswith("-gke.1172000")
    # No name given: auto-named, so the id built from it is unknown.
    assert gke.outputs["clusterId"] == UNKNOWN


def test_nested_computed_fields_are_unknown(functions: Inventory):
    # serviceConfig is an input block; its `uri` is computed: unknown, not None.
    assert functions.outputs["urlV2"] == UNKNOWN
    assert functions.outputs["url"] == UNKNOWN
    # A bucket's URL is derived from its name: known.
    assert functions.outputs["bucketUrl"] == "gs://functions-test-source"


@pytest.mark.parametrize(
    ("fixture", "package", "inputs"),
    [
        (
            "cloudrun_sql",
            "gcp",
            {
                "project": "cloudrun-sql-test",
                "region": "us-central1",
                "defaultLabels": {"team": "payments", "env": "test"},
                "version": "10.2.0",
            },
        ),
        ("gke_canary", "gcp", {"project": "gke-canary-test", "zone": "europe-west4-a"}),
    ],
)
def test_default_provider_is_registered_with_the_stack_config(
    fixture: str, package: str, inputs: dict
):
    inventory = plan(FIXTURES / fixture, "test")
    (default,) = [
        r for r in inventory.of_type(f"pulumi:providers:{package}") if r.name.startswith("default")
    ]
    assert default.name == "default_10_2_0"
    assert (
        default.urn == f"urn:pulumi:test::{inventory.project}::pulumi:providers:gcp::default_10_2_0"
    )
    assert default.parent is None
    assert inputs.items() <= default.inputs.items()
    users = [r for r in inventory.resources if r.type.startswith("gcp:")]
    assert users and all(provider_urn(r.provider) == default.urn for r in users)


def test_default_provider_region_is_the_effective_region(functions: Inventory, cloudrun: Inventory):
    # The 1st-gen function names no region: it runs in gcp:region, not "global".
    regions = functions.regions()
    assert regions[functions.named("gcp:cloudfunctions/function:Function", "hello").urn] == (
        "me-central2"
    )
    # A bucket with a multi-region location is global, whatever the provider's region.
    assert regions[functions.named("gcp:storage/bucket:Bucket", "source").urn] is None
    sql = cloudrun.named("gcp:sql/databaseInstance:DatabaseInstance", "db")
    assert cloudrun.regions()[sql.urn] == "us-central1"


def test_the_summary_counts_default_placed_resources_in_their_region(functions: Inventory):
    lines = functions.summary().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("region"))
    end = lines.index("", start)
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[start + 1 : end]}
    # The two functions and the invoker grant sit in me-central2; bucket and object are
    # global; providers are not counted (they exist nowhere in the cloud).
    assert counts == {"me-central2": 3, "global": 2}


def test_secrets_are_masked_with_their_paths_kept(cloudrun: Inventory):
    user = cloudrun.named("gcp:sql/user:User", "app")
    assert user.inputs["password"] == SECRET and user.secrets == ("password",)
    service = cloudrun.named("gcp:cloudrun/service:Service", "api")
    path = "template.spec.containers[0].envs[0].value"
    assert path in service.secrets
    assert service.inputs["template"]["spec"]["containers"][0]["envs"][0]["value"] == SECRET
    assert cloudrun.outputs["databaseUrl"] == SECRET
    text = json.dumps(cloudrun.to_json())
    assert "correct-horse-battery-staple" not in text


def test_our_stacks_keep_deterministic_values_known(dev_plan: Inventory):
    # Service account emails and KMS key paths are derived from inputs: known, as on a stack
    # whose resources exist.
    emails = dev_plan.outputs["serviceAccounts"]
    assert emails and all(
        e.endswith("@signal-platform-dev.iam.gserviceaccount.com") for e in emails.values()
    )
    keys = [
        r.inputs["kmsKeyName"]
        for r in dev_plan.of_type("gcp:pubsub/topic:Topic")
        if "kmsKeyName" in r.inputs
    ]
    assert keys and all(k.startswith("projects/signal-platform-dev/locations/") for k in keys)
    assert all("/cryptoKeys/" in k for k in keys)
    assert dev_plan.outputs["modelBucket"].startswith("gs://")
    assert dev_plan.outputs["network"] == "projects/signal-platform-dev/global/networks/signal-vpc"


def test_a_location_in_capitals_is_its_region():
    # Cloud Storage examples write regional locations in capitals ("ASIA-SOUTH1"); the bucket
    # lives in asia-south1, as the pack's region rules read it, not "global".
    bucket = Resource(
        "gcp:storage/bucket:Bucket",
        "b",
        "urn:pulumi:s::p::gcp:storage/bucket:Bucket::b",
        None,
        None,
        {"location": "ASIA-SOUTH1"},
    )
    assert Inventory("s", "p", [bucket]).regions() == {bucket.urn: "asia-south1"}


def test_project_and_region_a_resource_omits_are_its_providers(tmp_path: Path):
    # The Google provider plans a resource's project and (where it takes one) region from its
    # own configuration, so both are known in a preview and flow into what reads them.
    (tmp_path / "Pulumi.yaml").write_text("name: defaults\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text(
        "config:\n  gcp:project: acme-dev\n  gcp:region: europe-west1\n"
    )
    (tmp_path / "__main__.py").write_text(
        "import pulumi\nimport pulumi_gcp as gcp\n"
        "sub = gcp.compute.Subnetwork('s', name='s', network='default',"
        " ip_cidr_range='10.0.0.0/24')\n"
        "gcp.projects.IAMMember('m', project=sub.project, role='roles/viewer',"
        " member='user:ops@example.com')\n"
        "bucket = gcp.storage.Bucket('b', name='b-acme', location='EU', project='other')\n"
        "pulumi.export('where', pulumi.Output.all(sub.project, sub.region, bucket.project))\n"
    )
    inventory = plan(tmp_path, "dev")
    assert inventory.outputs["where"] == ["acme-dev", "europe-west1", "other"]
    assert inventory.named("gcp:projects/iAMMember:IAMMember", "m").inputs["project"] == "acme-dev"


def test_a_secret_manager_secret_id_is_known_and_reaches_its_versions(tmp_path: Path):
    # projects/P/secrets/ID, as the provider builds it from the inputs: a version's `secret`
    # names it in a preview, as on a stack whose secret exists.
    (tmp_path / "Pulumi.yaml").write_text("name: sm\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  gcp:project: acme-dev\n")
    (tmp_path / "__main__.py").write_text(
        "import pulumi_gcp as gcp\n"
        "secret = gcp.secretmanager.Secret('s', secret_id='db-url', replication={'auto': {}})\n"
        "gcp.secretmanager.SecretVersion('v', secret=secret.id, secret_data='x')\n"
    )
    inventory = plan(tmp_path, "dev")
    version = inventory.named("gcp:secretmanager/secretVersion:SecretVersion", "v")
    assert version.inputs["secret"] == "projects/acme-dev/secrets/db-url"


def test_kubernetes_objects_are_placed_where_their_provider_s_cluster_is(gke: Inventory):
    # The provider is built from the cluster's endpoint: its objects run in the cluster's
    # region (the provider's zone's), not "global".
    regions = gke.regions()
    for resource in gke.resources:
        if resource.type.startswith("kubernetes:"):
            assert regions[resource.urn] == "europe-west4", resource.urn
