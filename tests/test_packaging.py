"""Packaging: the lock files against their inputs, the image's and setup's hashed installs, the
package's contents and its commands.

The lock files (`make lock`) pin every package with its hashes; the hand-written requirements
files are their inputs. A pin bumped in an input without `make lock` fails here, and so does a
lock that lost a hash, names an index or drifts from the development lock it was resolved under.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
MAKEFILE = REPO / "Makefile"
PYPROJECT = REPO / "pyproject.toml"
DOCKERFILE = REPO / "app" / "Dockerfile"
BIN = Path(sys.executable).parent
GRPC_FAMILY = (
    "grpcio",
    "grpcio-tools",
    "grpcio-health-checking",
    "grpcio-reflection",
    "grpcio-status",
)
# The lock target's recipe lines: `$(call lock_file,INPUT,LOCK[,CONSTRAINTS])`.
LOCK_CALL_RE = re.compile(r"^\t@?\$\(call lock_file,([^,)]+),([^,)]+)(?:,([^,)]+))?\)", re.M)
HASH_RE = re.compile(r"--hash=sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class LockedSpec:
    """How `make lock` makes one lock file: from an input, under an optional constraint lock."""

    input: str
    lock: str
    constraints: str | None

    def __str__(self) -> str:
        return self.lock


def lock_specs() -> list[LockedSpec]:
    specs = [
        LockedSpec(i, lock, c or None) for i, lock, c in LOCK_CALL_RE.findall(MAKEFILE.read_text())
    ]
    assert specs, f"{MAKEFILE}: no $(call lock_file,...) lines in the lock target"
    return specs


SPECS = lock_specs()


def input_pins(path: Path) -> dict[str, tuple[str, Path]]:
    """An input's top-level pins, `-r` files followed: {name: (version, the file that pins it)}."""
    pins: dict[str, tuple[str, Path]] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.relative_to(REPO)}:{number}"
        if line.startswith("-r "):
            pins.update(input_pins((path.parent / line[3:].strip()).resolve()))
            continue
        assert not line.startswith("-"), (
            f"{where}: option {line!r} in an input; inputs hold pins only"
        )
        requirement = Requirement(line)
        (spec,) = requirement.specifier  # an input pins exactly: one ==
        assert spec.operator == "==", f"{where}: {line!r} is not pinned with =="
        pins[canonicalize_name(requirement.name)] = (spec.version, path)
    return pins


@dataclass
class Locked:
    version: str
    hashes: list[str]
    via: list[str] = field(default_factory=list)  # the annotations: "-r FILE", "-c FILE", packages


def lock_entries(path: Path) -> dict[str, Locked]:
    """A lock file's requirements (continuation lines joined) with their hashes and `# via`."""
    entries: dict[str, Locked] = {}
    current: Locked | None = None
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            via = line.lstrip("#").strip()
            if current is not None and via:
                current.via.append(via.removeprefix("via ").strip())
            continue
        if not line:
            continue
        logical += " " + line.removesuffix("\\").strip()
        if line.endswith("\\"):
            continue
        words = logical.split()
        logical = ""
        requirement = Requirement(words[0])
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{path.name}: {words[0]!r} is not pinned with =="
        options = words[1:]
        hashes = [m.group(1) for word in options if (m := HASH_RE.match(word))]
        assert len(hashes) == len(options), f"{path.name}: {words[0]}: options other than hashes"
        current = Locked(spec.version, hashes)
        entries[canonicalize_name(requirement.name)] = current
    return entries


def included_files(path: Path) -> set[Path]:
    """An input and every file it includes with `-r`."""
    files = {path.resolve()}
    for raw in path.read_text().splitlines():
        if raw.startswith("-r "):
            files |= included_files(path.parent / raw[3:].split(" #", 1)[0].strip())
    return files


# --- the lock files against their inputs -------------------------------------------------------


