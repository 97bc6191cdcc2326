#!/usr/bin/env bash
# benches/dr_bench.sh — whole-server disaster recovery (issue 13): time to a usable server.
#
# What it measures, all in one run, from the same backup set of one job over two databases (the
# ~1 GB benchmark database of benches/backup_bench.sh, built or reused by it, plus a small one
# owned by an application role) stored in a local directory:
#   * pgdrive drill --job J --jobs 1         its RTO (from nothing to a checked server) and wall
#   * the shell procedure a person would type: initdb, pg_ctl start, psql -f globals.sql, then per
#     database createdb and `zstd -dc | psql` (gzip: `gzip -dc | psql`; custom: pg_restore), timed
#     from nothing to the last database loaded (it checks nothing; the drill also counts rows,
#     roles and database properties, so the ratio is conservative)
#   * pgdrive restore --all --jobs 1 and --jobs 2, each into a fresh cluster started untimed
# and prints drill RTO / shell and restore --all --jobs 2 / --jobs 1 as ratios. Clusters are
# created under the run's temporary directory on free loopback ports and removed at the end.
#
# Run (from anywhere; not part of the test suite):
#   benches/dr_bench.sh
# Knobs (environment):
#   BENCH_SCALE=1        size of the big database (1 ≈ 1 GB); 0.01 for a quick check, with
#   BENCH_DB=NAME        another name than pgdrive_bench (so the 1 GB one is not rebuilt smaller)
#   BENCH_COMPRESS=zstd:3  the job's codec (gzip:N, zstd:N)
#   BENCH_FORMAT=plain   the job's dump format (plain or custom)
#   BENCH_PGDRIVE=PATH   this pgdrive binary instead of building target/release/pgdrive
#   BENCH_PG=postgres://postgres@127.0.0.1:5432   source server (superuser)
#   BENCH_PG_BIN=/usr/lib/postgresql/15/bin       initdb, pg_ctl, psql, pg_restore, createdb
# Needs: what benches/backup_bench.sh needs to build its database, GNU date, bc, zstd or gzip.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${BENCH_SCALE:-1}
COMPRESS=${BENCH_COMPRESS:-zstd:3}
FORMAT=${BENCH_FORMAT:-plain}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
PG_BIN=${BENCH_PG_BIN:-/usr/lib/postgresql/15/bin}
PGDRIVE=${BENCH_PGDRIVE:-"$ROOT/target/release/pgdrive"}
BIG=${BENCH_DB:-pgdrive_bench}
SMALL=pgdrive_bench_dr_small
JOB=drbench

say() { printf '%s\n' "$*" >&2; }
psql_q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d /tmp/pgdrive-drbench.XXXXXX)
CLUSTERS=()
AS_SERVER=()
cleanup() {
  for d in "${CLUSTERS[@]}"; do "${AS_SERVER[@]}" "$PG_BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# the server programs refuse root: as root they run as the postgres user (as the drill does)
if [[ $(id -u) == 0 ]]; then
  AS_SERVER=(runuser -u postgres --)
  chown postgres "$WORK"
fi

# a new cluster in $WORK/$1 on a free port, started; sets PORT (not in a subshell: the cluster
# must be in CLUSTERS for the cleanup)
start_cluster() {
  local dir=$WORK/$1
  PORT=$(free_port)
  CLUSTERS+=("$dir")
  "${AS_SERVER[@]}" "$PG_BIN/initdb" -D "$dir" -U postgres -A trust >/dev/null
  "${AS_SERVER[@]}" "$PG_BIN/pg_ctl" -D "$dir" -l "$dir.log" -w \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k $WORK -c fsync=off" start >/dev/null
}

# ---------------------------------------------------------------- 1. build and data
if [[ -z ${BENCH_PGDRIVE:-} ]]; then
  say "== cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi
BENCH_ONLY=build BENCH_DB=$BIG BENCH_SCALE=$SCALE BENCH_DATASET=mixed BENCH_PGDRIVE=$PGDRIVE BENCH_PG=$PG \
  BENCH_PG_BIN=$PG_BIN "$ROOT/benches/backup_bench.sh"
say "== the small database $SMALL (owned by the role drbench_app)"
psql_q -d "$PG/postgres" -c "DROP DATABASE IF EXISTS $SMALL WITH (FORCE)" \
  -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'drbench_app') THEN CREATE ROLE drbench_app LOGIN; END IF; END\$\$" \
  -c "CREATE DATABASE $SMALL OWNER drbench_app"
psql_q -d "$PG/$SMALL" -c "SET ROLE drbench_app" \
  -c "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 20000) AS g"

