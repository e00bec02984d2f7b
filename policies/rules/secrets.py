"""Plaintext secrets in environment variables, of any resource type: what looks like a secret by
its variable's name or by the value's shape, and the rule that judges every env field outside
Kubernetes workloads (k8s-no-plaintext-secrets judges those with the same detector)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from rules.kit import MANDATORY, Resource, Rules
from rules.kube_objects import is_workload
from rules.values import as_dict, as_list, get, is_unknown

RULES = Rules("secrets")
# Variable names that say "the value is a credential".
_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?"
    r"|DATABASE_URL|DB_URL|DSN|CONNECTION_?STRING)",
    re.I,
)
# ... unless the name says the value only points at one (a file, a Secret Manager name, an id).
_REFERENCE_NAME = re.compile(
    r"_(FILE|PATH|DIR|NAME|ID|REF|VERSION|KEY_ID|ENABLED|TTL|HEADER|AUDIENCE)$", re.I
)
# Values that point at a secret instead of holding one.
_REFERENCE_VALUE = re.compile(
    r"^(/|projects/[^/]+/secrets/|sm://|secret://|gcp-secret://|vault:|\$\{|\$\(|\{\{)"
)
_NOT_SECRET_VALUE = re.compile(r"^(true|false|yes|no|on|off|none|null|\d+)$", re.I)
# Value shapes that are credentials whatever the variable is called (Checkov's secret ids).
SECRET_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a URL with a password", re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("a Google OAuth client secret", re.compile(r"\bGOCSPX-[0-9A-Za-z_\-]{20,}")),
    ("an AWS access key", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a Stripe key", re.compile(r"\b[sr]k_live_[0-9A-Za-z]{20,}")),
    ("a JSON web token", re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}")),
    # Webhook URLs carry their credential in the path: whoever has one can post.
    (
        "a Slack webhook URL",
        re.compile(r"https://hooks\.slack\.com/(services|workflows|triggers)/[A-Za-z0-9/_-]{20,}"),
    ),
    (
        "a Discord webhook URL",
        re.compile(r"https://(\w+\.)?discord(app)?\.com/api/webhooks/\d+/[\w-]{20,}"),
    ),
    ("an npm token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("a SendGrid key", re.compile(r"\bSG\.[\w-]{22}\.[\w-]{43}\b")),
)
# Fields that hold environment variables, in any provider's schema (lower-cased).
_ENV_FIELDS = {
    "env",
    "envs",
    "envvars",
    "envvariables",
    "environment",
    "environmentvariables",
    "buildenvironmentvariables",
}


def secret_reason(name: Any, value: Any) -> str | None:
    """Why `name=value` looks like a plaintext secret, or None. Unknown values never do."""
    if not isinstance(value, str) or not value or is_unknown(value):
        return None
    for label, shape in SECRET_SHAPES:
        if shape.search(value):
            return f"its value is {label}"
    if (
        isinstance(name, str)
        and _SECRET_NAME.search(name)
        and not _REFERENCE_NAME.search(name)
        and not _REFERENCE_VALUE.match(value)
        and not _NOT_SECRET_VALUE.match(value.strip())
    ):
        return "its name says it holds a credential"
    return None


def env_pairs(value: Any) -> Iterator[tuple[str, Any, Any]]:
    """(where, name, value) for each variable of an env field, in the shapes providers use: a map
    (Cloud Functions), a list of {name, value} (Kubernetes, Cloud Run), a list of "NAME=value"
    (Cloud Build), or an object with `variables` (Batch)."""
    if isinstance(value, dict):
        if isinstance(value.get("variables"), dict):
            yield from env_pairs(value["variables"])
            return
        for name, item in value.items():
            yield f".{name}", name, item
    for index, item in enumerate(as_list(value)):
        if isinstance(item, dict):
            yield f"[{index}]", get(item, "name"), get(item, "value")
        elif isinstance(item, str) and "=" in item:
            name, _, text = item.partition("=")
            yield f"[{index}]", name, text


def env_fields(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every environment-variable field anywhere in `value`."""
    for key, item in as_dict(value).items():
        where = f"{path}.{key}" if path else key
        if key.lower() in _ENV_FIELDS and isinstance(item, dict | list):
            yield where, item
        else:
            yield from env_fields(item, where)
    for index, item in enumerate(as_list(value)):
        yield from env_fields(item, f"{path}[{index}]")


def plaintext_secrets(props: Any) -> Iterator[str]:
    for where, field in env_fields(props):
        for suffix, name, value in env_pairs(field):
            reason = secret_reason(name, value)
            if reason:
                yield f"{where}{suffix} ({name}) carries a literal secret: {reason}"


@RULES.resource(
    "secrets-no-plaintext-env",
    level=MANDATORY,
    description=(
        "No resource carries a secret in a plain environment variable (Cloud Run, Cloud "
        "Functions, Cloud Build, Batch, Helm values ...): reference Secret Manager instead. "
        "Judged by the variable's name and by the value's shape."
    ),
    source=(
        "Checkov CKV_SECRET_2, CKV_SECRET_4, CKV_SECRET_9, CKV_SECRET_13, CKV_SECRET_14, "
        "CKV_SECRET_17; Cloud Run docs, 'Configure secrets'."
    ),
    types=lambda token: not is_workload(token),
)
def no_plaintext_env(r: Resource) -> Iterator[str]:
    yield from plaintext_secrets(r.props)
