"""Cloud Run and Cloud Functions through the real pack: a service the internet reaches must not
also be invocable by anyone; each way of being public, alone, is fine."""

from __future__ import annotations

import pytest

from tests.policies.cases import (
    COST_LABELS,
    UNKNOWN,
    Case,
    StackCase,
    assert_case,
    assert_stack_case,
    bad,
    mutate,
    ok,
    resource,
    urn,
)
from tools.analyzer import AnalyzerResource, PolicyPackProcess

RUN = "gcp:cloudrunv2/service:Service"
RUN_IAM = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
RUN_IAM_BINDING = "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding"
RUN_V1 = "gcp:cloudrun/service:Service"
RUN_V1_IAM = "gcp:cloudrun/iamMember:IamMember"
FUNCTION = "gcp:cloudfunctions/function:Function"
FUNCTION_IAM = "gcp:cloudfunctions/functionIamMember:FunctionIamMember"
FUNCTION_V2 = "gcp:cloudfunctionsv2/function:Function"
FUNCTION_V2_IAM = "gcp:cloudfunctionsv2/functionIamMember:FunctionIamMember"

LEVELS = {"serverless-no-public-invoker": "mandatory"}

RUN_GOLDEN = {
    "name": "quotes",
    "location": "us-central1",
    "ingress": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
    "labels": COST_LABELS,
    "template": {
        "containers": [
            {
                "image": "us-central1-docker.pkg.dev/p/signal/quotes@sha256:" + "a" * 64,
                "envs": [
                    {"name": "LOG_LEVEL", "value": "info"},
                    {
                        "name": "DB_PASSWORD",
                        "valueSource": {"secretKeyRef": {"secret": "db-password", "version": "3"}},
                    },
                ],
            }
        ]
    },
}
PUBLIC_RUN = mutate(RUN_GOLDEN, {"ingress": "INGRESS_TRAFFIC_ALL"})


def grant(type_: str, name_field: str, target: object, member: str, name: str = "invoker", **kw):
    role = "roles/cloudfunctions.invoker" if "cloudfunctions" in type_ else "roles/run.invoker"
    inputs = {name_field: target, "location": "us-central1", "role": role, "member": member}
    return resource(type_, inputs, name, **kw)


def service(type_: str, inputs: dict, name: str = "quotes") -> AnalyzerResource:
    return resource(type_, inputs, name)


def finding_on(type_: str, name: str = "quotes") -> tuple[str, ...]:
    return (urn(type_, name),)


