"""Cloud SQL rules (gcp:sql/databaseInstance:DatabaseInstance): CIS Google Cloud section 6,
Checkov and Cloud SQL docs."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Any

from rules.kit import (
    MANDATORY,
    STACKS_SCHEMA,
    NotApplicable,
    Resource,
    Rules,
    only_on_stacks,
    schema,
    string_list,
)
from rules.values import as_list, get, is_unknown, shown

RULES = Rules("sql")
INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
_OPEN_NETWORKS = ("0.0.0.0/0", "::/0")
_SSL_ENFORCED = ("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED")
# Versions past Cloud SQL's standard support (in paid extended support, or retired).
END_OF_LIFE_VERSIONS = [
    "MYSQL_5_6",
    "MYSQL_5_7",
    "POSTGRES_9_6",
    "POSTGRES_10",
    "POSTGRES_11",
    "POSTGRES_12",
    "POSTGRES_13",
    "SQLSERVER_2017_*",
]


def _ip_configuration(r: Resource) -> Any:
    return get(r.props, "settings", "ipConfiguration", default={})


@RULES.resource(
    "sql-no-public-ip",
    level=MANDATORY,
    description=(
        "Cloud SQL instances have no public IPv4 address "
        "(settings.ipConfiguration.ipv4Enabled false: the API's default is a public IP)."
    ),
    source="CIS Google Cloud 6.6; Checkov CKV_GCP_60.",
    types={INSTANCE},
)
def no_public_ip(r: Resource) -> Iterator[str]:
    enabled = get(_ip_configuration(r), "ipv4Enabled")
    if enabled is not False and not is_unknown(enabled):
        yield (
            f"settings.ipConfiguration.ipv4Enabled is {shown(enabled)}: the instance gets a "
            "public IP; set it false and connect over privateNetwork or Private Service Connect"
        )


@RULES.resource(
    "sql-no-open-authorized-networks",
    level=MANDATORY,
    description="Cloud SQL authorized networks never include 0.0.0.0/0 or ::/0.",
    source="CIS Google Cloud 6.5; Checkov CKV_GCP_11.",
    types={INSTANCE},
)
def no_open_networks(r: Resource) -> Iterator[str]:
    networks = get(_ip_configuration(r), "authorizedNetworks")
    for index, network in enumerate(as_list(networks)):
        value = get(network, "value")
        if isinstance(value, str) and (value in _OPEN_NETWORKS or value.endswith("/0")):
            yield f"settings.ipConfiguration.authorizedNetworks[{index}] authorizes {value}"


@RULES.resource(
    "sql-require-ssl",
    level=MANDATORY,
    description=(
        "Cloud SQL accepts encrypted connections only (sslMode ENCRYPTED_ONLY or "
        "TRUSTED_CLIENT_CERTIFICATE_REQUIRED)."
    ),
    source="CIS Google Cloud 6.4; Checkov CKV_GCP_6.",
    types={INSTANCE},
)
def require_ssl(r: Resource) -> Iterator[str]:
    mode = get(_ip_configuration(r), "sslMode")
    if not is_unknown(mode) and mode not in _SSL_ENFORCED:
        yield (
            f"settings.ipConfiguration.sslMode is {shown(mode)}; allowed: {', '.join(_SSL_ENFORCED)}"
        )


@RULES.resource(
    "sql-backups",
    level=MANDATORY,
    description="Cloud SQL primaries take automated backups (read replicas cannot).",
    source="CIS Google Cloud 6.7; Checkov CKV_GCP_14.",
    types={INSTANCE},
)
def backups(r: Resource) -> Iterator[str]:
    if get(r.props, "masterInstanceName") is not None:
        raise NotApplicable("a read replica takes no backups of its own")
    enabled = get(r.props, "settings", "backupConfiguration", "enabled")
    if enabled is not True and not is_unknown(enabled):
        yield "settings.backupConfiguration.enabled must be true"


@RULES.resource(
    "sql-deletion-protection",
    level=MANDATORY,
    description="On production stacks, Cloud SQL deletion protection is not switched off.",
    source="Cloud SQL docs, 'Prevent deletion of an instance'.",
    types={INSTANCE},
    config=schema(STACKS_SCHEMA),
)
def deletion_protection(r: Resource) -> Iterator[str]:
    only_on_stacks(r.config)
    if get(r.props, "deletionProtection") is False:
        yield "deletionProtection is false: `pulumi destroy` or a replacement deletes the data"
    if get(r.props, "settings", "deletionProtectionEnabled") is False:
        yield "settings.deletionProtectionEnabled is false"


@RULES.resource(
    "sql-supported-version",
    level=MANDATORY,
    description="Cloud SQL runs a database version still in standard support.",
    source=(
        "Cloud SQL docs, 'Database version support policy' (extended support); Checkov CKV_GCP_79."
    ),
    types={INSTANCE},
    config=schema(
        {
            "endOfLifeVersions": string_list(
                END_OF_LIFE_VERSIONS, "fnmatch patterns of databaseVersion values"
            )
        }
    ),
)
def supported_version(r: Resource) -> Iterator[str]:
    version = get(r.props, "databaseVersion")
    patterns = [str(p) for p in r.config["endOfLifeVersions"]]
    if isinstance(version, str) and any(fnmatch.fnmatchcase(version, p) for p in patterns):
        yield f"databaseVersion {version} is past standard support: upgrade the major version"


# Engine flags that open an instance up, by engine (databaseVersion's prefix): flag -> the
# value it must not have.
UNSAFE_FLAGS: dict[str, dict[str, str]] = {
    # LOAD DATA LOCAL lets a client read files off the server.
    "MYSQL": {"local_infile": "on"},
    "SQLSERVER": {
        "external scripts enabled": "on",
        "cross db ownership chaining": "on",
        "contained database authentication": "on",
        "remote access": "on",
    },
}


@RULES.resource(
    "sql-no-unsafe-flags",
    level=MANDATORY,
    description=(
        "Cloud SQL database flags keep the engine's unsafe features off: MySQL local_infile; "
        "SQL Server external scripts, cross db ownership chaining, contained database "
        "authentication and remote access."
    ),
    source=(
        "CIS Google Cloud 6.1.3, 6.3.1, 6.3.2, 6.3.5, 6.3.7; Checkov CKV_GCP_50, CKV_GCP_58, "
        "CKV_GCP_59."
    ),
    types={INSTANCE},
)
def unsafe_flags(r: Resource) -> Iterator[str]:
    version = get(r.props, "databaseVersion")
    if not isinstance(version, str):
        return
    unsafe = UNSAFE_FLAGS.get(version.split("_", 1)[0], {})
    for index, flag in enumerate(as_list(get(r.props, "settings", "databaseFlags"))):
        name, value = get(flag, "name"), get(flag, "value")
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        if unsafe.get(name.lower()) == value.lower():
            yield f"settings.databaseFlags[{index}] sets {name} to {value!r}: turn it off"
