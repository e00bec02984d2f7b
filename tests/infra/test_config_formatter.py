"""One formatter for every config loader: the stack config, the cost settings, the scaler's and
the detector's configs all say `file: key.path: message (got value); allowed: ...`, refuse
non-finite numbers, and read their files strictly."""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from app.alerting import config as alerting_config
from app.alerting.__main__ import main as alerting_main
from app.autoscale import config as autoscale_config
from app.autoscale.__main__ import main as autoscale_main
from app.config import AppConfig
from app.config_errors import (
    CamelConfigModel,
    ConfigError,
    Problem,
    load_model,
    read_config_file,
)
from app.model.build import BuildOptions
from infra.config import CostSettings, StackConfig
from tools.cost import usage_from_values


class Pool(CamelConfigModel):
    min_nodes: int = 0
    max_nodes: int = Field(default=3, ge=1)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if self.min_nodes > self.max_nodes:
            yield Problem("minNodes", "above maxNodes", self.min_nodes, "<= maxNodes")
        if context.get("strict") and self.min_nodes == 0:
            yield Problem("minNodes", "zero in strict mode", 0, ">= 1")


class Cluster(CamelConfigModel):
    name: str
    pools: tuple[Pool, ...] = ()
    by_region: dict[str, Pool] = Field(default_factory=dict)
    share: float = 0.5


def problems(data: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_model(Cluster, "cluster.yaml", data, **kwargs)
    return str(exc.value).splitlines()


def test_a_rules_problem_lands_at_its_own_key_under_its_models_path():
    lines = problems({"name": "c", "pools": [{}, {"minNodes": 5, "maxNodes": 2}]}, root="ns:")
    assert lines == [
        "cluster.yaml: ns:pools[1].minNodes: above maxNodes (got 5); allowed: <= maxNodes"
    ]
    lines = problems({"name": "c", "byRegion": {"eu": {"minNodes": 9}}})
    assert lines == [
        "cluster.yaml: byRegion.eu.minNodes: above maxNodes (got 9); allowed: <= maxNodes"
    ]


def test_rules_see_the_loaders_context():
    lines = problems({"name": "c", "pools": [{}]}, context={"strict": True})
    assert lines == ["cluster.yaml: pools[0].minNodes: zero in strict mode (got 0); allowed: >= 1"]


def test_pydantics_own_errors_say_what_is_allowed():
    lines = problems({"pools": [{"maxNodes": 0, "maxNodez": 1}], "share": float("nan")})
    assert "cluster.yaml: name: required key is missing" in lines
    assert (
        "cluster.yaml: pools[0].maxNodes: Input should be greater than or equal to 1 (got 0); allowed: >= 1"
        in lines
    )
    assert (
        "cluster.yaml: pools[0].maxNodez: unknown key, did you mean maxNodes? (got 1);"
        " allowed: minNodes, maxNodes" in lines
    )
    assert (
        "cluster.yaml: share: Input should be a finite number (got nan); allowed: a finite number"
        in lines
    )


def test_a_secure_value_where_a_plain_one_is_expected_says_it_cannot_be_a_secret():
    # How a Pulumi stack file's `key: {secure: <ciphertext>}` reaches a model.
    secret = {"secure": "AAABAKz0xq1y"}
    lines = problems({"name": secret, "share": secret, "pools": [{"maxNodes": secret}]})
    assert len(lines) == 3
    for path in ("name", "share", "pools[0].maxNodes"):
        line = next(line for line in lines if line.startswith(f"cluster.yaml: {path}: "))
        assert "cannot be a secret: secure values cannot be read offline" in line, line
        assert "valid" not in line  # not pydantic's "Input should be a valid number"
        assert line.endswith("(got {'secure': 'AAABAKz0xq1y'}); allowed: the value in plain text")
    # A whole section given as a secret: that line alone, not "unknown key 'secure'".
    (section,) = problems({"name": "c", "byRegion": {"r1": secret}})
    assert section.startswith("cluster.yaml: byRegion.r1: cannot be a secret: ")
    # A mapping that merely has a `secure` key among others is judged as itself.
    (other,) = problems({"name": "c", "share": {"secure": "x", "other": 1}})
    assert "cannot be a secret" not in other and "valid number" in other


def test_the_same_problem_found_twice_is_one_line():
    problem = Problem("pools[0].machineType", "too small for its largest pod", "e2-medium", "more")
    other = Problem("pools[1].machineType", "too small for its largest pod", "e2-medium", "more")
    error = ConfigError("stack.yaml", [problem, other, problem, Problem(**vars(problem))])
    assert error.problems == [problem, other]
    assert str(error).splitlines() == [f"stack.yaml: {problem}", f"stack.yaml: {other}"]


def test_long_values_are_cut():
    (line,) = problems({"name": "c", "share": "x" * 500})
    assert len(line) < 300 and "...'" not in line and "..." in line


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("a.yaml", "a: 1\na: 2\n", "a.yaml:2:1: not valid YAML: key 'a' is given twice"),
        ("b.yaml", "a: [1, 2\n", "b.yaml:2:1: not valid YAML:"),
        (
            "c.yaml",
            "- 1\n- 2\n",
            "c.yaml: the top level is a list (got [1, 2]); allowed: a mapping",
        ),
        ("d.json", '{"a": 1,}', "d.json:1:9: not JSON: Expecting property name"),
        ("e.yaml", "", None),
    ],
)
def test_files_are_read_strictly(tmp_path: Path, name: str, text: str, fragment: str | None):
    path = tmp_path / name
    path.write_text(text)
    if fragment is None:
        assert read_config_file(path) == {}
        return
    with pytest.raises(ConfigError) as exc:
        read_config_file(path)
    assert str(exc.value).startswith(str(tmp_path)) and fragment in str(exc.value), exc.value


