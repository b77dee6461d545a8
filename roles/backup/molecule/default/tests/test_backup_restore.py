"""The restore drill: playbooks/restore.yml on Debian 12 and Debian 13, against real Redis and PostgreSQL.

Known data is written (Redis keys with values; rows of a table of the service's database, owned by its
owner), backed up, destroyed, restored with restore.yml and compared. A damaged backup is refused before
anything stops, and the live data stays as it was. Each host is a single server (redis, db and app);
its app slot is a stand-in unit (prepare.yml) that restore.yml must stop and start again.
"""

import os
import shlex
import tempfile
import uuid
from pathlib import Path

import pyrage
import pytest
from common import SCRIPT, admin, backup, identity, psql, put_file, read_bytes, secret, seed_probe_table, today

RESTORE = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).parents[1] / "playbooks" / "restore.yml"
WRITER, IDLE = "asset-classes-api@blue.service", "asset-classes-api@green.service"
ROWS = "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM drill_rows t"


def restore(host, ansible_playbook, **extra_vars):
    return ansible_playbook(playbook=str(RESTORE), extra_vars=extra_vars or None, limit=host.backend.get_hostname())


def unit(host, name, *props):
    out = host.check_output(f"systemctl show {name} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines())


def redis_cli(host, commands, *options):
    """Commands (one a line) through one redis-cli as the administrator; its stdout lines."""
    env = f"REDISCLI_AUTH={shlex.quote(secret('redis_password'))} "
    run = host.run(f"printf '%s\\n' {' '.join(shlex.quote(c) for c in commands)} | "
                   f"{env}redis-cli -s /run/redis/redis-server.sock {' '.join(options)}")
    assert run.rc == 0, run.stderr
    return run.stdout.splitlines()


def redis_data(host):
    """Every key with its value (the drill writes strings and one hash), in three redis-cli calls."""
    rc, keys = admin(host, "--scan")
    assert rc == 0, keys
    keys = sorted(keys.split())
    if not keys:
        return {}
    kinds = redis_cli(host, [f"TYPE {k}" for k in keys])
    reads = [f"{'HGETALL' if kind == 'hash' else 'GET'} {key}" for key, kind in zip(keys, kinds, strict=True)]
    return dict(zip(keys, redis_cli(host, reads, "--csv"), strict=True))


def postmaster_started(host):
    return psql(host, "SELECT pg_postmaster_start_time()", db="postgres").stdout.strip()


def write_known_data(host):
    tag = uuid.uuid4().hex
    replies = redis_cli(host, [f"SET drill:key:{i} value-{i}-{tag}" for i in range(300)]
                        + [f"HSET drill:hash owner drill tag {tag}"])
    assert replies == ["OK"] * 300 + ["2"], replies[-3:]
    seed_probe_table(host)
    made = psql(host, "SET ROLE asset_classes; DROP TABLE IF EXISTS drill_rows;"
                      " CREATE TABLE drill_rows (id int PRIMARY KEY, name text NOT NULL, amount numeric(12, 2));"
                      f" INSERT INTO drill_rows SELECT i, 'pool-' || i || '-{tag}', i * 1.25"
                      " FROM generate_series(1, 1000) i;")
    assert made.rc == 0, made.stderr


def flush_redis(host):
    """FLUSHALL is disabled by the redis role: remove every key one by one."""
    env = f"REDISCLI_AUTH={shlex.quote(secret('redis_password'))} "
    cli = f"{env}redis-cli -s /run/redis/redis-server.sock"
    assert host.run(f"{cli} --scan | xargs -r -n 100 env {cli} UNLINK >/dev/null").rc == 0
    assert admin(host, "DBSIZE") == (0, "0")


def table_owner(host, table):
    return psql(host, f"SELECT tableowner FROM pg_tables WHERE tablename = '{table}'").stdout.strip()


# --- the drill ------------------------------------------------------------------------------------

def test_drill_restores_redis_keys_and_database_rows_after_they_are_destroyed(host, ansible_playbook):
    write_known_data(host)
    keys, rows = redis_data(host), psql(host, ROWS).stdout.strip()
    assert sum(key.startswith("drill:") for key in keys) == 301 and rows.startswith("1000:")
    assert backup(host, kind="redis").rc == 0 and backup(host, kind="postgresql").rc == 0
    writer = unit(host, WRITER, "InvocationID", "ActiveState")
    assert writer["ActiveState"] == "active"

    flush_redis(host)
    assert psql(host, "DROP TABLE drill_rows").rc == 0

    run = restore(host, ansible_playbook)
    assert run.rc == 0, run.output[-4000:]
    assert redis_data(host) == keys
    assert psql(host, ROWS).stdout.strip() == rows
    assert table_owner(host, "drill_rows") == "asset_classes"  # the owner is kept
    # the plain copies are gone, from the host and from the controller
    assert host.run("find /backup -name '.restore*'").stdout.strip() == ""
    assert not list(Path(tempfile.gettempdir()).glob("ansible.*.restore"))
    # the running slot was stopped before Redis stopped and started again after Redis started;
    # the idle slot stays idle
    after = unit(host, WRITER, "InvocationID", "ActiveState", "InactiveEnterTimestampMonotonic",
                 "ActiveEnterTimestampMonotonic")
    redis = unit(host, "redis-server", "InactiveEnterTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    assert after["ActiveState"] == "active" and after["InvocationID"] != writer["InvocationID"]
    assert (int(after["InactiveEnterTimestampMonotonic"]) < int(redis["InactiveEnterTimestampMonotonic"])
            < int(redis["ActiveEnterTimestampMonotonic"]) < int(after["ActiveEnterTimestampMonotonic"]))
    assert unit(host, IDLE, "ActiveState")["ActiveState"] == "inactive"


def test_drill_restores_a_named_backup_into_a_dropped_database(host, ansible_playbook):
    rows = psql(host, ROWS).stdout.strip()
    assert backup(host, kind="postgresql").rc == 0
    day = host.check_output("date -d yesterday +%Y%m%d")
    older = f"/backup/postgresql/postgresql-backup-{day}.dump.age"
    assert host.run(f"mv {today(host, 'postgresql')} {older} && touch -d yesterday {older}").rc == 0
    # today's backup holds a row more: restoring yesterday's must not bring it back
    assert psql(host, "SET ROLE asset_classes; INSERT INTO drill_rows VALUES (1001, 'after', 0)").rc == 0
    assert backup(host, kind="postgresql").rc == 0
    redis_pid = unit(host, "redis-server", "MainPID")["MainPID"]

    assert psql(host, "DROP DATABASE asset_classes WITH (FORCE)", db="postgres").rc == 0
    run = restore(host, ansible_playbook, backup_restore_date=day, backup_restore_kinds=["postgresql"])
    assert run.rc == 0, run.output[-4000:]
    assert psql(host, ROWS).stdout.strip() == rows
    # created again with its owner and its privileges: only the owner and the backup role may connect
    assert psql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'asset_classes'",
                db="postgres").stdout.strip() == "asset_classes"
    assert psql(host, "SELECT has_database_privilege('public', 'asset_classes', 'CONNECT'),"
                      " has_database_privilege('backup', 'asset_classes', 'CONNECT')").stdout.strip() == "f|t"
    assert table_owner(host, "drill_rows") == "asset_classes"
    assert unit(host, "redis-server", "MainPID")["MainPID"] == redis_pid  # Redis was not asked for
    host.run(f"rm -f {older}")


# --- a damaged backup is refused, the live data untouched -------------------------------------------

def _damage(data, how):
    if how == "truncated":
        return data[:len(data) // 2]
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 4]) + data[middle + 4:]


