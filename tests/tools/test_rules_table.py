"""The rule table in policies/README.md: generated from the running pack, and current."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.policies.pack_process import shared_pack
from tools.analyzer import POLICY_README, AnalyzerError, PolicyPackProcess
from tools.rules_table import (
    README_BEGIN,
    README_END,
    main,
    render_rules_markdown,
    replace_rules_section,
)


@pytest.fixture
def pack(request: pytest.FixtureRequest) -> PolicyPackProcess:
    return shared_pack(request)


def test_rules_table_in_the_readme_is_current(pack: PolicyPackProcess) -> None:
    readme = POLICY_README.read_text()
    table = render_rules_markdown(pack.info())
    assert replace_rules_section(readme, table) == readme, (
        "policies/README.md is out of date: run python -m tools.rules_table --write-readme"
    )
    for policy in pack.info().policies:
        assert f"| `{policy.name}` | {policy.level} |" in table
    with pytest.raises(AnalyzerError, match=r"no .* section"):
        replace_rules_section("no markers here", table)
    assert README_BEGIN in readme and README_END in readme


def test_check_and_write_readme(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One run each: a stale table fails the check (1), --write-readme fixes it, a README
    without the markers is bad input (2)."""
    readme = tmp_path / "README.md"
    current = POLICY_README.read_text()
    stale = current.replace(
        "| `gke-private-nodes` | mandatory |", "| `gke-private-nodes` | advisory |"
    )
    readme.write_text(stale)
    assert main(["--check-readme", "--readme", str(readme)]) == 1
    assert (
        "is out of date: run python -m tools.rules_table --write-readme" in capsys.readouterr().err
    )
    assert main(["--write-readme", "--readme", str(readme)]) == 0
    assert readme.read_text() == current
    readme.write_text("no markers")
    assert main(["--check-readme", "--readme", str(readme)]) == 2
    assert "section" in capsys.readouterr().err
