"""GKE cluster rules (gcp:container/cluster:Cluster): CIS GKE Benchmark section 5 and GKE docs."""

from __future__ import annotations

from collections.abc import Iterator

from rules.kit import (
    ADVISORY,
    MANDATORY,
    STACKS_SCHEMA,
    Resource,
    Rules,
    only_on_stacks,
    schema,
)
from rules.values import as_list, get, is_unknown, shown

CLUSTER = "gcp:container/cluster:Cluster"
RULES = Rules("gke")
_OPEN_CIDRS = {"0.0.0.0/0", "::/0"}
_CHANNELS = ["RAPID", "REGULAR", "STABLE", "EXTENDED"]


@RULES.resource(
    "gke-private-nodes",
    level=MANDATORY,
    description="GKE nodes have private IPs only.",
    source="CIS GKE 5.6.5; Checkov CKV_GCP_64.",
    types={CLUSTER},
)
def private_nodes(r: Resource) -> Iterator[str]:
    value = get(r.props, "privateClusterConfig", "enablePrivateNodes")
    if value is not True and not is_unknown(value):
        yield "privateClusterConfig.enablePrivateNodes must be true: nodes get public IPs otherwise"


@RULES.resource(
    "gke-control-plane-access",
    level=MANDATORY,
    description=(
        "The control plane has a private endpoint, or authorized networks that exclude 0.0.0.0/0."
    ),
    source="CIS GKE 5.6.3 and 5.6.4; Checkov CKV_GCP_18, CKV_GCP_20.",
    types={CLUSTER},
)
def control_plane_access(r: Resource) -> Iterator[str]:
    private_endpoint = get(r.props, "privateClusterConfig", "enablePrivateEndpoint")
    ip_endpoint = get(r.props, "controlPlaneEndpointsConfig", "ipEndpointsConfig", "enabled")
    authorized = get(r.props, "masterAuthorizedNetworksConfig")
    if private_endpoint is True or ip_endpoint is False:
        return  # no public IP endpoint (private endpoint, or the DNS-based endpoint only)
    if is_unknown(private_endpoint) or is_unknown(ip_endpoint) or is_unknown(authorized):
        return
    if not isinstance(authorized, dict):
        yield (
            "the public control-plane endpoint is open to the internet: set "
            "privateClusterConfig.enablePrivateEndpoint or masterAuthorizedNetworksConfig"
        )
        return
    if get(authorized, "gcpPublicCidrsAccessEnabled") is True:
        yield "masterAuthorizedNetworksConfig.gcpPublicCidrsAccessEnabled opens the endpoint to all GCP IPs"
    for index, block in enumerate(as_list(get(authorized, "cidrBlocks"))):
        cidr = get(block, "cidrBlock")
        if cidr in _OPEN_CIDRS:
            yield f"masterAuthorizedNetworksConfig.cidrBlocks[{index}] authorizes {cidr}"


@RULES.resource(
    "gke-workload-identity",
    level=MANDATORY,
    description="Workload Identity is enabled (workloadIdentityConfig.workloadPool).",
    source="CIS GKE 5.2.2; GKE hardening guide.",
    types={CLUSTER},
)
def workload_identity(r: Resource) -> Iterator[str]:
    pool = get(r.props, "workloadIdentityConfig", "workloadPool")
    if is_unknown(pool):
        return
    if not isinstance(pool, str) or not pool.endswith(".svc.id.goog"):
        yield (
            "workloadIdentityConfig.workloadPool must be set to '<project>.svc.id.goog' "
            f"(got {shown(pool)})"
        )


@RULES.resource(
    "gke-no-legacy-abac",
    level=MANDATORY,
    description="Legacy ABAC authorization is disabled.",
    source="CIS GKE 5.8.3; Checkov CKV_GCP_7.",
    types={CLUSTER},
)
def no_legacy_abac(r: Resource) -> Iterator[str]:
    if get(r.props, "enableLegacyAbac") is True:
        yield "enableLegacyAbac is true: legacy ABAC bypasses RBAC"


