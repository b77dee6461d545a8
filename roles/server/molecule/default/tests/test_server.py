"""Behaviour of the server baseline on a converged host."""

import contextlib
import os
import pathlib
import re

import pytest
import testinfra
import yaml

SSH_DROPIN = "/etc/ssh/sshd_config.d/00-server-hardening.conf"
HOSTS = ("server-debian12", "server-debian13")
ROLE_DEFAULTS = yaml.safe_load((pathlib.Path(__file__).parents[3] / "defaults" / "main.yml").read_text())


def test_admin_user_can_sudo_without_password(host):
    result = host.run("runuser -u opsadmin -- sudo -n true")
    assert result.rc == 0, result.stderr


def test_user_outside_admin_group_cannot_sudo(host):
    host.run("id nobodyadmin || useradd --no-create-home nobodyadmin")
    result = host.run("runuser -u nobodyadmin -- sudo -n true")
    assert result.rc != 0


def test_admin_key_is_the_only_authorized_key(host):
    keys = host.file("/home/opsadmin/.ssh/authorized_keys")
    assert keys.mode == 0o600
    assert keys.user == "opsadmin"
    assert keys.content_string.strip().splitlines() == [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBpRmEBq3HF1JgLnxw1ewpO1pH4XQMKPZrHXwhKzm8o5 molecule@testbed"
    ]


def test_sudoers_dropin_is_valid_and_private(host):
    dropin = host.file("/etc/sudoers.d/10-server-admins")
    assert dropin.mode == 0o440
    assert host.run("visudo -c").rc == 0


def effective_sshd(host):
    out = host.check_output("sshd -T -C user=opsadmin,host=client,addr=192.0.2.10")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_sshd_refuses_passwords_and_root_logins(host):
    config = effective_sshd(host)
    assert config["passwordauthentication"] == "no"
    assert config["kbdinteractiveauthentication"] == "no"
    assert config["permitrootlogin"] == "no"
    assert config["allowgroups"] == "admins"


def test_hardening_wins_over_a_later_dropin(host):
    # cloud-init writes 50-cloud-init.conf with PasswordAuthentication yes; ours must still win.
    host.run("echo 'PasswordAuthentication yes' > /etc/ssh/sshd_config.d/50-cloud-init.conf")
    try:
        assert effective_sshd(host)["passwordauthentication"] == "no"
    finally:
        host.run("rm -f /etc/ssh/sshd_config.d/50-cloud-init.conf")


def test_sshd_is_listening(host):
    assert host.service("ssh").is_running
    assert host.socket("tcp://0.0.0.0:22").is_listening


def ruleset(host):
    return host.check_output("nft list table inet server_firewall")


def test_firewall_drops_by_default_and_accepts_ssh_first(host):
    rules = ruleset(host)
    assert "policy drop" in rules
    input_chain = rules.split("chain input", 1)[1]
    first_rule = [line.strip() for line in input_chain.splitlines() if line.strip() and "type filter" not in line][1]
    assert first_rule == "tcp dport 22 accept"
    assert "tcp dport { 80, 443 } accept" in rules


def _testbed_host(name):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")


def _can_connect(client, address, port):
    probe = (f"import socket; s = socket.create_connection(('{address}', {port}), timeout=2); s.close()")
    return client.run(f"python3 -c \"{probe}\"").rc == 0


def test_internal_ports_open_only_to_their_tier():
    # server-debian12 is in group app (may reach 6379); server-debian13 in monitoring (may reach 9100).
    app, monitoring = _testbed_host("server-debian12"), _testbed_host("server-debian13")
    app_ip = app.check_output("hostname -I").split()[0]
    app.run("systemd-run --unit=probe-6379 python3 -m http.server 6379")
    app.run("systemd-run --unit=probe-9100 python3 -m http.server 9100")
    app.run("systemd-run --unit=probe-8080 python3 -m http.server 8080")
    try:
        assert _can_connect(monitoring, app_ip, 9100), "monitoring host must reach port 9100"
        assert not _can_connect(monitoring, app_ip, 6379), "only the app tier may reach port 6379"
        assert not _can_connect(monitoring, app_ip, 8080), "a port nobody opened must be dropped"
        assert _can_connect(app, app_ip, 6379)
    finally:
        app.run("systemctl stop probe-6379 probe-9100 probe-8080")


def test_a_limited_run_keeps_the_peers_in_the_firewall(ansible_playbook):
    """--limit to one host: the other hosts' addresses still come from their (gathered) facts."""
    run = ansible_playbook(limit="server-debian12")
    assert run.rc == 0, run.output
    assert run.recap()["server-debian12"]["changed"] == 0, run.output
    test_internal_ports_open_only_to_their_tier()


