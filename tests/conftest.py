"""Shared helpers for the toolkit's own tests (roles, templates, playbooks, pins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())


def load_yaml(path: Path) -> Any:
    with path.open() as stream:
        return yaml.safe_load(stream)


def role_defaults(role: str) -> dict[str, Any]:
    path = ROOT / "roles" / role / "defaults" / "main.yml"
    return (load_yaml(path) or {}) if path.exists() else {}


def role_spec_options(role: str) -> dict[str, Any]:
    spec = load_yaml(ROOT / "roles" / role / "meta" / "argument_specs.yml")
    return spec["argument_specs"]["main"].get("options") or {}
