"""Binary Authorization: the project's admission policy, which every cluster enforces.

The clusters evaluate `PROJECT_SINGLETON_POLICY_ENFORCE`, so without a declared policy the
project's default (allow everything) would apply and enforcement would be nominal. The policy
denies every image by default and allows only what the program deploys, each allowlist entry
derived from the images the stack configures (not a hand list): the signal service from the
stack's Artifact Registry, Triton from NGC, the metrics adapter from Google's GKE release
registry, and Istio from the hub its charts pull from. Google-maintained system images (GKE's
own add-ons, the Cloud Storage FUSE sidecar, Managed Prometheus, the DCGM exporter) pass by
Google's global policy (`globalPolicyEvaluationMode: ENABLE`).

No attestations are required: the image workflow (.github/workflows/image.yml) scans the
service image but does not attest it, and requiring attestations without an attestor that
signs them would refuse every pod. The pinned digests in the stack files and the reviewed pull
request that changes them are the control.
"""

from __future__ import annotations

from collections.abc import Iterable

import pulumi
import pulumi_gcp as gcp

from infra.config.images import repository

# The hub Istio's Helm charts pull istiod, the proxy and the CNI agent from: their `global.hub`
# default, which infra/mesh.py leaves as it is.
ISTIO_HUB = "docker.io/istio"


def allowlist(images: Iterable[str], hubs: Iterable[str] = (ISTIO_HUB,)) -> list[str]:
    """Binary Authorization name patterns for `images` (their repository at any tag or digest:
    a trailing `*` does not cross a `/`) and for every image under each of `hubs`."""
    patterns = {f"{repository(image)}*" for image in images}
    patterns |= {f"{hub}/*" for hub in hubs}
    return sorted(patterns)


def admission_policy(
    name: str, project_id: str, images: Iterable[str], opts: pulumi.ResourceOptions
) -> gcp.binaryauthorization.Policy:
    """The project's singleton policy: deny by default, allow the stack's images."""
    return gcp.binaryauthorization.Policy(
        name,
        project=project_id,
        description="signal-platform: only the images the stack deploys",
        global_policy_evaluation_mode="ENABLE",
        default_admission_rule={
            "evaluation_mode": "ALWAYS_DENY",
            "enforcement_mode": "ENFORCED_BLOCK_AND_AUDIT_LOG",
        },
        admission_whitelist_patterns=[{"name_pattern": p} for p in allowlist(images)],
        opts=opts,
    )
