"""The PromQL of a Grafana dashboard (roles/monitoring/files/dashboards/), as Prometheus can run it.

Grafana substitutes its variables before it sends a query; Prometheus cannot. `panel_expressions`
returns every target's `expr` with them replaced by the values of VARIABLES:

- `$__rate_interval` -> `1m`: what Grafana computes for the toolkit's 15 s scrape interval
  (max(4 x scrape interval, interval + scrape interval)); `$__interval` -> `15s`, `$__range` -> `1h`.
- `$instance` (the dashboard's host variable, multi-value with All) -> `.*`: its All value
  (`allValue` in the JSON), i.e. every host.
- `$datasource` is not in any expression (it picks the panels' data source); it is replaced by
  `prometheus` should one use it.

Both `$name` and `${name}` forms are replaced; `${1}` (a label_replace back-reference, which Grafana
leaves alone too: no variable has that name) stays, and any other variable without a value here is an
error. Used by tests/test_dashboard.py (offline: syntax with
promtool, metric names) and molecule/fullstack/tests/test_dashboard.py (every expression against the
scenario's running Prometheus).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "instance": ".*",
    "datasource": "prometheus",
}

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")

# What is not a metric name in PromQL: aggregation and binary-operator keywords, and the label
# lists that follow by/without/on/ignoring/group_left/group_right.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "bool", "offset", "inf", "nan"}
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """expr with every Grafana variable replaced; an unknown variable raises KeyError."""
    values = VARIABLES if variables is None else variables

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name.isdigit():
            return match.group()  # a label_replace back-reference ("${1}xx"): no variable has that name
        if name not in values:
            raise KeyError(f"no documented value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but rows, including the panels of collapsed rows."""
    found = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            found += panels(panel)
        else:
            found.append(panel)
    return found


def load(path: Path | str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def panel_expressions(path: Path | str) -> list[tuple[str, str]]:
    """(panel title, expression with variables substituted) for every target of every panel."""
    return [(panel["title"], substitute(target["expr"]))
            for panel in panels(load(path)) for target in panel.get("targets", []) if "expr" in target]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (a small lexer, not a parser: enough for a dashboard's
    queries). Strings, label matchers, ranges and grouping label lists are dropped first; then every
    identifier that is neither a function call nor a keyword is a metric name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group()
        if text[match.end():].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue
        if match.start() and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3, 5m)
        names.add(word)
    return names