# ---------------------------------------------------------------- 2. the backup set
STORE=$WORK/store
mkdir -p "$STORE"
CONFIG=$WORK/pgdrive.toml
cat >"$CONFIG" <<EOF
local.dir = "$STORE"
format = "$FORMAT"
compress = "$COMPRESS"
[jobs.$JOB]
kind = "daily"
databases = ["$BIG", "$SMALL"]
EOF
chmod 600 "$CONFIG"
export PGDRIVE_CONFIG=$CONFIG PGDRIVE_PG_DUMP=$PG_BIN/pg_dump PGDRIVE_PSQL=$PG_BIN/psql \
  PGDRIVE_PG_RESTORE=$PG_BIN/pg_restore
say "== backup --job $JOB ($FORMAT, $COMPRESS)"
DATABASE_URL=$PG/$SMALL "$PGDRIVE" backup --job "$JOB" 2>"$WORK/backup.log" \
  || { cat "$WORK/backup.log" >&2; exit 1; }
du -sh "$STORE" >&2

# ---------------------------------------------------------------- 3. the drill
say "== pgdrive drill --job $JOB"
t0=$(now)
"$PGDRIVE" drill --job "$JOB" --from "$STORE" --pg-bin "$PG_BIN" --json >"$WORK/drill.json" 2>"$WORK/drill.log" \
  || { cat "$WORK/drill.log" "$WORK/drill.json" >&2; exit 1; }
DRILL_WALL=$(since "$t0")
DRILL_RTO=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["rto_seconds"])' "$WORK/drill.json")

# ---------------------------------------------------------------- 4. the same by hand
newest() { find "$STORE" -maxdepth 1 -name "$1" ! -name '*.pgdrive.json' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-; }
GLOBALS=$(newest "$JOB-globals-*")
say "== by hand: initdb, pg_ctl start, psql -f $(basename "$GLOBALS"), createdb + load per database"
t0=$(now)
start_cluster manual
MANUAL=postgres://postgres@127.0.0.1:$PORT
psql_q -d "$MANUAL/postgres" -f "$GLOBALS" >/dev/null 2>"$WORK/manual-globals.err" || true # "role postgres exists"
for db in "$BIG" "$SMALL"; do
  file=$(newest "$db-*")
  owner=$(psql_q -d "$PG/postgres" -c "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$db'")
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres -O "$owner" "$db"
  case $file in
    *.zst) unpack=(zstd -dc) ;;
    *.gz) unpack=(gzip -dc) ;;
    *) unpack=(cat) ;;
  esac
  if [[ $FORMAT == custom ]]; then
    "${unpack[@]}" "$file" | "$PG_BIN/pg_restore" -d "$MANUAL/$db" --exit-on-error
  else
    "${unpack[@]}" "$file" | psql_q -d "$MANUAL/$db" >/dev/null
  fi
done
MANUAL_S=$(since "$t0")

# ---------------------------------------------------------------- 5. restore --all, 1 and 2 jobs
declare -A ALL
for jobs in 1 2; do
  start_cluster "all$jobs"
  say "== restore --all --jobs $jobs"
  t0=$(now)
  "$PGDRIVE" restore --all --job "$JOB" --from "$STORE" --jobs "$jobs" \
    --target-url "postgres://postgres@127.0.0.1:$PORT/postgres" 2>"$WORK/all$jobs.log" \
    || { cat "$WORK/all$jobs.log" >&2; exit 1; }
  ALL[$jobs]=$(since "$t0")
done

# ---------------------------------------------------------------- 6. results
BYTES=$(psql_q -d "$PG/$BIG" -c "SELECT pg_database_size(current_database())")
printf '\npgdrive disaster-recovery benchmark: %s (%s MiB) + %s, %s %s, load %s\n' \
  "$BIG" "$((BYTES / 1048576))" "$SMALL" "$FORMAT" "$COMPRESS" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '  %-44s %8.1f s  (wall %.1f s)\n' "pgdrive drill RTO" "$DRILL_RTO" "$DRILL_WALL"
printf '  %-44s %8.1f s\n' "by hand (initdb … psql -f … createdb, load)" "$MANUAL_S"
printf '  %-44s %8s x\n' "drill RTO / by hand" "$(ratio "$DRILL_RTO" "$MANUAL_S")"
printf '  %-44s %8.1f s\n' "restore --all --jobs 1" "${ALL[1]}"
printf '  %-44s %8.1f s\n' "restore --all --jobs 2" "${ALL[2]}"
printf '  %-44s %8s x\n' "restore --all --jobs 2 / --jobs 1" "$(ratio "${ALL[2]}" "${ALL[1]}")"
psql_q -d "$PG/postgres" -c "DROP DATABASE IF EXISTS $SMALL WITH (FORCE)" -c "DROP ROLE IF EXISTS drbench_app"
