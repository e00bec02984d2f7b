"""One exit-code contract for every command, each code with its one-line message.

0 ok; 1 the check failed (mandatory violations, unknown inputs, a diff head that cannot be
planned); 2 the input is wrong (arguments, project or stack file, stack configuration, a
program that raises): `error:` lines, no traceback unless --verbose, and no asyncio noise.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.tools.test_plan import run_tools

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PLANNING_COMMANDS = ("plan", "check", "cost")


def program(
    tmp_path: Path, source: str, *, stack_config: str = "config:\n  gcp:project: p\n"
) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: broken\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text(stack_config)
    (tmp_path / "__main__.py").write_text(textwrap.dedent(source))
    return tmp_path


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert "BaseEventLoop" not in stderr, stderr
    assert "Task was destroyed" not in stderr and "never retrieved" not in stderr, stderr


RAISES_IN_A_HELPER = """
    import pulumi


    def build():
        raise RuntimeError("boom in build")


    build()
"""

RAISES_IN_AN_APPLY = """
    import pulumi
    import pulumi_gcp as gcp

    topic = gcp.pubsub.Topic("t", name="t")
    # A known value: the callback runs in a preview, and fails.
    topic.name.apply(lambda name: int(name))
"""

RUN_ERROR = """
    import pulumi

    raise pulumi.RunError(
        "Pulumi.dev.yaml: broken:size: must be positive (got -1)\\n"
        "Pulumi.dev.yaml: broken:zone: unknown zone (got 'mars-1a')"
    )
