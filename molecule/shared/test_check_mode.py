"""Every scenario: check mode on the converged hosts must tell the truth, i.e. report no change.

Idempotence (a second converge with changed=0) runs before verify; this runs the converge playbook
once more with --check --diff and requires every host to finish with changed=0 and failed=0.
"""


def test_check_mode_on_converged_hosts_reports_no_change(ansible_playbook):
    run = ansible_playbook(check=True)
    recap = run.recap()
    assert run.rc == 0, run.output[-4000:]
    assert recap, "no PLAY RECAP in the output:\n" + run.output[-4000:]
    changed = {host: counts for host, counts in recap.items() if counts["changed"] or counts["failed"]}
    assert not changed, f"check mode reported changes: {changed}\n{run.output[-4000:]}"
