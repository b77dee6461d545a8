"""Deploys under load, a refused release, the deploy lock, rollback and keeping N releases.

The steps share state (the release each one leaves live), so they are one ordered test; it ends
where the converge left the hosts (the built release live) so that check mode still reports no change.

Only the first deploy (under load) and the last one (back to the built release) run on both hosts.
The refused release, the lock, the rollback and the keep-N deploys run on ONE host (DEPLOY_HOST,
`--limit`): that code path is the role's own tasks, the same on both distros, while what differs per
distro (packages, Python, systemd, nginx) is covered on both hosts by converge, idempotence, check
mode, test_app.py and the two deploys here. Running them on both hosts cost most of the scenario's
time (about 1,050 s of its 1,270 s in CI, two hosts sharing two loaded cores).
"""

import json
import os
import re

import testinfra

APP = "asset-classes-api"
FACT = "/etc/ansible/facts.d/asset_classes_api.fact"
NAMES = ["app-debian12", "app-debian13"]
# The one host that runs the distro-independent deploys (see the docstring).
DEPLOY_HOST = "app-debian13"
BASE = f"/opt/{APP}"
LOCK = f"{BASE}/deploy.lock"
KEEP = 2  # app_keep_releases in converge.yml
# What a deploy may change on a host: the app tree (releases, venvs, shared/, slots/*.env, links, the
# lock), the units and other files the role writes, the recorded state and the nginx upstream it switches.
WRITTEN = [BASE, f"/etc/systemd/system/{APP}@.service", f"/etc/systemd/system/{APP}-healthcheck.service",
           f"/etc/systemd/system/{APP}-healthcheck.timer", f"/etc/logrotate.d/{APP}",
           f"/usr/local/bin/{APP}-healthcheck", FACT, "/etc/nginx/conf.d/upstream-asset_classes_api.conf"]


def hosts():
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in NAMES}


def state(host):
    return json.loads(host.file(FACT).content_string)


def releases(host):
    return set(host.check_output(f"ls -1 {BASE}/releases").split())


def snapshot(host):
    """Every path a deploy writes: type, mode, owner, size, mtime, link target, and each file's SHA-256;
    and the slots' units (state and main PID)."""
    paths = " ".join(WRITTEN)
    listing = host.check_output(f"find {paths} -printf '%p %y %m %u:%g %s %T@ %l\\n' | LC_ALL=C sort")
    sums = host.check_output(f"find {paths} -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum")
    units = host.check_output(f"systemctl show -p Id -p ActiveState -p MainPID '{APP}@blue' '{APP}@green'")
    return listing, sums, units


def health(host):
    return json.loads(host.check_output("curl -fsS --max-time 5 -k https://localhost/health"))


def start_load(host):
    """hey sends requests through nginx (TLS) until stopped; its report goes to /tmp/hey.out."""
    host.run("systemctl stop app-load 2>/dev/null; systemctl reset-failed app-load 2>/dev/null; rm -f /tmp/hey.out")
    run = host.run("systemd-run --unit=app-load -p StandardOutput=file:/tmp/hey.out -p StandardError=journal "
                   "hey -z 10m -c 4 -q 20 https://localhost/health")
    assert run.rc == 0, run.stderr
    # The load is running and answered before the deploy starts.
    assert host.run("sleep 2; systemctl is-active app-load").stdout.strip() == "active"


