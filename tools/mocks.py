"""What a preview knows of each resource's outputs, answered offline for the SDK's mock monitor.

`pulumi preview` gets from each provider the resource's planned state: its inputs, plus the
values the provider can work out before anything exists; everything the cloud assigns is
unknown until the update. The offline engine answers the same way:

- every input comes back as it was given (unknowns stay unknown, secrets stay secret);
- values a provider derives deterministically from the inputs and its configuration (project,
  region) stay known, as they are on a stack whose resources exist: ids and self links built
  from names, a service account's email, a KMS key's path, a bucket's `gs://` URL, an Artifact
  Registry host;
- everything else (status, endpoints, CA certificates, URLs the cloud assigns, generated
  numbers and names) is missing or explicitly unknown, so the SDK makes it unknown and skips
  `.apply` callbacks on it, as in a preview.

A value that needs the project is known only when the resource or its provider names one.
Invokes (data sources) read the cloud in a real preview; offline they answer from their
arguments and the provider's configuration, with placeholders where only the cloud knows
(`getProject`'s number is a digest of the project id). The README's engine section has the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from google.protobuf import struct_pb2
from pulumi.runtime import rpc

from tools.sdk_types import nested_output_fields, output_fields, takes_default_region

API = "https://www.googleapis.com"
# Pulumi's wire sentinel for a value unknown during a preview.
UNKNOWN_WIRE = rpc.UNKNOWN

DEFAULT_ZONES = ("a", "b", "c")
ENGINE_VERSIONS = ("1.33.4-gke.1172000", "1.32.8-gke.1134000", "1.31.12-gke.1220000")


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _known(value: Any) -> Any:
    """The value, or None where it is absent or unknown."""
    return None if value is None or value == UNKNOWN_WIRE else value


@dataclass(frozen=True)
class Placement:
    """Where a resource lands when its own inputs do not say: its provider's configuration."""

    project: str | None = None
    region: str | None = None
    zone: str | None = None

    @classmethod
    def of(cls, provider_inputs: Mapping[str, Any] | None) -> Placement:
        inputs = provider_inputs or {}
        values = [_known(inputs.get(k)) for k in ("project", "region", "zone")]
        return cls(*(v if isinstance(v, str) and v else None for v in values))


@dataclass(frozen=True)
class Target:
    """One resource to answer for: its name, inputs (wire values) and provider placement."""

    name: str
    inputs: Mapping[str, Any]
    placement: Placement

    def get(self, key: str, default: Any = None) -> Any:
        value = _known(self.inputs.get(key))
        return default if value is None else value

    @property
    def project(self) -> str | None:
        return self.get("project") or self.placement.project

    @property
    def region(self) -> str | None:
        return self.get("region") or self.placement.region

    def named(self, key: str = "name") -> str | None:
        """The resource's name input. None where the program gave none: the provider then
        generates one (Pulumi's auto-naming adds a random suffix), unknown in a preview."""
        value = self.get(key)
        return str(value) if value else None


Outputs = dict[str, Any]