STACK_CASES = [
    StackCase(
        "serverless-no-public-invoker",
        (service(RUN, RUN_GOLDEN), grant(RUN_IAM, "name", "quotes", "allUsers")),
        0,
        "public-invoker-behind-internal-ingress",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (service(RUN, PUBLIC_RUN), grant(RUN_IAM, "name", "quotes", "group:ops@example.com")),
        0,
        "internet-ingress-behind-iam",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (service(RUN, PUBLIC_RUN), grant(RUN_IAM, "name", "other-service", "allUsers")),
        0,
        "grant-on-another-service",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(RUN, mutate(RUN_GOLDEN, {"ingress": UNKNOWN})),
            grant(RUN_IAM, "name", "quotes", "allUsers"),
        ),
        0,
        "unknown-ingress",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(RUN, mutate(PUBLIC_RUN, {"ingress": None})),
            grant(RUN_IAM, "name", "projects/p/locations/us-central1/services/quotes", "allUsers"),
        ),
        1,
        "default-ingress-full-name-grant",
        urns=finding_on(RUN),
        message="grants roles/run.invoker to allUsers",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(RUN, PUBLIC_RUN),
            resource(
                RUN_IAM_BINDING,
                {
                    "name": "quotes",
                    "role": "roles/run.invoker",
                    "members": ["allAuthenticatedUsers"],
                },
                "binding",
            ),
        ),
        1,
        "all-authenticated-binding",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(RUN, PUBLIC_RUN),
            AnalyzerResource(
                RUN_IAM,
                "invoker",
                urn(RUN_IAM, "invoker"),
                {"name": UNKNOWN, "role": "roles/run.invoker", "member": "allUsers"},
                property_dependencies={"name": (urn(RUN, "quotes"),)},
            ),
        ),
        1,
        "grant-names-the-service-by-output",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (service(RUN, mutate(PUBLIC_RUN, {"invokerIamDisabled": True})),),
        1,
        "invoker-iam-disabled",
        message="invokerIamDisabled",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(RUN_V1, {"name": "quotes", "location": "us-central1", "metadata": {}}),
            grant(RUN_V1_IAM, "service", "quotes", "allUsers"),
        ),
        1,
        "cloud-run-v1-default-ingress",
        urns=finding_on(RUN_V1),
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(
                RUN_V1,
                {
                    "name": "quotes",
                    "location": "us-central1",
                    "metadata": {"annotations": {"run.googleapis.com/ingress": "internal"}},
                },
            ),
            grant(RUN_V1_IAM, "service", "quotes", "allUsers"),
        ),
        0,
        "cloud-run-v1-internal",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(FUNCTION, {"name": "hook", "runtime": "python312"}, "hook"),
            grant(FUNCTION_IAM, "cloudFunction", "hook", "allUsers"),
        ),
        1,
        "cloud-function-allow-all",
        urns=finding_on(FUNCTION, "hook"),
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(
                FUNCTION_V2,
                {"name": "hook", "serviceConfig": {"ingressSettings": "ALLOW_INTERNAL_ONLY"}},
                "hook",
            ),
            grant(FUNCTION_V2_IAM, "cloudFunction", "hook", "allUsers"),
        ),
        0,
        "cloud-function-v2-internal",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(FUNCTION_V2, {"name": "hook", "serviceConfig": {}}, "hook"),
            grant(FUNCTION_V2_IAM, "cloudFunction", "hook", "allAuthenticatedUsers"),
        ),
        1,
        "cloud-function-v2-allow-all",
    ),
    # A 2nd-gen function is a Cloud Run service of its name: Google's and Pulumi's examples make
    # it public with roles/run.invoker on that service, through Cloud Run's IAM resources.
    StackCase(
        "serverless-no-public-invoker",
        (
            service(FUNCTION_V2, {"name": "hook", "serviceConfig": {}}, "hook"),
            grant(RUN_V1_IAM, "service", "hook", "allUsers"),
        ),
        1,
        "cloud-function-v2-run-invoker-v1-grant",
        urns=finding_on(FUNCTION_V2, "hook"),
        message="grants roles/run.invoker to allUsers",
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(FUNCTION_V2, {"name": "hook", "serviceConfig": {}}, "hook"),
            AnalyzerResource(
                RUN_IAM,
                "invoker",
                urn(RUN_IAM, "invoker"),
                {"name": UNKNOWN, "role": "roles/run.invoker", "member": "allAuthenticatedUsers"},
                property_dependencies={"name": (urn(FUNCTION_V2, "hook"),)},
            ),
        ),
        1,
        "cloud-function-v2-run-invoker-by-output",
        urns=finding_on(FUNCTION_V2, "hook"),
    ),
    StackCase(
        "serverless-no-public-invoker",
        (
            service(
                FUNCTION_V2,
                {"name": "hook", "serviceConfig": {"ingressSettings": "ALLOW_INTERNAL_ONLY"}},
                "hook",
            ),
            grant(RUN_V1_IAM, "service", "hook", "allUsers"),
        ),
        0,
        "cloud-function-v2-internal-run-invoker",
    ),
]

IAM_LEVELS = {"iam-no-public-members": "mandatory"}
CASES = [
    ok(
        "iam-no-public-members",
        RUN_IAM,
        {"name": "quotes", "role": "roles/run.invoker", "member": "allUsers"},
        "invoker-is-judged-with-the-service-ingress",
    ),
    bad(
        "iam-no-public-members",
        RUN_IAM,
        {"name": "quotes", "role": "roles/run.developer", "member": "allUsers"},
        "other-roles-stay-public-grants",
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_serverless_stack_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invoker_grants_leave_the_iam_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, IAM_LEVELS)
