#!/usr/bin/env python3
"""Make a new environment (an inventory with its vault of generated secrets) from
templates/environment/, or update one that an older template made. See templates/README.md.

  .venv/bin/python scripts/new_environment.py create NAME --domain DOMAIN \\
      --web HOSTS --app HOSTS --redis HOSTS --db HOSTS --monitoring HOSTS [--backup HOSTS] \\
      [--tls-mode self_signed|provided|acme] [--admin NAME=PUBKEY_FILE ...] [--network CIDR] \\
      [--alert-webhook-url URL] \\
      --vault-password-file FILE
  .venv/bin/python scripts/new_environment.py update NAME [--app HOSTS ...] --vault-password-file FILE

HOSTS is a comma-separated list of `name` or `name=address`. The vault password comes from
--vault-password-file, else $ANSIBLE_VAULT_PASSWORD_FILE (a file, or a script that prints it, as
for ansible-playbook), else $ASSET_VAULT_PASSWORD (the password itself). Every input is checked
before anything is written; the environment appears whole or not at all; no secret is printed.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml
from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultLib, VaultSecret, get_file_vault_secret
from copier import run_copy, run_update
from pyrage import x25519

ROOT = Path(__file__).resolve().parent.parent
TIERS = ["web", "app", "redis", "db", "monitoring", "backup"]
REQUIRED_TIERS = TIERS[:-1]  # backup (off-host copies) is optional
TLS_MODES = ["self_signed", "provided", "acme"]
NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"^{LABEL}(?:\.{LABEL})*$")
ADMIN = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SSH_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+( [^\n]*)?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
WEBHOOK_URL = re.compile(r"^https?://[^\s/]+\S*$")
ANSWERS_FILE = ".copier-answers.yml"
VAULT_FILE = Path("group_vars/all/vault.yml")
PASSWORD_ALPHABET = string.ascii_letters + string.digits  # safe in URLs, redis.conf and htpasswd
MIN_VAULT_PASSWORD = 12


class InputError(Exception):
    """Bad input: reported as it is, before anything is written."""


# --- Inputs ---------------------------------------------------------------------------------------

def parse_hosts(text: str | None) -> list[dict[str, str]]:
    """'a=192.0.2.1, b' -> [{name: a, address: 192.0.2.1}, {name: b, address: ''}]"""
    hosts = []
    for item in (text or "").split(","):
        name, _, address = item.strip().partition("=")
        if name or address:
            hosts.append({"name": name.strip(), "address": address.strip()})
    return hosts


def parse_admin(text: str) -> dict[str, str]:
    name, sep, key_file = text.partition("=")
    if not sep or not ADMIN.match(name):
        raise InputError(f"--admin {text!r}: expected NAME=PUBLIC_KEY_FILE with a Unix user name (a-z, 0-9, _ and -)")
    path = Path(key_file).expanduser()
    if not path.is_file():
        raise InputError(f"--admin {name}: public key file {key_file} not found")
    key = path.read_text().strip()
    if not SSH_PUBLIC_KEY.match(key):
        raise InputError(f"--admin {name}: {key_file} does not hold one OpenSSH public key (is it the private key?)")
    return {"name": name, "ssh_key": key}


def host_errors(tiers: dict[str, list[dict[str, str]]], network: str) -> list[str]:
    errors = []
    addresses: dict[str, str] = {}
    for tier in TIERS:
        hosts = tiers.get(tier) or []
        if tier in REQUIRED_TIERS and not hosts:
            errors.append(f"{tier}: at least one host is needed (--{tier} HOST[,HOST...])")
        names = [host.get("name", "") for host in hosts]
        errors += [f"{tier}: {name} is listed twice" for name in sorted(set(names)) if names.count(name) > 1]
        for host in hosts:
            name, address = host.get("name", ""), host.get("address", "")
            if not HOSTNAME.match(name):
                errors.append(f"{tier} host {name!r}: not a host name (letters, digits, '-' and dots)")
            if address:
                try:
                    ipaddress.ip_address(address)
                except ValueError:
                    errors.append(f"{tier} host {name}: address {address!r} is not an IP address")
            if addresses.setdefault(name, address) != address:
                errors.append(f"{name} has two addresses ({addresses[name] or 'none'} and {address or 'none'})")
    unknown = sorted(set(tiers) - set(TIERS))
    if unknown:
        errors.append(f"unknown tiers {unknown} (known: {', '.join(TIERS)})")
    web = tiers.get("web") or []
    if web and not all(host.get("address") for host in web) and not network:
        errors.append("the service trusts X-Forwarded-For from nginx only: give every web host its address "
                      "(--web name=address) or the hosts' private network (--network CIDR)")
    return errors


def validate(answers: dict[str, Any]) -> None:
    """Every rule an environment's answers must meet; all failures at once, in one message."""
    errors = []
    name = answers.get("name") or ""
    if not NAME.match(name):
        errors.append(f"name {name!r}: use 1-63 lower-case letters, digits and '-', starting with a letter "
                      "(it names the directory inventories/<name>)")
    domain = answers.get("domain") or ""
    if not HOSTNAME.match(domain) or len(domain) > 253:
        errors.append(f"domain {domain!r}: not a DNS name (letters, digits, '-' and dots; no spaces)")
    if answers.get("tls_mode") not in TLS_MODES:
        errors.append(f"tls mode {answers.get('tls_mode')!r}: one of {', '.join(TLS_MODES)}")
    if answers.get("tls_mode") == "acme" and not EMAIL.match(answers.get("acme_email") or ""):
        errors.append("acme mode needs --acme-email, the ACME account's contact address")
    webhook = answers.get("alert_webhook_url") or ""
    if webhook and not WEBHOOK_URL.match(webhook):
        errors.append(f"alert webhook url {webhook!r}: an http(s) URL where Alertmanager posts alerts "
                      "(e.g. https://hooks.example.com/alerts)")
    network = answers.get("network") or ""
    if network:
        try:
            ipaddress.ip_network(network)
        except ValueError:
            errors.append(f"network {network!r}: not a network in CIDR notation (e.g. 10.0.0.0/24)")
    errors += host_errors(answers.get("tiers") or {}, network)
    if errors:
        raise InputError("; ".join(errors))