class PlanMocks(pulumi.runtime.Mocks):
    """Preview answers for Google Cloud and Kubernetes resources, deterministic and offline.

    `providers` maps a provider URN to its inputs (explicit providers as the program declares
    them, default providers from the stack's config); the engine's monitor keeps it current.
    """

    def __init__(
        self,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        zones: Mapping[str, list[str]] | None = None,
    ):
        self.providers = providers if providers is not None else {}
        self.zones = dict(zones or {})

    def placement(self, provider_ref: str | None) -> Placement:
        urn = (provider_ref or "").rsplit("::", 1)[0]
        return Placement.of(self.providers.get(urn))

    # ---- resources

    def outputs(
        self, type_token: str, name: str, inputs: Mapping[str, Any], provider_ref: str | None
    ) -> tuple[str | None, Outputs]:
        """The id (None: unknown) and the values a preview knows beyond the inputs."""
        if type_token.startswith("pulumi:providers:"):
            return None, {}
        target = Target(name, inputs, self.placement(provider_ref))
        derive = _DERIVED.get(type_token)
        outputs = {**_provider_defaults(type_token, target), **(derive(target) if derive else {})}
        return outputs.pop("id", None), outputs

    def mark_unknown_fields(self, type_token: str, state: struct_pb2.Struct) -> None:
        """Within the input objects a state echoes, every field the resource's output type
        declares but the program did not set becomes unknown: nested values a provider
        computes (a Cloud Functions v2 `serviceConfig.uri`, a cluster's
        `masterAuth.clusterCaCertificate`) are unknown in a preview, as top-level ones are."""
        fields = output_fields(type_token)
        for key, value in state.fields.items():
            if key in fields:
                _mark_unknown(value, fields[key])

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        resource_id, outputs = self.outputs(args.typ, args.name, args.inputs, args.provider)
        return resource_id, {**args.inputs, **outputs}

    # ---- invokes

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        answer = _INVOKES.get(args.token)
        placement = self.placement(args.provider)
        return (answer(self, placement, dict(args.args)) if answer else {}), []

    def zones_of(self, region: str) -> list[str]:
        return self.zones.get(region) or [f"{region}-{z}" for z in DEFAULT_ZONES]


def _mark_unknown(value: struct_pb2.Value, annotation: Any) -> None:
    kind, detail = nested_output_fields(annotation)
    which = value.WhichOneof("kind")
    if kind == "object" and which == "struct_value":
        fields = value.struct_value.fields
        if rpc._special_sig_key in fields:  # a secret, asset or resource reference: as given
            return
        for name, field_type in detail.items():
            if name in fields:
                _mark_unknown(fields[name], field_type)
            else:
                fields[name].string_value = UNKNOWN_WIRE
    elif kind == "list" and which == "list_value":
        for item in value.list_value.values:
            _mark_unknown(item, detail)
    elif kind == "map" and which == "struct_value":
        for item in value.struct_value.fields.values():
            _mark_unknown(item, detail)


# ------------------------------------------------------------------ resource outputs


def _provider_defaults(type_token: str, t: Target) -> Outputs:
    """A Google resource that names no project (or region, where it takes the provider's) plans
    with its provider's: the Google provider sets them at plan time (DefaultProviderProject,
    DefaultProviderRegion), so `resource.project` is known in a preview."""
    if not type_token.startswith("gcp:"):
        return {}
    fields = output_fields(type_token)
    found: Outputs = {}
    if "project" in fields and t.get("project") is None and t.placement.project:
        found["project"] = t.placement.project
    if (
        "region" in fields
        and t.get("region") is None
        and t.placement.region
        and takes_default_region(type_token)
    ):
        found["region"] = t.placement.region
    return found


# Each function returns only what the provider derives from inputs and configuration; a
# value that needs an unknown project or region is left out (unknown).


def _service_account(t: Target) -> Outputs:
    account = t.named("accountId")
    if t.project is None or account is None:
        return {}
    email = f"{account}@{t.project}.iam.gserviceaccount.com"
    name = f"projects/{t.project}/serviceAccounts/{email}"
    return {"id": name, "name": name, "email": email, "member": f"serviceAccount:{email}"}


def _key_ring(t: Target) -> Outputs:
    location, ring = t.get("location"), t.named()
    if t.project is None or location is None or ring is None:
        return {}
    return {"id": f"projects/{t.project}/locations/{location}/keyRings/{ring}"}


def _crypto_key(t: Target) -> Outputs:
    ring, key = t.get("keyRing"), t.named()
    return {"id": f"{ring}/cryptoKeys/{key}"} if ring and key else {}


def _located(path: str, location_key: str = "location") -> Callable[[Target], Outputs]:
    """`projects/P/locations/L/<path>/NAME` ids (clusters, repositories, services ...)."""

    def outputs(t: Target) -> Outputs:
        location = t.get(location_key) or (t.region if location_key == "region" else None)
        name = t.named()
        if t.project is None or location is None or name is None:
            return {}
        return {"id": f"projects/{t.project}/locations/{location}/{path}/{name}"}

    return outputs


