"""Behaviour of the backup role on Debian 12 (Redis 7.0) and Debian 13 (Redis 8.0).

The age identity and the Redis passwords come from the scenario's ephemeral directory (prepare.yml
and converge.yml generated them); the hosts only ever got the identity's recipient.
"""

import base64
import os
import re
import shlex
import time
from pathlib import Path

import pyrage
import pytest

DIR = "/backup/redis"
SCRIPT = "/usr/local/sbin/asset-backup"
PROM = "/var/lib/prometheus/node-exporter/asset_backup_redis.prom"
LOCK = "/run/lock/asset-backup-redis.lock"


def secret(name):
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / name).read_text().split()[0]


def identity():
    return pyrage.x25519.Identity.from_str(secret("age_identity"))


def admin(host, *args):
    env = f"REDISCLI_AUTH={shlex.quote(secret('redis_password'))} "
    result = host.run(env + "redis-cli -s /run/redis/redis-server.sock " + " ".join(shlex.quote(a) for a in args))
    return result.rc, (result.stdout + result.stderr).strip()


def today(host):
    return f"{DIR}/redis-backup-{host.check_output('date +%Y%m%d')}.rdb.age"


def read_bytes(host, path):
    return base64.b64decode(host.check_output(f"base64 -w0 {shlex.quote(path)}"))


def backup(host, prefix=""):
    return host.run(f"{prefix}{SCRIPT} redis")


def kept(host):
    return sorted(host.check_output(f"ls -1 {DIR}").split())


# --- a backup -------------------------------------------------------------------------------------

def test_backup_is_a_verified_encrypted_snapshot_with_the_data(host):
    assert admin(host, "SET", "molecule:backup:probe", "known-value-4711") == (0, "OK")
    run = backup(host)
    assert run.rc == 0, run.stderr
    assert "verified, encrypted" in run.stdout
    data = read_bytes(host, today(host))
    assert data.startswith(b"age-encryption.org/v1\n")
    assert b"known-value-4711" not in data
    plain = pyrage.decrypt(data, [identity()])
    assert plain.startswith(b"REDIS")
    assert b"molecule:backup:probe" in plain and b"known-value-4711" in plain
    # the plain snapshot never stays on the host
    assert host.run(f"find {DIR} -name '.work*' -o -name '*.rdb'").stdout.strip() == ""


def test_the_snapshot_is_taken_as_the_backup_user_never_default(host):
    text = host.file(SCRIPT).content_string
    assert "--user \"$REDIS_USER\"" in text and "REDIS_USER=backup" in text
    assert host.file("/etc/asset-backup/redis.auth").content_string.strip() == secret("redis_backup_password")
    assert secret("redis_password") not in host.check_output("cat /etc/asset-backup/*")


def test_cron_runs_the_backup_into_the_journal(host):
    line = [entry for entry in host.file("/etc/cron.d/asset-backup").content_string.splitlines()
            if entry and not entry.startswith(("#", "SHELL", "PATH"))]
    assert len(line) == 1
    fields = line[0].split(maxsplit=6)
    assert fields[:5] == ["17", "3", "*", "*", "*"] and fields[5] == "root"
    marker = f"molecule-{time.time_ns()}"
    host.run(f"logger -t asset-backup-redis {marker}")
    run = host.run(fields[6])  # the entry's own command, as cron runs it
    assert run.rc == 0, run.stderr
    journal = host.check_output("journalctl -t asset-backup-redis --no-pager -o cat -n 50")
    assert marker in journal
    after = journal.split(marker, 1)[1]
    assert "verified, encrypted" in after
    assert host.service("cron").is_running and host.service("cron").is_enabled


def test_a_run_never_overlaps_another(host):
    before = host.file(today(host)).sha256sum
    run = host.run(f"flock {LOCK} {SCRIPT} redis")  # the lock is held while the second run starts
    assert run.rc != 0
    assert "another redis backup is running" in run.stderr
    assert host.file(today(host)).sha256sum == before


# --- a bad snapshot is refused --------------------------------------------------------------------

CORRUPT = {
    # the real redis-cli writes the snapshot, then the file is damaged on disk
    "truncated": 'truncate -s -64 "$out"',
    "flipped": 'printf "\\377\\377\\377\\377" | dd of="$out" bs=1 seek=40 conv=notrunc status=none',
}


