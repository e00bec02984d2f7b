"""Redis: one Memorystore for Redis Cluster per region, the service's L2 cache.

Secure by construction: clients reach the cluster only through Private Service Connect
endpoints in the region's subnet (a service connection policy on the VPC lets Memorystore
create them), traffic is TLS with server authentication, clients authenticate with IAM
tokens (no static password exists), data at rest is encrypted with the region's `redis`
KMS key, and shards spread over the region's zones. The signal service's identity gets
`roles/redis.dbConnectionUser` on this cluster only: Memorystore has no per-cluster IAM
policy, so the grant is a project binding whose IAM condition names the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.config import RedisSettings

SERVICE_CLASS = "gcp-memorystore-redis"
CONNECT_ROLE = "roles/redis.dbConnectionUser"
PORT = 6379
# A cache: under memory pressure, evict the least recently used key rather than fail writes.
REDIS_CONFIGS = {"maxmemory-policy": "allkeys-lru"}


def persistence_config(settings: RedisSettings) -> gcp.redis.ClusterPersistenceConfigArgsDict:
    """Memorystore's persistence block for the configured mode."""
    if settings.persistence == "AOF":
        return {"mode": "AOF", "aof_config": {"append_fsync": settings.aof_append_fsync}}
    if settings.persistence == "RDB":
        return {"mode": "RDB", "rdb_config": {"rdb_snapshot_period": settings.rdb_snapshot_period}}
    return {"mode": "DISABLED"}


def cluster_resource_name(project_id: str, region: str, name: str) -> str:
    """The name IAM conditions see for a Redis cluster."""
    return f"projects/{project_id}/locations/{region}/clusters/{name}"


class RedisCluster(pulumi.ComponentResource):
    """A region's Redis Cluster, its PSC connection policy and who may connect to it."""

    def __init__(
        self,
        name: str,
        region: str,
        project_id: str,
        settings: RedisSettings,
        network: gcp.compute.Network,
        subnet: gcp.compute.Subnetwork,
        kms_key: gcp.kms.CryptoKey,
        connection_members: Mapping[str, pulumi.Input[str]],
        labels: Mapping[str, str],
        deletion_protection: bool,
        after: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:RedisCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # One policy per (network, region, service class): Memorystore creates the cluster's
        # PSC endpoints in this subnet, so nothing else needs to be peered or exposed.
        self.connection_policy = gcp.networkconnectivity.ServiceConnectionPolicy(
            f"{name}-psc",
            name=f"{name}-psc",
            location=region,
            service_class=SERVICE_CLASS,
            network=network.id,
            psc_config={"subnetworks": [subnet.id]},
            description=f"Memorystore Redis endpoints in {region}",
            labels=dict(labels),
            # One policy per (network, region, class) and a fixed name: a replacement cannot
            # be created beside the old one.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

        self.cluster_name = name
        self.cluster = gcp.redis.Cluster(
            name,
            name=name,
            region=region,
            shard_count=settings.shard_count,
            replica_count=settings.replica_count,
            node_type=settings.node_type,
            authorization_mode="AUTH_MODE_IAM_AUTH",
            transit_encryption_mode="TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION",
            zone_distribution_config={"mode": "MULTI_ZONE"},
            persistence_config=persistence_config(settings),
            psc_configs=[{"network": network.id}],
            kms_key=kms_key.id,
            maintenance_policy={
                "weekly_maintenance_windows": [
                    {
                        "day": settings.maintenance_day,
                        "start_time": {
                            "hours": settings.maintenance_hour,
                            "minutes": 0,
                            "seconds": 0,
                            "nanos": 0,
                        },
                    }
                ]
            },
            redis_configs=REDIS_CONFIGS,
            deletion_protection_enabled=deletion_protection,
            labels=dict(labels),
            # `after`: e.g. the key ring, whose grant lets Memorystore use the key.
            # Fixed name: a replacement (new key, zone distribution) goes after the old one;
            # in prod its deletion protection refuses that delete, so it stops there.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.connection_policy, *after],
                delete_before_replace=True,
            ),
        )

        resource_name = cluster_resource_name(project_id, region, name)
        self.connection_grants = [
            gcp.projects.IAMMember(
                f"{name}-connect-{who}",
                project=project_id,
                role=CONNECT_ROLE,
                member=member,
                condition={
                    "title": f"only {name}",
                    "description": f"Connect to the Redis cluster {name} and no other",
                    "expression": f'resource.name == "{resource_name}"',
                },
                opts=child,
            )
            for who, member in connection_members.items()
        ]

        # "host:port" of the cluster's discovery endpoint: what a cluster client starts from.
        self.discovery_endpoint: pulumi.Output[str] = self.cluster.discovery_endpoints.apply(
            _endpoint
        )
        self.register_outputs(
            {"cluster": self.cluster.id, "discoveryEndpoint": self.discovery_endpoint}
        )


def _endpoint(endpoints: Any) -> str:
    if not endpoints:
        return ""
    first = endpoints[0]
    address = first.get("address") if isinstance(first, dict) else first.address
    port = first.get("port") if isinstance(first, dict) else first.port
    return f"{address}:{port or PORT}"
