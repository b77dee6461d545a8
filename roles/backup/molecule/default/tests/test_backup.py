"""Behaviour of the backup role on Debian 12 (Redis 7.0, PostgreSQL 15) and Debian 13 (Redis 8.0,
PostgreSQL 17).

The age identity and the passwords come from the scenario's ephemeral directory (prepare.yml and the
inventory in molecule.yml generated them); the hosts only ever got the identity's recipient.
"""

import re
import shlex
import time
from pathlib import Path

import pyrage
import pytest
from common import (
    DIR,
    EXT,
    LOCK,
    PG_DIR,
    PG_PROM,
    PROM,
    SCRIPT,
    admin,
    backup,
    every_host,
    identity,
    kept,
    psql,
    put_file,
    read_bytes,
    secret,
    seed_probe_table,
    today,
)

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


@pytest.mark.parametrize("kind", EXT)
def test_cron_runs_the_backup_into_the_journal(host, kind):
    lines = [entry for entry in host.file("/etc/cron.d/asset-backup").content_string.splitlines()
             if entry and not entry.startswith(("#", "SHELL", "PATH"))]
    assert len(lines) == 2  # one entry per kind
    line = [entry for entry in lines if entry.endswith(f" {kind}")]
    assert len(line) == 1
    fields = line[0].split(maxsplit=6)
    assert fields[:5] == ["17", "3", "*", "*", "*"] and fields[5] == "root"
    marker = f"molecule-{time.time_ns()}"
    host.run(f"logger -t asset-backup-{kind} {marker}")
    run = host.run(fields[6])  # the entry's own command, as cron runs it
    assert run.rc == 0, run.stderr
    journal = host.check_output(f"journalctl -t asset-backup-{kind} --no-pager -o cat -n 50")
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
    put_file(host, plain, "/tmp/good.rdb")
    assert host.run(f"{SCRIPT} verify redis /tmp/good.rdb").rc == 0
    host.run(f"head -c {len(plain) // 2} /tmp/good.rdb > /tmp/half.rdb")
    assert host.run(f"{SCRIPT} verify redis /tmp/half.rdb").rc != 0
    host.run("rm -f /tmp/good.rdb /tmp/half.rdb")


# --- PostgreSQL -----------------------------------------------------------------------------------

def test_postgresql_backup_is_a_verified_encrypted_dump_with_the_data(host):
    seed_probe_table(host)
    assert psql(host, "SET ROLE asset_classes; INSERT INTO molecule_probe VALUES (0, 'known-row-4711')"
                      " ON CONFLICT (id) DO UPDATE SET value = excluded.value").rc == 0
    run = backup(host, kind="postgresql")
    assert run.rc == 0, run.stderr
    assert "verified, encrypted" in run.stdout
    assert re.fullmatch(rf"{PG_DIR}/postgresql-backup-\d{{8}}\.dump\.age", today(host, "postgresql"))
    data = read_bytes(host, today(host, "postgresql"))
    assert data.startswith(b"age-encryption.org/v1\n")
    plain = pyrage.decrypt(data, [identity()])
    assert plain.startswith(b"PGDMP")  # pg_dump's custom format
    # decrypted on the controller, the dump holds the table and the row written before the backup
    put_file(host, plain, "/root/molecule-check.dump")
    rows = host.run("pg_restore --data-only -t molecule_probe -f - /root/molecule-check.dump")
    host.run("rm -f /root/molecule-check.dump")
    assert rows.rc == 0, rows.stderr
    assert "0\tknown-row-4711" in rows.stdout
    assert host.run(f"find {PG_DIR} -name '.work*' -o -name '*.dump'").stdout.strip() == ""


def test_the_dump_is_taken_as_the_least_privileged_backup_role(host):
    # the backup role reads, it cannot write ...
    denied = psql(host, "INSERT INTO molecule_probe VALUES (-1, 'x')", user="backup")
    assert denied.rc != 0 and "permission denied" in denied.stderr
    # ... and the dump depends on its pg_read_all_data: without it the run fails (not as postgres)
    before = host.file(today(host, "postgresql")).sha256sum
    assert psql(host, "REVOKE pg_read_all_data FROM backup").rc == 0
    try:
        run = backup(host, kind="postgresql")
    finally:
        assert psql(host, "GRANT pg_read_all_data TO backup").rc == 0
    assert run.rc != 0
    assert "taking the snapshot failed" in run.stderr and "permission denied" in run.stderr, run.stderr
    assert host.file(today(host, "postgresql")).sha256sum == before


PG_CORRUPT = {
    # the real pg_dump writes the dump, then it is damaged before the backup script reads it: cut to
    # half its size, or four bytes flipped in the middle, inside the compressed table data (on
    # PostgreSQL 17, damage in the archive's last kilobyte is not table data: pg_restore still
    # restored every row from such a file, and accepts it; see the README)
    "truncated": 'truncate -s $(( $(stat -c %s "$out") / 2 )) "$out"',
    "flipped": ('printf "\\377\\377\\377\\377" | dd of="$out" bs=1 seek=$(( $(stat -c %s "$out") / 2 ))'
                ' conv=notrunc status=none'),
}