"""


@pytest.mark.parametrize("command", PLANNING_COMMANDS)
def test_a_program_that_raises_is_one_line_naming_its_frame(tmp_path: Path, command: str):
    root = program(tmp_path, RAISES_IN_A_HELPER)
    result = run_tools(command, "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == ["error: __main__.py:6 in build: RuntimeError: boom in build"]
    assert_clean(result.stderr)


def test_verbose_adds_the_traceback(tmp_path: Path):
    root = program(tmp_path, RAISES_IN_A_HELPER)
    result = run_tools("plan", "--stack", "dev", "--program", str(root), "--verbose", timeout=60)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and 'raise RuntimeError("boom in build")' in result.stderr
    assert errors(result.stderr) == ["error: __main__.py:6 in build: RuntimeError: boom in build"]


def test_an_apply_callback_that_raises_names_the_callback(tmp_path: Path):
    root = program(tmp_path, RAISES_IN_AN_APPLY)
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == [
        "error: __main__.py:7 in <lambda>: ValueError: invalid literal for int() with base 10: 't'"
    ]
    assert_clean(result.stderr)


@pytest.mark.parametrize("command", PLANNING_COMMANDS)
def test_a_run_error_prints_each_line_of_its_message(tmp_path: Path, command: str):
    root = program(tmp_path, RUN_ERROR)
    result = run_tools(command, "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == [
        "error: Pulumi.dev.yaml: broken:size: must be positive (got -1)",
        "error: Pulumi.dev.yaml: broken:zone: unknown zone (got 'mars-1a')",
    ]
    assert_clean(result.stderr)


def test_our_own_bad_stack_config_is_a_run_error_with_exit_2():
    result = run_tools(
        "plan", "--stack", "dev", "--config", 'signal-platform:budget={"monthlyUsd": -5}'
    )
    assert result.returncode == 2
    (line,) = [e for e in errors(result.stderr) if "budget.monthlyUsd" in e]
    assert line.startswith("error: Pulumi.dev.yaml: signal-platform:budget.monthlyUsd:")
    assert_clean(result.stderr)


def test_a_missing_module_names_it_and_the_requirements_file(tmp_path: Path):
    root = program(tmp_path, "import pulumi\nimport pulumi_random\n")
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    (line,) = errors(result.stderr)
    assert "the program imports 'pulumi_random' (__main__.py:2 in <module>)" in line
    assert f"{root.resolve()}/requirements.txt" in line
    assert_clean(result.stderr)


def test_a_missing_import_in_a_helper_names_the_helper(tmp_path: Path):
    root = program(tmp_path, "import pulumi\nimport helpers\n")
    (root / "helpers.py").write_text("import helpres_typo\n")
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    (line,) = errors(result.stderr)
    assert line.startswith("error: the program imports 'helpres_typo' (helpers.py:1 in <module>)")
    assert_clean(result.stderr)


def test_an_encrypted_value_needs_an_override(tmp_path: Path):
    root = program(
        tmp_path,
        "import pulumi\npulumi.export('token', pulumi.Config().require_secret('token'))\n",
        stack_config="config:\n  broken:token:\n    secure: AAABAJ==\n",
    )
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == [
        "error: Pulumi.dev.yaml: broken:token is an encrypted secret;"
        " pass it with --config broken:token=VALUE"
    ]
    out = tmp_path / "plan.json"
    result = run_tools(
        "plan",
        "--stack",
        "dev",
        "--program",
        str(root),
        "--config",
        "broken:token=s3cr3t",
        "--json",
        str(out),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"token": "[secret]"' in out.read_text() and "s3cr3t" not in out.read_text()
    for command in ("check", "cost"):
        result = run_tools(
            command,
            "--stack",
            "dev",
            "--program",
            str(root),
            "--config",
            "broken:token=s3cr3t",
            timeout=120,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "s3cr3t" not in result.stdout + result.stderr


def test_bad_arguments_exit_2(tmp_path: Path):
    result = run_tools("plan", "--stack", "dev", "--program", str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == [
        f"error: {tmp_path}: no Pulumi.yaml: not a Pulumi project directory"
    ]
    result = run_tools("plan", "--stack", "dev", "--config", "regions", timeout=60)
    assert result.returncode == 2
    assert "expected KEY=VALUE" in errors(result.stderr)[0]
    result = run_tools("plan", timeout=60)  # argparse: --stack is required
    assert result.returncode == 2


def test_unknown_inputs_exit_1_and_a_clean_plan_exits_0(tmp_path: Path):
    typo = run_tools("plan", "--stack", "dev", "--program", str(FIXTURES / "typo_program"))
    assert typo.returncode == 1
    assert errors(typo.stderr)[-1].startswith("error: 6 input(s) the provider does not know")
    clean = run_tools("plan", "--stack", "test", "--program", str(FIXTURES / "functions"))
    assert clean.returncode == 0, clean.stderr
    assert_clean(clean.stderr)


def test_check_exits_1_on_mandatory_violations_only():
    result = run_tools("check", "--stack", "test", "--program", str(FIXTURES / "bad_program"))
    assert result.returncode == 1
    assert result.stdout.rstrip().endswith("mandatory violations block the update")
    assert_clean(result.stderr)


def test_check_exits_2_on_a_bad_policy_config(tmp_path: Path):
    config = tmp_path / "policy.json"
    config.write_text('{"no-such-policy": "mandatory"}')
    result = run_tools(
        "check",
        "--stack",
        "test",
        "--program",
        str(FIXTURES / "bad_program"),
        "--policy-config",
        str(config),
    )
    assert result.returncode == 2
    assert len(errors(result.stderr)) == 1 and "no-such-policy" in errors(result.stderr)[0]
    assert_clean(result.stderr)


def test_a_failure_outside_the_programs_code_names_its_entry_point(tmp_path: Path):
    root = program(
        tmp_path,
        """
        import pulumi_gcp as gcp

        gcp.pubsub.Topic("t", name="t").name.apply(int)  # int() itself raises
        """,
    )
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == [
        "error: __main__.py (raised outside the program's own code): ValueError:"
        " invalid literal for int() with base 10: 't'"
    ]
    assert_clean(result.stderr)


def test_a_failure_with_registrations_in_flight_leaves_no_asyncio_noise(tmp_path: Path):
    # Thirty registrations wait on a resource whose input fails: the failure is one line, and
    # nothing the program left running reports itself at exit.
    root = program(
        tmp_path,
        """
        import pulumi
        import pulumi_gcp as gcp

        project = gcp.organizations.get_project_output()
        bad = gcp.pubsub.Topic("bad", name=project.no_such_attribute)
        for i in range(30):
            gcp.pubsub.Topic(f"t{i}", name=f"t{i}", opts=pulumi.ResourceOptions(depends_on=[bad]))
        """,
    )
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        "error: __main__.py (raised outside the program's own code): AttributeError:"
        " 'GetProjectResult' object has no attribute 'no_such_attribute'"
    ]
    assert_clean(result.stderr)


def test_a_fault_of_the_engine_itself_exits_3(capsys: pytest.CaptureFixture[str]):
    import argparse

    from tools.plan_command import run_guarded

    def broken(_args: argparse.Namespace) -> int:
        raise KeyError("a bug")

    assert run_guarded(broken, argparse.Namespace(verbose=False)) == 3
    err = capsys.readouterr().err
    assert errors(err) == [
        "error: internal error in the offline engine: KeyError: 'a bug' (--verbose shows the traceback)"
    ]
    assert run_guarded(broken, argparse.Namespace(verbose=True)) == 3
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"__main__.py": "import pulumi\n\ndef f(:\n    pass\n"},
            "error: __main__.py:3:7: SyntaxError: invalid syntax",
        ),
        (
            {"__main__.py": "import helper\n", "helper.py": "x = 1\n  y = 2\n"},
            "error: helper.py:2:2: IndentationError: unexpected indent",
        ),
    ],
)
def test_a_syntax_error_names_the_file_line_and_column(
    tmp_path: Path, files: dict[str, str], expected: str
):
    # The traceback of a SyntaxError has only the importer's frames (<frozen importlib...>):
    # the place is the exception's own file, line and column.
    root = program(tmp_path, "")
    for name, source in files.items():
        (root / name).write_text(source)
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == [expected]
    assert_clean(result.stderr)


@pytest.mark.parametrize(
    ("source", "stack_config", "expected"),
    [
        (
            "import pulumi\n\nsize = pulumi.Config().require_int('size')\n",
            "config:\n  gcp:project: p\n",
            "error: Pulumi.dev.yaml: missing required configuration value 'broken:size' (read at"
            " __main__.py:3 in <module>); set it in Pulumi.dev.yaml or with --config"
            " broken:size=VALUE",
        ),
        (
            "import pulumi\n\n\ndef size():\n    return pulumi.Config().get_int('size')\n\n\nsize()\n",
            "config:\n  gcp:project: p\n  broken:size: ten\n",
            "error: Pulumi.dev.yaml: broken:size: 'ten' is not a valid int (read at __main__.py:5"
            " in size)",
        ),
        (
            "import sys\n\nsys.exit('no region configured')\n",
            "config:\n  gcp:project: p\n",
            "error: __main__.py:3 in <module>: the program exited: sys.exit('no region configured')",
        ),
    ],
)
def test_config_the_program_cannot_read_and_sys_exit_are_one_line(
    tmp_path: Path, source: str, stack_config: str, expected: str
):
    root = program(tmp_path, "", stack_config=stack_config)
    (root / "__main__.py").write_text(source)
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == [expected]
    assert_clean(result.stderr)


def test_sys_exit_0_ends_the_program_with_what_it_declared(tmp_path: Path):
    # Under the language host a program that exits 0 has finished: the plan is what it
    # declared by then (the engine's own process must not exit with it).
    root = program(
        tmp_path,
        """
        import sys
        import pulumi_gcp as gcp

        gcp.pubsub.Topic("t", name="t")
        sys.exit(0)
        """,
    )
    result = run_tools("plan", "--stack", "dev", "--program", str(root), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "gcp:pubsub/topic:Topic" in result.stdout


@pytest.mark.parametrize("stack", ["", "../dev", "a/b/c/dev", "dev prod"])
def test_a_stack_that_is_not_a_stack_name_is_refused(tmp_path: Path, stack: str):
    root = program(tmp_path, "import pulumi\n")
    result = run_tools("plan", "--stack", stack, "--program", str(root), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == [
        f"error: --stack {stack!r}: not a stack name (letters, digits, '-', '_' and '.',"
        " optionally as org/project/stack)"
    ]


def test_a_fully_qualified_stack_names_its_file_and_urns_by_its_last_part(tmp_path: Path):
    root = program(tmp_path, "import pulumi_gcp as gcp\n\ngcp.pubsub.Topic('t', name='t')\n")
    out = tmp_path / "plan.json"
    result = run_tools(
        "plan", "--stack", "acme/broken/dev", "--program", str(root), "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert '"urn:pulumi:dev::broken::gcp:pubsub/topic:Topic::t"' in out.read_text()


@pytest.mark.parametrize("command", ("plan", "cost"))
def test_an_output_file_that_cannot_be_written_is_bad_input(tmp_path: Path, command: str):
    root = program(tmp_path, "import pulumi\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "out.json"  # under a file: no directory can be made there
    result = run_tools(command, "--stack", "dev", "--program", str(root), "--json", str(target))
    assert result.returncode == 2
    assert errors(result.stderr) == [f"error: --json {target}: cannot write it (File exists)"]
    assert_clean(result.stderr)
