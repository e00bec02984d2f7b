"""What a Helm release of the charts this platform installs (Istio's base, istiod, gateway and cni)
renders from its values, so the Kubernetes rules judge those objects as if declared directly.

A Release is opaque to the engine: its inputs are the chart reference and the values, not the
objects. Each model below places what the chart's templates take from the values (with the
chart's defaults for values left unset) where the templates put it, and leaves what the templates
fix regardless of the values, or what the sidecar injector fills in at admission (the proxy image,
its probes, the service account), unknown: a rule never reports what the stack's values cannot
change. Values that are secrets in an env map are judged on the Release itself by
secrets-no-plaintext-env, not again here. Models follow the charts of Istio 1.2x
(manifests/charts/{base,istio-control/istio-discovery,gateway,istio-cni}).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rules.values import UNKNOWN, as_dict, get, is_unknown

RELEASE_TYPES = ("kubernetes:helm.sh/v3:Release",)
ISTIO_CHARTS = ("base", "istiod", "gateway", "cni")
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
SERVICE = "kubernetes:core/v1:Service"
POD = "kubernetes:core/v1:Pod"
DEFAULT_HUB = "docker.io/istio"


@dataclass(frozen=True)
class Rendered:
    """One object a release renders: its type token, a label for messages, its body."""

    type: str
    label: str
    props: dict[str, Any]


@dataclass(frozen=True)
class Release:
    chart: str  # the chart's name (base, istiod, gateway, cni)
    name: str
    namespace: Any
    version: Any  # the chart version, which is also the default image tag of Istio's charts
    values: Any  # a dict, or UNKNOWN


def istio_release(token: str, props: Mapping[str, Any], name: str) -> Release | None:
    """The release, when `props` install one of Istio's charts (by its chart reference or its
    repository); None for anything else."""
    if token not in RELEASE_TYPES:
        return None
    chart, repo = get(props, "chart"), get(props, "repositoryOpts", "repo")
    if not isinstance(chart, str):
        return None
    chart_name = chart.rstrip("/").rsplit("/", 1)[-1]
    from_istio = "istio" in chart or (isinstance(repo, str) and "istio" in repo)
    if chart_name not in ISTIO_CHARTS or not from_istio:
        return None
    release_name = get(props, "name", default=name)
    values = get(props, "values", default={})
    return Release(
        chart=chart_name,
        name=release_name if isinstance(release_name, str) else name,
        namespace=get(props, "namespace", default="default"),
        version=get(props, "version", default=UNKNOWN),
        values=values if is_unknown(values) else as_dict(values),
    )


def _value(values: Any, *path: str, default: Any = None) -> Any:
    """A value as the templates read it: unset, empty or {} take the chart's default; a value
    below an unknown one is unknown (the rules then cannot tell, and say nothing)."""
    value = get(values, *path)
    if is_unknown(value):
        return UNKNOWN
    return default if value is None or value == "" or value == {} else value


def _image(release: Release, component: Any, default_name: str) -> Any:
    """`<hub>/<image>:<tag>` as Istio's templates build it, when the values choose any part of it;
    unknown when they leave it all to the chart (the chart version's own release image)."""
    image = _value(component, "image")
    if isinstance(image, str) and "/" in image:
        return image
    hub = _value(component, "hub", default=_value(release.values, "global", "hub"))
    tag = _value(component, "tag", default=_value(release.values, "global", "tag"))
    if hub is None and tag is None and image is None:
        return UNKNOWN
    tag = tag if tag is not None else release.version
    if is_unknown(tag) or is_unknown(hub) or is_unknown(image):
        return UNKNOWN
    return f"{hub or DEFAULT_HUB}/{image or default_name}:{tag}"


_SECURITY_FIELDS = (
    "privileged",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "capabilities",
    "runAsNonRoot",
    "runAsUser",
    "seccompProfile",
)


def _fixed_security(**chosen: Any) -> dict[str, Any]:
    """A container securityContext the template fixes, but for the fields the values choose."""
    return {
        **{field: UNKNOWN for field in _SECURITY_FIELDS},
        **{k: v for k, v in chosen.items() if v is not None},
    }


def _workload(
    kind: str,
    name: str,
    release: Release,
    container: dict[str, Any],
    pod: dict[str, Any] | None = None,
    annotations: Any = None,
) -> Rendered:
    # Fixed by the templates or the injector: unknown, never judged.
    spec: dict[str, Any] = {
        "serviceAccountName": UNKNOWN,
        "automountServiceAccountToken": UNKNOWN,
        "securityContext": UNKNOWN,
        "volumes": UNKNOWN,
        **(pod or {}),
    }
    container = {
        "image": UNKNOWN,
        "readinessProbe": UNKNOWN,
        "livenessProbe": UNKNOWN,
        **container,
    }
    spec["containers"] = [container]
    annotations = annotations if is_unknown(annotations) else as_dict(annotations)
    template = {"metadata": {"annotations": annotations, "labels": UNKNOWN}, "spec": spec}
    body = {
        "metadata": {"name": name, "namespace": release.namespace},
        "spec": {"template": template},
    }
    type_ = DAEMONSET if kind == "DaemonSet" else DEPLOYMENT
    return Rendered(type_, f"{kind} {name}", body)


# The gateway chart's container securityContext when `containerSecurityContext` is unset.
_GATEWAY_CONTAINER_SECURITY = {
    "capabilities": {"drop": ["ALL"]},
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsUser": 1337,
    "runAsGroup": 1337,
    "runAsNonRoot": True,
}
_GATEWAY_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "2000m", "memory": "1024Mi"},
}
_GATEWAY_POD_ANNOTATIONS = {
    "prometheus.io/port": "15020",
    "prometheus.io/scrape": "true",
    "prometheus.io/path": "/stats/prometheus",
    "inject.istio.io/templates": "gateway",
    "sidecar.istio.io/inject": "true",
}


