"""The project's own wiring: pins, playbooks, the README's commands."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import ROOT


def test_every_direct_pin_is_in_the_lock():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
            for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    for pin in pins:
        name, version = re.split(r"==", pin.split(";")[0])
        name = re.sub(r"\[.*\]", "", name).strip().lower().replace("_", "-")
        assert lock.get(name) == version.strip(), f"{pin} is not what requirements.lock installs ({lock.get(name)})"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    assert re.search(r"^make test$", ci, re.M)


@pytest.mark.parametrize("playbook", sorted(p.name for p in (ROOT / "playbooks").glob("*.yml")))
def test_playbook_syntax(playbook):
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    result = subprocess.run([ansible_playbook, "--syntax-check", f"playbooks/{playbook}"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_collection_the_repository_uses_is_in_requirements_yml():
    """People who install from Galaxy get exactly what the roles call (FQCN modules and filters)."""
    listed = {c["name"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    used = set()
    for path in [*ROOT.glob("roles/**/*.yml"), *ROOT.glob("playbooks/*.yml"), *ROOT.glob("molecule/**/*.yml")]:
        pattern = r"\b((?:ansible\.(?:posix|utils|netcommon))|community\.[a-z_]+)\.[a-z_]+"
        used |= set(re.findall(pattern, path.read_text()))
    assert used, "no collection found: the pattern is wrong"
    assert not used - listed, f"used but not in requirements.yml: {used - listed}"