def test_a_missing_file_is_one_line(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot be read \(No such file"):
        read_config_file(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- the services' loaders


@pytest.mark.parametrize(
    ("module", "main"),
    [(autoscale_config, autoscale_main), (alerting_config, alerting_main)],
)
def test_the_services_configs_refuse_cleanly_through_their_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], module: Any, main: Any
):
    path = tmp_path / "service.yaml"
    path.write_text(
        "prometheusUrl: http://prometheus:9090\n"
        "regions: [us-east4]\n"
        "queryTimeoutSeconds: .nan\n"
        "listenPort: 0\n"
    )
    with pytest.raises(ConfigError) as exc:
        module.load(path)
    assert f"{path}: queryTimeoutSeconds: Input should be a finite number (got nan)" in str(
        exc.value
    )
    assert (
        f"{path}: listenPort: Input should be greater than or equal to 1 (got 0); allowed: >= 1"
        in str(exc.value)
    )
    path.write_text("regions: [us-east4]\nregions: [europe-west4]\n")
    assert main(["--config", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:1: not valid YAML: key 'regions' is given twice" in err
    assert "Traceback" not in err


def test_without_a_config_the_services_say_how_to_give_one():
    with pytest.raises(ConfigError, match="pass --config FILE or set SIGNAL_ALERTING_CONFIG"):
        alerting_config.load(None, env={})


def test_non_finite_policy_values_are_refused_in_nested_models(tmp_path: Path):
    path = tmp_path / "scaler.yaml"
    path.write_text(
        "prometheusUrl: http://p:9090\nregions: [us-east4]\npolicy: {targetUtilisation: .inf}\n"
    )
    with pytest.raises(ConfigError, match=r"policy\.targetUtilisation: Input should be a finite"):
        autoscale_config.load(path)


# ---------------------------------------------------------------- the cost settings


def test_cost_settings_use_the_same_formatter():
    values = {"p:cost": '{"averageNodes": {"system": NaN}, "spotShre": 1}', "p:budget": "{}"}
    with pytest.raises(ConfigError) as exc:
        usage_from_values(values, "p", "Pulumi.s.yaml")
    lines = str(exc.value).splitlines()
    assert (
        "Pulumi.s.yaml: p:cost.averageNodes.system: Input should be a finite number (got nan); allowed: a finite number"
        in lines
    )
    assert any(
        line.startswith("Pulumi.s.yaml: p:cost.spotShre: unknown key, did you mean spotShare?")
        for line in lines
    )


@pytest.mark.parametrize("monthly", ["NaN", "Infinity", "-5", '"lots"'])
def test_a_budget_the_estimate_cannot_compare_with_is_refused(monthly: str):
    with pytest.raises(ConfigError) as exc:
        usage_from_values({"p:budget": f'{{"monthlyUsd": {monthly}}}'}, "p", "Pulumi.s.yaml")
    assert str(exc.value).startswith("Pulumi.s.yaml: p:budget.monthlyUsd: not a budget (got ")
    assert str(exc.value).endswith("allowed: a finite number > 0")


# ---------------------------------------------------------------- every model


def models_under(root: type[BaseModel]) -> set[type[BaseModel]]:
    """Every model a root's fields reach."""
    seen: set[type[BaseModel]] = set()

    def visit(annotation: Any) -> None:
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if is_model and annotation not in seen:
            seen.add(annotation)
            for field in annotation.model_fields.values():
                visit(field.annotation)
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(root)
    return seen


@pytest.mark.parametrize(
    "root",
    [
        StackConfig,
        CostSettings,
        autoscale_config.AutoscaleConfig,
        alerting_config.AlertingConfig,
        AppConfig,
        BuildOptions,
    ],
)
def test_every_model_of_these_loaders_refuses_non_finite_numbers(root: type[BaseModel]):
    models = models_under(root)
    assert root in models
    lax = sorted(m.__name__ for m in models if m.model_config.get("allow_inf_nan", True))
    assert lax == [], f"models accepting NaN/inf: {lax}"