def gateway(release: Release) -> list[Rendered]:
    values = release.values
    name = _value(values, "name", default=release.name)
    rendered = []
    service_type = _value(values, "service", "type", default="LoadBalancer")
    if service_type != "None":
        common = _value(values, "annotations", default={})
        own = _value(values, "service", "annotations", default={})
        annotations = (
            UNKNOWN
            if is_unknown(common) or is_unknown(own)
            else {**as_dict(common), **as_dict(own)}
        )
        service = {
            "metadata": {
                "name": name,
                "namespace": _value(values, "namespace", default=release.namespace),
                "annotations": annotations,
            },
            "spec": {
                "type": service_type,
                "loadBalancerSourceRanges": _value(values, "service", "loadBalancerSourceRanges"),
            },
        }
        rendered.append(Rendered(SERVICE, f"Service {name}", service))
    pod_security = _value(
        values,
        "securityContext",
        default={"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
    )
    container = {
        "name": "istio-proxy",
        "securityContext": _value(
            values, "containerSecurityContext", default=_GATEWAY_CONTAINER_SECURITY
        ),
        "resources": _value(values, "resources", default=_GATEWAY_RESOURCES),
        "ports": [{"containerPort": 15090, "protocol": "TCP"}],
        "volumeMounts": _value(values, "volumeMounts", default=[]),
    }
    if _value(values, "readinessProbe") is not None:
        container["readinessProbe"] = _value(values, "readinessProbe")
    pod = {"securityContext": pod_security, "volumes": _value(values, "volumes", default=[])}
    kind = _value(values, "kind", default="Deployment")
    annotations = _value(values, "podAnnotations", default=_GATEWAY_POD_ANNOTATIONS)
    rendered.append(_workload(kind, name, release, container, pod, annotations))
    return rendered


_ISTIOD_RESOURCES = {"requests": {"cpu": "500m", "memory": "2048Mi"}}
_PROXY_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "2000m", "memory": "1024Mi"},
}


def istiod(release: Release) -> list[Rendered]:
    values = release.values
    pilot = _value(values, "pilot", default={})
    revision = _value(values, "revision")
    name = f"istiod-{revision}" if isinstance(revision, str) else "istiod"
    seccomp = _value(pilot, "seccompProfile")
    container = {
        "name": "discovery",
        "image": _image(release, pilot, "pilot"),
        "resources": _value(
            pilot,
            "resources",
            default=_value(values, "global", "defaultResources", default=_ISTIOD_RESOURCES),
        ),
        # Fixed by the template (read-only root, UID 1337, drop ALL), but for the seccomp profile.
        "securityContext": _fixed_security(seccompProfile=seccomp),
    }
    annotations = _value(pilot, "podAnnotations", default={})
    control_plane = _workload("Deployment", name, release, container, annotations=annotations)
    # Every injected sidecar is rendered from istiod's values: privilege and resources.
    proxy = _value(values, "global", "proxy", default={})
    sidecar = {
        "metadata": {"name": "istio-proxy", "namespace": UNKNOWN},
        "spec": {
            "serviceAccountName": UNKNOWN,
            "automountServiceAccountToken": UNKNOWN,
            "securityContext": UNKNOWN,
            "containers": [
                {
                    "name": "istio-proxy",
                    "image": UNKNOWN,
                    "readinessProbe": UNKNOWN,
                    "livenessProbe": UNKNOWN,
                    "securityContext": _fixed_security(
                        privileged=_value(proxy, "privileged", default=False)
                    ),
                    "resources": _value(proxy, "resources", default=_PROXY_RESOURCES),
                }
            ],
        },
    }
    return [control_plane, Rendered(POD, "injected sidecar istio-proxy", sidecar)]


_CNI_RESOURCES = {"requests": {"cpu": "100m", "memory": "100Mi"}}


def cni(release: Release) -> list[Rendered]:
    values = release.values
    enabled = _value(values, "ambient", "enabled")
    shared = _value(values, "ambient", "shareHostNetworkNamespace")
    host_network = UNKNOWN if UNKNOWN in (enabled, shared) else enabled is True and shared is True
    # Fixed by the template: root with NET_ADMIN, SYS_ADMIN ... (the CNI agent needs them); the
    # values choose only the seccomp profile and, on some platforms, privileged mode.
    security = _fixed_security(
        seccompProfile=_value(values, "seccompProfile"), privileged=_value(values, "privileged")
    )
    container = {
        "name": "install-cni",
        "image": _image(release, values, "install-cni"),
        "securityContext": security,
        "resources": _value(
            values,
            "resources",
            default=_value(values, "global", "defaultResources", default=_CNI_RESOURCES),
        ),
    }
    pod = {"hostNetwork": host_network}
    annotations = _value(values, "podAnnotations", default={})
    return [_workload("DaemonSet", "istio-cni-node", release, container, pod, annotations)]


def base(release: Release) -> list[Rendered]:
    return []  # CRDs, the validating webhook and istio-reader RBAC: nothing the values change


CHART_MODELS: dict[str, Callable[[Release], list[Rendered]]] = {
    "base": base,
    "istiod": istiod,
    "gateway": gateway,
    "cni": cni,
}


def rendered_objects(token: str, props: Mapping[str, Any], name: str) -> list[Rendered]:
    """The objects a release renders that the rules can judge; [] for anything else."""
    release = istio_release(token, props, name)
    if release is None or is_unknown(release.values):
        return []
    return CHART_MODELS[release.chart](release)
