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
from common import (
    SCRIPT,
    admin,
    backup,
    every_host,
    identity,
    psql,
    put_file,
    read_bytes,
    secret,
    seed_probe_table,
    today,
)

RESTORE = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).parents[1] / "playbooks" / "restore.yml"
WRITER, IDLE = "asset-classes-api@blue.service", "asset-classes-api@green.service"
ROWS = "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM drill_rows t"


def restore(ansible_playbook, host=None, **extra_vars):
    """restore.yml on every host at once, or on `host` only."""
    return ansible_playbook(playbook=str(RESTORE), extra_vars=extra_vars or None,
                            limit=host.backend.get_hostname() if host else None)


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
    replies = redis_cli(host, ["DEL drill:hash"] + [f"SET drill:key:{i} value-{i}-{tag}" for i in range(300)]
                        + [f"HSET drill:hash owner drill tag {tag}"])  # DEL: a verify run again finds it
    assert replies[1:] == ["OK"] * 300 + ["2"], replies[-3:]
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


def plain_is_gone(host):
    return host.run("find /backup -name '.restore*'").stdout.strip() == ""


def words(text):
    """The play's output with every run of white space as one space, and quotes unescaped: the YAML
    callback folds long lines, and escapes quotes in a double-quoted scalar."""
    return " ".join(text.replace('\\"', '"').split())


# --- the drill ------------------------------------------------------------------------------------
# Each drill is one restore.yml run on both hosts at once (a module fixture prepares both, runs the
# playbook once, and records what each host looks like right after it); the tests then assert per
# host. Both distros still restore their own Redis (7.0 / 8.0) and PostgreSQL (15 / 17) files, for
# half the playbook runs: restore.yml's plays run on the hosts side by side.

@pytest.fixture(scope="module")
def newest_drill(request, ansible_playbook):
    hosts, before = every_host(request), {}
    for name, each in hosts.items():
        write_known_data(each)
        before[name] = {"keys": redis_data(each), "rows": psql(each, ROWS).stdout.strip(),
                        "redis": backup(each, kind="redis"), "postgresql": backup(each, kind="postgresql"),
                        "writer": unit(each, WRITER, "InvocationID", "ActiveState")}
        flush_redis(each)
        assert psql(each, "DROP TABLE drill_rows").rc == 0
    run = restore(ansible_playbook)
    after = {name: {"keys": redis_data(each), "rows": psql(each, ROWS).stdout.strip(),
                    "owner": table_owner(each, "drill_rows"), "plain_gone": plain_is_gone(each),
                    "writer": unit(each, WRITER, "InvocationID", "ActiveState", "InactiveEnterTimestampMonotonic",
                                   "ActiveEnterTimestampMonotonic"),
                    "redis": unit(each, "redis-server", "InactiveEnterTimestampMonotonic",
                                  "ActiveEnterTimestampMonotonic"),
                    "idle": unit(each, IDLE, "ActiveState")["ActiveState"]}
             for name, each in hosts.items()}
    return run, before, after


def test_drill_restores_redis_keys_and_database_rows_after_they_are_destroyed(host, newest_drill):
    run, before, after = newest_drill
    before, after = before[host.backend.get_hostname()], after[host.backend.get_hostname()]
    assert sum(key.startswith("drill:") for key in before["keys"]) == 301 and before["rows"].startswith("1000:")
    assert before["redis"].rc == 0 and before["postgresql"].rc == 0
    assert before["writer"]["ActiveState"] == "active"

    assert run.rc == 0, run.output[-4000:]
    assert after["keys"] == before["keys"]
    assert after["rows"] == before["rows"]
    assert after["owner"] == "asset_classes"  # the owner is kept
    # the plain copies are gone, from the host and from the controller
    assert after["plain_gone"]
    assert not list(Path(tempfile.gettempdir()).glob("ansible.*.restore"))
    # the running slot was stopped before Redis stopped and started again after Redis started;
    # the idle slot stays idle
    writer, redis = after["writer"], after["redis"]
    assert writer["ActiveState"] == "active" and writer["InvocationID"] != before["writer"]["InvocationID"]
    assert (int(writer["InactiveEnterTimestampMonotonic"]) < int(redis["InactiveEnterTimestampMonotonic"])
            < int(redis["ActiveEnterTimestampMonotonic"]) < int(writer["ActiveEnterTimestampMonotonic"]))
    assert after["idle"] == "inactive"