def vault_secret(password_file: str | None) -> VaultSecret:
    """The vault password the user gives: a file (or a script that prints it) or an environment variable."""
    password_file = password_file or os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
    if password_file:
        if not Path(password_file).expanduser().is_file():
            raise InputError(f"vault password file {password_file} not found")
        secret = get_file_vault_secret(filename=str(Path(password_file).expanduser()), loader=DataLoader())
        try:
            secret.load()
        except Exception as error:  # Ansible's own message says what is wrong with the file
            raise InputError(f"vault password file {password_file}: {error}") from None
    elif os.environ.get("ASSET_VAULT_PASSWORD"):
        secret = VaultSecret(os.environ["ASSET_VAULT_PASSWORD"].encode())
    else:
        raise InputError("no vault password: give --vault-password-file FILE, or set ANSIBLE_VAULT_PASSWORD_FILE "
                         "(a file) or ASSET_VAULT_PASSWORD (the password)")
    if len(secret.bytes or b"") < MIN_VAULT_PASSWORD:
        raise InputError(f"the vault password must have at least {MIN_VAULT_PASSWORD} characters")
    return secret


# --- Secrets --------------------------------------------------------------------------------------

def generated_secrets(template: Path) -> dict[str, dict[str, Any]]:
    """The secrets the generator makes, from the one list of them (templates/secrets.yml)."""
    spec = yaml.safe_load((template / "templates" / "secrets.yml").read_text())["secrets"]
    return {name: item for name, item in spec.items() if item["kind"] != "provided"}


def make_secret(spec: dict[str, Any]) -> str:
    if spec["kind"] == "password":
        return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(int(spec["length"])))
    if spec["kind"] == "age_identity":
        return str(x25519.Identity.generate())
    raise ValueError(f"cannot generate a secret of kind {spec['kind']}")


def age_recipient(identity: str) -> str:
    return str(x25519.Identity.from_str(identity).to_public())


