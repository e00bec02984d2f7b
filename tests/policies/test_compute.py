"""Firewall rules and Compute Engine VMs through the real pack: a golden bastion-free setup (a
firewall admitting SSH from IAP's range, a private VM on its own service account) and one
mutation per violation."""

from __future__ import annotations

import pytest

from tests.policies.cases import COST_LABELS, DELETE, UNKNOWN, Case, assert_case, bad, mutate, ok
from tools.analyzer import PolicyPackProcess

FIREWALL = "gcp:compute/firewall:Firewall"
INSTANCE = "gcp:compute/instance:Instance"
TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"

LEVELS = {
    "network-no-open-admin-ports": "mandatory",
    "compute-no-public-ip": "mandatory",
    "compute-no-serial-port": "mandatory",
    "compute-os-login": "mandatory",
    "compute-no-default-service-account": "mandatory",
    "compute-shielded-vm": "advisory",
    "compute-block-project-ssh-keys": "advisory",
}

IAP_SSH = {
    "name": "allow-iap-ssh",
    "network": "projects/p/global/networks/vpc",
    "direction": "INGRESS",
    "allows": [{"protocol": "tcp", "ports": ["22"]}],
    "sourceRanges": ["35.235.240.0/20"],
}
VM = {
    "name": "worker",
    "zone": "us-central1-a",
    "machineType": "e2-standard-2",
    "labels": COST_LABELS,
    "bootDisk": {
        "initializeParams": {"image": "debian-cloud/debian-12"},
        "kmsKeySelfLink": "projects/p/locations/us-central1/keyRings/r/cryptoKeys/disk",
    },
    "networkInterfaces": [{"subnetwork": "projects/p/regions/us-central1/subnetworks/s"}],
    "serviceAccount": {
        "email": "worker@p.iam.gserviceaccount.com",
        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
    },
    "shieldedInstanceConfig": {"enableSecureBoot": True, "enableIntegrityMonitoring": True},
    "metadata": {"enable-oslogin": "TRUE", "block-project-ssh-keys": "true"},
}
DEFAULT_SA = "123456789012-compute@developer.gserviceaccount.com"


def fw(label: str, changes: dict, expect: int = 1, **kw: object) -> Case:
    return bad(
        "network-no-open-admin-ports", FIREWALL, mutate(IAP_SSH, changes), label, expect, **kw
    )


def vm(policy: str, label: str, changes: dict, expect: int = 1, type_: str = INSTANCE, **kw):
    return bad(policy, type_, mutate(VM, changes), label, expect, **kw)


CASES = [
    ok("network-no-open-admin-ports", FIREWALL, IAP_SSH),
    fw("ssh-from-anywhere", {"sourceRanges": ["0.0.0.0/0"]}, message="SSH (tcp 22)"),
    fw(
        "rdp-in-a-range-from-ipv6-anywhere",
        {"sourceRanges": ["::/0"], "allows": [{"protocol": "tcp", "ports": ["3000-4000"]}]},
        message="RDP (tcp 3389)",
    ),
    fw("all-protocols-no-source", {"sourceRanges": DELETE, "allows": [{"protocol": "all"}]}, 2),
    ok(
        "network-no-open-admin-ports",
        FIREWALL,
        mutate(
            IAP_SSH,
            {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["443"]}]},
        ),
        "https-from-anywhere",
    ),
    ok(
        "network-no-open-admin-ports",
        FIREWALL,
        mutate(IAP_SSH, {"sourceRanges": DELETE, "sourceTags": ["bastion"]}),
        "from-tagged-vms",
    ),
    ok(
        "network-no-open-admin-ports",
        FIREWALL,
        mutate(IAP_SSH, {"sourceRanges": ["0.0.0.0/0"], "disabled": True}),
        "disabled",
    ),
    ok(
        "network-no-open-admin-ports",
        FIREWALL,
        mutate(IAP_SSH, {"sourceRanges": UNKNOWN}),
        "unknown-sources",
    ),
    ok("compute-no-public-ip", INSTANCE, VM),
    ok("compute-no-public-ip", TEMPLATE, VM, "template"),
    vm("compute-no-public-ip", "ephemeral-ip", {"networkInterfaces.0.accessConfigs": [{}]}),
    vm(
        "compute-no-public-ip",
        "template-ephemeral-ip",
        {"networkInterfaces.0.accessConfigs": [{"networkTier": "PREMIUM"}]},
        type_=TEMPLATE,
    ),
    *(
        ok(policy, INSTANCE, VM)
        for policy in (
            "compute-no-serial-port",
            "compute-os-login",
            "compute-shielded-vm",
            "compute-block-project-ssh-keys",
        )
    ),
    vm("compute-no-serial-port", "serial-port", {"metadata.serial-port-enable": "TRUE"}),
    vm("compute-os-login", "os-login-off", {"metadata.enable-oslogin": "FALSE"}),
    vm(
        "compute-no-default-service-account",
        "default-account-full-scope",
        {"serviceAccount.email": DEFAULT_SA},
    ),
    vm(
        "compute-no-default-service-account",
        "default-account-by-omission",
        {"serviceAccount.email": DELETE},
    ),
    ok(
        "compute-no-default-service-account",
        INSTANCE,
        mutate(
            VM,
            {
                "serviceAccount.email": DEFAULT_SA,
                "serviceAccount.scopes": ["https://www.googleapis.com/auth/logging.write"],
            },
        ),
        "default-account-narrow-scopes",
    ),
    vm("compute-shielded-vm", "no-secure-boot", {"shieldedInstanceConfig": DELETE}),
    vm(
        "compute-block-project-ssh-keys",
        "project-keys",
        {"metadata.block-project-ssh-keys": DELETE},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_compute_rules(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
