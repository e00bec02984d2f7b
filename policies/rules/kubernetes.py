"""Kubernetes workload and object rules: Pod Security Standards, CIS Kubernetes, Checkov, Polaris,
kube-score. Workloads are Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Pods."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rules.kit import (
    ADVISORY,
    MANDATORY,
    STACKS_SCHEMA,
    NotApplicable,
    Resource,
    Rules,
    StackResource,
    current_stack,
    only_on_stacks,
    schema,
    string_list,
)
from rules.kube_objects import (
    CLUSTER_SCOPED_KINDS,
    LONG_RUNNING,
    Container,
    checkov_skips,
    containers,
    effective_security,
    is_kind,
    is_workload,
    kind_of,
    kube_type,
    namespace_of,
    pod_spec,
)
from rules.secrets import env_pairs, secret_reason
from rules.values import as_dict, as_int, as_list, get, is_unknown, shown

RULES = Rules("kubernetes")
GPU_NODE_KEYS = ("cloud.google.com/gke-accelerator",)
_INTERNAL_LB_ANNOTATIONS = (
    "networking.gke.io/load-balancer-type",
    "cloud.google.com/load-balancer-type",
)


def _pod(r: Resource) -> Any:
    return pod_spec(r.type, r.props)


def _each_container(r: Resource) -> Iterator[tuple[Any, Container]]:
    pod = _pod(r)
    if is_unknown(pod):
        return
    for container in containers(pod):
        yield pod, container


@RULES.resource(
    "k8s-no-privileged",
    level=MANDATORY,
    description="No privileged containers.",
    source=("Pod Security Standards (Baseline); Checkov CKV_K8S_16; Polaris runAsPrivileged."),
    types=is_workload,
)
def no_privileged(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        if get(c.spec, "securityContext", "privileged") is True:
            yield f"{c.label}: securityContext.privileged is true"


@RULES.resource(
    "k8s-no-privilege-escalation",
    level=MANDATORY,
    description="Containers set allowPrivilegeEscalation: false.",
    source=(
        "Pod Security Standards (Restricted); Checkov CKV_K8S_20; Polaris "
        "privilegeEscalationAllowed."
    ),
    types=is_workload,
)
def no_privilege_escalation(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        value = get(c.spec, "securityContext", "allowPrivilegeEscalation")
        if value is not False and not is_unknown(value):
            yield f"{c.label}: securityContext.allowPrivilegeEscalation must be false"


@RULES.resource(
    "k8s-run-as-non-root",
    level=MANDATORY,
    description="Containers run as a non-root user.",
    source=("Pod Security Standards (Restricted); Checkov CKV_K8S_23; Polaris runAsRootAllowed."),
    types=is_workload,
)
def run_as_non_root(r: Resource) -> Iterator[str]:
    for pod, c in _each_container(r):
        non_root = effective_security(pod, c, "runAsNonRoot")
        user = effective_security(pod, c, "runAsUser")
        if is_unknown(non_root) or is_unknown(user):
            continue
        uid = as_int(user)
        if uid == 0:
            yield f"{c.label}: runAsUser is 0 (root)"
        elif non_root is not True and (uid is None or uid < 1):
            yield f"{c.label}: set securityContext.runAsNonRoot true (or a non-zero runAsUser)"


@RULES.resource(
    "k8s-read-only-root-fs",
    level=MANDATORY,
    description="Containers have a read-only root filesystem.",
    source="Checkov CKV_K8S_22; Polaris notReadOnlyRootFilesystem.",
    types=is_workload,
)
def read_only_root_fs(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        value = get(c.spec, "securityContext", "readOnlyRootFilesystem")
        if value is not True and not is_unknown(value):
            yield f"{c.label}: securityContext.readOnlyRootFilesystem must be true"


@RULES.resource(
    "k8s-drop-all-capabilities",
    level=MANDATORY,
    description="Containers drop ALL capabilities and add back only allowed ones.",
    source=(
        "Pod Security Standards (Restricted); Checkov CKV_K8S_37, CKV_K8S_28, CKV_K8S_25, "
        "CKV_K8S_39."
    ),
    types=is_workload,
    config=schema({"allowedAddedCapabilities": string_list(["NET_BIND_SERVICE"])}),
)
def drop_all_capabilities(r: Resource) -> Iterator[str]:
    allowed = {str(c).upper() for c in r.config["allowedAddedCapabilities"]}
    for _, c in _each_container(r):
        capabilities = get(c.spec, "securityContext", "capabilities")
        drop = get(capabilities, "drop")
        if is_unknown(drop) or any(map(is_unknown, as_list(drop))):
            pass  # an unknown entry may be ALL
        elif "ALL" not in [str(x).upper() for x in as_list(drop)]:
            yield f"{c.label}: securityContext.capabilities.drop must include ALL"
        added = [str(x).upper() for x in as_list(get(capabilities, "add")) if isinstance(x, str)]
        extra = sorted(set(added) - allowed)
        if extra:
            yield f"{c.label}: adds capabilities {', '.join(extra)}"


@RULES.resource(
    "k8s-no-host-namespaces",
    level=MANDATORY,
    description="Pods do not share the host's network, PID or IPC namespace.",
    source="Pod Security Standards (Baseline); Checkov CKV_K8S_17, CKV_K8S_18, CKV_K8S_19.",
    types=is_workload,
)
def no_host_namespaces(r: Resource) -> Iterator[str]:
    pod = _pod(r)
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if get(pod, field) is True:
            yield f"pod spec sets {field}: true"


@RULES.resource(
    "k8s-no-host-ports",
    level=MANDATORY,
    description="Containers bind no host ports.",
    source="Pod Security Standards (Baseline); Checkov CKV_K8S_26; Polaris hostPortSet.",
    types=is_workload,
)
def no_host_ports(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        for port in as_list(get(c.spec, "ports")):
            host_port = as_int(get(port, "hostPort"))
            if host_port:
                yield f"{c.label}: binds hostPort {host_port}"


@RULES.resource(
    "k8s-no-host-path",
    level=MANDATORY,
    description="Pods mount no hostPath volumes.",
    source="Pod Security Standards (Baseline): HostPath Volumes; Checkov CKV_K8S_27.",
    types=is_workload,
)
def no_host_path(r: Resource) -> Iterator[str]:
    for volume in as_list(get(_pod(r), "volumes")):
        host_path = get(volume, "hostPath")
        if host_path is not None and not is_unknown(host_path):
            yield f'volume "{get(volume, "name")}" mounts a hostPath'


@RULES.resource(
    "k8s-seccomp-runtime-default",
    level=MANDATORY,
    description="Containers run under the RuntimeDefault seccomp profile.",
    source="Pod Security Standards (Restricted); Checkov CKV_K8S_31; CIS Kubernetes 5.7.2.",
    types=is_workload,
)
def seccomp_runtime_default(r: Resource) -> Iterator[str]:
    for pod, c in _each_container(r):
        profile = get(c.spec, "securityContext", "seccompProfile", "type")
        if profile is None:
            profile = get(pod, "securityContext", "seccompProfile", "type")
        if not is_unknown(profile) and profile not in ("RuntimeDefault", "Localhost"):
            yield f"{c.label}: seccompProfile.type must be RuntimeDefault (pod or container), got {shown(profile)}"


@RULES.resource(
    "k8s-resource-requests",
    level=MANDATORY,
    description="Containers request CPU and memory.",
    source=("Checkov CKV_K8S_10, CKV_K8S_12; Polaris cpuRequestsMissing, memoryRequestsMissing."),
    types=is_workload,
)
def resource_requests(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        requests = get(c.spec, "resources", "requests")
        if is_unknown(requests):
            continue
        missing = [k for k in ("cpu", "memory") if get(requests, k) is None]
        if missing:
            yield f"{c.label}: resources.requests lacks {' and '.join(missing)}"


@RULES.resource(
    "k8s-memory-limits",
    level=MANDATORY,
    description="Containers set a memory limit.",
    source="Checkov CKV_K8S_13; Polaris memoryLimitsMissing.",
    types=is_workload,
)
def memory_limits(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        limit = get(c.spec, "resources", "limits", "memory")
        if limit is None:
            yield f"{c.label}: resources.limits.memory is required"


def _gpu_amounts(c: Container, resource_names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    requests = as_dict(get(c.spec, "resources", "requests"))
    limits = as_dict(get(c.spec, "resources", "limits"))
    pick = lambda amounts: {k: amounts[k] for k in resource_names if k in amounts}  # noqa: E731
    return pick(requests), pick(limits)


@RULES.resource(
    "k8s-cpu-limits",
    level=ADVISORY,
    description=(
        "Containers set a CPU limit. Advisory: a limit caps a noisy neighbour, but CFS "
        "throttling can cost a latency-sensitive server more than it saves."
    ),
    source="Checkov CKV_K8S_11; Polaris cpuLimitsMissing.",
    types=is_workload,
)
def cpu_limits(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        if get(c.spec, "resources", "limits", "cpu") is None:
            yield f"{c.label}: resources.limits.cpu is unset"


@RULES.resource(
    "k8s-security-context",
    level=ADVISORY,
    description=(
        "Pods and each of their containers declare a securityContext, so their defaults are "
        "chosen, not inherited from the image."
    ),
    source="CIS Kubernetes 5.7.3; Checkov CKV_K8S_29, CKV_K8S_30.",
    types=is_workload,
)
def security_context(r: Resource) -> Iterator[str]:
    pod = _pod(r)
    if is_unknown(pod):
        return
    if get(pod, "securityContext") is None:
        yield "the pod spec declares no securityContext"
    for c in containers(pod):
        if get(c.spec, "securityContext") is None:
            yield f"{c.label}: declares no securityContext"


@RULES.resource(
    "k8s-gpu-requests-equal-limits",
    level=MANDATORY,
    description="GPU requests equal GPU limits (extended resources cannot be overcommitted).",
    source="Kubernetes docs, 'Schedule GPUs'.",
    types=is_workload,
    config=schema({"gpuResources": string_list(["nvidia.com/gpu"])}),
)
def gpu_requests_equal_limits(r: Resource) -> Iterator[str]:
    names = list(r.config["gpuResources"])
    for _, c in _each_container(r):
        if is_unknown(get(c.spec, "resources", "requests")) or is_unknown(
            get(c.spec, "resources", "limits")
        ):
            continue
        requests, limits = _gpu_amounts(c, names)
        for name in sorted(set(requests) | set(limits)):
            request, limit = requests.get(name), limits.get(name)
            if is_unknown(request) or is_unknown(limit):
                continue
            if name not in limits:
                yield f"{c.label}: requests {name} without a limit"
            elif name in requests and str(request) != str(limit):
                yield f"{c.label}: {name} request {request} differs from limit {limit}"


def _selects_gpu_node(pod: Any) -> bool:
    if is_unknown(get(pod, "nodeSelector")) or is_unknown(get(pod, "affinity")):
        return True  # cannot tell during preview
    if any(key in as_dict(get(pod, "nodeSelector")) for key in GPU_NODE_KEYS):
        return True
    terms = get(
        pod,
        "affinity",
        "nodeAffinity",
        "requiredDuringSchedulingIgnoredDuringExecution",
        "nodeSelectorTerms",
    )
    for term in as_list(terms):
        for expression in as_list(get(term, "matchExpressions")):
            if is_unknown(get(expression, "key")) or is_unknown(get(expression, "operator")):
                return True
            if get(expression, "key") in GPU_NODE_KEYS and get(expression, "operator") in (
                "In",
                "Exists",
            ):
                return True
    return False


@RULES.resource(
    "k8s-gpu-node-selector",
    level=MANDATORY,
    description="Pods that request GPUs select a GPU node (cloud.google.com/gke-accelerator).",
    source="GKE docs, 'Deploy GPU workloads in GKE Standard'.",
    types=is_workload,
    config=schema({"gpuResources": string_list(["nvidia.com/gpu"])}),
)
def gpu_node_selector(r: Resource) -> Iterator[str]:
    names = list(r.config["gpuResources"])
    pod = _pod(r)
    if is_unknown(pod):
        return
    users = [c.label for c in containers(pod) if any(_gpu_amounts(c, names))]
    if not users:
        raise NotApplicable("no container requests a GPU")
    if not _selects_gpu_node(pod):
        yield (
            f"{', '.join(users)} request GPUs but the pod does not select a GPU node "
            f"(nodeSelector or required nodeAffinity on {GPU_NODE_KEYS[0]})"
        )


def parse_image(image: str) -> tuple[str, str | None, str | None]:
    """`repo[:tag][@digest]` → (repo, tag, digest); a registry port is not a tag."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    repo = name[: len(name) - len(tag) - 1] if tag is not None else name
    return repo, tag, digest or None