def _cluster(t: Target) -> Outputs:
    location = t.get("location") or t.placement.zone or t.placement.region
    name = t.named()
    if t.project is None or location is None or name is None:
        return {}
    path = f"projects/{t.project}/locations/{location}/clusters/{name}"
    return {"id": path, "selfLink": f"https://container.googleapis.com/v1/{path}"}


def _global(collection: str, api: str = "compute/v1") -> Callable[[Target], Outputs]:
    """Global compute resources: `projects/P/global/<collection>/NAME` and its self link."""

    def outputs(t: Target) -> Outputs:
        name = t.named()
        if t.project is None or name is None:
            return {}
        path = f"projects/{t.project}/global/{collection}/{name}"
        return {"id": path, "selfLink": f"{API}/{api}/{path}"}

    return outputs


def _regional(collection: str) -> Callable[[Target], Outputs]:
    """Regional compute resources: `projects/P/regions/R/<collection>/NAME` and self link."""

    def outputs(t: Target) -> Outputs:
        name = t.named()
        if t.project is None or t.region is None or name is None:
            return {}
        path = f"projects/{t.project}/regions/{t.region}/{collection}/{name}"
        return {"id": path, "selfLink": f"{API}/compute/v1/{path}"}

    return outputs


def _bucket(t: Target) -> Outputs:
    bucket = t.named()
    if bucket is None:
        return {}
    return {"id": bucket, "url": f"gs://{bucket}", "selfLink": f"{API}/storage/v1/b/{bucket}"}


def _registry(t: Target) -> Outputs:
    location = t.get("location") or t.region
    repo = t.named("repositoryId")
    if t.project is None or location is None or repo is None:
        return {}
    return {
        "id": f"projects/{t.project}/locations/{location}/repositories/{repo}",
        "name": repo,
        "registryUri": f"{location}-docker.pkg.dev/{t.project}/{repo}",
    }


def _dataset(t: Target) -> Outputs:
    dataset = t.named("datasetId")
    if t.project is None or dataset is None:
        return {}
    path = f"projects/{t.project}/datasets/{dataset}"
    return {"id": path, "selfLink": f"{API}/bigquery/v2/{path}"}


def _table(t: Target) -> Outputs:
    dataset, table = t.get("datasetId"), t.named("tableId")
    if t.project is None or dataset is None or table is None:
        return {}
    path = f"projects/{t.project}/datasets/{dataset}/tables/{table}"
    return {"id": path, "selfLink": f"{API}/bigquery/v2/{path}"}


def _project_path(collection: str, key: str = "name") -> Callable[[Target], Outputs]:
    """`projects/P/<collection>/NAME` ids (Pub/Sub topics, subscriptions, schemas, sinks)."""

    def outputs(t: Target) -> Outputs:
        name = t.named(key)
        if t.project is None or name is None:
            return {}
        return {"id": f"projects/{t.project}/{collection}/{name}"}

    return outputs


def _monitoring_service(t: Target) -> Outputs:
    service = t.named("serviceId")
    if t.project is None or service is None:
        return {}
    path = f"projects/{t.project}/services/{service}"
    return {"id": path, "name": path}


def _slo(t: Target) -> Outputs:
    service, slo = t.get("service"), t.named("sloId")
    if t.project is None or service is None or slo is None:
        return {}
    path = f"projects/{t.project}/services/{service}/serviceLevelObjectives/{slo}"
    return {"id": path, "name": path}


def _project_service(t: Target) -> Outputs:
    """An enabled API: `PROJECT/SERVICE` (the Google provider's id for google_project_service)."""
    service = t.get("service")
    return {"id": f"{t.project}/{service}"} if t.project and service else {}


