#!/usr/bin/env bash
# benches/encrypt_bench.sh — what age encryption costs a backup (issue 14), in one run, against the
# same database (the ~1 GB `pgdrive_bench` that benches/backup_bench.sh builds):
#   * pg_dump | zstd -3 > /dev/null                          (the shell pipeline, no encryption)
#   * pg_dump | zstd -3 | age -r KEY > /dev/null             (the shell pipeline with age)
#   * pgdrive backup --compress zstd:3 --to DIR              (without encryption)
#   * pgdrive backup --compress zstd:3 --to DIR, PGDRIVE_ENCRYPT_RECIPIENTS=KEY
# Each under GNU time (wall, CPU, max RSS, which for pgdrive includes pg_dump's), BENCH_REPEAT
# times, best wall reported, on a warm cache; the local target writes, fsyncs and reads back the
# file, the same for both pgdrive runs. Prints the ratios: encrypted ÷ plain (target ≤ 1.10) and
# pgdrive encrypted ÷ the age shell pipeline.
# Run: benches/encrypt_bench.sh   (BENCH_PGDRIVE=path to a binary, default target/release/pgdrive)
# Needs: pg_dump, zstd, age + age-keygen (apt-get install age), GNU time.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
DB_URL="$PG/${BENCH_DB:-pgdrive_bench}"
REPEAT=${BENCH_REPEAT:-2}
PGDRIVE=${BENCH_PGDRIVE:-$ROOT/target/release/pgdrive}
PG_DUMP=/usr/lib/postgresql/15/bin/pg_dump
[[ -x $PG_DUMP ]] || PG_DUMP=$(command -v pg_dump)
[[ -x $PGDRIVE ]] || (cd "$ROOT" && cargo build --release -q)
WORK=$(mktemp -d /tmp/pgdrive-encbench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
age-keygen -o "$WORK/key" 2>/dev/null
KEY=$(sed -n 's/^# public key: //p' "$WORK/key")
"$PG_DUMP" -d "$DB_URL" > /dev/null # warm the cache

# best wall of REPEAT runs of "$@" (a shell command line): prints "wall cpu rss_mib"
measure() {
  local best=""
  for _ in $(seq "$REPEAT"); do
    rm -rf "$WORK/out"; mkdir "$WORK/out"
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/t" bash -c "$1" > /dev/null
    read -r wall user sys rss < "$WORK/t"
    if [[ -z $best ]] || (( $(echo "$wall < ${best%% *}" | bc) )); then
      best="$wall $(echo "$user + $sys" | bc) $(echo "scale=1; $rss / 1024" | bc)"
    fi
  done
  echo "$best"
}

# a job of its own, so that its lock is not the one of another daily backup of the same database
cat > "$WORK/pgdrive.toml" <<TOML
[targets.bench]
type = "local"
dir = "$WORK/out"
keep = 0

[jobs.encbench]
kind = "daily"
targets = ["bench"]
compress = "zstd:3"
TOML
run_pgdrive="env -i PATH=$PATH DATABASE_URL=$DB_URL $PGDRIVE --config $WORK/pgdrive.toml backup --job encbench --threads 1"
declare -A R
R[shell]=$(measure "$PG_DUMP -d $DB_URL | zstd -3 -q > /dev/null")
R[shell_age]=$(measure "$PG_DUMP -d $DB_URL | zstd -3 -q | age -r $KEY > /dev/null")
R[pgdrive]=$(measure "$run_pgdrive 2>/dev/null")
R[pgdrive_age]=$(measure "env PGDRIVE_ENCRYPT_RECIPIENTS=$KEY $run_pgdrive 2>/dev/null")
printf '%-14s %8s %8s %10s\n' run "wall s" "cpu s" "rss MiB"
for k in shell shell_age pgdrive pgdrive_age; do
  read -r w c r <<< "${R[$k]}"
  printf '%-14s %8s %8s %10s\n' "$k" "$w" "$c" "$r"
done
wall() { echo "${R[$1]%% *}"; }
printf 'pgdrive encrypted / plain:        %.3f (target <= 1.10)\n' "$(echo "$(wall pgdrive_age) / $(wall pgdrive)" | bc -l)"
printf 'pgdrive encrypted / shell + age:  %.3f\n' "$(echo "$(wall pgdrive_age) / $(wall shell_age)" | bc -l)"
printf 'shell + age / shell:              %.3f\n' "$(echo "$(wall shell_age) / $(wall shell)" | bc -l)"
