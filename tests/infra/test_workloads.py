"""The signal service and Triton on every cluster, the metrics adapter, and the workload
settings' validation, as the policy pack sees them in each stack's plan."""

from __future__ import annotations

import typing
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from app.config import AppConfig, load_config
from app.model.triton import TritonModelConfig, render_config_pbtxt
from app.settings.ingest import BIGQUERY_MAX_PAST_AGE_S
from app.settings.telemetry import TelemetryConfig
from infra.config import ConfigError, StackConfig
from infra.workloads import (
    GPU_UTILIZATION_METRIC,
    REQUEST_RATE_METRIC,
    SERVICE_CONFIG_KEYS,
    SHARDS,
    ServiceEndpoints,
    render_service_config,
    server_ca_bundle,
    service_grace_seconds,
    signal_service_config,
)
from tests.infra.staged import staged_plan
from tests.infra.test_apply_order import waits_for
from tests.infra.test_config import edited, load, stack_values
from tools.inventory import UNKNOWN, Inventory, Resource

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
SERVICE = "kubernetes:core/v1:Service"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
POD_MONITORING = "kubernetes:monitoring.googleapis.com/v1:PodMonitoring"
APISERVICE = "kubernetes:apiregistration.k8s.io/v1:APIService"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
APPS = ("signal-service", "triton")


def config_of(plan: Inventory) -> StackConfig:
    return StackConfig.load(plan.stack, stack_values(plan.stack))


def in_signals(plan: Inventory, type_token: str) -> dict[str, dict[str, Resource]]:
    """region → object name → object, for the objects of the `signals` namespace."""
    regions = plan.regions()
    found: dict[str, dict[str, Resource]] = {r: {} for r in plan.outputs["regions"]}
    for resource in plan.of_type(type_token):
        if resource.inputs["metadata"].get("namespace") == "signals":
            found[regions[resource.urn]][resource.inputs["metadata"]["name"]] = resource  # type: ignore[index]
    return found


def workloads(plan: Inventory) -> dict[str, dict[str, Resource]]:
    """region → app → its Deployment (Triton) or StatefulSet (the signal service)."""
    found = in_signals(plan, DEPLOYMENT)
    for region, sets in in_signals(plan, STATEFUL_SET).items():
        found[region].update(sets)
    return found


def pod(deployment: Resource) -> dict[str, Any]:
    return deployment.inputs["spec"]["template"]["spec"]


def hpa_floor(plan: Inventory) -> dict[str, int]:
    """Each workload an HPA scales (by URN) → the HPA's minReplicas: its replica count."""
    regions = plan.regions()
    targets = {
        (regions[w.urn], w.type.rsplit(":", 1)[1], w.inputs["metadata"]["name"]): w.urn
        for region in workloads(plan).values()
        for w in region.values()
    }
    return {
        targets[
            regions[h.urn],
            h.inputs["spec"]["scaleTargetRef"]["kind"],
            h.inputs["spec"]["scaleTargetRef"]["name"],
        ]: h.inputs["spec"]["minReplicas"]
        for h in plan.of_type(HPA)
    }


def test_workloads_an_hpa_scales_leave_the_count_to_it(stack_plan: Inventory):
    """Once the HPA has scaled, kube-controller-manager owns `spec.replicas`; a value in the
    object would conflict on the next Server-Side Apply (or, forced, reset the count at
    peak): the HPA's minReplicas is the floor instead (review.md #14)."""
    floors = hpa_floor(stack_plan)
    scaled = [w for region in workloads(stack_plan).values() for w in region.values()]
    assert scaled and all(w.urn in floors for w in scaled)
    for workload in scaled:
        assert "replicas" not in workload.inputs["spec"], workload.name


def test_the_spool_is_a_cmek_disk_of_the_clusters_storage_class(stack_plan: Inventory):
    """The spool volumes are encrypted with the region's disks key like every node disk
    (review.md #17): the claim template names the cluster's CMEK StorageClass, and the
    StatefulSet waits for it."""
    classes = {
        (c.provider, c.inputs["metadata"]["name"]): c
        for c in stack_plan.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
    }
    for region in workloads(stack_plan).values():
        service = region["signal-service"]
        (claim,) = service.inputs["spec"]["volumeClaimTemplates"]
        storage_class = classes[service.provider, claim["spec"]["storageClassName"]]
        assert "disk-encryption-kms-key" in storage_class.inputs["parameters"]
        assert storage_class.urn in service.options["dependencies"]


