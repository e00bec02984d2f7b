"""Deterministic, plausible answers for the Pulumi SDK's mock monitor.

A plan must run programs that build kubeconfigs, IAM members and key references from other
resources' outputs, so each mocked resource gets the outputs the real provider would return
(ids, self links, emails, endpoints, CA certificates), derived only from its inputs and name:
the same program and config always give the same plan.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pulumi

API = "https://www.googleapis.com"
# A syntactically valid PEM body; no real key material is ever needed offline.
FAKE_CA = base64.b64encode(
    b"-----BEGIN CERTIFICATE-----\nTUlNT0NLQ0VSVElGSUNBVEU=\n-----END CERTIFICATE-----\n"
).decode()

DEFAULT_ZONES = ("a", "b", "c")
ENGINE_VERSIONS = ("1.33.4-gke.1172000", "1.32.8-gke.1134000", "1.31.12-gke.1220000")


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


class PlanMocks(pulumi.runtime.Mocks):
    """Mocks that answer like Google Cloud and Kubernetes, deterministically."""

    def __init__(self, project: str, zones: dict[str, list[str]] | None = None):
        self.project = project
        self.zones = zones or {}

    # ---- resources

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        inputs = dict(args.inputs)
        if args.typ.startswith("pulumi:providers:"):
            return f"{args.name}-provider-id", inputs
        outputs = _OUTPUTS.get(args.typ, _generic)(self, args.name, inputs)
        resource_id = outputs.pop("id", None) or f"{args.name}-{_digest(args.typ, args.name)[:8]}"
        return resource_id, {**inputs, **outputs}

    # ---- invokes

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        answer = _INVOKES.get(args.token)
        return (answer(self, dict(args.args)) if answer else {}), []

    def zones_of(self, region: str) -> list[str]:
        return self.zones.get(region) or [f"{region}-{z}" for z in DEFAULT_ZONES]


# ------------------------------------------------------------------ resource outputs


def _project(mocks: PlanMocks, inputs: dict) -> str:
    return inputs.get("project") or mocks.project


def _generic(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    out: dict[str, Any] = {"name": inputs.get("name") or name}
    out["selfLink"] = f"{API}/projects/{_project(mocks, inputs)}/resources/{out['name']}"
    return out


def _service_account(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    project = _project(mocks, inputs)
    email = f"{inputs.get('accountId', name)}@{project}.iam.gserviceaccount.com"
    return {
        "id": f"projects/{project}/serviceAccounts/{email}",
        "email": email,
        "member": f"serviceAccount:{email}",
        "name": f"projects/{project}/serviceAccounts/{email}",
        "uniqueId": str(int(_digest(email)[:15], 16)),
    }


def _key_ring(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    ring = f"projects/{_project(mocks, inputs)}/locations/{inputs.get('location')}/keyRings/{inputs.get('name', name)}"
    return {"id": ring, "name": inputs.get("name", name)}


def _crypto_key(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    key = f"{inputs.get('keyRing')}/cryptoKeys/{inputs.get('name', name)}"
    return {
        "id": key,
        "name": inputs.get("name", name),
        "primary": [{"name": f"{key}/cryptoKeyVersions/1", "state": "ENABLED"}],
    }


def _cluster(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    cluster = inputs.get("name", name)
    octet = int(_digest(cluster)[:2], 16)
    location = inputs.get("location", "us-central1")
    project = _project(mocks, inputs)
    return {
        "id": f"projects/{project}/locations/{location}/clusters/{cluster}",
        "name": cluster,
        "endpoint": f"172.16.{octet}.2",
        "masterAuth": {**(inputs.get("masterAuth") or {}), "clusterCaCertificate": FAKE_CA},
        "selfLink": f"https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{cluster}",
        "masterVersion": ENGINE_VERSIONS[0],
        "operation": "",
    }


def _network(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    network = inputs.get("name", name)
    project = _project(mocks, inputs)
    return {
        "id": f"projects/{project}/global/networks/{network}",
        "name": network,
        "selfLink": f"{API}/compute/v1/projects/{project}/global/networks/{network}",
    }


def _subnetwork(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    subnet = inputs.get("name", name)
    project = _project(mocks, inputs)
    region = inputs.get("region")
    return {
        "id": f"projects/{project}/regions/{region}/subnetworks/{subnet}",
        "name": subnet,
        "selfLink": f"{API}/compute/v1/projects/{project}/regions/{region}/subnetworks/{subnet}",
        "gatewayAddress": "10.0.0.1",
    }


def _bucket(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    bucket = inputs.get("name", name)
    return {
        "id": bucket,
        "name": bucket,
        "url": f"gs://{bucket}",
        "selfLink": f"{API}/storage/v1/b/{bucket}",
    }


def _registry(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    repo = inputs.get("repositoryId", name)
    location = inputs.get("location", "us")
    project = _project(mocks, inputs)
    return {
        "id": f"projects/{project}/locations/{location}/repositories/{repo}",
        "name": repo,
        "registryUri": f"{location}-docker.pkg.dev/{project}/{repo}",
    }


def _dataset(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    dataset = inputs.get("datasetId", name)
    project = _project(mocks, inputs)
    return {
        "id": f"projects/{project}/datasets/{dataset}",
        "selfLink": f"{API}/bigquery/v2/projects/{project}/datasets/{dataset}",
    }


def _table(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    project = _project(mocks, inputs)
    table = f"projects/{project}/datasets/{inputs.get('datasetId')}/tables/{inputs.get('tableId', name)}"
    return {"id": table, "selfLink": f"{API}/bigquery/v2/{table}"}


def _pubsub(kind: str) -> Callable[[PlanMocks, str, dict], dict]:
    def outputs(mocks: PlanMocks, name: str, inputs: dict) -> dict:
        value = f"projects/{_project(mocks, inputs)}/{kind}/{inputs.get('name', name)}"
        return {"id": value, "name": inputs.get("name", name)}

    return outputs


def _redis_cluster(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    octet = int(_digest(name)[:2], 16)
    return {
        "name": inputs.get("name", name),
        "discoveryEndpoints": [{"address": f"10.200.{octet}.3", "port": 6379}],
        "pscConnections": [],
        "state": "ACTIVE",
    }


def _project_number(project: str) -> str:
    return str(int(_digest(project)[:11], 16))


def _log_sink(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    number = _project_number(_project(mocks, inputs))
    return {
        "name": inputs.get("name", name),
        "writerIdentity": f"serviceAccount:service-{number}@gcp-sa-logging.iam.gserviceaccount.com",
    }


def _notification_channel(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    channel = (
        f"projects/{_project(mocks, inputs)}/notificationChannels/{int(_digest(name)[:15], 16)}"
    )
    return {"id": channel, "name": channel}


def _monitoring_service(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    service = f"projects/{_project(mocks, inputs)}/services/{inputs.get('serviceId', name)}"
    return {"id": service, "name": service}


def _slo(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    slo = (
        f"projects/{_project(mocks, inputs)}/services/{inputs.get('service')}"
        f"/serviceLevelObjectives/{inputs.get('sloId', name)}"
    )
    return {"id": slo, "name": slo}


def _router(mocks: PlanMocks, name: str, inputs: dict) -> dict:
    return {
        "name": inputs.get("name", name),
        "selfLink": f"{API}/compute/v1/projects/{_project(mocks, inputs)}/regions/{inputs.get('region')}/routers/{inputs.get('name', name)}",
    }


_OUTPUTS: dict[str, Callable[[PlanMocks, str, dict], dict]] = {
    "gcp:serviceaccount/account:Account": _service_account,
    "gcp:kms/keyRing:KeyRing": _key_ring,
    "gcp:kms/cryptoKey:CryptoKey": _crypto_key,
    "gcp:container/cluster:Cluster": _cluster,
    "gcp:compute/network:Network": _network,
    "gcp:compute/subnetwork:Subnetwork": _subnetwork,
    "gcp:compute/router:Router": _router,
    "gcp:storage/bucket:Bucket": _bucket,
    "gcp:artifactregistry/repository:Repository": _registry,
    "gcp:bigquery/dataset:Dataset": _dataset,
    "gcp:bigquery/table:Table": _table,
    "gcp:pubsub/topic:Topic": _pubsub("topics"),
    "gcp:pubsub/subscription:Subscription": _pubsub("subscriptions"),
    "gcp:pubsub/schema:Schema": _pubsub("schemas"),
    "gcp:redis/cluster:Cluster": _redis_cluster,
    "gcp:logging/projectSink:ProjectSink": _log_sink,
    "gcp:monitoring/notificationChannel:NotificationChannel": _notification_channel,
    "gcp:monitoring/customService:CustomService": _monitoring_service,
    "gcp:monitoring/slo:Slo": _slo,
}


# ------------------------------------------------------------------ invokes


def _get_project(mocks: PlanMocks, args: dict) -> dict:
    project = args.get("projectId") or mocks.project
    number = _project_number(project)
    return {
        "id": f"projects/{project}",
        "projectId": project,
        "number": number,
        "name": project,
        "labels": {},
    }


def _get_zones(mocks: PlanMocks, args: dict) -> dict:
    region = args.get("region", "us-central1")
    return {
        "id": region,
        "names": mocks.zones_of(region),
        "project": args.get("project") or mocks.project,
        "region": region,
    }


def _engine_versions(mocks: PlanMocks, args: dict) -> dict:
    prefix = args.get("versionPrefix") or ""
    versions = [v for v in ENGINE_VERSIONS if v.startswith(prefix)] or list(ENGINE_VERSIONS)
    return {
        "id": args.get("location", "us-central1"),
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


def _client_config(mocks: PlanMocks, args: dict) -> dict:
    return {
        "id": "client",
        "accessToken": "mock-access-token",
        "project": mocks.project,
        "region": "us-central1",
        "zone": "us-central1-a",
    }


_INVOKES: dict[str, Callable[[PlanMocks, dict], dict]] = {
    "gcp:organizations/getProject:getProject": _get_project,
    "gcp:compute/getZones:getZones": _get_zones,
    "gcp:container/getEngineVersions:getEngineVersions": _engine_versions,
    "gcp:organizations/getClientConfig:getClientConfig": _client_config,
}
