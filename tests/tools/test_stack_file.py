"""Stack and project files read as the Pulumi CLI reads them: YAML 1.2, strict, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.tools.test_plan import run_tools
from tools.stack_file import StackFileError, read_stack_config, stack_file, stacks_in

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str | bytes, stack: str = "dev") -> Path:
    path = tmp_path / f"Pulumi.{stack}.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_scalars_are_yaml_1_2_as_pulumi_reads_them(tmp_path: Path):
    path = write(
        tmp_path,
        "config:\n"
        "  p:switch: on\n"  # YAML 1.1 would say True
        "  p:window: 03:30\n"  # YAML 1.1 would say 210 (base 60)
        "  p:octal: 010\n"  # YAML 1.1 would say 8
        "  p:flag: true\n"
        "  p:ratio: 0.25\n"
        "  p:day: 2024-01-31\n"  # YAML 1.1 would make a date
        "  bare: value\n"
        "  p:merged:\n"
        "    <<: {a: 1}\n"
        "    b: 2\n",
    )
    assert read_stack_config(path, "p") == {
        "p:switch": "on",
        "p:window": "03:30",
        "p:octal": 10,
        "p:flag": True,
        "p:ratio": 0.25,
        "p:day": "2024-01-31",
        "p:bare": "value",
        "p:merged": {"a": 1, "b": 2},
    }


BOMB = "config:\n  p:a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  p:{n}: &{n} [{', '.join([f'*{m}'] * 10)}]\n"
    for m, n in zip("abcdefg", "bcdefgh", strict=True)
)  # eight lines that expand to over 10^8 values
DEEP = "config:\n  p:a: " + "[" * 50_000 + "]" * 50_000 + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "config:\n  p:budget: 1\n  p:other: 2\n  p:budget: 3\n",
            r"^Pulumi\.dev\.yaml:4:3: duplicate key 'p:budget' \(first at line 2\); each key may "
            r"appear once$",
        ),
        (
            "config:\n  p:labels:\n    team: a\n    team: b\n",
            r"^Pulumi\.dev\.yaml:4:5: duplicate key 'team' \(first at line 3\)",
        ),
        (
            "config:\n  p:ports:\n    80: http\n",
            r"^Pulumi\.dev\.yaml:3:5: key 80 is a number; mapping keys must be strings",
        ),
        ("config:\n  p:a: [1, 2\n", r"^Pulumi\.dev\.yaml:3:1: invalid YAML: .*expected ','"),
        ("config:\n\tp:a: 1\n", r"^Pulumi\.dev\.yaml:2:1: invalid YAML: .*'\\t'"),
        ("- a\n- b\n", r"^Pulumi\.dev\.yaml: the top level is a list; it must be a mapping"),
        ("just text\n", r"^Pulumi\.dev\.yaml: the top level is a string; it must be a mapping"),
        ("config:\n  - p:a\n", r"^Pulumi\.dev\.yaml: config: is a list; it must be a mapping"),
        ("config: 3\n", r"^Pulumi\.dev\.yaml: config: is a number; it must be a mapping"),
        (
            "config:\n  a: 1\n  p:a: 2\n",
            r"^Pulumi\.dev\.yaml: config: 'a' and 'p:a' name the same key; keep one$",
        ),
        (BOMB, r"^Pulumi\.dev\.yaml: aliases expand to 123,456,\d+ values \(at most 100,000\)"),
        (DEEP, r"^Pulumi\.dev\.yaml: nested too deeply for a configuration file$"),
    ],
)
def test_what_pulumi_refuses_is_one_line_naming_the_file(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(StackFileError) as caught:
        read_stack_config(path, "p")
    assert re.search(message, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_empty_file_is_an_empty_config(tmp_path: Path):
    assert read_stack_config(write(tmp_path, ""), "p") == {}
    assert read_stack_config(write(tmp_path, "# only a comment\n"), "p") == {}
    assert read_stack_config(write(tmp_path, "config:\n"), "p") == {}


def test_a_missing_stack_names_the_stacks_that_exist(tmp_path: Path):
    write(tmp_path, "", "dev")
    write(tmp_path, "", "prod")
    assert stacks_in(tmp_path) == ["dev", "prod"]
    with pytest.raises(
        StackFileError, match=r"^Pulumi\.prod2\.yaml: no such stack file; stacks here: dev, prod$"
    ):
        stack_file(tmp_path, "prod2")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StackFileError, match="no stack files here"):
        stack_file(empty, "dev")


def test_the_command_exits_2_with_the_line_for_a_missing_stack():
    result = run_tools("plan", "--stack", "prod2", timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: Pulumi.prod2.yaml: no such stack file; stacks here: dev, prod"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "config:\n  p:budget: 1\n  p:budget: 2\n",
            "Pulumi.dev.yaml:3:3: duplicate key 'p:budget'",
        ),
        ("config: [1\n", "Pulumi.dev.yaml:2:1: invalid YAML"),
        ("- 1\n", "Pulumi.dev.yaml: the top level is a list"),
        (BOMB, "Pulumi.dev.yaml: aliases expand to"),
        (DEEP, "Pulumi.dev.yaml: nested too deeply"),
        (
            b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
            "Pulumi.dev.yaml: not UTF-8 text (byte 0x89 at offset 0)",
        ),
    ],
)
def test_every_command_refuses_a_bad_stack_file_with_exit_2(
    tmp_path: Path, text: str | bytes, fragment: str
):
    (tmp_path / "Pulumi.yaml").write_text("name: p\nruntime: python\n")
    (tmp_path / "__main__.py").write_text("import pulumi\n")
    write(tmp_path, text)
    for command in ("plan", "check", "cost"):
        result = run_tools(command, "--stack", "dev", "--program", str(tmp_path), timeout=60)
        assert result.returncode == 2, (command, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], (command, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_bad_project_file_is_one_line_too(tmp_path: Path):
    (tmp_path / "Pulumi.yaml").write_text("name: p\nname: q\nruntime: python\n")
    result = run_tools("plan", "--stack", "dev", "--program", str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert "error: Pulumi.yaml:2:1: duplicate key 'name' (first at line 1)" in result.stderr
