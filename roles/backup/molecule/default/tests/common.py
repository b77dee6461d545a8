"""Helpers shared by the scenario's tests (test_backup.py, test_backup_restore.py)."""

import base64
import os
import shlex
import tempfile
from pathlib import Path

import pyrage
import testinfra

DIR = "/backup/redis"
PG_DIR = "/backup/postgresql"
PG_PROM = "/var/lib/prometheus/node-exporter/asset_backup_postgresql.prom"
SCRIPT = "/usr/local/sbin/asset-backup"
PROM = "/var/lib/prometheus/node-exporter/asset_backup_redis.prom"
LOCK = "/run/lock/asset-backup-redis.lock"
EXT = {"redis": "rdb", "postgresql": "dump"}
DB = "asset_classes"


def secret(name):
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / name).read_text().split()[0]


def identity():
    return pyrage.x25519.Identity.from_str(secret("age_identity"))


def admin(host, *args):
    env = f"REDISCLI_AUTH={shlex.quote(secret('redis_password'))} "
    result = host.run(env + "redis-cli -s /run/redis/redis-server.sock " + " ".join(shlex.quote(a) for a in args))
    return result.rc, (result.stdout + result.stderr).strip()


def today(host, kind="redis"):
    return f"/backup/{kind}/{kind}-backup-{host.check_output('date +%Y%m%d')}.{EXT[kind]}.age"


def psql(host, sql, user="postgres", db=DB):
    """Run SQL through the local socket as a peer-authenticated OS user; the CommandResult."""
    return host.run(f"cd / && runuser -u {user} -- psql -XAtq -v ON_ERROR_STOP=1 -d {db} -c {shlex.quote(sql)}")


def seed_probe_table(host):
    """A table of the service's database owned by its owner, 2,000 rows (the dump's largest data)."""
    run = psql(host, "SET ROLE asset_classes;"
                     " CREATE TABLE IF NOT EXISTS molecule_probe (id int PRIMARY KEY, value text);"
                     " INSERT INTO molecule_probe SELECT i, md5(i::text) FROM generate_series(1, 2000) i"
                     " ON CONFLICT DO NOTHING;")
    assert run.rc == 0, run.stderr


def put_file(host, data, dest):
    """Copy bytes from the controller to the host, 0600 root (the Ansible copy module)."""
    with tempfile.NamedTemporaryFile() as local:
        local.write(data)
        local.flush()
        result = host.ansible("copy", f"src={local.name} dest={dest} mode=0600 owner=root", check=False)
    assert not result.get("failed"), result


def read_bytes(host, path):
    return base64.b64decode(host.check_output(f"base64 -w0 {shlex.quote(path)}"))


def backup(host, prefix="", kind="redis"):
    return host.run(f"{prefix}{SCRIPT} {kind}")


def kept(host, kind="redis"):
    return sorted(host.check_output(f"ls -1 /backup/{kind}").split())


def every_host(request):
    """Every host of the scenario, by name: for work that one playbook run does on all of them at once
    (module fixtures), while the tests that assert stay per host."""
    inventory = request.config.option.ansible_inventory
    hosts = testinfra.get_hosts(["all"], connection="ansible", ansible_inventory=inventory)
    return {each.backend.get_hostname(): each for each in hosts}