@RULES.resource(
    "gke-no-client-certificate",
    level=MANDATORY,
    description="No client certificate is issued for cluster authentication.",
    source="CIS GKE 5.8.1; Checkov CKV_GCP_13.",
    types={CLUSTER},
)
def no_client_certificate(r: Resource) -> Iterator[str]:
    if get(r.props, "masterAuth", "clientCertificateConfig", "issueClientCertificate") is True:
        yield "masterAuth.clientCertificateConfig.issueClientCertificate is true"


@RULES.resource(
    "gke-secrets-encryption",
    level=MANDATORY,
    description=("Kubernetes Secrets are encrypted at the application layer with a Cloud KMS key."),
    source="CIS GKE 5.3.1.",
    types={CLUSTER},
)
def secrets_encryption(r: Resource) -> Iterator[str]:
    encryption = get(r.props, "databaseEncryption")
    if is_unknown(encryption):
        return
    state, key = get(encryption, "state"), get(encryption, "keyName")
    if not is_unknown(state) and state != "ENCRYPTED":
        yield f"databaseEncryption.state must be ENCRYPTED (got {shown(state)})"
    elif not key and not is_unknown(key):
        yield "databaseEncryption.keyName must name a Cloud KMS key"


@RULES.resource(
    "gke-network-policy",
    level=MANDATORY,
    description="NetworkPolicies are enforced (Dataplane V2 or the network policy add-on).",
    source="CIS GKE 5.6.7; Checkov CKV_GCP_12.",
    types={CLUSTER},
)
def network_policy(r: Resource) -> Iterator[str]:
    datapath = get(r.props, "datapathProvider")
    enabled = get(r.props, "networkPolicy", "enabled")
    if datapath == "ADVANCED_DATAPATH" or enabled is True:
        return
    if is_unknown(datapath) or is_unknown(enabled):
        return
    yield (
        "enforce NetworkPolicies: datapathProvider ADVANCED_DATAPATH (Dataplane V2) "
        "or networkPolicy.enabled true"
    )


@RULES.resource(
    "gke-vpc-native",
    level=MANDATORY,
    description="The cluster is VPC-native (alias IPs via ipAllocationPolicy).",
    source="CIS GKE 5.6.2; Checkov CKV_GCP_23.",
    types={CLUSTER},
)
def vpc_native(r: Resource) -> Iterator[str]:
    if get(r.props, "networkingMode") == "ROUTES":
        yield "networkingMode ROUTES: use VPC_NATIVE"
    elif get(r.props, "ipAllocationPolicy") is None:
        yield "ipAllocationPolicy is required for a VPC-native (alias IP) cluster"


@RULES.resource(
    "gke-release-channel",
    level=MANDATORY,
    description="The cluster is enrolled in an allowed release channel.",
    source="CIS GKE 5.5.4; Checkov CKV_GCP_70.",
    types={CLUSTER},
    config=schema(
        {
            "allowedChannels": {
                "type": "array",
                "items": {"type": "string", "enum": _CHANNELS},
                "default": ["REGULAR", "STABLE"],
            }
        }
    ),
)
def release_channel(r: Resource) -> Iterator[str]:
    channel = get(r.props, "releaseChannel", "channel")
    allowed = list(r.config["allowedChannels"])
    if not is_unknown(channel) and channel not in allowed:
        yield f"releaseChannel.channel is {shown(channel)}; allowed: {', '.join(allowed)}"


@RULES.resource(
    "gke-shielded-nodes",
    level=MANDATORY,
    description="Shielded GKE nodes are enabled.",
    source="CIS GKE 5.5.5; Checkov CKV_GCP_71.",
    types={CLUSTER},
)
def shielded_nodes(r: Resource) -> Iterator[str]:
    if get(r.props, "enableShieldedNodes") is False:
        yield "enableShieldedNodes is false"


@RULES.resource(
    "gke-logging",
    level=MANDATORY,
    description="Cloud Logging collects system and workload logs.",
    source="CIS GKE 5.7.1; Checkov CKV_GCP_1.",
    types={CLUSTER},
)
def logging_enabled(r: Resource) -> Iterator[str]:
    if get(r.props, "loggingService") == "none":
        yield "loggingService is 'none'"
    components = get(r.props, "loggingConfig", "enableComponents")
    if isinstance(components, list) and not any(map(is_unknown, components)):
        for needed in ("SYSTEM_COMPONENTS", "WORKLOADS"):
            if needed not in components:
                yield f"loggingConfig.enableComponents lacks {needed}"


