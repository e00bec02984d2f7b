"""Identity: one Google service account per workload and node pool, Workload Identity, KMS.

Least privilege: project-level roles are only the telemetry writers each identity needs;
access to data (topics, tables, buckets, keys) is granted on the resource itself, by the
module that declares it. Keys rotate at most every 90 days. Where the stack protects its
resources (prod) keys are protected from deletion (a destroyed key destroys every byte it
encrypted); elsewhere (dev) `pulumi destroy` schedules their versions' destruction 30 days
out. Cloud KMS never deletes a key ring or a key's name, so a stack re-created after a destroy
takes new key ring names (`keyRingGeneration`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.service_agents import ServiceAgents
from infra.settle import IAM_PROPAGATION, settle

NAMESPACE = "signals"
KEY_ROTATION = "7776000s"  # 90 days: CIS GCP 1.10
# A destroyed key's versions stay restorable this long (Cloud KMS allows up to 120 days).
DESTROY_AFTER = "2592000s"  # 30 days
ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"


@dataclass(frozen=True)
class WorkloadIdentity:
    """A Kubernetes service account and the Google service account it acts as."""

    account_id: str
    namespace: str
    ksa: str
    project_roles: tuple[str, ...]


WORKLOADS: Mapping[str, WorkloadIdentity] = {
    "signal-service": WorkloadIdentity(
        "signal-service",
        NAMESPACE,
        "signal-service",
        ("roles/monitoring.metricWriter", "roles/cloudtrace.agent", "roles/logging.logWriter"),
    ),
    "triton": WorkloadIdentity(
        "triton",
        NAMESPACE,
        "triton",
        ("roles/monitoring.metricWriter", "roles/logging.logWriter"),
    ),
}

# The minimum a GKE node needs (GKE hardening guide: "least privilege node service account").
NODE_ROLES = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
)

# The services whose agents encrypt with each key, by key purpose (infra/service_agents.py).
KEY_USERS: Mapping[str, tuple[str, ...]] = {
    "gke-secrets": ("container.googleapis.com",),  # Kubernetes secrets (database encryption)
    "disks": ("compute.googleapis.com",),  # node boot disks
    "redis": ("redis.googleapis.com",),
    # The registry's images and the models bucket.
    "artifacts": ("artifactregistry.googleapis.com", "storage.googleapis.com"),
    "bigquery": ("bigquery.googleapis.com",),
    "pubsub": ("pubsub.googleapis.com",),
    # The audit-log bucket, written by Cloud Storage on the log sink's behalf.
    "audit-logs": ("storage.googleapis.com",),
}
REGIONAL_KEYS = ("gke-secrets", "disks", "redis", "artifacts")
WAREHOUSE_KEYS = ("bigquery", "pubsub", "audit-logs")


def workload_pool(project_id: str) -> str:
    """The project's Workload Identity pool: GKE creates it with the first cluster that uses it."""
    return f"{project_id}.svc.id.goog"


@dataclass(frozen=True)
class MonitoringReader:
    """A Kubernetes service account that reads Cloud Monitoring as itself (no Google account)."""

    namespace: str
    ksa: str


