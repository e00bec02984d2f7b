"""A program with its own virtualenv is planned inside it, as Pulumi's language host runs it.

The fixture program imports `pulumi_petname`, a package the engine's `.venv` lacks. The test
builds the program's virtualenv: a real `python -m venv`, the engine venv's packages made
visible through a `.pth` line (no network: the same pulumi and SDKs), and a small package of
our own (`pulumi_petname`, one CustomResource) written into it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.tools.test_plan import run_tools
from tools.engine import plan
from tools.inventory import UNKNOWN

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "venv_program"

PETNAME = textwrap.dedent('''
    """A tiny Pulumi resource package: a pet name the provider generates."""

    import pulumi


    class Petname(pulumi.CustomResource):
        def __init__(self, name, length=2, separator="-", opts=None):
            props = {"length": length, "separator": separator}
            super().__init__("petname:index:Petname", name, props, opts)
''')


def make_virtualenv(root: Path) -> Path:
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    (site,) = venv.glob("lib/python*/site-packages")
    engine_site = sysconfig.get_paths()["purelib"]
    # Executed by `site`: the engine venv's packages (and their own .pth hooks) visible here.
    (site / "engine_packages.pth").write_text(f"import site; site.addsitedir({engine_site!r})\n")
    package = site / "pulumi_petname"
    package.mkdir()
    (package / "__init__.py").write_text(PETNAME)
    return venv


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv-program") / "program"
    shutil.copytree(FIXTURE, root)
    make_virtualenv(root)
    return root


def test_the_engine_venv_lacks_the_package():
    with pytest.raises(ModuleNotFoundError):
        __import__("pulumi_petname")


def test_the_program_runs_in_its_own_virtualenv(program: Path, tmp_path: Path):
    out = tmp_path / "plan.json"
    result = run_tools(
        "plan", "--stack", "test", "--program", str(program), "--json", str(out), timeout=120
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["outputs"]["python"] == str((program / "venv").resolve())
    rows = {(r["type"], r["name"]): r for r in data["resources"]}
    pet = rows[("petname:index:Petname", "bucket-suffix")]
    assert pet["inputs"] == {"length": 3, "separator": "-"}
    # The package's default provider, as the engine registers one for any package.
    provider = rows[("pulumi:providers:petname", "default")]
    assert pet["provider"].startswith(provider["urn"] + "::")
    # The generated name is known only once it exists.
    assert rows[("gcp:storage/bucket:Bucket", "data")]["inputs"]["name"] == UNKNOWN
    assert data["outputs"]["bucketName"] == UNKNOWN
    assert "note: inputs of petname:index:Petname not checked" in result.stderr


def test_the_python_api_plans_there_too(program: Path):
    inventory = plan(program, "test")
    assert inventory.outputs["python"] == str((program / "venv").resolve())


def test_an_error_in_the_venv_keeps_the_contract(program: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(program, broken, symlinks=True)
    main = broken / "__main__.py"
    main.write_text(
        main.read_text() + "\nPetname('again', length='x').length.apply(lambda n: int(n))\n"
    )
    result = run_tools("plan", "--stack", "test", "--program", str(broken), timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: __main__.py:23 in <lambda>: ValueError: invalid literal for int() with base 10: 'x'"
    ]
    assert "Traceback" not in result.stderr


def test_without_its_virtualenv_the_missing_module_is_one_line(program: Path, tmp_path: Path):
    bare = tmp_path / "bare"
    shutil.copytree(program, bare, ignore=shutil.ignore_patterns("venv"))
    result = run_tools("plan", "--stack", "test", "--program", str(bare), timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    (line,) = errors
    assert "the program imports 'pulumi_petname' (__main__.py:8 in <module>)" in line
    assert f"list it in {bare.resolve()}/requirements.txt" in line
    assert "Pulumi.yaml names the virtualenv 'venv', which does not exist" in line


def test_a_virtualenv_without_pulumi_is_one_line_and_no_traceback(program: Path, tmp_path: Path):
    # The program's virtualenv exists but was never installed into: the engine cannot start
    # there. One line saying so; the child's traceback only with --verbose.
    empty = tmp_path / "empty"
    shutil.copytree(program, empty, ignore=shutil.ignore_patterns("venv"))
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(empty / "venv")],
        check=True,
        timeout=120,
    )
    result = run_tools("plan", "--stack", "test", "--program", str(empty), timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the program's virtualenv ({(empty / 'venv').resolve()}) cannot run the offline"
        " engine (ModuleNotFoundError: No module named 'google'); it needs pulumi and what the"
        f" program imports (pip install -r {empty.resolve()}/requirements.txt)"
    ]
    assert "Traceback" not in result.stderr
    verbose = run_tools(
        "plan", "--stack", "test", "--program", str(empty), "--verbose", timeout=120
    )
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
