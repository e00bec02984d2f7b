"""The signal-platform policy pack: builds the PolicyPack, which serves the engine until killed.

Constructing `PolicyPack` starts the Analyzer gRPC server, prints its port on stdout and blocks;
nothing else belongs here. Rules live in `rules/<domain>.py`.
"""

# pulumi_policy lives only in policies/venv (it pins protobuf 5), not in the .venv pyright
# checks against; the pack's own tests exercise these imports through the real process.

from pulumi_policy import EnforcementLevel, PolicyPack
from rules import ALL_POLICIES

PolicyPack(
    name="signal-platform",
    policies=ALL_POLICIES,
    enforcement_level=EnforcementLevel.ADVISORY,
    description="Compliance rules for signal-platform: CIS GKE, Checkov, Polaris/kube-score, "
    "Pod Security Standards, Istio security best practices and GKE docs.",
    provider="gcp",
    tags=["gcp", "gke", "kubernetes", "istio"],
)
