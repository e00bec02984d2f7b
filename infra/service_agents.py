"""Service agents: the Google-managed identities the platform grants to, made to exist first.

A grant to a service agent that does not exist yet fails ("service account ... does not
exist"), and most agents are created lazily, on the first call that needs them. Each agent is
therefore made to exist by what Google documents for it, and `ServiceAgent.ready` is what a
grant to it must wait for:

- `IDENTITY`: `gcp.projects.ServiceIdentity` (services.generateServiceIdentity) creates it.
- `DATA_SOURCE`: the service's own getter creates it on first call (BigQuery's
  `projects.getServiceAccount`, Cloud Storage's `projects.serviceAccount.get`); its email comes
  from the SDK's data source, which waits for the API.
- `API`: created when the API is enabled (GKE's and Compute Engine's primary agents).

Emails follow Google's documented templates (https://cloud.google.com/iam/docs/service-agents),
so a plan shows the real members; cloud-foundation-fabric's project module
(modules/project/service-agents.tf) makes its agents exist the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.settle import IAM_PROPAGATION, settle


class Creation(Enum):
    IDENTITY = "ServiceIdentity"
    DATA_SOURCE = "data source"
    API = "API enablement"


# The SDK's data sources whose call creates the agent; each answers `.member`.
Lookup = Callable[..., pulumi.Output[Any]]


@dataclass(frozen=True)
class AgentSpec:
    template: str  # the email, `{n}` the project number
    creation: Creation
    lookup: Lookup | None = None  # for Creation.DATA_SOURCE


AGENTS: Mapping[str, AgentSpec] = {
    "container.googleapis.com": AgentSpec(
        "service-{n}@container-engine-robot.iam.gserviceaccount.com", Creation.API
    ),
    "compute.googleapis.com": AgentSpec(
        "service-{n}@compute-system.iam.gserviceaccount.com", Creation.API
    ),
    "artifactregistry.googleapis.com": AgentSpec(
        "service-{n}@gcp-sa-artifactregistry.iam.gserviceaccount.com", Creation.IDENTITY
    ),
    "pubsub.googleapis.com": AgentSpec(
        "service-{n}@gcp-sa-pubsub.iam.gserviceaccount.com", Creation.IDENTITY
    ),
    "redis.googleapis.com": AgentSpec(
        "service-{n}@cloud-redis.iam.gserviceaccount.com", Creation.IDENTITY
    ),
    # Fleet memberships are created by the hub's agent (roles/gkehub.serviceAgent).
    "gkehub.googleapis.com": AgentSpec(
        "service-{n}@gcp-sa-gkehub.iam.gserviceaccount.com", Creation.IDENTITY
    ),
    "storage.googleapis.com": AgentSpec(
        "service-{n}@gs-project-accounts.iam.gserviceaccount.com",
        Creation.DATA_SOURCE,
        gcp.storage.get_project_service_account_output,
    ),
    "bigquery.googleapis.com": AgentSpec(
        "bq-{n}@bigquery-encryption.iam.gserviceaccount.com",
        Creation.DATA_SOURCE,
        gcp.bigquery.get_default_service_account_output,
    ),
}


@dataclass(frozen=True)
class ServiceAgent:
    """One service's agent: its IAM member, and the resources a grant to it must wait for."""

    service: str
    member: pulumi.Output[str]  # serviceAccount:<email>
    ready: tuple[pulumi.Resource, ...]

    @property
    def email(self) -> pulumi.Output[str]:
        return self.member.apply(lambda member: member.split(":", 1)[1])


class ServiceAgents(pulumi.ComponentResource):
    """Every service agent the platform grants to, each made to exist after its API."""

    def __init__(
        self,
        name: str,
        project_id: str,
        project_number: pulumi.Input[str],
        apis: Mapping[str, gcp.projects.Service],
        apis_settled: pulumi.Resource,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`apis_settled`: the delay after the APIs' enablement (infra/settle.py); an agent
        made with its API is not found until it has passed."""
        super().__init__("signal:infra:ServiceAgents", name, None, opts)
        number = pulumi.Output.from_input(project_number)
        members: dict[str, pulumi.Output[str]] = {}
        ready: dict[str, tuple[pulumi.Resource, ...]] = {}
        identities: dict[str, gcp.projects.ServiceIdentity] = {}
        for service, spec in AGENTS.items():
            after_api = (apis[service], apis_settled)
            members[service] = number.apply(
                lambda n, t=spec.template: f"serviceAccount:{t.format(n=n)}"
            )
            if spec.creation is Creation.IDENTITY:
                identities[service] = gcp.projects.ServiceIdentity(
                    f"{name}-{service.split('.')[0]}",
                    project=project_id,
                    service=service,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(after_api)),
                )
                continue
            if spec.lookup is not None:
                # The data source's call creates the agent; it runs once the API is on.
                members[service] = spec.lookup(
                    project=project_id,
                    opts=pulumi.InvokeOutputOptions(parent=self, depends_on=list(after_api)),
                ).member
            ready[service] = after_api
        # A new agent, and the roles Google grants it as it creates it (the hub's agent's
        # roles/gkehub.serviceAgent, which fleet memberships need), propagate as any grant does.
        self.settled = settle(
            f"{name}-settle", list(identities.values()), IAM_PROPAGATION, parent=self
        )
        for service, identity in identities.items():
            ready[service] = (identity, self.settled)
        self.agents: dict[str, ServiceAgent] = {
            service: ServiceAgent(service, members[service], ready[service]) for service in AGENTS
        }
        self.register_outputs({s: a.member for s, a in self.agents.items()})

    def __getitem__(self, service: str) -> ServiceAgent:
        return self.agents[service]
