"""The app role's DATABASE_URL comes from the inventory: the db group's first host and the same
postgresql_* variables the postgresql role reads (its defaults where the inventory sets none); no db
host means SQLite. Bad database inputs fail at argument validation or in the preflight, before any
host is touched: the inventories' hosts are TEST-NET addresses nobody answers on, and the runs never
connect (argument validation, assert and debug run on the controller)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.parsing.vault import VaultLib, VaultSecret
from conftest import ROOT, role_defaults

BIN = Path(sys.executable).parent
SECRET_KEY = "k" * 40
PG = role_defaults("postgresql")

# The role's vars as a run sees them, without a task that touches a host: the role (argument
# validation only, --tags) or its preflight with the facts it reads given, then DATABASE_URL.
PROBE = """
- name: Probe the app role
  hosts: app
  gather_facts: false
  roles:
    - role: app
  post_tasks:
    - name: DATABASE_URL
      ansible.builtin.debug:
        msg: "DATABASE_URL={{ __app_env.DATABASE_URL }}"
      vars:
        role_path: "%(role_path)s"
      tags: [probe]
"""
PREFLIGHT = """
- name: The app role's preflight on the controller
  hosts: app
  gather_facts: false
  vars:
    ansible_python: {version: {major: 3, minor: 11, micro: 2}}
    ansible_local: {}
  tasks:
    - name: Preflight
      ansible.builtin.include_role:
        name: app
        tasks_from: preflight
"""


def inventory(tmp_path: Path, db_vars: dict | None, *, db_hosts=("db-1",)) -> Path:
    root = tmp_path / "inventory"
    (root / "group_vars" / "db").mkdir(parents=True)
    (root / "group_vars" / "all").mkdir(parents=True)
    hosts = {"all": {"children": {
        "app": {"hosts": {"app-1": {"ansible_host": "192.0.2.21"}}},
        "db": {"hosts": {name: {"ansible_host": f"192.0.2.{41 + i}"} for i, name in enumerate(db_hosts)}},
    }}}
    (root / "hosts.yml").write_text(yaml.safe_dump(hosts))
    vault = {"vault_db_password": "s3cret/with@odd:chars%"}
    (root / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(vault))
    if db_vars is not None:
        (root / "group_vars" / "db" / "postgresql.yml").write_text(yaml.safe_dump(db_vars))
    return root


def run(tmp_path: Path, inv: Path, play: str, *extra: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "probe.yml"
    playbook.write_text(play % {"role_path": ROOT / "roles" / "app"})
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(playbook),
                           "-e", f"app_secret_key={SECRET_KEY}", *extra],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)


def database_url(tmp_path: Path, inv: Path, *extra: str) -> str:
    result = run(tmp_path, inv, PROBE, "--tags", "probe", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split("DATABASE_URL=")[1].split()[0]


def test_the_url_points_at_the_db_host_with_the_postgresql_roles_defaults_and_the_vault_password(tmp_path):
    inv = inventory(tmp_path, {"postgresql_app_password": "{{ vault_db_password }}"})
    user, port, name = PG["postgresql_app_user"], PG["postgresql_port"], PG["postgresql_db_name"]
    assert database_url(tmp_path, inv) == \
        f"postgresql+psycopg://{user}:s3cret%2Fwith%40odd%3Achars%25@192.0.2.41:{port}/{name}"


def test_the_url_follows_the_postgresql_variables_the_inventory_sets(tmp_path):
    inv = inventory(tmp_path, {"postgresql_app_password": "{{ vault_db_password }}", "postgresql_port": 6543,
                               "postgresql_db_name": "other_db", "postgresql_app_user": "other_user",
                               "postgresql_tls_enabled": True}, db_hosts=("db-1", "db-2"))
    assert database_url(tmp_path, inv) == \
        "postgresql+psycopg://other_user:s3cret%2Fwith%40odd%3Achars%25@192.0.2.41:6543/other_db?sslmode=require"


def test_without_a_db_host_the_service_keeps_sqlite_in_its_state_dir(tmp_path):
    inv = inventory(tmp_path, None, db_hosts=())
    assert database_url(tmp_path, inv, "-e", "app_state_dir=/srv/state") == "sqlite:////srv/state/asset_classes.db"


def test_a_url_of_your_own_wins(tmp_path):
    inv = inventory(tmp_path, {"postgresql_app_password": "{{ vault_db_password }}"})
    own = "postgresql+psycopg://u:p@elsewhere:5432/d"
    assert database_url(tmp_path, inv, "-e", f"app_database_url={own}") == own


@pytest.mark.parametrize("name", ["app_db_pool_size", "app_db_max_overflow", "app_db_connection_timeout"])
def test_a_database_number_that_is_not_a_number_fails_argument_validation(tmp_path, name):
    inv = inventory(tmp_path, {"postgresql_app_password": "{{ vault_db_password }}"})
    result = run(tmp_path, inv, PROBE, "--tags", "probe", "-e", f"{name}=many")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Validating arguments against arg spec" in output and name in output, output
    assert "DATABASE_URL=" not in output
    assert "UNREACHABLE" not in output


def test_a_db_host_without_the_app_password_fails_in_preflight(tmp_path):
    inv = inventory(tmp_path, {})
    result = run(tmp_path, inv, PREFLIGHT)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "DATABASE_URL points at db-1" in output and "no postgresql_app_password" in output, output
    assert "UNREACHABLE" not in output


def test_the_preflight_passes_with_the_password(tmp_path):
    """The same run as above with the password: the failure above is the missing password, nothing else."""
    inv = inventory(tmp_path, {"postgresql_app_password": "{{ vault_db_password }}"})
    result = run(tmp_path, inv, PREFLIGHT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sandbox_has_no_db_host_and_keeps_sqlite(tmp_path):
    # The sandbox's other secrets are generated on first use: into tmp_path, not into .cache/sandbox.
    url = database_url(tmp_path, ROOT / "inventories" / "local" / "hosts.yml", "-e", f"sandbox_secrets_dir={tmp_path}")
    assert url == "sqlite:////var/lib/asset-classes-api/asset_classes.db"


def test_the_staging_example_points_the_app_at_its_db_host_with_the_vaults_password(tmp_path):
    """The generator's output (inventories/staging, templates/README.md): DATABASE_URL needs no line of its own."""
    password = re.search(r"throw-away password `([^`]+)`", (ROOT / "templates" / "README.md").read_text()).group(1)
    (tmp_path / "vault-password").write_text(password + "\n")
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password.encode()))])
    inv = ROOT / "inventories" / "staging"
    secrets = yaml.safe_load(vault.decrypt((inv / "group_vars" / "all" / "vault.yml").read_bytes()))
    db_password = secrets["vault_db_password"]
    assert "app_database_url" not in (inv / "group_vars" / "app" / "app.yml").read_text()
    url = database_url(tmp_path, inv, "--vault-password-file", str(tmp_path / "vault-password"))
    assert url == f"postgresql+psycopg://asset_classes:{db_password}@192.0.2.41:5432/asset_classes"