def test_workloads_of_the_stacks_image_and_model_come_with_stage_workloads(stack_plan: Inventory):
    """The service, Triton, the scaler and the detector run the stack's own image or the model
    in its bucket, neither of which exists on a new project's first deploy: they say so (the
    pack's apply-workload-sources reads it) and a stack at stage infrastructure has none."""
    checked = 0
    for resource in (*stack_plan.of_type(DEPLOYMENT), *stack_plan.of_type(STATEFUL_SET)):
        images = {c["image"] for c in pod(resource)["containers"]}
        ours = any(i.startswith(config_of(stack_plan).image_registry) for i in images)
        mounts = any("csi" in v for v in pod(resource).get("volumes", ()))
        if ours or mounts:
            checked += 1
            assert (
                resource.inputs["metadata"]["annotations"]["signal-platform/stage"] == "workloads"
            )
    assert checked >= 3
    first = staged_plan(stack_plan.stack, "infrastructure")
    assert not first.of_type(STATEFUL_SET)
    assert [d.inputs["metadata"]["name"] for d in first.of_type(DEPLOYMENT)] == [
        "custom-metrics-stackdriver-adapter"
    ] * len(stack_plan.outputs["regions"])
    assert first.of_type("kubernetes:helm.sh/v3:Release"), "the mesh is part of the platform"


def container(deployment: Resource) -> dict[str, Any]:
    (only,) = pod(deployment)["containers"]
    return only


# ---------------------------------------------------------------- one set per region


def test_one_workload_set_per_region(stack_plan: Inventory):
    for type_token, names in (
        (DEPLOYMENT, {"triton"}),
        (STATEFUL_SET, {"signal-service"}),
        (SERVICE, {*APPS, "signal-service-replicas"}),
        (SERVICE_ACCOUNT, set(APPS)),
        (HPA, set(APPS)),
        (PDB, set(APPS)),
        (POD_MONITORING, set(APPS)),
    ):
        by_region = in_signals(stack_plan, type_token)
        assert sorted(by_region) == sorted(stack_plan.outputs["regions"])
        for region, objects in by_region.items():
            assert set(objects) == names, (type_token, region)


def test_service_accounts_act_as_their_google_accounts(stack_plan: Inventory):
    emails = stack_plan.outputs["serviceAccounts"]
    for accounts in in_signals(stack_plan, SERVICE_ACCOUNT).values():
        for name, account in accounts.items():
            annotations = account.inputs["metadata"]["annotations"]
            assert annotations == {"iam.gke.io/gcp-service-account": emails[name]}
            assert account.inputs["automountServiceAccountToken"] is False


# ---------------------------------------------------------------- pods


