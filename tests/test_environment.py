"""The environment generator (scripts/new_environment.py over templates/environment/): what it makes
is an inventory Ansible reads, with every secret of templates/secrets.yml in an encrypted vault and
none in plain text; it refuses to overwrite an environment or to take bad input, and then writes
nothing. The real command runs once (a subprocess, from this repository's git tree); the other
renders use a plain copy of the template, which Copier renders without cloning."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.parsing.vault import VaultLib, VaultSecret
from conftest import ROOT, load_yaml
from yamllint.config import YamlLintConfig
from yamllint.linter import run as yamllint_run

_spec = importlib.util.spec_from_file_location("new_environment", ROOT / "scripts" / "new_environment.py")
assert _spec and _spec.loader
generator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generator)

BIN = Path(sys.executable).parent
SECRETS = load_yaml(ROOT / "templates" / "secrets.yml")["secrets"]
GENERATED = {name for name, item in SECRETS.items() if item["kind"] != "provided"}
# A public key with no private half anywhere (as in molecule/fullstack).
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBpRmEBq3HF1JgLnxw1ewpO1pH4XQMKPZrHXwhKzm8o5 molecule@testbed"
TIERS = {
    "web": "web-1=192.0.2.10,web-2=192.0.2.11",
    "app": "app-1=192.0.2.21,app-2=192.0.2.22",
    "redis": "redis-1=192.0.2.31",
    "db": "db-1=192.0.2.41",
    "monitoring": "mon-1=192.0.2.51",
    "backup": "mon-1=192.0.2.51",
}
HOSTS = {tier: [h.split("=")[0] for h in hosts.split(",")] for tier, hosts in TIERS.items()}


def tier_args(**overrides: str) -> list[str]:
    return [arg for tier, hosts in {**TIERS, **overrides}.items() if hosts for arg in (f"--{tier}", hosts)]


def tree_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        digest.update(str(item.relative_to(path)).encode())
        if item.is_file():
            digest.update(item.read_bytes())
    return digest.hexdigest()


def decrypt(path: Path, password: str) -> dict[str, str]:
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password.encode()))])
    return yaml.safe_load(vault.decrypt(path.read_bytes()))


def ansible(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def password_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vault") / "password"
    path.write_text(secrets.token_urlsafe(24) + "\n")
    return path


@pytest.fixture(scope="module")
def admin_key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("admin") / "alice.pub"
    path.write_text(ADMIN_KEY + "\n")
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The template as a plain directory: Copier renders it in place instead of cloning the repository."""
    path = tmp_path_factory.mktemp("template")
    shutil.copy(ROOT / "copier.yml", path)
    shutil.copytree(ROOT / "templates", path / "templates")
    return path