_DERIVED: dict[str, Callable[[Target], Outputs]] = {
    "gcp:projects/service:Service": _project_service,
    "gcp:serviceaccount/account:Account": _service_account,
    "gcp:kms/keyRing:KeyRing": _key_ring,
    "gcp:kms/cryptoKey:CryptoKey": _crypto_key,
    "gcp:container/cluster:Cluster": _cluster,
    "gcp:compute/network:Network": _global("networks"),
    "gcp:compute/subnetwork:Subnetwork": _regional("subnetworks"),
    "gcp:compute/router:Router": _regional("routers"),
    "gcp:storage/bucket:Bucket": _bucket,
    "gcp:artifactregistry/repository:Repository": _registry,
    "gcp:bigquery/dataset:Dataset": _dataset,
    "gcp:bigquery/table:Table": _table,
    "gcp:pubsub/topic:Topic": _project_path("topics"),
    "gcp:pubsub/subscription:Subscription": _project_path("subscriptions"),
    "gcp:pubsub/schema:Schema": _project_path("schemas"),
    "gcp:redis/cluster:Cluster": _located("clusters", "region"),
    "gcp:logging/projectSink:ProjectSink": _project_path("sinks"),
    "gcp:monitoring/customService:CustomService": _monitoring_service,
    "gcp:monitoring/slo:Slo": _slo,
    "gcp:cloudrunv2/service:Service": _located("services"),
    # Its `name` carries the project number (unknown); the id names the project as given.
    "gcp:secretmanager/secret:Secret": _project_path("secrets", "secretId"),
}


# ------------------------------------------------------------------ invokes


def _project_number(project: str) -> str:
    return str(int(_digest(project)[:11], 16))


def _get_project(mocks: PlanMocks, at: Placement, args: dict) -> dict:
    project = args.get("projectId") or at.project or "unknown-project"
    return {
        "id": f"projects/{project}",
        "projectId": project,
        "number": _project_number(project),
        "name": project,
        "labels": {},
    }


def _get_zones(mocks: PlanMocks, at: Placement, args: dict) -> dict:
    region = args.get("region") or at.region or "us-central1"
    return {
        "id": region,
        "names": mocks.zones_of(region),
        "project": args.get("project") or at.project,
        "region": region,
    }


def _engine_versions(mocks: PlanMocks, at: Placement, args: dict) -> dict:
    prefix = args.get("versionPrefix") or ""
    versions = [v for v in ENGINE_VERSIONS if v.startswith(prefix)] or list(ENGINE_VERSIONS)
    return {
        "id": args.get("location") or at.region or "us-central1",
        "latestMasterVersion": versions[0],
        "latestNodeVersion": versions[0],
        "validMasterVersions": versions,
        "validNodeVersions": versions,
        "defaultClusterVersion": versions[0],
        "releaseChannelDefaultVersion": {
            "REGULAR": versions[0],
            "STABLE": versions[-1],
            "RAPID": versions[0],
        },
    }


def _client_config(mocks: PlanMocks, at: Placement, args: dict) -> dict:
    return {
        "id": "client",
        "accessToken": "offline-access-token",
        "project": at.project,
        "region": at.region,
        "zone": at.zone,
    }


def _service_agent(template: str) -> Callable[[PlanMocks, Placement, dict], dict]:
    """A data source that answers a project's service agent (the email Google documents)."""

    def answer(mocks: PlanMocks, at: Placement, args: dict) -> dict:
        project = args.get("project") or at.project or "unknown-project"
        email = template.format(n=_project_number(project))
        return {
            "id": project,
            "project": project,
            "email": email,  # BigQuery's result
            "emailAddress": email,  # Cloud Storage's result
            "member": f"serviceAccount:{email}",
        }

    return answer


_INVOKES: dict[str, Callable[[PlanMocks, Placement, dict], dict]] = {
    "gcp:bigquery/getDefaultServiceAccount:getDefaultServiceAccount": _service_agent(
        "bq-{n}@bigquery-encryption.iam.gserviceaccount.com"
    ),
    "gcp:storage/getProjectServiceAccount:getProjectServiceAccount": _service_agent(
        "service-{n}@gs-project-accounts.iam.gserviceaccount.com"
    ),
    "gcp:organizations/getProject:getProject": _get_project,
    "gcp:compute/getZones:getZones": _get_zones,
    "gcp:container/getEngineVersions:getEngineVersions": _engine_versions,
    "gcp:organizations/getClientConfig:getClientConfig": _client_config,
}
