#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL server:
#   .ci/with_postgres.sh <command...>
# Starts a cluster in a temporary directory on a free local port, exports
# SHUYU_TEST_DATABASE_URL (the tests create and drop one database per test on it), runs the
# command, and stops the server whatever happens. Installs Debian's postgresql when no server
# binaries are found and apt-get is usable.
set -euo pipefail

find_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return
  fi
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
}

BINDIR="$(find_bindir || true)"
if [ -z "$BINDIR" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "with_postgres: installing Debian's postgresql" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
    BINDIR="$(find_bindir)"
  else
    echo "with_postgres: no PostgreSQL server binaries (initdb, pg_ctl); install postgresql" >&2
    exit 2
  fi
fi

WORK="$(mktemp -d /tmp/shuyu-pg.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# initdb refuses to run as root: run the server as the postgres account when we are root.
AS=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$WORK"
  AS=(runuser -u postgres --)
fi

stop() {
  "${AS[@]}" "$BINDIR/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap stop EXIT

"${AS[@]}" "$BINDIR/initdb" -D "$WORK/data" -A trust -U shuyu -E UTF8 >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; exit 1; }
"${AS[@]}" "$BINDIR/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w \
  -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" \
  start >/dev/null || { cat "$WORK/server.log" >&2; exit 1; }

export SHUYU_TEST_DATABASE_URL="postgresql+psycopg://shuyu@127.0.0.1:$PORT/postgres"
echo "with_postgres: PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}') on port $PORT" >&2
"$@"