def backup_recipient(spec: dict[str, dict[str, Any]], values: dict[str, str]) -> str:
    identity = next(name for name, item in spec.items() if item["kind"] == "age_identity")
    return age_recipient(values[identity])


def vault_text(name: str, values: dict[str, str]) -> str:
    header = (f"# Secrets of the {name} environment, made by scripts/new_environment.py (templates/secrets.yml\n"
              "# lists them). Read or change them with: ansible-vault edit group_vars/all/vault.yml\n---\n")
    return header + yaml.safe_dump(values, default_flow_style=False, sort_keys=False, width=1000)


# --- Rendering ------------------------------------------------------------------------------------

def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def render(destination: Path, answers: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dirty template changes included": the working tree is the template
        run_copy(".", destination, data=answers, defaults=True, overwrite=True, quiet=True, vcs_ref="HEAD",
                 unsafe=False)
    record_head(destination)


def record_head(destination: Path) -> None:
    """With uncommitted changes anywhere in the repository, Copier renders the working tree from a
    commit of its own clone and records that commit, which exists nowhere else: record HEAD instead,
    the commit a later update merges from."""
    if not Path(".git").exists():
        return
    head = git("describe", "--tags", "--always", "HEAD")
    answers = destination / ANSWERS_FILE
    line = yaml.safe_dump({"_commit": head}).strip()  # quoted when it would read as a number
    answers.write_text(re.sub(r"(?m)^_commit: .*$", line, answers.read_text(), count=1))
    if git("status", "--porcelain", "--", "copier.yml", "templates"):
        print(f"new_environment: warning: copier.yml or templates/ has uncommitted changes; {answers.name} "
              f"records {head}: commit the template before you update this environment", file=sys.stderr)


def display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- Commands -------------------------------------------------------------------------------------

def create(args: argparse.Namespace) -> int:
    answers = {
        "name": args.name,
        "domain": args.domain or "",
        "tls_mode": args.tls_mode or "self_signed",
        "acme_email": args.acme_email or "",
        "alert_webhook_url": args.alert_webhook_url or "",
        "service_environment": args.service_environment or "production",
        "network": args.network or "",
        "tiers": {tier: parse_hosts(getattr(args, tier)) for tier in TIERS if getattr(args, tier)},
        "admins": args.admin,
    }
    validate(answers)
    destination = Path(args.into) / args.name
    if destination.exists() and not args.force:
        raise InputError(f"{destination} already exists: nothing was changed. Update it with `scripts/"
                         f"new_environment.py update {args.name}`, or replace it whole (new secrets!) with --force")
    secret = vault_secret(args.vault_password_file)
    spec = generated_secrets(Path.cwd())
    values = {name: make_secret(item) for name, item in spec.items()}
    answers["backup_age_recipient"] = backup_recipient(spec, values)

    # Rendered next to its destination, then moved there in one rename: whole or not at all.
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.name}.new-", dir=destination.parent))
    try:
        render(staging / "env", answers)
        vault = staging / "env" / VAULT_FILE
        vault.parent.mkdir(parents=True, exist_ok=True)
        vault.write_bytes(VaultLib([(DEFAULT_VAULT_ID_MATCH, secret)]).encrypt(vault_text(args.name, values)))
        vault.chmod(0o600)
        if destination.exists():  # --force
            shutil.rmtree(destination)
        (staging / "env").rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"Made {display(destination)}: {', '.join(f'{t} {len(h)}' for t, h in answers['tiers'].items())} "
          f"hosts, tls_mode {answers['tls_mode']}.")
    print(f"Its vault {display(destination / VAULT_FILE)} holds {len(values)} generated secrets: {', '.join(values)}.")
    if answers["tls_mode"] == "provided":
        print("tls_mode provided: put your certificate in group_vars/web/tls.yml and its key in the vault "
              "as vault_tls_provided_private_key.")
    if answers["tls_mode"] == "acme":
        print("tls_mode acme: set tls_acme_accept_terms in group_vars/web/tls.yml once you accept the CA's terms.")
    if not answers["admins"]:
        print("No --admin given: add one to group_vars/all/server.yml before the first run.")
    if not answers["alert_webhook_url"]:
        print("No --alert-webhook-url given: set monitoring_alertmanager_webhook_url in group_vars/monitoring/"
              "monitoring.yml before the first run (the monitoring tier refuses to start without it).")
    print(f"Deploy: ansible-playbook -i {display(destination)} playbooks/site.yml --vault-password-file FILE")
    return 0