REFUSED = {
    # the encrypted file itself is damaged: age's authentication refuses it on the controller
    "redis-encrypted-truncated": ("redis", "encrypted", "truncated", "does not decrypt"),
    "postgresql-encrypted-flipped": ("postgresql", "encrypted", "flipped", "does not decrypt"),
    # a file that decrypts, to a damaged snapshot or dump: the kind's checker refuses it on the host
    "redis-plain-flipped": ("redis", "plain", "flipped", "failed verification"),
    "postgresql-plain-truncated": ("postgresql", "plain", "truncated", "failed verification"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_damaged_backup_is_refused_before_anything_stops(host, ansible_playbook, case):
    kind, layer, how, message = REFUSED[case]
    good = read_bytes(host, today(host, kind))
    if layer == "encrypted":
        bad = _damage(good, how)
    else:
        recipient = pyrage.x25519.Recipient.from_str(secret("age_recipient"))
        bad = pyrage.encrypt(_damage(pyrage.decrypt(good, [identity()]), how), [recipient])
    day = host.check_output("date -d tomorrow +%Y%m%d")  # the newest: the default choice
    name = today(host, kind).replace(host.check_output("date +%Y%m%d"), day)
    put_file(host, bad, name)
    keys, rows = redis_data(host), psql(host, ROWS).stdout.strip()
    redis_pid, postgresql_started = unit(host, "redis-server", "MainPID")["MainPID"], postmaster_started(host)
    writer = unit(host, WRITER, "InvocationID")["InvocationID"]
    try:
        run = restore(host, ansible_playbook, backup_restore_kinds=[kind])
    finally:
        host.run(f"rm -f {name}")
    assert run.rc != 0
    assert message in run.output and Path(name).name in run.output, run.output[-4000:]
    assert "nothing was stopped and the live data is untouched" in run.output
    assert redis_data(host) == keys and psql(host, ROWS).stdout.strip() == rows
    # neither server was stopped or restarted
    assert unit(host, "redis-server", "MainPID")["MainPID"] == redis_pid
    assert postmaster_started(host) == postgresql_started
    assert unit(host, WRITER, "InvocationID")["InvocationID"] == writer  # never stopped
    assert host.run("find /backup -name '.restore*'").stdout.strip() == ""


def test_restore_verifies_again_and_refuses_a_damaged_plain_file_by_hand(host):
    """`asset-backup restore` (what restore.yml runs once the writers are stopped) checks the file itself."""
    host.run("head -c 1000 /etc/services > /root/not-a-dump")
    run = host.run(f"{SCRIPT} restore postgresql /root/not-a-dump")
    host.run("rm -f /root/not-a-dump")
    assert run.rc != 0 and "failed verification: refused" in run.stderr, run.stderr
