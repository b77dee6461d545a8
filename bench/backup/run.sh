#!/usr/bin/env bash
# Benchmark of the backup role on the backup scenario's containers (roles/backup/molecule/default:
# backup-debian12 with Redis 7.0 / PostgreSQL 15, backup-debian13 with Redis 8.0 / PostgreSQL 17).
# On demand, never a test. On each host:
#   - 100,000 Redis keys (70-byte values) and a table of 100,000 rows in the service's database;
#   - RUNS times: `asset-backup redis` and `asset-backup postgresql` (snapshot, verification,
#     encryption, retention, metric), then playbooks/restore.yml for redis alone and for postgresql
#     alone (whole run from the controller; and its restore task alone, `asset-backup restore`:
#     stop, replace, start and PING / pg_restore in one transaction), each checked afterwards
#     (100,000 keys, 100,000 rows); medians.
# It converges the scenario first (molecule converge: creates the containers when they are not
# there, a no-op run when they are) and leaves them running with the data removed again.
# On a shared machine run it under the scenario's lock, like the scenario itself.
# Usage: bench/backup/run.sh [RUNS]    (default 3)      Writes bench/backup/report.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH=$root/.venv/bin:$PATH ANSIBLE_NOCOLOR=1
runs=${1:-3}
hosts=(backup-debian12 backup-debian13)
work=$root/.build/bench-backup
report=$root/bench/backup/report.txt
mkdir -p "$work"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

load_start=$(load)
started=$(now)
(cd roles/backup && molecule converge) > "$work/converge.log" 2>&1 || { tail -40 "$work/converge.log"; exit 1; }
# The scenario's ephemeral directory: its inventory and the secrets prepare.yml and molecule.yml made.
eph=$(grep -l '^    backup-debian12:' "$HOME"/.ansible/tmp/molecule.*.default/inventory/ansible_inventory.yml \
      | head -n 1 | xargs dirname | xargs dirname)
export MOLECULE_EPHEMERAL_DIRECTORY=$eph ANSIBLE_CONFIG=$eph/ansible.cfg ANSIBLE_ROLES_PATH=$root/roles \
       ANSIBLE_LIBRARY=$root/plugins/modules ANSIBLE_FILTER_PLUGINS=$root/plugins/filter
password=$(head -n 1 "$eph/redis_password")

on() { local host=$1; shift; docker exec "$host" "$@"; }
cli() { local host=$1; shift; docker exec -i -e REDISCLI_AUTH="$password" "$host" redis-cli --no-auth-warning -s /run/redis/redis-server.sock "$@"; }
sql() { on "$1" bash -c "cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d asset_classes -c \"\$1\"" _ "$2"; }
# seconds of one command on the host, measured on the host
timed() { local host=$1; shift; on "$host" bash -c 's=$(date +%s.%N); "$@" >/dev/null || exit; e=$(date +%s.%N); awk -v a="$s" -v b="$e" "BEGIN { printf \"%.2f\", b - a }"' _ "$@"; }

seed() { # HOST: 100,000 keys through redis-cli --pipe, 100,000 rows
  awk 'BEGIN { for (i = 1; i <= 100000; i++) { k = "bench:key:" i; v = sprintf("value-%08d-%055d", i, i);
               printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v } }' \
    | cli "$1" --pipe > /dev/null
  sql "$1" "SET ROLE asset_classes; DROP TABLE IF EXISTS bench_pool;
            CREATE TABLE bench_pool (id int PRIMARY KEY, name text NOT NULL, amount numeric(12, 2), created timestamptz NOT NULL DEFAULT now());
            INSERT INTO bench_pool (id, name, amount) SELECT i, 'pool-' || i || '-' || md5(i::text), i * 1.25 FROM generate_series(1, 100000) i;"
}

keys() { cli "$1" --scan --pattern 'bench:key:*' | wc -l; }
rows() { sql "$1" "SELECT count(*) FROM bench_pool"; }

