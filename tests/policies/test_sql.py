"""Cloud SQL rules through the real pack: a golden private, encrypted, backed-up instance and one
mutation per violation."""

from __future__ import annotations

import pytest

from tests.policies.cases import COST_LABELS, DELETE, UNKNOWN, Case, assert_case, bad, mutate, ok
from tools.analyzer import PolicyPackProcess

INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
KMS = "projects/p/locations/us-central1/keyRings/data/cryptoKeys/sql"

LEVELS = {
    "sql-no-public-ip": "mandatory",
    "sql-no-open-authorized-networks": "mandatory",
    "sql-require-ssl": "mandatory",
    "sql-backups": "mandatory",
    "sql-deletion-protection": "mandatory",
    "sql-supported-version": "mandatory",
    "sql-no-unsafe-flags": "mandatory",
}

GOLDEN = {
    "name": "orders",
    "region": "us-central1",
    "databaseVersion": "POSTGRES_16",
    "deletionProtection": True,
    "encryptionKeyName": KMS,
    "settings": {
        "tier": "db-custom-2-7680",
        "userLabels": COST_LABELS,
        "deletionProtectionEnabled": True,
        "ipConfiguration": {
            "ipv4Enabled": False,
            "privateNetwork": "projects/p/global/networks/vpc",
            "sslMode": "ENCRYPTED_ONLY",
        },
        "backupConfiguration": {"enabled": True, "pointInTimeRecoveryEnabled": True},
    },
}
PROD = {"sql-deletion-protection": {"stacks": ["test"]}}


def s(policy: str, label: str, changes: dict, expect: int = 1, **kw: object) -> Case:
    """A violating mutation of the golden instance."""
    return bad(policy, INSTANCE, mutate(GOLDEN, changes), label, expect, **kw)


CASES = [
    ok("sql-no-public-ip", INSTANCE, GOLDEN),
    s("sql-no-public-ip", "api-default", {"settings.ipConfiguration.ipv4Enabled": DELETE}),
    s(
        "sql-no-public-ip",
        "no-ip-configuration",
        {"settings.ipConfiguration": DELETE},
        also=frozenset({"sql-require-ssl"}),
    ),
    s("sql-no-public-ip", "public", {"settings.ipConfiguration.ipv4Enabled": True}),
    ok(
        "sql-no-open-authorized-networks",
        INSTANCE,
        mutate(
            GOLDEN,
            {"settings.ipConfiguration.authorizedNetworks": [{"value": "10.0.0.0/8"}]},
        ),
        "private-range",
    ),
    s(
        "sql-no-open-authorized-networks",
        "world",
        {
            "settings.ipConfiguration.authorizedNetworks": [
                {"name": "office", "value": "203.0.113.0/24"},
                {"name": "anyone", "value": "0.0.0.0/0"},
            ]
        },
        message="authorizedNetworks[1] authorizes 0.0.0.0/0",
    ),
    ok(
        "sql-require-ssl",
        INSTANCE,
        mutate(GOLDEN, {"settings.ipConfiguration.sslMode": "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"}),
        "client-certificates",
    ),
    s("sql-require-ssl", "unset", {"settings.ipConfiguration.sslMode": DELETE}),
    s(
        "sql-require-ssl",
        "plaintext-allowed",
        {"settings.ipConfiguration.sslMode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED"},
        message="ALLOW_UNENCRYPTED_AND_ENCRYPTED",
    ),
    ok(
        "sql-backups",
        INSTANCE,
        mutate(GOLDEN, {"masterInstanceName": "orders", "settings.backupConfiguration": DELETE}),
        "read-replica",
    ),
    s("sql-backups", "none", {"settings.backupConfiguration": DELETE}),
    s("sql-backups", "disabled", {"settings.backupConfiguration.enabled": False}),
    ok("sql-deletion-protection", INSTANCE, GOLDEN, "prod", config=PROD),
    ok(
        "sql-deletion-protection",
        INSTANCE,
        mutate(GOLDEN, {"deletionProtection": False}),
        "not-a-protected-stack",
    ),
    s("sql-deletion-protection", "off", {"deletionProtection": False}, config=PROD),
    s(
        "sql-deletion-protection",
        "api-side-off",
        {"settings.deletionProtectionEnabled": False},
        config=PROD,
    ),
    ok(
        "sql-supported-version",
        INSTANCE,
        mutate(GOLDEN, {"databaseVersion": "MYSQL_8_4"}),
        "mysql-8-4",
    ),
    ok(
        "sql-supported-version",
        INSTANCE,
        mutate(GOLDEN, {"databaseVersion": UNKNOWN}),
        "unknown",
    ),
    s("sql-supported-version", "postgres-11", {"databaseVersion": "POSTGRES_11"}),
    s(
        "sql-supported-version",
        "mysql-5-7",
        {"databaseVersion": "MYSQL_5_7"},
        message="MYSQL_5_7 is past standard support",
    ),
    s(
        "sql-supported-version",
        "configured",
        {"databaseVersion": "POSTGRES_16"},
        config={"sql-supported-version": {"endOfLifeVersions": ["POSTGRES_1?"]}},
    ),
    ok(
        "sql-no-unsafe-flags",
        INSTANCE,
        mutate(
            GOLDEN,
            {
                "databaseVersion": "MYSQL_8_4",
                "settings.databaseFlags": [{"name": "local_infile", "value": "off"}],
            },
        ),
        "mysql-local-infile-off",
    ),
    ok(
        "sql-no-unsafe-flags",
        INSTANCE,
        mutate(GOLDEN, {"settings.databaseFlags": [{"name": "local_infile", "value": "on"}]}),
        "a-mysql-flag-on-postgres-is-not-judged",
    ),
    s(
        "sql-no-unsafe-flags",
        "mysql-local-infile-on",
        {
            "databaseVersion": "MYSQL_8_0",
            "settings.databaseFlags": [
                {"name": "slow_query_log", "value": "on"},
                {"name": "local_infile", "value": "ON"},
            ],
        },
        message="settings.databaseFlags[1] sets local_infile to 'ON'",
    ),
    s(
        "sql-no-unsafe-flags",
        "sqlserver-two-unsafe-flags",
        {
            "databaseVersion": "SQLSERVER_2022_STANDARD",
            "settings.databaseFlags": [
                {"name": "cross db ownership chaining", "value": "on"},
                {"name": "external scripts enabled", "value": "on"},
                {"name": "user connections", "value": "0"},
            ],
        },
        expect=2,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sql_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
