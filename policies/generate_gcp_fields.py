"""Writes rules/gcp_fields.json from the pulumi-gcp SDK: where each resource type keeps its labels
and whether the provider's `defaultLabels` reach them, and which location inputs the provider's
`region`/`zone` fill in when the program leaves them unset.

The pack's own venv holds only the policy SDK, so it cannot import pulumi-gcp; this script runs
in the development venv, reads the SDK's source text (importing its ~1,500 modules would take
half a minute) and writes plain data the pack loads. tests/policies/test_gcp_fields.py fails when
the checked-in file and the installed SDK disagree.

    .venv/bin/python policies/generate_gcp_fields.py            # rewrite rules/gcp_fields.json
    .venv/bin/python policies/generate_gcp_fields.py --check    # exit 1 when it is stale

What is derived, per resource type (`gcp:<module>/<name>:<Name>`):

- labels: the input that holds the resource's label map (`userLabels`, else `resourceLabels`,
  else `labels`, a map of strings); when the type has none at the top level, the one in its
  `metadata`, `settings` or `nodeConfig` object (`metadata.labels` of a Cloud Run v1 service,
  `settings.userLabels` of a Cloud SQL instance, `nodeConfig.resourceLabels` of a node pool;
  label maps inside other objects are filters or Kubernetes node labels, not the resource's).
  The provider's `defaultLabels` reach exactly the label maps that sit beside an
  `effectiveLabels` (the SDK's semantics: `effectiveLabels` = provider defaults merged under
  the resource's own labels).
- provider locations: an optional `region` input takes the provider's `region`, an optional
  `zone` the provider's `zone`, and an optional `location` the provider's region or zone where
  the SDK documents it ("If it is not provided, the provider region is used").
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "rules" / "gcp_fields.json"
LABEL_FIELDS = ("userLabels", "resourceLabels", "labels")
# The object inputs whose label map is the resource's own (see the module docstring).
LABEL_CONTAINERS = ("metadata", "settings", "nodeConfig")
# Other clouds' GKE flavours live under gcp:container too but are not Google Cloud resources.
_SKIP = re.compile(r"^gcp:container/(aws|azure|attached)")
_CLASS = re.compile(r"^class (\w+)(\(pulumi\.CustomResource\))?:\n", re.M)
_TOKEN = re.compile(r"__init__\(\s*'(gcp:[a-zA-Z0-9]+/[a-zA-Z0-9]+:\w+)'")
_GETTER = re.compile(r'@pulumi\.getter(?:\(name="(\w+)"\))?\n    def (\w+)\(self\)')
_PARAM = re.compile(r"^ {17}(\w+): (.+?)(?: = None)?,?$", re.M)
_OBJECT_ARG = re.compile(r"'(\w+Args)'")
_MAP_OF_STRINGS = "Mapping[str, "


@dataclass(frozen=True)
class Input:
    name: str  # camelCase, as the engine sends it
    annotation: str
    optional: bool


def _classes(text: str) -> dict[str, tuple[str, bool]]:
    """Class name → (its source, whether it is a CustomResource), for one module file."""
    found: dict[str, tuple[str, bool]] = {}
    matches = list(_CLASS.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        found[match.group(1)] = (text[match.start() : end], bool(match.group(2)))
    return found


def _inputs(args_source: str) -> dict[str, Input]:
    """An `...Args` class's constructor parameters, by camelCase name."""
    camel = {snake: name or snake for name, snake in _GETTER.findall(args_source)}
    signature = args_source.split("def __init__(__self__, *,\n", 1)[-1].split("):\n", 1)[0]
    found = {}
    for line in signature.splitlines():
        match = _PARAM.match(line)
        if match:
            snake, annotation = match.group(1), match.group(2)
            name = camel.get(snake, snake)
            found[name] = Input(name, annotation, line.rstrip(",").endswith(" = None"))
    return found


def _label_field(inputs: dict[str, Input]) -> str | None:
    for name in LABEL_FIELDS:
        if name in inputs and _MAP_OF_STRINGS in inputs[name].annotation:
            return name
    return None


def _docstring(resource_source: str, snake: str) -> str:
    match = re.search(
        rf":param [^\n]*\b{snake}: (.*?)(?=\n\s*:param|\n\s*\"\"\")", resource_source, re.S
    )
    return " ".join(match.group(1).split()) if match else ""


def _provider_locations(resource_source: str, inputs: dict[str, Input]) -> dict[str, str]:
    found = {}
    for field in ("region", "zone"):
        if field in inputs and inputs[field].optional:
            found[field] = field
    if "location" in inputs and inputs["location"].optional:
        doc = _docstring(resource_source, "location")
        for key in ("region", "zone"):
            if f"provider {key}" in doc or f"provider's {key}" in doc:
                found["location"] = key
                break
    return found


def scan(root: Path) -> dict[str, object]:
    """The whole table, from the pulumi-gcp package at `root`."""
    labels: dict[str, dict[str, object]] = {}
    locations: dict[str, dict[str, str]] = {}
    for module in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        nested_classes: dict[str, tuple[str, bool]] | None = None
        for path in sorted(module.glob("*.py")):
            if path.name.startswith(("_", "get_")) or path.name == "outputs.py":
                continue
            text = path.read_text()
            if "(pulumi.CustomResource):" not in text:
                continue
            classes = _classes(text)
            for name, (source, is_resource) in classes.items():
                token = _TOKEN.search(source) if is_resource else None
                if token is None or _SKIP.match(token.group(1)) or f"{name}Args" not in classes:
                    continue
                inputs = _inputs(classes[f"{name}Args"][0])
                outputs = {camel or snake for camel, snake in _GETTER.findall(source)}
                field = _label_field(inputs)
                if field is not None:
                    labels[token.group(1)] = {
                        "path": field,
                        "providerDefaults": "effectiveLabels" in outputs,
                    }
                else:
                    if nested_classes is None:
                        inputs_file = module / "_inputs.py"
                        nested_classes = (
                            _classes(inputs_file.read_text()) if inputs_file.exists() else {}
                        )
                    for container in LABEL_CONTAINERS:
                        arg = (
                            _OBJECT_ARG.search(inputs[container].annotation)
                            if container in inputs
                            else None
                        )
                        if arg is None or arg.group(1) not in nested_classes:
                            continue
                        nested = _inputs(nested_classes[arg.group(1)][0])
                        inner = _label_field(nested)
                        if inner is not None:
                            labels[token.group(1)] = {
                                "path": f"{container}.{inner}",
                                "providerDefaults": "effectiveLabels" in nested,
                            }
                            break
                provider_locations = _provider_locations(source, inputs)
                if provider_locations:
                    locations[token.group(1)] = provider_locations
    return {
        "source": f"pulumi-gcp {importlib.metadata.version('pulumi-gcp')}",
        "labels": dict(sorted(labels.items())),
        "providerLocations": dict(sorted(locations.items())),
    }


def sdk_root() -> Path:
    spec = importlib.util.find_spec("pulumi_gcp")
    if spec is None or spec.origin is None:
        raise SystemExit("pulumi-gcp is not installed here: run this with .venv/bin/python")
    return Path(spec.origin).parent


def render(table: dict[str, object]) -> str:
    return json.dumps(table, indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {OUTPUT.name} is stale")
    args = parser.parse_args(argv)
    text = render(scan(sdk_root()))
    if args.check:
        if OUTPUT.read_text() != text:
            print(
                f"{OUTPUT} is stale: run .venv/bin/python policies/generate_gcp_fields.py",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
