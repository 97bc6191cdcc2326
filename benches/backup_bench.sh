#!/usr/bin/env bash
# benches/backup_bench.sh — end-to-end throughput and memory benchmark of `pgdrive backup`.
#
# What it measures (issue 2), all in one run, against the same database:
#   * pg_dump -d DB > /dev/null                           (the floor: dump only)
#   * pg_dump | gzip -N > /dev/null                       (the shell pipeline)
#   * pg_dump | gzip -N | sha256sum                       (the fair shell pipeline: also checksums)
#   * pg_dump | pigz -N -p 2 > /dev/null                  (if pigz is installed)
#   * pgdrive backup --kind daily --compress gzip:N       (into the local Google emulator, started
#                                                          with --discard-content)
#   for each gzip level N in BENCH_LEVELS, plus one pgdrive run per repeat with --chunk-size 32MiB
#   at level 6, to show that memory grows with the chunk size and not with the database, and (with
#   BENCH_SLOW=1, the default) two runs against a stalled emulator, the worst case for memory.
#   Issue 10 (BENCH_ONLY=targets, also in a full run): one job to two targets vs one (ratio, target
#   <= 1.1x), zstd:3 vs `pg_dump | zstd -3 -T1 | sha256sum` (target <= 1.05x), and the two-target
#   job's peak RSS with the emulator stalled or throttled (target 64 MiB + 2 chunks per target).
# Every command runs under GNU time (wall, user+sys CPU of the whole process tree, max RSS), on a
# warm page cache (one untimed pg_dump first; the database fits in RAM; caches are not dropped).
# pgdrive's OWN peak RSS is read from /proc/<pid>/status VmHWM, sampled every 20 ms while it runs
# (VmHWM is a high-water mark, so the last sample is the peak, short of growth in the final 20 ms).
# GNU time's %M is NOT that: the kernel fills wait4()'s rusage with RUSAGE_BOTH, so %M is
# max(pgdrive's own peak, the largest peak among the children it waited for, i.e. pg_dump);
# both are printed. Likewise CPU for pgdrive includes pg_dump's CPU, as it does for the pipelines.
#
# It builds (or reuses) a database `pgdrive_bench` of about 1 GB (pg_database_size) with mixed,
# realistic content (compresses ~3.5-4x with gzip -6); it is kept for the next run unless
# BENCH_DROP=1. The emulator runs on the same machine and takes some CPU (it MD5/SHA-1/SHA-256s
# what it receives), which counts against pgdrive, not against the shell pipelines.
#
# Run (from anywhere; not part of the test suite):
#   benches/backup_bench.sh
# Knobs (environment):
#   BENCH_SCALE=1        data-set size; 1 ≈ 1 GB on disk; 0.05 for a quick try
#   BENCH_LEVELS="1 6 9" gzip levels
#   BENCH_REPEAT=2       repetitions of every measurement (best and median wall are reported)
#   BENCH_DROP=0         1 drops pgdrive_bench at the end
#   BENCH_SLOW=1         also run pgdrive (gzip:6, 8 and 32 MiB chunks) against an emulator that holds
#                        the first 3 chunk answers BENCH_SLOW_MS=20000 ms each: back-pressure fills
#                        every buffer, the worst case for memory
#   BENCH_ONLY=build     only build (or reuse) the database, then stop (used by dr_bench.sh)
#   BENCH_ONLY=stalled   only those stalled-link runs (no baselines, no level sweep)
#   BENCH_ONLY=formats   only the codec/format/thread matrix and the restore timings (issue 6)
#   BENCH_ONLY=restore   only the custom-archive restore timings, BENCH_REPEAT times round-robin:
#                        pgdrive restore vs zstd -dc | pg_restore --single-transaction, and
#                        restore --jobs 2 vs pg_restore -j 2 on the decompressed archive on disk
#   BENCH_ONLY=targets   only issue 10's runs: one job to two targets (the emulator + a local
#                        directory, through a config file) vs one target, also with the emulator
#                        stalled and throttled (RSS), and zstd:3 vs `pg_dump | zstd -3 -T1 | sha256sum`
#   BENCH_ONLY=remote    only issue 11's runs (also in a full run with BENCH_REMOTE=1): backup to a
#                        local S3 server (s3s-fs) and to a local sshd (SFTP) vs `pg_dump | zstd -3 -T1
#                        > /dev/null`, vs `pg_dump | zstd -3 -T1 | aws s3 cp - s3://…` (skipped with a
#                        note without awscli: pip install awscli) and vs `pg_dump | zstd -3 -T1 | ssh
#                        host 'cat > file'`; wall-time ratios and peak RSS (target 64 MiB + 2 parts
#                        per target). Needs s3s-fs (cargo install s3s-fs --features binary), sshd,
#                        ssh-keygen, zstd
#   BENCH_DB=NAME        the mixed database's name (default pgdrive_bench; a quick try at a small
#                        BENCH_SCALE under another name leaves the 1 GB one alone)
#   BENCH_DATASET=mixed  the ~1 GB mixed database (pgdrive_bench); `text`: a database of long text
#                        rows whose plain dump is ~300 MB at BENCH_SCALE=1 (pgdrive_bench_text)
#   BENCH_FORMATS=1      also run that matrix: gzip with 1 and 2 threads, zstd, none, custom format,
#                        against `| pigz`, `| zstd -T0`, `pg_dump -Fc -Z0`; BENCH_RESTORE=1 also times
#                        restores (pgdrive restore vs gunzip | psql, zstd -dc | pg_restore, pg_restore -j 2)
#   BENCH_PGDRIVE=PATH  measure this pgdrive binary instead of building target/release/pgdrive
#   BENCH_PG=postgres://postgres@127.0.0.1:5432   server (superuser; must be able to CREATE DATABASE)
#   BENCH_PG_BIN=/usr/lib/postgresql/15/bin       where pg_dump and psql are
# Needs: cargo, python3 with `cryptography` (the emulator), openssl, GNU time (/usr/bin/time), bc,
# gzip, sha256sum; pigz optional (apt-get install -y pigz).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${BENCH_SCALE:-1}
LEVELS=${BENCH_LEVELS:-"1 6 9"}
REPEAT=${BENCH_REPEAT:-2}
DROP=${BENCH_DROP:-0}
SLOW=${BENCH_SLOW:-1}
SLOW_MS=${BENCH_SLOW_MS:-20000}
ONLY=${BENCH_ONLY:-}
FORMATS=${BENCH_FORMATS:-1}
RESTORE=${BENCH_RESTORE:-1}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
PG_BIN=${BENCH_PG_BIN:-/usr/lib/postgresql/15/bin}
DATASET=${BENCH_DATASET:-mixed}
if [[ $DATASET == *" "* ]]; then
  # several data sets: one run each, their tables one after the other
  for d in $DATASET; do BENCH_DATASET=$d "${BASH_SOURCE[0]}"; done
  exit 0
