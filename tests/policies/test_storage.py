"""Cloud Storage rules through the real pack: a golden bucket, ACL resources, one mutation each."""

from __future__ import annotations

import pytest

from tests.policies.cases import COST_LABELS, DELETE, UNKNOWN, Case, assert_case, bad, mutate, ok
from tools.analyzer import PolicyPackProcess

BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_ACCESS = "gcp:storage/bucketAccessControl:BucketAccessControl"
BUCKET_ACL = "gcp:storage/bucketACL:BucketACL"
OBJECT_ACL = "gcp:storage/objectACL:ObjectACL"
DEFAULT_OBJECT_ACCESS = "gcp:storage/defaultObjectAccessControl:DefaultObjectAccessControl"

LEVELS = {
    "storage-uniform-access": "mandatory",
    "storage-public-access-prevention": "mandatory",
    "storage-no-public-acl": "mandatory",
}

BUCKET_GOLDEN = {
    "name": "signal-test-models",
    "location": "US",
    "uniformBucketLevelAccess": True,
    "publicAccessPrevention": "enforced",
    "encryption": {"defaultKmsKeyName": "projects/p/locations/us/keyRings/r/cryptoKeys/gcs"},
    "labels": COST_LABELS,
}


def b(policy: str, label: str, changes: dict, expect: int = 1, **kw: object) -> Case:
    return bad(policy, BUCKET, mutate(BUCKET_GOLDEN, changes), label, expect, **kw)


CASES = [
    ok("storage-uniform-access", BUCKET, BUCKET_GOLDEN),
    b("storage-uniform-access", "unset", {"uniformBucketLevelAccess": DELETE}),
    b("storage-uniform-access", "fine-grained", {"uniformBucketLevelAccess": False}),
    ok("storage-public-access-prevention", BUCKET, BUCKET_GOLDEN),
    b(
        "storage-public-access-prevention",
        "inherited",
        {"publicAccessPrevention": "inherited"},
        message="got 'inherited'",
    ),
    b("storage-public-access-prevention", "unset", {"publicAccessPrevention": DELETE}),
    ok(
        "storage-no-public-acl",
        BUCKET_ACCESS,
        {"bucket": "b", "entity": "group-ops@example.com", "role": "READER"},
        "group-reader",
    ),
    ok(
        "storage-no-public-acl",
        BUCKET_ACL,
        {"bucket": "b", "roleEntities": ["OWNER:project-owners-123", UNKNOWN]},
        "project-roles",
    ),
    bad(
        "storage-no-public-acl",
        BUCKET_ACCESS,
        {"bucket": "b", "entity": "allUsers", "role": "READER"},
        "all-users-entity",
        message="entity allUsers gets 'READER'",
    ),
    bad(
        "storage-no-public-acl",
        DEFAULT_OBJECT_ACCESS,
        {"bucket": "b", "entity": "allAuthenticatedUsers", "role": "READER"},
        "default-object-acl",
    ),
    bad(
        "storage-no-public-acl",
        BUCKET_ACL,
        {"bucket": "b", "roleEntities": ["OWNER:project-owners-123", "READER:allUsers"]},
        "role-entities",
        message="roleEntities[1]",
    ),
    bad(
        "storage-no-public-acl",
        OBJECT_ACL,
        {"bucket": "b", "object": "o", "predefinedAcl": "publicRead"},
        "predefined-public-read",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_storage_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