class PoolGrants(pulumi.ComponentResource):
    """Everything granted to principals of the project's identity pool: each workload's KSA may
    act as its Google service account, and each `MonitoringReader` reads Cloud Monitoring as a
    Workload Identity Federation principal (no key). The principals name a namespace and an
    account, not a cluster, so one grant serves every cluster.

    IAM refuses members of a pool that does not exist, and the pool (`PROJECT.svc.id.goog`)
    appears with the first cluster: create this component with `depends_on` the clusters, and
    every grant below waits for them through its parent. What runs as these principals waits
    for `settled`, the delay that lets the grants take effect.
    """

    def __init__(
        self,
        name: str,
        project_id: str,
        project_number: pulumi.Input[str],
        accounts: Mapping[str, gcp.serviceaccount.Account],
        readers: Mapping[str, MonitoringReader],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:PoolGrants", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        pool = workload_pool(project_id)
        self.bindings = {
            key: gcp.serviceaccount.IAMMember(
                f"sa-{key}-workload-identity",
                service_account_id=account.name,
                role="roles/iam.workloadIdentityUser",
                member=f"serviceAccount:{pool}[{WORKLOADS[key].namespace}/{WORKLOADS[key].ksa}]",
                opts=child,
            )
            for key, account in accounts.items()
        }
        number = pulumi.Output.from_input(project_number)
        self.readers = {
            grant: gcp.projects.IAMMember(
                grant,
                project=project_id,
                role="roles/monitoring.viewer",
                member=number.apply(
                    lambda n, r=reader: (
                        f"principal://iam.googleapis.com/projects/{n}/locations/global/"
                        f"workloadIdentityPools/{pool}/subject/ns/{r.namespace}/sa/{r.ksa}"
                    )
                ),
                opts=child,
            )
            for grant, reader in readers.items()
        }
        # What runs as these principals (the workloads, the metrics adapter, the scaler and the
        # detector) waits for this: a pod's token exchange fails until the binding is in effect.
        self.settled = settle(
            f"{name}-settle",
            [*self.bindings.values(), *self.readers.values()],
            IAM_PROPAGATION,
            parent=self,
        )
        self.register_outputs({"pool": pool})


class ServiceAccounts(pulumi.ComponentResource):
    """Google service accounts for the workloads and the node pools (`PoolGrants` binds
    the workloads' KSAs to theirs once a cluster has created the identity pool)."""

    def __init__(
        self,
        name: str,
        project_id: str,
        node_pools: Sequence[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:ServiceAccounts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.workloads: dict[str, gcp.serviceaccount.Account] = {}
        self.nodes: dict[str, gcp.serviceaccount.Account] = {}

        for key, workload in WORKLOADS.items():
            account = gcp.serviceaccount.Account(
                f"sa-{key}",
                account_id=workload.account_id,
                display_name=f"{key} workload ({workload.namespace}/{workload.ksa})",
                opts=child,
            )
            self._project_roles(f"sa-{key}", project_id, account, workload.project_roles, child)
            self.workloads[key] = account

        for pool in node_pools:
            account = gcp.serviceaccount.Account(
                f"sa-nodes-{pool}",
                account_id=f"gke-nodes-{pool}"[:30],
                display_name=f"GKE nodes of pool {pool}",
                opts=child,
            )
            self._project_roles(f"sa-nodes-{pool}", project_id, account, NODE_ROLES, child)
            self.nodes[pool] = account

        self.register_outputs({k: a.email for k, a in {**self.workloads, **self.nodes}.items()})

    @staticmethod
    def _project_roles(
        prefix: str,
        project_id: str,
        account: gcp.serviceaccount.Account,
        roles: Sequence[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        for role in roles:
            gcp.projects.IAMMember(
                f"{prefix}-{role.removeprefix('roles/').replace('.', '-')}",
                project=project_id,
                role=role,
                member=account.member,
                opts=opts,
            )


class KeyRing(pulumi.ComponentResource):
    """A KMS key ring in one location with a key per purpose, each usable by its service agent.

    A resource that encrypts with a key must wait for the grant to its service's agent and for
    it to take effect (`grants_for`), not only for the key: without it its creation fails.
    """

    def __init__(
        self,
        name: str,
        location: str,
        purposes: Sequence[str],
        agents: ServiceAgents,
        labels: Mapping[str, str],
        hsm: bool,
        protect: bool,
        ring_name: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`protect`: Pulumi may not destroy the keys (prod); otherwise a destroy schedules
        their versions' destruction (`DESTROY_AFTER`) and forgets the ring and keys, whose
        names Cloud KMS keeps. `ring_name`: the key ring's name in KMS (default `name`; a stack
        re-created after a destroy needs a new one)."""
        super().__init__("signal:infra:KeyRing", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key_ring = gcp.kms.KeyRing(name, name=ring_name or name, location=location, opts=child)
        self.keys: dict[str, gcp.kms.CryptoKey] = {}
        # (purpose, service) → the grant that lets the service's agent use the purpose's key.
        self.grants: dict[tuple[str, str], gcp.kms.CryptoKeyIAMMember] = {}
        for purpose in purposes:
            key = gcp.kms.CryptoKey(
                f"{name}-{purpose}",
                name=purpose,
                key_ring=self.key_ring.id,
                purpose="ENCRYPT_DECRYPT",
                rotation_period=KEY_ROTATION,
                version_template={
                    "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
                    "protection_level": "HSM" if hsm else "SOFTWARE",
                },
                labels=dict(labels),
                # A destroyed key destroys every byte it encrypted: where the stack protects
                # its resources Pulumi may not destroy it at all; elsewhere a destroy only
                # schedules its versions' destruction, which can be undone for 30 days.
                destroy_scheduled_duration=DESTROY_AFTER,
                opts=pulumi.ResourceOptions(parent=self, protect=protect),
            )
            for i, service in enumerate(KEY_USERS[purpose]):
                agent = agents[service]
                # The agent must exist before anything is granted to it.
                self.grants[purpose, service] = gcp.kms.CryptoKeyIAMMember(
                    f"{name}-{purpose}-agent-{i}",
                    crypto_key_id=key.id,
                    role=ENCRYPTER,
                    member=agent.member,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(agent.ready)),
                )
            self.keys[purpose] = key
        # One delay after all the ring's grants: KMS refuses an agent whose grant is still
        # propagating, and the resource that asked fails.
        self.settled = settle(
            f"{name}-grants-settle", list(self.grants.values()), IAM_PROPAGATION, parent=self
        )
        self.register_outputs({p: k.id for p, k in self.keys.items()})

    def grants_for(self, purpose: str, service: str | None = None) -> list[pulumi.Resource]:
        """What a user of `purpose`'s key waits for: the grants to its service's agent (or to
        every user's), and the delay that lets them take effect."""
        return [
            *(
                grant
                for (p, s), grant in self.grants.items()
                if p == purpose and (service is None or s == service)
            ),
            self.settled,
        ]