def test_other_tables_survive_a_reload(host):
    host.run("nft add table inet othertool && nft add chain inet othertool keep")
    try:
        assert host.run("nft -f /etc/nftables.conf").rc == 0
        assert host.run("nft list table inet othertool").rc == 0
    finally:
        host.run("nft delete table inet othertool")


def test_journal_is_persistent(host):
    assert host.file("/var/log/journal").is_directory
    host.run("systemctl restart systemd-journald")
    assert host.run("journalctl --header | grep -q '/var/log/journal'").rc == 0


def _bytes(size):
    """journald's size notation (500M, 500.0M, 1.5G) in bytes."""
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?)", size).groups()
    return float(number) * 1024 ** " KMGT".index(unit or " ")


def test_journald_applies_the_roles_retention(host):
    """journald reads the role's drop-in and uses its values (the config it merges and its own report)."""
    # Effective settings: the last [Journal] assignment of each key across all the files journald reads.
    effective = {}
    for line in host.check_output("systemd-analyze cat-config systemd/journald.conf").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            effective[key.strip()] = value.strip()
    assert effective["SystemMaxUse"] == ROLE_DEFAULTS["server_journald_system_max_use"]
    assert effective["MaxRetentionSec"] == ROLE_DEFAULTS["server_journald_max_retention"]
    # The running journald reports the disk cap it enforces when it opens the system journal.
    host.run("systemctl restart systemd-journald")
    usage = host.check_output("journalctl -o cat MESSAGE_ID=ec387f577b844b8fa948f33cad9a75e6")
    report = [line for line in usage.splitlines() if line.startswith("System Journal")][-1]
    enforced = re.search(r", max ([\d.]+[KMGT]?),", report).group(1)
    assert _bytes(enforced) == _bytes(ROLE_DEFAULTS["server_journald_system_max_use"]), report


def test_sysctl_file_holds_exactly_the_roles_settings(host):
    # Applying is skipped in a container (/proc/sys is read-only, and net.core.netdev_max_backlog is not
    # even in a container's network namespace): the file is checked.
    lines = host.file("/etc/sysctl.d/60-server.conf").content_string.splitlines()
    settings = dict(line.split(" = ", 1) for line in lines if line and not line.startswith("#"))
    assert settings == {key: str(value) for key, value in ROLE_DEFAULTS["server_sysctl"].items()}


def test_limits_file_sets_the_roles_open_file_limit_for_everyone_and_root(host):
    # pam_limits cannot raise a session's hard limit in these containers (no CAP_SYS_RESOURCE): the file is checked.
    limit = ROLE_DEFAULTS["server_nofile_limit"]
    lines = host.file("/etc/security/limits.d/60-server.conf").content_string.splitlines()
    entries = {tuple(line.split()) for line in lines if line and not line.startswith("#")}
    assert entries == {(who, kind, "nofile", str(limit)) for who in ("*", "root") for kind in ("soft", "hard")}


def test_systemd_default_nofile_limit(host):
    assert host.check_output("systemctl show --property DefaultLimitNOFILE") == "DefaultLimitNOFILE=65536"


def test_unattended_upgrades_enabled(host):
    assert 'Unattended-Upgrade "1"' in host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert host.run("unattended-upgrade --dry-run -v 2>&1 | grep -q 'Allowed origins'").rc == 0


def test_wrong_input_fails_argument_validation_before_any_task(ansible_playbook):
    run = ansible_playbook({"server_ssh_permit_root_login": "yes"})
    assert run.rc != 0
    assert "Validation of arguments failed" in run.output or "argument spec validation" in run.output.lower()
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.recap()


def test_hardening_without_any_admin_is_refused_before_touching_the_host(ansible_playbook):
    run = ansible_playbook({"server_admin_users": []})
    assert run.rc != 0
    assert "define server_admin_users with at least one ssh key" in run.output
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.recap()


def test_a_changed_file_is_reported_by_check_mode_and_put_back(ansible_playbook):
    """Files in place are skipped without a round trip (path_state + needs_write); drift is not.

    The play runs on every host (not --limit): the firewall lists the peers' addresses from their facts.
    """
    name, other = "server-debian12", "server-debian13"
    host = _testbed_host(name)
    sysctl, journal = "/etc/sysctl.d/60-server.conf", "/var/log/journal"
    wanted = host.file(sysctl).content_string
    host.run(f"echo 'vm.swappiness = 1' >> {sysctl} && chmod 0600 {sysctl} && chmod g-s {journal}")

    check = ansible_playbook(check=True)
    assert check.rc == 0, check.output
    assert check.recap()[name]["changed"] >= 2 and check.recap()[other]["changed"] == 0, check.output
    assert f"--- before: {sysctl}" in check.output and "-vm.swappiness = 1" in check.output
    assert host.file(sysctl).mode == 0o600  # check mode changed nothing

    run = ansible_playbook()
    assert run.rc == 0, run.output
    assert host.file(sysctl).content_string == wanted
    assert host.file(sysctl).mode == 0o644
    assert host.file(journal).mode == 0o2755
    assert ansible_playbook().recap()[name]["changed"] == 0


