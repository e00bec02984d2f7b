"""Triton model repository: typed model configuration rendered to ``config.pbtxt``.

``render_config_pbtxt`` is the one place the text format is produced; infra renders
the same configuration for the cluster's Triton from the same typed arguments.
The layout is Triton's: ``<repository>/<name>/config.pbtxt`` and
``<repository>/<name>/<version>/model.onnx``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.model.tensors import INPUT_NAME, N_CLASSES, N_INPUTS, OUTPUT_NAME


class InstanceGroup(BaseModel):
    """How many copies of the model Triton runs, and where."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"
    count: int = Field(default=1, ge=1, le=64)
    gpus: tuple[int, ...] = ()  # device ids; only for KIND_GPU, empty = all

    @model_validator(mode="after")
    def _gpus_only_on_gpu(self) -> InstanceGroup:
        if self.gpus and self.kind != "KIND_GPU":
            raise ValueError(f"gpus = {list(self.gpus)}: only allowed with kind KIND_GPU")
        if any(g < 0 for g in self.gpus):
            raise ValueError(f"gpus = {list(self.gpus)}: device ids must be >= 0")
        return self


class TritonModelConfig(BaseModel):
    """The signal model's Triton configuration: dynamic batching and instance groups."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(default="signal_mlp", pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)
    max_batch_size: int = Field(default=256, ge=1, le=65536)
    max_queue_delay_us: int = Field(default=500, ge=0, le=10_000_000)
    preferred_batch_sizes: tuple[int, ...] = ()
    instance_groups: tuple[InstanceGroup, ...] = (InstanceGroup(),)

    @model_validator(mode="after")
    def _preferred_within_max(self) -> TritonModelConfig:
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred_batch_sizes = {list(self.preferred_batch_sizes)}: each must be in "
                f"[1, max_batch_size = {self.max_batch_size}]"
            )
        if not self.instance_groups:
            raise ValueError("instance_groups = []: at least one instance group is required")
        return self


def render_config_pbtxt(config: TritonModelConfig) -> str:
    """``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``) for ``config``."""
    lines = [
        f'name: "{config.name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {config.max_batch_size}",
        "input [",
        "  {",
        f'    name: "{INPUT_NAME}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ {N_INPUTS} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{OUTPUT_NAME}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ {N_CLASSES} ]",
        "  }",
        "]",
        "dynamic_batching {",
    ]
    if config.preferred_batch_sizes:
        sizes = ", ".join(str(b) for b in config.preferred_batch_sizes)
        lines.append(f"  preferred_batch_size: [ {sizes} ]")
    lines += [
        f"  max_queue_delay_microseconds: {config.max_queue_delay_us}",
        "}",
        "instance_group [",
    ]
    groups = []
    for group in config.instance_groups:
        body = [f"    count: {group.count}", f"    kind: {group.kind}"]
        if group.gpus:
            body.append(f"    gpus: [ {', '.join(str(g) for g in group.gpus)} ]")
        groups.append("  {\n" + "\n".join(body) + "\n  }")
    lines.append(",\n".join(groups))
    lines += ["]", "version_policy: { latest: { num_versions: 1 } }"]
    return "\n".join(lines) + "\n"


def write_model_repository(
    root: Path, model_file: Path, config: TritonModelConfig, *, version: int = 1
) -> Path:
    """Lay out ``root/<name>/config.pbtxt`` and ``root/<name>/<version>/model.onnx``."""
    if version < 1:
        raise ValueError(f"version = {version}: Triton model versions are integers >= 1")
    model_dir = root / config.name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    (model_dir / str(version)).mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(render_config_pbtxt(config))
    shutil.copyfile(model_file, model_dir / str(version) / "model.onnx")
    return model_dir