def test_every_requirements_file_is_the_input_of_a_lock() -> None:
    inputs = {spec.input for spec in SPECS}
    skip = {".git", ".venv", "venv", ".checkov-venv", "tests", "node_modules", "build"}
    found = {
        str(path.relative_to(REPO))
        for path in REPO.rglob("requirements*.txt")
        if not skip & set(path.relative_to(REPO).parts)
    }
    assert found == inputs, f"requirements files without a lock: {sorted(found - inputs)}"
    for spec in SPECS:
        assert (REPO / spec.lock).is_file(), f"{spec.lock} is missing: run `make lock`"


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_the_lock_pins_every_input_pin_at_its_version(spec: LockedSpec) -> None:
    locked = lock_entries(REPO / spec.lock)
    stale = [
        f"{name}=={version} ({source.relative_to(REPO)}) but the lock has "
        + (locked[name].version if name in locked else "nothing")
        for name, (version, source) in input_pins(REPO / spec.input).items()
        if name not in locked or locked[name].version != version
    ]
    assert not stale, f"{spec.lock} is out of date, run `make lock`: " + "; ".join(stale)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_the_lock_holds_no_direct_requirement_its_input_dropped(spec: LockedSpec) -> None:
    pinned = input_pins(REPO / spec.input)
    inputs = {str(path.relative_to(REPO)) for path in included_files(REPO / spec.input)}
    for name, entry in lock_entries(REPO / spec.lock).items():
        direct = [via for via in entry.via if via.startswith("-r ") and via[3:] in inputs]
        assert not direct or name in pinned, (
            f"{spec.lock}: {name} is there as a pin of {direct[0][3:]}, which no longer has it:"
            " run `make lock`"
        )


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_every_locked_requirement_has_its_hashes_and_no_index_is_named(spec: LockedSpec) -> None:
    text = (REPO / spec.lock).read_text()
    for word in (
        "://",
        "--index-url",
        "--extra-index-url",
        "--find-links",
        "--trusted-host",
        "-e ",
    ):
        assert word not in text, f"{spec.lock} names {word!r}: locks name packages and hashes only"
    entries = lock_entries(REPO / spec.lock)
    assert entries
    unhashed = [name for name, entry in entries.items() if not entry.hashes]
    assert not unhashed, f"{spec.lock}: no hash for {unhashed}"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.constraints], ids=str)
def test_a_constrained_lock_runs_the_versions_of_the_lock_it_was_resolved_under(
    spec: LockedSpec,
) -> None:
    assert spec.constraints is not None
    outer = lock_entries(REPO / spec.constraints)
    for name, entry in lock_entries(REPO / spec.lock).items():
        assert name in outer, f"{spec.lock}: {name} is not in {spec.constraints}"
        assert (entry.version, entry.hashes) == (outer[name].version, outer[name].hashes), (
            f"{spec.lock}: {name}=={entry.version}, {spec.constraints} has {outer[name].version}"
        )


def test_the_grpc_family_is_at_one_release_in_every_lock() -> None:
    versions: dict[str, set[str]] = {}
    for spec in SPECS:
        for name, entry in lock_entries(REPO / spec.lock).items():
            if name in GRPC_FAMILY:
                versions.setdefault(entry.version, set()).add(f"{name} in {spec.lock}")
    assert len(versions) == 1, f"the gRPC family at several releases: {versions}"
    development = lock_entries(REPO / "requirements-dev.lock")
    assert all(name in development for name in GRPC_FAMILY)


# --- installs: every one from a lock, with hashes ----------------------------------------------


