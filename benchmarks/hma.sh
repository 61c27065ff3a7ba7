#!/bin/bash
# Meta's Hasher-Matcher-Actioner (HMA, OpenMediaMatch) run from its source, outside Docker, as the
# peer of `bench_serve.py`: Postgres from Debian's packages, every Python dependency from PyPI.
#
#   hma.sh setup SRC                   install (idempotent): Debian packages, a Postgres cluster on
#                                      127.0.0.1 only, a venv with HMA's dependencies
#   hma.sh load SRC BANK FILE          bank BANK (emptied first) holds the PDQ hashes of FILE (one hex
#                                      a line), written as HMA's storage writes them, then HMA's index
#                                      is built (`flask build_indices`)
#   hma.sh start SRC PORT WORKERS      gunicorn on 127.0.0.1:PORT with HMA's own matcher config
#                                      (scaled_deployment_matcher_omm_config.py); prints its pid
#   hma.sh stop PORT                   gunicorn, then Postgres
#
# SRC is the hasher-matcher-actioner/ folder of a clone of https://github.com/facebook/ThreatExchange.
# HMA's pyproject installs its dependencies but not its package (`py-modules = []`), so it runs from
# SRC/src, as its Dockerfile does. Everything this writes is under DIR (build/bench/hma), but the
# Debian packages and the cluster ("15/safeset-hma" on port 5439).
set -euo pipefail
DIR=${SAFESET_BENCH_HMA_DIR:-$(cd "$(dirname "$0")/.." && pwd)/build/bench/hma}
PGPORT=${SAFESET_BENCH_HMA_PGPORT:-5439}
CLUSTER=safeset-hma
DB_URI="postgresql+psycopg2://media_match:hunter2@127.0.0.1:$PGPORT/media_match"
mkdir -p "$DIR"

pg_version() { ls /usr/lib/postgresql | sort -n | tail -1; }
pg_up() {
  local v; v=$(pg_version)
  pg_lsclusters -h | awk -v c="$v/$CLUSTER" '$1"/"$2==c {print $4}' | grep -q online || pg_ctlcluster "$v" "$CLUSTER" start
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p "$PGPORT" && return; sleep 0.2; done
  echo "postgres did not start on 127.0.0.1:$PGPORT" >&2; exit 1
}
sql() { PGPASSWORD=hunter2 psql -h 127.0.0.1 -p "$PGPORT" -U media_match media_match -v ON_ERROR_STOP=1 -qAt "$@"; }
flask() {
  (cd "$1/src" && OMM_CONFIG="$1/reference_omm_configs/development_omm_config.py" OMM_DATABASE_URI="$DB_URI" \
    OMP_NUM_THREADS=1 PYTHONPATH="$1/src" "$DIR/venv/bin/flask" --app OpenMediaMatch.app "${@:2}")
}

case "${1:-}" in
setup)
  SRC=$2
  need=()
  for p in postgresql libpq-dev libjemalloc2 gcc; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
  fi
  v=$(pg_version)
  pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$v/$CLUSTER" ||
    pg_createcluster "$v" "$CLUSTER" -p "$PGPORT" --start-conf manual -- --auth-local=peer --auth-host=scram-sha-256
  # in conf.d: `pg_conftool set listen_addresses 127.0.0.1` writes it unquoted, which Postgres refuses
  echo "listen_addresses = '127.0.0.1'" >"/etc/postgresql/$v/$CLUSTER/conf.d/loopback.conf"
  pg_up
  as_postgres() { su postgres -c "psql -p $PGPORT -Atq -v ON_ERROR_STOP=1 -c \"$1\""; }
  [ "$(as_postgres "SELECT 1 FROM pg_roles WHERE rolname='media_match'")" = 1 ] ||
    as_postgres "CREATE ROLE media_match LOGIN PASSWORD 'hunter2'"
  [ "$(as_postgres "SELECT 1 FROM pg_database WHERE datname='media_match'")" = 1 ] ||
    as_postgres "CREATE DATABASE media_match OWNER media_match"
  [ -x "$DIR/venv/bin/python" ] || python3 -m venv "$DIR/venv"
  "$DIR/venv/bin/pip" install -q "$SRC[prod]"
  MIGRATION_COMMAND=1 flask "$SRC" db upgrade --directory OpenMediaMatch/migrations >"$DIR/migrate.log" 2>&1 ||
    { cat "$DIR/migrate.log" >&2; exit 1; }
  ;;
load)
  SRC=$2 BANK=$3 FILE=$4
  pg_up
  # the bank's name as a psql variable (quoted by psql), the hashes on standard input
  sql -v bank="$BANK" -f <(cat <<'SQL'
DELETE FROM bank WHERE name = :'bank';
INSERT INTO bank (name, enabled_ratio) VALUES (:'bank', 1.0);
CREATE TEMP TABLE staged (n bigserial, pdq text);
\copy staged (pdq) FROM pstdin
CREATE TEMP TABLE base AS SELECT coalesce(max(id), 0) AS id FROM bank_content;
INSERT INTO bank_content (id, bank_id, disable_until_ts)
  SELECT base.id + staged.n, bank.id, 1 FROM staged, base, bank WHERE bank.name = :'bank';
INSERT INTO content_signal (content_id, signal_type, signal_val)
  SELECT base.id + staged.n, 'pdq', staged.pdq FROM staged, base;
SELECT setval(pg_get_serial_sequence('bank_content', 'id'), (SELECT max(id) FROM bank_content));
SQL
  ) <"$FILE"
  flask "$SRC" build_indices >"$DIR/build.log" 2>&1 || { tail -30 "$DIR/build.log" >&2; exit 1; }
  ;;
start)
  SRC=$2 PORT=$3 WORKERS=$4
  if [ -f "$DIR/gunicorn.pid" ] && kill -0 "$(cat "$DIR/gunicorn.pid")" 2>/dev/null; then
    echo "an HMA started by hma.sh still runs (pid $(cat "$DIR/gunicorn.pid")): hma.sh stop first" >&2
    exit 1
  fi
  pg_up
  jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 # as HMA's Dockerfile preloads it
  cd "$SRC/src"
  # every descriptor of the background server redirected: a caller reading our output gets its end
  OMM_CONFIG="$SRC/reference_omm_configs/scaled_deployment_matcher_omm_config.py" OMM_DATABASE_URI="$DB_URI" \
    OMP_NUM_THREADS=1 PYTHONPATH="$SRC/src" LD_PRELOAD=$([ -f $jemalloc ] && echo $jemalloc) \
    nohup "$DIR/venv/bin/gunicorn" --bind "127.0.0.1:$PORT" --workers "$WORKERS" --pid "$DIR/gunicorn.pid" \
    'OpenMediaMatch.app:create_app()' >"$DIR/gunicorn.log" 2>&1 </dev/null &
  for _ in $(seq 600); do # ready once /status says the index is loaded (503 INDEX-NOT-LOADED before)
    [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/status")" = 200 ] &&
      { cat "$DIR/gunicorn.pid"; exit 0; }
    sleep 0.5
  done
  tail -30 "$DIR/gunicorn.log" >&2
  exit 1
  ;;
stop)
  if [ -f "$DIR/gunicorn.pid" ]; then
    pid=$(cat "$DIR/gunicorn.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$DIR/gunicorn.pid"
  fi
  pg_ctlcluster "$(pg_version)" "$CLUSTER" stop 2>/dev/null || true
  ;;
*)
  sed -n '2,18p' "$0"
  exit 2
  ;;
esac