fi
case $DATASET in
  mixed) DB=${BENCH_DB:-pgdrive_bench} ;;
  text) DB=pgdrive_bench_text ;;
  *) printf 'BENCH_DATASET must be mixed or text, not %s\n' "$DATASET" >&2; exit 1 ;;
esac
DB_URL="$PG/$DB"
DATA_VERSION=1
PG_DUMP="$PG_BIN/pg_dump"
[[ -x $PG_DUMP ]] || PG_DUMP=$(command -v pg_dump)
PSQL="$PG_BIN/psql"
[[ -x $PSQL ]] || PSQL=psql
PGDRIVE=${BENCH_PGDRIVE:-"$ROOT/target/release/pgdrive"}
TIME=/usr/bin/time

WORK=$(mktemp -d /tmp/pgdrive-bench.XXXXXX)
EMU_PID=""
cleanup() {
  if [[ -n $EMU_PID ]]; then kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }
# a bare gzip level (6) or a codec spec (zstd:3, none)
codec() { [[ $1 =~ ^[0-9]+$ ]] && echo "gzip:$1" || echo "$1"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
# CPU seconds (user+sys) used so far by the emulator process
emu_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' /proc/"$EMU_PID"/stat; }
psql_q() { "$PSQL" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

[[ -x $TIME ]] || { say "GNU time (/usr/bin/time) is required: apt-get install -y time"; exit 1; }

# ---------------------------------------------------------------- 1. build
if [[ -z ${BENCH_PGDRIVE:-} ]]; then
  say "== cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi

# ---------------------------------------------------------------- 2. the database
# Realistic mixed content: ints, bigints, timestamps, numerics, short and long text from a small
# vocabulary, emails, phone numbers, uuids, jsonb, NULLs, primary keys and a secondary index
# (indexes count in pg_database_size, not in the dump). Deterministic apart from the uuids.
build_db() {
  psql_q -d "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  psql_q -d "$DB_URL" -v scale="$SCALE" -v dataversion="$DATA_VERSION" >/dev/null <<'SQL'
SET synchronous_commit = off;
SELECT setseed(0.42);

DROP TABLE IF EXISTS bench_meta, sentences, customers, orders, events CASCADE;

-- 20,000 sentences of 3 to 30 words from a 120-word vocabulary.
CREATE TABLE sentences AS
SELECT i AS id,
       initcap((SELECT string_agg(w, ' ')
          FROM (SELECT (ARRAY['the','a','order','customer','payment','shipment','invoice','was','is','has','been',
                'received','delayed','cancelled','refunded','approved','pending','processed','by','for','with',
                'from','to','in','on','at','after','before','warehouse','carrier','account','manager','support',
                'ticket','request','update','address','billing','credit','card','bank','transfer','discount',
                'coupon','applied','expired','item','items','product','stock','backorder','return','label',
                'printed','scanned','delivered','signed','left','door','neighbour','office','please','contact',
                'us','again','soon','thank','you','note','urgent','priority','standard','express','overnight',
                'international','domestic','customs','cleared','held','inspection','fee','tax','total','amount',
                'due','paid','partial','full','balance','review','rating','five','stars','quality','excellent',
                'poor','damaged','replacement','sent','new','old','green','blue','red','large','small','medium',
                'box','pallet','envelope','weight','kg','lb','monday','friday','morning','evening','today'])
                [1 + floor(random() * 120)::int] AS w
                FROM generate_series(1, 3 + (i * 7 + (random() * 4)::int) % 28) AS k
                WHERE i IS NOT NULL) s)) || '.' AS txt
FROM generate_series(0, 19999) AS i;
ALTER TABLE sentences ADD PRIMARY KEY (id);

CREATE TABLE customers (
  id          bigint PRIMARY KEY,
  uid         uuid NOT NULL,
  first_name  text NOT NULL,
  last_name   text NOT NULL,
  email       text,
  phone       text,
  country     char(2) NOT NULL,
  created_at  timestamptz NOT NULL,
  balance     numeric(12,2) NOT NULL,
  is_active   boolean NOT NULL,
  preferences jsonb,
  notes       text
);
INSERT INTO customers
SELECT g,
       gen_random_uuid(),
       fn, ln,
       CASE WHEN g % 17 = 0 THEN NULL ELSE lower(fn) || '.' || lower(ln) || (g % 1000) || '@' ||
            (ARRAY['example.com','mail.test','corp.example','shop.test','inbox.example'])[1 + g % 5] END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE '+1-' || (200 + g % 800) || '-' || lpad((g * 7919 % 10000000)::text, 7, '0') END,
       (ARRAY['US','GB','DE','FR','NL','SE','CA','AU','JP','BR'])[1 + (g * 13) % 10],
       timestamptz '2018-01-01' + (g * interval '97 seconds') + random() * interval '1 hour',
       round((random() * 10000)::numeric, 2),
       g % 11 <> 0,
       CASE WHEN g % 3 = 0 THEN NULL
            ELSE jsonb_build_object('newsletter', g % 2 = 0, 'language', (ARRAY['en','de','fr','nl','sv'])[1 + g % 5],
                                    'theme', (ARRAY['light','dark'])[1 + g % 2], 'score', (random() * 100)::int) END,
       CASE WHEN g % 4 = 0 THEN s.txt ELSE NULL END
FROM (SELECT g,
             (ARRAY['Alice','Bob','Carol','David','Erin','Frank','Grace','Heidi','Ivan','Judy','Mallory','Niaj',
                    'Olivia','Peggy','Rupert','Sybil','Trent','Victor','Walter','Yara','Zoe','Liam','Noah','Emma'])
               [1 + floor(random() * 24)::int] AS fn,
             (ARRAY['Smith','Jones','Taylor','Brown','Williams','Wilson','Johnson','Davies','Robinson','Wright',
                    'Thompson','Evans','Walker','White','Roberts','Green','Hall','Wood','Jackson','Clarke'])
               [1 + floor(random() * 20)::int] AS ln
      FROM generate_series(1, (260000 * :scale)::bigint) AS g) AS c
JOIN sentences s ON s.id = (c.g * 7919) % 20000;

CREATE TABLE orders (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL,
  placed_at   timestamptz NOT NULL,
  shipped_at  timestamptz,
  status      text NOT NULL,
  total       numeric(10,2) NOT NULL,
  currency    char(3) NOT NULL,
  quantity    int NOT NULL,
  items       jsonb NOT NULL,
  comment     text
);
INSERT INTO orders
SELECT g,
       1 + (g * 104729) % (260000 * :scale)::bigint,
       p,
       CASE WHEN g % 6 = 0 THEN NULL ELSE p + random() * interval '5 days' END,
       (ARRAY['new','paid','shipped','delivered','cancelled','refunded'])[1 + (g * 31) % 6],
       round((random() * 500 + 1)::numeric, 2),
       (ARRAY['USD','EUR','GBP','SEK'])[1 + g % 4],
       1 + (random() * 9)::int,
       jsonb_build_array(
         jsonb_build_object('sku', 'SKU-' || lpad(((g * 37) % 50000)::text, 6, '0'), 'qty', 1 + g % 4,
                            'price', round((random() * 200)::numeric, 2)),
         jsonb_build_object('sku', 'SKU-' || lpad(((g * 53) % 50000)::text, 6, '0'), 'qty', 1 + g % 3,
                            'price', round((random() * 80)::numeric, 2), 'gift', g % 9 = 0)),
       CASE WHEN g % 3 = 0 THEN s.txt ELSE NULL END
FROM (SELECT g, timestamptz '2019-01-01' + g * interval '11 seconds' AS p
      FROM generate_series(1, (1600000 * :scale)::bigint) AS g) AS o
JOIN sentences s ON s.id = (o.g * 15485863) % 20000;
CREATE INDEX orders_customer_idx ON orders (customer_id);

CREATE TABLE events (
  id          bigint PRIMARY KEY,
  occurred_at timestamptz NOT NULL,
  kind        text NOT NULL,
  actor_id    bigint,
  trace_id    uuid,
  message     text NOT NULL,
  payload     jsonb
);
INSERT INTO events
SELECT g,
       timestamptz '2020-01-01' + g * interval '7 seconds' + random() * interval '7 seconds',
       (ARRAY['login','logout','view','search','add_to_cart','checkout','payment','error','email_sent','api_call'])
         [1 + floor(random() * 10)::int],
       CASE WHEN g % 9 = 0 THEN NULL ELSE 1 + (g * 7727) % (260000 * :scale)::bigint END,
       CASE WHEN g % 2 = 0 THEN gen_random_uuid() ELSE NULL END,
       s1.txt || CASE WHEN g % 4 = 0 THEN ' ' || s2.txt ELSE '' END,
       CASE WHEN g % 5 = 0 THEN NULL
            ELSE jsonb_build_object('ip', '10.' || (g % 256) || '.' || ((g / 256) % 256) || '.' || (g * 7 % 256),
                                    'ms', (random() * 2000)::int,
                                    'path', '/' || (ARRAY['api','shop','account','cart','search'])[1 + g % 5] || '/' || (g % 1000),
                                    'ok', random() > 0.05) END
FROM generate_series(1, (1300000 * :scale)::bigint) AS g
JOIN sentences s1 ON s1.id = (g * 7753) % 20000
JOIN sentences s2 ON s2.id = (g * 3571 + 11) % 20000;

ANALYZE;
CREATE TABLE bench_meta (k text PRIMARY KEY, v text NOT NULL);
INSERT INTO bench_meta VALUES ('scale', :'scale'), ('version', :'dataversion');
SQL
}

# Long text rows (issue 10): 150,000 rows of ~2 KB prose-like text (20 sentences of 3 to 30 words
# from a 120-word vocabulary, picked pseudo-randomly per row), a ~300 MB plain dump at scale 1,
# where the row counter sees few, long rows and the compressor most of the work.
build_text_db() {
  psql_q -d "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  psql_q -d "$DB_URL" -v scale="$SCALE" -v dataversion="$DATA_VERSION" >/dev/null <<'SQL'
SET synchronous_commit = off;
SELECT setseed(0.42);
CREATE TABLE words AS
SELECT (string_to_array('the a order customer payment shipment invoice was is has been received delayed cancelled refunded approved pending processed by for with from to in on at after before warehouse carrier account manager support ticket request update address billing credit card bank transfer discount coupon applied expired item items product stock backorder return label printed scanned delivered signed left door neighbour office please contact us again soon thank you note urgent priority standard express overnight international domestic customs cleared held inspection fee tax total amount due paid partial full balance review rating five stars quality excellent poor damaged replacement sent new old green blue red large small medium box pallet envelope weight kg lb monday friday morning evening today', ' ')) AS w;
CREATE TABLE sentences AS
SELECT i AS id,
       initcap(array_to_string(ARRAY(SELECT (SELECT w FROM words)[1 + floor(random() * 120)::int]
                                     FROM generate_series(1, 3 + (i * 7 + (random() * 4)::int) % 28) AS k
                                     WHERE i IS NOT NULL), ' ')) || '.' AS txt
FROM generate_series(0, 19999) AS i;
CREATE TABLE notes (id bigint PRIMARY KEY, author text NOT NULL, written_at timestamptz NOT NULL, body text NOT NULL);
INSERT INTO notes
SELECT g, 'author-' || (g % 977), timestamptz '2021-01-01' + g * interval '13 seconds',
       array_to_string(ARRAY(SELECT a[1 + ((g * 104729 + k * 7919 + k * k * 31) % 20000)]
                             FROM generate_series(1, 20) AS k), ' ')
FROM (SELECT array_agg(txt ORDER BY id) AS a FROM sentences) AS s,
     generate_series(1, (150000 * :scale)::bigint) AS g;
DROP TABLE words;
ANALYZE;
CREATE TABLE bench_meta (k text PRIMARY KEY, v text NOT NULL);
INSERT INTO bench_meta VALUES ('scale', :'scale'), ('version', :'dataversion');
SQL
}

existing=$(psql_q -d "$PG/postgres" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")
marker=""
if [[ $existing == 1 ]]; then
  marker=$(psql_q -d "$DB_URL" -c "SELECT string_agg(k || '=' || v, ' ' ORDER BY k) FROM bench_meta" 2>/dev/null || true)
fi
if [[ $marker == "scale=$SCALE version=$DATA_VERSION" ]]; then
  say "== reusing database $DB ($marker)"
else
  say "== building database $DB (scale $SCALE; load $(load))"
  t0=$(date +%s.%N)
  if [[ $DATASET == text ]]; then build_text_db; else build_db; fi
  t1=$(date +%s.%N)
  BUILD_S=$(echo "$t1 - $t0" | bc)
  say "   built in ${BUILD_S}s"
fi
# pgdrive keeps its catalog (the `backups` table) in the database it backs up; start each
# benchmark from an empty catalog so that the dumps are comparable.
psql_q -d "$DB_URL" -c "DROP TABLE IF EXISTS backup_copies, backups, pgdrive_schema_migrations CASCADE" 2>/dev/null || true
DB_BYTES=$(psql_q -d "$DB_URL" -c "SELECT pg_database_size(current_database())")
say "   pg_database_size = $DB_BYTES bytes ($((DB_BYTES / 1048576)) MiB)"
# BENCH_ONLY=build: only make sure the database exists (benches/dr_bench.sh uses it)
if [[ $ONLY == build ]]; then exit 0; fi

# ---------------------------------------------------------------- 3. the emulator
say "== starting the Google emulator (--discard-content)"
python3 "$ROOT/tests/emulator/google_emulator.py" --port 0 --discard-content >"$WORK/emu.out" 2>"$WORK/emu.err" &
EMU_PID=$!
for _ in $(seq 100); do grep -q LISTENING "$WORK/emu.out" 2>/dev/null && break; sleep 0.1; done
EMU=$(sed -n 's/^LISTENING //p' "$WORK/emu.out")
[[ -n $EMU ]] || { say "the emulator did not start:"; cat "$WORK/emu.err" >&2; exit 1; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/sa.pem" 2>/dev/null
openssl pkey -pubout -in "$WORK/sa.pem" -out "$WORK/sa.pub"
SA=bench@pgdrive-bench.iam.gserviceaccount.com
FOLDER=$(EMU="$EMU" SA="$SA" WORK="$WORK" python3 - <<'PY'
import json, os, urllib.request
base, sa, work = os.environ["EMU"], os.environ["SA"], os.environ["WORK"]
def post(path, body):
    req = urllib.request.Request(base + "__emulator/" + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")
post("service_accounts", {"client_email": sa, "public_key_pem": open(work + "/sa.pub").read(), "dwd": True})
drive = post("shared_drives", {"name": "Backups", "members": {sa: "organizer"}})
folder = post("folders", {"name": "bench", "drive_id": drive["id"]})["id"]
json.dump({"type": "service_account", "project_id": "pgdrive-bench", "private_key_id": "0123456789abcdef",
           "private_key": open(work + "/sa.pem").read(), "client_email": sa, "client_id": "1",
           "token_uri": base + "token"}, open(work + "/key.json", "w"))
print(folder)
PY
)
say "   emulator at $EMU, folder $FOLDER"
# emulator fault rules (the control API); [] clears them
faults() {
  curl -fsS -X POST -H 'Content-Type: application/json' -d "{\"rules\": $1}" "${EMU}__emulator/faults" >/dev/null
}

# Issue 10: one job to two targets (this emulator folder and a local directory) against the
# same job to the emulator alone, through a config file. keep = 1: the directory holds one backup.
mkdir -p "$WORK/local"
cat >"$WORK/pgdrive.toml" <<TOML
[google]
service_account_json = "$WORK/key.json"
[targets.emu]
type = "drive"
folder_id = "$FOLDER"
# 0 keeps all: pruning reads the manifests, which --discard-content does not keep
keep = 0
[targets.disk]
type = "local"
dir = "$WORK/local"
keep = 1
[jobs.one]
kind = "daily"
targets = ["emu"]
[jobs.two]
kind = "daily"
targets = ["emu", "disk"]
TOML
# throttle the emulator's uploads (bytes/s; null: full speed)
throttle() {
  curl -fsS -X POST -H 'Content-Type: application/json' -d "{\"upload_bytes_per_second\": $1}" "${EMU}__emulator/config" >/dev/null
}

# Issue 11: a local S3 server (s3s-fs, checking signatures) and a local sshd, each on a loopback
# port, and a job for each. Both servers run on the same machine and take CPU, which counts
# against pgdrive and the shell pipelines alike.
REMOTE=${BENCH_REMOTE:-0}
[[ $ONLY == remote ]] && REMOTE=1
HAVE_AWS=0
if [[ $REMOTE == 1 ]]; then
  free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  S3FS=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
  [[ -x $S3FS ]] || { say "s3s-fs is required for BENCH_ONLY=remote: cargo install s3s-fs --version 0.14.1 --features binary --locked"; exit 1; }
  export AWS_ACCESS_KEY_ID=AKIAPGDRIVEBENCH AWS_SECRET_ACCESS_KEY=pgdrive-bench-secret-0123456789 \
    AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  unset AWS_PROFILE AWS_SESSION_TOKEN
  S3_PORT=$(free_port); S3_URL="http://127.0.0.1:$S3_PORT"; BUCKET=pgdrive-bench
  mkdir -p "$WORK/s3/$BUCKET"
  "$S3FS" --host 127.0.0.1 --port "$S3_PORT" --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$WORK/s3" >"$WORK/s3s.log" 2>&1 &
  S3_PID=$!
  SSH_DIR="$WORK/ssh"; mkdir -p "$SSH_DIR/data"; SSH_PORT=$(free_port)
  ssh-keygen -q -t ed25519 -N "" -f "$SSH_DIR/host_key"
  ssh-keygen -q -t ed25519 -N "" -f "$SSH_DIR/id_user"
  cp "$SSH_DIR/id_user.pub" "$SSH_DIR/authorized_keys"
  printf '[127.0.0.1]:%s %s\n' "$SSH_PORT" "$(cat "$SSH_DIR/host_key.pub")" >"$SSH_DIR/known_hosts"
  mkdir -p /run/sshd 2>/dev/null || true
  cat >"$SSH_DIR/sshd_config" <<SSHD
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSH_DIR/host_key
PidFile $SSH_DIR/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
SSHD
  /usr/sbin/sshd -D -e -f "$SSH_DIR/sshd_config" 2>"$SSH_DIR/sshd.log" &
  SSHD_PID=$!
  trap 'kill "$S3_PID" "$SSHD_PID" 2>/dev/null || true; cleanup' EXIT
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null && break
    sleep 0.1
  done
  SSH_USER=$(id -un)
  SSH="ssh -q -i $SSH_DIR/id_user -p $SSH_PORT -o UserKnownHostsFile=$SSH_DIR/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes $SSH_USER@127.0.0.1"
  cat >>"$WORK/pgdrive.toml" <<TOML
[targets.s3]
type = "s3"
bucket = "$BUCKET"
endpoint = "$S3_URL"
keep = 0
[targets.sftp]
type = "sftp"
host = "127.0.0.1"
port = $SSH_PORT
user = "$SSH_USER"
dir = "$SSH_DIR/data"
identity_file = "$SSH_DIR/id_user"
known_hosts = "$SSH_DIR/known_hosts"
keep = 0
[jobs.s3]
kind = "daily"
targets = ["s3"]
[jobs.sftp]
kind = "daily"
targets = ["sftp"]
TOML
  if command -v aws >/dev/null && aws --version >/dev/null 2>&1; then HAVE_AWS=1; else
    say "   awscli is not installed (pip install awscli): the 'pg_dump | zstd | aws s3 cp -' run is skipped"
  fi
  say "   s3s-fs at $S3_URL, sshd on port $SSH_PORT"
fi

# ---------------------------------------------------------------- measuring
# Results: one line per run in $WORK/results: label level wall cpu maxrss_kib own_rss_kib out_bytes raw_bytes load1
RESULTS="$WORK/results"
: >"$RESULTS"

# measure LABEL LEVEL SHELL-COMMAND: runs it under GNU time.
measure() {
  local label=$1 level=$2 cmd=$3 l
  l=$(load)
  $TIME -f '%e %U %S %M' -o "$WORK/time" bash -c "set -o pipefail; $cmd" \
    || { say "FAILED: $cmd"; exit 1; }
  local wall user sys rss
  read -r wall user sys rss < <(tail -n1 "$WORK/time")
  echo "$label $level $wall $(echo "$user + $sys" | bc) $rss - - - ${l%% *} - -" >>"$RESULTS"
  say "   $(printf '%-22s' "$label") gzip:$level wall ${wall}s cpu $(echo "$user + $sys" | bc)s maxrss $((rss / 1024)) MiB  (load $l)"
}

# measure_pgdrive LABEL LEVEL EXTRA-ARGS...: pgdrive under GNU time, with its own VmHWM sampled.
measure_pgdrive() {
  local label=$1 level=$2; shift 2
  local l tpid pid="" hwm=0 dump_hwm=0 k v _ kid="" got=""
  l=$(load)
  local emu0; emu0=$(emu_cpu)
  DATABASE_URL="$DB_URL" GOOGLE_SERVICE_ACCOUNT_JSON="$WORK/key.json" GOOGLE_DRIVE_FOLDER_ID="$FOLDER" \
    PGDRIVE_DRIVE_URL="$EMU" PGDRIVE_PG_DUMP="$PG_DUMP" \
    $TIME -f '%e %U %S %M' -o "$WORK/time" "$PGDRIVE" backup ${SELECT:---kind daily} --compress "$(codec "$level")" "$@" \
      2>"$WORK/pgdrive.log" &
  tpid=$!
  # GNU time forks and execs pgdrive: pgdrive is time's only child.
  while [[ -z $pid ]] && kill -0 "$tpid" 2>/dev/null; do
    pid=$(pgrep -P "$tpid" | head -n1) || true
    [[ -n $pid ]] || sleep 0.005
  done
  # Sampling uses bash builtins only (no fork per sample); pg_dump, pgdrive's child, is looked
  # up with pgrep until found (it starts after the preflight), then only its status is read.
  kid=""
  while [[ -n $pid && -r /proc/$pid/status ]]; do
    { while read -r k v _; do
        [[ $k == VmHWM: ]] && (( v > hwm )) && hwm=$v
      done </proc/"$pid"/status; } 2>/dev/null || true
    if [[ -z $kid ]]; then
      kid=$(pgrep -P "$pid" -x pg_dump | head -n1) || true
    fi
    if [[ -n $kid ]]; then
      got=""
      { while read -r k v _; do
          [[ $k == VmHWM: ]] && got=$v && (( v > dump_hwm )) && dump_hwm=$v
        done </proc/"$kid"/status; } 2>/dev/null || true
      # not (or no longer) readable: look again while pgdrive runs, keeping the peak seen so far
      [[ -n $got ]] || kid=""
    fi
    sleep 0.02
  done
  wait "$tpid" || { say "pgdrive FAILED:"; cat "$WORK/pgdrive.log" >&2; exit 1; }
  local wall user sys rss last size raw emu stream
  emu=$(echo "$(emu_cpu) - $emu0" | bc)
  read -r wall user sys rss < <(tail -n1 "$WORK/time")
  # streaming time = from "preflight passed" to "stored" in pgdrive's log (pg_dump → gzip → upload);
  # the rest of the wall time is start-up, token, preflight, catalog and retention.
  stream=$(python3 - "$WORK/pgdrive.log" <<'PY'
import sys, datetime
t = {}
for line in open(sys.argv[1]):
    for key in ("preflight passed", "INFO  stored"):
        if key in line and key not in t:
            t[key] = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
print(f"{(t['INFO  stored'] - t['preflight passed']).total_seconds():.2f}" if len(t) == 2 else "-")
PY
)
  last=$(grep 'backup finished' "$WORK/pgdrive.log" | tail -n1)
  size=$(sed -n 's/.* size_bytes=\([0-9]*\).*/\1/p' <<<"$last")
  raw=$(sed -n 's/.* dump_bytes=\([0-9]*\).*/\1/p' <<<"$last")
  echo "$label $level $wall $(echo "$user + $sys" | bc) $rss $hwm $size $raw ${l%% *} $stream $emu" >>"$RESULTS"
  say "   $(printf '%-22s' "$label") gzip:$level wall ${wall}s (streaming ${stream}s) cpu $(echo "$user + $sys" | bc)s (+ emulator ${emu}s) pgdrive VmHWM $((hwm / 1024)) MiB, time %M $((rss / 1024)) MiB, pg_dump VmHWM $((dump_hwm / 1024)) MiB, out $size B of $raw B  (load $l)"
}

DUMP="'$PG_DUMP' -d '$DB_URL'"
HAVE_PIGZ=0; command -v pigz >/dev/null && HAVE_PIGZ=1
# Warm the page cache once (the database fits in RAM): every variant then reads the same, cached
# data and the comparison is about CPU and pipes, not about the disk. Caches are not dropped.
say "== warm-up: pg_dump > /dev/null (not measured)"
"$PG_DUMP" -d "$DB_URL" >/dev/null
say "== measuring: levels [$LEVELS], $REPEAT repeat(s), $(nproc) CPUs, pigz $([[ $HAVE_PIGZ == 1 ]] && echo yes || echo no)"
# Round-robin (all variants, then repeat) so that a burst of background load hits every variant.
for rep in $(seq "$REPEAT"); do
  say "-- repeat $rep/$REPEAT"
  [[ $ONLY == stalled || $ONLY == restore ]] || measure "pg_dump>null" - "$DUMP > /dev/null"
  [[ -n $ONLY ]] || for n in $LEVELS; do
    measure "pg_dump|gzip" "$n" "$DUMP | gzip -$n > /dev/null"
    measure "pg_dump|gzip|sha256" "$n" "$DUMP | gzip -$n | sha256sum > /dev/null"
    [[ $HAVE_PIGZ == 0 ]] || measure "pg_dump|pigz-p2" "$n" "$DUMP | pigz -$n -p 2 > /dev/null"
    measure_pgdrive "pgdrive" "$n"
  done
  [[ -n $ONLY ]] || measure_pgdrive "pgdrive-chunk32MiB" 6 --chunk-size 32MiB
  if [[ $ONLY == formats || ( $FORMATS == 1 && -z $ONLY ) ]]; then
    # issue 6: codecs, threads and formats, against the shell pipelines a user would write
    measure "pg_dump|gzip|sha256" 6 "$DUMP | gzip -6 | sha256sum > /dev/null"
    measure "pg_dump|gzip" 9 "$DUMP | gzip -9 > /dev/null"
    [[ $HAVE_PIGZ == 0 ]] || measure "pg_dump|pigz-p2" 6 "$DUMP | pigz -6 -p 2 > /dev/null"
    measure "pg_dump|zstd-T0" zstd:3 "$DUMP | zstd -3 -T0 -q -c > /dev/null"
    measure "pg_dump-Fc-Z0>null" - "'$PG_DUMP' -Fc -Z0 -d '$DB_URL' > /dev/null"
    measure_pgdrive "fmt:plain/t1" 6 --threads 1
    measure_pgdrive "fmt:plain/t2" 6 --threads 2
    measure_pgdrive "fmt:plain/t1" 9 --threads 1
    measure_pgdrive "fmt:plain/t2" 9 --threads 2
    measure_pgdrive "fmt:plain/t1" zstd:3 --threads 1
    measure_pgdrive "fmt:plain/t2" zstd:3 --threads 2
    measure_pgdrive "fmt:plain/t2" zstd:9 --threads 2
    measure_pgdrive "fmt:plain/t1" none
    measure_pgdrive "fmt:custom/t1" zstd:3 --format custom --threads 1
    measure_pgdrive "fmt:custom/t2" 6 --format custom --threads 2
  fi
  if [[ -z $ONLY || $ONLY == targets ]]; then
    # issue 10: two targets vs one (zstd:3, one compression thread: the default on 2 cores), and
    # the single-target pipeline against the shell's zstd with its checksum
    measure "pg_dump|zstd-T1|sha256" zstd:3 "$DUMP | zstd -3 -T1 -q -c | sha256sum > /dev/null"
    measure_pgdrive "pgdrive-zstd-t1" zstd:3 --threads 1 --keep 0 # keep all: no pruning, which the shell does not do either
    SELECT="--config $WORK/pgdrive.toml --job one" measure_pgdrive "job:1-target" zstd:3 --threads 1
    SELECT="--config $WORK/pgdrive.toml --job two" measure_pgdrive "job:2-targets" zstd:3 --threads 1
    if [[ $SLOW == 1 ]]; then
      # memory with the Drive target behind: stalled (3 answers held), then throttled to 4 MB/s
      for chunk in 8 32; do
        faults "[{\"op\": \"upload_chunk\", \"times\": 3, \"action\": {\"delay_ms\": $SLOW_MS}}]"
        SELECT="--config $WORK/pgdrive.toml --job two" measure_pgdrive "job:2-stalled-${chunk}MiB" zstd:3 --threads 1 --chunk-size "${chunk}MiB"
        faults '[]'
      done
      throttle 8000000
      SELECT="--config $WORK/pgdrive.toml --job two" measure_pgdrive "job:2-throttled-8MiB" zstd:3 --threads 1 --chunk-size 8MiB
      throttle null
    fi
  fi
  if [[ $REMOTE == 1 ]]; then
    # issue 11: zstd:3 with one compression thread, to a local S3 server and a local sshd, against
    # the shell pipelines a user would write (each stores a new object / file per run)
    measure "pg_dump|zstd-T1" zstd:3 "$DUMP | zstd -3 -T1 -q -c > /dev/null"
    SELECT="--config $WORK/pgdrive.toml --job s3" measure_pgdrive "remote:pgdrive-s3" zstd:3 --threads 1
    [[ $HAVE_AWS == 0 ]] || measure "remote:shell-s3" zstd:3 \
      "$DUMP | zstd -3 -T1 -q -c | aws --endpoint-url '$S3_URL' s3 cp - 's3://$BUCKET/shell-$rep.sql.zst'"
    SELECT="--config $WORK/pgdrive.toml --job sftp" measure_pgdrive "remote:pgdrive-sftp" zstd:3 --threads 1
    measure "remote:shell-ssh" zstd:3 "$DUMP | zstd -3 -T1 -q -c | $SSH 'cat > $SSH_DIR/data/shell-$rep.sql.zst'"
  fi
  if [[ -z $ONLY && $SLOW == 1 || $ONLY == stalled ]]; then
    # A stalled link: the emulator holds the answers to the first 3 chunk uploads for
    # BENCH_SLOW_MS (20 s) each, long enough for the compressor to run ahead of the uploader
    # until back-pressure stops it with every buffer full: the worst case for memory, whatever the
    # link speed. Wall times of these runs are not comparable.
    for chunk in 8 32; do
      faults "[{\"op\": \"upload_chunk\", \"times\": 3, \"action\": {\"delay_ms\": $SLOW_MS}}]"
      measure_pgdrive "pgdrive-stalled-${chunk}MiB" 6 --chunk-size "${chunk}MiB"
    done
    faults '[]'
  fi
done
if [[ $RESTORE == 1 && ( -z $ONLY || $ONLY == formats || $ONLY == restore ) ]]; then
  # issue 6 and 13: restore times of a gzip:6 plain backup and a zstd:3 custom archive, by pgdrive
  # (checked while streaming, one transaction; --jobs 2: spooled through the checks, then
  # pg_restore -j 2) and by hand; each into a freshly created database, after a CHECKPOINT so a
  # checkpoint of the previous run's writes does not land on the next; round-robin, BENCH_REPEAT times
  say "== restore timings"
  RDIR="$WORK/restore"; mkdir -p "$RDIR/plain" "$RDIR/custom"
  DATABASE_URL="$DB_URL" "$PGDRIVE" -q backup --kind daily --compress gzip:6 --to "$RDIR/plain"
  DATABASE_URL="$DB_URL" "$PGDRIVE" -q backup --kind daily --compress zstd:3 --format custom --to "$RDIR/custom"
  PLAIN=$(ls "$RDIR"/plain/*.sql.gz); CUSTOM=$(ls "$RDIR"/custom/*.dump.zst)
  T="$PG/pgdrive_bench_restore"
  drop_target() { psql_q -d "$PG/postgres" -c "DROP DATABASE IF EXISTS pgdrive_bench_restore WITH (FORCE)" -c "CHECKPOINT"; }
  fresh() { drop_target; psql_q -d "$PG/postgres" -c "CREATE DATABASE pgdrive_bench_restore"; }
  zstd -dcq "$CUSTOM" >"$RDIR/custom.dump"
  for rep in $(seq "$REPEAT"); do
    say "-- restore repeat $rep/$REPEAT"
    if [[ $ONLY != restore ]]; then
      fresh; measure "restore:gunzip|psql" 6 "gunzip -c '$PLAIN' | '$PSQL' -X -q -v ON_ERROR_STOP=1 --single-transaction -d '$T' > /dev/null"
      fresh; measure "restore:pgdrive" 6 "'$PGDRIVE' -q restore latest --from '$RDIR/plain' --database $DB --target-url '$T' --yes"
    fi
    fresh; measure "restore:zstd|pg_restore" zstd:3 "zstd -dcq '$CUSTOM' | '$PG_BIN/pg_restore' --exit-on-error --single-transaction -d '$T'"
    fresh; measure "restore:pgdrive" zstd:3 "'$PGDRIVE' -q restore latest --from '$RDIR/custom' --database $DB --target-url '$T' --yes"
    fresh; measure "restore:pg_restore-j2" zstd:3 "'$PG_BIN/pg_restore' -j 2 --exit-on-error -d '$T' '$RDIR/custom.dump'"
    if "$PGDRIVE" restore --help | grep -q -- '--jobs'; then
      drop_target
      measure "restore:pgdrive-j2" zstd:3 "'$PGDRIVE' -q restore latest --from '$RDIR/custom' --database $DB --target-url '$T' --yes --create --jobs 2 --spool-dir '$RDIR'"
    fi
  done
  drop_target
  rm -rf "$RDIR"
fi
# the runs' catalog rows are not part of the data set
psql_q -d "$DB_URL" -c "DROP TABLE IF EXISTS backup_copies, backups, pgdrive_schema_migrations CASCADE" 2>/dev/null || true

# ---------------------------------------------------------------- 4. the table
say ""
python3 - "$RESULTS" "$DB_BYTES" "$(nproc)" "$($PG_DUMP --version)" <<'PY'
import statistics, sys
path, db_bytes, ncpu, pgv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = {}
for line in open(path):
    label, level, wall, cpu, rss, own, size, raw, load, stream, emu = line.split()
    runs.setdefault((label, level), []).append(dict(
        wall=float(wall), cpu=float(cpu), rss=int(rss), own=None if own == "-" else int(own),
        size=None if size == "-" else int(size), raw=None if raw == "-" else int(raw), load=float(load),
        stream=None if stream == "-" else float(stream), emu=None if emu == "-" else float(emu)))
def agg(key):
    r = runs.get(key)
    if not r:
        return None
    walls = sorted(x["wall"] for x in r)
    best = min(r, key=lambda x: x["wall"])
    owns = [x["own"] for x in r if x["own"] is not None]
    return dict(best=walls[0], median=statistics.median(walls), cpu=best["cpu"], rss=max(x["rss"] for x in r) / 1024,
                own=max(owns) / 1024 if owns else None, size=best["size"], raw=best["raw"],
                stream=best["stream"], emu=best["emu"],
                loads="/".join(f"{x['load']:.1f}" for x in r), n=len(r))
base = agg(("pg_dump>null", "-"))
raw = next((x["raw"] for v in runs.values() for x in v if x["raw"]), None)
print(f"database {db_bytes/1e6:.0f} MB on disk; dump {raw/1e6 if raw else float('nan'):.0f} MB raw; {ncpu} CPUs; {pgv}")
print("wall = best of n (median in brackets); cpu = user+sys of the whole process tree in the best run;")
print("rss = GNU time %M (max over the process and its waited-for children); own = pgdrive's VmHWM; load = 1-min load before each run")
print()
hdr = f"{'command':<23} {'gzip':>4} {'wall s':>15} {'cpu s':>7} {'rss MiB':>8} {'own MiB':>8} {'out MB':>7} {'x comp':>6} {'÷dump':>6} {'÷gzip':>6} {'÷gz|sha':>7}  load"
print(hdr); print("-" * len(hdr))
def row(label, level, a, ratios=("", "", "")):
    own = f"{a['own']:.1f}" if a["own"] is not None else "-"
    out = f"{a['size']/1e6:.1f}" if a["size"] else "-"
    ratio = f"{raw/a['size']:.2f}" if a["size"] and raw else "-"
    wall = f"{a['best']:.1f} ({a['median']:.1f})"
    print(f"{label:<23} {level:>4} {wall:>15} {a['cpu']:>7.1f} {a['rss']:>8.1f} {own:>8} {out:>7} {ratio:>6} {ratios[0]:>6} {ratios[1]:>6} {ratios[2]:>7}  {a['loads']}")
if base:
    row("pg_dump > /dev/null", "-", base)
levels = sorted({lv for (label, lv) in runs if lv.isdigit() and label == "pgdrive"}, key=int)
checks = []
for lv in levels:
    g, gs, pz, pd = (agg((k, lv)) for k in ("pg_dump|gzip", "pg_dump|gzip|sha256", "pg_dump|pigz-p2", "pgdrive"))
    for label, a in (("pg_dump | gzip", g), ("pg_dump | gzip | sha256", gs), ("pg_dump | pigz -p 2", pz)):
        if a:
            row(label, lv, a)
    if pd:
        r = (f"{pd['best']/base['best']:.2f}", f"{pd['best']/g['best']:.2f}", f"{pd['best']/gs['best']:.2f}")
        row("pgdrive backup", lv, pd, r)
        checks.append((lv, 8, pd))
c32 = agg(("pgdrive-chunk32MiB", "6"))
if c32:
    g6, gs6 = agg(("pg_dump|gzip", "6")), agg(("pg_dump|gzip|sha256", "6"))
    r = (f"{c32['best']/base['best']:.2f}", f"{c32['best']/g6['best']:.2f}" if g6 else "", f"{c32['best']/gs6['best']:.2f}" if gs6 else "")
    row("pgdrive --chunk 32MiB", "6", c32, r)
    checks.append(("6, 32MiB chunks", 32, c32))
for label, chunk in (("pgdrive-stalled-8MiB", 8), ("pgdrive-stalled-32MiB", 32)):
    a = agg((label, "6"))
    if a:
        row(f"pgdrive {chunk}MiB stalled", "6", a)
        checks.append((f"6, {chunk}MiB, stalled", chunk, a))
print()
print("ratios are pgdrive's best wall over the baseline's best wall (÷dump: pg_dump > /dev/null; ÷gzip: pg_dump | gzip -N;")
print("÷gz|sha: pg_dump | gzip -N | sha256sum); < 1.00 means pgdrive is faster.")
print("x comp = dump bytes / gzip bytes; out MB is pgdrive's upload (the shell pipelines' sizes are not measured).")
print()
print("pgdrive, best run: streaming = 'preflight passed' → 'stored' in its log; overhead = the rest of the wall time;")
print("emulator CPU = what the Python emulator (same machine) spent receiving and hashing the upload")
for (label, lv), r in sorted(runs.items()):
    if label.startswith("pgdrive") and label != "pgdrive|":
        a = agg((label, lv))
        print(f"  {label:<20} gzip:{lv}: wall {a['best']:.1f}s = streaming {a['stream']:.1f}s + overhead {a['best'] - a['stream']:.1f}s;"
              f" emulator CPU {a['emu']:.1f}s")
fmt = sorted(k for k in runs if k[0].startswith("fmt:"))
if fmt:
    print()
    print("issue 6: codecs, threads, formats (pgdrive backup into the emulator; ratios of best wall times)")
    shell = {"6": agg(("pg_dump|gzip|sha256", "6")), "9": agg(("pg_dump|gzip", "9")), "zstd:3": agg(("pg_dump|zstd-T0", "zstd:3"))}
    fc = agg(("pg_dump-Fc-Z0>null", "-"))
    for label, a in (("pg_dump | gzip -6 | sha256sum", shell["6"]), ("pg_dump | gzip -9", shell["9"]),
                     ("pg_dump | pigz -6 -p 2", agg(("pg_dump|pigz-p2", "6"))), ("pg_dump | zstd -3 -T0", shell["zstd:3"]),
                     ("pg_dump -Fc -Z0 > /dev/null", fc)):
        if a:
            print(f"  {label:<34} wall {a['best']:6.1f}s  cpu {a['cpu']:6.1f}s")
    print(f"  {'pgdrive':<14} {'codec':<7} {'wall s':>7} {'cpu s':>6} {'own MiB':>7} {'out MB':>7} {'÷dump':>6} {'÷shell':>7}  shell = the same codec's pipeline")
    for label, lv in fmt:
        a = agg((label, lv))
        spec = f"gzip:{lv}" if lv.isdigit() else lv
        sh = shell.get(lv)
        dump_base = fc if "custom" in label else base
        own = f"{a['own']:.1f}" if a["own"] is not None else "-"
        print(f"  {label[4:]:<14} {spec:<7} {a['best']:7.1f} {a['cpu']:6.1f} {own:>7} {a['size']/1e6:7.1f} "
              f"{a['best']/dump_base['best']:6.2f} {(a['best']/sh['best']) if sh else float('nan'):7.2f}")
rest = sorted(k for k in runs if k[0].startswith("restore:"))
if rest:
    print()
    print("issue 6: restore into a new database (wall s; gzip:6 plain file / zstd:3 custom archive)")
    for label, lv in rest:
        a = agg((label, lv))
        print(f"  {label[8:]:<22} {lv:<7} wall {a['best']:7.1f}s ({a['median']:.1f})  cpu {a['cpu']:6.1f}s  rss {a['rss']:6.1f} MiB  load {a['loads']}")
    for mine, theirs in (("restore:pgdrive-j2", "restore:pg_restore-j2"), ("restore:pgdrive", "restore:zstd|pg_restore")):
        a, b = agg((mine, "zstd:3")), agg((theirs, "zstd:3"))
        if a and b:
            print(f"  {mine[8:]} / {theirs[8:]}: {a['best']/b['best']:.3f}x best ({a['median']/b['median']:.3f}x median)")
ten = {k: agg(k) for k in runs if k[0].startswith("job:") or k[0] in ("pgdrive-zstd-t1", "pg_dump|zstd-T1|sha256")}
if ten:
    print()
    print("issue 10 targets (zstd:3, --threads 1; wall = best of n, median in brackets)")
    for (label, lv), a in sorted(ten.items()):
        own = f"{a['own']:.1f}" if a["own"] is not None else "-"
        print(f"  {label:<24} wall {a['best']:6.1f}s ({a['median']:.1f})  cpu {a['cpu']:6.1f}s  own {own:>6} MiB  load {a['loads']}")
    def ratio(x, y, target):
        a, b = ten.get((x, "zstd:3")), ten.get((y, "zstd:3"))
        if a and b:
            r, rm = a["best"] / b["best"], a["median"] / b["median"]
            print(f"  RATIO {x} / {y}: best {r:.3f}x, median {rm:.3f}x (target <= {target}x) -> {'OK' if r <= target else 'MISSED'}")
    ratio("job:2-targets", "job:1-target", 1.1)
    ratio("pgdrive-zstd-t1", "pg_dump|zstd-T1|sha256", 1.05)
    for (label, lv), a in sorted(ten.items()):
        if label.startswith("job:2"):
            chunk = int(label.rsplit("-", 1)[1][:-3]) if label.endswith("MiB") else 8
            checks.append((f"{lv}, {chunk}MiB, {label[4:]}", chunk, a, 2))
eleven = {k: agg(k) for k in runs if k[0].startswith("remote:") or k[0] == "pg_dump|zstd-T1"}
if eleven:
    print()
    print("issue 11 remote targets (zstd:3, one compression thread; local s3s-fs and sshd; wall = best of n, median in brackets)")
    for (label, lv), a in sorted(eleven.items()):
        own = f"{a['own']:.1f}" if a["own"] is not None else "-"
        print(f"  {label:<22} wall {a['best']:6.1f}s ({a['median']:.1f})  cpu {a['cpu']:6.1f}s  rss {a['rss']:6.1f} MiB  own {own:>6} MiB  load {a['loads']}")
    def ratio11(x, y):
        a, b = eleven.get((x, "zstd:3")), eleven.get((y, "zstd:3"))
        if a and b:
            print(f"  RATIO {x} / {y}: best {a['best'] / b['best']:.3f}x, median {a['median'] / b['median']:.3f}x")
        elif a:
            print(f"  RATIO {x} / {y}: no {y} run")
    for target in ("s3", "sftp"):
        ratio11(f"remote:pgdrive-{target}", "pg_dump|zstd-T1")
    ratio11("remote:pgdrive-s3", "remote:shell-s3")
    ratio11("remote:pgdrive-sftp", "remote:shell-ssh")
    for target in ("s3", "sftp"):
        a = eleven.get((f"remote:pgdrive-{target}", "zstd:3"))
        if a:
            # S3: the 8 MiB default part (a 1 GB dump does not grow it); SFTP: the 8 MiB chunk
            checks.append((f"zstd:3, {target}", 8, a))
print()
print("RSS target: pgdrive's own peak < 64 MiB + 2 x chunk (S3: part) per target")
for lv, chunk, a, *n in checks:
    limit = 64 + 2 * chunk * (n[0] if n else 1)
    own = a["own"]
    print(f"  gzip:{lv:<19} chunk {chunk:>2} MiB: peak {own:.1f} MiB vs {limit} MiB -> {'OK' if own < limit else 'MISSED'}"
          f"   (time %M incl. pg_dump: {a['rss']:.1f} MiB)")
PY

# ---------------------------------------------------------------- 5. clean up
if [[ $DROP == 1 ]]; then
  say "== dropping $DB"
  psql_q -d "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
fi