@RULES.resource(
    "gke-monitoring",
    level=MANDATORY,
    description="Cloud Monitoring collects system metrics.",
    source="CIS GKE 5.7.1; Checkov CKV_GCP_8.",
    types={CLUSTER},
)
def monitoring_enabled(r: Resource) -> Iterator[str]:
    if get(r.props, "monitoringService") == "none":
        yield "monitoringService is 'none'"
    components = get(r.props, "monitoringConfig", "enableComponents")
    if (
        isinstance(components, list)
        and not any(map(is_unknown, components))
        and "SYSTEM_COMPONENTS" not in components
    ):
        yield "monitoringConfig.enableComponents lacks SYSTEM_COMPONENTS"


@RULES.resource(
    "gke-binary-authorization",
    level=MANDATORY,
    description="Binary Authorization enforces the project policy on every image.",
    source="CIS GKE 5.10.5; Checkov CKV_GCP_66.",
    types={CLUSTER},
)
def binary_authorization(r: Resource) -> Iterator[str]:
    mode = get(r.props, "binaryAuthorization", "evaluationMode")
    if not is_unknown(mode) and mode != "PROJECT_SINGLETON_POLICY_ENFORCE":
        yield f"binaryAuthorization.evaluationMode must be PROJECT_SINGLETON_POLICY_ENFORCE (got {shown(mode)})"


@RULES.resource(
    "gke-security-posture",
    level=ADVISORY,
    description=(
        "GKE security posture (configuration auditing) is on. Image vulnerability scanning is "
        "Artifact Analysis's job on the registry (registry-vulnerability-scanning): GKE's "
        "workload vulnerability scanning was shut down (standard) or deprecated (enterprise)."
    ),
    source=(
        "GKE docs, 'About the security posture dashboard' and 'Workload vulnerability "
        "scanning deprecation'."
    ),
    types={CLUSTER},
)
def security_posture(r: Resource) -> Iterator[str]:
    mode = get(r.props, "securityPostureConfig", "mode")
    if not is_unknown(mode) and mode not in ("BASIC", "ENTERPRISE"):
        yield f"securityPostureConfig.mode must be BASIC or ENTERPRISE (got {shown(mode)})"


@RULES.resource(
    "gke-no-alpha",
    level=MANDATORY,
    description="Kubernetes alpha features are disabled.",
    source="CIS GKE 5.10.2.",
    types={CLUSTER},
)
def no_alpha(r: Resource) -> Iterator[str]:
    if get(r.props, "enableKubernetesAlpha") is True:
        yield "enableKubernetesAlpha is true: alpha clusters are unsupported and expire"


@RULES.resource(
    "gke-cost-allocation",
    level=MANDATORY,
    description=(
        "GKE cost allocation is enabled so spend is attributable per namespace and label."
    ),
    source="GKE docs, 'Get key spending insights with GKE cost allocation'.",
    types={CLUSTER},
)
def cost_allocation(r: Resource) -> Iterator[str]:
    enabled = get(r.props, "costManagementConfig", "enabled")
    if enabled is not True and not is_unknown(enabled):
        yield "costManagementConfig.enabled must be true for GKE cost allocation"


@RULES.resource(
    "gke-intranode-visibility",
    level=ADVISORY,
    description="Intranode visibility is enabled.",
    source="CIS GKE 5.6.1; Checkov CKV_GCP_61.",
    types={CLUSTER},
)
def intranode_visibility(r: Resource) -> Iterator[str]:
    enabled = get(r.props, "enableIntranodeVisibility")
    if enabled is not True and not is_unknown(enabled):
        yield "enableIntranodeVisibility should be true so pod-to-pod traffic reaches VPC flow logs"


@RULES.resource(
    "gke-deletion-protection",
    level=MANDATORY,
    description="On production stacks, cluster deletion protection is not switched off.",
    source="GKE docs, 'Deletion protection'.",
    types={CLUSTER},
    config=schema(STACKS_SCHEMA),
)
def deletion_protection(r: Resource) -> Iterator[str]:
    only_on_stacks(r.config)
    if get(r.props, "deletionProtection") is False:
        yield "deletionProtection is false"
