#!/usr/bin/env bash
# Every test of the project, in stages; `make test` runs it after `make setup`.
#   scripts/test.sh                 all stages
#   scripts/test.sh lint toolkit    only the named stages (lint, toolkit, service, molecule, fullstack)
# Every stage runs even when an earlier one failed; the exit status is non-zero when any failed.
# Molecule scenarios are discovered: every roles/*/molecule/*/molecule.yml (the `molecule` stage) and the
# multi-host ones, molecule/*/molecule.yml (the full stack, the `fullstack` stage). They run MOLECULE_JOBS
# (default 2) at a time, each with its own network and containers (see molecule/shared/create.yml); when
# both stages are asked for they share one pool, the full stack first: it is the longest, and queued
# last it ran alone for ~27 min while the other job slot stood idle.
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

scenario_units() {  # scenario_units STAGE...: "unit-name directory scenario" per scenario of the stages
  local stage scenario
  for stage in "$@"; do
    case "$stage" in
      fullstack) for scenario in molecule/*/molecule.yml; do
          [[ -e $scenario ]] && echo "molecule/$(basename "$(dirname "$scenario")") . $(basename "$(dirname "$scenario")")"
        done ;;
      molecule) for scenario in roles/*/molecule/*/molecule.yml; do
          local role="${scenario#roles/}" name
          role="${role%%/*}" name="$(basename "$(dirname "$scenario")")"
          echo "molecule/${role}/${name} roles/${role} ${name}"
        done ;;
    esac
  done
}

run_scenarios() {  # run_scenarios STAGE...: every scenario of the stages, MOLECULE_JOBS (default 2) at a time
  local unit dir name verdict jobs="${MOLECULE_JOBS:-2}" results="$LOG_DIR/.molecule-results"
  : >"$results"
  while read -r unit dir name; do
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n; done
    # In a subshell, run's verdict cannot reach passed/failed: it goes to $results, and run's
    # report is printed in one piece when the unit ends, so parallel units do not interleave.
    (
      failed=()  # this unit's verdict only, not an earlier stage's
      run "$unit" bash -c "cd ${dir} && molecule test -s ${name}" >"$LOG_DIR/.report-${unit//\//_}"
      cat "$LOG_DIR/.report-${unit//\//_}"
      if ((${#failed[@]})); then echo "failed $unit"; else echo "passed $unit"; fi >>"$results"
    ) &
  done < <(scenario_units "$@")
  wait
  while read -r verdict unit; do
    if [[ $verdict == passed ]]; then passed+=("$unit"); else failed+=("$unit"); fi
  done <"$results"
}

# The full stack first, then the role scenarios, in one pool when both stages are asked for.
scenario_stages=()
for stage in "${STAGES[@]}"; do [[ $stage == fullstack ]] && scenario_stages+=(fullstack); done
for stage in "${STAGES[@]}"; do [[ $stage == molecule ]] && scenario_stages+=(molecule); done
scenarios_done=""

for stage in "${STAGES[@]}"; do
  case "$stage" in
    lint | toolkit | service) "stage_$stage" ;;
    molecule | fullstack) [[ -n $scenarios_done ]] || run_scenarios "${scenario_stages[@]}"; scenarios_done=1 ;;
    *) echo "unknown stage: $stage (lint, toolkit, service, molecule, fullstack)" >&2; exit 2 ;;
  esac
done

echo
for name in "${failed[@]}"; do echo "FAILED: $name (log: .build/test-logs/${name//\//_}.log)"; done
echo "stages: ${#passed[@]} passed, ${#failed[@]} failed"
[[ ${#failed[@]} -eq 0 ]]
