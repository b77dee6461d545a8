"""Pytest plugin shared by every Molecule scenario's Testinfra tests.

Testinfra checks what is on a host; some behaviour can only be shown by running the play again:
bad input must fail before any host is touched, a broken config must fail the play and leave the
old service running, and check mode must report no change on a converged host. The
``ansible_playbook`` fixture runs the scenario's own converge playbook against the scenario's own
inventory, with the environment Molecule gave the verifier (ANSIBLE_CONFIG, roles path, ...).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                        r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)")


@dataclass
class PlaybookRun:
    """The outcome of one ansible-playbook run."""

    rc: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host, e.g. {"redis-debian12": {"changed": 0, ...}}."""
        result = {}
        for line in self.output.splitlines():
            match = RECAP_LINE.match(line.strip())
            if match:
                counts = match.groupdict()
                host = counts.pop("host")
                result[host] = {key: int(value) for key, value in counts.items()}
        return result


def _run(playbook: Path, extra_vars: dict[str, Any] | None, check: bool,
         limit: str | None, tags: str | None) -> PlaybookRun:
    command = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook)]
    if extra_vars:
        command += ["--extra-vars", json.dumps(extra_vars)]
    if check:
        command += ["--check", "--diff"]
    if limit:
        command += ["--limit", limit]
    if tags:
        command += ["--tags", tags]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    return PlaybookRun(rc=proc.returncode, output=proc.stdout + proc.stderr)


def scenario_host(name: str):
    """A Testinfra host of the scenario by its instance name (multi-host tests pick hosts by name)."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


@pytest.fixture(scope="session")
def ansible_playbook() -> Callable[..., PlaybookRun]:
    """Run the scenario's converge playbook (or another playbook of the scenario) again.

    Usage: ``ansible_playbook(extra_vars={"redis_port": "x"}, check=False, limit=None)``.
    """
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])

    def run(extra_vars: dict[str, Any] | None = None, *, check: bool = False,
            limit: str | None = None, tags: str | None = None,
            playbook: str = "converge.yml") -> PlaybookRun:
        return _run(scenario / playbook, extra_vars, check, limit, tags)

    return run
