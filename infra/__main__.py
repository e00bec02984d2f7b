"""The Pulumi program: `pulumi up` (or `python -m tools plan`) runs this file as __main__."""

import sys
from pathlib import Path

# Pulumi runs `main: infra/` as a script directory; the `infra` package lives one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi
import pulumi_gcp as gcp

from infra.config import StackConfig
from infra.signal_platform import Platform
from infra.workloads import triton_model_config

config = StackConfig.from_pulumi()

# One explicit provider: every resource inherits its project and the stack's cost labels.
provider = gcp.Provider(
    "gcp",
    project=config.project_id,
    region=config.regions[0],
    default_labels=config.labels,
)
platform = Platform("signal-platform", config, pulumi.ResourceOptions(providers=[provider]))

pulumi.export("project", config.project_id)
pulumi.export("regions", list(config.regions))
pulumi.export("network", platform.vpc.network.id)
pulumi.export("subnets", {name: r.network.subnet.id for name, r in platform.regions.items()})
pulumi.export("registry", platform.artifacts.registry.registry_uri)
pulumi.export("modelBucket", platform.artifacts.models.url)
pulumi.export("serviceAccounts", {k: a.email for k, a in platform.accounts.workloads.items()})
pulumi.export("redis", {name: r.redis.discovery_endpoint for name, r in platform.regions.items()})
pulumi.export("dataset", platform.warehouse.dataset.dataset_id)
pulumi.export("topics", {name: t.id for name, t in platform.messaging.topics.items()})
pulumi.export("auditBucket", platform.observability.audit_bucket.url)
pulumi.export("clusters", {name: r.cluster.cluster.name for name, r in platform.regions.items()})
pulumi.export("apiHost", config.mesh.api.host)
# What `python -m app.model build` takes to render Triton's config.pbtxt (values from config).
pulumi.export("tritonModel", triton_model_config(config.workloads.triton.model))
