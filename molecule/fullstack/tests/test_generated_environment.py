"""An environment made by the generator (scripts/new_environment.py over templates/environment/) is an
inventory site.yml runs with: its check mode against this scenario's hosts, as an operator would run it
(`ansible-playbook -i inventories/<env> playbooks/site.yml --check --diff` from the repository root),
fails on no host, reaches every host of every generated group, tells that its new secrets differ from
the running ones, and changes nothing on any host.

The scenario converges with its own group_vars (test-bed settings: the containers' network, no private
user namespaces, lifted rate limits); the generated environment keeps every generator default, so the
check reports the differences as changes, which is the point: a truthful check against real hosts.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testbed_plugin import PlaybookRun
from testbed_plugin import scenario_host as node

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
HOSTS = ("fullstack-web", "fullstack-app1", "fullstack-app2", "fullstack-data")
# What site.yml writes on a host: the roles' configuration and the service's tree (not its logs).
WRITTEN = "/etc /opt/asset-classes-api /usr/local"
MARKER = "/tmp/.before-generated-check"
# The fullstack's admin (a public key with no private half anywhere), so the check sees the same user.
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBpRmEBq3HF1JgLnxw1ewpO1pH4XQMKPZrHXwhKzm8o5 molecule@testbed"


def operator_env() -> dict[str, str]:
    """The environment of an operator's shell: none of the ANSIBLE_* settings Molecule gives the verifier,
    so ansible-playbook reads the repository's ansible.cfg (roles, plugins) as it does for a user."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "MOLECULE_"))}
    return dict(env, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    work = tmp_path_factory.mktemp("generated")
    password_file = work / "vault-password"
    password_file.write_text(secrets.token_urlsafe(24) + "\n")
    key_file = work / "opsadmin.pub"
    key_file.write_text(ADMIN_KEY + "\n")
    create = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "new_environment.py"), "create", "testbed", "--into", str(work),
         "--domain", "fullstack.test", "--web", "fullstack-web", "--app", "fullstack-app1,fullstack-app2",
         "--redis", "fullstack-data", "--db", "fullstack-data", "--monitoring", "fullstack-web",
         "--network", "172.16.0.0/12", "--admin", f"opsadmin={key_file}",
         "--alert-webhook-url", "http://127.0.0.1:9099/alerts",
         "--vault-password-file", str(password_file)],
        capture_output=True, text=True, check=False, env=operator_env())
    assert create.returncode == 0, create.stdout + create.stderr
    return work / "testbed", password_file


@pytest.fixture(scope="module")
def check_run(generated) -> PlaybookRun:
    inventory, password_file = generated
    for name in HOSTS:
        node(name).check_output(f"touch {MARKER}")
    # The test bed reaches its containers through Docker as root; the generated inventory says how a
    # real one is reached (ssh as the first admin, with sudo). A second inventory source sets only that,
    # per host (as host vars: an extra var would also send the controller's delegated tasks to Docker).
    connection = inventory.parent / "testbed-connection.yml"
    connection.write_text(yaml.safe_dump({"all": {"hosts": {
        name: {"ansible_connection": "community.docker.docker", "ansible_user": "root"} for name in HOSTS}}}))
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "-i", str(connection), "playbooks/site.yml", "--check", "--diff",
         "--vault-password-file", str(password_file)],
        cwd=ROOT, capture_output=True, text=True, check=False,
        # A fact cache of its own: the repository's .cache/facts may hold an older run's containers.
        env=dict(operator_env(), ANSIBLE_CACHE_PLUGIN_CONNECTION=str(inventory.parent / "facts")))
    return PlaybookRun(rc=proc.returncode, output=proc.stdout + proc.stderr)


def test_site_check_mode_passes_on_every_host_of_the_generated_inventory(check_run):
    assert check_run.rc == 0, check_run.output[-6000:]
    recap = check_run.recap()
    assert set(recap) == set(HOSTS), recap
    for name, counts in recap.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, (name, counts)


def test_the_check_reports_the_generated_secrets_as_changes(check_run):
    # New Redis and database passwords than the running ones: a check that compares with the hosts says so.
    assert check_run.recap()["fullstack-data"]["changed"] > 0, check_run.output[-6000:]


def test_the_check_changed_nothing_on_any_host(check_run):
    assert check_run.rc == 0, check_run.output[-3000:]
    for name in HOSTS:
        find = f"find {WRITTEN} -xdev -newer {MARKER} -not -type d -print 2>/dev/null || true"
        touched = node(name).check_output(find)
        assert touched.strip() == "", f"{name}: the check wrote {touched}"
