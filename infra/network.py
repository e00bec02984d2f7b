"""The network: one custom-mode VPC, a subnet with NAT per region, deny-by-default firewalls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_gcp as gcp

from infra.config import NetworkSettings, RegionConfig

# Google's health-check and load-balancer probe ranges.
HEALTH_CHECK_RANGES = ["35.191.0.0/16", "130.211.0.0/22"]
KUBELET_PORT = 10250  # the control plane reaches kubelets for logs, exec and metrics
FIREWALL_LOGS: gcp.compute.FirewallLogConfigArgsDict = {"metadata": "INCLUDE_ALL_METADATA"}
# The default deny sees every scanner on the internet (the nodes are private behind NAT):
# logged, for the record, without the VM and VPC annotations that multiply the bill.
DENY_LOGS: gcp.compute.FirewallLogConfigArgsDict = {"metadata": "EXCLUDE_ALL_METADATA"}


class Vpc(pulumi.ComponentResource):
    """The global VPC and its firewall defaults: deny all ingress except what is listed."""

    def __init__(
        self,
        name: str,
        regions: Sequence[RegionConfig],
        control_plane_targets: Mapping[str, int],
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`control_plane_targets`: what the GKE control planes call on the nodes, by name →
        target port: the kubelet and every APIService and admission-webhook backend (a private
        control plane reaches nodes only through the ports opened here)."""
        super().__init__("signal:infra:Vpc", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.network = gcp.compute.Network(
            name,
            name=name,
            auto_create_subnetworks=False,
            routing_mode="GLOBAL",
            description="signal-platform VPC: custom subnets, one per region",
            opts=child,
        )
        internal = [
            cidr
            for r in regions
            for cidr in (r.network.nodes_cidr, r.network.pods_cidr, r.network.services_cidr)
        ]
        masters = [r.network.master_cidr for r in regions]

        self.deny_ingress = gcp.compute.Firewall(
            f"{name}-deny-all-ingress",
            network=self.network.id,
            direction="INGRESS",
            priority=65534,
            denies=[{"protocol": "all"}],
            source_ranges=["0.0.0.0/0"],
            log_config=DENY_LOGS,
            description="Default deny: nothing enters unless a rule below allows it",
            opts=child,
        )
        self.allow_internal = gcp.compute.Firewall(
            f"{name}-allow-internal",
            network=self.network.id,
            direction="INGRESS",
            priority=1000,
            allows=[{"protocol": "tcp"}, {"protocol": "udp"}, {"protocol": "icmp"}],
            source_ranges=internal,
            log_config=FIREWALL_LOGS,
            description="Nodes, pods and services of every region talk to each other",
            opts=child,
        )
        self.allow_health_checks = gcp.compute.Firewall(
            f"{name}-allow-health-checks",
            network=self.network.id,
            direction="INGRESS",
            priority=1000,
            allows=[{"protocol": "tcp"}],
            source_ranges=HEALTH_CHECK_RANGES,
            log_config=FIREWALL_LOGS,
            description="Google Cloud load balancer health checks",
            opts=child,
        )
        self.allow_control_plane = gcp.compute.Firewall(
            f"{name}-allow-control-plane",
            network=self.network.id,
            direction="INGRESS",
            priority=1000,
            allows=[
                {
                    "protocol": "tcp",
                    "ports": [str(p) for p in sorted(set(control_plane_targets.values()))],
                }
            ],
            source_ranges=masters,
            log_config=FIREWALL_LOGS,
            description="GKE control planes reach " + ", ".join(sorted(control_plane_targets)),
            opts=child,
        )
        self.register_outputs({"network": self.network.id})


class RegionalNetwork(pulumi.ComponentResource):
    """One region's subnet (with pod and service ranges), Cloud Router and Cloud NAT."""

    PODS_RANGE = "pods"
    SERVICES_RANGE = "services"

    def __init__(
        self,
        name: str,
        region: RegionConfig,
        network: gcp.compute.Network,
        settings: NetworkSettings,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:RegionalNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            name=f"{name}-subnet",
            region=region.name,
            network=network.id,
            ip_cidr_range=region.network.nodes_cidr,
            secondary_ip_ranges=[
                {"range_name": self.PODS_RANGE, "ip_cidr_range": region.network.pods_cidr},
                {"range_name": self.SERVICES_RANGE, "ip_cidr_range": region.network.services_cidr},
            ],
            private_ip_google_access=True,
            stack_type="IPV4_ONLY",
            log_config={
                "aggregation_interval": "INTERVAL_5_SEC",
                "flow_sampling": settings.flow_log_sampling,
                "metadata": "INCLUDE_ALL_METADATA",
            },
            opts=child,
        )
        self.router = gcp.compute.Router(
            f"{name}-router",
            name=f"{name}-router",
            region=region.name,
            network=network.id,
            opts=child,
        )
        self.nat = gcp.compute.RouterNat(
            f"{name}-nat",
            name=f"{name}-nat",
            region=region.name,
            router=self.router.name,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
            subnetworks=[{"name": self.subnet.id, "source_ip_ranges_to_nats": ["ALL_IP_RANGES"]}],
            enable_endpoint_independent_mapping=False,
            min_ports_per_vm=256,
            log_config={"enable": True, "filter": settings.nat_log_filter},
            opts=child,
        )
        self.register_outputs({"subnet": self.subnet.id, "router": self.router.id})