def run_generator(*args: str) -> tuple[int, str]:
    """The generator in this process (it changes directory to the template: put it back)."""
    out = io.StringIO()
    cwd = os.getcwd()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = generator.main(list(args))
    finally:
        os.chdir(cwd)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def made(tmp_path_factory, password_file, admin_key):
    """One environment made by the documented command, as a user runs it."""
    into = tmp_path_factory.mktemp("inventories")
    command = [sys.executable, str(ROOT / "scripts" / "new_environment.py"), "create", "shop",
               "--into", str(into), "--domain", "shop.example.com", *tier_args(),
               "--admin", f"alice={admin_key}", "--alert-webhook-url", "https://hooks.example.com/alerts",
               "--vault-password-file", str(password_file)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return into / "shop", command, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def vault_values(made, password_file) -> dict[str, str]:
    return decrypt(made[0] / "group_vars" / "all" / "vault.yml", password_file.read_text().strip())


def test_the_inventory_lists_every_group_and_host(made, password_file):
    result = ansible("ansible-inventory", "-i", str(made[0]), "--list", "--vault-password-file", str(password_file))
    assert result.returncode == 0, result.stderr
    listed = yaml.safe_load(result.stdout)
    for tier, hosts in HOSTS.items():
        assert sorted(listed[tier]["hosts"]) == sorted(hosts), tier
    assert listed["_meta"]["hostvars"]["app-2"]["ansible_host"] == "192.0.2.22"
    assert listed["_meta"]["hostvars"]["mon-1"]["monitoring_alertmanager_webhook_url"] == "https://hooks.example.com/alerts"
    assert "unable to parse" not in result.stderr.lower(), result.stderr


def test_site_playbook_syntax_check_passes_on_it(made, password_file):
    result = ansible("ansible-playbook", "-i", str(made[0]), "playbooks/site.yml", "--syntax-check",
                     "--vault-password-file", str(password_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_vault_is_encrypted_and_holds_every_generated_secret(made, vault_values):
    vault = made[0] / "group_vars" / "all" / "vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    assert oct(vault.stat().st_mode & 0o777) == "0o600"
    assert set(vault_values) == GENERATED
    for name in GENERATED:
        if SECRETS[name]["kind"] == "password":
            value = vault_values[name]
            assert len(value) == SECRETS[name]["length"] and set(value) <= set(string.ascii_letters + string.digits)
    assert len(set(vault_values.values())) == len(vault_values), "two secrets are the same"


def test_the_backup_recipient_is_the_public_half_of_the_vault_identity(made, vault_values):
    identity = vault_values["vault_backup_age_identity"]
    assert identity.startswith("AGE-SECRET-KEY-1")
    backup = load_yaml(made[0] / "group_vars" / "all" / "backup.yml")
    assert backup["backup_age_recipients"] == [generator.age_recipient(identity)]


def test_no_secret_appears_in_plain_text_anywhere(made, vault_values):
    path, _, output = made
    for name, value in vault_values.items():
        assert value not in output, f"the generator printed {name}"
        for item in path.rglob("*"):
            if item.is_file():
                assert value.encode() not in item.read_bytes(), f"{name} in plain text in {item.relative_to(path)}"


def test_a_second_run_fails_and_changes_nothing(made):
    path, command, _ = made
    before = tree_checksum(path.parent)
    rc, output = run_generator(*command[2:])
    assert rc == 2
    assert f"{path} already exists: nothing was changed" in output
    assert tree_checksum(path.parent) == before


@pytest.mark.parametrize(("change", "message"), [
    ({"name": ""}, "name '': use 1-63 lower-case letters"),
    ({"name": "../x"}, "name '../x': use 1-63 lower-case letters"),
    ({"domain": "shop example.com"}, "domain 'shop example.com': not a DNS name"),
    ({"app": ""}, "app: at least one host is needed"),
    ({"app": "app-1=192.0.2.300"}, "address '192.0.2.300' is not an IP address"),
    ({"web": "web-1"}, "give every web host its address"),
    ({"tls-mode": "acme"}, "acme mode needs --acme-email"),
    ({"alert-webhook-url": "hooks.example.com/alerts"}, "alert webhook url 'hooks.example.com/alerts': an http(s) URL"),
    ({"name": "../x", "app": ""}, "(it names the directory inventories/<name>); app: at least one host is needed"),
])
def test_bad_input_fails_with_a_clear_message_and_writes_nothing(tmp_path, template, password_file, change, message):
    options = {"name": "shop", "domain": "shop.example.com", **TIERS, **change}
    args = ["--template", str(template), "create", options.pop("name"), "--into", str(tmp_path / "inventories"),
            "--vault-password-file", str(password_file)]
    args += [arg for key, value in options.items() if value for arg in (f"--{key}", value)]
    rc, output = run_generator(*args)
    assert rc == 2
    assert message in output
    assert not any(tmp_path.iterdir()), "a refused run wrote something"


def test_without_a_vault_password_nothing_is_written(tmp_path, template, monkeypatch):
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    monkeypatch.delenv("ASSET_VAULT_PASSWORD", raising=False)
    rc, output = run_generator("--template", str(template), "create", "shop", "--into", str(tmp_path),
                               "--domain", "shop.example.com", *tier_args())
    assert rc == 2 and "no vault password" in output
    assert not any(tmp_path.iterdir())


def test_the_password_may_come_from_the_environment(tmp_path, template, monkeypatch):
    password = secrets.token_urlsafe(24)
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("ASSET_VAULT_PASSWORD", password)
    rc, output = run_generator("--template", str(template), "create", "shop", "--into", str(tmp_path),
                               "--domain", "shop.example.com", *tier_args(), "--tls-mode", "acme",
                               "--acme-email", "ops@example.com")
    assert rc == 0, output
    assert set(decrypt(tmp_path / "shop" / "group_vars" / "all" / "vault.yml", password)) == GENERATED
    tls = load_yaml(tmp_path / "shop" / "group_vars" / "web" / "tls.yml")
    assert tls["tls_mode"] == "acme" and tls["tls_acme_accept_terms"] is False


def test_force_replaces_the_environment_with_new_secrets(tmp_path, template, password_file):
    args = ["--template", str(template), "create", "shop", "--into", str(tmp_path), "--domain", "shop.example.com",
            *tier_args(), "--vault-password-file", str(password_file)]
    assert run_generator(*args)[0] == 0
    vault = tmp_path / "shop" / "group_vars" / "all" / "vault.yml"
    first = decrypt(vault, password_file.read_text().strip())
    rc, output = run_generator(*args, "--force", "--app", "app-9=192.0.2.29")
    assert rc == 0, output
    assert decrypt(vault, password_file.read_text().strip())["vault_db_password"] != first["vault_db_password"]
    assert "app-9" in (tmp_path / "shop" / "hosts.yml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop"], "the staging directory was left behind"


def test_every_vault_variable_the_template_reads_is_in_the_secrets_list_and_every_secret_is_used():
    referenced = set()
    for item in (ROOT / "templates" / "environment").rglob("*.jinja"):
        referenced |= set(re.findall(r"\b(vault_\w+)", item.read_text()))
    assert referenced - set(SECRETS) == set(), "read by the template but not in templates/secrets.yml"
    assert set(SECRETS) - referenced == set(), "in templates/secrets.yml but never mapped to a role variable"


def test_the_generated_inventory_passes_yamllint_in_every_tls_mode(made, tmp_path, template, password_file):
    """yamllint --strict with the project's configuration. ansible-lint (slow to start) checks the
    example inventories in the lint stage instead: self_signed (staging) and acme (production), which
    test_the_examples_are_what_the_generator_makes proves are this generator's output."""
    shutil.copytree(made[0], tmp_path / "shop")
    for mode in ("provided", "acme"):
        rc, output = run_generator("--template", str(template), "create", mode, "--into", str(tmp_path),
                                   "--domain", "shop.example.com", *tier_args(web="web-1"), "--network", "10.0.0.0/24",
                                   "--tls-mode", mode, "--acme-email", "ops@example.com",
                                   "--vault-password-file", str(password_file))
        assert rc == 0, output
    config = YamlLintConfig(file=str(ROOT / ".yamllint"))
    files = [path for path in sorted(tmp_path.rglob("*")) if path.is_file() and config.is_yaml_file(str(path))]
    assert len(files) >= 3 * 11
    problems = [f"{path.relative_to(tmp_path)}:{problem.line}: {problem.message}" for path in files
                for problem in yamllint_run(path.read_text(), config, str(path.relative_to(tmp_path)))]
    assert problems == []


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_update_merges_the_newer_template_keeps_local_edits_and_adds_only_missing_secrets(tmp_path, password_file,
                                                                                          monkeypatch):
    """Copier's three-way update, in a repository of its own that holds the template and the environment."""
    for variable in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{variable}_NAME", "test")
        monkeypatch.setenv(f"GIT_{variable}_EMAIL", "test@example.com")
    repo = tmp_path / "toolkit"
    repo.mkdir()
    shutil.copy(ROOT / "copier.yml", repo)
    shutil.copytree(ROOT / "templates", repo / "templates")
    git(repo, "init", "--quiet")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "template v1")
    password = password_file.read_text().strip()
    common = ["--into", str(repo / "inventories"), "--vault-password-file", str(password_file)]
    rc, output = run_generator("--template", str(repo), "create", "shop", "--domain", "shop.example.com",
                               *tier_args(), *common)
    assert rc == 0, output
    shop = repo / "inventories" / "shop"
    before = decrypt(shop / "group_vars" / "all" / "vault.yml", password)
    app_yml = shop / "group_vars" / "app" / "app.yml"
    app_yml.write_text(app_yml.read_text() + "app_gunicorn_workers: 4 # a local edit\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "the shop environment, tuned")

    nginx = repo / "templates" / "environment" / "group_vars" / "web" / "nginx.yml.jinja"
    nginx.write_text(nginx.read_text() + "nginx_client_max_body_size: 2m\n")
    monitoring = repo / "templates" / "environment" / "group_vars" / "monitoring" / "monitoring.yml.jinja"
    monitoring.write_text(monitoring.read_text() + 'monitoring_new_password: "{{ vault_new_password }}"\n')
    secrets_yml = repo / "templates" / "secrets.yml"
    secrets_yml.write_text(secrets_yml.read_text() + "  vault_new_password:\n    kind: password\n    length: 40\n"
                           "    for: a role added later\n")
    git(repo, "commit", "--quiet", "-am", "template v2: a setting and a secret")

    rc, output = run_generator("--template", str(repo), "update", "shop", "--app", "app-1=192.0.2.21,app-3=192.0.2.23",
                               *common)
    assert rc == 0, output
    assert "nginx_client_max_body_size: 2m" in (shop / "group_vars" / "web" / "nginx.yml").read_text()
    assert "app_gunicorn_workers: 4 # a local edit" in app_yml.read_text()
    assert "<<<<<<<" not in app_yml.read_text()
    hosts = load_yaml(shop / "hosts.yml")["all"]["children"]["app"]["hosts"]
    assert sorted(hosts) == ["app-1", "app-3"]
    after = decrypt(shop / "group_vars" / "all" / "vault.yml", password)
    assert set(after) == set(before) | {"vault_new_password"}
    assert {name: after[name] for name in before} == before, "update changed an existing secret"
    assert len(after["vault_new_password"]) == 40
    assert load_yaml(shop / ".copier-answers.yml")["_commit"] == git(repo, "describe", "--tags", "--always", "HEAD")
    assert after["vault_new_password"] not in output


# The examples' vault password is a documented throw-away (templates/README.md): it guards nothing.
EXAMPLE_PASSWORD = re.search(r"throw-away password `([^`]+)`", (ROOT / "templates" / "README.md").read_text()).group(1)


@pytest.mark.parametrize("example", ["staging", "production"])
def test_the_examples_are_what_the_generator_makes(example, tmp_path, template, monkeypatch):
    """Rendered again from their recorded answers, every file is the same; the vault holds every secret."""
    path = ROOT / "inventories" / example
    answers = {key: value for key, value in load_yaml(path / ".copier-answers.yml").items() if not key.startswith("_")}
    generator.validate(answers)
    monkeypatch.chdir(template)
    generator.render(tmp_path / example, answers)

    def files(root: Path) -> dict[str, str]:
        found = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}
        found[generator.ANSWERS_FILE] = re.sub(r"(?m)^_commit: .*\n", "", found[generator.ANSWERS_FILE])
        found.pop(str(generator.VAULT_FILE), None)
        return found

    assert files(path) == files(tmp_path / example), \
        f"inventories/{example} is not what the template makes: update it (templates/README.md, The examples)"
    values = decrypt(path / generator.VAULT_FILE, EXAMPLE_PASSWORD)
    assert set(values) == GENERATED
    assert answers["backup_age_recipient"] == generator.age_recipient(values["vault_backup_age_identity"])
