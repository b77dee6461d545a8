"""The needs_write filter skips a task only when its path is already exactly as the task would leave it."""

from __future__ import annotations

import hashlib
import importlib.util

import pytest
from ansible.errors import AnsibleFilterError
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("needs_write", ROOT / "plugins" / "filter" / "needs_write.py")
assert _spec and _spec.loader
needs_write_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(needs_write_module)
needs_write = needs_write_module.needs_write

CONTENT = "net.core.somaxconn = 4096\n"
FOUND = {
    "paths": {
        "/etc/a.conf": {"type": "file", "mode": "0644", "owner": "root", "group": "root",
                        "checksum": hashlib.sha1(CONTENT.encode()).hexdigest()},
        "/etc/d": {"type": "directory", "mode": "2755", "owner": "root", "group": "systemd-journal"},
        "/etc/link": {"type": "link", "mode": "0777", "owner": "root", "group": "root"},
    },
    "missing": ["/etc/missing.conf"],
}


def test_file_in_place_is_skipped():
    assert needs_write(FOUND, "/etc/a.conf", CONTENT, "0644") is False


def test_directory_in_place_is_skipped():
    assert needs_write(FOUND, "/etc/d", mode="2755", group="systemd-journal") is False


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (("/etc/missing.conf", CONTENT, "0644"), {}),  # not there yet
        (("/etc/a.conf", CONTENT + "# drift\n", "0644"), {}),  # other content
        (("/etc/a.conf", CONTENT.rstrip("\n"), "0644"), {}),  # a lost trailing newline is a difference
        (("/etc/a.conf", CONTENT, "0640"), {}),  # other mode
        (("/etc/a.conf", CONTENT, "0644"), {"group": "redis"}),  # other group
        (("/etc/a.conf", CONTENT, "0644"), {"owner": "nobody"}),  # other owner
        (("/etc/a.conf",), {"mode": "0644"}),  # a directory is wanted where a file is
        (("/etc/d", CONTENT), {}),  # a file is wanted where a directory is
        (("/etc/link", CONTENT), {}),  # a link is never taken for the file
        (("/etc/d",), {"mode": "0755", "group": "systemd-journal"}),  # setgid bit lost
    ],
)
def test_any_difference_runs_the_task(args, kwargs):
    assert needs_write(FOUND, *args, **kwargs) is True


def test_a_path_the_role_did_not_read_is_an_error():
    with pytest.raises(AnsibleFilterError, match="/etc/unlisted.conf was not read by path_state"):
        needs_write(FOUND, "/etc/unlisted.conf", CONTENT, "0644")
