"""The preview identity: who runs `pulumi preview` in CI reaches every cluster through Connect
Gateway read-only (the gateway's reader role, Kubernetes' `view`), and nothing more."""

from __future__ import annotations

import json

from infra.cluster import GATEWAY_ROLES, PREVIEW_GATEWAY_ROLES
from tests.conftest import REPO
from tests.infra.stack_config import load, section
from tools.engine import plan as plan_stack
from tools.inventory import Inventory

PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"


def gateway_roles(plan: Inventory) -> set[tuple[str, str]]:
    return {
        (g.inputs["member"], g.inputs["role"])
        for g in plan.of_type(PROJECT_IAM)
        if g.inputs["role"].startswith("roles/gkehub.")
    }


def bindings_of(plan: Inventory, name: str) -> list:
    return [b for b in plan.of_type(BINDING) if b.inputs["metadata"]["name"] == name]


def test_the_stacks_preview_as_the_preview_workflows_identity(stack_plan: Inventory):
    project = stack_plan.outputs["project"]
    assert load(stack_plan.stack).cluster.previewers == (
        f"serviceAccount:signal-previewer@{project}.iam.gserviceaccount.com",
    )
    preview = (REPO / ".github" / "workflows" / "preview.yml").read_text()
    assert "service_account: ${{ vars.GCP_PREVIEW_SERVICE_ACCOUNT }}" in preview


def test_previewers_get_the_gateways_read_only_role_and_kubernetes_view(stack_plan: Inventory):
    cluster = load(stack_plan.stack).cluster
    assert PREVIEW_GATEWAY_ROLES == ("roles/gkehub.gatewayReader", "roles/gkehub.viewer")
    assert gateway_roles(stack_plan) == {
        *((m, r) for m in cluster.deployers for r in GATEWAY_ROLES),
        *((m, r) for m in cluster.previewers for r in PREVIEW_GATEWAY_ROLES),
    }
    for member in cluster.previewers:
        assert (member, "roles/gkehub.gatewayEditor") not in gateway_roles(stack_plan)
    bindings = bindings_of(stack_plan, "signal-platform-previewers")
    assert len(bindings) == len(stack_plan.outputs["regions"])  # one per cluster
    for binding in bindings:
        assert binding.inputs["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "view",
        }
        assert binding.inputs["subjects"] == [
            {"kind": "User", "name": m.split(":", 1)[1], "apiGroup": "rbac.authorization.k8s.io"}
            for m in cluster.previewers
        ]
    # Nothing else in the clusters names a previewer: no write access through another binding.
    names = {m.split(":", 1)[1] for m in cluster.previewers}
    for binding in stack_plan.of_type(BINDING):
        if binding not in bindings:
            assert not names & {s["name"] for s in binding.inputs.get("subjects", [])}


def test_the_kubernetes_provider_waits_for_the_previewers_gateway_roles(stack_plan: Inventory):
    """Created before the first Kubernetes call, like the deployers' (a preview right after
    the first `pulumi up` can then reach the clusters)."""
    grants = {
        g.urn
        for g in stack_plan.of_type(PROJECT_IAM)
        if g.inputs["role"] == "roles/gkehub.gatewayReader"
    }
    providers = stack_plan.of_type("pulumi:providers:kubernetes")
    assert grants and providers
    for provider in providers:
        assert grants <= set(provider.options["dependencies"])


def test_a_member_who_deploys_and_previews_gets_each_role_once():
    cluster = section("dev", "cluster")
    cluster["previewers"] = [*cluster["previewers"], *cluster["deployers"]]
    plan = plan_stack(REPO, "dev", {"signal-platform:cluster": json.dumps(cluster)})
    (deployer,) = cluster["deployers"]
    roles = [g.inputs["role"] for g in plan.of_type(PROJECT_IAM) if g.inputs["member"] == deployer]
    assert sorted(roles) == sorted({*GATEWAY_ROLES, *PREVIEW_GATEWAY_ROLES})