@pytest.mark.parametrize("damage", CORRUPT)
def test_a_damaged_snapshot_is_refused_and_the_good_file_of_the_day_kept(host, damage):
    assert backup(host).rc == 0
    before = host.file(today(host)).sha256sum
    fake = f"/root/molecule-{damage}"  # /tmp is noexec in the containers
    host.run(f"mkdir -p {fake}")
    wrapper = ('#!/bin/bash\nfor out; do :; done\n/usr/bin/redis-cli "$@" || exit\n'
               + CORRUPT[damage] + "\n")
    host.run(f"printf %s {shlex.quote(wrapper)} > {fake}/redis-cli && chmod 0755 {fake}/redis-cli")
    metric_before = host.file(PROM).content_string
    run = backup(host, prefix=f"PATH={fake}:$PATH ")
    assert run.rc != 0
    assert "failed verification" in run.stderr, run.stderr
    assert host.file(today(host)).sha256sum == before
    assert host.file(PROM).content_string == metric_before
    assert host.run(f"find {DIR} -name '.work*'").stdout.strip() == ""
    host.run(f"rm -rf {fake}")


def test_verify_refuses_a_damaged_file_and_accepts_a_good_one(host):
    good = read_bytes(host, today(host))
    plain = pyrage.decrypt(good, [identity()])
    encoded = base64.b64encode(plain).decode()
    host.run(f"echo {encoded} | base64 -d > /tmp/good.rdb")
    assert host.run(f"{SCRIPT} verify redis /tmp/good.rdb").rc == 0
    host.run(f"head -c {len(plain) // 2} /tmp/good.rdb > /tmp/half.rdb")
    assert host.run(f"{SCRIPT} verify redis /tmp/half.rdb").rc != 0
    host.run("rm -f /tmp/good.rdb /tmp/half.rdb")


# --- retention ------------------------------------------------------------------------------------

def _fake_backup(host, days_ago):
    day = host.check_output(f"date -d '{days_ago} days ago' +%Y%m%d")
    name = f"{DIR}/redis-backup-{day}.rdb.age"
    host.run(f"cp {today(host)} {name} && touch -d '{days_ago} days ago' {name}")
    return name


def test_retention_removes_only_files_older_than_the_limit(host):
    old, recent = _fake_backup(host, 10), _fake_backup(host, 3)
    assert backup(host).rc == 0
    names = kept(host)
    assert Path(old).name not in names
    assert Path(recent).name in names and Path(today(host)).name in names
    host.run(f"rm -f {recent}")


def test_retention_keeps_the_newest_good_backup_however_old(host):
    _fake_backup(host, 20)
    host.run(f"touch -d '30 days ago' {DIR}/*.age")
    run = host.run(f"{SCRIPT} prune redis")
    assert run.rc == 0, run.stderr
    assert kept(host) == [Path(today(host)).name]
    assert backup(host).rc == 0  # back to a fresh file for the other tests


# --- freshness metric ---------------------------------------------------------------------------

def test_the_metric_is_in_the_node_exporter_output_after_a_backup(host):
    start = int(time.time()) - 5
    assert backup(host).rc == 0
    size = host.file(today(host)).size
    assert host.file(PROM).mode == 0o644
    metrics = host.check_output(
        "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:9100/metrics\").read().decode())'")
    stamp = re.search(r'^asset_backup_last_success_timestamp_seconds\{kind="redis"\} (\S+)$', metrics, re.M)
    assert stamp and float(stamp.group(1)) >= start
    assert f'asset_backup_last_size_bytes{{kind="redis"}} {size}' in metrics
    assert "textfile_scrape_error 0" in metrics


# --- permissions ----------------------------------------------------------------------------------

def test_backups_are_readable_by_root_only(host):
    for path in ["/backup", DIR, "/etc/asset-backup"]:
        d = host.file(path)
        assert (d.user, d.group, d.mode) == ("root", "root", 0o700), path
    for name in kept(host):
        f = host.file(f"{DIR}/{name}")
        assert (f.user, f.mode) == ("root", 0o600), name
    assert host.run(f"runuser -u nobody -- ls {DIR}").rc != 0
    assert "AGE-SECRET-KEY" not in host.check_output("cat /etc/asset-backup/recipients.txt")


# --- bad input ------------------------------------------------------------------------------------

def test_a_private_key_as_recipient_is_refused_before_the_host_is_touched(host, ansible_playbook):
    name = host.backend.get_hostname()
    before = host.file("/etc/asset-backup/recipients.txt").sha256sum
    run = ansible_playbook(extra_vars={"backup_age_recipients": [secret("age_identity")]}, limit=name)
    assert run.rc != 0
    assert "never the AGE-SECRET-KEY identity" in run.output, run.output[-3000:]
    assert run.recap()[name]["changed"] == 0
    assert host.file("/etc/asset-backup/recipients.txt").sha256sum == before
