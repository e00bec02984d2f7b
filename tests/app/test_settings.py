"""`app.config` imports light: the Pulumi program checks the service's config file with it
where only the program's packages are installed (requirements.lock)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK = REPO_ROOT / "requirements.lock"  # the Pulumi program's packages: the deploy installs these

# What the service's runtime modules import and `app.config` must not.
HEAVY = (
    "numba", "numpy", "pandas", "scipy", "exchange_calendars", "redis", "duckdb", "grpc",
    "google.cloud", "google.protobuf", "onnxruntime", "zstandard", "lz4", "structlog",
    "opentelemetry", "prometheus_client",
)  # fmt: skip
LIGHT_APP = {
    "app",
    "app.config",
    "app.config_errors",
    "app.model",
    "app.model.tensors",
    "app.settings",
}

# The modules a fresh interpreter imports for `import app.config` (those of its start-up left
# out), and the top-level packages among them installed in the virtualenv's site-packages.
_IMPORTED = """
import json, sys, sysconfig
before = set(sys.modules)
import app.config
modules = sorted(set(sys.modules) - before)
site = tuple({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
installed = {m.partition(".")[0] for m in modules
             if (getattr(sys.modules[m], "__file__", None) or "").startswith(site)}
print(json.dumps({"modules": modules, "installed": sorted(installed)}))
"""


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _imported_by_app_config() -> dict[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", _IMPORTED], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_app_config_imports_only_the_standard_library_pydantic_pyyaml_and_light_app_modules():
    found = _imported_by_app_config()
    imported = found["modules"]
    assert "app.config" in imported  # the check ran in a fresh interpreter
    heavy = [m for m in imported if any(m == h or m.startswith(f"{h}.") for h in HEAVY)]
    assert heavy == [], f"import app.config imports the service's runtime packages: {heavy}"
    # Every other package it imports is one the deploy's virtualenv installs (requirements.lock).
    pinned = {_canonical(name) for name in re.findall(r"^(\S+)==", LOCK.read_text(), re.M)}
    owners = importlib.metadata.packages_distributions()
    unpinned = [
        m for m in found["installed"] if not pinned & {_canonical(d) for d in owners.get(m, [])}
    ]
    assert unpinned == [], (
        f"import app.config imports packages not in requirements.lock: {unpinned}"
    )
    app_modules = {m for m in imported if m.partition(".")[0] == "app"}
    runtime = sorted(m for m in app_modules - LIGHT_APP if not m.startswith("app.settings."))
    assert runtime == [], f"import app.config imports runtime modules of the service: {runtime}"
