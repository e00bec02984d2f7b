"""A built model folder read through its ``manifest.json``: which model is which, and whether
it fits the service that wants to serve it.

``ModelIdentity`` is what every signal carries: the model's name and version, the variant
(fp32, int8, int4), the SHA-256 of the ONNX file that computed it, and the direction
threshold its signals are decided with. ``ModelArtifacts.check_serving`` refuses a
service whose feature parameters or model-input transform differ from those the model
was trained with (``ModelMismatchError``, one line naming both values).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.model.tensors import INPUT_TRANSFORM, MODEL_INPUTS

Variant = Literal["fp32", "int8", "int4"]
VARIANTS: tuple[Variant, ...] = ("fp32", "int8", "int4")
MANIFEST = "manifest.json"
UNKNOWN_VARIANT = "unknown"
# KServe-v2 response parameters a server names the model file that answered with
# (this project's MLServer runtime sets them; Triton does not, the manifest says instead).
SHA256_PARAMETER = "model_sha256"
VARIANT_PARAMETER = "model_variant"


class ModelMismatchError(ValueError):
    """The model cannot serve this service (other feature parameters, another build's file)."""


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str
    variant: str  # fp32, int8, int4, or "unknown" when no manifest describes the file
    sha256: str  # of the ONNX file's bytes ("" when the server does not say)
    direction_threshold: float | None = None  # None: argmax (no threshold recorded)

    @property
    def model_version(self) -> str:
        """``name/version``."""
        return f"{self.name}/{self.version}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest's JSON, with the keys every reader relies on checked once here, so a
    damaged file is one ``ModelMismatchError`` naming it rather than a KeyError later."""
    rebuild = "rebuild it with `python -m app.model build`"
    try:
        manifest = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelMismatchError(f"{path}: not a JSON manifest ({exc}); {rebuild}") from None
    variants = manifest.get("variants") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("name"), str)
        or isinstance(manifest.get("version"), bool)
        or not isinstance(manifest.get("version"), int)
        or not isinstance(variants, dict)
        or not variants
    ):
        raise ModelMismatchError(
            f"{path}: a manifest needs a string name, an integer version and a non-empty "
            f"variants object; {rebuild}"
        )
    for variant, entry in variants.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("sha256"), str)
        ):
            raise ModelMismatchError(
                f"{path}: variants.{variant} needs a string path and sha256; {rebuild}"
            )
    return manifest


@dataclass(frozen=True)
class ModelArtifacts:
    """A built model folder, read through its manifest."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, root: Path) -> ModelArtifacts:
        path = root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no built model here; run `python -m app.model build --out {root}`"
            )
        return cls(root=root, manifest=_read_manifest(path))

    @classmethod
    def beside(cls, model_file: Path) -> ModelArtifacts | None:
        """The build a model file belongs to: ``<root>/<variant>/model.onnx`` or Triton's
        ``<root>/triton/<name>/<version>/model.onnx``; None when no manifest is there."""
        for root in (model_file.parent.parent, model_file.parent.parent.parent.parent):
            if (root / MANIFEST).is_file():
                return cls.load(root)
        return None

    def path(self, variant: Variant) -> Path:
        if variant not in VARIANTS:
            raise ValueError(f"variant = {variant!r}: must be one of {', '.join(VARIANTS)}")
        entry = self.manifest["variants"].get(variant)
        if entry is None:
            raise ModelMismatchError(
                f"{self.manifest_path}: no {variant} variant in this build (built: "
                f"{', '.join(self.manifest['variants'])}); configure one of those or rebuild"
            )
        return self.root / entry["path"]

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def model_version(self) -> str:
        """``name/version``: what signals carry, whichever server computed them."""
        return f"{self.name}/{self.version}"

    @property
    def triton_repository(self) -> Path:
        return self.root / "triton"

    @property
    def direction_threshold(self) -> float | None:
        decision = self.manifest.get("decision") or {}
        value = decision.get("direction_threshold")
        return None if value is None else float(value)

    @property
    def triton_max_batch_size(self) -> int | None:
        """The ``max_batch_size`` of the Triton repository this build wrote."""
        value = (self.manifest.get("triton") or {}).get("config", {}).get("max_batch_size")
        return None if value is None else int(value)

    def identity(self, variant: str) -> ModelIdentity:
        entry = self.manifest["variants"][variant]
        return ModelIdentity(self.name, str(self.version), variant, entry["sha256"],
                             self.direction_threshold)  # fmt: skip

    def identity_of_sha(self, sha256: str) -> ModelIdentity | None:
        """The variant of this build whose file has ``sha256`` (None: not this build's)."""
        for variant, entry in self.manifest["variants"].items():
            if entry.get("sha256") == sha256:
                return self.identity(variant)
        return None

    def identity_of_bytes(self, data: bytes, source: Path | str) -> ModelIdentity:
        """The identity of a model file's bytes, or ``ModelMismatchError`` when they are no
        variant of this build (the file was replaced after the manifest was written)."""
        sha = sha256_of(data)
        found = self.identity_of_sha(sha)
        if found is None:
            raise ModelMismatchError(
                f"{source}: sha256 {sha[:12]}... is no variant of the build in "
                f"{self.manifest_path} (variants: "
                + ", ".join(f"{v} {e['sha256'][:12]}..." for v, e in self.variants.items())
                + "); rebuild the model or restore the file"
            )
        return found

    def triton_identity(self, name: str, version: str) -> ModelIdentity | None:
        """What this build put in its Triton repository, if that is ``name``/``version``."""
        triton = self.manifest.get("triton") or {}
        if name != self.name or version not in (str(self.version), ""):
            return None
        variant = triton.get("variant")
        return None if variant is None else self.identity(variant)

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        return dict(self.manifest["variants"])

    def check_serving(self, features: Any) -> None:
        """Refuse (``ModelMismatchError``) to serve with feature parameters or a model-input
        transform other than this model was trained with. ``features`` is the service's
        ``FeatureParams`` (or a configuration extending it)."""
        trained = self.manifest.get("features")
        if not isinstance(trained, dict):
            raise ModelMismatchError(
                f"{self.manifest_path}: records no feature parameters (built before they were "
                "recorded); rebuild it with `python -m app.model build`"
            )
        for key, value in trained.items():
            served = getattr(features, key, None)
            if served != value:
                raise ModelMismatchError(
                    f"{self.manifest_path}: the model was trained with features.{key} = {value!r} "
                    f"but the service is configured with features.{key} = {served!r}; configure "
                    f"features.{key} = {value!r} or rebuild the model with the new value"
                )
        scaling = self.manifest.get("input_scaling") or {}
        for key, ours in (("transform", INPUT_TRANSFORM), ("inputs", list(MODEL_INPUTS))):
            if scaling.get(key) != ours:
                raise ModelMismatchError(
                    f"{self.manifest_path}: the model's input_scaling.{key} is "
                    f"{scaling.get(key)!r} but this service computes {ours!r}; rebuild the model"
                )
