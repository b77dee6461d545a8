#!/usr/bin/env bash
# Every test of the project, in stages; `make test` runs it after `make setup`.
#   scripts/test.sh                 all stages
#   scripts/test.sh lint toolkit    only the named stages (lint, toolkit, service, molecule, fullstack)
# Every stage runs even when an earlier one failed; the exit status is non-zero when any failed.
# Role scenarios are discovered: every roles/*/molecule/*/molecule.yml, run MOLECULE_JOBS (default 2)
# at a time (each has its own network and containers, see molecule/shared/create.yml); the multi-host scenarios
# (molecule/*/molecule.yml, the full stack) are the `fullstack` stage.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1

STAGES=("$@")
[[ ${#STAGES[@]} -gt 0 ]] || STAGES=(lint toolkit service molecule fullstack)
LOG_DIR="$ROOT/.build/test-logs"
mkdir -p "$LOG_DIR"
passed=() failed=()

run() {  # run NAME COMMAND...: one test unit, its output in a log, a line with the verdict
  local name="$1" log="$LOG_DIR/${1//\//_}.log" started=$SECONDS
  shift
  printf '==> %s\n' "$name"
  if "$@" >"$log" 2>&1; then
    passed+=("$name")
    printf '    ok     %s (%d s)\n' "$name" $((SECONDS - started))
  else
    failed+=("$name")
    printf '    FAILED %s (%d s); last lines of %s:\n' "$name" $((SECONDS - started)) "${log#"$ROOT"/}"
    tail -n 60 "$log" | sed 's/^/    | /'
  fi
}

stage_lint() {
  run lint/yamllint yamllint --strict .
  run lint/ansible-lint ansible-lint --profile production
  run lint/ruff ruff check tests molecule roles plugins bench scripts
}

stage_toolkit() {
  run toolkit/pytest pytest tests
}

stage_service() {
  run service/tests bash service/scripts/test.sh
}

stage_molecule() {  # role scenarios, MOLECULE_JOBS (default 2) at a time: each has its own network and containers
  local scenario role name unit verdict jobs="${MOLECULE_JOBS:-2}" results="$LOG_DIR/.molecule-results"
  : >"$results"
  for scenario in roles/*/molecule/*/molecule.yml; do
    role="$(basename "$(dirname "$(dirname "$(dirname "$scenario")")")")"
    name="$(basename "$(dirname "$scenario")")"
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n; done
    # In a subshell, run's verdict cannot reach passed/failed: it goes to $results, and run's
    # report is printed in one piece when the unit ends, so parallel units do not interleave.
    (
      unit="molecule/${role}/${name}" failed=()  # this unit's verdict only, not an earlier stage's
      run "$unit" bash -c "cd roles/${role} && molecule test -s ${name}" >"$LOG_DIR/.report-${role}-${name}"
      cat "$LOG_DIR/.report-${role}-${name}"
      if ((${#failed[@]})); then echo "failed $unit"; else echo "passed $unit"; fi >>"$results"
    ) &
  done
  wait
  while read -r verdict unit; do
    if [[ $verdict == passed ]]; then passed+=("$unit"); else failed+=("$unit"); fi
  done <"$results"
}

stage_fullstack() {
  local scenario name
  for scenario in molecule/*/molecule.yml; do
    [[ -e $scenario ]] || continue
    name="$(basename "$(dirname "$scenario")")"
    run "molecule/${name}" molecule test -s "${name}"
  done
}

for stage in "${STAGES[@]}"; do
  case "$stage" in
    lint | toolkit | service | molecule | fullstack) "stage_$stage" ;;
    *) echo "unknown stage: $stage (lint, toolkit, service, molecule, fullstack)" >&2; exit 2 ;;
  esac
done

echo
for name in "${failed[@]}"; do echo "FAILED: $name (log: .build/test-logs/${name//\//_}.log)"; done
echo "stages: ${#passed[@]} passed, ${#failed[@]} failed"
[[ ${#failed[@]} -eq 0 ]]