def update(args: argparse.Namespace) -> int:
    destination = Path(args.name) if "/" in args.name else Path(args.into) / args.name
    answers_path = destination / ANSWERS_FILE
    if not answers_path.is_file():
        raise InputError(f"{destination} is not an environment made by this generator (no {ANSWERS_FILE})")
    answers = yaml.safe_load(answers_path.read_text())
    changes: dict[str, Any] = {}
    for tier in TIERS:
        if getattr(args, tier) is not None:
            changes.setdefault("tiers", dict(answers.get("tiers") or {}))[tier] = parse_hosts(getattr(args, tier))
    for key in ("domain", "tls_mode", "network", "acme_email", "alert_webhook_url", "service_environment"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    validate({**answers, **changes})

    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, vault_secret(args.vault_password_file))])
    vault_path = destination / VAULT_FILE
    try:
        values = yaml.safe_load(vault.decrypt(vault_path.read_bytes())) or {}
    except Exception as error:
        raise InputError(f"cannot decrypt {display(vault_path)} with that password: {error}") from None
    spec = generated_secrets(Path.cwd())
    missing = {name: make_secret(item) for name, item in spec.items() if name not in values}
    recipient = backup_recipient(spec, {**values, **missing})
    if answers.get("backup_age_recipient") != recipient:
        changes["backup_age_recipient"] = recipient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_update(destination, data=changes, defaults=True, overwrite=True, quiet=True, vcs_ref="HEAD",
                   unsafe=False, skip_answered=True, conflict="inline")
    if missing:
        vault_path.write_bytes(vault.encrypt(vault_text(answers["name"], {**values, **missing})))
        print(f"Added to {display(vault_path)}: {', '.join(missing)} (the other secrets are unchanged).")
    print(f"Updated {display(destination)} from the template; review it with git diff (conflicts are marked inline).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default=str(ROOT), help=argparse.SUPPRESS)  # the tests' own template copy
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("create", "update"):
        sub = commands.add_parser(command)
        sub.add_argument("name", help="environment name (update: or the path of the environment)")
        sub.add_argument("--into", default=str(ROOT / "inventories"), help="parent directory (default: inventories/)")
        sub.add_argument("--vault-password-file", help="file with the vault password, or a script printing it")
        for tier in TIERS:
            sub.add_argument(f"--{tier}", help=f"hosts of the {tier} group: name or name=address, comma-separated")
        sub.add_argument("--domain", help="DNS name of the site")
        sub.add_argument("--tls-mode", choices=TLS_MODES, help="default self_signed")
        sub.add_argument("--acme-email", help="contact of the ACME account (acme mode)")
        sub.add_argument("--alert-webhook-url", help="http(s) URL where Alertmanager posts alerts (webhook receiver)")
        sub.add_argument("--network", help="private network (CIDR) of the hosts, when web hosts have no address")
        sub.add_argument("--service-environment", choices=["staging", "production"],
                         help="ENVIRONMENT of the service (default production)")
        if command == "create":
            sub.add_argument("--admin", action="append", default=[], metavar="NAME=PUBKEY_FILE",
                             help="an operator and their SSH public key file (repeat for more)")
            sub.add_argument("--force", action="store_true", help="replace an existing environment, secrets included")
    args = parser.parse_args(argv)
    # Paths the user gave are relative to where they are; Copier then runs in the template's
    # repository, which it records as '.' (the repository the environment lives in).
    args.into = str(Path(args.into).resolve())
    if args.vault_password_file:
        args.vault_password_file = str(Path(args.vault_password_file).expanduser().resolve())
    if args.command == "update" and "/" in args.name:
        args.name = str(Path(args.name).resolve())
    try:
        if args.command == "create":
            args.admin = [parse_admin(admin) for admin in args.admin]
        os.chdir(args.template)
        return create(args) if args.command == "create" else update(args)
    except InputError as error:
        print(f"new_environment: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
