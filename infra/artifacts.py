"""Artefact stores: the Artifact Registry for images and the GCS bucket of Triton's model repository."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_gcp as gcp

from infra.identity import KeyRing

REGISTRY_API = "artifactregistry.googleapis.com"
STORAGE_API = "storage.googleapis.com"
KEEP_RELEASES = 20  # image versions kept per package; older untagged ones are cleaned up


class ArtifactStore(pulumi.ComponentResource):
    """Where the platform's images and models live, encrypted with the primary region's
    `artifacts` key. Artifact Analysis scans every image pushed to the registry (the
    `containerscanning` API is on and the repository inherits it): the platform's image
    scanning, now that GKE's own workload scanning is deprecated."""

    def __init__(
        self,
        name: str,
        project_id: str,
        location: str,
        keys: KeyRing,
        model_readers: Mapping[str, pulumi.Input[str]],
        image_readers: Mapping[str, pulumi.Input[str]],
        labels: Mapping[str, str],
        model_files: Mapping[str, str],
        force_destroy: bool,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:ArtifactStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        kms_key = keys.keys["artifacts"]

        self.registry = gcp.artifactregistry.Repository(
            f"{name}-images",
            repository_id="signal",
            location=location,
            format="DOCKER",
            description="signal-platform images, pinned by digest in prod",
            kms_key_name=kms_key.id,
            docker_config={"immutable_tags": True},
            vulnerability_scanning_config={"enablement_config": "INHERITED"},
            cleanup_policies=[
                {
                    "id": "keep-recent",
                    "action": "KEEP",
                    "most_recent_versions": {"keep_count": KEEP_RELEASES},
                },
                {
                    "id": "delete-untagged",
                    "action": "DELETE",
                    "condition": {"tag_state": "UNTAGGED", "older_than": "2592000s"},
                },
            ],
            labels=dict(labels),
            # Artifact Registry's agent encrypts with the key: its grant comes first.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=keys.grants_for("artifacts", REGISTRY_API)
            ),
        )
        for reader, member in image_readers.items():
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-images-reader-{reader}",
                repository=self.registry.name,
                location=location,
                role="roles/artifactregistry.reader",
                member=member,
                opts=child,
            )

        self.models = gcp.storage.Bucket(
            f"{name}-models",
            name=f"{project_id}-triton-models",
            location=location.upper(),
            storage_class="STANDARD",
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning={"enabled": True},
            encryption={"default_kms_key_name": kms_key.id},
            lifecycle_rules=[
                {
                    "action": {"type": "Delete"},
                    "condition": {"num_newer_versions": 5, "with_state": "ARCHIVED"},
                },
            ],
            force_destroy=force_destroy,
            labels=dict(labels),
            # Cloud Storage's agent encrypts with the key: its grant comes first.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=keys.grants_for("artifacts", STORAGE_API)
            ),
        )
        for reader, member in model_readers.items():
            gcp.storage.BucketIAMMember(
                f"{name}-models-reader-{reader}",
                bucket=self.models.name,
                role="roles/storage.objectViewer",
                member=member,
                opts=child,
            )
        # Files the stack owns in the model repository (Triton's config.pbtxt, rendered from
        # the stack's config); the model build uploads the weights beside them.
        self.model_files = {
            path: gcp.storage.BucketObject(
                f"{name}-models-{path.replace('/', '-').replace('.', '-')}",
                bucket=self.models.name,
                name=path,
                content=content,
                content_type="text/plain",
                opts=child,
            )
            for path, content in model_files.items()
        }
        self.register_outputs({"registry": self.registry.registry_uri, "models": self.models.url})
