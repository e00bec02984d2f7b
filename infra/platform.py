"""The platform: global resources once, then one `Region` per configured region."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.artifacts import ArtifactStore
from infra.config import RegionConfig, StackConfig
from infra.identity import REGIONAL_KEYS, WAREHOUSE_KEYS, KeyRing, ServiceAccounts
from infra.messaging import Messaging, pubsub_agent
from infra.network import RegionalNetwork, Vpc
from infra.observability import Observability
from infra.redis import RedisCluster
from infra.warehouse import Warehouse

APIS = (
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "bigquerystorage.googleapis.com",
    "cloudkms.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "containersecurity.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "networkconnectivity.googleapis.com",
    "pubsub.googleapis.com",
    "redis.googleapis.com",
    "billingbudgets.googleapis.com",
)


class Region(pulumi.ComponentResource):
    """Everything the platform runs in one region."""

    def __init__(
        self,
        name: str,
        region: RegionConfig,
        stack: StackConfig,
        vpc: Vpc,
        accounts: ServiceAccounts,
        project_number: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:Region", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.config = region
        self.network = RegionalNetwork(region.name, region, vpc.network, stack.network, child)
        self.keys = KeyRing(
            f"{region.name}-keys",
            region.name,
            REGIONAL_KEYS,
            project_number,
            stack.labels,
            hsm=stack.is_prod,
            opts=child,
        )
        # The L2 cache; the workloads read its discovery endpoint (`self.redis`).
        self.redis = RedisCluster(
            f"{region.name}-cache",
            region=region.name,
            project_id=stack.project_id,
            settings=region.redis,
            network=vpc.network,
            subnet=self.network.subnet,
            kms_key=self.keys.keys["redis"],
            connection_members={"signal-service": accounts.workloads["signal-service"].member},
            labels=stack.labels,
            deletion_protection=stack.is_prod,
            after=[self.keys],
            opts=child,
        )
        self.register_outputs({"subnet": self.network.subnet.id})


class Platform(pulumi.ComponentResource):
    """The whole stack: APIs, identities, the VPC, per-region resources, artefact stores."""

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("signal:infra:Platform", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = config.labels

        project = gcp.organizations.get_project_output(
            project_id=config.project_id, opts=pulumi.InvokeOptions(parent=self)
        )
        self.apis = [
            gcp.projects.Service(
                f"api-{api.split('.')[0]}",
                project=config.project_id,
                service=api,
                disable_on_destroy=False,
                opts=child,
            )
            for api in APIS
        ]
        after_apis = pulumi.ResourceOptions(parent=self, depends_on=self.apis)

        regions = [config.region(r) for r in config.regions]
        pool_names = sorted({"system", *(p.name for r in regions for p in r.node_pools.gpu)})
        self.accounts = ServiceAccounts("identity", config.project_id, pool_names, after_apis)
        self.vpc = Vpc("signal-vpc", regions, after_apis)
        self.regions = {
            r.name: Region(r.name, r, config, self.vpc, self.accounts, project.number, after_apis)
            for r in regions
        }
        # BigQuery and Pub/Sub keys must live where the warehouse lives (e.g. the "us" multi-region).
        self.warehouse_keys = KeyRing(
            f"{config.bigquery.location.lower()}-warehouse-keys",
            config.bigquery.location.lower(),
            WAREHOUSE_KEYS,
            project.number,
            labels,
            hsm=config.is_prod,
            opts=after_apis,
        )
        self._data_platform(config, project.number, after_apis)

        primary = self.regions[config.regions[0]]
        nodes = {pool: account.member for pool, account in self.accounts.nodes.items()}
        self.artifacts = ArtifactStore(
            "artifacts",
            project_id=config.project_id,
            location=primary.config.name,
            kms_key=primary.keys.keys["artifacts"],
            model_readers={"triton": self.accounts.workloads["triton"].member},
            image_readers=nodes,
            labels=labels,
            force_destroy=not config.is_prod,
            opts=after_apis,
        )
        self.register_outputs({"network": self.vpc.network.id})

    def _data_platform(
        self, config: StackConfig, project_number: pulumi.Output[str], opts: pulumi.ResourceOptions
    ) -> None:
        """The warehouse, messaging and observability: global, beside the regions."""
        keys = self.warehouse_keys.keys
        service = self.accounts.workloads["signal-service"]
        after_keys = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=[self.warehouse_keys])
        )
        self.warehouse = Warehouse(
            "warehouse",
            project_id=config.project_id,
            settings=config.bigquery,
            kms_key=keys["bigquery"],
            # The Pub/Sub agent writes the BigQuery subscription's rows.
            writers={"signal-service": service.email, "pubsub-agent": pubsub_agent(project_number)},
            readers={},
            labels=config.labels,
            deletion_protection=config.is_prod,
            opts=after_keys,
        )
        signals = self.warehouse.tables.get("signals")
        self.messaging = Messaging(
            "messaging",
            project_number=project_number,
            settings=config.pubsub,
            regions=config.regions,
            kms_key=keys["pubsub"],
            signals_table=self.warehouse.path("signals") if signals is not None else None,
            signals_table_resource=signals,
            publishers={"signal-service": service.member},
            consumers={"signal-service": service.member},
            labels=config.labels,
            opts=after_keys,
        )
        self.observability = Observability(
            "observability",
            project_id=config.project_id,
            project_number=project_number,
            settings=config.observability,
            budget=config.budget,
            audit_location=config.bigquery.location,
            audit_kms_key=keys["audit-logs"],
            labels=config.labels,
            protect=config.is_prod,
            opts=after_keys,
        )