@pytest.fixture(scope="module")
def named_drill(request, ansible_playbook, newest_drill):
    hosts, before = every_host(request), {}
    day = next(iter(hosts.values())).check_output("date -d yesterday +%Y%m%d")
    for name, each in hosts.items():
        rows = psql(each, ROWS).stdout.strip()
        assert backup(each, kind="postgresql").rc == 0
        older = f"/backup/postgresql/postgresql-backup-{day}.dump.age"
        assert each.run(f"mv {today(each, 'postgresql')} {older} && touch -d yesterday {older}").rc == 0
        # today's backup holds a row more: restoring yesterday's must not bring it back
        assert psql(each, "SET ROLE asset_classes; INSERT INTO drill_rows VALUES (1001, 'after', 0)").rc == 0
        assert backup(each, kind="postgresql").rc == 0
        before[name] = {"rows": rows, "redis_pid": unit(each, "redis-server", "MainPID")["MainPID"]}
        assert psql(each, "DROP DATABASE asset_classes WITH (FORCE)", db="postgres").rc == 0
    run = restore(ansible_playbook, backup_restore_date=day, backup_restore_kinds=["postgresql"])
    after = {}
    for name, each in hosts.items():
        after[name] = {
            "rows": psql(each, ROWS).stdout.strip(),
            "owner": psql(each, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'asset_classes'",
                          db="postgres").stdout.strip(),
            "connect": psql(each, "SELECT has_database_privilege('public', 'asset_classes', 'CONNECT'),"
                                  " has_database_privilege('backup', 'asset_classes', 'CONNECT')").stdout.strip(),
            "table_owner": table_owner(each, "drill_rows"),
            "redis_pid": unit(each, "redis-server", "MainPID")["MainPID"]}
        each.run(f"rm -f /backup/postgresql/postgresql-backup-{day}.dump.age")
    return run, before, after


def test_drill_restores_a_named_backup_into_a_dropped_database(host, named_drill):
    run, before, after = named_drill
    before, after = before[host.backend.get_hostname()], after[host.backend.get_hostname()]
    assert run.rc == 0, run.output[-4000:]
    assert after["rows"] == before["rows"]
    # created again with its owner and its privileges: only the owner and the backup role may connect
    assert after["owner"] == "asset_classes"
    assert after["connect"] == "f|t"
    assert after["table_owner"] == "asset_classes"
    assert after["redis_pid"] == before["redis_pid"]  # Redis was not asked for


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
# The four cases in one restore.yml run: each host gets a damaged newest backup of both kinds, one
# damaged in its encryption, the other in its plain content, crosswise, so that each distro's
# redis-check-rdb or pg_restore refuses one of them here. One refusal per kind and layer suffices:
# the refusal path (decrypt on the controller, `asset-backup verify` on the host, the plays that stop
# before any writer) is the same code on both distros, and test_backup.py already proves each
# distro's checker refusing both damages of both kinds (the same `verify` function).
REFUSED_ON = {"backup-debian12": ["redis-encrypted-truncated", "postgresql-plain-truncated"],
              "backup-debian13": ["redis-plain-flipped", "postgresql-encrypted-flipped"]}


@pytest.fixture(scope="module")
def refused_drill(request, ansible_playbook, named_drill):
    hosts, before, names = every_host(request), {}, {}
    assert set(hosts) == set(REFUSED_ON)
    recipient = pyrage.x25519.Recipient.from_str(secret("age_recipient"))
    for name, each in hosts.items():
        day = each.check_output("date -d tomorrow +%Y%m%d")  # the newest: the default choice
        for case in REFUSED_ON[name]:
            kind, layer, how, _ = REFUSED[case]
            good = read_bytes(each, today(each, kind))
            if layer == "encrypted":
                bad = _damage(good, how)
            else:
                bad = pyrage.encrypt(_damage(pyrage.decrypt(good, [identity()]), how), [recipient])
            names[name, case] = today(each, kind).replace(each.check_output("date +%Y%m%d"), day)
            put_file(each, bad, names[name, case])
        before[name] = {"keys": redis_data(each), "rows": psql(each, ROWS).stdout.strip(),
                        "redis_pid": unit(each, "redis-server", "MainPID")["MainPID"],
                        "postgresql_started": postmaster_started(each),
                        "writer": unit(each, WRITER, "InvocationID")["InvocationID"]}
    try:
        run = restore(ansible_playbook)
    finally:
        for (name, _), path in names.items():
            hosts[name].run(f"rm -f {path}")
    after = {name: {"keys": redis_data(each), "rows": psql(each, ROWS).stdout.strip(),
                    "redis_pid": unit(each, "redis-server", "MainPID")["MainPID"],
                    "postgresql_started": postmaster_started(each),
                    "writer": unit(each, WRITER, "InvocationID")["InvocationID"], "plain_gone": plain_is_gone(each)}
             for name, each in hosts.items()}
    return run, names, before, after


def test_a_damaged_backup_is_refused_before_anything_stops(host, refused_drill):
    run, names, before, after = refused_drill
    name = host.backend.get_hostname()
    assert run.rc != 0
    output = words(run.output)
    for case in REFUSED_ON[name]:
        message = REFUSED[case][3]
        assert f"{Path(names[name, case]).name} on {name} {message}" in output, (case, run.output[-4000:])
    assert "nothing was stopped and the live data is untouched" in output
    before, after = before[name], after[name]
    assert after["keys"] == before["keys"] and after["rows"] == before["rows"]
    # neither server was stopped or restarted
    assert after["redis_pid"] == before["redis_pid"]
    assert after["postgresql_started"] == before["postgresql_started"]
    assert after["writer"] == before["writer"]  # never stopped
    assert after["plain_gone"]