# --- transactions: a bad change fails the play and leaves the working file and service in place ----



@contextlib.contextmanager
def _ssh_login_probe(host):
    """A throwaway key in the admin's authorized_keys for the test; the file is put back after."""
    keys = "/home/opsadmin/.ssh/authorized_keys"
    host.check_output("rm -f /root/probe_key* && ssh-keygen -q -t ed25519 -N '' -f /root/probe_key")
    host.check_output(f"cp -p {keys} /root/authorized_keys.orig && cat /root/probe_key.pub >> {keys}")
    try:
        yield
    finally:
        host.check_output(f"cp -p /root/authorized_keys.orig {keys}")
        host.check_output("rm -f /root/authorized_keys.orig /root/probe_key*")


def _ssh(host, command):
    """A new SSH session as the admin, over the container's loopback, with the probe key."""
    return host.run("ssh -i /root/probe_key -o BatchMode=yes -o StrictHostKeyChecking=no "
                    f"-o UserKnownHostsFile=/dev/null opsadmin@127.0.0.1 '{command}'")


def _new_ssh_login_works(host):
    login = _ssh(host, "id -un")
    return login.rc == 0 and login.stdout.strip() == "opsadmin"


def test_bad_sshd_option_fails_with_sshds_message_and_sshd_keeps_the_old_file(ansible_playbook):
    hosts = {name: _testbed_host(name) for name in HOSTS}
    before = {name: h.file(SSH_DROPIN).sha256sum for name, h in hosts.items()}
    with contextlib.ExitStack() as stack:
        for h in hosts.values():
            stack.enter_context(_ssh_login_probe(h))
            assert _new_ssh_login_works(h)
        run = ansible_playbook({"server_ssh_extra_options": {"NoSuchOption": "yes"}}, tags="server_ssh")
        assert run.rc != 0
        output = " ".join(run.output.split())  # the YAML callback folds long lines
        assert "Bad configuration option: NoSuchOption" in output, output[-3000:]
        assert "the previous file is in place and sshd keeps running on it" in output
        for name, h in hosts.items():
            assert run.recap()[name]["failed"] == 1 and run.recap()[name]["changed"] == 0, run.recap()
            assert h.file(SSH_DROPIN).sha256sum == before[name]
            assert h.service("ssh").is_running
            assert _new_ssh_login_works(h), name


def test_candidate_is_checked_with_the_whole_sshd_configuration(ansible_playbook):
    """A valid drop-in is refused when another file, read first, would turn passwords back on."""
    name = "server-debian12"
    host = _testbed_host(name)
    before = host.file(SSH_DROPIN).sha256sum
    first = "/etc/ssh/sshd_config.d/00-aa-before-ours.conf"
    host.check_output(f"echo 'PasswordAuthentication yes' > {first}")
    try:
        with _ssh_login_probe(host):
            run = ansible_playbook({"server_ssh_extra_options": {"MaxSessions": 4}}, tags="server_ssh", limit=name)
            assert run.rc != 0
            output = " ".join(run.output.split())
            assert "effective configuration would not be hardened" in output, output[-3000:]
            assert "passwordauthentication yes" in output
            assert host.file(SSH_DROPIN).sha256sum == before
            assert "MaxSessions" not in host.file(SSH_DROPIN).content_string
            assert _new_ssh_login_works(host)
    finally:
        host.run(f"rm -f {first}")


@pytest.mark.parametrize(("bad", "message"), [
    # renders "tcp dport 70000", which nft refuses ("Service out of range") once the host is reached
    ({"server_firewall_internal_ports": [{"port": 70000, "from_groups": ["app"]}]},
     "Ports must be between 1 and 65535: [70000]"),
    # renders "%ops admins ALL=..." (a sudoers syntax error), and groupadd refuses the name first
    ({"server_admin_group": "ops admins"}, "is not a group name groupadd and sudoers accept"),
])
def test_bad_firewall_or_sudo_input_is_refused_before_any_host_is_touched(ansible_playbook, bad, message):
    hosts = {name: _testbed_host(name) for name in HOSTS}
    files = "sha256sum /etc/nftables.conf /etc/sudoers.d/10-server-admins"
    before = {name: h.check_output(files) for name, h in hosts.items()}
    run = ansible_playbook(bad)
    assert run.rc != 0
    assert message in " ".join(run.output.split()), run.output[-3000:]
    assert "[server : users |" not in run.output and "[server : firewall |" not in run.output
    for name, h in hosts.items():
        assert run.recap()[name]["changed"] == 0, run.recap()
        assert h.check_output(files) == before[name]
        assert h.run("nft list table inet server_firewall").rc == 0
        assert h.run("runuser -u opsadmin -- sudo -n true").rc == 0
