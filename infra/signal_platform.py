"""The platform: global resources once, then one `Region` per configured region."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.admission import admission_policy
from infra.artifacts import ArtifactStore
from infra.autoscale import NAMESPACE as INTELLIGENCE_NAMESPACE
from infra.autoscale import SERVICE_ACCOUNT as INTELLIGENCE_ACCOUNT
from infra.autoscale import (
    AnomalyAlerts,
    Intelligence,
    desired_replicas_metric,
)
from infra.cluster import (
    INFERENCE_COMPUTE_CLASS,
    INFERENCE_PRIORITY,
    ClusterNetwork,
    Fleet,
    GatewayAccess,
    GkeCluster,
)
from infra.config import RegionConfig, StackConfig, load_catalog
from infra.config.data import regions_within
from infra.identity import (
    REGIONAL_KEYS,
    WAREHOUSE_KEYS,
    KeyRing,
    MonitoringReader,
    PoolGrants,
    ServiceAccounts,
)
from infra.memorystore import RedisCluster
from infra.mesh import WEBHOOK_PORT, Mesh
from infra.messaging import Messaging
from infra.metrics_adapter import METRICS_ADAPTER, METRICS_NAMESPACE, SECURE_PORT, MetricsAdapter
from infra.network import KUBELET_PORT, RegionalNetwork, Vpc
from infra.observability import Observability
from infra.service_agents import ServiceAgents
from infra.settle import API_PROPAGATION, settle
from infra.warehouse import Warehouse
from infra.workloads import (
    Placement,
    ServiceEndpoints,
    WorkloadSet,
    check_planned_service_config,
    mesh_services,
    server_ca_bundle,
    triton_model_files,
)

# Every API the stack enables, and why. Each resource type the program declares needs its API
# on first (the pack's `apply-api-enabled` rule checks it against a table of type → API with
# sources, policies/rules/apply_order.yaml); the rest are called at run time. The APIs that
# cannot enable themselves (Cloud Resource Manager, Service Usage) or that the deploy identity
# needs before Pulumi runs (IAM Credentials, STS) are the bootstrap's (infra/bootstrap.py).
APIS: dict[str, str] = {
    "artifactregistry.googleapis.com": "the image registry",
    "bigquery.googleapis.com": "the warehouse",
    "bigquerystorage.googleapis.com": "the service writes rows with the Storage Write API",
    "billingbudgets.googleapis.com": "the budget",
    "binaryauthorization.googleapis.com": "clusters enforce Binary Authorization",
    "cloudkms.googleapis.com": "CMEK keys",
    "cloudtrace.googleapis.com": "the service's traces (roles/cloudtrace.agent)",
    "compute.googleapis.com": "the VPC, firewalls, NAT and nodes",
    "connectgateway.googleapis.com": "CI reaches the clusters' Kubernetes API through it",
    "container.googleapis.com": "GKE",
    "containeranalysis.googleapis.com": "Artifact Analysis keeps the registry's scan results",
    "containerscanning.googleapis.com": "Artifact Analysis scans every image pushed",
    "containersecurity.googleapis.com": "GKE security posture",
    "gkeconnect.googleapis.com": "Connect Gateway's dependency (GKE docs, 'Set up Connect gateway')",
    "gkehub.googleapis.com": "fleet memberships of the clusters",
    "iam.googleapis.com": "service accounts",
    "logging.googleapis.com": "log-based metrics and the audit sink",
    "monitoring.googleapis.com": "alerts, the SLO and the metrics adapter",
    "networkconnectivity.googleapis.com": "Private Service Connect policies for Redis",
    "ondemandscanning.googleapis.com": "CI scans the service image before pushing it (image.yml)",
    "pubsub.googleapis.com": "topics and subscriptions",
    "redis.googleapis.com": "Memorystore for Redis Cluster",
    # Memorystore for Redis Cluster's prerequisites ("Create instances": Memorystore, Network
    # Connectivity and Service Consumer Management APIs): its PSC endpoints are created
    # through the service connection policy by Service Consumer Management.
    "serviceconsumermanagement.googleapis.com": "Redis Cluster's Private Service Connect endpoints",
    "storage.googleapis.com": "the models and audit-log buckets",
}
# What each GKE control plane calls on the nodes, by target port: the private control plane
# reaches them only through the ports the VPC's firewall opens (infra/network.py).
CONTROL_PLANE_TARGETS = {
    "kubelets": KUBELET_PORT,
    "istiod's admission webhooks": WEBHOOK_PORT,
    "the metrics adapter's APIService": SECURE_PORT,
}


class Region(pulumi.ComponentResource):
    """Everything the platform runs in one region."""

    def __init__(
        self,
        name: str,
        region: RegionConfig,
        stack: StackConfig,
        vpc: Vpc,
        accounts: ServiceAccounts,
        agents: ServiceAgents,
        fleet: Fleet,
        admission: pulumi.Resource,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`admission`: the Binary Authorization policy, in force before any pod is created.
        What runs on the cluster as the identity pool's principals comes after, from
        `deploy_workloads`, once the platform has granted to them."""
        super().__init__("signal:infra:Region", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.config = region
        self.network = RegionalNetwork(region.name, region, vpc.network, stack.network, child)
        self.keys = KeyRing(
            f"{region.name}-keys",
            region.name,
            REGIONAL_KEYS,
            agents,
            stack.labels,
            hsm=stack.is_prod,
            protect=stack.is_prod,
            ring_name=stack.key_ring_name(f"{region.name}-keys"),
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
            after=self.keys.grants_for("redis"),
            opts=child,
        )
        self._cluster(region, stack, vpc, accounts, fleet, admission)
        self.register_outputs({"subnet": self.network.subnet.id})

    def _cluster(
        self,
        region: RegionConfig,
        stack: StackConfig,
        vpc: Vpc,
        accounts: ServiceAccounts,
        fleet: Fleet,
        admission: pulumi.Resource,
    ) -> None:
        """The cluster and its mesh."""
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
            keys=self.keys,
            node_accounts={pool: a.email for pool, a in accounts.nodes.items()},
            gpu_zones=load_catalog().gpus_in(region.name),
            fleet=fleet,
            labels=stack.labels,
            deletion_protection=stack.deletion_protection,
            admission=[admission],
            opts=child,
        )
        on_cluster = pulumi.ResourceOptions(parent=self, provider=self.cluster.provider)
        self.mesh = Mesh(
            f"{region.name}-mesh",
            stack.mesh,
            cluster=self.cluster.name,
            services=mesh_services(),
            labels=stack.labels,
            opts=on_cluster,
        )

    def deploy_workloads(
        self,
        stack: StackConfig,
        accounts: ServiceAccounts,
        models_bucket: pulumi.Input[str],
        identity_ready: pulumi.Resource,
    ) -> None:
        """What runs on the cluster as the identity pool's principals, after `identity_ready`
        (the delay after the grants to them: a pod's first token exchange fails without): the
        metrics adapter, and the workloads (the stack's own image, the model in its bucket)
        only from stage `workloads`: on a new project neither exists before the first `pulumi
        up` has created their registry and bucket, and their rollouts would fail to become
        ready."""
        region = self.config
        on_cluster = pulumi.ResourceOptions(parent=self, provider=self.cluster.provider)
        # The metrics adapter, the scaler and the detector read Cloud Monitoring as pool
        # principals: they wait for those grants too.
        after_mesh = pulumi.ResourceOptions.merge(
            on_cluster, pulumi.ResourceOptions(depends_on=[self.mesh, identity_ready])
        )
        self.metrics_adapter = MetricsAdapter(
            f"{region.name}-metrics-adapter",
            image=region.cluster.metrics_adapter_image,
            replicas=region.cluster.metrics_adapter_replicas,
            resources=region.cluster.metrics_adapter_resources,
            control_plane_cidr=self.cluster.control_plane_cidr,
            tracing_collector=stack.mesh.tracing_collector,
            labels=stack.labels,
            unpinned_images=stack.unpinned_images,
            opts=after_mesh,
        )
        if not stack.deploys_workloads:
            return
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
                gpu_on_demand=any(not pool.spot for pool in region.node_pools.gpu),
            ),
            model_bucket=models_bucket,
            endpoints=ServiceEndpoints.of(
                stack,
                self.redis.discovery_endpoint,
                self.redis.cluster.managed_server_cas.apply(server_ca_bundle),
            ),
            storage_class=self.cluster.storage_class,
            tracing_collector=stack.mesh.tracing_collector,
            trace_sampling_percent=stack.mesh.trace_sampling_percent,
            labels=stack.labels,
            signal_metrics=[desired_replicas_metric(region.name, self.cluster.name)]
            if predictive
            else [],
            unpinned_images=stack.unpinned_images,
            opts=pulumi.ResourceOptions.merge(
                on_cluster,
                pulumi.ResourceOptions(
                    depends_on=[
                        self.mesh,
                        *self.cluster.priority_classes.values(),
                        identity_ready,
                    ]
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
                unpinned_images=stack.unpinned_images,
                opts=after_mesh,
            )


class Platform(pulumi.ComponentResource):
    """The whole stack: APIs, identities, the VPC, per-region resources, artefact stores.

    Apply order, as `pulumi up` needs it: APIs → service agents → key grants → the resources
    that encrypt with the keys; clusters (which create the Workload Identity pool) → the
    grants to the pool's principals → what runs as them. Each arrow out of APIs or grants
    passes a settle delay (infra/settle.py): Google applies both eventually.
    """

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("signal:infra:Platform", name, None, opts)
        check_planned_service_config(config)
        child = pulumi.ResourceOptions(parent=self)
        labels = config.labels

        project = gcp.organizations.get_project_output(
            project_id=config.project_id, opts=pulumi.InvokeOptions(parent=self)
        )
        self.apis = {
            api: gcp.projects.Service(
                f"api-{api.split('.')[0]}",
                project=config.project_id,
                service=api,
                disable_on_destroy=False,
                opts=child,
            )
            for api in APIS
        }
        # Everything else waits for the APIs to be on and their enablement to have propagated.
        self.apis_settled = settle(
            "apis-settle", list(self.apis.values()), API_PROPAGATION, parent=self
        )
        after_apis = pulumi.ResourceOptions(
            parent=self, depends_on=[*self.apis.values(), self.apis_settled]
        )
        regions = [config.region(r) for r in config.regions]
        # Enforced by every cluster: in force before the first pod of any of them.
        self.admission = admission_policy(
            "binary-authorization",
            config.project_id,
            [
                config.workloads.signal_service.image,
                config.workloads.triton.image,
                *(r.cluster.metrics_adapter_image for r in regions),
            ],
            after_apis,
        )
        self.agents = ServiceAgents(
            "service-agents", config.project_id, project.number, self.apis, self.apis_settled, child
        )

        pool_names = sorted({"system", *(p.name for r in regions for p in r.node_pools.gpu)})
        self.accounts = ServiceAccounts("identity", config.project_id, pool_names, after_apis)
        self.vpc = Vpc("signal-vpc", regions, CONTROL_PLANE_TARGETS, after_apis)
        # Who deploys (cluster-admin) and who previews (read-only) through Connect Gateway
        # (infra/cluster.py says why the gateway).
        deployers, previewers = config.cluster.deployers, config.cluster.previewers
        self.gateway_access = GatewayAccess(
            "connect-gateway", config.project_id, deployers, previewers, after_apis
        )
        fleet = Fleet(
            project_number=project.number,
            membership_ready=[
                self.apis["gkehub.googleapis.com"],
                *self.agents["gkehub.googleapis.com"].ready,
            ],
            gateway_ready=[
                self.apis["connectgateway.googleapis.com"],
                *self.gateway_access.grants,
                self.gateway_access.settled,
            ],
            deployers=deployers,
            previewers=previewers,
        )
        self.regions = {
            r.name: Region(
                r.name,
                r,
                config,
                self.vpc,
                self.accounts,
                self.agents,
                fleet,
                self.admission,
                after_apis,
            )
            for r in regions
        }
        # The identity pool exists once a cluster does: grants to its principals wait for them,
        # and what runs as those principals in each region for the grants to take effect.
        intelligence = config.intelligence
        readers = {
            "metrics-adapter-monitoring-viewer": MonitoringReader(
                METRICS_NAMESPACE, METRICS_ADAPTER
            )
        }
        if intelligence.predictive_scaling.enabled or intelligence.anomaly_detection.enabled:
            # Every region's scaler and detector read Managed Prometheus data (one grant).
            readers["intelligence-monitoring-viewer"] = MonitoringReader(
                INTELLIGENCE_NAMESPACE, INTELLIGENCE_ACCOUNT
            )
        self.pool_grants = PoolGrants(
            "identity-pool-grants",
            config.project_id,
            project.number,
            self.accounts.workloads,
            readers,
            pulumi.ResourceOptions(
                parent=self, depends_on=[r.cluster.cluster for r in self.regions.values()]
            ),
        )
        # BigQuery and Pub/Sub keys must live where the warehouse lives (e.g. the "us" multi-region).
        self.warehouse_keys = KeyRing(
            f"{config.bigquery.location.lower()}-warehouse-keys",
            config.bigquery.location.lower(),
            WAREHOUSE_KEYS,
            self.agents,
            labels,
            hsm=config.is_prod,
            protect=config.is_prod,
            ring_name=config.key_ring_name(f"{config.bigquery.location.lower()}-warehouse-keys"),
            opts=after_apis,
        )
        self._data_platform(config, project.number, after_apis)

        # The models bucket is encrypted with the primary region's key, so it comes after the
        # regions' key rings, and before the workloads: Triton mounts it.
        primary = self.regions[config.regions[0]]
        nodes = {pool: account.member for pool, account in self.accounts.nodes.items()}
        self.artifacts = ArtifactStore(
            "artifacts",
            project_id=config.project_id,
            location=primary.config.name,
            keys=primary.keys,
            # Triton serves the model build; the service loads it as its in-process fallback.
            model_readers={k: a.member for k, a in self.accounts.workloads.items()},
            image_readers=nodes,
            labels=labels,
            model_files=triton_model_files(config.workloads.triton.model),
            force_destroy=not config.is_prod,
            opts=after_apis,
        )
        for region in self.regions.values():
            region.deploy_workloads(
                config, self.accounts, self.artifacts.models.name, self.pool_grants.settled
            )
        if intelligence.anomaly_detection.enabled:
            self.anomaly_alerts = AnomalyAlerts(
                "anomaly-alerts",
                intelligence,
                intelligence.anomaly_detection.alert_series,
                [channel.name for channel in self.observability.channels.values()],
                labels,
                self.observability.dashboard_url,
                after_apis,
            )
        self.register_outputs({"network": self.vpc.network.id})

    def _data_platform(
        self, config: StackConfig, project_number: pulumi.Output[str], opts: pulumi.ResourceOptions
    ) -> None:
        """The warehouse, messaging and observability: global, beside the regions. Each waits
        for the grants on the keys it encrypts with (and the Pub/Sub agent it grants to)."""
        keys = self.warehouse_keys
        service = self.accounts.workloads["signal-service"]
        pubsub_agent = self.agents["pubsub.googleapis.com"]

        def after(*ready: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=list(ready))
            )

        self.warehouse = Warehouse(
            "warehouse",
            project_id=config.project_id,
            settings=config.bigquery,
            kms_key=keys.keys["bigquery"],
            # The Pub/Sub agent writes the BigQuery subscription's rows.
            writers={"signal-service": service.email, "pubsub-agent": pubsub_agent.email},
            readers={},
            labels=config.labels,
            deletion_protection=config.is_prod,
            opts=after(*keys.grants_for("bigquery"), *pubsub_agent.ready),
        )
        signals = self.warehouse.tables.get("signals")
        self.messaging = Messaging(
            "messaging",
            agent_member=pubsub_agent.member,
            settings=config.pubsub,
            # Messages are stored where their key lives: the warehouse's location.
            regions=regions_within(config.bigquery.location, config.regions),
            kms_key=keys.keys["pubsub"],
            signals_table=self.warehouse.path("signals") if signals is not None else None,
            signals_table_ready=[] if signals is None else [signals, self.warehouse.access_settled],
            publishers={"signal-service": service.member},
            consumers={"signal-service": service.member},
            labels=config.labels,
            opts=after(*keys.grants_for("pubsub"), *pubsub_agent.ready),
        )
        self.observability = Observability(
            "observability",
            project_id=config.project_id,
            project_number=project_number,
            settings=config.observability,
            budget=config.budget,
            audit_location=config.bigquery.location,
            audit_kms_key=keys.keys["audit-logs"],
            labels=config.labels,
            protect=config.is_prod,
            slo=config.has_slo,
            opts=after(*keys.grants_for("audit-logs")),
        )