@RULES.resource(
    "k8s-image-tag-pinned",
    level=MANDATORY,
    description="Images carry an explicit tag other than latest, or a digest.",
    source="Checkov CKV_K8S_14; Polaris tagNotSpecified; kube-score container-image-tag.",
    types=is_workload,
)
def image_tag_pinned(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        image = get(c.spec, "image")
        if not isinstance(image, str) or is_unknown(image):
            continue
        _, tag, digest = parse_image(image)
        if digest:
            continue
        if tag is None:
            yield f"{c.label}: image {image!r} has no tag or digest (implies latest)"
        elif tag == "latest":
            yield f"{c.label}: image {image!r} uses the mutable tag 'latest'"


@RULES.resource(
    "k8s-image-pull-policy",
    level=ADVISORY,
    description=(
        "Containers whose image names a tag pull it Always, so every node runs what the tag "
        "names now (Kubernetes pulls IfNotPresent for any tag but latest)."
    ),
    source="Checkov CKV_K8S_15; Kubernetes docs, 'Images: image pull policy'.",
    types=is_workload,
)
def image_pull_policy(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        image, policy = get(c.spec, "image"), get(c.spec, "imagePullPolicy")
        if not isinstance(image, str) or is_unknown(policy):
            continue
        tag = parse_image(image)[1]
        if policy is None and tag not in (None, "latest"):
            yield f"{c.label}: image {image!r} names tag {tag!r} but imagePullPolicy is unset (IfNotPresent)"
        elif policy is not None and policy != "Always":
            yield f"{c.label}: imagePullPolicy is {policy!r}; use Always"


@RULES.resource(
    "k8s-image-digest",
    level=MANDATORY,
    description=(
        "On the configured stacks (prod), images are pinned by digest; a workload annotated "
        "`checkov.io/skip<N>: CKV_K8S_43=<reason>` is left to k8s-image-digest-every-stack, "
        "which reports it with its reason."
    ),
    source="Checkov CKV_K8S_43 (and its skip annotation).",
    types=is_workload,
    config=schema(STACKS_SCHEMA),
)
def image_digest(r: Resource) -> Iterator[str]:
    stack = only_on_stacks(r.config)
    if _digest_exception(r):
        return
    for c, image in _undigested(r):
        yield f"{c.label}: image {image!r} must be pinned by digest (@sha256:...) on stack {stack}"


def _undigested(r: Resource) -> Iterator[tuple[Container, str]]:
    for _, c in _each_container(r):
        image = get(c.spec, "image")
        if isinstance(image, str) and not parse_image(image)[2]:
            yield c, image


def _digest_exception(r: Resource) -> str | None:
    """The reason a workload gives for running an image by tag (a Checkov skip of CKV_K8S_43)."""
    return checkov_skips(r.props).get("CKV_K8S_43")


@RULES.resource(
    "k8s-image-digest-every-stack",
    level=ADVISORY,
    description=(
        "Images are pinned by digest on every stack; advisory where k8s-image-digest does not "
        "already make it mandatory (exceptStacks), and there for the workloads that skip "
        "CKV_K8S_43 with a reason."
    ),
    source="Checkov CKV_K8S_43; Kubernetes docs, 'Images: image names'.",
    types=is_workload,
    config=schema(
        {
            "exceptStacks": string_list(
                ["prod"], "stacks where k8s-image-digest enforces this as mandatory"
            )
        }
    ),
)
def image_digest_every_stack(r: Resource) -> Iterator[str]:
    stack, reason = current_stack(), _digest_exception(r)
    if stack in [str(s) for s in r.config["exceptStacks"]] and reason is None:
        raise NotApplicable(f"k8s-image-digest enforces digests on stack {stack!r}")
    because = f" (accepted by checkov.io/skip: {reason})" if reason else ""
    for c, image in _undigested(r):
        yield f"{c.label}: image {image!r} is not pinned by digest: a moved tag changes what runs{because}"


@RULES.resource(
    "k8s-service-account-token",
    level=ADVISORY,
    description=(
        "Pods do not mount a Kubernetes API token unless they call the API "
        "(automountServiceAccountToken: false)."
    ),
    source="CIS Kubernetes 5.1.6; Checkov CKV_K8S_38.",
    types=is_workload,
)
def service_account_token(r: Resource) -> Iterator[str]:
    pod = _pod(r)
    mount = get(pod, "automountServiceAccountToken")
    if not is_unknown(pod) and mount is not False and not is_unknown(mount):
        yield (
            f"automountServiceAccountToken is {shown(mount)}: every container gets a token for "
            "the Kubernetes API; set it false unless the pod calls the API"
        )


@RULES.resource(
    "k8s-high-uid",
    level=ADVISORY,
    description=(
        "Containers run as a UID of at least 10000, so a breakout does not map onto a host "
        "user (system accounts use low UIDs)."
    ),
    source="Checkov CKV_K8S_40; kube-score container-security-context-user-group-id.",
    types=is_workload,
    config=schema({"minimumUid": {"type": "integer", "minimum": 1, "default": 10000}}),
)
def high_uid(r: Resource) -> Iterator[str]:
    minimum = as_int(r.config["minimumUid"]) or 10000
    for pod, c in _each_container(r):
        user = effective_security(pod, c, "runAsUser")
        if is_unknown(user):
            continue
        uid = as_int(user)
        if uid is None:
            yield f"{c.label}: runAsUser is unset (the image's user, often root); set one >= {minimum}"
        elif uid < minimum:
            yield f"{c.label}: runAsUser {uid} is below {minimum}"


@RULES.resource(
    "k8s-probes",
    level=MANDATORY,
    description="Long-running containers define readiness and liveness probes.",
    source=("Checkov CKV_K8S_8, CKV_K8S_9; Polaris readinessProbeMissing, livenessProbeMissing."),
    types=is_workload,
)
def probes(r: Resource) -> Iterator[str]:
    if kind_of(r.type) not in LONG_RUNNING:
        raise NotApplicable("run-to-completion workloads need no probes")
    pod = _pod(r)
    if is_unknown(pod):
        return
    for c in containers(pod, ("containers",)):
        missing = [p for p in ("readinessProbe", "livenessProbe") if get(c.spec, p) is None]
        if missing:
            yield f"{c.label}: {' and '.join(missing)} missing"


@RULES.resource(
    "k8s-no-default-namespace",
    level=MANDATORY,
    description="Namespaced objects never land in the default namespace.",
    source="CIS Kubernetes 5.7.4; Checkov CKV_K8S_21.",
    types=lambda token: kube_type(token) is not None,
    config=schema(
        {
            "clusterScopedKinds": string_list(
                [], "more cluster-scoped kinds (custom resources) to skip"
            )
        }
    ),
)
def no_default_namespace(r: Resource) -> Iterator[str]:
    kt = kube_type(r.type)
    extra = set(r.config["clusterScopedKinds"])
    # Cluster* kinds (ClusterRole, ClusterIssuer, ClusterSecretStore ...) are cluster-scoped.
    if kt is None or kt.kind in CLUSTER_SCOPED_KINDS | extra or kt.kind.startswith("Cluster"):
        raise NotApplicable("cluster-scoped or not a Kubernetes object")
    namespace = namespace_of(r.props, r.provider_props)
    if namespace == "default":
        yield f"{kt.kind} lands in the default namespace: set metadata.namespace"


@RULES.resource(
    "k8s-no-default-service-account",
    level=MANDATORY,
    description="Pods run as a dedicated Kubernetes service account.",
    source="CIS Kubernetes 5.1.5; Checkov CKV_K8S_41.",
    types=is_workload,
)
def no_default_service_account(r: Resource) -> Iterator[str]:
    pod = _pod(r)
    account = get(pod, "serviceAccountName", default=get(pod, "serviceAccount"))
    if is_unknown(pod) or is_unknown(account):
        return
    if account in (None, "", "default"):
        yield "pod runs as the namespace's default service account: set serviceAccountName"


@RULES.resource(
    "k8s-no-plaintext-secrets",
    level=MANDATORY,
    description="No secret values in plain env vars (use secretKeyRef or mounted files).",
    source="CIS Kubernetes 5.4.1; Checkov CKV_K8S_35.",
    types=is_workload,
)
def no_plaintext_secrets(r: Resource) -> Iterator[str]:
    for _, c in _each_container(r):
        for _, name, value in env_pairs(get(c.spec, "env")):
            reason = secret_reason(name, value)
            if reason:
                yield (
                    f"{c.label}: env {name} carries a literal secret ({reason}); "
                    "use valueFrom.secretKeyRef"
                )


@RULES.resource(
    "k8s-service-internal",
    level=MANDATORY,
    description="Services are not NodePort, and LoadBalancers are internal.",
    source=("kube-score service-type; GKE docs, 'Internal passthrough Network Load Balancer'."),
    types=lambda token: is_kind(token, "core", "Service"),
)
def service_internal(r: Resource) -> Iterator[str]:
    kind = get(r.props, "spec", "type")
    if kind == "NodePort":
        yield "Service type NodePort exposes every node; use ClusterIP or an internal LoadBalancer"
    elif kind == "LoadBalancer":
        annotations = get(r.props, "metadata", "annotations")
        if is_unknown(annotations) or any(map(is_unknown, as_dict(annotations).values())):
            return
        annotations = as_dict(annotations)
        internal = any(
            str(annotations.get(key, "")).lower() == "internal" for key in _INTERNAL_LB_ANNOTATIONS
        )
        if not internal:
            yield (
                "Service type LoadBalancer is external: annotate "
                "networking.gke.io/load-balancer-type: Internal (public entry goes through the mesh gateway)"
            )


@RULES.resource(
    "k8s-pdb-allows-disruption",
    level=MANDATORY,
    description="PodDisruptionBudgets allow at least one voluntary disruption.",
    source="kube-score poddisruptionbudget; GKE docs, 'Node upgrade strategies'.",
    types=lambda token: is_kind(token, "policy", "PodDisruptionBudget"),
)
def pdb_allows_disruption(r: Resource) -> Iterator[str]:
    spec = as_dict(get(r.props, "spec"))
    max_unavailable = get(spec, "maxUnavailable")
    min_available = get(spec, "minAvailable")
    if max_unavailable in (0, "0", "0%"):
        yield "maxUnavailable 0 blocks every voluntary disruption (node upgrades, spot drains)"
    if min_available == "100%":
        yield "minAvailable 100% blocks every voluntary disruption (node upgrades, spot drains)"


def _replicated(resources: list[StackResource]) -> Iterator[StackResource]:
    for r in resources:
        if is_kind(r.type, "apps", "Deployment") or is_kind(r.type, "apps", "StatefulSet"):
            yield r


def hpa_targets(resources: list[StackResource]) -> dict[tuple[Any, str, Any], dict[str, Any]]:
    """(namespace, kind, name) → HPA spec, for every HorizontalPodAutoscaler in the stack."""
    found: dict[tuple[Any, str, Any], dict[str, Any]] = {}
    for r in resources:
        if is_kind(r.type, "autoscaling", "HorizontalPodAutoscaler"):
            target = as_dict(get(r.props, "spec", "scaleTargetRef"))
            key = (
                namespace_of(r.props, r.provider_props),
                get(target, "kind"),
                get(target, "name"),
            )
            found[key] = as_dict(get(r.props, "spec"))
    return found


def object_key(r: StackResource) -> tuple[Any, str, Any]:
    return (
        namespace_of(r.props, r.provider_props),
        kind_of(r.type),
        get(r.props, "metadata", "name"),
    )


@RULES.stack(
    "k8s-replicas-or-hpa",
    level=ADVISORY,
    description=("Deployments and StatefulSets run at least two replicas or are scaled by an HPA."),
    source="Polaris deploymentMissingReplicas.",
    config=schema({"minReplicas": {"type": "integer", "minimum": 1, "default": 2}}),
)
def replicas_or_hpa(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[tuple[str | None, str]]:
    minimum = as_int(config["minReplicas"]) or 2
    hpas = hpa_targets(resources)
    for r in _replicated(resources):
        if object_key(r) in hpas:
            continue
        replicas = get(r.props, "spec", "replicas", default=1)
        if is_unknown(replicas):
            continue
        count = as_int(replicas)
        if count is not None and count < minimum:
            yield (
                r.urn,
                f"{kind_of(r.type)} runs {count} replica(s) and no HorizontalPodAutoscaler targets it",
            )
