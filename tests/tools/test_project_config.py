"""Pulumi.yaml's `config:` block: project-level defaults, values and types, as the CLI applies
them before the program runs (a stack value wins; a declared key without a default must be set
by the stack; typed keys keep their type; bad declarations are refused in one line)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.tools.test_plan import run_tools
from tools.engine import PlanError, plan, read_project, stack_config

PROGRAM = """
    import pulumi
    import pulumi_gcp as gcp

    cfg = pulumi.Config()
    pulumi.export("replicas", cfg.require_int("replicas"))
    pulumi.export("greeting", cfg.require("greeting"))
    pulumi.export("names", cfg.require_object("names"))
    gcp.compute.Subnetwork("s", name="s", network="default", ip_cidr_range="10.0.0.0/24")
"""

PROJECT = """
    name: projcfg
    runtime:
      name: python
      options:
        toolchain: pip
        virtualenv: venv
    config:
      pulumi:tags:
        value:
          pulumi:template: gcp-python
      gcp:region:
        value: europe-west4
      replicas:
        type: integer
        default: 2
      greeting: hello
      names:
        type: array
        items:
          type: string
        default: [a, b]
"""


def make(tmp_path: Path, project: str = PROJECT, stack: str = "") -> Path:
    (tmp_path / "Pulumi.yaml").write_text(textwrap.dedent(project))
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  gcp:project: p\n" + stack)
    (tmp_path / "__main__.py").write_text(textwrap.dedent(PROGRAM))
    return tmp_path


def test_defaults_and_values_reach_the_program_and_the_default_provider(tmp_path: Path):
    inventory = plan(make(tmp_path), "dev")
    assert inventory.outputs == {"replicas": 2, "greeting": "hello", "names": ["a", "b"]}
    provider = inventory.named("pulumi:providers:gcp", "default_10_2_0")
    assert provider.inputs["region"] == "europe-west4"
    assert inventory.regions()[inventory.named("gcp:compute/subnetwork:Subnetwork", "s").urn] == (
        "europe-west4"
    )


def test_the_stack_and_the_command_line_win(tmp_path: Path):
    root = make(tmp_path, stack="  projcfg:replicas: 5\n  gcp:region: us-east4\n")
    values = stack_config(read_project(root), "dev", {"projcfg:greeting": "hi"}).values
    assert values["projcfg:replicas"] == "5"
    assert values["gcp:region"] == "us-east4"
    assert values["projcfg:greeting"] == "hi"
    assert values["projcfg:names"] == '["a", "b"]'


@pytest.mark.parametrize(
    ("project_extra", "stack", "message"),
    [
        (
            "  size:\n    type: integer\n",
            "",
            "Pulumi.dev.yaml: stack 'dev' is missing configuration value 'size', which"
            " Pulumi.yaml declares without a default; set it here or with --config size=VALUE",
        ),
        (
            "",
            "  projcfg:replicas: many\n",
            "Pulumi.dev.yaml: projcfg:replicas must be of type 'integer' (Pulumi.yaml declares"
            ' it; got "many")',
        ),
        (
            "",
            "  projcfg:names: [1, 2]\n",
            "Pulumi.dev.yaml: projcfg:names must be of type 'array<string>' (Pulumi.yaml"
            " declares it; got [1, 2])",
        ),
        (
            "  token:\n    type: string\n    secret: true\n",
            "  projcfg:token: plain\n",
            "Pulumi.dev.yaml: projcfg:token must be encrypted, as Pulumi.yaml declares it"
            " secret (pulumi config set --secret)",
        ),
        (
            "  gcp:zone:\n    default: us-east4-a\n",
            "",
            "Pulumi.yaml: config 'gcp:zone' is not in the project's namespace and should not"
            " define a default; use 'value:' instead",
        ),
        (
            "  count:\n    type: int\n",
            "",
            "Pulumi.yaml: config 'count': type must be one of string, integer, boolean, array"
            " (got 'int')",
        ),
        (
            "  zones:\n    type: array\n",
            "",
            "Pulumi.yaml: config 'zones' declares an array but does not give the type of its"
            " 'items'",
        ),
        (
            "  size:\n    type: integer\n    default: big\n",
            "",
            "Pulumi.yaml: config 'size': the default 'big' is not of the declared type 'integer'",
        ),
    ],
)
def test_what_the_cli_refuses_is_one_line_and_exit_2(
    tmp_path: Path, project_extra: str, stack: str, message: str
):
    root = make(tmp_path, textwrap.dedent(PROJECT) + project_extra, stack)
    with pytest.raises(PlanError) as raised:
        plan(root, "dev")
    assert str(raised.value) == message
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {message}"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("spelling", ["stackConfigDir: stacks", "config: stacks"])
def test_stack_files_in_the_stack_config_dir(tmp_path: Path, spelling: str):
    # `stackConfigDir` (or its deprecated spelling, `config:` naming a directory) moves the
    # stack files; plan and cost read them there.
    (tmp_path / "Pulumi.yaml").write_text(f"name: moved\nruntime: python\n{spelling}\n")
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.dev.yaml").write_text("config:\n  moved:size: 3\n")
    (tmp_path / "__main__.py").write_text(
        "import pulumi\npulumi.export('size', pulumi.Config().require_int('size'))\n"
    )
    assert plan(tmp_path, "dev").outputs == {"size": 3}
    result = run_tools("cost", "--stack", "dev", "--program", str(tmp_path), timeout=60)
    assert result.returncode == 0, result.stderr