def stop_load(host):
    """SIGINT makes hey stop and print its report; return the status code counts and errors."""
    host.run("systemctl kill -s INT app-load")
    host.run("for i in $(seq 40); do systemctl is-active -q app-load || break; sleep 0.25; done")
    report = host.file("/tmp/hey.out").content_string
    codes = {int(code): int(count) for code, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", report)}
    errors = report.split("Error distribution:")[1] if "Error distribution:" in report else ""
    return codes, errors.strip(), report


def test_deploy_refuse_lock_and_rollback(ansible_playbook):
    machines = hosts()
    first = {name: state(h) for name, h in machines.items()}
    built = {name: s["live_release"] for name, s in first.items()}

    # 1. A new release under load: zero failed requests, the other slot now serves it.
    new_id = "1.0.0-molecule-next"
    for h in machines.values():
        start_load(h)
    run = ansible_playbook(extra_vars={"app_release_id": new_id})
    results = {name: stop_load(h) for name, h in machines.items()}
    assert run.rc == 0, run.output[-5000:]
    for name, (codes, errors, report) in results.items():
        assert codes and set(codes) == {200}, f"{name}: {report}"
        assert sum(codes.values()) > 100, f"{name}: too few requests during the deploy: {report}"
        assert errors == "", f"{name}: {report}"
    for name, h in machines.items():
        now = state(h)
        assert now["live_release"] == new_id
        assert now["previous_release"] == built[name]
        assert now["live_slot"] != first[name]["live_slot"]
        assert health(h)["release"] == new_id
        assert not h.service(f"{APP}@{first[name]['live_slot']}").is_running

    # 2. to 5. on one host (see the docstring); the other keeps serving new_id untouched.
    one = {DEPLOY_HOST: machines[DEPLOY_HOST]}
    other = {name: h for name, h in machines.items() if name != DEPLOY_HOST}
    untouched = {name: snapshot(h) for name, h in other.items()}

    # 2. An unhealthy release (its database is unreachable): refused, traffic never moves.
    refused_release(ansible_playbook, one, new_id)

    # 3. The deploy lock comes first (a refused deploy changes nothing).
    lock_comes_first(ansible_playbook, one, new_id)

    # 4. Rollback (breaking the stale lock explicitly): the previous release serves again. With
    #    app_keep_releases 2 the refused release of step 2 goes: only the live and the previous remain.
    run = ansible_playbook(extra_vars={"app_rollback": True, "app_deploy_lock_break": True}, limit=DEPLOY_HOST)
    assert run.rc == 0, run.output[-5000:]
    for name, h in one.items():
        now = state(h)
        assert now["live_release"] == built[name]
        assert now["previous_release"] == new_id
        assert health(h)["release"] == built[name]
        assert not h.file(LOCK).exists
        assert releases(h) == {built[name], new_id}

    # 5. Keep N releases.
    keep_n_releases(ansible_playbook, one)

    # The limited runs never touched the other host.
    for name, h in other.items():
        assert snapshot(h) == untouched[name], f"{name}: a run limited to {DEPLOY_HOST} changed it"

    # 6. Back to where the converge left the hosts, on both: the built release goes live with the
    #    converge's own settings (a plain deploy on the other host; on DEPLOY_HOST the built release,
    #    pruned in step 5, is installed again from its wheelhouse).
    run = ansible_playbook()
    assert run.rc == 0, run.output[-5000:]
    for name, h in machines.items():
        now = state(h)
        previous = "1.0.0-molecule-r4" if name == DEPLOY_HOST else new_id
        assert (now["live_release"], now["previous_release"]) == (built[name], previous)
        assert releases(h) == {built[name], previous}
        assert health(h)["release"] == built[name]
        assert not h.file(LOCK).exists


def refused_release(ansible_playbook, machines, live):
    """A release whose database is unreachable fails its health check: the run fails with the reason,
    traffic (hey: only 200s) and /health stay on the live release, .env is the old one, no lock is left."""
    env_before = {name: h.check_output(f"sha256sum /opt/{APP}/shared/.env") for name, h in machines.items()}
    for h in machines.values():
        start_load(h)
    run = ansible_playbook(extra_vars={
        "app_release_id": "1.0.0-molecule-broken",
        "app_database_url": "postgresql+psycopg://nobody:nothing@127.0.0.1:9/none",
        "app_run_migrations": False,
        "app_health_retries": 5,
    }, limit=",".join(machines))
    results = {name: stop_load(h) for name, h in machines.items()}
    assert run.rc != 0
    assert "was refused" in run.output
    assert "Health check of the new slot" in run.output
    assert set(run.recap()) == set(machines), run.recap()
    for name, (codes, errors, report) in results.items():
        assert codes and set(codes) == {200}, f"{name}: {report}"
        assert errors == "", f"{name}: {report}"
    for name, h in machines.items():
        now = state(h)
        assert now["live_release"] == live
        assert health(h)["release"] == live
        idle = "green" if now["live_slot"] == "blue" else "blue"
        assert not h.service(f"{APP}@{idle}").is_running
        # The previous settings are back in place, and no lock is left behind.
        assert h.check_output(f"sha256sum /opt/{APP}/shared/.env") == env_before[name]
        assert not h.file(LOCK).exists


def lock_comes_first(ansible_playbook, machines, live):
    """The lock comes first: a deploy that finds it held refuses before it changes anything on the host,
    although it brings a new release, a new .env value and new Gunicorn/unit settings; a check-mode run
    only reads the lock and refuses the same way."""
    for h in machines.values():
        h.check_output(f"echo 'release=other by=someone at=now' > {LOCK}")
    before = {name: snapshot(h) for name, h in machines.items()}
    changes = {"app_release_id": "1.0.0-molecule-locked", "app_log_level": "DEBUG", "app_gunicorn_graceful_timeout": 31}
    limit = ",".join(machines)
    run = ansible_playbook(extra_vars=changes, limit=limit)
    assert run.rc != 0
    assert "Another deploy holds the lock" in run.output
    assert "release=other by=someone" in run.output
    assert set(run.recap()) >= set(machines), run.output[-3000:]
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.recap()
    check = ansible_playbook(extra_vars=changes, check=True, limit=limit)
    assert check.rc != 0
    assert "Another deploy holds the lock" in check.output
    for name, h in machines.items():
        after = snapshot(h)
        assert after[0] == before[name][0], f"{name}: the refused deploys changed files"
        assert after[1] == before[name][1], f"{name}: the refused deploys changed file contents"
        assert after[2] == before[name][2], f"{name}: the refused deploys touched the slots"
        assert state(h)["live_release"] == live
        assert h.file(LOCK).content_string == "release=other by=someone at=now\n"


def keep_n_releases(ansible_playbook, machines):
    """After N + 2 deploys of distinct releases (the built one, new_id, r3, r4; the new ids reuse the built
    wheelhouse) exactly N remain, the live and the previous one among them; a switch that changes only the
    configuration keeps both. The caller then deploys the built release again (installed anew: pruned here)."""
    r3, r4 = "1.0.0-molecule-r3", "1.0.0-molecule-r4"
    limit = ",".join(machines)
    for release in (r3, r4):
        run = ansible_playbook(extra_vars={"app_release_id": release}, limit=limit)
        assert run.rc == 0, run.output[-5000:]
    for h in machines.values():
        now = state(h)
        assert (now["live_release"], now["previous_release"]) == (r4, r3)
        assert len(releases(h)) == KEEP
        assert releases(h) == {r4, r3}
        assert health(h)["release"] == r4
    # A switch that changes only the configuration keeps the recorded previous release, and its files.
    slots = {name: state(h)["live_slot"] for name, h in machines.items()}
    run = ansible_playbook(extra_vars={"app_release_id": r4, "app_log_level": "DEBUG"}, limit=limit)
    assert run.rc == 0, run.output[-5000:]
    for name, h in machines.items():
        now = state(h)
        assert now["live_slot"] != slots[name]
        assert (now["live_release"], now["previous_release"]) == (r4, r3)
        assert releases(h) == {r4, r3}


def test_wrong_input_fails_at_validation_before_any_task(ansible_playbook):
    """Argument validation is the same on both distros: one host (DEPLOY_HOST) shows it."""
    run = ansible_playbook(extra_vars={"app_blue_port": "eighty", "app_environment": "prod"}, limit=DEPLOY_HOST)
    assert run.rc != 0
    assert "Validating arguments against arg spec" in run.output
    assert "app_environment" in run.output
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.recap()


def test_missing_secret_fails_at_validation(ansible_playbook):
    """Preflight's asserts are the same on both distros: one host (DEPLOY_HOST) shows it."""
    run = ansible_playbook(extra_vars={"app_secret_key": "change-me-please-change-me-please-0000"},
                           limit=DEPLOY_HOST)
    assert run.rc != 0
    assert "app_secret_key must be a real secret" in run.output
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.recap()