restore() { # HOST KIND LOG: restore.yml for one kind; prints "<whole run> <restore task>" seconds
  local started
  started=$(now)
  ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks ansible-playbook -i "$eph/inventory" playbooks/restore.yml \
    -l "$1" -e "{\"backup_restore_kinds\": [\"$2\"]}" > "$3" 2>&1 || { tail -40 "$3"; exit 1; }
  echo "$(secs "$started" "$(now)") $(grep -E 'restore_kind \| Restore from .* -+ [0-9.]+s$' "$3" | tail -n 1 | grep -oE '[0-9.]+s$' | tr -d s)"
}

lines=()
for host in "${hosts[@]}"; do
  seed "$host"
  [ "$(keys "$host")" = 100000 ] && [ "$(rows "$host")" = 100000 ] || { echo "seeding $host failed" >&2; exit 1; }
  declare -a b_redis=() b_pg=() r_redis=() r_redis_task=() r_pg=() r_pg_task=()
  for i in $(seq 1 "$runs"); do
    b_redis+=("$(timed "$host" /usr/local/sbin/asset-backup redis)")
    b_pg+=("$(timed "$host" /usr/local/sbin/asset-backup postgresql)")
    read -r whole task <<<"$(restore "$host" redis "$work/$host-restore-redis-$i.log")"
    r_redis+=("$whole") r_redis_task+=("$task")
    [ "$(keys "$host")" = 100000 ] || { echo "$host: the restore did not bring back 100,000 keys" >&2; exit 1; }
    read -r whole task <<<"$(restore "$host" postgresql "$work/$host-restore-postgresql-$i.log")"
    r_pg+=("$whole") r_pg_task+=("$task")
    [ "$(rows "$host")" = 100000 ] || { echo "$host: the restore did not bring back 100,000 rows" >&2; exit 1; }
  done
  day=$(on "$host" date +%Y%m%d)
  size_redis=$(on "$host" stat -c %s "/backup/redis/redis-backup-$day.rdb.age")
  size_pg=$(on "$host" stat -c %s "/backup/postgresql/postgresql-backup-$day.dump.age")
  versions=$(on "$host" bash -c 'echo "Redis $(redis-server --version | grep -oE "v=[0-9.]+" | cut -c3-), PostgreSQL $(pg_restore --version | grep -oE "[0-9]+[.][0-9]+" | head -n 1)"')
  lines+=("$host ($versions):"
          "  backup  redis       median $(median "${b_redis[@]}") s of ${b_redis[*]}   (encrypted file $size_redis bytes)"
          "  backup  postgresql  median $(median "${b_pg[@]}") s of ${b_pg[*]}   (encrypted file $size_pg bytes)"
          "  restore redis       restore.yml median $(median "${r_redis[@]}") s of ${r_redis[*]}; its restore task median $(median "${r_redis_task[@]}") s of ${r_redis_task[*]}"
          "  restore postgresql  restore.yml median $(median "${r_pg[@]}") s of ${r_pg[*]}; its restore task median $(median "${r_pg_task[@]}") s of ${r_pg_task[*]}")
  # the data goes again, and today's backups are taken without it
  cli "$host" --scan --pattern 'bench:key:*' \
    | awk '{ line = line " " $1 } NR % 1000 == 0 { print "UNLINK" line; line = "" } END { if (line != "") print "UNLINK" line }' \
    | cli "$host" > /dev/null
  sql "$host" "DROP TABLE bench_pool"
  on "$host" /usr/local/sbin/asset-backup redis > /dev/null
  on "$host" /usr/local/sbin/asset-backup postgresql > /dev/null
done

{
  echo "# backup benchmark on the backup scenario's containers, $(date -u +%F) ($(nproc) cores, shared)"
  echo "# load (1/5/15 min) at the start $load_start, at the end $(load); $(docker ps -q | wc -l) containers running"
  echo "command: bench/backup/run.sh $runs    ($runs runs per figure, $(secs "$started" "$(now)") s in all with the converge)"
  echo "data: 100,000 Redis keys (70-byte values), 100,000 rows (id, name, amount, created) in asset_classes"
  echo
  printf '%s\n' "${lines[@]}"
} | tee "$report"
