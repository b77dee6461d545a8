#!/usr/bin/env bash
# Benchmark of the app role on ONE fresh Debian container (run on demand, never in tests):
#   1. full converge from the bare base image: the scenario's prepare.yml (tls, redis and nginx roles)
#      then the app role (wheelhouse, release venv, units, first switch), until HTTPS answers;
#   2. the no-op re-run of the app role (must report changed=0);
#   3. an app-only deploy of a new release id with playbooks/deploy.yml while hey sends requests
#      through nginx (TLS), with the request counts hey reports for the whole deploy;
#   4. playbooks/rollback.yml back to the first release, under the same load.
# Usage: bench/deploy/run.sh [debian12|debian13]   (needs the Docker engine and the base images)
# Writes bench/deploy/report-<distro>.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
distro=${1:-debian12}
name=app-bench-$distro
net=app-bench
port=${BENCH_PORT:-18663}
work=$root/.build/bench-deploy-$distro
scenario=$root/roles/app/molecule/default
report=$root/bench/deploy/report-$distro.txt
export PATH=$root/.venv/bin:$PATH
export ANSIBLE_ROLES_PATH=$root/roles ANSIBLE_HOST_KEY_CHECKING=false ANSIBLE_PIPELINING=true
export ANSIBLE_CALLBACKS_ENABLED=ansible.posix.timer ANSIBLE_NOCOLOR=1
export MOLECULE_EPHEMERAL_DIRECTORY=$work   # converge.yml keeps its generated secret here

cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; docker network rm "$net" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
rm -rf "$work" && mkdir -p "$work"
docker network create "$net" >/dev/null
docker run -d --name "$name" --hostname "$name" --network "$net" --cgroupns=host \
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock --tmpfs /tmp --cap-add SYS_ADMIN \
  -p "127.0.0.1:$port:443" "${TESTBED_IMAGE_REPO:-asset-testbed}:$distro" /lib/systemd/systemd >/dev/null
until [[ $(docker exec "$name" systemctl is-system-running 2>/dev/null) =~ running|degraded ]]; do sleep 0.5; done
# One host in every tier (the deploy and rollback playbooks target the app group).
cat > "$work/inventory.yml" <<INV
all:
  vars:
    ansible_connection: community.docker.docker
    ansible_user: root
  children:
    app:
      hosts:
        $name:
    web:
      hosts:
        $name:
INV
# The scenario's converge variables, for the deploy and rollback playbooks.
python3 -c 'import sys, yaml; print(yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))[0]["vars"]))' \
  "$scenario/converge.yml" > "$work/vars.yml"

play() { ansible-playbook -i "$work/inventory.yml" "$@"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
recap() { grep -E "^$name +:" "$1" | sed 's/  */ /g'; }

t0=$(now)
play "$scenario/prepare.yml" > "$work/prepare.log"
play "$scenario/converge.yml" > "$work/converge.log"
t1=$(now)
curl -fsk --max-time 5 --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/health" > "$work/health.json"
play "$scenario/converge.yml" > "$work/noop.log"
t2=$(now)

docker exec "$name" systemd-run --unit=bench-load -p StandardOutput=file:/tmp/hey.out \
  hey -z 10m -c 4 -q 50 https://localhost/health >/dev/null
sleep 2
t3=$(now)
play "$root/playbooks/deploy.yml" -e @"$work/vars.yml" -e app_release_id=bench-next > "$work/deploy.log"
t4=$(now)
docker exec "$name" systemctl kill -s INT bench-load
sleep 2
docker exec "$name" cat /tmp/hey.out > "$work/hey.out"
docker exec "$name" systemd-run --unit=bench-load2 -p StandardOutput=file:/tmp/hey2.out \
  hey -z 10m -c 4 -q 50 https://localhost/health >/dev/null
sleep 2
t5=$(now)
play "$root/playbooks/rollback.yml" -e @"$work/vars.yml" > "$work/rollback.log"
t6=$(now)
docker exec "$name" systemctl kill -s INT bench-load2
sleep 2
docker exec "$name" cat /tmp/hey2.out > "$work/hey2.out"
curl -fsk --max-time 5 --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/health" > "$work/health-after.json"

{
  echo "# app role benchmark on $distro, $(date -u +%F) ($(nproc) cores, shared)"
  echo "command: bench/deploy/run.sh $distro"
  echo "full converge (bare container -> tls + redis + nginx + app, HTTPS answering): $(secs "$t0" "$t1") s"
  echo "  app role alone in it: $(grep -Eo 'Playbook run took .*' "$work/converge.log" | tail -1)"
  echo "no-op re-run of the app role: $(secs "$t1" "$t2") s   [$(recap "$work/noop.log")]"
  echo "app-only deploy (playbooks/deploy.yml) of a new release under load: $(secs "$t3" "$t4") s   [$(recap "$work/deploy.log")]"
  echo "requests during the deploy (hey -c 4 -q 50 through nginx/TLS):"
  sed -n '/Status code distribution/,$p' "$work/hey.out" | grep -v '^ *$' | sed 's/^/  /'
  grep -E "Requests/sec|Total:" "$work/hey.out" | sed 's/^/  /'
  echo "rollback (playbooks/rollback.yml) under load: $(secs "$t5" "$t6") s   [$(recap "$work/rollback.log")]"
  echo "requests during the rollback:"
  sed -n '/Status code distribution/,$p' "$work/hey2.out" | grep -v '^ *$' | sed 's/^/  /'
  echo "health after converge: $(cat "$work/health.json")"
  echo "health after rollback: $(cat "$work/health-after.json")"
} | tee "$report"