def test_make_setup_installs_every_venv_from_its_lock_with_hashes() -> None:
    # -n -B: what a setup from scratch would run, printed and not run.
    done = subprocess.run(
        ["make", "-n", "-B", "setup"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    installs = [line for line in done.stdout.splitlines() if " pip install " in line]
    locks = {spec.lock for spec in SPECS}
    installed = set()
    for line in installs:
        if "--editable ." in line:  # the project itself, its dependencies already installed
            assert "--no-deps" in line and "--no-build-isolation" in line, line
            continue
        assert "--require-hashes" in line, line
        (lock,) = re.findall(r"-r (\S+)", line)
        assert lock in locks, line
        installed.add(lock)
    assert {"requirements-dev.lock", "policies/requirements-dev.lock"} <= installed
    assert any("--editable ." in line for line in installs)


def dockerfile_runs() -> list[str]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip().startswith("RUN ")]


def test_the_image_installs_only_from_app_locks_with_hashes_and_wheels() -> None:
    installs = [run for run in dockerfile_runs() if "pip install" in run]
    assert installs
    for run in installs:
        assert "--require-hashes" in run and "--only-binary=:all:" in run, run
        (lock,) = re.findall(r"-r (\S+)", run)
        assert (REPO / "app" / lock).is_file() and f"app/{lock}" in {s.lock for s in SPECS}, run
        # Nothing named on the command line: every package comes from the lock.
        assert not re.search(r"\s[A-Za-z][\w.-]*==", run), run
    assert any("-r requirements.lock" in run for run in installs)


# What app/ imports that the service's image does not install, and where it comes from instead.
NOT_IN_THE_IMAGE = {
    "grpc_tools": "app/requirements-build.lock",  # the build stage generates the stubs
    "mlserver": "requirements-dev.lock",  # app/serving: the tests' KServe-v2 peer loads it
}


def third_party_imports(root: Path) -> dict[str, set[str]]:
    """Each top-level module imported anywhere under root (functions included) and where."""
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"app", "__future__"}:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_the_image_installs_every_package_the_service_imports() -> None:
    distributions = packages_distributions()
    image = lock_entries(REPO / "app" / "requirements.lock")
    for module, where in sorted(third_party_imports(REPO / "app").items()):
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert names, f"{module} (imported by {sorted(where)}) is installed by no distribution"
        lock = NOT_IN_THE_IMAGE.get(module, "app/requirements.lock")
        locked = image if module not in NOT_IN_THE_IMAGE else lock_entries(REPO / lock)
        assert names & set(locked), f"{sorted(where)} import {module}, which {lock} lacks"


# --- the package and its commands ---------------------------------------------------------------


def scripts() -> dict[str, str]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]


def test_the_wheel_holds_infra_tools_and_app_with_their_data(tmp_path: Path) -> None:
    source = tmp_path / "src"
    junk = {".git", ".venv", "venv", ".checkov-venv", "__pycache__", "artifacts", "plans"}
    junk |= {"build", "dist"}  # a stale build tree would leak into the wheel
    shutil.copytree(REPO, source, ignore=lambda _d, names: [n for n in names if n in junk])
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         str(source), "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("signal_platform-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"infra", "tools", "app"}
    tracked = subprocess.run(
        ["git", "ls-files", "infra", "tools", "app"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    image_only = {"app/Dockerfile", "app/.dockerignore"}
    data = [
        path
        for path in tracked
        if not path.endswith(".py")
        and path not in image_only
        and not Path(path).name.startswith("requirements")
        and (REPO / path).exists()
    ]
    assert data, "no data files found"
    missing = [path for path in data if path not in names]
    assert not missing, f"data the code reads is not in the wheel: {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    listed = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"{name} = {target}" in listed for name, target in scripts().items())


# Each command and a line its --help prints (the description or the subcommands).
HELP_LINES = {
    "signal-platform": "Plan, check, diff and price a Pulumi stack offline",
    "signal-service": "{serve,replay}",
    "signal-autoscaler": "Forecast each region's request rate",
    "signal-anomaly-detector": "Score latency, error-rate and GPU series",
}


def test_every_command_is_documented_here_and_in_the_readme() -> None:
    assert set(scripts()) == set(HELP_LINES)
    readme = (REPO / "README.md").read_text()
    assert all(f"`{name}" in readme for name in scripts())


@pytest.mark.parametrize("name", sorted(HELP_LINES))
def test_each_installed_command_answers_help(name: str) -> None:
    command = BIN / name
    assert command.exists(), f"{command} is not installed: run `make setup`"
    done = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    assert HELP_LINES[name] in " ".join(done.stdout.split()), done.stdout


@pytest.mark.parametrize(
    ("name", "module", "args"),
    [
        ("signal-platform", "tools", ["plan", "--stack", "no-such-stack"]),
        ("signal-platform", "tools", ["frobnicate"]),
        ("signal-autoscaler", "app.autoscale", ["--config", "/no/such/scaler.yaml", "--check"]),
    ],
)
def test_a_command_exits_as_its_module_does(name: str, module: str, args: list[str]) -> None:
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)

    by_command = run([str(BIN / name), *args])
    by_module = run([sys.executable, "-m", module, *args])
    assert by_command.returncode == by_module.returncode == 2, by_command.stderr

    def last_line(done: subprocess.CompletedProcess[str]) -> str:
        # argparse may name the program (`python -m tools: error: ...`): compare what follows.
        line = done.stderr.strip().splitlines()[-1]
        return line.split(": error: ", 1)[-1]

    assert last_line(by_command) == last_line(by_module)