@pytest.mark.parametrize("damage", PG_CORRUPT)
def test_a_damaged_dump_is_refused_and_the_good_file_of_the_day_kept(host, damage):
    assert backup(host, kind="postgresql").rc == 0
    before = host.file(today(host, "postgresql")).sha256sum
    metric_before = host.file(PG_PROM).content_string
    fake = f"/usr/local/lib/molecule-{damage}"  # run by the backup user: not under /root, /tmp is noexec
    wrapper = ('#!/bin/bash\nout=$(mktemp)\n/usr/bin/pg_dump "$@" >"$out" || exit\n'
               + PG_CORRUPT[damage] + '\ncat "$out"; rm -f "$out"\n')
    host.run(f"mkdir -p {fake} && printf %s {shlex.quote(wrapper)} > {fake}/pg_dump && chmod 0755 {fake}/pg_dump")
    run = backup(host, prefix=f"PATH={fake}:$PATH ", kind="postgresql")
    host.run(f"rm -rf {fake}")
    assert run.rc != 0
    assert "failed verification" in run.stderr, run.stderr
    assert host.file(today(host, "postgresql")).sha256sum == before
    assert host.file(PG_PROM).content_string == metric_before
    assert host.run(f"find {PG_DIR} -name '.work*'").stdout.strip() == ""


# --- retention ------------------------------------------------------------------------------------

def _fake_backup(host, kind, days_ago):
    day = host.check_output(f"date -d '{days_ago} days ago' +%Y%m%d")
    name = f"/backup/{kind}/{kind}-backup-{day}.{EXT[kind]}.age"
    host.run(f"cp {today(host, kind)} {name} && touch -d '{days_ago} days ago' {name}")
    return name


@pytest.mark.parametrize("kind", EXT)
def test_retention_removes_only_files_older_than_the_limit(host, kind):
    old, recent = _fake_backup(host, kind, 10), _fake_backup(host, kind, 3)
    assert backup(host, kind=kind).rc == 0
    names = kept(host, kind)
    assert Path(old).name not in names
    assert Path(recent).name in names and Path(today(host, kind)).name in names
    host.run(f"rm -f {recent}")


@pytest.mark.parametrize("kind", EXT)
def test_retention_keeps_the_newest_good_backup_however_old(host, kind):
    _fake_backup(host, kind, 20)
    host.run(f"touch -d '30 days ago' /backup/{kind}/*.age")
    run = host.run(f"{SCRIPT} prune {kind}")
    assert run.rc == 0, run.stderr
    assert kept(host, kind) == [Path(today(host, kind)).name]
    assert backup(host, kind=kind).rc == 0  # back to a fresh file for the other tests


# --- freshness metric ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", EXT)
def test_the_metric_is_in_the_node_exporter_output_after_a_backup(host, kind):
    start = int(time.time()) - 5
    assert backup(host, kind=kind).rc == 0
    size = host.file(today(host, kind)).size
    assert host.file(f"/var/lib/prometheus/node-exporter/asset_backup_{kind}.prom").mode == 0o644
    metrics = host.check_output(
        "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:9100/metrics\").read().decode())'")
    stamp = re.search(rf'^asset_backup_last_success_timestamp_seconds\{{kind="{kind}"\}} (\S+)$', metrics, re.M)
    assert stamp and float(stamp.group(1)) >= start
    assert f'asset_backup_last_size_bytes{{kind="{kind}"}} {size}' in metrics
    assert "textfile_scrape_error 0" in metrics


# --- permissions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", EXT)
def test_backups_are_readable_by_root_only(host, kind):
    for path in ["/backup", f"/backup/{kind}", "/etc/asset-backup"]:
        d = host.file(path)
        assert (d.user, d.group, d.mode) == ("root", "root", 0o700), path
    names = kept(host, kind)
    assert names
    for name in names:
        f = host.file(f"/backup/{kind}/{name}")
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600), name
    for user in ["nobody", "backup", "postgres", "redis"]:
        assert host.run(f"runuser -u {user} -- ls /backup/{kind}").rc != 0, user
        assert host.run(f"runuser -u {user} -- cat /backup/{kind}/{names[-1]}").rc != 0, user
    assert "AGE-SECRET-KEY" not in host.check_output("cat /etc/asset-backup/recipients.txt")


# --- bad input ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def private_key_run(request, ansible_playbook):
    """One converge of both hosts with the identity as recipient: preflight asserts on the variables,
    before any task touches a host, so one run proves the refusal for both."""
    hosts = every_host(request)
    before = {name: each.file("/etc/asset-backup/recipients.txt").sha256sum for name, each in hosts.items()}
    run = ansible_playbook(extra_vars={"backup_age_recipients": [secret("age_identity")]})
    after = {name: each.file("/etc/asset-backup/recipients.txt").sha256sum for name, each in hosts.items()}
    return run, before, after


def test_a_private_key_as_recipient_is_refused_before_the_host_is_touched(host, private_key_run):
    run, before, after = private_key_run
    name = host.backend.get_hostname()
    assert run.rc != 0
    assert "never the AGE-SECRET-KEY identity" in run.output, run.output[-3000:]
    assert run.recap()[name]["changed"] == 0
    assert after[name] == before[name]
