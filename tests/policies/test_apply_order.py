"""Apply-order rules through the real pack: a golden stack that `pulumi up` could apply in one go
(APIs → service agents → key grants → key users; cluster → identity-pool grants; PSC policy →
Redis; control-plane firewall open to every backend), and one change per violation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from tests.policies.cases import (
    K8S_PROVIDER,
    UNKNOWN,
    Case,
    StackCase,
    assert_case,
    assert_stack_case,
    bad,
    mutate,
    ok,
    resource,
)
from tests.policies.test_kubernetes import GOLDEN as DEPLOYMENT_INPUTS
from tools.analyzer import AnalyzerResource, PolicyPackProcess

LEVELS = {
    "apply-service-agent-exists": "mandatory",
    "apply-cmek-grant": "mandatory",
    "apply-api-enabled": "mandatory",
    "apply-workload-identity-pool": "mandatory",
    "apply-image-registry": "mandatory",
    "apply-control-plane-ports": "mandatory",
    "apply-slo-counts-requests": "mandatory",
    "apply-deprecated-value": "mandatory",
    "apply-redis-psc-policy": "mandatory",
    "apply-billing-budget": "advisory",
    "apply-bootstrap-apis": "advisory",
}

STACK = "pulumi:pulumi:Stack"
SERVICE = "gcp:projects/service:Service"
IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
KEY = "gcp:kms/cryptoKey:CryptoKey"
KEY_GRANT = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
BUCKET = "gcp:storage/bucket:Bucket"
PSC = "gcp:networkconnectivity/serviceConnectionPolicy:ServiceConnectionPolicy"
REDIS = "gcp:redis/cluster:Cluster"
SA_GRANT = "gcp:serviceaccount/iAMMember:IAMMember"
FIREWALL = "gcp:compute/firewall:Firewall"
API_SERVICE = "kubernetes:apiregistration.k8s.io/v1:APIService"
K8S_SERVICE = "kubernetes:core/v1:Service"
HELM = "kubernetes:helm.sh/v3:Release"
SLO = "gcp:monitoring/slo:Slo"
LOG_METRIC = "gcp:logging/metric:Metric"
BUDGET = "gcp:billing/budget:Budget"
COMPONENT = "signal:test:Store"
PROJECT_GRANT = "gcp:projects/iAMMember:IAMMember"

PROJECT = "signal-test"
NUMBER = "123456789012"
POOL = f"{PROJECT}.svc.id.goog"
RING = f"projects/{PROJECT}/locations/us-central1/keyRings/ring"
NETWORK = f"projects/{PROJECT}/global/networks/vpc"
MASTER_CIDR = "172.16.0.0/28"
ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
APIS = (
    "container",
    "compute",
    "cloudkms",
    "storage",
    "redis",
    "networkconnectivity",
    "iam",
    "monitoring",
    "billingbudgets",
    "binaryauthorization",
    "containersecurity",
    "serviceconsumermanagement",
)


def agent(domain: str, prefix: str = "service-") -> str:
    return f"serviceAccount:{prefix}{NUMBER}@{domain}.iam.gserviceaccount.com"


def api(name: str) -> AnalyzerResource:
    return resource(
        SERVICE, {"project": PROJECT, "service": f"{name}.googleapis.com"}, f"api-{name}"
    )


def key(name: str) -> AnalyzerResource:
    return resource(
        KEY, {"name": name, "keyRing": RING}, f"key-{name}", dependencies=[api("cloudkms").urn]
    )


def key_id(name: str) -> str:
    return f"{RING}/cryptoKeys/{name}"


def grant(name: str, member: Any, *, after: Iterable[str] = ()) -> AnalyzerResource:
    inputs = {"cryptoKeyId": key_id(name), "role": ENCRYPTER, "member": member}
    return resource(KEY_GRANT, inputs, f"grant-{name}", dependencies=[key(name).urn, *after])


REDIS_IDENTITY = resource(
    IDENTITY,
    {"project": PROJECT, "service": "redis.googleapis.com"},
    "redis-agent",
    dependencies=[api("redis").urn],
)
GRANTS = {
    "secrets": grant("secrets", agent("container-engine-robot"), after=[api("container").urn]),
    "disks": grant("disks", agent("compute-system"), after=[api("compute").urn]),
    "redis": grant("redis", agent("cloud-redis"), after=[REDIS_IDENTITY.urn]),
    "bucket": grant("bucket", agent("gs-project-accounts"), after=[api("storage").urn]),
}
CLUSTER_INPUTS = {
    "name": "c1",
    "location": "us-central1",
    "network": NETWORK,
    "privateClusterConfig": {"enablePrivateNodes": True, "masterIpv4CidrBlock": MASTER_CIDR},
    "workloadIdentityConfig": {"workloadPool": POOL},
    "databaseEncryption": {"state": "ENCRYPTED", "keyName": key_id("secrets")},
    "nodeConfig": {"bootDiskKmsKey": key_id("disks"), "imageType": "COS_CONTAINERD"},
    "binaryAuthorization": {"evaluationMode": "PROJECT_SINGLETON_POLICY_ENFORCE"},
    "securityPostureConfig": {"mode": "BASIC", "vulnerabilityMode": "VULNERABILITY_DISABLED"},
    "monitoringConfig": {"enableComponents": ["SYSTEM_COMPONENTS", "DCGM"]},
}
CLUSTER_APIS = ("container", "binaryauthorization", "containersecurity")
CLUSTER_RESOURCE = resource(
    CLUSTER,
    CLUSTER_INPUTS,
    "cluster",
    dependencies=[GRANTS["secrets"].urn, GRANTS["disks"].urn, *(api(a).urn for a in CLUSTER_APIS)],
)
# The bucket waits for its grant through its parent component, as a child does.
STORE = resource(COMPONENT, {}, "store", dependencies=[GRANTS["bucket"].urn, api("storage").urn])
BUCKET_RESOURCE = resource(
    BUCKET,
    {"name": "models", "location": "US", "encryption": {"defaultKmsKeyName": key_id("bucket")}},
    "bucket",
    parent=STORE.urn,
)
PSC_RESOURCE = resource(
    PSC,
    {"location": "us-central1", "serviceClass": "gcp-memorystore-redis", "network": NETWORK},
    "psc",
    dependencies=[api("networkconnectivity").urn, api("serviceconsumermanagement").urn],
)
REDIS_INPUTS = {
    "name": "cache",
    "region": "us-central1",
    "kmsKey": key_id("redis"),
    "pscConfigs": [{"network": NETWORK}],
}
REDIS_DEPENDENCIES = (
    GRANTS["redis"].urn,
    PSC_RESOURCE.urn,
    api("redis").urn,
    api("serviceconsumermanagement").urn,
)
WI_BINDING = resource(
    SA_GRANT,
    {
        "serviceAccountId": f"projects/{PROJECT}/serviceAccounts/app@{PROJECT}.iam.gserviceaccount.com",
        "role": "roles/iam.workloadIdentityUser",
        "member": f"serviceAccount:{POOL}[signals/app]",
    },
    "wi-binding",
    dependencies=[CLUSTER_RESOURCE.urn, api("iam").urn],
)
# A project-level grant: its API (Resource Manager) is a bootstrap prerequisite, never the stack's.
PROJECT_GRANT_INPUTS = {
    "project": PROJECT,
    "role": "roles/viewer",
    "member": f"serviceAccount:ci@{PROJECT}.iam.gserviceaccount.com",
}
FIREWALL_INPUTS = {
    "network": NETWORK,
    "direction": "INGRESS",
    "sourceRanges": [MASTER_CIDR],
    "allows": [{"protocol": "tcp", "ports": ["10250", "6443", "15017"]}],
}
FIREWALL_RESOURCE = resource(
    FIREWALL, FIREWALL_INPUTS, "allow-control-plane", dependencies=[api("compute").urn]
)
ADAPTER_SERVICE = {
    "metadata": {"name": "adapter", "namespace": "custom-metrics"},
    "spec": {"selector": {"app": "adapter"}, "ports": [{"port": 443, "targetPort": 6443}]},
}
API_SERVICE_INPUTS = {
    "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
    "spec": {
        "group": "external.metrics.k8s.io",
        "version": "v1beta1",
        "service": {"name": "adapter", "namespace": "custom-metrics"},
    },
}
COUNTER = 'metric.type="prometheus.googleapis.com/requests_total/counter" resource.type="prometheus_target"'
SLO_INPUTS = {
    "service": "api",
    "sloId": "availability",
    "goal": 0.999,
    "requestBasedSli": {
        "goodTotalRatio": {
            "totalServiceFilter": COUNTER,
            "badServiceFilter": f'{COUNTER} metric.labels.code="INTERNAL"',
        }
    },
}


def golden(**replace: AnalyzerResource | None) -> tuple[AnalyzerResource, ...]:
    """The golden stack; `replace` swaps (or with None drops) one part by its key."""
    parts: dict[str, AnalyzerResource | None] = {
        "root": resource(STACK, {}, "signal-test"),
        **{f"api-{name}": api(name) for name in APIS},
        "redis-agent": REDIS_IDENTITY,
        **{f"key-{name}": key(name) for name in GRANTS},
        **{f"grant-{name}": g for name, g in GRANTS.items()},
        "cluster": CLUSTER_RESOURCE,
        "store": STORE,
        "bucket": BUCKET_RESOURCE,
        "psc": PSC_RESOURCE,
        "redis": resource(REDIS, REDIS_INPUTS, "cache", dependencies=REDIS_DEPENDENCIES),
        "wi-binding": WI_BINDING,
        "firewall": FIREWALL_RESOURCE,
        "adapter-service": resource(K8S_SERVICE, ADAPTER_SERVICE, "adapter-service"),
        "api-service": resource(API_SERVICE, API_SERVICE_INPUTS, "api-service"),
        "istiod": resource(HELM, {"chart": "istiod", "namespace": "istio-system"}, "istiod"),
        "slo": resource(SLO, SLO_INPUTS, "slo", dependencies=[api("monitoring").urn]),
        "budget": resource(
            BUDGET,
            {"billingAccount": "01A2B3-C4D5E6-F7A8B9"},
            "budget",
            dependencies=[api("billingbudgets").urn],
        ),
    }
    parts.update(replace)
    return tuple(r for r in parts.values() if r is not None)


def with_deps(
    base: AnalyzerResource, dependencies: Iterable[str], **changes: Any
) -> AnalyzerResource:
    return dataclasses.replace(base, dependencies=tuple(dependencies), **changes)


def without(base: AnalyzerResource, *urns: str) -> AnalyzerResource:
    return with_deps(base, [d for d in base.dependencies if d not in urns])


def inputs(base: AnalyzerResource, changes: Mapping[Any, Any]) -> AnalyzerResource:
    return dataclasses.replace(base, inputs=mutate(base.inputs, changes))


def case(policy: str, label: str, resources: tuple, expect: int = 0, **kw: Any) -> StackCase:
    return StackCase(policy, resources, expect, label, **kw)


STACK_RULES = [p for p in LEVELS if p not in ("apply-image-registry", "apply-deprecated-value")]
CLUSTER_URN = CLUSTER_RESOURCE.urn
REDIS_URN = resource(REDIS, REDIS_INPUTS, "cache").urn

# Preview: the key a resource names is unknown until its CryptoKey exists; property
# dependencies tell which key it is.
PREVIEW_CLUSTER = dataclasses.replace(
    inputs(CLUSTER_RESOURCE, {"databaseEncryption.keyName": UNKNOWN}),
    property_dependencies={"databaseEncryption": (key("secrets").urn,)},
)
PREVIEW_GRANT = dataclasses.replace(
    inputs(GRANTS["secrets"], {"cryptoKeyId": UNKNOWN}),
    property_dependencies={"cryptoKeyId": (key("secrets").urn,)},
)
# A data source's member, unknown until its API is on: it comes from that API's enablement.
PREVIEW_BUCKET_GRANT = inputs(GRANTS["bucket"], {"member": UNKNOWN})

# A second private cluster whose control plane the firewall does not cover: the backends matter
# to it only when they run on it (their Kubernetes provider is built from it).
SECOND_CLUSTER = resource(
    CLUSTER,
    mutate(
        CLUSTER_INPUTS, {"name": "c2", "privateClusterConfig.masterIpv4CidrBlock": "172.16.0.16/28"}
    ),
    "second",
    dependencies=CLUSTER_RESOURCE.dependencies,
)


def on_cluster(cluster: AnalyzerResource) -> dict[str, AnalyzerResource]:
    """The golden backends, declared through a Kubernetes provider built from `cluster`."""
    provider = resource(
        K8S_PROVIDER, {"kubeconfig": "apiVersion: v1"}, "k8s", dependencies=[cluster.urn]
    )
    ref = f"{provider.urn}::provider-id"
    return {
        "k8s": provider,
        "adapter-service": resource(K8S_SERVICE, ADAPTER_SERVICE, "adapter-service", provider=ref),
        "api-service": resource(API_SERVICE, API_SERVICE_INPUTS, "api-service", provider=ref),
        "istiod": resource(
            HELM, {"chart": "istiod", "namespace": "istio-system"}, "istiod", provider=ref
        ),
    }


ON_FIRST_CLUSTER = on_cluster(CLUSTER_RESOURCE)
ON_SECOND_CLUSTER = on_cluster(SECOND_CLUSTER)

STACK_CASES = [
    *[case(policy, "golden", golden()) for policy in STACK_RULES],
    # ---- apply-cmek-grant
    case(
        "apply-cmek-grant",
        "cluster-does-not-wait",
        golden(cluster=without(CLUSTER_RESOURCE, GRANTS["secrets"].urn)),
        1,
        urns=(CLUSTER_URN,),
        message="databaseEncryption.keyName names key",
    ),
    case(
        "apply-cmek-grant",
        "grant-to-the-wrong-agent",
        golden(**{"grant-secrets": inputs(GRANTS["secrets"], {"member": agent("compute-system")})}),
        1,
        urns=(CLUSTER_URN,),
        message="no container-engine-robot agent",
    ),
    case(
        "apply-cmek-grant",
        "grant-on-another-key",
        golden(**{"grant-disks": inputs(GRANTS["disks"], {"cryptoKeyId": key_id("secrets")})}),
        1,
        message="nodeConfig.bootDiskKmsKey",
    ),
    case(
        "apply-cmek-grant",
        "bucket-parent-does-not-wait",
        golden(store=without(STORE, GRANTS["bucket"].urn)),
        1,
        urns=(BUCKET_RESOURCE.urn,),
    ),
    case("apply-cmek-grant", "no-grant-at-all", golden(**{"grant-bucket": None}), 1),
    case(
        "apply-cmek-grant",
        "key-from-another-stack",
        golden(**{"grant-bucket": None, "key-bucket": None}),
    ),
    case(
        "apply-cmek-grant",
        "redis-does-not-wait",
        golden(redis=resource(REDIS, REDIS_INPUTS, "cache", dependencies=REDIS_DEPENDENCIES[1:])),
        1,
        urns=(REDIS_URN,),
    ),
    case(
        "apply-cmek-grant",
        "preview-keys-by-property-dependencies",
        golden(cluster=PREVIEW_CLUSTER, **{"grant-secrets": PREVIEW_GRANT}),
    ),
    case(
        "apply-cmek-grant",
        "preview-does-not-wait",
        golden(
            cluster=without(PREVIEW_CLUSTER, GRANTS["secrets"].urn),
            **{"grant-secrets": PREVIEW_GRANT},
        ),
        1,
    ),
    case(
        "apply-cmek-grant",
        "preview-data-source-member",
        golden(**{"grant-bucket": PREVIEW_BUCKET_GRANT}),
    ),
    case(
        "apply-cmek-grant",
        "preview-unknown-member-from-elsewhere",
        golden(**{"grant-bucket": without(PREVIEW_BUCKET_GRANT, api("storage").urn)}),
        1,
    ),
    # ---- apply-api-enabled
    case(
        "apply-api-enabled",
        "binary-authorization-not-enabled",
        golden(**{"api-binaryauthorization": None}),
        1,
        urns=(CLUSTER_URN,),
        message="needs binaryauthorization.googleapis.com, which the stack does not enable",
    ),
    case(
        "apply-api-enabled",
        "binary-authorization-off-needs-no-api",
        golden(
            **{"api-binaryauthorization": None},
            cluster=inputs(CLUSTER_RESOURCE, {"binaryAuthorization.evaluationMode": "DISABLED"}),
        ),
    ),
    case(
        "apply-api-enabled",
        "does-not-wait",
        golden(firewall=resource(FIREWALL, FIREWALL_INPUTS, "allow-control-plane")),
        1,
        message="needs compute.googleapis.com without waiting for api-compute",
    ),
    case(
        "apply-api-enabled",
        "redis-cluster-without-service-consumer-management",
        golden(**{"api-serviceconsumermanagement": None}),
        2,
        urns=(PSC_RESOURCE.urn, REDIS_URN),
        message="needs serviceconsumermanagement.googleapis.com, which the stack does not enable",
    ),
    case(
        "apply-api-enabled",
        "bootstrap-api-is-a-prerequisite",
        golden(owner=resource(PROJECT_GRANT, PROJECT_GRANT_INPUTS, "owner")),
    ),
    case(
        "apply-api-enabled",
        "stack-does-not-manage-apis",
        tuple(r for r in golden() if r.type != SERVICE),
    ),
    # ---- apply-service-agent-exists
    case(
        "apply-service-agent-exists",
        "grant-before-identity",
        golden(**{"grant-redis": grant("redis", agent("cloud-redis"))}),
        1,
        urns=(GRANTS["redis"].urn,),
        message="agent, without waiting for redis-agent",
    ),
    case(
        "apply-service-agent-exists",
        "no-identity-for-a-lazy-agent",
        golden(**{"redis-agent": None, "grant-redis": grant("redis", agent("cloud-redis"))}),
        1,
        message="no ServiceIdentity for redis.googleapis.com",
    ),
    case(
        "apply-service-agent-exists",
        "data-source-agent-before-its-api",
        golden(**{"grant-bucket": grant("bucket", agent("gs-project-accounts"))}),
        1,
        message="storage.googleapis.com agent",
    ),
    case(
        "apply-service-agent-exists",
        "dataset-access-to-an-agent",
        golden(
            dataset=resource(
                "gcp:bigquery/dataset:Dataset",
                {
                    "datasetId": "d",
                    "accesses": [{"role": "WRITER", "userByEmail": agent("gcp-sa-pubsub")[15:]}],
                },
                "dataset",
            )
        ),
        1,
        message="no ServiceIdentity for pubsub.googleapis.com",
    ),
    # ---- apply-workload-identity-pool
    case(
        "apply-workload-identity-pool",
        "binding-before-the-cluster",
        golden(**{"wi-binding": without(WI_BINDING, CLUSTER_URN)}),
        1,
        urns=(WI_BINDING.urn,),
        message="without waiting for cluster",
    ),
    case(
        "apply-workload-identity-pool",
        "no-cluster-creates-the-pool",
        golden(
            cluster=inputs(
                CLUSTER_RESOURCE, {"workloadIdentityConfig.workloadPool": "other.svc.id.goog"}
            )
        ),
        1,
        message="which no cluster of the stack creates",
    ),
    case(
        "apply-workload-identity-pool",
        "pool-created-elsewhere",
        golden(
            cluster=inputs(
                CLUSTER_RESOURCE, {"workloadIdentityConfig.workloadPool": "other.svc.id.goog"}
            )
        ),
        config={"apply-workload-identity-pool": {"externalPools": [POOL]}},
    ),
    case(
        "apply-workload-identity-pool",
        "federation-principal-before-the-cluster",
        golden(
            reader=resource(
                "gcp:projects/iAMMember:IAMMember",
                {
                    "project": PROJECT,
                    "role": "roles/monitoring.viewer",
                    "member": f"principal://iam.googleapis.com/projects/{NUMBER}/locations/global/"
                    f"workloadIdentityPools/{POOL}/subject/ns/custom-metrics/sa/adapter",
                },
                "reader",
            )
        ),
        1,
    ),
    # ---- apply-control-plane-ports
    case(
        "apply-control-plane-ports",
        "adapter-port-closed",
        golden(
            firewall=inputs(
                FIREWALL_RESOURCE,
                {"allows": [{"protocol": "tcp", "ports": ["443", "8443", "10250", "15017"]}]},
            )
        ),
        1,
        urns=(CLUSTER_URN,),
        message="cannot reach tcp:6443 (APIService v1beta1.external.metrics.k8s.io)",
    ),
    case(
        "apply-control-plane-ports",
        "istiod-webhook-port-closed",
        golden(
            firewall=inputs(FIREWALL_RESOURCE, {"allows": [{"protocol": "tcp", "ports": ["6443"]}]})
        ),
        1,
        message="tcp:15017 (chart istiod's webhooks)",
    ),
    case(
        "apply-control-plane-ports",
        "opened-by-a-range-from-a-wider-cidr",
        golden(
            firewall=inputs(
                FIREWALL_RESOURCE,
                {
                    "sourceRanges": ["172.16.0.0/12"],
                    "allows": [{"protocol": "tcp", "ports": ["6000-16000"]}],
                },
            )
        ),
    ),
    case(
        "apply-control-plane-ports",
        "from-another-cidr",
        golden(firewall=inputs(FIREWALL_RESOURCE, {"sourceRanges": ["10.0.0.0/8"]})),
        2,
    ),
    case(
        "apply-control-plane-ports",
        "named-target-port-resolved-through-the-deployment",
        golden(
            **{
                "adapter-service": inputs(
                    resource(K8S_SERVICE, ADAPTER_SERVICE, "adapter-service"),
                    {"spec.ports": [{"port": 443, "targetPort": "https"}]},
                )
            },
            adapter=resource(
                "kubernetes:apps/v1:Deployment",
                {
                    "metadata": {"name": "adapter", "namespace": "custom-metrics"},
                    "spec": {
                        "template": {
                            "metadata": {"labels": {"app": "adapter"}},
                            "spec": {
                                "containers": [
                                    {
                                        "name": "a",
                                        "image": "gcr.io/x/a:1",
                                        "ports": [{"name": "https", "containerPort": 7443}],
                                    }
                                ]
                            },
                        }
                    },
                },
                "adapter",
            ),
        ),
        1,
        message="tcp:7443",
    ),
    case(
        "apply-control-plane-ports",
        "public-cluster",
        golden(
            cluster=inputs(CLUSTER_RESOURCE, {"privateClusterConfig.enablePrivateNodes": False}),
            firewall=None,
        ),
    ),
    case(
        "apply-control-plane-ports",
        "backends-of-another-cluster",
        golden(**ON_FIRST_CLUSTER, second=SECOND_CLUSTER),
    ),
    case(
        "apply-control-plane-ports",
        "backends-on-the-second-cluster",
        golden(**ON_SECOND_CLUSTER, second=SECOND_CLUSTER),
        2,
        urns=(SECOND_CLUSTER.urn, SECOND_CLUSTER.urn),
    ),
    # ---- apply-slo-counts-requests
    case(
        "apply-slo-counts-requests",
        "total-from-a-histogram",
        golden(
            slo=inputs(
                resource(SLO, SLO_INPUTS, "slo"),
                {
                    "requestBasedSli.goodTotalRatio.totalServiceFilter": 'metric.type="prometheus.googleapis.com/latency_seconds/histogram"'
                },
            )
        ),
        1,
        message="totalServiceFilter counts prometheus.googleapis.com/latency_seconds/histogram",
    ),
    case(
        "apply-slo-counts-requests",
        "good-from-a-distribution-log-metric",
        golden(
            slo=inputs(
                resource(SLO, SLO_INPUTS, "slo"),
                {
                    "requestBasedSli.goodTotalRatio.goodServiceFilter": 'metric.type = "logging.googleapis.com/user/latency"'
                },
            ),
            metric=resource(
                LOG_METRIC,
                {
                    "name": "latency",
                    "metricDescriptor": {"metricKind": "DELTA", "valueType": "DISTRIBUTION"},
                },
                "latency",
            ),
        ),
        1,
    ),
    case(
        "apply-slo-counts-requests",
        "bad-from-a-google-distribution",
        golden(
            slo=inputs(
                resource(SLO, SLO_INPUTS, "slo"),
                {
                    "requestBasedSli.goodTotalRatio.badServiceFilter": 'metric.type="loadbalancing.googleapis.com/https/backend_latencies"'
                },
            )
        ),
        1,
    ),
    # ---- apply-redis-psc-policy
    case(
        "apply-redis-psc-policy",
        "no-policy",
        golden(psc=None),
        1,
        urns=(REDIS_URN,),
        message="no service connection policy",
    ),
    case(
        "apply-redis-psc-policy",
        "policy-in-another-region",
        golden(psc=inputs(PSC_RESOURCE, {"location": "us-east4"})),
        1,
    ),
    case(
        "apply-redis-psc-policy",
        "policy-for-another-service",
        golden(psc=inputs(PSC_RESOURCE, {"serviceClass": "gcp-cloud-sql"})),
        1,
    ),
    case(
        "apply-redis-psc-policy",
        "does-not-wait",
        golden(
            redis=resource(
                REDIS, REDIS_INPUTS, "cache", dependencies=[GRANTS["redis"].urn, api("redis").urn]
            )
        ),
        1,
        message="without waiting for psc",
    ),
    case(
        "apply-redis-psc-policy",
        "unknown-network-in-preview",
        golden(psc=inputs(PSC_RESOURCE, {"network": UNKNOWN})),
    ),
    # ---- apply-bootstrap-apis
    case(
        "apply-bootstrap-apis",
        "declares-resource-manager",
        golden(**{"api-cloudresourcemanager": api("cloudresourcemanager")}),
        1,
        urns=(api("cloudresourcemanager").urn,),
        message="enables cloudresourcemanager.googleapis.com, which must already be on",
    ),
    case(
        "apply-bootstrap-apis",
        "declares-sts-and-iam-credentials",
        golden(**{f"api-{n}": api(n) for n in ("sts", "iamcredentials")}),
        2,
    ),
    # ---- apply-billing-budget
    case(
        "apply-billing-budget",
        "no-budget",
        golden(budget=None),
        1,
        urns=(None,),
        message="declares no billing budget",
    ),
    case(
        "apply-billing-budget",
        "stack-that-runs-no-project",
        tuple(r for r in golden(budget=None) if r.type != SERVICE),
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_apply_order_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)


DIGEST = "sha256:" + "ab" * 32
ZEROS = "sha256:" + "0" * 64


def with_image(image: str) -> dict[str, Any]:
    return mutate(DEPLOYMENT_INPUTS, {"spec.template.spec.containers.0.image": image})


CASES: list[Case] = [
    ok("apply-image-registry", "kubernetes:apps/v1:Deployment", DEPLOYMENT_INPUTS, strict=False),
    ok(
        "apply-image-registry",
        "kubernetes:apps/v1:Deployment",
        with_image("localhost:5000/signal:1"),
        "local-registry",
        strict=False,
    ),
    ok(
        "apply-image-registry",
        "kubernetes:apps/v1:Deployment",
        with_image(UNKNOWN),
        "unknown-image",
        strict=False,
    ),
    bad(
        "apply-image-registry",
        "kubernetes:apps/v1:Deployment",
        with_image(f"tritonserver@{DIGEST}"),
        "docker-hub-by-default",
        message="names no registry host",
        strict=False,
    ),
    bad(
        "apply-image-registry",
        "kubernetes:apps/v1:Deployment",
        with_image("library/redis:7"),
        "docker-hub-namespace",
        strict=False,
    ),
    bad(
        "apply-image-registry",
        "kubernetes:apps/v1:Deployment",
        with_image(f"us-docker.pkg.dev/p/r/adapter@{ZEROS}"),
        "all-zero-digest",
        message="placeholder digest",
        strict=False,
    ),
    ok("apply-deprecated-value", CLUSTER, CLUSTER_INPUTS, strict=False),
    bad(
        "apply-deprecated-value",
        CLUSTER,
        mutate(CLUSTER_INPUTS, {"securityPostureConfig.vulnerabilityMode": "VULNERABILITY_BASIC"}),
        "basic-vulnerability-scanning",
        message="VULNERABILITY_DISABLED with Artifact Analysis",
        strict=False,
    ),
    bad(
        "apply-deprecated-value",
        CLUSTER,
        mutate(
            CLUSTER_INPUTS,
            {"monitoringConfig.enableComponents": ["SYSTEM_COMPONENTS", "WORKLOADS"]},
        ),
        "workloads-monitoring",
        strict=False,
    ),
    bad(
        "apply-deprecated-value",
        CLUSTER,
        mutate(CLUSTER_INPUTS, {"loggingService": "logging.googleapis.com"}),
        "legacy-logging",
        strict=False,
    ),
    bad(
        "apply-deprecated-value",
        NODE_POOL,
        {"cluster": "c1", "nodeConfig": {"imageType": "COS"}},
        "docker-node-image",
        strict=False,
    ),
    ok(
        "apply-deprecated-value",
        NODE_POOL,
        {"cluster": "c1", "nodeConfig": {"imageType": UNKNOWN}},
        "unknown-image-type",
        strict=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_apply_order_resource_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)


def test_the_golden_stack_applies_in_one_go(pack: PolicyPackProcess) -> None:
    """Every apply-order rule, resource and stack alike, passes the golden stack."""
    analysis = pack.analyze_all(golden())
    assert [v for v in analysis.violations if v.policy in LEVELS] == []