def test_every_pod_is_restricted(stack_plan: Inventory):
    deployments = [*stack_plan.of_type(DEPLOYMENT), *stack_plan.of_type(STATEFUL_SET)]
    # + the metrics adapter, the predictive scaler and the anomaly detector (infra/autoscale.py)
    assert len(deployments) == 5 * len(stack_plan.outputs["regions"])
    for deployment in deployments:
        spec = pod(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["serviceAccountName"] not in ("", "default")
        for c in spec["containers"]:
            assert c["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            }
            assert c["readinessProbe"] and c["livenessProbe"]
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert c["resources"]["limits"]["memory"]


def test_workloads_leave_spot_gracefully(stack_plan: Inventory):
    cfg = config_of(stack_plan)
    settings = {"signal-service": cfg.workloads.signal_service, "triton": cfg.workloads.triton}
    for deployments in workloads(stack_plan).values():
        for name, deployment in deployments.items():
            spec = pod(deployment)
            grace = spec["terminationGracePeriodSeconds"]
            assert grace == settings[name].termination_grace_seconds <= 25
            assert container(deployment)["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
            assert spec["priorityClassName"] == "signal-inference"
            assert spec["automountServiceAccountToken"] is False
            zones = [
                t
                for t in spec["topologySpreadConstraints"]
                if t["topologyKey"] == "topology.kubernetes.io/zone"
            ]
            assert zones and zones[0]["labelSelector"] == {"matchLabels": {"app": name}}
            if name == "triton":
                strategy = deployment.inputs["spec"]["strategy"]["rollingUpdate"]
                assert strategy == {"maxSurge": 1, "maxUnavailable": 0}
            else:  # one replica at a time, each ready (its shards loaded) before the next
                strategy = deployment.inputs["spec"]["updateStrategy"]
                assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}


def test_prod_runs_two_replicas_across_zones(prod_plan: Inventory):
    autoscalers = hpa_floor(prod_plan)
    for deployments in workloads(prod_plan).values():
        for app, deployment in deployments.items():
            assert autoscalers[deployment.urn] >= 2, app  # the HPA's floor: the count
        service = pod(deployments["signal-service"])["topologySpreadConstraints"][0]
        assert service["whenUnsatisfiable"] == "DoNotSchedule"


def test_signal_service_image_probes_resources_and_scratch_space(stack_plan: Inventory):
    settings = config_of(stack_plan).workloads.signal_service
    for deployments in workloads(stack_plan).values():
        deployment = deployments["signal-service"]
        c = container(deployment)
        assert c["image"] == settings.image
        assert hpa_floor(stack_plan)[deployment.urn] == settings.replicas
        assert c["resources"] == {
            "requests": settings.resources.requests,
            "limits": settings.resources.limits,
        }
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": 50051}
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert mounts == {"/etc/signal-service", "/models", "/tmp", "/var/cache/numba",
                          "/var/lib/signal-service/spool"}  # fmt: skip
        volumes = {v["name"]: v for v in pod(deployment)["volumes"]}
        assert volumes["config"] == {
            "name": "config",
            "configMap": {"name": "signal-service-config"},
        }
        assert "emptyDir" in volumes["tmp"] and "emptyDir" in volumes["numba-cache"]


def test_prod_images_are_pinned_by_digest_or_listed_as_unpinned(prod_plan: Inventory):
    """Prod pins every image by digest, except the references its config lists in
    `unpinnedImages` with a reason (infra/config/images.py)."""
    unpinned = set(config_of(prod_plan).unpinned_images)
    for deployment in [*prod_plan.of_type(DEPLOYMENT), *prod_plan.of_type(STATEFUL_SET)]:
        for c in pod(deployment)["containers"]:
            assert "@sha256:" in c["image"] or c["image"] in unpinned, deployment.name


REDIS_ENDPOINT = "10.200.1.3:6379"  # what Memorystore assigns; known once the cluster exists


def test_signal_service_is_configured_with_its_own_config_file(stack_plan: Inventory, tmp_path):
    """The rendered file loads in the service's own config model: the contract with app/."""
    cfg = config_of(stack_plan)
    config_maps = in_signals(stack_plan, CONFIG_MAP)
    caches = {c.inputs["region"]: c for c in stack_plan.of_type("gcp:redis/cluster:Cluster")}
    for region, deployments in workloads(stack_plan).items():
        deployment = deployments["signal-service"]
        c = container(deployment)
        assert c["args"] == [
            "serve", "--config", "/etc/signal-service/config.yaml", "--advertise",
            "$(POD_NAME).signal-service-replicas.signals.svc.cluster.local:50051",
        ]  # fmt: skip
        pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        assert pod_name in c["env"]  # the kubelet expands $(POD_NAME) in args from it
        mount = {"name": "config", "mountPath": "/etc/signal-service", "readOnly": True}
        assert mount in c["volumeMounts"]
        config_map = config_maps[region]["signal-service-config"]
        data = config_map.inputs["data"]
        # The file names the region's Redis endpoint, which Memorystore assigns: a preview
        # knows it (and the hash that rolls the pods) once that region's cluster exists.
        assert data["config.yaml"] == UNKNOWN
        assert caches[region].urn in waits_for(stack_plan, config_map)
        annotations = deployment.inputs["spec"]["template"]["metadata"]["annotations"]
        assert annotations["signal-platform/config-sha256"] == UNKNOWN
        assert "redis-ca.pem" in data

        endpoints = ServiceEndpoints(
            project_id=cfg.project_id,
            ticks_topic=cfg.pubsub.ticks_topic,
            signals_topic=cfg.pubsub.signals_topic,
            dataset=cfg.bigquery.dataset_id,
            redis=REDIS_ENDPOINT,
            redis_ca="PEM",
        )
        settings = cfg.workloads.signal_service
        text = render_service_config(
            signal_service_config(
                endpoints,
                cfg.workloads.triton.model,
                service_grace_seconds(settings),
                cfg.mesh.tracing_collector,
                cfg.mesh.trace_sampling_percent,
                REDIS_ENDPOINT,
            )
        )
        path = tmp_path / f"{region}.yaml"
        path.write_text(text)
        app = load_config(path)
        assert app.kserve.url == "triton.signals.svc.cluster.local:8001"
        assert app.kserve.model_name == cfg.workloads.triton.model.name
        assert app.batcher.max_batch_size == cfg.workloads.triton.model.max_batch_size
        assert app.server.port == 50051 and app.server.host == "0.0.0.0"
        assert app.server.grace_s + 5 < settings.termination_grace_seconds
        assert app.cache.redis is not None
        assert app.cache.redis.nodes == [REDIS_ENDPOINT]
        assert app.cache.redis.tls and app.cache.redis.auth == "iam"
        assert str(app.cache.redis.ca_file) == "/etc/signal-service/redis-ca.pem"
        assert (app.publish.sink, app.publish.project) == ("pubsub", cfg.project_id)
        assert app.publish.ticks_topic == cfg.pubsub.ticks_topic
        assert app.publish.signals_topic == cfg.pubsub.signals_topic
        assert (app.warehouse.backend, app.warehouse.project) == ("bigquery", cfg.project_id)
        assert app.warehouse.dataset == cfg.bigquery.dataset_id
        assert 0 < app.ingest.max_past_age_s <= BIGQUERY_MAX_PAST_AGE_S  # what BigQuery takes
        assert app.telemetry.metrics_port == 9464 == TelemetryConfig().metrics_port
        assert app.telemetry.otlp_endpoint == cfg.mesh.tracing_collector
        assert (str(app.model.dir), app.model.build_if_missing) == ("/models", False)


def test_without_redis_the_service_runs_on_its_l1_cache(tmp_path):
    cfg = load("dev")
    endpoints = ServiceEndpoints(
        project_id="p-123456", ticks_topic="ticks", signals_topic="signals", dataset="d"
    )
    config = signal_service_config(
        endpoints, cfg.workloads.triton.model, 18, "collector.observability.svc:4317", 1.0, None
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert "cache" not in config and load_config(path).cache.redis is None


def test_a_file_the_service_would_refuse_fails_at_the_stack_key_that_made_it():
    """The service's file is validated as `app.config` validates it when the pod starts: a
    stack whose values give a file the service refuses is a configuration error, one line at
    the stack key, not a pod that never starts. A grace period that leaves no drain budget
    once preStop, the margin and the shards' handover are taken is one."""
    cfg = load("dev")
    endpoints = ServiceEndpoints("p-123456", "ticks", "signals", "ds", "10.0.0.3:6379", "PEM")
    short = cfg.workloads.signal_service.model_copy(update={"termination_grace_seconds": 11})
    with pytest.raises(ConfigError) as raised:
        signal_service_config(
            endpoints, cfg.workloads.triton.model, service_grace_seconds(short), None, 1.0,
            "10.0.0.3:6379",
        )  # fmt: skip
    (line,) = str(raised.value).splitlines()
    assert line.startswith("Pulumi.")
    assert "signal-platform:workloads.signalService.terminationGraceSeconds: " in line
    assert "server.grace_s" in line and "(got -1)" in line and "allowed: >= 0" in line
    # Without shards there is no handover to leave room for: the same grace period is fine.
    signal_service_config(
        endpoints, cfg.workloads.triton.model, service_grace_seconds(short), None, 1.0, None
    )


def _field_model(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The model a field (by name or alias) holds, None for a plain value; KeyError if the
    model has no such field."""
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            for kind in (field.annotation, *typing.get_args(field.annotation)):
                if isinstance(kind, type) and issubclass(kind, BaseModel):
                    return kind
            return None
    raise KeyError(f"{model.__name__} has no field {key}")


def _walk(model: type[BaseModel] | None, path: str) -> None:
    for key in path.split("."):
        assert model is not None, path
        model = _field_model(model, key)


def test_each_part_of_the_service_file_is_traced_to_a_real_stack_key():
    """`SERVICE_CONFIG_KEYS` names real fields on both sides, so a refusal's line points at
    a key that exists (a renamed field on either side fails here, not in a user's plan)."""
    for app_path, stack_key in SERVICE_CONFIG_KEYS.items():
        _walk(AppConfig, app_path)
        _walk(StackConfig, stack_key)


def test_server_ca_bundle_joins_every_certificate():
    ca = SimpleNamespace(ca_certs=[SimpleNamespace(certificates=["-----A-----\n", "-----B-----"])])
    assert server_ca_bundle([ca]) == "-----A-----\n-----B-----\n"
    assert server_ca_bundle(None) == ""


def test_triton_runs_on_shared_spot_gpus_with_configured_resources(stack_plan: Inventory):
    settings = config_of(stack_plan).workloads.triton
    for deployments in in_signals(stack_plan, DEPLOYMENT).values():
        triton = deployments["triton"]
        spec, c = pod(triton), container(triton)
        assert c["image"] == settings.image
        assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert c["resources"]["requests"]["memory"] == "8Gi"
        assert c["resources"]["limits"]["memory"] == "16Gi"
        assert c["resources"] == {
            "requests": settings.resources.requests,
            "limits": settings.resources.limits,
        }
        assert spec["nodeSelector"] == {
            "cloud.google.com/compute-class": "gpu-inference",
            "cloud.google.com/gke-accelerator": "nvidia-l4",
        }
        tolerated = {(t["key"], t.get("value")) for t in spec["tolerations"]}
        assert tolerated == {
            ("nvidia.com/gpu", None),
            ("cloud.google.com/gke-spot", "true"),
            ("cloud.google.com/compute-class", "gpu-inference"),
        }
        assert all(t["effect"] == "NoSchedule" for t in spec["tolerations"])


def test_triton_serves_the_bucket_with_health_probes_and_metrics(stack_plan: Inventory):
    bucket = stack_plan.outputs["modelBucket"].removeprefix("gs://")
    for deployments in in_signals(stack_plan, DEPLOYMENT).values():
        triton = deployments["triton"]
        spec, c = pod(triton), container(triton)
        (models,) = [v for v in spec["volumes"] if v["name"] == "models"]
        assert models["csi"] == {
            "driver": "gcsfuse.csi.storage.gke.io",
            "readOnly": True,
            "volumeAttributes": {"bucketName": bucket, "mountOptions": "implicit-dirs"},
        }
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
        annotations = triton.inputs["spec"]["template"]["metadata"]["annotations"]
        assert annotations["gke-gcsfuse/volumes"] == "true"
        # The GCS FUSE sidecar reaches the metadata server around the Istio proxy.
        excluded = annotations["traffic.sidecar.istio.io/excludeOutboundIPRanges"]
        assert "169.254.169.254/32" in excluded.split(",")
        # The model build's layout: Triton's repository under triton/.
        assert "--model-repository=/models/triton" in c["args"]
        assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": 8000, "grpc": 8001, "http-metrics": 8002}
        exit_timeout = next(a for a in c["args"] if a.startswith("--exit-timeout-secs="))
        assert int(exit_timeout.split("=")[1]) + 5 < spec["terminationGracePeriodSeconds"]


def test_service_and_triton_mount_the_same_model_build(stack_plan: Inventory):
    for deployments in workloads(stack_plan).values():
        volumes = [
            next(v for v in pod(deployments[app])["volumes"] if v["name"] == "models")
            for app in APPS
        ]
        assert volumes[0] == volumes[1]


def test_both_workloads_may_read_the_models_bucket(stack_plan: Inventory):
    emails = stack_plan.outputs["serviceAccounts"]
    readers = {
        b.inputs["member"]
        for b in stack_plan.of_type(BUCKET_IAM)
        if b.inputs["role"] == "roles/storage.objectViewer"
        and b.inputs["bucket"] == stack_plan.outputs["modelBucket"].removeprefix("gs://")
    }
    assert readers == {f"serviceAccount:{emails[app]}" for app in APPS}


def test_triton_model_settings_render_through_the_apps_model_build(stack_plan: Inventory):
    """`tritonModel` is what the model build takes: it validates and renders there."""
    model = config_of(stack_plan).workloads.triton.model
    settings = TritonModelConfig.model_validate(stack_plan.outputs["tritonModel"])
    text = render_config_pbtxt(settings)
    assert f'name: "{model.name}"' in text
    assert f"max_batch_size: {model.max_batch_size}" in text
    sizes = ", ".join(map(str, model.preferred_batch_sizes))
    assert f"preferred_batch_size: [ {sizes} ]" in text
    assert f"max_queue_delay_microseconds: {model.max_queue_delay_microseconds}" in text
    assert f"count: {model.instance_count}\n    kind: KIND_GPU" in text


# ---------------------------------------------------------------- services and scaling


def test_services_are_cluster_internal(stack_plan: Inventory):
    services = stack_plan.of_type(SERVICE)
    assert services
    for service in services:
        assert service.inputs["spec"]["type"] == "ClusterIP"
    for region_services in in_signals(stack_plan, SERVICE).values():
        ports = {p["name"]: p["port"] for p in region_services["triton"].inputs["spec"]["ports"]}
        assert ports["grpc"] == 8001
        grpc = region_services["signal-service"].inputs["spec"]["ports"][0]
        assert (grpc["name"], grpc["port"], grpc["appProtocol"]) == ("grpc", 50051, "grpc")


def test_autoscalers_target_cpu_request_rate_and_gpu_utilisation(stack_plan: Inventory):
    cfg = config_of(stack_plan)
    service, triton = cfg.workloads.signal_service, cfg.workloads.triton
    for region, hpas in in_signals(stack_plan, HPA).items():
        spec = hpas["signal-service"].inputs["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": "signal-service",
        }
        # Scale-in one replica a minute: its shards move well within it.
        assert spec["behavior"]["scaleDown"]["policies"] == [
            {"type": "Pods", "value": 1, "periodSeconds": 60}
        ]
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
        assert spec["maxReplicas"] <= SHARDS
        assert (spec["minReplicas"], spec["maxReplicas"]) == (
            service.replicas,
            service.max_replicas,
        )
        # Beside the predictive scaler's metric (tests/infra/test_autoscale.py), CPU is its
        # backstop target.
        cpu, rate, *predictive = spec["metrics"]
        scaling = cfg.intelligence.predictive_scaling
        target_cpu = scaling.cpu_backstop_percent if predictive else service.target_cpu_percent
        assert cpu["resource"] == {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target_cpu},
        }
        assert rate["pods"]["metric"]["name"] == REQUEST_RATE_METRIC
        assert rate["pods"]["target"] == {
            "type": "AverageValue",
            "averageValue": str(service.target_requests_per_second),
        }

        spec = hpas["triton"].inputs["spec"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (triton.replicas, triton.max_replicas)
        (gpu,) = spec["metrics"]
        assert gpu["type"] == "External"
        # GKE's managed DCGM metric: reported for time-shared GPUs, unlike the container's
        # accelerator duty cycle.
        assert gpu["external"]["metric"]["name"] == GPU_UTILIZATION_METRIC
        assert GPU_UTILIZATION_METRIC == "prometheus.googleapis.com|DCGM_FI_DEV_GPU_UTIL|gauge"
        # Cloud Monitoring is project-wide: this cluster's GPUs (only Triton runs on them),
        # averaged, against the target utilisation.
        assert gpu["external"]["metric"]["selector"]["matchLabels"] == {
            "resource.labels.cluster": f"signal-{region}",
            "reducer": "REDUCE_MEAN",
        }
        assert gpu["external"]["target"] == {"type": "Value", "value": "85"}


def test_the_signal_service_is_a_stateful_set_of_shard_owners(stack_plan: Inventory, tmp_path):
    """Stable pod names under a headless Service (each replica's address, published before
    it is ready: it owns shards while loading them), one spool volume per pod that outlives
    a scale-in, and a service config that turns the shards on with the drain budget split
    between in-flight calls and the handover."""
    cfg = config_of(stack_plan)
    grace = cfg.workloads.signal_service.termination_grace_seconds
    for region, services in in_signals(stack_plan, SERVICE).items():
        headless = services["signal-service-replicas"].inputs["spec"]
        assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
        assert headless["selector"] == {"app": "signal-service"}
        assert [p["port"] for p in headless["ports"]] == [50051]
        spec = workloads(stack_plan)[region]["signal-service"].inputs["spec"]
        assert spec["serviceName"] == "signal-service-replicas"
        assert spec["podManagementPolicy"] == "Parallel"
        assert spec["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Retain", "whenScaled": "Retain"}  # fmt: skip
        (claim,) = spec["volumeClaimTemplates"]
        # Immutable: constant labels only (a cost label change must not replace the set).
        assert claim["metadata"] == {"name": "spool", "labels": {"app": "signal-service"}}
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "4Gi"
        mount = {"name": "spool", "mountPath": "/var/lib/signal-service/spool"}
        assert mount in container(workloads(stack_plan)[region]["signal-service"])["volumeMounts"]
    endpoints = ServiceEndpoints("p", "ticks", "signals", "ds", "10.0.0.3:6379", "PEM")
    ca = tmp_path / "redis-ca.pem"
    ca.write_text("PEM")
    config = signal_service_config(endpoints, cfg.workloads.triton.model,
                                   service_grace_seconds(cfg.workloads.signal_service),
                                   "otel.observability:4317", 1.0, "10.0.0.3:6379")  # fmt: skip
    config["cache"]["redis"]["ca_file"] = str(ca)
    path = tmp_path / "config.yaml"
    path.write_text(render_service_config(config))
    app = load_config(path, {"sharding.advertise": "signal-service-0.x.svc:50051"})
    assert app.sharding.enabled and app.sharding.shards == SHARDS
    assert str(app.spool.dir) == "/var/lib/signal-service/spool"
    # preStop, then the calls' drain, then the handover, inside the pod's grace period.
    assert 5 + app.server.grace_s + app.sharding.handover_timeout_s < grace


def test_rollouts_get_time_for_a_gpu_node_and_spot_only_triton_is_not_awaited(
    stack_plan: Inventory,
):
    """pulumi-kubernetes waits 10 minutes for a rollout by default, Triton's startupProbe alone
    allows 10: a first rollout that scales a GPU node from zero and pulls Triton's image needs
    longer. Where no GPU pool is on-demand (dev), Triton runs only while spot capacity lasts:
    the deploy does not wait for it (the service serves from its in-process model)."""
    cfg = config_of(stack_plan)
    checked = 0
    for resource in stack_plan.resources:
        if resource.type not in (DEPLOYMENT, STATEFUL_SET) or "-workloads-" not in resource.name:
            continue
        checked += 1
        annotations = resource.inputs["metadata"]["annotations"]
        assert int(annotations["pulumi.com/timeoutSeconds"]) >= 30 * 60, resource.name
        region = resource.name.split("-workloads-")[0]
        on_demand = any(not p.spot for p in cfg.region(region).node_pools.gpu)
        skipped = annotations.get("pulumi.com/skipAwait") == "true"
        assert skipped == (resource.name.endswith("-triton") and not on_demand), resource.name
    assert checked == 2 * len(cfg.regions)


def test_prod_can_scale_to_ten_times_its_baseline(prod_plan: Inventory):
    for hpas in in_signals(prod_plan, HPA).values():
        for hpa in hpas.values():
            spec = hpa.inputs["spec"]
            assert spec["maxReplicas"] >= 10 * spec["minReplicas"], hpa.name


def test_disruption_budgets_let_nodes_drain(stack_plan: Inventory):
    for budgets in in_signals(stack_plan, PDB).values():
        for name, budget in budgets.items():
            assert budget.inputs["spec"] == {
                "maxUnavailable": 1,
                "selector": {"matchLabels": {"app": name}},
            }


def test_metrics_are_scraped_from_the_sidecars_merged_endpoint(stack_plan: Inventory):
    for monitors in in_signals(stack_plan, POD_MONITORING).values():
        for name, monitor in monitors.items():
            assert monitor.inputs["spec"] == {
                "selector": {"matchLabels": {"app": name}},
                "endpoints": [{"port": 15020, "path": "/stats/prometheus", "interval": "15s"}],
            }


# ---------------------------------------------------------------- network policy


def test_network_policy_denies_by_default_and_allows_named_flows(stack_plan: Inventory):
    for policies in in_signals(stack_plan, NETWORK_POLICY).values():
        assert policies["default-deny"].inputs["spec"] == {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
        }
        dns = policies["allow-dns"].inputs["spec"]["egress"][0]
        assert {p["port"] for p in dns["ports"]} == {53}
        triton = policies["triton-ingress"].inputs["spec"]
        assert triton["podSelector"] == {"matchLabels": {"app": "triton"}}
        (rule,) = triton["ingress"]
        # This region's signal service only: one mesh per region (review.md #9).
        assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "signal-service"}}}]
        assert rule["ports"] == [{"protocol": "TCP", "port": 8001}]
        service = policies["signal-service-ingress"].inputs["spec"]["ingress"][0]
        assert service["from"][0] == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-ingress"}},
            "podSelector": {"matchLabels": {"app": "istio-ingressgateway"}},
        }
        assert service["ports"] == [{"protocol": "TCP", "port": 50051}]
        redis = policies["signal-service-egress"].inputs["spec"]["egress"][1]
        assert {p["port"] for p in redis["ports"]} == {6379, 11000}
        # Replica to replica: a call for another's shard is sent on to its owner.
        replicas = {"podSelector": {"matchLabels": {"app": "signal-service"}}}
        assert replicas in service["from"]
        egress = policies["signal-service-egress"].inputs["spec"]["egress"]
        assert {"to": [replicas], "ports": [{"protocol": "TCP", "port": 50051}]} in egress


