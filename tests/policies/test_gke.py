"""GKE cluster rules through the real pack: a golden cluster and one mutation per violation."""

from __future__ import annotations

import pytest

from tests.policies.cases import COST_LABELS, DELETE, UNKNOWN, Case, assert_case, bad, mutate, ok
from tools.analyzer import PolicyPackProcess

CLUSTER = "gcp:container/cluster:Cluster"

LEVELS = {
    "gke-private-nodes": "mandatory",
    "gke-control-plane-access": "mandatory",
    "gke-workload-identity": "mandatory",
    "gke-no-legacy-abac": "mandatory",
    "gke-no-client-certificate": "mandatory",
    "gke-secrets-encryption": "mandatory",
    "gke-network-policy": "mandatory",
    "gke-vpc-native": "mandatory",
    "gke-release-channel": "mandatory",
    "gke-shielded-nodes": "mandatory",
    "gke-logging": "mandatory",
    "gke-monitoring": "mandatory",
    "gke-binary-authorization": "mandatory",
    "gke-security-posture": "advisory",
    "gke-no-alpha": "mandatory",
    "gke-cost-allocation": "mandatory",
    "gke-intranode-visibility": "advisory",
    "gke-deletion-protection": "mandatory",
}

GOLDEN = {
    "name": "test-us-central1",
    "location": "us-central1",
    "removeDefaultNodePool": True,
    "initialNodeCount": 1,
    "privateClusterConfig": {"enablePrivateNodes": True, "masterIpv4CidrBlock": "172.16.0.0/28"},
    "masterAuthorizedNetworksConfig": {
        "cidrBlocks": [{"cidrBlock": "10.10.0.0/16", "displayName": "vpc"}]
    },
    "workloadIdentityConfig": {"workloadPool": "signal-test.svc.id.goog"},
    "enableLegacyAbac": False,
    "masterAuth": {"clientCertificateConfig": {"issueClientCertificate": False}},
    "databaseEncryption": {
        "state": "ENCRYPTED",
        "keyName": "projects/p/locations/us-central1/keyRings/gke/cryptoKeys/etcd",
    },
    "datapathProvider": "ADVANCED_DATAPATH",
    "networkingMode": "VPC_NATIVE",
    "ipAllocationPolicy": {
        "clusterSecondaryRangeName": "pods",
        "servicesSecondaryRangeName": "services",
    },
    "releaseChannel": {"channel": "REGULAR"},
    "enableShieldedNodes": True,
    "loggingConfig": {"enableComponents": ["SYSTEM_COMPONENTS", "WORKLOADS"]},
    "monitoringConfig": {
        "enableComponents": ["SYSTEM_COMPONENTS"],
        "managedPrometheus": {"enabled": True},
    },
    "binaryAuthorization": {"evaluationMode": "PROJECT_SINGLETON_POLICY_ENFORCE"},
    "securityPostureConfig": {"mode": "BASIC", "vulnerabilityMode": "VULNERABILITY_DISABLED"},
    "enableKubernetesAlpha": False,
    "costManagementConfig": {"enabled": True},
    "enableIntranodeVisibility": True,
    "deletionProtection": True,
    "resourceLabels": COST_LABELS,
}


def g(policy: str, label: str = "golden", **changes: object) -> Case:
    """A compliant variant of the golden cluster."""
    return ok(
        policy,
        CLUSTER,
        mutate(GOLDEN, {k.replace("__", "."): v for k, v in changes.items()}),
        label,
    )


def b(policy: str, label: str, changes: dict, expect: int = 1, **kw: object) -> Case:
    """A violating mutation of the golden cluster."""
    return bad(policy, CLUSTER, mutate(GOLDEN, changes), label, expect, **kw)


