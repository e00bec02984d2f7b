"""VPC firewall rules and Compute Engine VMs: CIS Google Cloud sections 3 and 4, Checkov.

A platform team's stacks beside ours carry bastions, build VMs and the firewall rules that let
people reach them; these rules judge them as Checkov's GCP checks do. A VM's settings are read
from instances and from the instance templates that managed instance groups stamp out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rules.kit import ADVISORY, MANDATORY, Resource, Rules
from rules.values import as_list, get, is_unknown, shown

RULES = Rules("compute")
FIREWALL = "gcp:compute/firewall:Firewall"
VM_TYPES = {
    "gcp:compute/instance:Instance",
    "gcp:compute/instanceTemplate:InstanceTemplate",
    "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate",
}
_ANYWHERE = ("0.0.0.0/0", "::/0")
# Remote administration ports: SSH and RDP (CIS 3.6, 3.7).
ADMIN_PORTS = {22: "SSH", 3389: "RDP"}
# The Compute Engine default service account: PROJECT_NUMBER-compute@developer...
_DEFAULT_SA_SUFFIX = "-compute@developer.gserviceaccount.com"
_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def _open_to_anyone(r: Resource) -> bool | None:
    """Whether an ingress rule admits any address (None: unknown). A rule that names no
    source at all admits 0.0.0.0/0, as the API defaults it."""
    if get(r.props, "disabled") is True or get(r.props, "direction") == "EGRESS":
        return False
    sources = get(r.props, "sourceRanges")
    if is_unknown(sources):
        return None
    ranges = as_list(sources)
    if any(is_unknown(x) for x in ranges):
        return None
    if any(x in _ANYWHERE for x in ranges):
        return True
    if ranges:
        return False
    others = [get(r.props, key) for key in ("sourceTags", "sourceServiceAccounts")]
    if any(is_unknown(x) for x in others):
        return None
    return not any(as_list(x) for x in others)


def _ports(rule: Any) -> list[tuple[int, int]] | None:
    """The port ranges an allow entry opens (None: unknown); all ports when it names none."""
    ports = get(rule, "ports")
    if is_unknown(ports):
        return None
    spans = []
    for port in as_list(ports) or ["0-65535"]:
        if is_unknown(port):
            return None
        low, _, high = str(port).partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            continue
        spans.append((int(low), int(high or low)))
    return spans


@RULES.resource(
    "network-no-open-admin-ports",
    level=MANDATORY,
    description=(
        "No ingress firewall rule admits SSH (22) or RDP (3389) from anywhere (0.0.0.0/0 or "
        "::/0, or no source at all); reach VMs through IAP TCP forwarding's range or a bastion."
    ),
    source="CIS Google Cloud 3.6, 3.7; Checkov CKV_GCP_2, CKV_GCP_3.",
    types={FIREWALL},
)
def open_admin_ports(r: Resource) -> Iterator[str]:
    if _open_to_anyone(r) is not True:
        return
    for index, rule in enumerate(as_list(get(r.props, "allows"))):
        protocol = get(rule, "protocol")
        if is_unknown(protocol) or str(protocol).lower() not in ("tcp", "all"):
            continue
        for low, high in _ports(rule) or []:
            for port, service in sorted(ADMIN_PORTS.items()):
                if low <= port <= high:
                    yield (
                        f"allows[{index}] opens {service} (tcp {port}) to anyone: limit"
                        " sourceRanges (IAP's 35.235.240.0/20, a bastion's address)"
                    )


def _interfaces(r: Resource) -> list[Any]:
    return as_list(get(r.props, "networkInterfaces"))


@RULES.resource(
    "compute-no-public-ip",
    level=MANDATORY,
    description=(
        "VMs and instance templates have no external IP (no accessConfigs on a network "
        "interface); reach the internet through Cloud NAT and VMs through IAP."
    ),
    source="CIS Google Cloud 4.9; Checkov CKV_GCP_40.",
    types=VM_TYPES,
)
def no_public_ip(r: Resource) -> Iterator[str]:
    for index, interface in enumerate(_interfaces(r)):
        for key in ("accessConfigs", "ipv6AccessConfigs"):
            configs = get(interface, key)
            if not is_unknown(configs) and as_list(configs):
                yield f"networkInterfaces[{index}].{key} gives the VM an external address"


def _metadata(r: Resource, key: str) -> Any:
    return get(r.props, "metadata", key)


@RULES.resource(
    "compute-no-serial-port",
    level=MANDATORY,
    description="VMs do not enable interactive serial port access (metadata serial-port-enable).",
    source="CIS Google Cloud 4.5; Checkov CKV_GCP_35.",
    types=VM_TYPES,
)
def no_serial_port(r: Resource) -> Iterator[str]:
    value = _metadata(r, "serial-port-enable")
    if not is_unknown(value) and str(value).lower() in ("true", "1"):
        yield f"metadata serial-port-enable is {shown(value)}: the serial console accepts logins"


@RULES.resource(
    "compute-os-login",
    level=MANDATORY,
    description="VMs do not turn OS Login off (metadata enable-oslogin FALSE).",
    source="CIS Google Cloud 4.4; Checkov CKV_GCP_34.",
    types=VM_TYPES,
)
def os_login(r: Resource) -> Iterator[str]:
    value = _metadata(r, "enable-oslogin")
    if not is_unknown(value) and value is not None and str(value).lower() in ("false", "0"):
        yield (
            f"metadata enable-oslogin is {shown(value)}: SSH access then bypasses IAM "
            "(keys in metadata)"
        )


@RULES.resource(
    "compute-no-default-service-account",
    level=MANDATORY,
    description=(
        "VMs do not run as the Compute Engine default service account with the cloud-platform "
        "scope (Editor on the project)."
    ),
    source="CIS Google Cloud 4.1, 4.2; Checkov CKV_GCP_30, CKV_GCP_31.",
    types=VM_TYPES,
)
def default_service_account(r: Resource) -> Iterator[str]:
    account = get(r.props, "serviceAccount")
    if is_unknown(account) or account is None:
        return  # no service account: the VM has no Google credentials
    email = get(account, "email")
    if is_unknown(email):
        return
    if email is None or str(email) == "default" or str(email).endswith(_DEFAULT_SA_SUFFIX):
        scopes = get(account, "scopes")
        if not is_unknown(scopes) and _CLOUD_PLATFORM in as_list(scopes):
            yield (
                "runs as the Compute Engine default service account with the cloud-platform "
                "scope: give it a dedicated service account with the roles it needs"
            )


@RULES.resource(
    "compute-shielded-vm",
    level=ADVISORY,
    description="VMs boot with Shielded VM secure boot and integrity monitoring.",
    source="CIS Google Cloud 4.8; Checkov CKV_GCP_39.",
    types=VM_TYPES,
)
def shielded_vm(r: Resource) -> Iterator[str]:
    config = get(r.props, "shieldedInstanceConfig")
    if is_unknown(config):
        return
    secure_boot = get(config, "enableSecureBoot")
    integrity = get(config, "enableIntegrityMonitoring")
    if secure_boot is not True and not is_unknown(secure_boot):
        yield f"shieldedInstanceConfig.enableSecureBoot is {shown(secure_boot)}"
    if integrity is False:
        yield "shieldedInstanceConfig.enableIntegrityMonitoring is false"


@RULES.resource(
    "compute-block-project-ssh-keys",
    level=ADVISORY,
    description="VMs block project-wide SSH keys (metadata block-project-ssh-keys true).",
    source="CIS Google Cloud 4.3; Checkov CKV_GCP_32.",
    types=VM_TYPES,
)
def block_project_keys(r: Resource) -> Iterator[str]:
    value = _metadata(r, "block-project-ssh-keys")
    if not is_unknown(value) and str(value).lower() not in ("true", "1"):
        yield (f"metadata block-project-ssh-keys is {shown(value)}: every project-wide key logs in")
