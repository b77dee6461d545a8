"""The alert rules (roles/monitoring/files/rules/) under promtool: the file is valid, every rule has a
`for:` and a summary naming the host, tests/promtool/ tests every rule, and those tests sit at the
threshold's edge: loosening any comparison by its equality (> to >=, < to <=) makes them fail."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

RULES = ROOT / "roles" / "monitoring" / "files" / "rules" / "asset.rules.yml"
TESTS = ROOT / "tests" / "promtool" / "asset.rules.test.yml"
PROMTOOL = ROOT / ".build" / "bin" / "promtool"  # scripts/promtool.sh (make setup) puts it there


# Where equality cannot be the edge: availability counts scrapes, and one failed scrape in the hour's
# 3601 moves it by 0.028 %; the tests have 4 failures fire (99.889 %) and 3 not (99.917 %).
THRESHOLD_MUTATIONS = {"ApiAvailabilityLow": ("< 0.999", "< 0.9992")}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.exists(), "no .build/bin/promtool: run make setup (scripts/promtool.sh)"
    return subprocess.run([str(PROMTOOL), *map(str, args)], capture_output=True, text=True, check=False)


def run_tests(rules_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """promtool test rules on TESTS with rule_files pointing at rules_file."""
    spec = yaml.safe_load(TESTS.read_text())
    spec["rule_files"] = [str(rules_file)]
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(spec))
    return promtool("test", "rules", test_file)


def test_rules_file_is_valid() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_for_and_a_summary_naming_the_host() -> None:
    for rule in rules():
        assert rule.get("for"), rule["alert"]
        assert "$labels.instance" in rule["annotations"]["summary"], rule["alert"]


def test_every_rule_is_tested_firing_and_not_firing() -> None:
    spec = yaml.safe_load(TESTS.read_text())
    tested = {case["alertname"] for test in spec["tests"] for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in rules()}
    for test in spec["tests"]:
        # each test fires, and feeds at least one subject that must not: more label sets (without
        # the metric name and le) than alerts at an eval time, or an eval time with no alert
        subjects = {re.sub(r'^[^{]*|,?le="[^"]*"', "", s["series"]) for s in test["input_series"]}
        cases = test["alert_rule_test"]
        assert any(c["exp_alerts"] for c in cases), test["name"]
        assert any(len(c["exp_alerts"]) < len(subjects) for c in cases), test["name"]


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    result = run_tests(RULES, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", [rule["alert"] for rule in rules()])
def test_the_tests_sit_at_the_threshold_edge(alert: str, tmp_path: Path) -> None:
    """Mutate one rule: its last comparison takes in equality (or, for `== 0`, its `for:` doubles);
    the unit tests must notice."""
    spec = yaml.safe_load(RULES.read_text())
    rule = next(r for g in spec["groups"] for r in g["rules"] if r["alert"] == alert)
    expr = rule["expr"]
    if alert in THRESHOLD_MUTATIONS:
        old, new = THRESHOLD_MUTATIONS[alert]
        assert old in expr
        expr = expr.replace(old, new + " ")
    position = max(expr.rfind(" > "), expr.rfind(" < "))
    if alert in THRESHOLD_MUTATIONS:
        rule["expr"] = expr
    elif position >= 0:
        rule["expr"] = expr[: position + 2] + "=" + expr[position + 2 :]
    else:
        value, unit = re.fullmatch(r"(\d+)([smh])", rule["for"]).groups()
        rule["for"] = f"{int(value) * 2}{unit}"
    mutated = tmp_path / "mutated.rules.yml"
    mutated.write_text(yaml.safe_dump(spec))
    assert promtool("check", "rules", mutated).returncode == 0
    result = run_tests(mutated, tmp_path)
    assert result.returncode != 0, f"{alert}: the tests pass with a loosened rule ({rule['expr']!r}, for {rule['for']})"
    assert "FAILED" in result.stdout + result.stderr


def test_promtool_comes_from_setup() -> None:
    assert "scripts/promtool.sh" in (ROOT / "Makefile").read_text()