# ---------------------------------------------------------------- metrics adapter


def test_metrics_adapter_is_in_the_mesh_but_its_api_port_bypasses_the_sidecar(
    stack_plan: Inventory,
):
    regions = stack_plan.regions()
    adapters = [
        d
        for d in stack_plan.of_type(DEPLOYMENT)
        if d.inputs["metadata"]["namespace"] == "custom-metrics"
    ]
    assert sorted(regions[d.urn] for d in adapters) == sorted(stack_plan.outputs["regions"])  # type: ignore[type-var]
    for adapter in adapters:
        annotations = adapter.inputs["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"traffic.sidecar.istio.io/excludeInboundPorts": "6443"}
        assert "--secure-port=6443" in container(adapter)["command"]
    namespaces = [
        n
        for n in stack_plan.of_type("kubernetes:core/v1:Namespace")
        if n.inputs["metadata"]["name"] == "custom-metrics"
    ]
    for namespace in namespaces:
        assert namespace.inputs["metadata"]["labels"]["istio-injection"] == "enabled"
    services = {a.inputs["metadata"]["name"] for a in stack_plan.of_type(APISERVICE)}
    assert services == {
        "v1beta1.custom.metrics.k8s.io",
        "v1beta2.custom.metrics.k8s.io",
        "v1beta1.external.metrics.k8s.io",
    }


def test_metrics_adapter_reads_monitoring_through_one_project_grant(stack_plan: Inventory):
    grants = [
        g
        for g in stack_plan.of_type(PROJECT_IAM)
        if g.inputs["member"].endswith(
            "/subject/ns/custom-metrics/sa/custom-metrics-stackdriver-adapter"
        )
    ]
    (grant,) = grants
    assert grant.inputs["role"] == "roles/monitoring.viewer"
    assert grant.inputs["member"].startswith("principal://iam.googleapis.com/projects/")


# ---------------------------------------------------------------- settings


def test_bad_workload_settings_name_the_key():
    def broken(edit):
        return edited("prod", "workloads", edit)

    cases = [
        (
            broken(lambda w: w["triton"]["resources"]["limits"].update({"nvidia.com/gpu": "2"})),
            "workloads.triton.resources: Triton must request and limit the same number of nvidia.com/gpu",
        ),
        (
            broken(lambda w: w["signalService"].update({"maxReplicas": 20})),
            "workloads.signalService.maxReplicas: prod must be able to scale to 10x its baseline replicas (got 20); allowed: >= 30",
        ),
        (
            broken(lambda w: w["triton"].update({"maxReplicas": 33})),
            "workloads.triton.maxReplicas: more Triton replicas than the GPU pools of us-central1 can hold (32)",
        ),
        (
            broken(lambda w: w["triton"].update({"terminationGraceSeconds": 30})),
            "workloads.triton.terminationGraceSeconds",
        ),
        (
            broken(lambda w: w["triton"].update({"model": {"preferredBatchSizes": [64, 512]}})),
            "workloads.triton.model.preferredBatchSizes[1]: preferred batch size outside 1..maxBatchSize",
        ),
        (
            broken(lambda w: w["triton"].update({"model": {"preferredBatchSizes": [64, 32]}})),
            "preferred batch sizes must be unique and ascending",
        ),
        (
            broken(lambda w: w["signalService"]["resources"]["limits"].pop("memory")),
            "workloads.signalService.resources.limits: limits lack memory",
        ),
        (
            broken(lambda w: w["signalService"].update({"targetGpuDutyCycle": 85})),
            "workloads.signalService.targetGpuDutyCycle: unknown key",
        ),
    ]
    for workloads, fragment in cases:
        with pytest.raises(ConfigError) as exc:
            load("prod", workloads=workloads)
        assert fragment in str(exc.value)


def test_shared_gpus_take_one_gpu_per_container():
    workloads = edited(
        "dev",
        "workloads",
        lambda w: w["triton"]["resources"].update(
            requests={"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"},
            limits={"memory": "16Gi", "nvidia.com/gpu": "2"},
        ),
    )
    with pytest.raises(ConfigError) as exc:
        load("dev", workloads=workloads)
    assert "containers on shared GPUs can request only one GPU" in str(exc.value)


def test_workload_defaults_fill_what_is_not_set():
    # Without dev's workloads (prod-sized defaults), dev's averageNodes would be too few.
    cfg = load("dev", workloads=None, cost=None)
    assert cfg.workloads.triton.target_gpu_duty_cycle == 85
    assert cfg.workloads.triton.termination_grace_seconds == 25
    assert cfg.workloads.triton.model.max_queue_delay_microseconds == 500
    assert cfg.workloads.signal_service.target_cpu_percent == 70


def test_hpa_request_rate_metric_is_a_counter_the_service_exports():
    """The HPA scales on a metric the app really exports (a contract across infra and app)."""
    from prometheus_client import CollectorRegistry

    from app.telemetry import Metrics

    _, name, kind = REQUEST_RATE_METRIC.split("|")
    registry = CollectorRegistry()
    Metrics(registry)
    exported = {m.name: m.type for m in registry.collect()}
    assert kind == "counter"
    assert exported.get(name.removesuffix("_total")) == "counter", sorted(exported)


def test_images_are_pulled_on_every_start(stack_plan: Inventory):
    """A tag can move: every start asks the registry what the reference names now (for a
    digest only the manifest is checked; cached layers are reused)."""
    for deployment in [*stack_plan.of_type(DEPLOYMENT), *stack_plan.of_type(STATEFUL_SET)]:
        for c in pod(deployment)["containers"]:
            assert c["imagePullPolicy"] == "Always", (deployment.name, c["image"])


def test_images_prod_accepts_without_a_digest_carry_the_reason(prod_plan: Inventory):
    """`unpinnedImages` (config) reaches the pack as Checkov's skip annotation with the reason,
    on each Deployment that runs such an image, and on no other."""
    unpinned = config_of(prod_plan).unpinned_images
    assert unpinned
    annotated = 0
    for deployment in [*prod_plan.of_type(DEPLOYMENT), *prod_plan.of_type(STATEFUL_SET)]:
        (c, *_) = pod(deployment)["containers"]
        skip = deployment.inputs["metadata"].get("annotations", {}).get("checkov.io/skip1")
        if c["image"] in unpinned:
            assert skip == f"CKV_K8S_43={unpinned[c['image']]}", deployment.name
            annotated += 1
        else:
            assert skip is None, deployment.name
    assert annotated == len(prod_plan.outputs["regions"])
