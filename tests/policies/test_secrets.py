"""Plaintext secrets in environment variables of any resource type, through the real pack: by
the variable's name and by the value's shape, in every env field shape providers use."""

from __future__ import annotations

import pytest

from tests.policies.cases import COST_LABELS, UNKNOWN, Case, assert_case, bad, mutate, ok
from tests.policies.test_serverless import RUN, RUN_GOLDEN
from tools.analyzer import PolicyPackProcess

FUNCTION = "gcp:cloudfunctions/function:Function"
FUNCTION_V2 = "gcp:cloudfunctionsv2/function:Function"
BUILD_TRIGGER = "gcp:cloudbuild/trigger:Trigger"
BATCH_JOB = "gcp:cloudrunv2/job:Job"
RELEASE = "kubernetes:helm.sh/v3:Release"

LEVELS = {"secrets-no-plaintext-env": "mandatory"}
ENV = ("template", "containers", 0, "envs")
FUNCTION_GOLDEN = {
    "name": "hook",
    "region": "us-central1",
    "runtime": "python312",
    "labels": COST_LABELS,
    "environmentVariables": {"LOG_LEVEL": "info", "TOKEN_AUDIENCE": "https://example.com"},
    "secretEnvironmentVariables": [{"key": "API_TOKEN", "secret": "api-token", "version": "2"}],
}
# Credentials shaped like the real thing; none of them is live.
AWS_KEY = "AKIA" + "Q3EGRFLDTGWBKXPA"
GOOGLE_KEY = "AIza" + "SyD-4bQ9nV3c8Rk2xZ7LmP0wTq6YhJuE1sA"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzaWduYWwifQ.c2lnbmF0dXJlLW5vdC1yZWFs"
SLACK_WEBHOOK = "https://hooks.slack.com/services/" + "T0000AAAA/B0000BBBB/cccccccccccccccccccccccc"
DISCORD_WEBHOOK = "https://discord.com/api/webhooks/" + "123456789012345678/" + "d" * 68
SENDGRID_KEY = "SG." + "e" * 22 + "." + "f" * 43


def run_env(label: str, envs: list, expect: int = 1, **kw: object) -> Case:
    return bad(
        "secrets-no-plaintext-env", RUN, mutate(RUN_GOLDEN, {ENV: envs}), label, expect, **kw
    )


def function_env(label: str, variables: dict, expect: int = 1, **kw: object) -> Case:
    inputs = mutate(FUNCTION_GOLDEN, {"environmentVariables": variables})
    return bad("secrets-no-plaintext-env", FUNCTION, inputs, label, expect, **kw)


CASES = [
    ok("secrets-no-plaintext-env", RUN, RUN_GOLDEN, "cloud-run-secret-reference"),
    ok("secrets-no-plaintext-env", FUNCTION, FUNCTION_GOLDEN, "function"),
    ok(
        "secrets-no-plaintext-env",
        FUNCTION,
        mutate(
            FUNCTION_GOLDEN,
            {
                "environmentVariables": {
                    "DB_PASSWORD_FILE": "/var/secrets/db/password",
                    "API_KEY_SECRET": "projects/p/secrets/api-key/versions/latest",
                    "TOKEN_TTL": "3600",
                    "SESSION_SECRET": UNKNOWN,
                    "GOOGLE_APPLICATION_CREDENTIALS": "/var/run/secrets/google/key.json",
                    "ACCESS_TOKEN_ENABLED": "true",
                }
            },
        ),
        "references-paths-and-flags",
    ),
    run_env(
        "cloud-run-database-url",
        [{"name": "DATABASE_URL", "value": "postgresql://app:s3cret@10.20.0.3:5432/orders"}],
        message="template.containers[0].envs[0] (DATABASE_URL) carries a literal secret",
    ),
    run_env(
        "cloud-run-database-url-by-name",
        [{"name": "DATABASE_URL", "value": "postgresql://10.20.0.3:5432/orders?sslmode=require"}],
        message="its name says it holds a credential",
    ),
    run_env("cloud-run-api-key", [{"name": "VENDOR_API_KEY", "value": "k-7f3a9c"}]),
    run_env(
        "value-shape-under-an-innocent-name",
        [{"name": "CONFIG_BLOB", "value": f"region=us;key={AWS_KEY}"}],
        message="an AWS access key",
    ),
    function_env("function-token", {"SLACK_TOKEN": "plain-text-token"}),
    # Credentials by shape under names that say nothing (Checkov's secret scanners' kinds).
    *(
        function_env(f"function-{label}", {"NOTIFY": value}, message=f"its value is {shape}")
        for label, value, shape in (
            ("slack-webhook", SLACK_WEBHOOK, "a Slack webhook URL"),
            ("discord-webhook", DISCORD_WEBHOOK, "a Discord webhook URL"),
            ("npm-token", "npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "an npm token"),
            ("gitlab-token", "glpat-" + "x1Y2z3A4b5C6d7E8f9G0", "a GitLab token"),
            ("sendgrid-key", SENDGRID_KEY, "a SendGrid key"),
        )
    ),
    ok(
        "secrets-no-plaintext-env",
        FUNCTION,
        mutate(FUNCTION_GOLDEN, {"environmentVariables.DOCS": "https://hooks.slack.com/"}),
        "function-slack-host-alone",
    ),
    function_env(
        "function-two-secrets",
        {"PASSWORD": "hunter2", "MAPS": GOOGLE_KEY, "LOG_LEVEL": "debug"},
        expect=2,
    ),
    bad(
        "secrets-no-plaintext-env",
        FUNCTION_V2,
        {
            "name": "hook",
            "location": "us-central1",
            "labels": COST_LABELS,
            "buildConfig": {"environmentVariables": {"GOOGLE_NODE_RUN_SCRIPTS": ""}},
            "serviceConfig": {"environmentVariables": {"SESSION": JWT}},
        },
        "function-v2-jwt",
        message="serviceConfig.environmentVariables.SESSION",
    ),
    bad(
        "secrets-no-plaintext-env",
        BUILD_TRIGGER,
        {
            "name": "deploy",
            "location": "us-central1",
            "build": {"steps": [{"name": "gcr.io/cloud-builders/gcloud", "envs": ["PASSWORD=x1"]}]},
        },
        "cloud-build-name-equals-value",
        message="build.steps[0].envs[0] (PASSWORD)",
        strict=False,
    ),
    bad(
        "secrets-no-plaintext-env",
        RELEASE,
        {
            "chart": "gateway",
            "namespace": "istio-ingress",
            "values": {"env": {"UPSTREAM_TOKEN": "t-123"}},
        },
        "helm-values-env",
        message="values.env.UPSTREAM_TOKEN",
        strict=False,
    ),
    bad(
        "secrets-no-plaintext-env",
        "gcp:batch/job:Job",
        {
            "taskGroups": [
                {
                    "taskSpec": {
                        "environment": {
                            "variables": {
                                "KEY": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"
                            }
                        }
                    }
                }
            ]
        },
        "batch-private-key",
        message="a private key",
        strict=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_secrets_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