# --- a restore that fails after the writers stopped -------------------------------------------------
# The file passed verification, then the restore itself fails: `asset-backup restore` must leave the
# old data in service (Redis) or untouched (PostgreSQL) and restore.yml must fail saying so, with the
# writers left stopped and named. Each path runs on one host: it is the script's own shell, systemd
# and pg_restore's transaction, the same code on both distros, and the drills above already restore
# each distro's files; one restore.yml run each instead of two.

POISON = "molecule:poison"
DROP_IN = "/etc/systemd/system/redis-server.service.d/90-molecule-poison.conf"


def writers_named(output):
    return f"The writers stay stopped (restore.yml starts them only after every restore succeeded): {WRITER}" in output


def test_redis_that_does_not_start_on_the_restored_file_serves_the_old_data_again(host, ansible_playbook,
                                                                                   refused_drill):
    """redis-check-rdb accepts the file, so Redis's refusal to load it is simulated: a systemd check,
    run as root before redis-server, fails while the data file holds the key POISON."""
    if host.backend.get_hostname() != "backup-debian13":
        pytest.skip("one host suffices (see above); backup-debian13 runs it")
    assert admin(host, "SET", POISON, "1") == (0, "OK")
    assert backup(host, kind="redis").rc == 0
    assert admin(host, "DEL", POISON) == (0, "1")
    keys = redis_data(host)
    check = f"[Service]\nExecStartPre=+/bin/sh -c '! grep -qa {POISON} /var/lib/redis/dump.rdb'\n"
    assert host.run(f"printf {shlex.quote(check)} > {DROP_IN} && systemctl daemon-reload").rc == 0
    try:
        run = restore(ansible_playbook, host, backup_restore_kinds=["redis"])
        writer = unit(host, WRITER, "ActiveState")["ActiveState"]
    finally:
        host.run(f"rm -f {DROP_IN} && systemctl daemon-reload; systemctl start {WRITER}")
    assert run.rc != 0
    output = words(run.output)
    assert ("did not start on the restored file; the previous data file is back in place and Redis serves it"
            in output), run.output[-4000:]
    assert writers_named(output) and writer == "inactive"
    assert host.service("redis-server").is_running
    assert redis_data(host) == keys  # the data of before the restore, served again
    assert host.run("find /var/lib/redis -name '*.restoring'").stdout.strip() == ""
    assert plain_is_gone(host)
    assert backup(host, kind="redis").rc == 0  # today's file without the key, for what follows


def test_a_postgresql_restore_failing_inside_its_transaction_leaves_the_database_as_it_was(
        host, ansible_playbook, refused_drill):
    """The backup holds a table owned by a role that is gone when it is restored: pg_restore's
    ALTER TABLE ... OWNER TO fails after its --clean dropped and created the dump's tables."""
    if host.backend.get_hostname() != "backup-debian12":
        pytest.skip("one host suffices (see above); backup-debian12 runs it")
    assert psql(host, "CREATE ROLE molecule_gone; CREATE TABLE molecule_orphan (id int);"
                      " ALTER TABLE molecule_orphan OWNER TO molecule_gone").rc == 0
    assert backup(host, kind="postgresql").rc == 0
    assert psql(host, "DROP TABLE molecule_orphan; DROP ROLE molecule_gone").rc == 0
    # the live database differs from the backup: a row added since
    assert psql(host, "SET ROLE asset_classes; INSERT INTO drill_rows VALUES (1002, 'since the backup', 0)").rc == 0
    rows, started = psql(host, ROWS).stdout.strip(), postmaster_started(host)
    try:
        run = restore(ansible_playbook, host, backup_restore_kinds=["postgresql"])
        writer = unit(host, WRITER, "ActiveState")["ActiveState"]
    finally:
        host.run(f"systemctl start {WRITER}")
    assert run.rc != 0
    output = words(run.output)
    assert ("pg_restore into asset_classes failed; its transaction was rolled back, the database is unchanged"
            in output), run.output[-4000:]
    assert 'role "molecule_gone" does not exist' in output
    assert writers_named(output) and writer == "inactive"
    assert psql(host, ROWS).stdout.strip() == rows  # the row added since the backup is still there
    assert table_owner(host, "drill_rows") == "asset_classes"
    assert table_owner(host, "molecule_orphan") == ""  # nothing of the failed restore stayed
    assert postmaster_started(host) == started
    assert plain_is_gone(host)
    assert psql(host, "DELETE FROM drill_rows WHERE id = 1002").rc == 0
    assert backup(host, kind="postgresql").rc == 0  # today's file without the orphan, for what follows


def test_restore_verifies_again_and_refuses_a_damaged_plain_file_by_hand(host):
    """`asset-backup restore` (what restore.yml runs once the writers are stopped) checks the file itself."""
    host.run("head -c 1000 /etc/services > /root/not-a-dump")
    run = host.run(f"{SCRIPT} restore postgresql /root/not-a-dump")
    host.run("rm -f /root/not-a-dump")
    assert run.rc != 0 and "failed verification: refused" in run.stderr, run.stderr
