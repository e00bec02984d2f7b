"""The platform: global resources once, then one `Region` per configured region."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.artifacts import ArtifactStore
from infra.autoscale import NAMESPACE as INTELLIGENCE_NAMESPACE
from infra.autoscale import SERVICE_ACCOUNT as INTELLIGENCE_ACCOUNT
from infra.autoscale import (
    AnomalyAlerts,
    Intelligence,
    desired_replicas_metric,
)
from infra.cluster import INFERENCE_COMPUTE_CLASS, INFERENCE_PRIORITY, ClusterNetwork, GkeCluster
from infra.config import RegionConfig, StackConfig, load_catalog
from infra.identity import (
    REGIONAL_KEYS,
    WAREHOUSE_KEYS,
    KeyRing,
    ServiceAccounts,
    monitoring_viewer,
)
from infra.mesh import Mesh
from infra.messaging import Messaging, pubsub_agent
from infra.network import RegionalNetwork, Vpc
from infra.observability import Observability
from infra.redis import RedisCluster
from infra.warehouse import Warehouse
from infra.workloads import (
    METRICS_ADAPTER,
    METRICS_NAMESPACE,
    MetricsAdapter,
    Placement,
    ServiceEndpoints,
    WorkloadSet,
    mesh_services,
    server_ca_bundle,
    triton_model_files,
)

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
        models_bucket: pulumi.Input[str],
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
        self._compute(region, stack, vpc, accounts, project_number, models_bucket)
        self.register_outputs({"subnet": self.network.subnet.id})

    def _compute(
        self,
        region: RegionConfig,
        stack: StackConfig,
        vpc: Vpc,
        accounts: ServiceAccounts,
        project_number: pulumi.Input[str],
        models_bucket: pulumi.Input[str],
    ) -> None:
        """Cluster → mesh → workloads: what runs on Kubernetes in this region."""
        child = pulumi.ResourceOptions(parent=self)
        self.cluster = GkeCluster(
            f"{region.name}-cluster",
            region,
            project_id=stack.project_id,
            network=ClusterNetwork(
                network=vpc.network.id,
                subnet=self.network.subnet.id,
                pods_range=RegionalNetwork.PODS_RANGE,
                services_range=RegionalNetwork.SERVICES_RANGE,
            ),
            secrets_key=self.keys.keys["gke-secrets"].id,
            disk_key=self.keys.keys["disks"].id,
            node_accounts={pool: a.email for pool, a in accounts.nodes.items()},
            gpu_zones=load_catalog().gpus_in(region.name),
            labels=stack.labels,
            deletion_protection=stack.deletion_protection,
            opts=child,
        )
        on_cluster = pulumi.ResourceOptions(parent=self, provider=self.cluster.provider)
        self.mesh = Mesh(
            f"{region.name}-mesh",
            stack.mesh,
            region=region.name,
            regions=stack.regions,
            cluster=self.cluster.name,
            network=vpc.network.name,
            services=mesh_services(),
            labels=stack.labels,
            opts=on_cluster,
        )
        after_mesh = pulumi.ResourceOptions.merge(
            on_cluster, pulumi.ResourceOptions(depends_on=[self.mesh])
        )
        self.metrics_adapter = MetricsAdapter(
            f"{region.name}-metrics-adapter",
            image=region.cluster.metrics_adapter_image,
            control_plane_cidr=self.cluster.control_plane_cidr,
            tracing_collector=stack.mesh.tracing_collector,
            labels=stack.labels,
            opts=after_mesh,
        )
        intelligence = stack.intelligence
        predictive = intelligence.predictive_scaling.enabled
        workloads = stack.workloads
        if predictive:
            # Beside the scaler's forecast replicas, CPU is the backstop for unforecast bursts.
            signal = workloads.signal_service.model_copy(
                update={"target_cpu_percent": intelligence.predictive_scaling.cpu_backstop_percent}
            )
            workloads = workloads.model_copy(update={"signal_service": signal})
        self.workloads = WorkloadSet(
            f"{region.name}-workloads",
            cluster=self.cluster.name,
            namespace=self.mesh.namespace,
            settings=workloads,
            google_accounts={k: a.email for k, a in accounts.workloads.items()},
            placement=Placement(
                compute_class=INFERENCE_COMPUTE_CLASS,
                priority_class=INFERENCE_PRIORITY,
                accelerator=self.cluster.accelerator,
            ),
            model_bucket=models_bucket,
            endpoints=ServiceEndpoints(
                project_id=stack.project_id,
                ticks_topic=stack.pubsub.ticks_topic,
                signals_topic=stack.pubsub.signals_topic,
                dataset=stack.bigquery.dataset_id,
                redis=self.redis.discovery_endpoint,
                redis_ca=self.redis.cluster.managed_server_cas.apply(server_ca_bundle),
            ),
            peer_pod_ranges=[
                stack.region(r).network.pods_cidr for r in stack.regions if r != region.name
            ],
            tracing_collector=stack.mesh.tracing_collector,
            trace_sampling_percent=stack.mesh.trace_sampling_percent,
            labels=stack.labels,
            signal_metrics=[desired_replicas_metric(region.name, self.cluster.name)]
            if predictive
            else [],
            opts=pulumi.ResourceOptions.merge(
                on_cluster,
                pulumi.ResourceOptions(
                    depends_on=[self.mesh, *self.cluster.priority_classes.values()]
                ),
            ),
        )
        if predictive or intelligence.anomaly_detection.enabled:
            self.intelligence = Intelligence(
                f"{region.name}-intelligence",
                project_id=stack.project_id,
                region=region.name,
                cluster=self.cluster.name,
                image=stack.workloads.signal_service.image,
                settings=intelligence,
                workload=stack.workloads.signal_service,
                tracing_collector=stack.mesh.tracing_collector,
                labels=stack.labels,
                opts=after_mesh,
            )


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
        # Triton mounts the models bucket, which the artefact store creates after the regions
        # (it is encrypted with the primary region's key): regions get its name as it resolves.
        models_bucket, resolve_models_bucket = pulumi.deferred_output()
        self.regions = {
            r.name: Region(
                r.name,
                r,
                config,
                self.vpc,
                self.accounts,
                project.number,
                models_bucket,
                after_apis,
            )
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
            # Triton serves the model build; the service loads it as its in-process fallback.
            model_readers={k: a.member for k, a in self.accounts.workloads.items()},
            image_readers=nodes,
            labels=labels,
            model_files=triton_model_files(config.workloads.triton.model),
            force_destroy=not config.is_prod,
            opts=after_apis,
        )
        resolve_models_bucket(self.artifacts.models.name)
        # One grant serves every cluster's metrics adapter (the principal is project-wide).
        self.metrics_reader = monitoring_viewer(
            "metrics-adapter-monitoring-viewer",
            config.project_id,
            project.number,
            METRICS_NAMESPACE,
            METRICS_ADAPTER,
            after_apis,
        )
        intelligence = config.intelligence
        if intelligence.predictive_scaling.enabled or intelligence.anomaly_detection.enabled:
            # Every region's scaler and detector read Managed Prometheus data (one grant).
            self.intelligence_reader = monitoring_viewer(
                "intelligence-monitoring-viewer",
                config.project_id,
                project.number,
                INTELLIGENCE_NAMESPACE,
                INTELLIGENCE_ACCOUNT,
                after_apis,
            )
        if intelligence.anomaly_detection.enabled:
            self.anomaly_alerts = AnomalyAlerts(
                "anomaly-alerts",
                intelligence,
                intelligence.anomaly_detection.alert_series,
                [channel.name for channel in self.observability.channels.values()],
                labels,
                after_apis,
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
