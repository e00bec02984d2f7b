"""Cloud Storage rules: uniform access, public access prevention, no public ACLs (CIS Google
Cloud section 5, Checkov). Public IAM grants on buckets are iam-no-public-members'."""

from __future__ import annotations

from collections.abc import Iterator

from rules.iam_grants import PUBLIC_MEMBERS
from rules.kit import MANDATORY, Resource, Rules
from rules.values import as_list, get, is_unknown, shown

RULES = Rules("storage")
BUCKET = "gcp:storage/bucket:Bucket"
# ACL resources: those naming one entity, those listing "ROLE:entity" pairs.
ENTITY_ACLS = {
    "gcp:storage/bucketAccessControl:BucketAccessControl",
    "gcp:storage/defaultObjectAccessControl:DefaultObjectAccessControl",
    "gcp:storage/objectAccessControl:ObjectAccessControl",
}
ROLE_ENTITY_ACLS = {
    "gcp:storage/bucketACL:BucketACL",
    "gcp:storage/defaultObjectACL:DefaultObjectACL",
    "gcp:storage/objectACL:ObjectACL",
}
PUBLIC_PREDEFINED_ACLS = ("publicRead", "publicReadWrite", "authenticatedRead")


@RULES.resource(
    "storage-uniform-access",
    level=MANDATORY,
    description="Buckets use uniform bucket-level access (IAM only, no object ACLs).",
    source="CIS Google Cloud 5.2; Checkov CKV_GCP_29.",
    types={BUCKET},
)
def uniform_access(r: Resource) -> Iterator[str]:
    enabled = get(r.props, "uniformBucketLevelAccess")
    if enabled is not True and not is_unknown(enabled):
        yield "uniformBucketLevelAccess must be true: object ACLs can make single objects public"


@RULES.resource(
    "storage-public-access-prevention",
    level=MANDATORY,
    description="Buckets enforce public access prevention.",
    source="Checkov CKV_GCP_114; Cloud Storage docs, 'Public access prevention'.",
    types={BUCKET},
)
def public_access_prevention(r: Resource) -> Iterator[str]:
    value = get(r.props, "publicAccessPrevention")
    if not is_unknown(value) and value != "enforced":
        yield f"publicAccessPrevention must be 'enforced' (got {shown(value)})"


@RULES.resource(
    "storage-no-public-acl",
    level=MANDATORY,
    description="Bucket and object ACLs grant nothing to allUsers or allAuthenticatedUsers.",
    source="CIS Google Cloud 5.1; Checkov CKV_GCP_28.",
    types=ENTITY_ACLS | ROLE_ENTITY_ACLS,
)
def no_public_acl(r: Resource) -> Iterator[str]:
    if r.type in ENTITY_ACLS:
        entity = get(r.props, "entity")
        if entity in PUBLIC_MEMBERS:
            yield f"entity {entity} gets {shown(get(r.props, 'role'))}"
    for index, pair in enumerate(as_list(get(r.props, "roleEntities"))):
        if isinstance(pair, str) and pair.rpartition(":")[2] in PUBLIC_MEMBERS:
            yield f"roleEntities[{index}] {pair!r} is public"
    predefined = get(r.props, "predefinedAcl")
    if predefined in PUBLIC_PREDEFINED_ACLS:
        yield f"predefinedAcl {predefined!r} is public"
