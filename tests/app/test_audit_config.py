"""Hostile and careless configuration files, through the real command lines of the service and
the scaler: each is one ``error:`` line per problem naming the file, the key, the value and
what is allowed, exit 2, never a traceback and never a hang."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.__main__ import main as app_main
from app.alerting.__main__ import main as alerting_main
from app.autoscale.__main__ import main as autoscale_main
from app.config_errors import show
from app.serving.launch import REPO_ROOT


def _billion_laughs(levels: int) -> str:
    """A few lines of YAML aliases that stand for 10**levels strings."""
    lines = ["junk:", "  - &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


DEEP = "a: " + "[" * 100_000 + "]" * 100_000 + "\n"


@pytest.fixture(autouse=True)
def never_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A configuration these tests expect refused must not start a server (it would run on)."""

    async def accepted(config: object) -> None:
        raise AssertionError(f"the configuration was accepted: {config!r:.300}")

    monkeypatch.setattr("app.server.serve", accepted)


# (file name, content, what the one line says)
CASES = [
    ("binary.yaml", b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not UTF-8 text (byte 0x89 at offset 0)"),
    ("latin1.yaml", "server: {host: caf\xe9}\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    ("deep.yaml", DEEP.encode(), "nested too deeply"),
    ("deep.json", ("[" * 100_000 + "]" * 100_000).encode(), "nested too deeply"),
]


@pytest.mark.parametrize(("name", "content", "expected"), CASES, ids=[c[0] for c in CASES])
def test_unreadable_files_are_one_line_for_the_service_and_the_scaler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for main in (lambda: app_main(["serve", "--config", str(path)]),
                 lambda: autoscale_main(["--config", str(path), "--check"])):  # fmt: skip
        assert main() == 2
        err = capsys.readouterr().err
        assert f"{path}: " in err and expected in err, err
        assert "Traceback" not in err
        assert all(len(line) < 1000 for line in err.splitlines())


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("server: {grace_s: true}\n", "server.grace_s: Input should be a number, not a boolean (got True)"),
        ("features: {max_gap_s: false}\n", "features.max_gap_s: Input should be a number, not a boolean"),
        ("ingest: {size_max: true}\n", "ingest.size_max: Input should be a number, not a boolean"),
        ("sharding: {shards: true}\n", "sharding.shards: Input should be a number, not a boolean"),
        ("server: {host: ''}\n", "server.host: not an IP address or a DNS name (got '')"),
        ("server: {host: 'not a host!'}\n", "server.host: not an IP address or a DNS name"),
        ("kserve: {url: 'triton:99999'}\n", "kserve.url: not host:port with a port 1 to 65535 (got 'triton:99999')"),
        ("kserve: {url: 'triton:0'}\n", "kserve.url: not host:port with a port 1 to 65535"),
        ("features: {symbol_venues: {2000: XNYS}}\n", "features.symbol_venues.2000: not a symbol id (got 2000); allowed: 0 to 999"),
        ("features: {symbol_venues: {5: XXXX}}\n", "features.symbol_venues.5: venue = 'XXXX': unknown exchange calendar"),
    ],
)  # fmt: skip
def test_wrong_values_are_refused_by_the_serve_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, expected: str
) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml_text)
    assert app_main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: {expected}" in err, err
    assert all(line.startswith("error: ") for line in err.splitlines()), err


@pytest.mark.parametrize("main", [autoscale_main, alerting_main], ids=["scaler", "detector"])
def test_every_problem_of_a_scaler_or_detector_file_is_its_own_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], main: Any
) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text("regions: 5\nmin_replicas: -1\nfoo: 2\n")
    assert main(["--config", str(path), "--check"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines  # the missing URL, regions, and the two unknown keys
    assert all(line.startswith(f"error: {path}: ") for line in lines), lines
    assert any("regions: Input should be a valid tuple (got 5)" in line for line in lines)
    assert any("foo: unknown key (got 2)" in line for line in lines)


def test_a_number_as_a_string_and_good_hosts_stay_accepted(tmp_path: Path) -> None:
    from app.config import load_config

    path = tmp_path / "serve.yaml"
    path.write_text("batcher: {max_batch_size: '32'}\nserver: {host: '::'}\n"
                    "kserve: {url: '[::1]:8001'}\n")  # fmt: skip
    config = load_config(path)
    assert config.batcher.max_batch_size == 32 and config.server.host == "::"
    for host in ("0.0.0.0", "localhost", "signal-service.signal.svc.cluster.local", "[::1]"):
        assert load_config(None, {"server.host": host}).server.host == host


class Counted:
    shown = 0

    def __repr__(self) -> str:
        Counted.shown += 1
        return "c"


def test_a_value_is_shown_without_building_all_of_it() -> None:
    nested: list[object] = [Counted()] * 10
    for _ in range(4):  # 10**5 leaves, each shown as 3 characters
        nested = [nested] * 10
    text = show(nested)
    assert text.startswith("[[[[[c, c") and text.endswith("...") and len(text) == 120
    assert Counted.shown < 60  # only what fits the line, not 100,000 reprs
    looped: list[object] = []
    looped.append(looped)
    assert len(show(looped)) == 120
    for value in (1, "x" * 200, [1, (2,)], (1, 2), {"a": [1.5, None]}, {1: True}):
        full = repr(value)
        assert show(value) == (full if len(full) <= 120 else full[:117] + "...")


def _two_gib_at_most() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("module", ["app", "app.autoscale"])
def test_yaml_aliases_standing_for_a_billion_strings_answer_in_seconds(
    tmp_path: Path, module: str
) -> None:
    """A fresh process with a deadline and a memory cap: printing the value in full would take
    gigabytes and never finish."""
    path = tmp_path / "laughs.yaml"
    path.write_text(_billion_laughs(9))
    args = ["serve", "--config", str(path)] if module == "app" else ["--config", str(path)]
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=60, preexec_fn=_two_gib_at_most)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{path}: junk: unknown key (got [['lol', 'lol'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rate", "nan", "--seconds", "1"], "argument --rate: nan is not between 0.001 and 1e+07"),
        (["--rate", "10", "--seconds", "inf"], "argument --seconds: inf is not between"),
        (["--rate", "1e308", "--seconds", "1"], "argument --rate: 1e308 is not between"),
        (["--rate", "10", "--seconds", "1", "--symbols", "0"], "argument --symbols: 0 is not between 1"),
        (["--rate", "10", "--seconds", "1", "--batch-size", "1.5"], "argument --batch-size: '1.5' is not an integer"),
        (["--rate", "1e7", "--seconds", "100"], "--rate x --seconds = 1e+09 ticks; a replay sends at most 20,000,000"),
        (["--rate", "10", "--seconds", "1", "--tls-ca", "/no/such/ca.pem"], "argument --tls-ca: /no/such/ca.pem: no such file"),
    ],
)  # fmt: skip
def test_replay_arguments_out_of_range_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit) as done:
        app_main(["replay", *args])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
