"""Deploys under load, a refused release, the deploy lock and rollback (runs once, on both hosts).

The steps share state (the release each one leaves live), so they are one ordered test; it ends
where the converge left the hosts (the built release live) so that check mode still reports no change.
"""

import json
import os
import re

import testinfra

APP = "asset-classes-api"
FACT = "/etc/ansible/facts.d/asset_classes_api.fact"
NAMES = ["app-debian12", "app-debian13"]
LOCK = f"/opt/{APP}/deploy.lock"


def hosts():
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in NAMES}


def state(host):
    return json.loads(host.file(FACT).content_string)


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

    # 2. An unhealthy release (its database is unreachable): refused, traffic never moves.
    env_before = {name: h.check_output(f"sha256sum /opt/{APP}/shared/.env") for name, h in machines.items()}
    for h in machines.values():
        start_load(h)
    run = ansible_playbook(extra_vars={
        "app_release_id": "1.0.0-molecule-broken",
        "app_database_url": "postgresql+psycopg://nobody:nothing@127.0.0.1:9/none",
        "app_run_migrations": False,
        "app_health_retries": 5,
    })
    results = {name: stop_load(h) for name, h in machines.items()}
    assert run.rc != 0
    assert "was refused" in run.output
    assert "Health check of the new slot" in run.output
    for name, (codes, errors, report) in results.items():
        assert codes and set(codes) == {200}, f"{name}: {report}"
        assert errors == "", f"{name}: {report}"
    for name, h in machines.items():
        now = state(h)
        assert now["live_release"] == new_id
        assert health(h)["release"] == new_id
        idle = "green" if now["live_slot"] == "blue" else "blue"
        assert not h.service(f"{APP}@{idle}").is_running
        # The previous settings are back in place, and no lock is left behind.
        assert h.check_output(f"sha256sum /opt/{APP}/shared/.env") == env_before[name]
        assert not h.file(LOCK).exists

    # 3. The deploy lock: a second deploy refuses while a lock is held.
    for h in machines.values():
        h.check_output(f"echo 'release=other by=someone at=now' > {LOCK}")
    run = ansible_playbook(extra_vars={"app_release_id": "1.0.0-molecule-locked"})
    assert run.rc != 0
    assert "Another deploy holds the lock" in run.output
    assert "release=other by=someone" in run.output
    for h in machines.values():
        assert state(h)["live_release"] == new_id
        assert h.file(LOCK).exists

    # 4. Rollback (breaking the stale lock explicitly): the previous release serves again.
    run = ansible_playbook(extra_vars={"app_rollback": True, "app_deploy_lock_break": True})
    assert run.rc == 0, run.output[-5000:]
    for name, h in machines.items():
        now = state(h)
        assert now["live_release"] == built[name]
        assert now["previous_release"] == new_id
        assert health(h)["release"] == built[name]
        assert not h.file(LOCK).exists


def test_wrong_input_fails_at_validation_before_any_task(ansible_playbook):
    run = ansible_playbook(extra_vars={"app_blue_port": "eighty", "app_environment": "prod"})
    assert run.rc != 0
    assert "Validating arguments against arg spec" in run.output
    assert "app_environment" in run.output
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.recap()


def test_missing_secret_fails_at_validation(ansible_playbook):
    run = ansible_playbook(extra_vars={"app_secret_key": "change-me-please-change-me-please-0000"})
    assert run.rc != 0
    assert "app_secret_key must be a real secret" in run.output
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.recap()