CASES = [
    g("gke-private-nodes"),
    ok("gke-private-nodes", CLUSTER, mutate(GOLDEN, {"privateClusterConfig": UNKNOWN}), "unknown"),
    b("gke-private-nodes", "disabled", {"privateClusterConfig.enablePrivateNodes": False}),
    b(
        "gke-private-nodes",
        "absent",
        {"privateClusterConfig": DELETE},
        message="enablePrivateNodes",
    ),
    g("gke-control-plane-access"),
    ok(
        "gke-control-plane-access",
        CLUSTER,
        mutate(
            GOLDEN,
            {
                "privateClusterConfig.enablePrivateEndpoint": True,
                "masterAuthorizedNetworksConfig": DELETE,
            },
        ),
        "private-endpoint",
    ),
    ok(
        "gke-control-plane-access",
        CLUSTER,
        mutate(
            GOLDEN,
            {
                "controlPlaneEndpointsConfig": {"ipEndpointsConfig": {"enabled": False}},
                "masterAuthorizedNetworksConfig": DELETE,
            },
        ),
        "dns-endpoint-only",
    ),
    b(
        "gke-control-plane-access",
        "no-authorized-networks",
        {"masterAuthorizedNetworksConfig": DELETE},
    ),
    b(
        "gke-control-plane-access",
        "open-to-internet",
        {
            "masterAuthorizedNetworksConfig.cidrBlocks": [
                {"cidrBlock": "10.0.0.0/8"},
                {"cidrBlock": "0.0.0.0/0", "displayName": "anywhere"},
            ]
        },
        message="cidrBlocks[1] authorizes 0.0.0.0/0",
    ),
    b(
        "gke-control-plane-access",
        "gcp-public-cidrs",
        {"masterAuthorizedNetworksConfig.gcpPublicCidrsAccessEnabled": True},
    ),
    g("gke-workload-identity"),
    b("gke-workload-identity", "absent", {"workloadIdentityConfig": DELETE}),
    b(
        "gke-workload-identity",
        "wrong-pool",
        {"workloadIdentityConfig.workloadPool": "signal-test"},
    ),
    g("gke-no-legacy-abac"),
    b("gke-no-legacy-abac", "enabled", {"enableLegacyAbac": True}),
    g("gke-no-client-certificate"),
    b(
        "gke-no-client-certificate",
        "issued",
        {"masterAuth.clientCertificateConfig.issueClientCertificate": True},
    ),
    g("gke-secrets-encryption"),
    b("gke-secrets-encryption", "decrypted", {"databaseEncryption.state": "DECRYPTED"}),
    b("gke-secrets-encryption", "no-key", {"databaseEncryption.keyName": DELETE}),
    b("gke-secrets-encryption", "absent", {"databaseEncryption": DELETE}, message="unset"),
    g("gke-network-policy"),
    ok(
        "gke-network-policy",
        CLUSTER,
        mutate(GOLDEN, {"datapathProvider": DELETE, "networkPolicy": {"enabled": True}}),
        "calico",
    ),
    b("gke-network-policy", "legacy-datapath", {"datapathProvider": "LEGACY_DATAPATH"}),
    g("gke-vpc-native"),
    b("gke-vpc-native", "routes", {"networkingMode": "ROUTES"}),
    b("gke-vpc-native", "no-ip-allocation", {"ipAllocationPolicy": DELETE}),
    g("gke-release-channel"),
    ok(
        "gke-release-channel",
        CLUSTER,
        mutate(GOLDEN, {"releaseChannel.channel": "RAPID"}),
        "configured-rapid",
        config={"gke-release-channel": {"allowedChannels": ["RAPID"]}},
    ),
    b("gke-release-channel", "rapid", {"releaseChannel.channel": "RAPID"}),
    b("gke-release-channel", "unspecified", {"releaseChannel": DELETE}),
    g("gke-shielded-nodes"),
    b("gke-shielded-nodes", "disabled", {"enableShieldedNodes": False}),
    g("gke-logging"),
    b("gke-logging", "none", {"loggingService": "none"}),
    b("gke-logging", "system-only", {"loggingConfig.enableComponents": ["SYSTEM_COMPONENTS"]}),
    g("gke-monitoring"),
    b("gke-monitoring", "none", {"monitoringService": "none"}),
    b("gke-monitoring", "no-system", {"monitoringConfig.enableComponents": ["APISERVER"]}),
    g("gke-binary-authorization"),
    b("gke-binary-authorization", "disabled", {"binaryAuthorization.evaluationMode": "DISABLED"}),
    b("gke-binary-authorization", "absent", {"binaryAuthorization": DELETE}),
    g("gke-security-posture"),
    b("gke-security-posture", "disabled", {"securityPostureConfig.mode": "DISABLED"}),
    # GKE's own image scanning is gone (standard) or deprecated (enterprise): not asked for.
    g(
        "gke-security-posture",
        "scanning-off",
        securityPostureConfig__vulnerabilityMode="VULNERABILITY_DISABLED",
    ),
    b("gke-security-posture", "absent", {"securityPostureConfig": DELETE}),
    g("gke-no-alpha"),
    b("gke-no-alpha", "alpha", {"enableKubernetesAlpha": True}),
    g("gke-cost-allocation"),
    b("gke-cost-allocation", "off", {"costManagementConfig.enabled": False}),
    g("gke-intranode-visibility"),
    b("gke-intranode-visibility", "off", {"enableIntranodeVisibility": DELETE}),
    ok(
        "gke-deletion-protection",
        CLUSTER,
        GOLDEN,
        "on-prod",
        config={"gke-deletion-protection": {"stacks": ["test"]}},
    ),
    ok(
        "gke-deletion-protection",
        CLUSTER,
        mutate(GOLDEN, {"deletionProtection": False}),
        "off-outside-prod",
    ),
    b(
        "gke-deletion-protection",
        "off-on-prod",
        {"deletionProtection": False},
        config={"gke-deletion-protection": {"stacks": ["test"]}},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cluster_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
